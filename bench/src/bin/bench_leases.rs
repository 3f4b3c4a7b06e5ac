//! The lease cycle on PostgreSQL, through the broker in process: issue a dynamic lease (a real
//! role), run the first query with it, revoke it (role dropped and checked gone). Prints p50/p99 of
//! the full cycle, sequentially, and the cycles per second sustained at a given concurrency.
//!
//! `cargo run --release -p airlock-bench --bin airlock-bench-leases -- [postgres://admin@host/db]
//! [concurrency] [seconds]` (default `postgres://postgres@127.0.0.1:5432/test`, 8, 10).
#![forbid(unsafe_code)]

use airlock_bench::load::Latencies;
use airlock_bench::scratch::Scratch;
use airlock_core::Secret;
use airlock_server::{Broker, Caller};
use anyhow::{bail, Context, Result};
use serde_json::json;
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One cycle: total, and the issue, first-query and revoke phases.
async fn cycle(b: &Broker, c: &Caller, table: &str) -> Result<Duration> {
    Ok(cycle_phases(b, c, table).await?[0])
}

async fn cycle_phases(b: &Broker, c: &Caller, table: &str) -> Result<[Duration; 4]> {
    let t = Instant::now();
    let inv = b
        .invoke(c, "request_lease", json!({"credential_handle": "PG", "scope": "read_only", "ttl_seconds": 60, "tables": [table]}))
        .await;
    let v = inv.result.map_err(|e| anyhow::anyhow!("issue: {e} {:?}", e.detail))?;
    let issued = t.elapsed();
    let handle = v["lease_handle"].as_str().context("lease handle")?.to_owned();
    let id = v["lease_id"].as_str().context("lease id")?.to_owned();
    let q = b.invoke(c, "query_db", json!({"credential_handle": handle, "query": format!("SELECT id FROM {table}")})).await;
    q.result.map_err(|e| anyhow::anyhow!("query: {e} {:?}", e.detail))?;
    let queried = t.elapsed();
    if !b.revoke_lease(&id).await.map_err(|e| anyhow::anyhow!("revoke: {e} {:?}", e.detail))? {
        bail!("lease {id} was revoked by someone else");
    }
    let total = t.elapsed();
    Ok([total, issued, queried - issued, total - queried])
}

/// Milliseconds, for the report.
fn ms(secs: f64) -> f64 {
    secs * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dsn = args.get(1).cloned().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let conc: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let secs: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let table = format!("bench_lease_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&dsn).await.context("connecting with the admin DSN")?;
    sqlx::raw_sql(&format!("CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1), (2), (3);")).execute(&mut admin).await?;

    let cfg_text = format!(
        "[store]\ndata_dir = \"data\"\nsync = \"normal\"\n[limits]\nrate_per_minute = 10000000\n\
         [handles.PG]\nkind = \"postgres\"\nsecret = \"local:PG\"\n[handles.PG.database]\ntables = [\"{table}\"]\n\
         [handles.PG.lease]\ndynamic = true\n\
         [agents.bench]\ngrants = [{{ handle = \"PG\", tools = [\"request_lease\"] }}]\n"
    );
    let scratch = Scratch::new(&cfg_text).await?;
    scratch.put_secret("PG", &Secret::from_str_value(&dsn)).await?;
    let (broker, caller) = scratch.broker_for("bench").await?;
    let broker = Arc::new(broker);

    for _ in 0..5 {
        cycle(&broker, &caller, &table).await?;
    }
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for _ in 0..200 {
        let p = cycle_phases(&broker, &caller, &table).await?;
        for (v, d) in samples.iter_mut().zip(p) {
            v.push(d);
        }
    }
    let phases = samples.map(Latencies::from_durations);
    println!(
        "lease cycle (issue + first query + revoke), sequential, 200 cycles: p50 {:.2} ms, p99 {:.2} ms \
         (p50 issue {:.2} ms, first query {:.2} ms, revoke {:.2} ms)",
        ms(phases[0].p50()),
        ms(phases[0].p99()),
        ms(phases[1].p50()),
        ms(phases[2].p50()),
        ms(phases[3].p50())
    );

    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (b, c, t) = (broker.clone(), caller.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                lat.push(cycle(&b, &c, &t).await?);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let all = Latencies::from_durations(all);
    println!(
        "concurrency {conc}, {secs} s: {} cycles, {:.0} leases/s sustained, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / elapsed,
        ms(all.p50()),
        ms(all.p99())
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1")
        .bind(format!("airlock\\_l\\_{}%", broker.installation()))
        .fetch_one(&mut admin)
        .await?;
    println!("roles left behind: {left}");
    sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(&mut admin).await?;
    Ok(())
}
