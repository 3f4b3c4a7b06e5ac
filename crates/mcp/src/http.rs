//! Streamable HTTP MCP at [`MCP_PATH`], stateless: every request is authenticated on its own.
//!
//! Order of checks, outermost first: a panic becomes a 500 that quotes nothing; `Host` and
//! `Origin` are validated (T19: a page in a browser reaching a local server through DNS rebinding
//! or a cross-origin request) before the request is read; the bearer token is authenticated
//! (401 otherwise, audited as a refusal); only then does `rmcp` parse the JSON-RPC body.

use crate::handler::AirlockMcp;
use airlock_core::config::ServerConfig;
use airlock_core::ErrorCode;
use airlock_server::{Broker, Caller};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{json, Value};
use std::sync::Arc;

/// The path the MCP endpoint is served at.
pub const MCP_PATH: &str = "/mcp";

/// Loopback names accepted in `Host` with any port.
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// The streamable HTTP MCP endpoint, routed at [`MCP_PATH`], and the stream endpoint of the thin
/// `airlock mcp` client at [`crate::STREAM_PATH`], behind the same Host/Origin guard and token check. Merge it into the REST router:
/// `airlock_server::http::router(b.clone()).merge(airlock_mcp::http_router(b))`.
pub fn http_router(broker: Arc<Broker>) -> Router {
    let guard = Arc::new(Guard::new(&broker.config().server));
    let cfg = StreamableHttpServerConfig::default()
        // Stateless: no session can outlive a revoked token, and the agent is the token's on
        // every request.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // `Guard` validates Host and Origin against airlock's settings and answers in the
        // contract's envelope.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(broker.config().limits.max_request_bytes)
        // crate::direct answers the one-message `tools/call` as this configuration does: no
        // request needs protocol metadata it does not carry.
        .with_stateless_protocol_metadata_required(false);
    let b = broker.clone();
    let service = StreamableHttpService::new(
        move || Ok(AirlockMcp::per_request(b.clone())),
        Arc::new(NeverSessionManager::default()),
        cfg,
    );
    let metadata = Router::new()
        .route(&format!("{PRM_PATH}{MCP_PATH}"), axum::routing::get(protected_resource))
        .route(PRM_PATH, axum::routing::get(protected_resource))
        .with_state(broker.clone());
    Router::new()
        .route_service(MCP_PATH, service)
        .route(crate::stream::STREAM_PATH, axum::routing::get(crate::stream::upgrade).with_state(broker.clone()))
        .layer(middleware::from_fn_with_state(broker, authenticate))
        .merge(metadata)
        .layer(middleware::from_fn_with_state(guard, check_host_and_origin))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
}

/// Where the protected resource metadata is served (RFC 9728 §3.1): this path followed by the
/// resource's path (`/.well-known/oauth-protected-resource/mcp`), and the bare path too.
pub const PRM_PATH: &str = "/.well-known/oauth-protected-resource";

/// `GET /.well-known/oauth-protected-resource[/mcp]`: which authorization servers MCP clients
/// get their tokens from (RFC 9728), when an issuer has `mcp = true`; 404 otherwise.
async fn protected_resource(State(broker): State<Arc<Broker>>) -> Response {
    match broker.protected_resource() {
        Some(p) => json_response(
            200,
            &json!({
                "resource": p.resource,
                "authorization_servers": p.authorization_servers,
                "scopes_supported": p.scopes,
                "bearer_methods_supported": ["header"],
                "resource_name": "airlock",
            }),
        ),
        None => json_response(404, &json!({"ok": false, "error": {"code": "not-found", "message": ErrorCode::NotFound.default_message()}})),
    }
}

/// `WWW-Authenticate` for a 401 (`error` absent) or a 403 step-up (`insufficient_scope`):
/// where the metadata is and which scopes to ask for (MCP authorization, RFC 6750 §3).
fn challenge(broker: &Broker, error: Option<&str>, scope: Option<&str>) -> HeaderValue {
    let mut v = String::from("Bearer");
    let mut params: Vec<String> = Vec::new();
    if let Some(e) = error {
        params.push(format!("error=\"{e}\""));
    }
    if let Some(p) = broker.protected_resource() {
        params.push(format!("resource_metadata=\"{}\"", p.metadata_url()));
        let scope = scope.map(str::to_owned).unwrap_or_else(|| p.scopes.join(" "));
        params.push(format!("scope=\"{scope}\""));
    }
    if !params.is_empty() {
        v.push(' ');
        v.push_str(&params.join(", "));
    }
    // Built from configuration and tool names only: always a valid header value.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// For a `tools/call` of a tool the caller's token has no scope for: HTTP 403 with
/// `error="insufficient_scope"` and the scopes to ask for (what it holds plus the tool's), so
/// an MCP client can step up. The refusal is audited like any other.
async fn step_up(broker: &Broker, caller: &Caller, body: &[u8]) -> Option<Response> {
    let held = caller.scopes()?;
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("method").and_then(Value::as_str) != Some("tools/call") {
        return None;
    }
    let name = v.pointer("/params/name").and_then(Value::as_str)?;
    let tool = airlock_core::Tool::parse(name)?;
    if caller.scope_allows(tool) {
        return None;
    }
    // The broker refuses it (the scope check comes before anything else) and audits it.
    let args = v.pointer("/params/arguments").cloned().unwrap_or_else(|| json!({}));
    let inv = Box::pin(broker.invoke(caller, tool.name(), args)).await;
    let mut scopes = held;
    scopes.push(format!("{}{}", airlock_server::SCOPE_PREFIX, tool.name()));
    let mut r = json_response(403, &inv.to_json());
    r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge(broker, Some("insufficient_scope"), Some(&scopes.join(" "))));
    Some(r)
}

fn json_response(status: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).expect("JSON")));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The payload may quote request data: log only that it happened.
    tracing::error!("an MCP request handler panicked; answered 500 internal");
    internal_response()
}

/// HTTP 500 in the contract's envelope, code `internal`, quoting nothing.
fn internal_response() -> Response {
    json_response(500, &json!({"ok": false, "error": {"code": ErrorCode::Internal.as_str(), "message": ErrorCode::Internal.default_message()}}))
}

/// The accepted `Host` and `Origin` values.
#[derive(Debug)]
struct Guard {
    /// Lowercase host and an optional port (none: any port).
    hosts: Vec<(String, Option<u16>)>,
    origins: Vec<String>,
}

impl Guard {
    fn new(cfg: &ServerConfig) -> Guard {
        let mut hosts: Vec<(String, Option<u16>)> = LOOPBACK_HOSTS.iter().map(|h| (h.to_string(), None)).collect();
        let listen = cfg.listen;
        let ip = match listen.ip() {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        };
        hosts.push((ip, Some(listen.port())));
        for h in &cfg.allowed_hosts {
            match parse_authority(h) {
                Some(a) => hosts.push(a),
                None => tracing::warn!("server.allowed_hosts has an entry that is not a host[:port]; ignored"),
            }
        }
        Guard { hosts, origins: cfg.allowed_origins.clone() }
    }

    /// Exact match of host (case-insensitive, as DNS names are) and port against the list.
    fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = parse_authority(host) else { return false };
        self.hosts.iter().any(|(h, p)| *h == name && (p.is_none() || *p == port))
    }

    /// No `Origin` is a non-browser client; a present one must be listed exactly.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(header::ORIGIN).iter();
        let Some(first) = values.next() else { return true };
        if values.next().is_some() {
            return false;
        }
        first.to_str().map(|o| self.origins.iter().any(|a| a == o)).unwrap_or(false)
    }
}

/// `host[:port]` → (lowercase host, port). Refuses user info, paths and anything else that is not
/// a plain authority.
fn parse_authority(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() || s.contains('@') {
        return None;
    }
    let a: http::uri::Authority = s.parse().ok()?;
    if a.as_str() != s {
        return None;
    }
    Some((a.host().to_ascii_lowercase(), a.port_u16()))
}

fn forbidden(message: &'static str) -> Response {
    json_response(403, &json!({"ok": false, "error": {"code": ErrorCode::BadRequest.as_str(), "message": message}}))
}

async fn check_host_and_origin(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    // HTTP/2 carries the authority in the URI instead of a Host header.
    let host = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok().map(str::to_owned),
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    };
    if !host.is_some_and(|h| guard.host_allowed(&h)) {
        tracing::warn!("MCP request refused: Host not allowed (T19)");
        return forbidden("host not allowed");
    }
    if !guard.origin_allowed(req.headers()) {
        tracing::warn!("MCP request refused: Origin not allowed (T19)");
        return forbidden("origin not allowed");
    }
    next.run(req).await
}

async fn authenticate(State(broker): State<Arc<Broker>>, mut req: Request, next: Next) -> Response {
    match airlock_server::http::authenticate(&broker, req.headers(), req.extensions()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            if req.method() != http::Method::POST {
                return next.run(req).await;
            }
            let limit = broker.config().limits.max_request_bytes;
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
                return json_response(413, &json!({"ok": false, "error": {"code": ErrorCode::LimitExceeded.as_str(), "message": ErrorCode::LimitExceeded.default_message()}}));
            };
            // A `tools/call` rmcp would answer with one JSON message is answered here (a
            // JSON-RPC object, so the shape check below has nothing to say of it).
            let direct = if parts.uri.path() == MCP_PATH { crate::direct::eligible(&parts.headers, &bytes) } else { None };
            if direct.is_none() {
                if let Some(refusal) = jsonrpc_shape_error(&bytes) {
                    return refusal;
                }
            }
            let caller = parts.extensions.get::<Caller>().cloned();
            if let Some(refusal) = match &caller {
                Some(c) => step_up(&broker, c, &bytes).await,
                None => None,
            } {
                return refusal;
            }
            if let (Some(call), Some(caller)) = (direct, &caller) {
                return crate::direct::answer(&broker, caller, call).await.unwrap_or_else(|_| {
                    tracing::error!("an MCP tool result could not be serialized; answered 500 internal");
                    internal_response()
                });
            }
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        Err(e) => {
            // A refused token is audited once per source per minute (T29).
            let inv = broker.refuse_from(&airlock_server::http::auth::source(req.extensions()), "-", e).await;
            let mut r = json_response(inv.status(), &inv.to_json());
            if inv.status() == 401 {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge(&broker, None, None));
            }
            r
        }
    }
}

/// A JSON-RPC error response (HTTP 400, `id: null`) for a body that is not JSON (-32700) or not a
/// JSON-RPC message object (-32600); `None` when `rmcp` should take it from here. The answer is
/// fixed text: nothing of the body is quoted back.
fn jsonrpc_shape_error(body: &[u8]) -> Option<Response> {
    let (code, message) = match serde_json::from_slice::<Value>(body) {
        Err(_) => (-32700, "Parse error"),
        Ok(Value::Object(m)) if m.get("jsonrpc").and_then(Value::as_str) == Some("2.0") => return None,
        Ok(_) => (-32600, "Invalid Request"),
    };
    Some(json_response(400, &json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str], origins: &[&str]) -> Guard {
        let cfg = ServerConfig {
            listen: "10.1.2.3:7878".parse().unwrap(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..ServerConfig::default()
        };
        Guard::new(&cfg)
    }

    #[test]
    fn t19_host_is_loopback_the_listen_address_or_configured() {
        let g = guard(&["mcp.example.com", "api.example.com:8443"], &[]);
        for ok in [
            "localhost", "localhost:7878", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:9", "[::1]", "[::1]:7878",
            "10.1.2.3:7878", "mcp.example.com", "MCP.example.com:443", "api.example.com:8443",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "", "attacker.test", "attacker.test:7878", "localhost.attacker.test", "localhost.", "127.0.0.2",
            "2130706433", "0x7f000001", "127.1", "10.1.2.3", "10.1.2.3:7879", "api.example.com", "api.example.com:443",
            "user@localhost", "localhost/x", "mcp.example.com.attacker.test", "::1", "[::2]",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn t19_origin_absent_or_listed_exactly() {
        let g = guard(&[], &["https://app.example"]);
        let mut h = HeaderMap::new();
        assert!(g.origin_allowed(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        assert!(g.origin_allowed(&h));
        for bad in ["https://app.example.attacker.test", "http://app.example", "https://APP.example/", "null", "https://app.example:443"] {
            h.insert(header::ORIGIN, HeaderValue::from_static(bad));
            assert!(!g.origin_allowed(&h), "{bad}");
        }
        let mut two = HeaderMap::new();
        two.append(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        two.append(header::ORIGIN, HeaderValue::from_static("https://attacker.test"));
        assert!(!g.origin_allowed(&two));
        let none = guard(&[], &[]);
        h.insert(header::ORIGIN, HeaderValue::from_static("http://localhost:7878"));
        assert!(!none.origin_allowed(&h), "no configured origin: every browser origin is refused");
    }

}
