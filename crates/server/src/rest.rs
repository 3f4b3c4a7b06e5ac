//! The REST server: `GET /v1/tools`, `POST /v1/invoke`, leases (`POST /v1/leases`,
//! `GET /v1/leases`, `DELETE /v1/leases/{id}`), tasks (`POST /v1/tasks`,
//! `POST /v1/tasks/{id}/close`), sub-agents (`POST /v1/agents/self/children`), `GET /healthz`,
//! `GET /metrics`.
//!
//! Every error is the contract's envelope with a stable code; a panic in a handler becomes a 500
//! with code `internal` and a log line that carries no request data.

use crate::broker::{Broker, Caller};
use crate::tools::Format;
use airlock_core::{CallError, ErrorCode};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use airlock_core::Peer;
use axum::extract::ConnectInfo;
use tokio::net::{TcpListener, UnixListener};

fn json_response(status: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).expect("JSON")));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_response(code: ErrorCode, request_id: Option<&str>) -> Response {
    let mut body = json!({"ok": false, "error": {"code": code.as_str(), "message": code.default_message()}});
    if let Some(id) = request_id {
        body["request_id"] = json!(id);
    }
    json_response(code.http_status(), &body)
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The connection info of the Unix socket: the peer's credentials as the kernel gave them at
/// accept (`SO_PEERCRED`). Only the socket listener inserts it, so an HTTP client cannot claim
/// one.
#[derive(Clone, Copy, Debug)]
pub struct SocketPeer(pub Option<Peer>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>> for SocketPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        SocketPeer(stream.io().peer_cred().ok().map(|c| Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() }))
    }
}

/// The socket peer of a request, when it came over the Unix socket.
pub fn socket_peer(extensions: &http::Extensions) -> Option<Peer> {
    extensions.get::<ConnectInfo<SocketPeer>>().and_then(|c| c.0 .0)
}

/// Authenticates the request's bearer token; the caller carries the socket peer, if any, for
/// the audit. The one way every front end (REST, MCP over HTTP) turns a request into a
/// [`Caller`].
pub async fn authenticate(broker: &Broker, headers: &HeaderMap, extensions: &http::Extensions) -> Result<Caller, CallError> {
    let mut c = broker.authenticate(bearer(headers)).await?;
    c.peer = socket_peer(extensions);
    Ok(c)
}

/// The caller side of a request, for handlers: its bearer token and socket peer.
pub struct AgentAuth {
    token: Option<String>,
    peer: Option<Peer>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AgentAuth {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AgentAuth { token: bearer(&parts.headers).map(str::to_owned), peer: socket_peer(&parts.extensions) })
    }
}

async fn caller(broker: &Broker, auth: &AgentAuth) -> Result<Caller, CallError> {
    let mut c = broker.authenticate(auth.token.as_deref()).await?;
    c.peer = auth.peer;
    Ok(c)
}

#[derive(Deserialize)]
struct ToolsQuery {
    format: Option<String>,
}

async fn tools(State(b): State<Arc<Broker>>, auth: AgentAuth, q: Query<ToolsQuery>) -> Response {
    let c = match caller(&b, &auth).await {
        Ok(c) => c,
        Err(e) => return error_response(e.code, None),
    };
    let Some(format) = Format::parse(q.format.as_deref().unwrap_or("mcp")) else {
        let body = json!({"ok": false, "error": {"code": "invalid-arguments", "message": "format is mcp, openai or anthropic"}});
        return json_response(400, &body);
    };
    json_response(200, &b.tools_json_for(&c, format).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    tool: String,
    #[serde(default)]
    arguments: Value,
}

async fn invoke(State(b): State<Arc<Broker>>, auth: AgentAuth, body: Bytes) -> Response {
    let c = match caller(&b, &auth).await {
        Ok(c) => c,
        Err(e) => {
            let inv = b.refuse("-", e).await;
            return json_response(inv.status(), &inv.to_json());
        }
    };
    let req: InvokeBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            let inv = b.refuse("-", CallError::new(ErrorCode::BadRequest)).await;
            return json_response(inv.status(), &inv.to_json());
        }
    };
    let inv = b.invoke(&c, &req.tool, req.arguments).await;
    json_response(inv.status(), &inv.to_json())
}

/// Authenticates, or renders the audited refusal.
async fn caller_or_refuse(b: &Broker, auth: &AgentAuth, action: &str) -> Result<Caller, Response> {
    match caller(b, auth).await {
        Ok(c) => Ok(c),
        Err(e) => {
            let inv = b.refuse(action, e).await;
            Err(json_response(inv.status(), &inv.to_json()))
        }
    }
}

async fn lease_issue(State(b): State<Arc<Broker>>, auth: AgentAuth, body: Bytes) -> Response {
    let c = match caller_or_refuse(&b, &auth, "request_lease").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let args: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            let inv = b.refuse("request_lease", CallError::new(ErrorCode::BadRequest)).await;
            return json_response(inv.status(), &inv.to_json());
        }
    };
    let inv = b.invoke(&c, "request_lease", args).await;
    json_response(inv.status(), &inv.to_json())
}

async fn lease_list(State(b): State<Arc<Broker>>, auth: AgentAuth) -> Response {
    let c = match caller(&b, &auth).await {
        Ok(c) => c,
        Err(e) => return error_response(e.code, None),
    };
    match b.leases_of(&c).await {
        Ok(ls) => {
            let items: Vec<Value> = ls
                .iter()
                .map(|l| json!({"lease_id": l.id, "lease_handle": l.handle, "base": l.base, "scope": l.scope,
                                "tables": l.tables, "status": l.status, "expires_at": l.expires_at, "task_id": l.task_id}))
                .collect();
            json_response(200, &json!({"ok": true, "leases": items}))
        }
        Err(e) => error_response(e.code, None),
    }
}

async fn lease_revoke(State(b): State<Arc<Broker>>, auth: AgentAuth, Path(id): Path<String>) -> Response {
    let started = std::time::Instant::now();
    let c = match caller_or_refuse(&b, &auth, "revoke_lease").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id: String = id.chars().take(64).collect();
    let result = b.revoke_own_lease(&c, &id).await;
    b.audited(&c, "revoke_lease", &json!({"lease_id": id}), result, started).await.into_response()
}

async fn task_open(State(b): State<Arc<Broker>>, auth: AgentAuth) -> Response {
    let started = std::time::Instant::now();
    let c = match caller_or_refuse(&b, &auth, "open_task").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let result = b.open_task(&c).await;
    b.audited(&c, "open_task", &json!({}), result, started).await.into_response()
}

async fn task_close(State(b): State<Arc<Broker>>, auth: AgentAuth, Path(id): Path<String>) -> Response {
    let started = std::time::Instant::now();
    let c = match caller_or_refuse(&b, &auth, "close_task").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id: String = id.chars().take(64).collect();
    let result = b.close_task(&c, &id).await;
    b.audited(&c, "close_task", &json!({"task_id": id}), result, started).await.into_response()
}

async fn create_child(State(b): State<Arc<Broker>>, auth: AgentAuth, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let c = match caller_or_refuse(&b, &auth, "create_child").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let result = match serde_json::from_value::<crate::broker::ChildRequest>(args.clone()) {
        Ok(req) => b.create_child(&c, &req).await,
        Err(_) => Err(CallError::new(ErrorCode::BadRequest)),
    };
    b.audited(&c, "create_child", &args, result, started).await.into_response()
}

async fn healthz() -> Response {
    json_response(200, &json!({"ok": true}))
}

async fn metrics(State(b): State<Arc<Broker>>) -> Response {
    let mut r = Response::new(Body::from(b.metrics().encode()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn not_found() -> Response {
    error_response(ErrorCode::NotFound, None)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic payload may quote data from the request: log only that it happened.
    tracing::error!("a request handler panicked; answered 500 internal");
    error_response(ErrorCode::Internal, None)
}

/// The routes agents use, on the TCP listener and on the Unix socket alike.
fn agent_routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/tools", get(tools))
        .route("/v1/invoke", post(invoke))
        .route("/v1/leases", post(lease_issue).get(lease_list))
        .route("/v1/leases/{id}", delete(lease_revoke))
        .route("/v1/tasks", post(task_open))
        .route("/v1/tasks/{id}/close", post(task_close))
        .route("/v1/agents/self/children", post(create_child))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

fn finish(routes: Router<Arc<Broker>>, broker: Arc<Broker>) -> Router {
    let limit = broker.config().limits.max_request_bytes;
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(broker)
}

/// The router of the TCP listener: the agents' routes, the one-time link pages and API, and the
/// approval pages and API. For tests (`Router::oneshot`) and for [`serve`].
pub fn router(broker: Arc<Broker>) -> Router {
    let routes = agent_routes().merge(crate::shares::routes()).merge(crate::approvals::routes());
    finish(routes, broker)
}

/// The router of the Unix socket: the agents' routes only. People open links and approve calls
/// over HTTP; the socket is for the thin clients agents run.
pub fn socket_router(broker: Arc<Broker>) -> Router {
    finish(agent_routes(), broker)
}

/// What [`serve_on`] listens on.
pub struct Listeners {
    /// REST, MCP over HTTP, one-time links and approval pages.
    pub tcp: TcpListener,
    /// The agents' Unix socket ([`socket_router`] plus the extra routes), if any.
    pub unix: Option<UnixListener>,
}

/// Serves until `shutdown` resolves, then drains in-flight requests. A background task picks up
/// secrets changed by other processes.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, broker, Router::new(), shutdown).await
}

/// As [`serve`], with `extra` routes merged in (the MCP endpoint, which lives in its own crate).
pub async fn serve_with(
    listener: TcpListener,
    broker: Arc<Broker>,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(Listeners { tcp: listener, unix: None }, broker, extra, shutdown).await
}

/// As [`serve_with`], on the TCP listener and the Unix socket of `listeners`, with one set of
/// background tasks and one shutdown for both.
pub async fn serve_on(
    listeners: Listeners,
    broker: Arc<Broker>,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refresher = {
        let b = broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = b.refresh().await {
                    tracing::warn!(error = %e, "secret refresh failed");
                }
                // The share sweeper: expired one-time links are deleted about every 30 s.
                if n.is_multiple_of(15) {
                    if let Err(e) = b.store().sweep_shares().await {
                        tracing::warn!(error = %e, "share sweep failed");
                    }
                }
                n += 1;
            }
        })
    };
    // Revokes leases at expiry, retries failed revocations, and first reconciles roles left by
    // a previous run.
    let reaper = broker.spawn_reaper();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let unix = listeners.unix.map(|u| {
        let app = socket_router(broker.clone()).merge(extra.clone()).into_make_service_with_connect_info::<SocketPeer>();
        tokio::spawn(axum::serve(u, app).with_graceful_shutdown(stopped(stop_rx.clone())).into_future())
    });
    // Connection info gives the share endpoints the client address for their rate limits.
    let app = router(broker).merge(extra).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let tcp = axum::serve(listeners.tcp, app).with_graceful_shutdown(stopped(stop_rx));
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (r, ()) = tokio::join!(tcp.into_future(), signal);
    let u = match unix {
        Some(h) => h.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        None => Ok(()),
    };
    refresher.abort();
    reaper.abort();
    r.and(u)
}

impl IntoResponse for crate::Invocation {
    fn into_response(self) -> Response {
        json_response(self.status(), &self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_becomes_500_internal_without_its_message() {
        async fn boom() -> Response {
            panic!("secret-ish detail canaryPanic_42");
        }
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
        let resp = app
            .oneshot(axum::http::Request::builder().uri("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
        assert!(!String::from_utf8_lossy(&body).contains("canaryPanic"));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
