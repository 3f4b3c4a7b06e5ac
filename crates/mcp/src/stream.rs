//! The thin client's MCP stream: `GET /v1/mcp/stream` with `Upgrade: airlock-mcp`.
//!
//! `airlock mcp` runs as the agent's user and holds only the agent's token. It connects to the
//! broker (its Unix socket, or loopback HTTP), asks for this upgrade with the token as a bearer,
//! and then copies its stdin to the connection and the connection to its stdout. The MCP session
//! itself (handshake, tool list, calls, elicitation, `tools/list_changed`) runs here, in the
//! broker, exactly as a stdio session would. The token was checked by the router's middleware
//! before this handler runs, and is checked again on every request of the session, so revoking
//! the agent ends its use mid-session.
//!
//! Rotated tokens. A platform token (a Kubernetes projected service-account token, a CI OIDC
//! token: see `[issuers.NAME]`) lives minutes, and the platform rewrites its file before it
//! expires; a session outlives it. When `airlock mcp` read its token from a file, it watches
//! that file and, when it changes, sends the new token in band, as one JSON-RPC notification
//! line between two messages:
//!
//! ```text
//! {"jsonrpc":"2.0","method":"notifications/airlock/token","params":{"token":"..."}}
//! ```
//!
//! A line filter sits between the upgraded connection and the MCP session: it passes every line
//! through unchanged except that notification, which it swallows (the session never sees it).
//! The new token is authenticated, and replaces the session's token only when it authenticates
//! as the session's agent; a token that is refused, or that maps to another agent, is dropped
//! and the session goes on with the token it has (until that one expires or is revoked). The
//! filter handles the notification before it reads the next line, so a request sent after it
//! runs with the new token. A line longer than `limits.max_request_bytes` ends the session: the
//! filter never holds more than that.

use crate::handler::{AirlockMcp, SessionToken};
use airlock_core::ErrorCode;
use airlock_server::{Broker, Caller};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use zeroize::{Zeroize, Zeroizing};

/// Where the thin client upgrades its connection.
pub const STREAM_PATH: &str = "/v1/mcp/stream";
/// The `Upgrade` protocol token it asks for.
pub const STREAM_PROTOCOL: &str = "airlock-mcp";
/// The in-band notification that carries a rotated token from the thin client.
pub const TOKEN_NOTIFICATION: &str = "notifications/airlock/token";

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
    let Some(token) = airlock_server::http::bearer(req.headers()).map(|t| Zeroizing::new(t.to_owned())) else {
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
        let (from_client, to_client) = tokio::io::split(io);
        let handler = AirlockMcp::for_session(broker.clone(), token.to_string(), caller.peer);
        let Some(slot) = handler.session_token() else { return };
        // The session reads what the filter passes on: every line but the token notification.
        let (to_session, session_input) = tokio::io::duplex(64 * 1024);
        let rotation = Rotation { broker: broker.clone(), caller: caller.clone(), token: slot };
        let max = broker.config().limits.max_request_bytes;
        let filter = tokio::spawn(async move {
            if let Err(e) = filter_lines(from_client, to_session, &rotation, max).await {
                tracing::info!(agent = %rotation.caller.agent.name, error = %e, "MCP stream input ended");
            }
        });
        match crate::serve_session(handler, &broker, &token, session_input, to_client).await {
            Ok(()) => tracing::debug!(agent = %caller.agent.name, "MCP stream ended"),
            // A client that disconnects mid-call ends here; the broker goes on serving the others.
            Err(e) => tracing::info!(agent = %caller.agent.name, error = %e, "MCP stream ended abnormally"),
        }
        filter.abort();
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL));
    r
}

/// Why the filter stopped passing the client's input on (the session then ends).
#[derive(Debug, thiserror::Error)]
enum FilterEnd {
    /// A line longer than `limits.max_request_bytes`.
    #[error("a line exceeds limits.max_request_bytes ({0} bytes); the session was ended")]
    TooLong(usize),
    /// Reading the connection or writing to the session failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a token notification may change: the token of one session of one agent.
struct Rotation {
    broker: Arc<Broker>,
    caller: Caller,
    token: SessionToken,
}

impl Rotation {
    /// `line` is a token notification: adopt its token if it authenticates as the session's
    /// agent. `false` when the line is anything else (it is then passed on unchanged).
    async fn intercept(&self, line: &[u8]) -> bool {
        // Cheap test first: only a line naming the method is parsed here.
        let Some(text) = std::str::from_utf8(line).ok().filter(|t| t.contains(TOKEN_NOTIFICATION)) else {
            return false;
        };
        let Ok(mut v) = serde_json::from_str::<Value>(text) else { return false };
        if v.get("method").and_then(Value::as_str) != Some(TOKEN_NOTIFICATION) {
            return false;
        }
        // Moved out of the parsed value (no copy), and zeroized when dropped.
        let new = match v.pointer_mut("/params/token").map(Value::take) {
            Some(Value::String(s)) => Zeroizing::new(s),
            _ => {
                tracing::info!(agent = %self.caller.agent.name, "a token notification without a token was ignored");
                return true;
            }
        };
        let agent = &self.caller.agent;
        match self.broker.authenticate(Some(new.as_str())).await {
            Ok(c) if c.agent.id == agent.id => {
                *self.token.write().unwrap_or_else(|p| p.into_inner()) = new;
                tracing::debug!(agent = %agent.name, "MCP stream: rotated token adopted");
            }
            Ok(c) => tracing::info!(
                agent = %agent.name,
                other = %c.agent.name,
                "MCP stream: a rotated token of another agent was refused; the session keeps its token"
            ),
            Err(e) => tracing::info!(
                agent = %agent.name,
                code = %e.code,
                "MCP stream: a rotated token was refused; the session keeps its token"
            ),
        }
        true
    }
}

/// Copies `from_client` to `to_session` line by line, swallowing token notifications (see the
/// module docs). Holds at most `max` bytes of one line; ends at the client's end of input.
async fn filter_lines<R, W>(from_client: R, mut to_session: W, rotation: &Rotation, max: usize) -> Result<(), FilterEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::with_capacity(64 * 1024, from_client);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            // End of input: an unterminated last line goes on as it is.
            if !line.is_empty() && !rotation.intercept(&line).await {
                to_session.write_all(&line).await?;
            }
            line.zeroize();
            to_session.shutdown().await?;
            return Ok(());
        }
        let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        // The newline itself does not count.
        if line.len() + take - usize::from(complete) > max {
            line.zeroize();
            return Err(FilterEnd::TooLong(max));
        }
        // Lines that arrive whole (the usual case) go on without being copied.
        if line.is_empty() && complete && !buf[..take].windows(TOKEN_NOTIFICATION.len()).any(|w| w == TOKEN_NOTIFICATION.as_bytes()) {
            to_session.write_all(&buf[..take]).await?;
            reader.consume(take);
            continue;
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if complete {
            if !rotation.intercept(&line).await {
                to_session.write_all(&line).await?;
            }
            // It may have held a token.
            line.zeroize();
        }
    }
}
