//! `[handles.X.http]`: where an http handle's credential may go, and how it is put in.

use super::defaults;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// How the credential is put into an HTTP request. Only here; never where the agent writes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// A header whose value is `format` with `{}` replaced by the secret.
    Header {
        /// Header name, for example `Authorization` or `X-API-Key`.
        name: String,
        /// Value format containing exactly one `{}`; default `Bearer {}`.
        #[serde(default = "default_header_format")]
        format: String,
    },
    /// HTTP basic authentication; the secret is the password.
    Basic {
        /// The user name (not secret).
        username: String,
    },
    /// A query parameter carrying the secret.
    Query {
        /// The parameter name.
        param: String,
    },
}

/// One destination a credential may go to, parsed from `url` and `methods`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `https` or `http`.
    pub scheme: String,
    /// Lowercase host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// The port (the scheme's default when the URL gives none).
    pub port: u16,
    /// Path prefix; a request path must equal it or continue it after a `/`.
    pub path_prefix: String,
    /// Allowed methods, uppercase.
    pub methods: Vec<String>,
}

/// Constraints of an HTTP handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConstraints {
    /// Where the credential may go. The first one is the base for relative paths.
    pub destinations: Vec<Destination>,
    /// Where the secret goes.
    pub inject: Injection,
    /// Response bodies are cut at this size (the result says `truncated`).
    pub max_response_bytes: usize,
    /// Whole-request timeout.
    pub timeout_ms: u64,
    /// Redirects followed at most, each re-checked against the destinations (0: none).
    pub max_redirects: u8,
    /// Let host names resolve to loopback, private, link-local or CGNAT addresses. IP literals
    /// bound in `destinations` are always allowed, as that is an explicit binding.
    pub allow_private_addresses: bool,
    /// Largest request body the agent may send.
    pub max_request_bytes: usize,
}

/// `[handles.X.http]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    destinations: Vec<RawDestination>,
    /// Required on an `http` handle; refused on an `oauth` handle, whose access token always goes
    /// in `Authorization: Bearer`.
    #[serde(default)]
    inject: Option<Injection>,
    #[serde(default = "defaults::max_bytes")]
    max_response_bytes: usize,
    #[serde(default = "defaults::http_timeout_ms")]
    timeout_ms: u64,
    #[serde(default)]
    max_redirects: u8,
    #[serde(default)]
    allow_private_addresses: bool,
    #[serde(default = "defaults::max_request_bytes")]
    max_request_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    url: String,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
}

impl RawHttp {
    /// Checks destinations, injection and limits. `bearer` is for an `oauth` handle: no
    /// `inject` may be written, and the token goes in `Authorization: Bearer`.
    pub(super) fn check(self, r: &mut Report<'_, '_>, at: &FieldPath, bearer: bool) -> Option<HttpConstraints> {
        let before = r.count();
        let inject = match (self.inject, bearer) {
            (Some(i), false) => {
                check_injection(r, &at.join("inject"), &i);
                i
            }
            (None, true) => Injection::Header { name: "Authorization".into(), format: default_header_format() },
            (None, false) => {
                r.problem(&at.join("inject"), ProblemCode::MissingKey, "an http handle says where its secret goes (inject)");
                return None;
            }
            (Some(_), true) => {
                r.problem(&at.join("inject"), ProblemCode::BadInjection, "an oauth handle's token always goes in Authorization: Bearer");
                return None;
            }
        };
        if self.destinations.is_empty() {
            r.problem(&at.join("destinations"), ProblemCode::EmptyList, "at least one destination is required");
        }
        let destinations: Vec<Destination> = self
            .destinations
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| check_destination(r, &at.key("destinations").index(i), d))
            .collect();
        for (field, value) in [("max_response_bytes", self.max_response_bytes as u64), ("timeout_ms", self.timeout_ms)] {
            if value == 0 {
                r.problem(&at.join(field), ProblemCode::OutOfRange, "must be at least 1");
            }
        }
        (r.count() == before).then_some(HttpConstraints {
            destinations,
            inject,
            max_response_bytes: self.max_response_bytes,
            timeout_ms: self.timeout_ms,
            max_redirects: self.max_redirects,
            allow_private_addresses: self.allow_private_addresses,
            max_request_bytes: self.max_request_bytes,
        })
    }
}

fn check_destination(r: &mut Report<'_, '_>, at: &FieldPath, d: RawDestination) -> Option<Destination> {
    let bad = |r: &mut Report<'_, '_>, m: &str| {
        r.problem(at, ProblemCode::BadDestination, m);
        None
    };
    let u = match url::Url::parse(&d.url) {
        Ok(u) => u,
        Err(e) => return bad(r, &format!("not a URL: {e}")),
    };
    if u.scheme() != "https" && u.scheme() != "http" {
        return bad(r, "scheme must be https or http");
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
        return bad(r, "a destination has no user info, query or fragment");
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return bad(r, "a destination needs a host"),
    };
    let Some(port) = u.port_or_known_default() else { return bad(r, "no port") };
    let mut methods = Vec::new();
    for m in d.methods {
        let up = m.to_ascii_uppercase();
        if !matches!(up.as_str(), "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") {
            r.problem(&at.join("methods"), ProblemCode::BadMethod, format!("unknown method '{m}'"));
        }
        methods.push(up);
    }
    Some(Destination { scheme: u.scheme().to_owned(), host, port, path_prefix: u.path().to_owned(), methods })
}

fn check_injection(r: &mut Report<'_, '_>, at: &FieldPath, inject: &Injection) {
    match inject {
        Injection::Header { name, format } => {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                r.problem(&at.join("name"), ProblemCode::BadInjection, "not a header name");
            }
            if format.matches("{}").count() != 1 {
                r.problem(&at.join("format"), ProblemCode::BadInjection, "must contain exactly one {}");
            }
            if format.bytes().any(|b| b == b'\r' || b == b'\n') {
                r.problem(&at.join("format"), ProblemCode::BadInjection, "must not contain CR or LF");
            }
        }
        Injection::Basic { username } => {
            if username.contains(':') {
                r.problem(&at.join("username"), ProblemCode::BadInjection, "must not contain ':'");
            }
        }
        Injection::Query { param } => {
            if param.is_empty() {
                r.problem(&at.join("param"), ProblemCode::BadInjection, "must not be empty");
            }
        }
    }
}

fn default_header_format() -> String {
    "Bearer {}".into()
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}
