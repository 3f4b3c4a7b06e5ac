//! Admission of a request against a handle's bound destinations (T05), with no secret and no I/O.
//!
//! Every URL, the agent's and every redirect hop's, goes through [`admit`]: parsed by `url`
//! (which lowercases and IDNA-maps host names, canonicalises IP literals and resolves dot
//! segments), then compared exactly with the destinations. IP-literal hosts only ever match a
//! destination that binds that same literal, which is why they may skip the resolver's check.

use airlock_core::config::{HttpConstraints, Injection};
use airlock_core::{CallError, ErrorCode};
use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use url::{Host, Url};

/// The methods the tool knows (the same set the configuration accepts).
pub(crate) const KNOWN_METHODS: [&str; 7] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Most agent headers on one request.
pub(crate) const MAX_HEADERS: usize = 64;

/// Longest `path_or_url`.
pub(crate) const MAX_URL_LEN: usize = 8192;

/// Headers the agent may never set, compared after [`normalize_header_name`]. Each can turn an
/// allowed call into a leak or a different call (T24):
/// - credentials and cookies: the broker's injected credential must be the only one;
/// - routing and framing (`host`, `content-length`, `expect`, `via`, hop-by-hop headers): request
///   smuggling and a different virtual host;
/// - `range`, `if-range`, `request-range`: a slice of a response cut where the scrubber cannot
///   see the whole secret;
/// - method and path overrides: a GET the binding allows, executed as a DELETE or on another
///   path by the framework behind the destination;
/// - `accept-encoding`: the broker chooses the encodings it can decode before scrubbing;
/// - `proxy` (httpoxy: CGI turns it into `HTTP_PROXY`, the upstream's own outgoing proxy).
const FORBIDDEN_HEADERS: [&str; 28] = [
    "host",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "proxy",
    "cookie",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "via",
    "forwarded",
    "accept-encoding",
    "range",
    "if-range",
    "request-range",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded",
];

/// Name prefixes the agent may never set: every `x-forwarded-*` (host, proto, prefix, uri, ...
/// steer routing and generated URLs) and every `proxy-*`.
const FORBIDDEN_PREFIXES: [&str; 2] = ["x-forwarded-", "proxy-"];

/// The part of a URL that matched no destination, ordered by how far matching got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    Scheme,
    Host,
    Port,
    Path,
    Method,
}

impl Part {
    fn message(self) -> &'static str {
        match self {
            Part::Scheme => "the destination is not bound to this handle (scheme)",
            Part::Host => "the destination is not bound to this handle (host)",
            Part::Port => "the destination is not bound to this handle (port)",
            Part::Path => "the destination is not bound to this handle (path)",
            Part::Method => "the destination is not bound to this handle (method)",
        }
    }
}

fn refused(msg: &'static str) -> CallError {
    CallError::with_message(ErrorCode::DestinationNotAllowed, msg)
}

fn invalid(msg: &'static str) -> CallError {
    CallError::with_message(ErrorCode::InvalidArguments, msg)
}

/// The agent's method, uppercased; only the known methods.
pub(crate) fn parse_method(m: &str) -> Result<Method, CallError> {
    let up = m.to_ascii_uppercase();
    if !KNOWN_METHODS.contains(&up.as_str()) {
        return Err(invalid(
            "method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
    }
    Method::from_bytes(up.as_bytes()).map_err(|_| invalid("method is not valid"))
}

/// Turns the agent's `path_or_url` into an absolute URL (relative paths join the first
/// destination's origin). Shape only; [`admit`] does the binding check.
pub(crate) fn parse_target(c: &HttpConstraints, path_or_url: &str) -> Result<Url, CallError> {
    if path_or_url.is_empty() {
        return Err(invalid("path_or_url is empty"));
    }
    if path_or_url.len() > MAX_URL_LEN {
        return Err(CallError::with_message(
            ErrorCode::LimitExceeded,
            "path_or_url is too long",
        ));
    }
    // The URL parser silently drops tabs and newlines and trims spaces, which could turn
    // "/\t/host" into "//host"; refuse such input instead of guessing.
    if path_or_url
        .chars()
        .any(|ch| ch.is_control() || ch.is_whitespace())
    {
        return Err(invalid(
            "path_or_url must not contain whitespace or control characters",
        ));
    }
    // Backslashes are slashes to the URL parser but not to every server.
    if path_or_url.contains('\\') {
        return Err(refused(
            "the destination is not bound to this handle (backslash in URL)",
        ));
    }
    if let Some(rest) = path_or_url.strip_prefix('/') {
        if rest.starts_with('/') {
            return Err(refused(
                "the destination is not bound to this handle (protocol-relative URL)",
            ));
        }
        let d = c
            .destinations
            .first()
            .ok_or_else(|| refused(Part::Host.message()))?;
        // The origin and the path read as one absolute URL: the same URL as the origin's
        // `join` of the path (a path-absolute reference keeps the base's scheme and authority
        // and is parsed by the same path rules; `relative_paths_resolve_as_a_join_would`), in
        // one parse instead of two and a join.
        let mut at = String::with_capacity(d.scheme.len() + d.host.len() + path_or_url.len() + 11);
        at.push_str(&d.scheme);
        at.push_str("://");
        push_host(&mut at, &d.host);
        let _ = write!(at, ":{}{path_or_url}", d.port);
        return Url::parse(&at).map_err(|_| invalid("path_or_url is not a valid path"));
    }
    Url::parse(path_or_url)
        .map_err(|_| invalid("path_or_url must be a path starting with '/' or an absolute URL"))
}

/// A destination's host as a URL writes it: an IPv6 literal in brackets.
fn push_host(out: &mut String, host: &str) {
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
}

/// Checks `url` and `method` against the handle's destinations; returns the URL to send
/// (fragment removed). Used for the agent's URL and for every redirect hop.
pub(crate) fn admit(c: &HttpConstraints, mut url: Url, method: &Method) -> Result<Url, CallError> {
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(refused(Part::Scheme.message()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused(
            "the destination is not bound to this handle (user info is not allowed)",
        ));
    }
    url.set_fragment(None);
    if !path_is_plain(url.path()) {
        return Err(refused(
            "the destination is not bound to this handle (encoded slash or dot segment in path)",
        ));
    }
    if let Injection::Query { param } = &c.inject {
        if url
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case(param))
        {
            return Err(invalid(
                "the URL carries the query parameter this handle injects",
            ));
        }
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Ipv6(a)) => a.to_string(),
        None => return Err(refused(Part::Host.message())),
    };
    let port = url.port_or_known_default();
    let mut furthest = Part::Scheme;
    for d in &c.destinations {
        let miss = if d.scheme != url.scheme() {
            Part::Scheme
        } else if d.host != host {
            Part::Host
        } else if Some(d.port) != port {
            Part::Port
        } else if !path_under(url.path(), &d.path_prefix) {
            Part::Path
        } else if !d.methods.iter().any(|m| m == method.as_str()) {
            Part::Method
        } else {
            return Ok(url);
        };
        furthest = furthest.max(miss);
    }
    Err(refused(furthest.message()))
}

/// `path` equals `prefix` or continues it after a `/`.
fn path_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// False when a segment still hides a slash, a backslash or a dot segment after decoding (up to
/// three rounds, for servers that decode twice), including `..;` which some servers read as `..`.
fn path_is_plain(path: &str) -> bool {
    path.split('/').all(|seg| {
        let mut cur = seg.to_owned();
        for _ in 0..3 {
            let bare = cur.split(';').next().unwrap_or("");
            if bare == "."
                || bare == ".."
                || cur.contains('\\')
                || cur.contains('/')
                || cur.contains('\0')
            {
                return false;
            }
            let next = percent_decode_str(&cur).decode_utf8_lossy().into_owned();
            if next == cur {
                break;
            }
            cur = next;
        }
        true
    })
}

/// The form a header name is compared in: lowercase, and `_` read as `-`, because CGI-style
/// servers (and nginx or Apache set up to accept underscores) turn both `X-Forwarded-For` and
/// `X_Forwarded_For` into the same `HTTP_X_FORWARDED_FOR`.
fn normalize_header_name(name: &HeaderName) -> String {
    name.as_str().replace('_', "-")
}

/// True when the agent may not set a header of this (normalised) name; `injected` is the
/// handle's injection header, normalised the same way.
fn header_forbidden(norm: &str, injected: Option<&str>) -> bool {
    FORBIDDEN_HEADERS.contains(&norm)
        || FORBIDDEN_PREFIXES.iter().any(|p| norm.starts_with(p))
        || injected == Some(norm)
}

/// Validates the agent's headers into a map; refuses forbidden and malformed ones.
///
/// Malformed names and values are `invalid-arguments`; a well-formed name the agent may not set,
/// or a name given twice in another case or spelling, is `header-not-allowed`. The message names
/// the header (a token the agent wrote), never its value.
pub(crate) fn agent_headers(
    c: &HttpConstraints,
    headers: &BTreeMap<String, String>,
) -> Result<HeaderMap, CallError> {
    if headers.len() > MAX_HEADERS {
        return Err(CallError::with_message(
            ErrorCode::LimitExceeded,
            "too many headers",
        ));
    }
    let injected = match &c.inject {
        Injection::Header { name, .. } => Some(name.to_ascii_lowercase().replace('_', "-")),
        _ => None,
    };
    let mut map = HeaderMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in headers {
        // `HeaderName` accepts only RFC 9110 tokens and lowercases them.
        let hn = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("a header name is not valid"))?;
        let norm = normalize_header_name(&hn);
        if header_forbidden(&norm, injected.as_deref()) {
            return Err(CallError::with_message(
                ErrorCode::HeaderNotAllowed,
                format!("the header '{}' may not be set by the agent", hn.as_str()),
            ));
        }
        // The arguments are a JSON object, so exact duplicates are gone already; `X-A` next to
        // `x-a` (or `x_a`) would reach the server as two values of one header.
        if !seen.insert(norm) {
            return Err(CallError::with_message(
                ErrorCode::HeaderNotAllowed,
                format!("the header '{}' is given more than once", hn.as_str()),
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid("header values must not contain CR, LF or NUL"));
        }
        let hv =
            HeaderValue::from_str(value).map_err(|_| invalid("a header value is not valid"))?;
        map.append(hn, hv);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::Destination;
    use proptest::prelude::*;

    fn bound_to(scheme: &str, host: &str, port: u16) -> HttpConstraints {
        HttpConstraints {
            destinations: vec![Destination {
                scheme: scheme.into(),
                host: host.into(),
                port,
                path_prefix: "/".into(),
                methods: vec!["GET".into()],
            }],
            inject: Injection::Header { name: "X-API-Key".into(), format: "{}".into() },
            max_response_bytes: 1024,
            timeout_ms: 1000,
            max_redirects: 0,
            allow_private_addresses: false,
            max_request_bytes: 1024,
        }
    }

    /// What a relative path meant before it was read in one parse: the destination's origin,
    /// then the URL parser's `join` of the path.
    fn joined(c: &HttpConstraints, path: &str) -> Option<Url> {
        let d = &c.destinations[0];
        let host = if d.host.contains(':') { format!("[{}]", d.host) } else { d.host.clone() };
        Url::parse(&format!("{}://{}:{}/", d.scheme, host, d.port)).ok()?.join(path).ok()
    }

    /// The characters a path may hold, weighted towards the ones URL parsing treats
    /// specially: dots and slashes (dot segments), `%` (escapes), `?` and `#` (query and
    /// fragment), `@` and `:` (authority look-alikes), `[`, `]`, and non-ASCII.
    fn path_text() -> impl Strategy<Value = String> {
        let special = vec!["/", ".", "..", "%", "%2e", "%2F", "?", "#", "@", ":", "[", "]", ";"];
        let piece = prop_oneof![
            10 => proptest::sample::select(special).prop_map(str::to_owned),
            1 => "[a-zA-Z0-9_~!$&'()*+,=-]{1,6}",
            1 => "[\\u{80}-\\u{10FFFF}]{1,2}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    fn destination() -> impl Strategy<Value = (String, String, u16)> {
        (
            prop_oneof![Just("https".to_string()), Just("http".to_string())],
            prop_oneof![
                Just("api.example.com".to_string()),
                Just("127.0.0.1".to_string()),
                Just("::1".to_string()),
                Just("fe80::1:2".to_string()),
                "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}",
            ],
            prop_oneof![Just(80u16), Just(443u16), any::<u16>()],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// A relative path gives the URL the destination's origin joined with it would (the
        /// same URL, or refused alike), for generated destinations and paths.
        #[test]
        fn relative_paths_resolve_as_a_join_would((scheme, host, port) in destination(), rest in path_text()) {
            let c = bound_to(&scheme, &host, port);
            let path = format!("/{rest}");
            let ours = parse_target(&c, &path);
            if path.starts_with("//") || path.contains('\\') || path.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                prop_assert!(ours.is_err());
            } else {
                prop_assert_eq!(ours.ok(), joined(&c, &path), "path {:?}", path);
            }
        }
    }

    #[test]
    fn path_prefix_is_whole_segments() {
        assert!(path_under("/v1", "/v1"));
        assert!(path_under("/v1/x", "/v1"));
        assert!(!path_under("/v1x", "/v1"));
        assert!(path_under("/v1/x", "/v1/"));
        assert!(!path_under("/v1", "/v1/"));
        assert!(path_under("/anything", "/"));
        assert!(!path_under("/V1/x", "/v1/"));
    }

    #[test]
    fn hidden_slashes_and_dot_segments_are_refused() {
        for p in [
            "/v1/%2e%2e/admin",
            "/v1/..",
            "/v1/%2f",
            "/v1/a%2Fb",
            "/v1/%5c",
            "/v1/..;/x",
            "/v1/%252e%252e/x",
            "/v1/.%2E",
        ] {
            assert!(!path_is_plain(p), "{p}");
        }
        for p in ["/v1/a.b", "/v1/...", "/v1/a%20b", "/", "/v1/x;y"] {
            assert!(path_is_plain(p), "{p}");
        }
    }

    #[test]
    fn url_crate_resolves_encoded_dot_segments() {
        // The parser turns %2e%2e into a real dot segment and resolves it, so a prefix check on the
        // parsed path sees where the request really goes.
        let u = Url::parse("https://h/v1/%2e%2e/admin").unwrap();
        assert_eq!(u.path(), "/admin");
        let u = Url::parse("https://h/v1/.%2E/admin").unwrap();
        assert_eq!(u.path(), "/admin");
    }
}
