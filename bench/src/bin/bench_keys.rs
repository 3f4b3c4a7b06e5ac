//! Keys at rest: the online rotation of the local vault's key over a store of many secrets (how
//! long it takes, and what it adds to the latency of secret reads made while it runs), and the
//! cold start of the master key with each way of keeping it (`[store.master_key] wrap`).
//!
//! Rotation: a SQLite store (`sync = full`) holding N sealed secrets; `concurrency` tasks
//! resolve random secrets in a closed loop (a store read and the envelope decryption, as a call
//! does when its value is not cached) for a window without rotation, then for the whole
//! rotation (`Vault::begin_rotation` + `finish_rotation`, as `airlock key rotate` runs it): p50
//! and p99 of both, and the rotation's time. Three rounds; medians with their spread.
//!
//! Cold start: `wrap::open` of a master key written with `wrap::write_wrapped` for `file`,
//! `passphrase` (Argon2id, 64 MiB), `transit` (a real `bao server -dev`, when `bao` is
//! installed), `aws_kms` (a real `moto_server`, when installed) and `systemd_creds` (when
//! `systemd-creds` works on the machine).
//!
//! `cargo run --release -p airlock-bench --bin airlock-bench-keys -- [secrets] [concurrency]`
#![forbid(unsafe_code)]

#[path = "../../../crates/server/tests/moto/mod.rs"]
mod moto;

use airlock_bench::bao::Bao;
use airlock_bench::load::{median_spread, us, Latencies};
use airlock_core::config::{Config, SecretRef};
use airlock_core::Secret;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{bail, Context, Result};
use rand::Rng;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn value(i: usize) -> String {
    format!("bench-rotation-value-{i:06}-0123456789abcdef")
}

/// A store of `n` secrets sealed under `key` (one transaction).
async fn fill(dir: &Path, key: &MasterKey, n: usize) -> Result<Store> {
    let store = Store::open(dir).await?;
    let mut tx = store.pool().context("a SQLite store")?.begin().await?;
    for i in 0..n {
        let name = format!("S{i:06}");
        let sealed = airlock_vault::seal(key, &name, &Secret::from_str_value(&value(i)));
        sqlx::query("INSERT INTO secrets (name, sealed, created_at, updated_at, version) VALUES (?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1)")
            .bind(&name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(store)
}

/// Resolves random secrets on `concurrency` tasks until `stop`; their latencies.
async fn readers(vault: Arc<Vault>, n: usize, concurrency: usize, stop: Arc<AtomicBool>) -> Result<Latencies> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (vault, stop) = (Arc::clone(&vault), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = rand::rng().random_range(0..n);
                let t = Instant::now();
                let s = vault.resolve(&SecretRef::Local(format!("S{i:06}"))).await?;
                lat.push(t.elapsed());
                if s.len() != value(i).len() {
                    bail!("S{i:06} resolved to {} bytes", s.len());
                }
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Latencies::from_durations(all))
}

struct Round {
    rotation_secs: f64,
    rewrapped: u64,
    idle: Latencies,
    during: Latencies,
}

async fn rotation_round(n: usize, concurrency: usize) -> Result<Round> {
    let dir = tempfile::tempdir()?;
    let raw: [u8; 32] = rand::random();
    let key = MasterKey::from_bytes(raw);
    let store = fill(dir.path(), &key, n).await?;
    // A second process's view: the readers' vault read the keyring before the rotation began.
    let reader = Arc::new(Vault::new(MasterKey::from_bytes(raw), store.clone()));
    reader.reload_keyring().await?;
    // Without a rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(readers(Arc::clone(&reader), n, concurrency, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let idle = load.await??;
    // During one.
    let rotator = Vault::new(key, store.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(readers(Arc::clone(&reader), n, concurrency, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    rotator.begin_rotation().await?;
    let report = rotator.finish_rotation(&mut |_, _| {}).await?;
    let rotation_secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during = load.await??;
    if report.rewrapped != n as u64 || report.retired != 1 {
        bail!("the rotation re-wrapped {} of {n} and deleted {} version(s)", report.rewrapped, report.retired);
    }
    store.close().await;
    Ok(Round { rotation_secs, rewrapped: report.rewrapped, idle, during })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse()).transpose().context("secrets")?.unwrap_or(100_000);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose().context("concurrency")?.unwrap_or(4);
    println!("rotation of {n} secrets (SQLite, sync = full), {concurrency} concurrent readers resolving random secrets:");
    let mut rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 1..=3 {
        let round = rotation_round(n, concurrency).await?;
        println!(
            "  round {r}: {:.2} s ({:.0} values/s); reads p50 {} -> {}, p99 {} -> {} ({} / {} reads)",
            round.rotation_secs,
            round.rewrapped as f64 / round.rotation_secs,
            us(round.idle.p50()),
            us(round.during.p50()),
            us(round.idle.p99()),
            us(round.during.p99()),
            round.idle.len(),
            round.during.len()
        );
        rows.0.push(round.rotation_secs);
        rows.1.push(round.idle.p50());
        rows.2.push(round.during.p50());
        rows.3.push(round.idle.p99());
        rows.4.push(round.during.p99());
    }
    let show = |v: Vec<f64>, f: &dyn Fn(f64) -> String| {
        let (m, lo, hi) = median_spread(v);
        format!("{} ({} to {})", f(m), f(lo), f(hi))
    };
    let secs = |s: f64| format!("{s:.2} s");
    println!("medians of 3 (min to max):");
    println!("  rotation time       {}", show(rows.0, &secs));
    println!("  read p50 idle       {}", show(rows.1, &us));
    println!("  read p50 rotating   {}", show(rows.2, &us));
    println!("  read p99 idle       {}", show(rows.3, &us));
    println!("  read p99 rotating   {}", show(rows.4, &us));
    cold_starts().await
}

/// The configuration `toml` in `dir`.
fn config(toml: &str, dir: &Path) -> Result<Config> {
    Config::parse(toml, "bench.toml", dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// p50 of `runs` opens of a key written as `cfg` says.
async fn time_open(cfg: &Config, dir: &Path, runs: usize) -> Result<f64> {
    let path = dir.join(format!("master-{:?}.key", cfg.store.master_key.wrap));
    let key = MasterKey::from_bytes(rand::random());
    airlock_vault::wrap::write_wrapped(&key, &cfg.store.master_key, &cfg.vaults, &path).await?;
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        airlock_vault::wrap::open(&cfg.store.master_key, &cfg.vaults, &path).await?;
        lat.push(t.elapsed());
    }
    Ok(Latencies::from_durations(lat).p50())
}

fn private(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The master key opened with each way of keeping it; p50 of repeated opens.
async fn cold_starts() -> Result<()> {
    let d = tempfile::tempdir()?;
    let dir = d.path();
    let mut rows: Vec<(&str, Option<f64>, &str)> = Vec::new();
    rows.push(("file", Some(time_open(&config("", dir)?, dir, 50).await?), "a 0600 file"));
    private(&dir.join("pass"), "correct horse battery staple bench")?;
    let pass = format!("[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"{}\"\n", dir.join("pass").display());
    rows.push(("passphrase", Some(time_open(&config(&pass, dir)?, dir, 5).await?), "Argon2id m=64 MiB t=3 p=1"));

    let bao = Bao::start().await?;
    match &bao {
        Some(b) => {
            b.call(reqwest::Method::POST, "sys/mounts/transit", Some(serde_json::json!({"type": "transit"}))).await?;
            b.call(reqwest::Method::POST, "transit/keys/airlock-master", None).await?;
            std::env::set_var("AIRLOCK_BENCH_BAO_ROOT", airlock_bench::bao::ROOT);
            let text = format!(
                "[store.master_key]\nwrap = \"transit\"\nvault = \"corp\"\n\n{}",
                b.vault_toml("corp", "{ method = \"token\", token = \"env:AIRLOCK_BENCH_BAO_ROOT\" }", 0)
            );
            rows.push(("transit", Some(time_open(&config(&text, dir)?, dir, 50).await?), "OpenBao transit decrypt over HTTP, bao server -dev"));
        }
        None => rows.push(("transit", None, "skipped: bao is not installed")),
    }
    match moto::Moto::start(&[]).await {
        Some(m) => {
            let (status, created) = m.setup_with("kms", "POST", "/", b"{}".to_vec(), &[("x-amz-target", "TrentService.CreateKey")]).await;
            if status != 200 {
                bail!("moto CreateKey: {status} {created}");
            }
            let key_id = serde_json::from_str::<serde_json::Value>(&created)?["KeyMetadata"]["KeyId"].as_str().context("KeyId")?.to_owned();
            private(&dir.join("aws.json"), r#"{"access_key_id": "AKIABENCH00000000001", "secret_access_key": "benchSecret/0000000000"}"#)?;
            let text = format!(
                "[store.master_key]\nwrap = \"aws_kms\"\nkms_key_id = \"{key_id}\"\naws_region = \"us-east-1\"\naws_endpoint = \"{}\"\naws_credentials = \"file:{}\"\n",
                m.url,
                dir.join("aws.json").display()
            );
            rows.push(("aws_kms", Some(time_open(&config(&text, dir)?, dir, 50).await?), "KMS Decrypt, SigV4, moto_server"));
        }
        None => rows.push(("aws_kms", None, "skipped: moto_server is not installed")),
    }
    let systemd = "[store.master_key]\nwrap = \"systemd_creds\"\n";
    match time_open(&config(systemd, dir)?, dir, 10).await {
        Ok(t) => rows.push(("systemd_creds", Some(t), "systemd-creds decrypt (TPM2 when present, else the host key)")),
        Err(e) => {
            println!("systemd_creds: {e}");
            rows.push(("systemd_creds", None, "skipped: systemd-creds cannot encrypt here"))
        }
    }
    drop(bao);
    println!("master key cold start (wrap::open, p50):");
    for (mode, t, how) in rows {
        match t {
            Some(t) => println!("  {mode:<14} {:>10}   {how}", if t >= 0.01 { format!("{:.1} ms", t * 1e3) } else { us(t) }),
            None => println!("  {mode:<14} {:>10}   {how}", "-"),
        }
    }
    Ok(())
}
