//! The MCP stdio server as a process, for the integration tests' real MCP clients.
//!
//! Usage: `AIRLOCK_TOKEN=... airlock-mcp-stdio-test CONFIG` (or `AIRLOCK_CONFIG=CONFIG`). The
//! token comes only from the environment, never argv. Logs go to stderr; stdout is MCP's.
#![forbid(unsafe_code)]

use airlock_core::config::Config;
use airlock_server::Broker;
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).or_else(|| std::env::var_os("AIRLOCK_CONFIG")) else {
        eprintln!("usage: AIRLOCK_TOKEN=... airlock-mcp-stdio-test CONFIG");
        return ExitCode::from(2);
    };
    let Ok(token) = std::env::var("AIRLOCK_TOKEN") else {
        eprintln!("AIRLOCK_TOKEN is not set");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let broker = match Broker::open(cfg).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("cannot open the broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match airlock_mcp::serve_stdio(broker, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
