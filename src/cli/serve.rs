//! `airlock serve`: the broker. Refuses to start on a data directory or key files others can
//! read (T22), then serves REST and MCP on the TCP listener and the agents' routes on the Unix
//! socket; SIGHUP re-reads the configuration and policies (put in force whole, or refused whole:
//! `airlock reload`) and drops cached secrets, SIGTERM or Ctrl-C drain in-flight requests, flush
//! the call spans (when sent over OTLP) and stop.

use crate::home;
use airlock_server::Broker;
use anyhow::{Context, Result};
use airlock_core::config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn run(config: &Path) -> Result<u8> {
    let cfg = super::load(config)?;
    home::refuse_unsafe_home(&cfg)?;
    // The call spans over OTLP, when an endpoint is configured (src/telemetry.rs).
    crate::telemetry::start_traces(&cfg.telemetry)?;
    let listen = cfg.server.listen;
    let socket = cfg.server.socket_path();
    let broker = Arc::new(super::open_broker(cfg.clone()).await?);
    crate::telemetry::scrub_log_with(&broker);
    let tcp = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let unix = match &socket {
        Some(p) => Some(home::bind_socket(p, &cfg.server)?),
        None => None,
    };
    tracing::info!(addr = %tcp.local_addr()?, socket = ?socket, "airlock serving");
    let mcp = airlock_mcp::http_router(broker.clone());
    spawn_reload_on_hup(broker.clone(), config.to_path_buf());
    let listeners = airlock_server::http::Listeners { tcp, unix };
    let r = airlock_server::http::serve_on(listeners, broker, mcp, shutdown_signal()).await;
    if let Some(p) = &socket {
        let _ = std::fs::remove_file(p);
    }
    // The spans of the last calls, once they have drained.
    crate::telemetry::stop_traces().await;
    r?;
    Ok(0)
}

/// SIGHUP re-reads `config` and its policies and puts them in force, or changes nothing and
/// logs every problem; either way it is audited. Then it drops every cached secret (remote vault
/// values included) and rebuilds the scrubber.
fn spawn_reload_on_hup(broker: Arc<Broker>, config: PathBuf) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while s.recv().await.is_some() {
            match broker.reload(Config::load(&config), "sighup").await {
                Ok(w) => tracing::info!(
                    policy_changed = w.policy_changed,
                    handles_added = ?w.handles_added,
                    handles_removed = ?w.handles_removed,
                    handles_changed = ?w.handles_changed,
                    agents_changed = ?w.agents_changed,
                    "SIGHUP: configuration reloaded"
                ),
                Err(e) => tracing::error!("SIGHUP: {e}"),
            }
            match broker.invalidate_secrets().await {
                Ok(()) => tracing::info!("SIGHUP: cached secrets dropped"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: secret invalidation failed"),
            }
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down; draining in-flight requests");
}
