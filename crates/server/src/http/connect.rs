//! Connecting an OAuth account, as the owner's browser goes through it (T31):
//!
//! - `GET /connect/{id}`: the page (the same bytes for every id);
//! - `GET /v1/connect/{id}`: who asks for which account, scopes and destinations;
//! - `POST /v1/connect/{id}/verify` `{code}`: the owner's code; the answer binds the link to
//!   this browser (an `HttpOnly`, `SameSite=Lax` cookie scoped to the callback) and says where
//!   to go;
//! - `GET /oauth/callback?state&code|error`: the provider's redirect back; it finishes the link
//!   only for its `state` and the browser that passed the code. The page it answers with is
//!   fixed text: nothing of the request is reflected.

use super::approvals::shown;
use super::auth::source;
use super::assets::html;
use super::response::{json, page, ApiError};
use crate::broker::oauth::CallbackOutcome;
use crate::broker::Broker;
use airlock_core::ErrorCode;
use axum::extract::{Path, Query, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json as j;
use std::sync::Arc;

const CONNECT_HTML: &str = include_str!("../../web/connect.html");
const RESULT_HTML: &str = include_str!("../../web/connected.html");

static CONNECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| html("connect an account", CONNECT_HTML));

async fn connect_page() -> Response {
    page("text/html; charset=utf-8", CONNECT.as_str())
}

/// The limiter's answer when `ip` has used up its failures (T29).
fn limited() -> Response {
    ApiError::from(ErrorCode::RateLimited).into_response()
}

async fn view(State(b): State<Arc<Broker>>, ext: Extensions, Path(id): Path<String>) -> Response {
    let ip = source(&ext);
    if !b.connect_allowed(&ip) {
        return limited();
    }
    match b.connect_view(&id).await {
        Ok(mut v) => {
            // The agent's name is agent text: hidden characters are shown escaped (T16).
            if let Some(a) = v.get("agent").and_then(|a| a.as_str()).map(|a| shown(a, false)) {
                v["agent"] = a.into();
            }
            json(200, &j!({"ok": true, "connect": v}))
        }
        Err(e) => {
            b.connect_failed(&ip);
            ApiError(e).into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    code: String,
}

async fn verify(
    State(b): State<Arc<Broker>>,
    ext: Extensions,
    Path(id): Path<String>,
    body: Result<Json<VerifyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let ip = source(&ext);
    if !b.connect_allowed(&ip) {
        return limited();
    }
    let Ok(Json(body)) = body else { return ApiError::from(ErrorCode::BadRequest).into_response() };
    if body.code.len() > 64 {
        return ApiError::from(ErrorCode::BadRequest).into_response();
    }
    match b.connect_verify(&id, &body.code).await {
        Ok(v) => {
            let secure = if b.share_base_url().starts_with("https://") { "; Secure" } else { "" };
            let cookie = format!(
                "{}={}; Path=/oauth/callback; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                v.cookie,
                v.browser,
                crate::broker::oauth::CONNECT_TTL_SECONDS
            );
            let mut r = json(200, &j!({"ok": true, "authorize_url": v.authorize_url}));
            if let Ok(h) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, h);
            }
            r
        }
        Err(e) => {
            b.connect_failed(&ip);
            ApiError(e).into_response()
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// The request's cookies, as (name, value) pairs.
fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned())))
        .take(32)
        .collect()
}

async fn callback(State(b): State<Arc<Broker>>, ext: Extensions, headers: HeaderMap, Query(q): Query<CallbackQuery>) -> Response {
    let ip = source(&ext);
    let outcome = match q.state.as_deref() {
        _ if !b.connect_allowed(&ip) => CallbackOutcome::Unavailable,
        Some(state) if !state.is_empty() && state.len() <= 512 => {
            b.connect_callback(state, q.code.as_deref(), q.error.as_deref(), &cookies(&headers)).await
        }
        _ => CallbackOutcome::Unavailable,
    };
    if outcome == CallbackOutcome::Unavailable {
        b.connect_failed(&ip);
    }
    let (status, title, detail) = match outcome {
        CallbackOutcome::Connected => (200, "Account connected", "airlock holds the account's tokens now; the agent can use the account without ever seeing them."),
        CallbackOutcome::Denied => (200, "Not connected", "The request was refused; nothing was connected."),
        CallbackOutcome::Failed => (502, "Not connected", "The provider did not complete the connection; ask for a new link."),
        CallbackOutcome::Unavailable => (
            404,
            "This link cannot be finished here",
            "It was already used, has expired, never existed, or was started in another browser.",
        ),
    };
    let body = RESULT_HTML.replace("{{OUTCOME}}", title).replace("{{DETAIL}}", detail);
    let mut r = page("text/html; charset=utf-8", html(title, &body));
    *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    r
}

/// The connect pages and API.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/connect/{id}", get(connect_page))
        .route("/v1/connect/{id}", get(view))
        .route("/v1/connect/{id}/verify", post(verify))
        .route("/oauth/callback", get(callback))
}
