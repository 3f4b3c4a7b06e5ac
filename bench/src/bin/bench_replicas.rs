//! `airlock-bench-replicas`: brokered `query_db` calls per second with the state store on
//! SQLite (one replica), on PostgreSQL (one replica), and on PostgreSQL with two replicas
//! (two `airlock serve` processes on one database, the load split between them), in one run.
//!
//! Every call takes the whole path: REST, token check against the store, policy, resolve,
//! execute (`SELECT 1` on a SQLite file, the same for every setup), scrub, and the durable audit
//! record (group commit; on PostgreSQL under the chain's advisory lock). The PostgreSQL server is
//! `AIRLOCK_BENCH_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`); the run creates its
//! own database there and drops it after. Run: `cargo build -p airlock && cargo run -p
//! airlock-bench --bin airlock-bench-replicas` (the `airlock` binary next to this one is what is
//! measured).
#![forbid(unsafe_code)]

use airlock_bench::load::{http_load, Latencies, Phases, Target};
use airlock_bench::served::{free_port, pg_exec, select1_db, Airlock, Proc};
use anyhow::{Context, Result};
use std::time::Duration;

const PHASES: Phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(4) };
const ROUNDS: usize = 3;

/// One setup: a data directory, `n` replicas (each its own config and port), one agent token.
struct Setup {
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    bases: Vec<String>,
    token: String,
}

async fn setup(airlock: &Airlock, store_url: Option<&str>, replicas: usize) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let db = select1_db(&dir.path().join("bench.db")).await?;
    airlock.init_data(dir.path())?;
    let url_line = store_url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let mut cfgs = Vec::new();
    let mut bases = Vec::new();
    for i in 0..replicas {
        let port = free_port()?;
        let cfg = dir.path().join(format!("airlock-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"airlock-{i}.sock\"\n[store]\n{url_line}[limits]\nrate_per_minute = 100000000\n\
                 [handles.DB]\nkind = \"sqlite\"\nsecret = \"local:DB\"\n\
                 [agents.bench]\ngrants = [{{ handle = \"DB\", tools = [\"query_db\"] }}]\n"
            ),
        )?;
        cfgs.push(cfg);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    airlock.secret_put(&cfgs[0], "DB", &db)?;
    let token = airlock.agent_add(&cfgs[0], "bench")?;
    let mut procs = Vec::new();
    for (cfg, base) in cfgs.iter().zip(&bases) {
        procs.push(airlock.serve(cfg, base).await?);
    }
    Ok(Setup { _procs: procs, _dir: dir, bases, token })
}

/// Calls per second, median latency and errors at `concurrency`, the clients spread evenly over
/// the replicas.
async fn load(s: &Setup, concurrency: usize) -> Result<(f64, f64, usize)> {
    let args = serde_json::json!({"credential_handle": "DB", "query": "SELECT 1"});
    let targets: Vec<Target> = s.bases.iter().map(|b| Target::invoke(b, &s.token, "query_db", args.clone())).collect();
    let st = http_load(&targets, concurrency, PHASES).await?;
    Ok((st.rps(), st.p50(), st.errors))
}

fn median(v: Vec<f64>) -> f64 {
    Latencies::from_secs(v).p50()
}

#[tokio::main]
async fn main() -> Result<()> {
    let airlock = Airlock::next_to_this()?;
    let admin = std::env::var("AIRLOCK_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // One fresh database per PostgreSQL setup.
    let dbname = format!("airlock_bench_{:08x}", rand::random::<u32>());
    let (db1, db2) = (format!("{dbname}_1"), format!("{dbname}_2"));
    pg_exec(&admin, &format!("CREATE DATABASE {db1}")).await?;
    pg_exec(&admin, &format!("CREATE DATABASE {db2}")).await?;
    let server = admin.rsplit_once('/').map(|(s, _)| s).context("AIRLOCK_BENCH_PG names no database")?;
    let (url1, url2) = (format!("{server}/{db1}"), format!("{server}/{db2}"));
    println!(
        "airlock-bench-replicas: {} cores; query_db SELECT 1 through the whole path; {} rounds of {}s after {}s warm-up, medians",
        std::thread::available_parallelism()?,
        ROUNDS,
        PHASES.measure.as_secs(),
        PHASES.warmup.as_secs()
    );
    let result = async {
        let setups = [("1 replica, SQLite store", None, 1usize), ("1 replica, PostgreSQL store", Some(url1.as_str()), 1), ("2 replicas, PostgreSQL store", Some(url2.as_str()), 2)];
        let mut table: Vec<(String, usize, f64, f64, usize)> = Vec::new();
        for (name, url, n) in setups {
            let s = setup(&airlock, url, n).await?;
            for c in [8usize, 32] {
                let mut rps = Vec::new();
                let mut p50 = Vec::new();
                let mut errors = 0;
                for _ in 0..ROUNDS {
                    let (r, p, e) = load(&s, c).await?;
                    rps.push(r);
                    p50.push(p);
                    errors += e;
                }
                let (r, p) = (median(rps), median(p50));
                println!("  {name:<30} concurrency {c:>2}: {r:>7.0} calls/s   p50 {:>6.0} µs   errors {errors}", p * 1e6);
                table.push((name.to_owned(), c, r, p, errors));
            }
        }
        println!("\nratios (calls/s against 1 replica on SQLite at the same concurrency):");
        for c in [8usize, 32] {
            let base = table.iter().find(|t| t.1 == c).map(|t| t.2).unwrap_or(f64::NAN);
            for t in table.iter().filter(|t| t.1 == c) {
                println!("  concurrency {c:>2}  {:<30} {:.2}x", t.0, t.2 / base);
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    for db in [&db1, &db2] {
        pg_exec(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
    }
    result
}
