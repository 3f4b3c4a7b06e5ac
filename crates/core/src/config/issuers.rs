//! `[issuers.NAME]`: identity providers whose signed tokens (JWTs) identify agents, so that an
//! agent running in CI or Kubernetes authenticates with the short-lived token its platform
//! already gives it instead of a static airlock token (T30).

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an issuer's signing keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// Fetched from this URL (and fetched again for an unknown `kid`, at most once per interval).
    Url(String),
    /// Read from this file at start-up (air-gapped issuers). Absolute.
    File(PathBuf),
    /// The `jwks_uri` of the issuer's OpenID discovery document.
    Discover,
}

/// One rule from a verified token's claims to an agent of the configuration: every condition
/// given must hold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRule {
    /// The token's `sub`, exactly.
    #[serde(default)]
    pub subject: Option<String>,
    /// Claims the token must carry with exactly these string values (a GitHub Actions token's
    /// `repository` and `ref`). A name starting with `/` is a JSON pointer (RFC 6901) into
    /// nested claims: a Kubernetes token's `/kubernetes.io/namespace` and
    /// `/kubernetes.io/serviceaccount/name`.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// The agent (`[agents.NAME]`) a matching token authenticates as.
    pub agent: String,
}

/// A trusted issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// Its name (the table's key).
    pub name: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Its keys.
    pub jwks: JwksSource,
    /// The `aud` a token must name: airlock's own URI.
    pub audience: String,
    /// The signature algorithms accepted (asymmetric only).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// An unknown `kid` fetches the keys again at most once per this many seconds.
    pub refetch_interval_seconds: u64,
    /// The mapping, first match wins.
    pub subjects: Vec<SubjectRule>,
    /// An authorization server that MCP clients are sent to: it is listed in airlock's
    /// protected resource metadata (RFC 9728), and its `audience` is the MCP endpoint's URI.
    pub mcp: bool,
    /// The token's `scope` (or `scp`) claim limits the tools: only those named `airlock:TOOL`
    /// may be called, within the agent's grants; a token with no such scope calls nothing.
    pub tool_scopes: bool,
}

/// The asymmetric algorithms a JWT may be signed with. `none` and the HMAC family are refused:
/// an HMAC "signature" checked against a public key is a forgery anyone can make.
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// `[issuers.NAME]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    issuer: String,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    audience: String,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    #[serde(default = "default_refetch")]
    refetch_interval_seconds: u64,
    subjects: Vec<SubjectRule>,
    #[serde(default)]
    mcp: bool,
    #[serde(default)]
    tool_scopes: Option<bool>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_leeway() -> u64 {
    30
}

fn default_refetch() -> u64 {
    60
}

fn https_or_loopback(r: &mut Report<'_, '_>, at: &FieldPath, s: &str) {
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        Ok(u) if u.scheme() == "http" && super::shares::loopback(&u) => {}
        Ok(u) if u.scheme() == "http" => {
            r.problem(at, ProblemCode::InsecureTransport, "keys and discovery are fetched over https unless the host is loopback")
        }
        _ => r.problem(at, ProblemCode::BadUrl, "an http(s) URL with a host"),
    }
}

impl RawIssuer {
    /// Checks one issuer; `agents` are the configuration's agent names.
    pub(super) fn check(self, r: &mut Report<'_, '_>, at: &FieldPath, name: &str, base: &Path, agents: &[&str]) -> Option<IssuerConfig> {
        let before = r.count();
        https_or_loopback(r, &at.join("issuer"), &self.issuer);
        let jwks = match (self.jwks_url, self.jwks_file) {
            (Some(u), None) => {
                https_or_loopback(r, &at.join("jwks_url"), &u);
                JwksSource::Url(u)
            }
            (None, Some(f)) => {
                let f = base.join(f);
                if !f.is_file() {
                    r.problem(&at.join("jwks_file"), ProblemCode::BadValue, format!("{} is not a file", f.display()));
                }
                JwksSource::File(f)
            }
            (None, None) => JwksSource::Discover,
            (Some(_), Some(_)) => {
                r.problem(at, ProblemCode::BadValue, "give jwks_url or jwks_file, not both");
                JwksSource::Discover
            }
        };
        if self.audience.is_empty() {
            r.problem(&at.join("audience"), ProblemCode::BadValue, "the audience is airlock's own URI, and is required");
        }
        if self.algorithms.is_empty() {
            r.problem(&at.join("algorithms"), ProblemCode::EmptyList, "name at least one algorithm");
        }
        for a in self.algorithms.iter().filter(|a| !ASYMMETRIC_ALGORITHMS.contains(&a.as_str())) {
            r.problem(&at.join("algorithms"), ProblemCode::BadValue, format!("'{a}' is not accepted: asymmetric algorithms only ({})", ASYMMETRIC_ALGORITHMS.join(", ")));
        }
        if self.leeway_seconds > 300 {
            r.problem(&at.join("leeway_seconds"), ProblemCode::OutOfRange, "is 0 to 300");
        }
        if !(1..=86_400).contains(&self.refetch_interval_seconds) {
            r.problem(&at.join("refetch_interval_seconds"), ProblemCode::OutOfRange, "is 1 to 86400");
        }
        if self.mcp {
            match url::Url::parse(&self.audience) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() && u.query().is_none() && u.fragment().is_none() => {}
                _ => r.problem(
                    &at.join("audience"),
                    ProblemCode::BadUrl,
                    "an MCP authorization server's audience is the MCP endpoint's URI (https://airlock.example/mcp)",
                ),
            }
        }
        if self.subjects.is_empty() {
            r.problem(&at.join("subjects"), ProblemCode::EmptyList, "map at least one subject to an agent");
        }
        for (i, s) in self.subjects.iter().enumerate() {
            let at = at.key("subjects").index(i);
            if s.subject.is_none() && s.claims.is_empty() {
                r.problem(&at, ProblemCode::MissingCondition, "give a subject, claims, or both");
            }
            if !agents.contains(&s.agent.as_str()) {
                r.problem(&at.join("agent"), ProblemCode::UnknownAgent, format!("'{}' is not an [agents] entry", s.agent));
            }
        }
        (r.count() == before).then_some(IssuerConfig {
            name: name.to_owned(),
            issuer: self.issuer,
            jwks,
            audience: self.audience,
            algorithms: self.algorithms,
            leeway_seconds: self.leeway_seconds,
            refetch_interval_seconds: self.refetch_interval_seconds,
            subjects: self.subjects,
            mcp: self.mcp,
            // An MCP client's token says what the person consented to: it limits the tools
            // unless the operator says otherwise.
            tool_scopes: self.tool_scopes.unwrap_or(self.mcp),
        })
    }
}

/// Checks every `[issuers.NAME]` table; `agents` are the configuration's agent names.
pub(super) fn check_all<'s, 't>(
    r: &mut Report<'s, 't>,
    section: Option<&'s toml::Spanned<toml::de::DeValue<'t>>>,
    base: &Path,
    agents: &[&str],
) -> BTreeMap<String, IssuerConfig> {
    let at = FieldPath::root().key("issuers");
    let mut out = BTreeMap::new();
    let mut seen_iss: Vec<String> = Vec::new();
    for (name, value) in r.entries(&at, section) {
        let at = at.key(name);
        let Some(raw) = r.de::<RawIssuer>(&at, value) else { continue };
        if let Some(i) = raw.check(r, &at, name, base, agents) {
            if seen_iss.contains(&i.issuer) {
                r.problem(&at.join("issuer"), ProblemCode::DuplicateKey, "another [issuers] table has this issuer");
                continue;
            }
            seen_iss.push(i.issuer.clone());
            out.insert(name.to_owned(), i);
        }
    }
    // One MCP endpoint, one resource URI: every authorization server of it names the same one.
    let mut resources = out.values().filter(|i| i.mcp).map(|i| i.audience.as_str());
    if let Some(first) = resources.next() {
        if resources.any(|a| a != first) {
            r.problem(&at, ProblemCode::BadValue, "issuers with mcp = true must have the same audience (the MCP endpoint's URI)");
        }
    }
    out
}
