//! `[handles.X.oauth]`: the provider an `oauth` handle's account is connected at, and who may
//! connect it. The handle's `secret` is the OAuth client's secret; its `[http]` table binds the
//! destinations the access token may go to, exactly as for an `http` handle, and the token is
//! always sent as `Authorization: Bearer`.

use super::http::HttpConstraints;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the provider's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OauthEndpoints {
    /// Written in the configuration.
    Explicit {
        /// The authorization endpoint the owner's browser is sent to.
        authorization_url: String,
        /// The token endpoint (code exchange and refresh).
        token_url: String,
        /// The RFC 7009 revocation endpoint, if the provider has one.
        revocation_url: Option<String>,
    },
    /// Read from the issuer's metadata (RFC 8414 `/.well-known/oauth-authorization-server`,
    /// then OpenID Connect discovery) on first use; its `issuer` must be this one.
    Discover {
        /// The issuer URL.
        issuer: String,
    },
}

/// The provider of an `oauth` handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OauthProvider {
    /// Its endpoints.
    pub endpoints: OauthEndpoints,
    /// The client id registered at the provider (not secret).
    pub client_id: String,
    /// Scopes asked for when an account is connected.
    pub scopes: Vec<String>,
    /// The RFC 8707 resource indicator sent with every authorization and token request.
    pub resource: Option<String>,
    /// The owners who may connect the account (each a `[shares.recipients]` entry, whose
    /// channel receives the code the connect page asks for).
    pub owners: Vec<String>,
    /// An access token is refreshed this many seconds before it expires.
    pub refresh_margin_seconds: u64,
    /// Keep an idle account's tokens fresh in the background, so that a provider that expires
    /// unused refresh tokens does not drop the account.
    pub keep_alive: bool,
    /// Timeout of one request to the token or revocation endpoint.
    pub token_timeout_ms: u64,
    /// Extra parameters of the authorization request (Google's `access_type = "offline"`,
    /// `prompt = "consent"`); the protocol's own parameters cannot be set here.
    pub authorize_params: std::collections::BTreeMap<String, String>,
    /// A PEM file of certificate authorities trusted for the provider's endpoints besides the
    /// public roots (an identity provider behind an internal CA). Absolute.
    pub ca_file: Option<PathBuf>,
}

/// Constraints of an `oauth` handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OauthConstraints {
    /// Where the access token may go (its injection is always `Authorization: Bearer`).
    pub http: HttpConstraints,
    /// The provider.
    pub provider: OauthProvider,
}

/// `[handles.X.oauth]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOauth {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    authorization_url: Option<String>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    revocation_url: Option<String>,
    client_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    resource: Option<String>,
    owners: Vec<String>,
    #[serde(default = "default_margin")]
    refresh_margin_seconds: u64,
    #[serde(default)]
    keep_alive: bool,
    #[serde(default = "default_token_timeout")]
    token_timeout_ms: u64,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    authorize_params: std::collections::BTreeMap<String, String>,
}

/// Parameters of the authorization request that airlock sets itself.
const RESERVED_PARAMS: &[&str] =
    &["response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method", "resource", "nonce"];

fn default_margin() -> u64 {
    60
}

fn default_token_timeout() -> u64 {
    10_000
}

/// An endpoint that carries the client secret, a code or a token: https, or http to loopback.
fn check_endpoint(r: &mut Report<'_, '_>, at: &FieldPath, s: &str) {
    match url::Url::parse(s) {
        Err(e) => r.problem(at, ProblemCode::BadUrl, format!("not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "https" | "http") || u.host().is_none() || u.fragment().is_some() => {
            r.problem(at, ProblemCode::BadUrl, "an http(s) URL with a host and no fragment")
        }
        Ok(u) if u.scheme() == "http" && !super::shares::loopback(&u) => r.problem(
            at,
            ProblemCode::InsecureTransport,
            "OAuth endpoints carry the client secret, codes and tokens: https unless the host is loopback",
        ),
        Ok(_) => {}
    }
}

impl RawOauth {
    /// Checks the provider's endpoints and settings.
    pub(super) fn check(self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path) -> Option<OauthProvider> {
        let before = r.count();
        let endpoints = match (self.issuer, self.authorization_url, self.token_url) {
            (Some(issuer), None, None) if self.revocation_url.is_none() => {
                check_endpoint(r, &at.join("issuer"), &issuer);
                OauthEndpoints::Discover { issuer }
            }
            (None, Some(authorization_url), Some(token_url)) => {
                check_endpoint(r, &at.join("authorization_url"), &authorization_url);
                check_endpoint(r, &at.join("token_url"), &token_url);
                if let Some(rv) = &self.revocation_url {
                    check_endpoint(r, &at.join("revocation_url"), rv);
                }
                OauthEndpoints::Explicit { authorization_url, token_url, revocation_url: self.revocation_url }
            }
            _ => {
                r.problem(
                    at,
                    ProblemCode::MissingKey,
                    "give either issuer (discovery) or authorization_url and token_url (and revocation_url if any)",
                );
                return None;
            }
        };
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            r.problem(&at.join("client_id"), ProblemCode::BadValue, "a non-empty client id without control characters");
        }
        for s in &self.scopes {
            // RFC 6749 §3.3: scope tokens are printable ASCII without space, quote or backslash.
            if s.is_empty() || !s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\') {
                r.problem(&at.join("scopes"), ProblemCode::BadValue, format!("'{s}' is not a scope token"));
            }
        }
        if let Some(res) = &self.resource {
            match url::Url::parse(res) {
                Ok(u) if u.fragment().is_none() => {}
                _ => r.problem(&at.join("resource"), ProblemCode::BadUrl, "an absolute URI without a fragment (RFC 8707)"),
            }
        }
        if self.owners.is_empty() {
            r.problem(&at.join("owners"), ProblemCode::EmptyList, "name at least one owner (a [shares.recipients] entry)");
        }
        if self.refresh_margin_seconds > 3600 {
            r.problem(&at.join("refresh_margin_seconds"), ProblemCode::OutOfRange, "is 0 to 3600");
        }
        for k in self.authorize_params.keys().filter(|k| RESERVED_PARAMS.contains(&k.as_str())) {
            r.problem(&at.join("authorize_params"), ProblemCode::BadValue, format!("'{k}' is set by airlock"));
        }
        if let Some(f) = &self.ca_file {
            if !base.join(f).is_file() {
                r.problem(&at.join("ca_file"), ProblemCode::BadValue, format!("{} is not a file", base.join(f).display()));
            }
        }
        if !(100..=120_000).contains(&self.token_timeout_ms) {
            r.problem(&at.join("token_timeout_ms"), ProblemCode::OutOfRange, "is 100 to 120000");
        }
        (r.count() == before).then_some(OauthProvider {
            endpoints,
            client_id: self.client_id,
            scopes: self.scopes,
            resource: self.resource,
            owners: self.owners,
            refresh_margin_seconds: self.refresh_margin_seconds,
            keep_alive: self.keep_alive,
            token_timeout_ms: self.token_timeout_ms,
            ca_file: self.ca_file.map(|f| base.join(f)),
            authorize_params: self.authorize_params,
        })
    }
}
