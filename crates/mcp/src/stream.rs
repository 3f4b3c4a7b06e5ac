//! The thin client's MCP stream: `GET /v1/mcp/stream` with `Upgrade: airlock-mcp`.
//!
//! `airlock mcp` runs as the agent's user and holds only the agent's token. It connects to the
//! broker (its Unix socket, or loopback HTTP), asks for this upgrade with the token as a bearer,
//! and then copies its stdin to the connection and the connection to its stdout. The MCP session
//! itself (handshake, tool list, calls, elicitation, `tools/list_changed`) runs here, in the
//! broker, exactly as a stdio session would. The token was checked by the router's middleware
//! before this handler runs, and is checked again on every request of the session, so revoking
//! the agent ends its use mid-session.

use crate::handler::AirlockMcp;
use airlock_core::ErrorCode;
use airlock_server::{Broker, Caller};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

/// Where the thin client upgrades its connection.
pub const STREAM_PATH: &str = "/v1/mcp/stream";
/// The `Upgrade` protocol token it asks for.
pub const STREAM_PROTOCOL: &str = "airlock-mcp";

fn bad_request(message: &'static str) -> Response {
    let body = json!({"ok": false, "error": {"code": ErrorCode::BadRequest.as_str(), "message": message}});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn asks_for_stream(req: &Request) -> bool {
    let h = req.headers();
    let upgrade = h.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
    let connection = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    upgrade && connection
}

/// Answers `101 Switching Protocols` and runs the agent's MCP session on the upgraded
/// connection in its own task.
pub(crate) async fn upgrade(State(broker): State<Arc<Broker>>, mut req: Request) -> Response {
    if !asks_for_stream(&req) {
        return bad_request("this endpoint takes an HTTP/1.1 upgrade to airlock-mcp");
    }
    // Set by the router's authentication middleware; the token is kept to re-check it per request.
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return bad_request("no authenticated caller");
    };
    let Some(token) = airlock_server::http::bearer(req.headers()).map(str::to_owned) else {
        return bad_request("no bearer token");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::info!(error = %e, "MCP stream upgrade failed");
                return;
            }
        };
        let (r, w) = tokio::io::split(io);
        let handler = AirlockMcp::for_session(broker.clone(), token.clone(), caller.peer);
        match crate::serve_session(handler, &broker, &token, r, w).await {
            Ok(()) => tracing::debug!(agent = %caller.agent.name, "MCP stream ended"),
            // A client that disconnects mid-call ends here; the broker goes on serving the others.
            Err(e) => tracing::info!(agent = %caller.agent.name, error = %e, "MCP stream ended abnormally"),
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL));
    r
}
