//! The agent's commands, `airlock call`, `tools` and `mcp`: thin clients of the running broker
//! ([`crate::client`]) holding a token and an endpoint and nothing else. Exit 0 when the broker
//! answered with success, 1 when it refused or the call failed, 3 when no broker answered.

use crate::client::Client;
use airlock_server::Format;
use anyhow::{Context, Result};

/// `airlock mcp`: MCP over stdio, relayed to the broker's session. A token read from a file is
/// followed for the whole session: a rotated one is handed to the broker in band.
pub async fn mcp() -> Result<u8> {
    Client::from_env()?.mcp_stdio().await
}

/// `airlock tools --format FORMAT`: the tools the agent may call.
pub async fn tools(format: &str) -> Result<u8> {
    Format::parse(format).context("--format is mcp, openai or anthropic")?;
    print_envelope(Client::from_env()?.tools(format).await?)
}

/// `airlock call TOOL --args JSON`.
pub async fn call(tool: &str, args: &str) -> Result<u8> {
    let args: serde_json::Value = serde_json::from_str(args).context("--args is not JSON")?;
    print_envelope(Client::from_env()?.call(tool, args).await?)
}

/// Prints the broker's envelope as pretty JSON on stdout; its exit code.
pub fn print_envelope((code, envelope): (u8, serde_json::Value)) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(&envelope)?);
    Ok(code)
}
