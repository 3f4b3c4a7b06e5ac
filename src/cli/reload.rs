//! `airlock reload`: checks the configuration file as the broker will (every problem at once, and
//! every policy), then asks the broker serving it to put it in force, and reports what the broker
//! did, as its audit log records it.
//!
//! The broker is the process listening on the configured Unix socket (its credentials, read
//! from the socket, give its pid); it gets `SIGHUP`, which is also what a service manager's
//! `reload` sends. Exit codes: 0 reloaded, 1 refused by the broker (nothing changed), 2 the file
//! does not load or a policy does not compile (nothing was sent), 3 no broker answered.

use crate::client::{Endpoint, Unreachable};
use airlock_core::config::Config;
use airlock_policy::PolicyEngine;
use airlock_store::Store;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for the broker's audit record of the reload.
const WAIT: Duration = Duration::from_secs(30);

pub async fn run(config: &Path, json: bool) -> Result<u8> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}\nnothing was sent to the broker"))?;
    if let Err(e) = PolicyEngine::from_config(&cfg) {
        bail!("policy: {e}\nnothing was sent to the broker");
    }
    let socket = cfg
        .server
        .socket_path()
        .context("the configuration serves no socket (server.socket = \"off\"): send SIGHUP to the broker's process instead")?;
    let pid = broker_pid(&socket).await?;
    let store = Store::connect(&cfg.store).await.context("opening the store to read the outcome")?;
    let mut after = store.audit_head().await?;
    let sighup = nix::sys::signal::Signal::SIGHUP;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sighup).with_context(|| format!("sending SIGHUP to the broker (pid {pid})"))?;
    let started = Instant::now();
    while started.elapsed() < WAIT {
        for r in store.audit_records(after, 500).await? {
            after = r.seq;
            if r.agent != "sighup" || !matches!(r.tool.as_str(), "config_reloaded" | "config_reload_refused") {
                continue;
            }
            let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
            let args = body.get("arguments").cloned().unwrap_or_default();
            let reloaded = r.tool == "config_reloaded";
            report(reloaded, pid, r.seq, &args, json)?;
            return Ok(if reloaded { 0 } else { 1 });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the broker (pid {pid}) got SIGHUP but recorded no reload within {} s; its log says why", WAIT.as_secs())
}

/// The pid of the process that listens on `socket`.
async fn broker_pid(socket: &Path) -> Result<i32> {
    let unreachable = |why: String| Unreachable::new(Endpoint::Unix(socket.to_path_buf()), why);
    let s = tokio::net::UnixStream::connect(socket).await.map_err(|e| unreachable(e.to_string()))?;
    let cred = s.peer_cred().map_err(|e| unreachable(format!("reading the peer's credentials: {e}")))?;
    match cred.pid() {
        Some(p) if p > 0 => Ok(p),
        _ => Err(unreachable("the socket's owner has no pid here".into()).into()),
    }
}

fn report(reloaded: bool, pid: i32, seq: i64, args: &Value, json: bool) -> Result<()> {
    if json {
        let mut v = json!({"reloaded": reloaded, "pid": pid, "audit_seq": seq});
        if let (Some(m), Some(a)) = (v.as_object_mut(), args.as_object()) {
            m.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        return super::print_json(&v);
    }
    if !reloaded {
        let n = args.get("problems").and_then(Value::as_u64).unwrap_or(0);
        let sections: Vec<&str> = args.get("restart_only").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        eprintln!("refused by the broker (pid {pid}), nothing changed: {n} problem(s)");
        if !sections.is_empty() {
            eprintln!("  these sections are read once at start; restart the broker to change them: {}", sections.join(", "));
        }
        eprintln!("  the broker's log lists every problem (audit seq {seq})");
        return Ok(());
    }
    let list = |k: &str| -> String {
        let v: Vec<&str> = args.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if v.is_empty() { "-".into() } else { v.join(", ") }
    };
    println!("reloaded (pid {pid}, audit seq {seq})");
    println!("  handles added: {}", list("handles_added"));
    println!("  handles removed: {}", list("handles_removed"));
    println!("  handles changed: {}", list("handles_changed"));
    println!("  agents changed: {}", list("agents_changed"));
    let moved = args.get("policy_changed").and_then(Value::as_bool).unwrap_or(false);
    println!("  policy version: {}{}", args.get("policy_version").and_then(Value::as_str).unwrap_or("-"), if moved { " (changed: earlier approvals no longer apply)" } else { " (unchanged)" });
    Ok(())
}
