//! MCP over stdio (or any byte stream pair) for one agent. Runs until the input closes.

use crate::handler::AirlockMcp;
use airlock_core::CallError;
use airlock_server::Broker;
use rmcp::ServiceExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why an MCP stdio session could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdioError {
    /// The token does not authenticate an agent (missing, unknown, revoked or expired), or the
    /// store could not be asked. Nothing was served.
    #[error("the agent token was refused: {}", .0.code)]
    Auth(CallError),
    /// The MCP handshake failed (the client sent no valid `initialize`, or closed the stream).
    #[error("the MCP session did not start: {0}")]
    Start(String),
    /// The session task ended abnormally.
    #[error("the MCP session failed: {0}")]
    Session(String),
}

/// MCP over stdin/stdout for the agent holding `token` (the binary reads it from
/// `AIRLOCK_TOKEN`, never argv). Runs until stdin closes. Nothing but MCP goes to stdout.
pub async fn serve_stdio(broker: Arc<Broker>, token: String) -> Result<(), StdioError> {
    let (i, o) = rmcp::transport::stdio();
    serve_io(broker, token, i, o).await
}

/// As [`serve_stdio`], over any reader/writer pair (tests use an in-memory pipe). Picks up
/// secrets changed by other processes every 2 s, as `serve` does: for a broker of its own.
pub async fn serve_io<R, W>(broker: Arc<Broker>, token: String, reader: R, writer: W) -> Result<(), StdioError>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    // Secrets changed by other processes (`airlock secret put`) reach the scrubber, as in `serve`.
    let refresher = {
        let b = broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if let Err(e) = b.refresh().await {
                    tracing::warn!(error = %e, "secret refresh failed");
                }
            }
        })
    };
    let r = serve_session(AirlockMcp::for_token(broker.clone(), token.clone()), &broker, &token, reader, writer).await;
    refresher.abort();
    r
}

/// One MCP session of `handler`'s agent over a reader/writer pair, inside a broker that already
/// runs its own background tasks (`serve`: the thin client's stream). Refuses at once when
/// `token` does not authenticate; tells the client when the agent's tool list changes.
pub async fn serve_session<R, W>(handler: AirlockMcp, broker: &Broker, token: &str, reader: R, writer: W) -> Result<(), StdioError>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    // Refuse at once rather than serve a session whose every call would fail.
    let caller = broker.authenticate(Some(token)).await.map_err(StdioError::Auth)?;
    let mut changes = broker.subscribe_tool_changes();
    let (level, broker) = (handler.session_level(), handler.broker());
    // The list the client was last told of, to tell it only of a real change after a reload.
    let mut shown = broker.tools_json_for(&caller, airlock_server::broker::Format::Mcp).await;
    let token = zeroize::Zeroizing::new(token.to_owned());
    let running = handler.serve((reader, writer)).await.map_err(|e| StdioError::Start(e.to_string()))?;
    // A lease issued or revoked changes this agent's tool list, and a reload may: tell the client
    // (and say why in a log message, at `info`, when the client set a level that low).
    let peer = running.peer().clone();
    let tell = move |peer: rmcp::Peer<rmcp::RoleServer>, broker: Arc<Broker>| {
        let level = level.clone();
        async move {
            let current = *level.lock().unwrap_or_else(|p| p.into_inner());
            crate::notify::send(&broker, &peer, current, vec![crate::notify::tools_changed()]).await;
            peer.notify_tool_list_changed().await
        }
    };
    let notifier = tokio::spawn(async move {
        loop {
            // Whether to tell the client whatever its list now shows, or only if it differs.
            let always = match changes.recv().await {
                Ok(agent) if agent == caller.agent.id => true,
                // A reload: the list changed for this session when what it shows now differs.
                Ok(agent) if agent == airlock_server::broker::reload::EVERY_AGENT => false,
                Ok(_) => continue,
                // Missed some: the list may have changed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let now = match broker.authenticate(Some(&token)).await {
                Ok(c) => broker.tools_json_for(&c, airlock_server::broker::Format::Mcp).await,
                Err(_) => serde_json::Value::Null,
            };
            let before = std::mem::replace(&mut shown, now);
            if (always || before != shown) && tell(peer.clone(), broker.clone()).await.is_err() {
                break;
            }
        }
    });
    let r = running.waiting().await.map_err(|e| StdioError::Session(e.to_string()));
    notifier.abort();
    r?;
    Ok(())
}
