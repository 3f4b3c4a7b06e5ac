//! airlock over the Model Context Protocol, on the official Rust SDK (`rmcp`).
//!
//! This crate owns only translation: MCP `tools/list` and `tools/call` become
//! [`Broker::tool_defs`](airlock_server::Broker::tool_defs) (rendered and scrubbed) and
//! [`Broker::invoke`](airlock_server::Broker::invoke). Authentication, policy, execution,
//! scrubbing and audit stay in the broker, so an MCP call is the same call as `POST /v1/invoke`.
//!
//! Two transports:
//! - [`serve_stdio`]: one agent per process, its token given once (the binary reads
//!   `AIRLOCK_TOKEN`, never argv) and re-checked on every request, so a revoked token stops working
//!   mid-session.
//! - [`http_router`]: streamable HTTP at `/mcp`, stateless: every request carries
//!   `Authorization: Bearer`, and `Host`/`Origin` are checked before anything else (T19).
//!   It also carries [`STREAM_PATH`]: the thin `airlock mcp` client (what an agent's MCP host
//!   launches) upgrades an HTTP/1.1 connection there, on the broker's Unix socket or loopback, and
//!   relays its stdin and stdout over it byte for byte; the session runs here, in the broker, as
//!   [`serve_session`], so the agent's process holds nothing but its token. A token the client
//!   read from a file (a platform's short-lived token, rewritten before it expires) is followed:
//!   the client sends each new one in band as [`TOKEN_NOTIFICATION`], and the session adopts it
//!   only when it authenticates as the session's agent.
#![forbid(unsafe_code)]

mod direct;
mod handler;
mod http;
mod stdio;
mod notify;
mod stream;

pub use handler::AirlockMcp;
pub use http::{http_router, MCP_PATH};
pub use stdio::{serve_io, serve_session, serve_stdio, StdioError};
pub use stream::{STREAM_PATH, STREAM_PROTOCOL, TOKEN_NOTIFICATION};
