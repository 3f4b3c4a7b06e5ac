//! The agents' routes: `GET /v1/tools`, `POST /v1/invoke`, leases (`POST /v1/leases`,
//! `GET /v1/leases`, `DELETE /v1/leases/{id}`), tasks (`POST /v1/tasks`,
//! `POST /v1/tasks/{id}/close`), sub-agents (`POST /v1/agents/self/children`), `GET /healthz`,
//! `GET /metrics`.

use super::auth::AgentAuth;
use super::response::{json, ApiError, BodyBytes};
use crate::broker::{spans, Broker, ChildRequest, Format};
use airlock_core::{CallError, ErrorCode};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json as j, Value};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

#[derive(Deserialize)]
struct ToolsQuery {
    format: Option<String>,
}

async fn tools(State(b): State<Arc<Broker>>, auth: AgentAuth, q: Query<ToolsQuery>) -> Response {
    let c = match auth.caller(&b).await {
        Ok(c) => c,
        Err(e) => return ApiError(e).into_response(),
    };
    let Some(format) = Format::parse(q.format.as_deref().unwrap_or("mcp")) else {
        return ApiError(CallError::with_message(ErrorCode::InvalidArguments, "format is mcp, openai or anthropic")).into_response();
    };
    json(200, &b.tools_json_for(&c, format).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    tool: String,
    #[serde(default)]
    arguments: Value,
}

// Each call runs in its span, opened before the token is checked so that authentication is
// one of its stages (crate::broker::spans). The call's future (kilobytes) is boxed once, here:
// axum moves a handler's future several times before it first runs, and each move copies all
// of it.
async fn invoke(State(b): State<Arc<Broker>>, auth: AgentAuth, BodyBytes(body): BodyBytes) -> Response {
    Box::pin(call(b, auth, body, None)).instrument(spans::call_span()).await
}

async fn lease_issue(State(b): State<Arc<Broker>>, auth: AgentAuth, BodyBytes(body): BodyBytes) -> Response {
    Box::pin(call(b, auth, body, Some("request_lease"))).instrument(spans::call_span()).await
}

/// A call once its span is open: of the tool its route names (`POST /v1/leases`, the body is
/// the arguments), or of the one the body names (`POST /v1/invoke`, an [`InvokeBody`]).
async fn call(b: Arc<Broker>, auth: AgentAuth, body: axum::body::Bytes, route_tool: Option<&'static str>) -> Response {
    let action = route_tool.unwrap_or("-");
    let c = match auth.caller_or_refuse(&b, action).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let call = match route_tool {
        None => serde_json::from_slice::<InvokeBody>(&body).map(|r| (r.tool, r.arguments)),
        Some(tool) => serde_json::from_slice::<Value>(&body).map(|args| (tool.to_owned(), args)),
    };
    match call {
        Ok((tool, args)) => b.invoke(&c, &tool, args).await.into_response(),
        Err(_) => Box::pin(b.refuse(action, CallError::new(ErrorCode::BadRequest))).await.into_response(),
    }
}

async fn lease_list(State(b): State<Arc<Broker>>, auth: AgentAuth) -> Response {
    let c = match auth.caller(&b).await {
        Ok(c) => c,
        Err(e) => return ApiError(e).into_response(),
    };
    match b.leases_of(&c).await {
        Ok(ls) => {
            let items: Vec<Value> = ls
                .iter()
                .map(|l| j!({"lease_id": l.id, "lease_handle": l.handle, "base": l.base, "scope": l.scope,
                              "tables": l.tables, "status": l.status, "expires_at": l.expires_at, "task_id": l.task_id}))
                .collect();
            json(200, &j!({"ok": true, "leases": items}))
        }
        Err(e) => ApiError(e).into_response(),
    }
}

/// An operation that is not a tool call, authenticated and audited like one: `action` is its
/// audit name, `args` what the audit keeps.
pub(super) async fn audited_op<F, Fut>(b: &Broker, auth: &AgentAuth, action: &str, args: Value, op: F) -> Response
where
    F: FnOnce(crate::broker::Caller) -> Fut,
    Fut: std::future::Future<Output = Result<Value, CallError>>,
{
    let started = Instant::now();
    async move {
        let c = match auth.caller_or_refuse(b, action).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let result = op(c.clone()).await;
        b.audited(&c, action, &args, result, started).await.into_response()
    }
    .instrument(spans::call_span())
    .await
}

/// The longest id an agent may name in a path; no id airlock makes is longer.
const PATH_ID_CHARS: usize = 64;

/// An id from the path, bounded before it goes anywhere: the id to look up, and what the audit
/// keeps of it. Both are cut to [`PATH_ID_CHARS`]; the audit's copy is agent text, so it is
/// scrubbed, and a secret the bound cut through leaves no prefix (T24).
pub(super) fn path_id(b: &Broker, id: &str) -> (String, String) {
    (id.chars().take(PATH_ID_CHARS).collect(), b.scrubber().scrub_bounded(id, PATH_ID_CHARS))
}

async fn lease_revoke(State(b): State<Arc<Broker>>, auth: AgentAuth, Path(id): Path<String>) -> Response {
    let (id, shown) = path_id(&b, &id);
    let (b2, args) = (b.clone(), j!({"lease_id": shown}));
    audited_op(&b, &auth, "revoke_lease", args, move |c| async move { b2.revoke_own_lease(&c, &id).await }).await
}

async fn task_open(State(b): State<Arc<Broker>>, auth: AgentAuth) -> Response {
    let b2 = b.clone();
    audited_op(&b, &auth, "open_task", j!({}), move |c| async move { b2.open_task(&c).await }).await
}

async fn task_close(State(b): State<Arc<Broker>>, auth: AgentAuth, Path(id): Path<String>) -> Response {
    let (id, shown) = path_id(&b, &id);
    let (b2, args) = (b.clone(), j!({"task_id": shown}));
    audited_op(&b, &auth, "close_task", args, move |c| async move { b2.close_task(&c, &id).await }).await
}

async fn create_child(State(b): State<Arc<Broker>>, auth: AgentAuth, BodyBytes(body): BodyBytes) -> Response {
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let req = serde_json::from_value::<ChildRequest>(args.clone());
    let b2 = b.clone();
    audited_op(&b, &auth, "create_child", args, move |c| async move {
        match req {
            Ok(req) => b2.create_child(&c, &req).await,
            Err(_) => Err(CallError::new(ErrorCode::BadRequest)),
        }
    })
    .await
}

async fn healthz() -> Response {
    json(200, &j!({"ok": true}))
}

async fn metrics(State(b): State<Arc<Broker>>) -> Response {
    b.refresh_live_metrics().await;
    let mut r = Response::new(Body::from(b.metrics().encode()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// The routes agents use, on the TCP listener and on the Unix socket alike.
pub fn routes() -> Router<Arc<Broker>> {
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
