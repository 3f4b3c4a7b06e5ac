//! `airlock-bench-replicas`: brokered `query_db` calls per second with the state store on
//! SQLite (one replica), on PostgreSQL (one replica), and on PostgreSQL with two replicas
//! (two `airlock serve` processes on one database, the load split between them), in one run.
//!
//! Every call takes the whole path: REST, token check against the store, policy, resolve,
//! execute (`SELECT 1` on a SQLite file, the same for every setup), scrub, and the durable audit
//! record (group commit; on PostgreSQL under the chain's advisory lock). The PostgreSQL server is
//! `AIRLOCK_BENCH_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`); the run creates its
//! own database there and drops it after. Run: `cargo run --bin airlock-bench-replicas` (the
//! `airlock` binary next to this one is what is measured).
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WARMUP: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

async fn wait_http(url: &str) -> Result<()> {
    let c = reqwest::Client::new();
    for _ in 0..300 {
        if c.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not come up")
}

/// One setup: a data directory, `n` replicas (each its own config and port), one agent token.
struct Setup {
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    bases: Vec<String>,
    token: String,
}

async fn setup(exe: &Path, store_url: Option<&str>, replicas: usize) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)").execute(&mut c).await?;
    }
    let side = tempfile::tempdir()?;
    run(Command::new(exe).arg("--config").arg(side.path().join("airlock.toml")).arg("init"))?;
    std::fs::rename(side.path().join("airlock-data"), dir.path().join("airlock-data"))?;
    let url_line = store_url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let mut cfgs = Vec::new();
    let mut bases = Vec::new();
    for i in 0..replicas {
        let port = free_port()?;
        let cfg = dir.path().join(format!("airlock-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\n{url_line}[limits]\nrate_per_minute = 100000000\n\
                 [handles.DB]\nkind = \"sqlite\"\nsecret = \"local:DB\"\n\
                 [agents.bench]\ngrants = [{{ handle = \"DB\", tools = [\"query_db\"] }}]\n"
            ),
        )?;
        cfgs.push(cfg);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    {
        use std::io::Write;
        let mut c = Command::new(exe).arg("--config").arg(&cfgs[0]).args(["secret", "put", "DB"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
        c.stdin.take().context("stdin")?.write_all(format!("sqlite://{}", db.display()).as_bytes())?;
        if !c.wait()?.success() {
            bail!("secret put failed");
        }
    }
    let token = run(Command::new(exe).arg("--config").arg(&cfgs[0]).args(["agent", "add", "bench"]).stderr(Stdio::null()))?.trim().to_owned();
    let mut procs = Vec::new();
    for (cfg, base) in cfgs.iter().zip(&bases) {
        procs.push(Proc(Command::new(exe).arg("--config").arg(cfg).arg("serve").env("RUST_LOG", "error").stdout(Stdio::null()).spawn()?));
        wait_http(&format!("{base}/healthz")).await?;
    }
    Ok(Setup { _procs: procs, _dir: dir, bases, token })
}

/// Calls per second and median latency at `concurrency`, the clients spread evenly over the
/// replicas.
async fn load(s: &Setup, concurrency: usize) -> Result<(f64, f64, usize)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency * 2).build()?;
    let body = serde_json::json!({"tool": "query_db", "arguments": {"credential_handle": "DB", "query": "SELECT 1"}}).to_string();
    let warm = Instant::now() + WARMUP;
    let end = warm + RUN;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (client, body, token) = (client.clone(), body.clone(), s.token.clone());
        let url = format!("{}/v1/invoke", s.bases[i % s.bases.len()]);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let r = client.post(&url).bearer_auth(&token).header("content-type", "application/json").body(body.clone()).send().await;
                let ok = match r {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let _ = r.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                if now >= warm && Instant::now() <= end {
                    if ok {
                        lat.push(now.elapsed().as_secs_f64());
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = all.get(all.len() / 2).copied().unwrap_or(f64::NAN);
    Ok((all.len() as f64 / RUN.as_secs_f64(), p50, errors))
}

async fn pg_admin(admin: &str, sql: &str) -> Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin).await.context("connecting to PostgreSQL (AIRLOCK_BENCH_PG)")?;
    sqlx::raw_sql(sql).execute(&mut c).await?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let exe: PathBuf = std::env::current_exe()?.with_file_name("airlock");
    if !exe.exists() {
        bail!("{} not found: build it first (cargo build --bin airlock)", exe.display());
    }
    let admin = std::env::var("AIRLOCK_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // One fresh database per PostgreSQL setup.
    let dbname = format!("airlock_bench_{:08x}", rand::random::<u32>());
    let (db1, db2) = (format!("{dbname}_1"), format!("{dbname}_2"));
    pg_admin(&admin, &format!("CREATE DATABASE {db1}")).await?;
    pg_admin(&admin, &format!("CREATE DATABASE {db2}")).await?;
    let server = admin.rsplit_once('/').map(|(s, _)| s).context("AIRLOCK_BENCH_PG names no database")?;
    let (url1, url2) = (format!("{server}/{db1}"), format!("{server}/{db2}"));
    println!(
        "airlock-bench-replicas: {} cores; query_db SELECT 1 through the whole path; {} rounds of {}s after {}s warm-up, medians",
        std::thread::available_parallelism()?,
        ROUNDS,
        RUN.as_secs(),
        WARMUP.as_secs()
    );
    let result = async {
        let setups = [("1 replica, SQLite store", None, 1usize), ("1 replica, PostgreSQL store", Some(url1.as_str()), 1), ("2 replicas, PostgreSQL store", Some(url2.as_str()), 2)];
        let mut table: Vec<(String, usize, f64, f64, usize)> = Vec::new();
        for (name, url, n) in setups {
            let s = setup(&exe, url, n).await?;
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
        pg_admin(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
    }
    result
}
