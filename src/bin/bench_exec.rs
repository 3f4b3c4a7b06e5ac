//! `airlock-bench-exec`: `run_command` through the whole broker (auth, policy, template check,
//! resolve, sandboxed spawn, scrub, durable audit) against the same sandboxed command run
//! directly (`unshare --net` + `setpriv` + the program), sequentially; prints p50 and p99 of both
//! and the difference. The broker runs in this process on a throw-away data directory.
//!
//! Run: `cargo run --release --bin airlock-bench-exec [-- ITERATIONS]`.
#![forbid(unsafe_code)]

use airlock_core::config::Config;
use airlock_core::Secret;
use airlock_server::Broker;
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[store]
data_dir = "data"
sync = "full"

[limits]
rate_per_minute = 1000000

[handles.ECHO]
kind = "command"
secret = "local:ECHO"
[handles.ECHO.command]
program = "/bin/echo"
args = ["deploy", "{target}"]
placeholders = { target = { enum = ["staging", "prod"] } }

[agents.bench]
grants = [{ handle = "ECHO", tools = ["run_command"] }]
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose().context("ITERATIONS")?.unwrap_or(500);
    let sync = std::env::args().nth(2).unwrap_or_else(|| "full".into());
    if sync != "full" && sync != "normal" {
        bail!("the second argument is the store sync mode: full or normal");
    }
    let dir = tempfile::tempdir()?;
    let cfg_path = dir.path().join("airlock.toml");
    std::fs::write(&cfg_path, CONFIG.replace("sync = \"full\"", &format!("sync = \"{sync}\"")))?;
    let cfg = Config::load(&cfg_path)?;
    let data = cfg.store.data_dir.clone();
    std::fs::create_dir_all(&data)?;
    MasterKey::create(&data.join("master.key"))?;
    AuditKey::create(&data)?;
    let store = Store::open(&data).await?;
    Vault::new(MasterKey::load(&data.join("master.key"))?, store.clone())
        .put("ECHO", &Secret::from_str_value("bench-secret-value-0123456789"))
        .await?;
    let (_, token) = store.add_agent("bench", None, None).await?;
    let handle = cfg.handles.values().next().context("the ECHO handle")?.clone();
    let broker = Broker::open(cfg).await?;
    let caller = broker.authenticate(Some(token.reveal())).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let args = json!({"credential_handle": "ECHO", "args": {"target": "staging"}});
    let mut brokered = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let inv = broker.invoke(&caller, "run_command", args.clone()).await;
        let d = t.elapsed();
        let v = inv.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        if v["stdout"] != "deploy staging\n" {
            bail!("unexpected output {v}");
        }
        if i >= 20 {
            brokered.push(d);
        }
    }

    let mut argv = airlock_exec_command::sandbox_prefix(false);
    argv.extend(["/bin/echo".into(), "deploy".into(), "staging".into()]);
    let mut direct = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", airlock_exec_command::CHILD_PATH)
            .stdin(std::process::Stdio::piped())
            .process_group(0)
            .output()
            .await?;
        let d = t.elapsed();
        if out.stdout != b"deploy staging\n" {
            bail!("unexpected direct output");
        }
        if i >= 20 {
            direct.push(d);
        }
    }
    // The executor alone (template check, sandboxed spawn, secret on stdin, capped reads).
    let exec = airlock_exec_command::CommandExecutor::new();
    let secret = Secret::from_str_value("bench-secret-value-0123456789");
    let cargs: airlock_exec_command::CommandArgs = serde_json::from_value(json!({"args": {"target": "staging"}}))?;
    let mut executor = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let v = exec.validate(&handle, &cargs).map_err(|e| anyhow::anyhow!("{e}"))?;
        exec.execute(&handle, &v, &secret).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if i >= 20 {
            executor.push(t.elapsed());
        }
    }
    executor.sort();
    brokered.sort();
    direct.sort();
    let (bp50, bp99) = (percentile(&brokered, 0.5), percentile(&brokered, 0.99));
    let (dp50, dp99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    println!("run_command, {n} sequential calls, sandbox: unshare --net + setpriv");
    println!("  direct (same sandboxed command): p50 {:>8.0} us  p99 {:>8.0} us", us(dp50), us(dp99));
    println!(
        "  executor alone:                  p50 {:>8.0} us  p99 {:>8.0} us",
        us(percentile(&executor, 0.5)),
        us(percentile(&executor, 0.99))
    );
    println!("  through the broker (audit sync = {sync}): p50 {:>8.0} us  p99 {:>8.0} us", us(bp50), us(bp99));
    println!("  added by the broker: p50 {:>8.0} us  p99 {:>8.0} us", us(bp50) - us(dp50), us(bp99) - us(dp99));
    Ok(())
}
