//! The `http_request` executor: `{method, path_or_url, headers?, body?}` on an `http` handle.
//!
//! Two steps. [`HttpExecutor::validate`] checks the agent's arguments against the handle's bound
//! destinations with no secret and no I/O (T05). [`HttpExecutor::execute`] is the only place the
//! secret is exposed: it injects it at the handle's injection point (never into text the agent
//! wrote), sends the request through a client whose resolver refuses non-public addresses at
//! connect time (T07), follows redirects by hand, re-checking each hop (T06), enforces the
//! timeout and the response cap (T20), decodes compressed bodies under that cap so the scrubber
//! sees plain bytes (T24), and maps failures to fixed codes with URL-free detail (T12). The
//! broker scrubs the result afterwards (T18).
#![forbid(unsafe_code)]

mod addr;
mod decode;
mod response;
mod tool;
mod validate;

pub use addr::{is_public, ResolveError};

use airlock_core::config::{Handle, HttpConstraints, Injection};
use airlock_core::{CallError, ErrorCode, Secret};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, CONTENT_TYPE, LOCATION,
};
use reqwest::{Client, Method, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use zeroize::Zeroizing;

/// The arguments of `http_request` besides `credential_handle`.
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema (`schemars`).
#[derive(Clone, Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// The HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (case-insensitive), one
    /// the handle's destinations allow.
    pub method: String,
    /// A path starting with `/` such as `/v1/items` (joined onto the handle's first
    /// destination), or a full URL on one of the handle's destinations.
    pub path_or_url: String,
    /// Extra request headers (never credentials); credential, routing, framing, range, override
    /// and `Accept-Encoding` headers are refused (`header-not-allowed`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body, sent as is.
    #[serde(default)]
    pub body: Option<String>,
}

/// A request admitted against a handle's destinations. Holds no secret.
#[derive(Clone, Debug)]
pub struct ValidatedRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<bytes::Bytes>,
}

impl ValidatedRequest {
    /// The method, uppercase.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The resolved URL, without fragment and without any injected credential.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// Executes `http_request` calls. Holds two pooled clients (private addresses refused or
/// allowed) for each thread that calls it, each built on first use, so repeated calls reuse
/// connections.
///
/// Per thread because a pooled connection is driven by a task on the runtime that opened it: a
/// call that borrows a connection opened on another thread's runtime waits for that thread at
/// each step of the exchange. The broker serves each agent connection on one lane (a runtime of
/// one thread), so with a pool per thread a call stays on its lane from request to answer.
pub struct HttpExecutor {
    clients: thread_local::ThreadLocal<Clients>,
}

/// One thread's clients.
struct Clients {
    public_only: Client,
    private_allowed: Client,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpExecutor")
    }
}

impl Default for HttpExecutor {
    fn default() -> Self {
        Self::new()
    }
}

fn build_client(allow_private: bool) -> Client {
    Client::builder()
        // Redirects are followed by hand so that every hop is re-checked (T06).
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would make the resolver check the proxy's address instead of the destination's.
        .no_proxy()
        .dns_resolver(Arc::new(addr::GuardedResolver { allow_private }))
        .referer(false)
        // One decoding path only, ours (T24): if a workspace feature ever turns on reqwest's own
        // decompression, it must not decode without the cap or strip `Content-Encoding`.
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
        .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
        .build()
        // Same failure mode as `reqwest::Client::new()`: only when the TLS backend cannot start.
        .expect("the HTTP client (rustls) could not be initialised")
}

/// The secret prepared for the handle's injection point.
enum Inject<'a> {
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    Basic {
        username: &'a str,
        password: &'a str,
    },
    Query {
        param: &'a str,
        value: &'a str,
    },
}

fn secret_unusable() -> CallError {
    CallError::with_message(
        ErrorCode::SecretUnavailable,
        "the credential behind this handle cannot be used at its injection point",
    )
}

fn prepare<'a>(inject: &'a Injection, secret: &'a Secret) -> Result<Inject<'a>, CallError> {
    // Control characters (CR/LF above all) would split headers or smuggle requests.
    let value = secret
        .expose_str()
        .filter(|s| !s.chars().any(char::is_control))
        .ok_or_else(|| {
            secret_unusable().detail("the secret is not UTF-8 or contains control characters")
        })?;
    match inject {
        Injection::Header { name, format } => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CallError::new(ErrorCode::Internal)
                    .detail("the bound injection header name is invalid")
            })?;
            let (before, after) = format.split_once("{}").unwrap_or((format.as_str(), ""));
            let mut buf = Zeroizing::new(Vec::with_capacity(format.len() + value.len()));
            buf.extend_from_slice(before.as_bytes());
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(after.as_bytes());
            let mut value = HeaderValue::from_bytes(&buf)
                .map_err(|_| secret_unusable().detail("the secret is not a valid header value"))?;
            value.set_sensitive(true);
            Ok(Inject::Header { name, value })
        }
        Injection::Basic { username } => Ok(Inject::Basic {
            username,
            password: value,
        }),
        Injection::Query { param } => Ok(Inject::Query { param, value }),
    }
}

fn constraints(handle: &Handle) -> Result<&HttpConstraints, CallError> {
    handle
        .http()
        .ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable).detail("not an http handle"))
}

fn check_body(c: &HttpConstraints, body: Option<&[u8]>) -> Result<(), CallError> {
    if body.is_some_and(|b| b.len() > c.max_request_bytes) {
        return Err(CallError::with_message(
            ErrorCode::LimitExceeded,
            "the request body is larger than this handle allows",
        ));
    }
    Ok(())
}

/// Where a redirect leads, if it may be followed: the hop's URL is admitted exactly like an
/// agent URL, with the method the redirect implies. 301/302/303 turn into GET (HEAD stays HEAD)
/// without body; 307/308 keep method and body; anything else is not followed.
fn next_hop(
    c: &HttpConstraints,
    current: &Url,
    method: &Method,
    status: StatusCode,
    location: Option<&HeaderValue>,
) -> Option<(Url, Method, bool)> {
    let (next_method, keep_body) = match status.as_u16() {
        301..=303 if *method == Method::HEAD => (Method::HEAD, false),
        301..=303 => (Method::GET, false),
        307 | 308 => (method.clone(), true),
        _ => return None,
    };
    let loc = location?.to_str().ok()?;
    if loc.is_empty()
        || loc.contains('\\')
        || loc.chars().any(|ch| ch.is_control() || ch.is_whitespace())
    {
        return None;
    }
    let next = current.join(loc).ok()?;
    let next = validate::admit(c, next, &next_method).ok()?;
    Some((next, next_method, keep_body))
}

/// Operator detail for a transport error: the error chain with every URL removed (a URL may
/// carry a query-injected secret).
fn upstream_error(e: reqwest::Error) -> CallError {
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut refused = false;
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            refused |= matches!(r, ResolveError::Refused { .. });
        }
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    let code = if refused {
        ErrorCode::AddressRefused
    } else if e.is_timeout() {
        ErrorCode::UpstreamTimeout
    } else {
        ErrorCode::UpstreamUnavailable
    };
    CallError::new(code).detail(detail)
}

impl HttpExecutor {
    /// Builds the executor; each thread's two connection pools are built on its first call.
    pub fn new() -> Self {
        HttpExecutor {
            clients: thread_local::ThreadLocal::new(),
        }
    }

    /// Checks the agent's arguments against the handle: method, URL bound to a destination
    /// (scheme, host, port, path prefix, method), headers, body size. No secret, no I/O.
    pub fn validate(handle: &Handle, args: &HttpArgs) -> Result<ValidatedRequest, CallError> {
        let c = constraints(handle)?;
        let method = validate::parse_method(&args.method)?;
        let url = validate::parse_target(c, &args.path_or_url)?;
        let url = validate::admit(c, url, &method)?;
        let headers = validate::agent_headers(c, &args.headers)?;
        check_body(c, args.body.as_deref().map(str::as_bytes))?;
        let body = args.body.as_ref().map(|b| bytes::Bytes::from(b.clone()));
        Ok(ValidatedRequest {
            method,
            url,
            headers,
            body,
        })
    }

    /// Sends the request with the secret injected at the handle's injection point and returns
    /// `{status, headers, body, truncated}` (plus `body_encoding: "base64"` for binary bodies).
    pub async fn execute(
        &self,
        handle: &Handle,
        req: &ValidatedRequest,
        secret: &Secret,
    ) -> Result<serde_json::Value, CallError> {
        let c = constraints(handle)?;
        // Re-admitted here so that a request validated for another handle can never receive
        // this handle's secret.
        let url = validate::admit(c, req.url.clone(), &req.method)?;
        check_body(c, req.body.as_deref())?;
        let inject = prepare(&c.inject, secret)?;
        let clients = self.clients.get_or(|| Clients {
            public_only: build_client(false),
            private_allowed: build_client(true),
        });
        let client = if c.allow_private_addresses {
            &clients.private_allowed
        } else {
            &clients.public_only
        };
        let exchange = self.exchange(client, c, url, req, &inject);
        match tokio::time::timeout(Duration::from_millis(c.timeout_ms), exchange).await {
            Ok(r) => r,
            Err(_) => Err(CallError::new(ErrorCode::UpstreamTimeout)
                .detail(format!("no complete answer within {} ms", c.timeout_ms))),
        }
    }

    async fn exchange(
        &self,
        client: &Client,
        c: &HttpConstraints,
        mut url: Url,
        req: &ValidatedRequest,
        inject: &Inject<'_>,
    ) -> Result<serde_json::Value, CallError> {
        let mut method = req.method.clone();
        let mut headers = req.headers.clone();
        let mut body = req.body.clone();
        let mut hops = 0u8;
        loop {
            let mut target = url.clone();
            if let Inject::Query { param, value } = inject {
                target.query_pairs_mut().append_pair(param, value);
            }
            let mut rb = client
                .request(method.clone(), target)
                .headers(headers.clone())
                // Exactly the codings `decode` undoes, so the scrubber sees the decoded body; the
                // agent may not set this header (T24).
                .header(ACCEPT_ENCODING, decode::ACCEPT_ENCODING_VALUE);
            match inject {
                Inject::Header { name, value } => rb = rb.header(name.clone(), value.clone()),
                Inject::Basic { username, password } => {
                    rb = rb.basic_auth(username, Some(password))
                }
                Inject::Query { .. } => {}
            }
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let mut resp = rb.send().await.map_err(upstream_error)?;
            if hops < c.max_redirects {
                if let Some((next, next_method, keep_body)) = next_hop(
                    c,
                    &url,
                    &method,
                    resp.status(),
                    resp.headers().get(LOCATION),
                ) {
                    hops += 1;
                    url = next;
                    method = next_method;
                    if !keep_body {
                        body = None;
                        headers.remove(CONTENT_TYPE);
                    }
                    continue;
                }
            }
            let status = resp.status().as_u16();
            let injected = match &c.inject {
                Injection::Header { name, .. } => Some(name.as_str()),
                _ => None,
            };
            let mut out_headers = response::filter_headers(resp.headers(), injected);
            let binary = response::is_binary(resp.headers());
            let codings = decode::codings(resp.headers());
            let (bytes, truncated) = if matches!(&codings, Ok(c) if c.is_empty()) {
                response::read_capped(&mut resp, c.max_response_bytes)
                    .await
                    .map_err(upstream_error)?
            } else {
                // The body returned is the decoded one: its coding and length are gone.
                out_headers.remove("content-encoding");
                out_headers.remove("content-length");
                decode::read_decoded(&mut resp, codings, c.max_response_bytes)
                    .await
                    .map_err(upstream_error)??
            };
            return Ok(response::result(
                status,
                out_headers,
                bytes,
                binary,
                truncated,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::Destination;

    fn constraints(dests: &[(&str, &str, u16, &str)], max_redirects: u8) -> HttpConstraints {
        HttpConstraints {
            destinations: dests
                .iter()
                .map(|(scheme, host, port, prefix)| Destination {
                    scheme: scheme.to_string(),
                    host: host.to_string(),
                    port: *port,
                    path_prefix: prefix.to_string(),
                    methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
                })
                .collect(),
            inject: Injection::Header {
                name: "X-API-Key".into(),
                format: "{}".into(),
            },
            max_response_bytes: 1024,
            timeout_ms: 1000,
            max_redirects,
            allow_private_addresses: false,
            max_request_bytes: 1024,
        }
    }

    fn hop(
        c: &HttpConstraints,
        status: u16,
        loc: &str,
        method: Method,
    ) -> Option<(Url, Method, bool)> {
        let cur = Url::parse("https://api.example.com/v1/a").unwrap();
        let v = HeaderValue::from_str(loc).unwrap();
        next_hop(
            c,
            &cur,
            &method,
            StatusCode::from_u16(status).unwrap(),
            Some(&v),
        )
    }

    #[test]
    fn t06_redirect_hops_are_rechecked_like_agent_urls() {
        let c = constraints(&[("https", "api.example.com", 443, "/v1/")], 3);
        let (u, m, keep) = hop(&c, 302, "/v1/b?x=1", Method::POST).unwrap();
        assert_eq!(
            (u.as_str(), m, keep),
            ("https://api.example.com/v1/b?x=1", Method::GET, false)
        );
        let (_, m, keep) = hop(&c, 307, "b", Method::POST).unwrap();
        assert_eq!((m, keep), (Method::POST, true));
        let (_, m, _) = hop(&c, 303, "/v1/c", Method::HEAD).unwrap();
        assert_eq!(m, Method::HEAD);
        for loc in [
            "http://api.example.com/v1/b",       // downgrade
            "https://api.example.com:8443/v1/b", // other port
            "https://attacker.test/v1/b",        // other host
            "//attacker.test/v1/b",              // protocol-relative
            "/\\attacker.test/v1/b",             // backslash
            "https://api.example.com@attacker.test/v1/",
            "https://u:p@api.example.com/v1/b",
            "/admin", // outside the prefix
            "/v1/%2e%2e/admin",
            "https://169.254.169.254/v1/",
        ] {
            assert!(hop(&c, 302, loc, Method::GET).is_none(), "{loc}");
            assert!(hop(&c, 308, loc, Method::GET).is_none(), "{loc}");
        }
        assert!(hop(&c, 300, "/v1/b", Method::GET).is_none());
        assert!(hop(&c, 304, "/v1/b", Method::GET).is_none());
    }

    #[test]
    fn redirect_method_change_is_rechecked() {
        // POST-only binding: a 303 would turn the request into a GET, which is not bound.
        let mut c = constraints(&[("https", "api.example.com", 443, "/v1/")], 3);
        c.destinations[0].methods = vec!["POST".into()];
        assert!(hop(&c, 303, "/v1/b", Method::POST).is_none());
        assert!(hop(&c, 307, "/v1/b", Method::POST).is_some());
    }

    #[test]
    fn secrets_with_control_characters_are_not_injected() {
        let inj = Injection::Header {
            name: "X-API-Key".into(),
            format: "Token {}".into(),
        };
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\0b"] {
            let e = prepare(&inj, &Secret::from_str_value(bad)).err().unwrap();
            assert_eq!(e.code, ErrorCode::SecretUnavailable);
            assert!(!format!("{} {:?}", e.message, e.detail).contains(bad));
        }
        let Inject::Header { value, .. } = prepare(&inj, &Secret::from_str_value("k-123"))
            .ok()
            .unwrap()
        else {
            panic!("header injection expected")
        };
        assert!(value.is_sensitive());
        assert_eq!(value.as_bytes(), b"Token k-123");
        let q = Injection::Query {
            param: "key".into(),
        };
        assert!(prepare(&q, &Secret::new(vec![0xff, 0xfe])).is_err());
    }
}
