//! Approvals over HTTP: `GET /v1/approvals`, `GET /v1/approvals/{id}`,
//! `POST /v1/approvals/{id}/approve`, `POST /v1/approvals/{id}/deny`. Approvers authenticate
//! with their own `apr_` tokens; an agent token is refused on every one of them.

use super::auth::bearer;
use super::response::{json, ApiError};
use crate::broker::Broker;
use airlock_core::CallError;
use airlock_store::approvals::Approver;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json as j;
use std::sync::Arc;

fn answer(r: Result<serde_json::Value, CallError>, key: &str) -> Response {
    match r {
        Ok(v) => json(200, &j!({"ok": true, key: v})),
        Err(e) => ApiError(e).into_response(),
    }
}

async fn approver_or_refuse(b: &Broker, headers: &HeaderMap, action: &str) -> Result<Approver, Response> {
    match b.authenticate_approver(bearer(headers)).await {
        Ok(a) => Ok(a),
        // Audited like any refused call: someone tried to decide without an approver token.
        Err(e) => Err(b.refuse(action, e).await.into_response()),
    }
}

async fn show(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = b.authenticate_approver(bearer(&headers)).await {
        return ApiError(e).into_response();
    }
    answer(b.approval_view(&id).await, "approval")
}

async fn decide(b: Arc<Broker>, headers: HeaderMap, id: String, approve: bool) -> Response {
    let action = if approve { "approve_call" } else { "deny_call" };
    match approver_or_refuse(&b, &headers, action).await {
        Ok(approver) => answer(b.decide_approval(&approver, &id, approve).await, "approval"),
        Err(r) => r,
    }
}

async fn approve(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    decide(b, headers, id, true).await
}

async fn deny(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    decide(b, headers, id, false).await
}

async fn pending(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    if let Err(e) = b.authenticate_approver(bearer(&headers)).await {
        return ApiError(e).into_response();
    }
    answer(b.pending_approvals().await, "approvals")
}

/// The approval API.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/approvals", get(pending))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
}
