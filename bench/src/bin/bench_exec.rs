//! `airlock-bench-exec`: the cost of `run_command`'s sandbox. Runs `/bin/true` sequentially
//! - with no sandbox at all (a plain spawn),
//! - under the previous launcher (`unshare --net` + `setpriv`), for reference,
//! - through bubblewrap directly with exactly the executor's flags and second stage,
//! - through the executor alone (template check, preflighted sandbox, frame on stdin, capped
//!   reads),
//! - through the whole broker (auth, policy, template check, resolve, sandboxed spawn, scrub,
//!   durable audit),
//!
//! and prints p50 and p99 of each. The broker runs in this process on a throw-away data
//! directory; this binary is its own sandbox second stage, as `airlock` is for `airlock serve`.
//!
//! Run: `cargo run --release -p airlock-bench --bin airlock-bench-exec [-- ITERATIONS [full|normal]]`.
#![forbid(unsafe_code)]

use airlock_bench::load::Latencies;
use airlock_bench::scratch::Scratch;
use airlock_core::Secret;
use airlock_exec_command::sandbox::Plan;
use airlock_exec_command::stage2::{self, SecretSlot, Spec};
use airlock_exec_command::{CommandExecutor, SandboxSettings, CHILD_PATH};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

const CONFIG: &str = r#"
[store]
data_dir = "data"
sync = "full"

[limits]
rate_per_minute = 1000000

[handles.TRUE]
kind = "command"
secret = "local:TRUE"
[handles.TRUE.command]
program = "/bin/true"
"#;

const AGENT: &str = r#"
[agents.bench]
grants = [{ handle = "TRUE", tools = ["run_command"] }]
"#;

/// Times `n` runs of `f` after 20 warm-up runs.
async fn time<F, Fut>(n: usize, mut f: F) -> Result<Latencies>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        f().await?;
        if i >= 20 {
            v.push(t.elapsed());
        }
    }
    Ok(Latencies::from_durations(v))
}

fn report(label: &str, v: &Latencies) {
    println!("  {label:<44} p50 {:>8.0} us  p99 {:>8.0} us", v.p50() * 1e6, v.p99() * 1e6);
}

async fn spawn_status(mut cmd: tokio::process::Command, input: Option<&[u8]>) -> Result<()> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(mut w), Some(data)) = (child.stdin.take(), input) {
        w.write_all(data).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn main() -> Result<std::process::ExitCode> {
    if std::env::args_os().nth(1).is_some_and(|a| a == stage2::STAGE2_ARG) {
        return Ok(stage2::run());
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn bench() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose().context("ITERATIONS")?.unwrap_or(500);
    let sync = std::env::args().nth(2).unwrap_or_else(|| "full".into());
    if sync != "full" && sync != "normal" {
        bail!("the second argument is the store sync mode: full or normal");
    }
    let scratch = Scratch::new(&(CONFIG.replace("sync = \"full\"", &format!("sync = \"{sync}\"")) + AGENT)).await?;
    let secret = Secret::from_str_value("bench-secret-value-0123456789");
    scratch.put_secret("TRUE", &secret).await?;
    let handle = scratch.config.handles.values().next().context("the TRUE handle")?.clone();
    let settings = SandboxSettings::from_config(&scratch.config);
    let exec = CommandExecutor::new(settings.clone());
    exec.preflight().await.map_err(|e| anyhow::anyhow!("sandbox unavailable: {e}"))?;
    let (broker, caller) = scratch.broker_for("bench").await?;

    let none = time(n, || async {
        let mut c = tokio::process::Command::new("/bin/true");
        c.env_clear().env("PATH", CHILD_PATH);
        spawn_status(c, None).await
    })
    .await?;

    let old = time(n, || async {
        let mut c = tokio::process::Command::new("/usr/bin/unshare");
        if !nix::unistd::geteuid().is_root() {
            c.args(["--user", "--map-root-user"]);
        }
        c.args(["--net", "--", "/usr/bin/setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--", "/bin/true"]);
        c.env_clear().env("PATH", CHILD_PATH);
        spawn_status(c, None).await
    })
    .await?;

    let program = Path::new("/bin/true");
    let workdir = Path::new("/");
    // The control frame the executor writes to the sandbox's stdin, built here to time bwrap alone.
    #[allow(clippy::disallowed_methods)]
    let frame = stage2::encode_frame(secret.expose_secret());
    let bwrap = time(n, || async {
        let plan = Plan {
            program,
            workdir,
            network: false,
            spec: Spec {
                program: program.into(),
                args: vec![],
                env: vec![("PATH".into(), CHILD_PATH.into())],
                secret: SecretSlot::Env { name: "AIRLOCK_SECRET".into() },
                paths: settings.landlock_paths(workdir, program, false),
                limits: settings.limits(5000),
            },
            probe: false,
        };
        let c = settings.command(&plan).map_err(|e| anyhow::anyhow!(e))?;
        spawn_status(c, Some(&frame)).await
    })
    .await?;

    let cargs: airlock_exec_command::CommandArgs = serde_json::from_value(json!({"args": {}}))?;
    let executor = time(n, || async {
        let v = exec.validate(&handle, &cargs).map_err(|e| anyhow::anyhow!("{e}"))?;
        let r = exec.execute(&handle, &v, &secret).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if r["exit_code"] != 0 {
            bail!("unexpected result {r}");
        }
        Ok(())
    })
    .await?;

    let args = json!({"credential_handle": "TRUE", "args": {}});
    let brokered = time(n, || async {
        let inv = broker.invoke(&caller, "run_command", args.clone()).await;
        let v = inv.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        if v["exit_code"] != 0 {
            bail!("unexpected result {v}");
        }
        Ok(())
    })
    .await?;

    println!("run_command /bin/true, {n} sequential calls");
    report("no sandbox (plain spawn)", &none);
    report("previous launcher (unshare --net + setpriv)", &old);
    report("bwrap + stage 2 directly (executor's flags)", &bwrap);
    report("executor alone", &executor);
    report(&format!("through the broker (audit sync = {sync})"), &brokered);
    Ok(())
}
