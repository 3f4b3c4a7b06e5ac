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
#![forbid(unsafe_code)]

mod handler;
mod http;
mod stdio;

pub use handler::AirlockMcp;
pub use http::{http_router, MCP_PATH};
pub use stdio::{serve_io, serve_stdio, StdioError};
