//! The property of the `http_destination` fuzz target, shared with
//! `crates/exec/http/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust).
//! The including crate root provides `Uri` (the `http` crate's, which reqwest parses every URL
//! into before it connects: `http::Uri` in the fuzz crate, `axum::http::Uri` in the tests).
//!
//! Input: `[selector, text...]`; the text (invalid UTF-8 replaced) is split at line breaks into
//! `path_or_url`, the method (GET when absent), `Name: value` header lines up to an empty line,
//! and the body. The selector picks the handle ([`handle`]): bound destinations of every shape
//! (a host name with a path prefix, loopback and private IP literals, an IPv6 literal, an IDN
//! host, two destinations with other ports and methods) and every injection point.
//!
//! `HttpExecutor::validate` never panics, and a request it accepts goes exactly where the handle
//! binds, checked on the accepted URL parsed again, independently, by the `url` crate and by
//! `http::Uri` (the form reqwest hands to hyper):
//! * scheme, host and port equal one bound destination's (`url`: host, port or the scheme's
//!   default; `http::Uri`: the same, so the two parsers agree on where the request goes); the
//!   path is under its prefix (whole segments) and the method is one it allows;
//! * no user info, no fragment, no dot segment and no encoded slash or backslash in any path
//!   segment (percent-decoded up to three times), and no query parameter of the handle's
//!   query injection;
//! * the agent's own URL, when absolute, already named that scheme, host and port (the URL was
//!   not re-targeted), and a relative path was joined onto the first destination;
//! * validating the accepted URL again gives the same URL (admission is idempotent), unless
//!   percent-encoding made it longer than the limit on what an agent may send.

use airlock_core::config::{Constraints, Destination, Handle, HandleKind, HttpConstraints, Injection, SecretRef};
use airlock_core::{ErrorCode, HandleName};
use airlock_exec_http::{HttpArgs, HttpExecutor, ValidatedRequest};
use std::collections::BTreeMap;
use url::Url;

/// Handles the selector byte chooses from.
pub const HANDLES: u8 = 6;

fn dest(scheme: &str, host: &str, port: u16, prefix: &str, methods: &[&str]) -> Destination {
    Destination {
        scheme: scheme.into(),
        host: host.into(),
        port,
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
    }
}

/// The handle of a selector byte.
pub fn handle(selector: u8) -> Handle {
    let header = |name: &str, format: &str| Injection::Header { name: name.into(), format: format.into() };
    let (destinations, inject) = match selector % HANDLES {
        0 => (vec![dest("https", "api.example.com", 443, "/v1/", &["GET", "POST"])], header("X-API-Key", "{}")),
        1 => (
            vec![dest("http", "127.0.0.1", 8080, "/", &["GET", "HEAD", "POST"])],
            Injection::Query { param: "api_key".into() },
        ),
        2 => (vec![dest("https", "::1", 8443, "/api", &["GET"])], Injection::Basic { username: "svc".into() }),
        3 => (
            vec![
                dest("https", "api.example.com", 443, "/v1/", &["GET"]),
                dest("https", "uploads.example.com", 8443, "/in", &["PUT", "POST"]),
            ],
            header("Authorization", "Bearer {}"),
        ),
        4 => (vec![dest("https", "xn--bcher-kva.example", 443, "/", &["GET", "DELETE"])], header("X-Token", "{}")),
        _ => (
            vec![dest("http", "10.0.0.5", 80, "/internal/", &["DELETE", "PATCH", "OPTIONS"])],
            Injection::Query { param: "token".into() },
        ),
    };
    Handle {
        name: HandleName::parse("API").expect("a valid handle name"),
        kind: HandleKind::Http,
        secret: SecretRef::Env("UNUSED".into()),
        description: String::new(),
        constraints: Constraints::Http(HttpConstraints {
            destinations,
            inject,
            max_response_bytes: 64 * 1024,
            timeout_ms: 5_000,
            max_redirects: 3,
            allow_private_addresses: false,
            max_request_bytes: 4096,
        }),
    }
}

/// The arguments an input's text stands for.
pub fn args(text: &str) -> HttpArgs {
    let mut lines = text.split('\n');
    let path_or_url = lines.next().unwrap_or("").to_owned();
    let method = match lines.next() {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => "GET".to_owned(),
    };
    let mut headers = BTreeMap::new();
    let mut body = None;
    while let Some(l) = lines.next() {
        if l.is_empty() {
            body = Some(lines.collect::<Vec<_>>().join("\n"));
            break;
        }
        let (n, v) = l.split_once(':').unwrap_or((l, ""));
        headers.insert(n.to_owned(), v.trim_start().to_owned());
    }
    HttpArgs { method, path_or_url, headers, body }
}

/// Whether the validator accepts the input (for the replay's count of inputs that reach the
/// property's checks).
pub fn accepted(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else { return false };
    HttpExecutor::validate(&handle(selector), &args(&String::from_utf8_lossy(rest))).is_ok()
}

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let h = handle(selector);
    let a = args(&text);
    let Ok(v) = HttpExecutor::validate(&h, &a) else { return };
    if let Err(why) = accepted_holds(&h, &a, &v) {
        panic!("http_destination property (selector {selector}): {why}\nsent: {:?}\naccepted: {}", a.path_or_url, v.url());
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// `%XX` decoded once (bytes, lossy).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The property for a request `h` accepted; `Err` says what failed.
pub fn accepted_holds(h: &Handle, a: &HttpArgs, v: &ValidatedRequest) -> Result<(), String> {
    let c = h.http().ok_or("not an http handle")?;
    let accepted = v.url().as_str();
    let u = Url::parse(accepted).map_err(|e| format!("the accepted URL does not parse again: {e}"))?;
    if u.as_str() != accepted {
        return Err(format!("the accepted URL parses again as {u}"));
    }
    let host = match u.host_str() {
        Some(s) => s.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => return Err("the accepted URL has no host".into()),
    };
    let port = u.port_or_known_default();
    let method = v.method();
    if method != a.method.to_ascii_uppercase() {
        return Err(format!("method {:?} became {method}", a.method));
    }
    let d = c
        .destinations
        .iter()
        .find(|d| d.scheme == u.scheme() && d.host == host && Some(d.port) == port && under(u.path(), &d.path_prefix) && d.methods.iter().any(|m| m == method))
        .ok_or_else(|| format!("no bound destination is {}://{host}:{port:?}{} for {method}", u.scheme(), u.path()))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the accepted URL carries user info".into());
    }
    if u.fragment().is_some() {
        return Err("the accepted URL keeps a fragment".into());
    }
    for seg in u.path().split('/').skip(1) {
        let mut cur = seg.to_owned();
        for _ in 0..3 {
            let bare = cur.split(';').next().unwrap_or("");
            if bare == "." || bare == ".." || cur.contains(['/', '\\', '\0']) {
                return Err(format!("path segment {seg:?} hides a dot segment or a slash"));
            }
            cur = percent_decode(&cur);
        }
    }
    if let Injection::Query { param } = &c.inject {
        if u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case(param)) {
            return Err(format!("the accepted URL already carries the injected parameter {param}"));
        }
    }
    // What hyper connects to: the `http` crate's reading of the same text.
    if let Ok(uri) = accepted.parse::<crate::Uri>() {
        let uhost = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let uport = uri.port_u16().or_else(|| default_port(uri.scheme_str().unwrap_or("")));
        if uri.scheme_str() != Some(d.scheme.as_str()) || uhost != d.host || uport != Some(d.port) {
            return Err(format!("http::Uri reads {:?} {uhost:?} {uport:?} where url reads {}://{host}:{}", uri.scheme_str(), d.scheme, d.port));
        }
    }
    // The agent's own URL named this origin, or was a path joined onto the first destination.
    if a.path_or_url.starts_with('/') {
        let first = &c.destinations[0];
        if (first.scheme.as_str(), first.host.as_str(), Some(first.port)) != (u.scheme(), host.as_str(), port) {
            return Err("a relative path was joined onto another origin than the first destination".into());
        }
    } else {
        let sent = Url::parse(&a.path_or_url).map_err(|e| format!("an absolute URL that does not parse was accepted: {e}"))?;
        if (sent.scheme(), sent.host_str(), sent.port_or_known_default()) != (u.scheme(), u.host_str(), port) {
            return Err(format!("the agent's URL {sent} was re-targeted"));
        }
    }
    // Admission is idempotent.
    let again = HttpArgs { path_or_url: accepted.to_owned(), ..a.clone() };
    match HttpExecutor::validate(h, &again) {
        Ok(w) if w.url() == v.url() => Ok(()),
        Ok(w) => Err(format!("validating the accepted URL again gives {}", w.url())),
        // The length limit is on what the agent sends; percent-encoding can make the accepted
        // URL up to three times longer (each byte of a non-ASCII character becomes `%XX`).
        Err(e) if e.code == ErrorCode::LimitExceeded && accepted.len() > a.path_or_url.len() => Ok(()),
        Err(e) => Err(format!("validating the accepted URL again is refused: {}", e.message)),
    }
}
