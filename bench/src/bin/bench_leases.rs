//! The lease cycle on PostgreSQL, through the broker in process: issue a dynamic lease (a real
//! role), run the first query with it, revoke it (role dropped and checked gone). Prints p50/p99 of
//! the full cycle and of its phases, sequentially, and of issue + revoke pairs with no query
//! between (what OpenBao's sequential figure measures); then, at a given concurrency, the whole
//! cycles per second and the issue + revoke pairs per second, each with its phases.
//!
//! In the same run, when `bao` is on PATH, OpenBao's database secrets engine does the same against
//! the same PostgreSQL (its built-in `postgresql-database-plugin`, `database/creds/ROLE` then
//! `sys/leases/revoke`, over its HTTP API): issue and revoke p50, and leases per second at the same
//! concurrency.
//!
//! `cargo run --release -p airlock-bench --bin airlock-bench-leases -- [postgres://admin@host/db]
//! [concurrency] [seconds]` (default `postgres://postgres@127.0.0.1:5432/test`, 8, 10).
#![forbid(unsafe_code)]

use airlock_bench::bao::{self, Bao};
use airlock_bench::load::Latencies;
use airlock_bench::scratch::Scratch;
use airlock_core::Secret;
use airlock_server::{Broker, Caller};
use anyhow::{bail, Context, Result};
use serde_json::json;
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `conc` loops did in `secs` seconds: latencies of the whole (cycle or pair) and of its
/// phases (issue, first query, revoke; the query is zero for pairs), and the rate.
struct Sustained {
    phases: [Latencies; 4],
    rate: f64,
}

/// `conc` loops for `secs` seconds of whole cycles (`with_query`) or issue + revoke pairs.
async fn sustained(b: &Arc<Broker>, c: &Caller, table: &str, conc: usize, secs: u64, with_query: bool) -> Result<Sustained> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (b, c, t) = (b.clone(), c.clone(), table.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                lat.push(phases(&b, &c, &t, with_query).await?);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let start = Instant::now();
    let mut all: [Vec<Duration>; 4] = Default::default();
    for t in tasks {
        for p in t.await?? {
            for (v, d) in all.iter_mut().zip(p) {
                v.push(d);
            }
        }
    }
    let rate = all[0].len() as f64 / start.elapsed().as_secs_f64();
    Ok(Sustained { phases: all.map(Latencies::from_durations), rate })
}

/// One cycle: total.
async fn cycle(b: &Broker, c: &Caller, table: &str) -> Result<Duration> {
    Ok(phases(b, c, table, true).await?[0])
}

/// One lease issued, queried once (`with_query`) and revoked: total, and the issue, first-query
/// (zero without it) and revoke phases. Without the query it is what OpenBao's engine is
/// measured doing.
async fn phases(b: &Broker, c: &Caller, table: &str, with_query: bool) -> Result<[Duration; 4]> {
    let t = Instant::now();
    let inv = b
        .invoke(c, "request_lease", json!({"credential_handle": "PG", "scope": "read_only", "ttl_seconds": 60, "tables": [table]}))
        .await;
    let v = inv.result.map_err(|e| anyhow::anyhow!("issue: {e} {:?}", e.detail))?;
    let issued = t.elapsed();
    let handle = v["lease_handle"].as_str().context("lease handle")?.to_owned();
    let id = v["lease_id"].as_str().context("lease id")?.to_owned();
    if with_query {
        let q = b.invoke(c, "query_db", json!({"credential_handle": handle, "query": format!("SELECT id FROM {table}")})).await;
        q.result.map_err(|e| anyhow::anyhow!("query: {e} {:?}", e.detail))?;
    }
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
    let mut issue_revoke = Vec::new();
    for _ in 0..200 {
        let p = phases(&broker, &caller, &table, true).await?;
        issue_revoke.push(p[1] + p[3]);
        for (v, d) in samples.iter_mut().zip(p) {
            v.push(d);
        }
    }
    let cycles = samples.map(Latencies::from_durations);
    let issue_revoke = Latencies::from_durations(issue_revoke);
    println!(
        "lease cycle (issue + first query + revoke), sequential, 200 cycles: p50 {:.2} ms, p99 {:.2} ms \
         (p50 issue {:.2} ms, first query {:.2} ms, revoke {:.2} ms)",
        ms(cycles[0].p50()),
        ms(cycles[0].p99()),
        ms(cycles[1].p50()),
        ms(cycles[2].p50()),
        ms(cycles[3].p50())
    );
    println!(
        "airlock issue + revoke inside those cycles (the revoke ends the first query's session): p50 {:.2} ms",
        ms(issue_revoke.p50())
    );
    // What OpenBao's sequential figure measures: a lease issued and revoked, no session between.
    let mut pair_samples: [Vec<Duration>; 4] = Default::default();
    for _ in 0..200 {
        for (v, d) in pair_samples.iter_mut().zip(phases(&broker, &caller, &table, false).await?) {
            v.push(d);
        }
    }
    let pairs_seq = pair_samples.map(Latencies::from_durations);
    println!(
        "airlock issue + revoke, sequential, 200 pairs (no query between, as OpenBao's below): p50 {:.2} ms, p99 {:.2} ms \
         (p50 issue {:.2} ms, revoke {:.2} ms)",
        ms(pairs_seq[0].p50()),
        ms(pairs_seq[0].p99()),
        ms(pairs_seq[1].p50()),
        ms(pairs_seq[3].p50())
    );

    let full = sustained(&broker, &caller, &table, conc, secs, true).await?;
    println!(
        "concurrency {conc}, {secs} s, whole cycles: {} cycles, {:.0} leases/s sustained, p50 {:.2} ms, p99 {:.2} ms \
         (p50 issue {:.2} ms, first query {:.2} ms, revoke {:.2} ms)",
        full.phases[0].len(),
        full.rate,
        ms(full.phases[0].p50()),
        ms(full.phases[0].p99()),
        ms(full.phases[1].p50()),
        ms(full.phases[2].p50()),
        ms(full.phases[3].p50())
    );
    let pairs = sustained(&broker, &caller, &table, conc, secs, false).await?;
    println!(
        "concurrency {conc}, {secs} s, issue + revoke (what OpenBao's figure below measures): {} pairs, {:.0} leases/s sustained, \
         p50 {:.2} ms, p99 {:.2} ms (p50 issue {:.2} ms, revoke {:.2} ms)",
        pairs.phases[0].len(),
        pairs.rate,
        ms(pairs.phases[0].p50()),
        ms(pairs.phases[0].p99()),
        ms(pairs.phases[1].p50()),
        ms(pairs.phases[3].p50())
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1")
        .bind(format!("airlock\\_l\\_{}%", broker.installation()))
        .fetch_one(&mut admin)
        .await?;
    println!("roles left behind: {left}");

    match Bao::start().await? {
        None => println!("OpenBao: skipped, {}", bao::MISSING),
        Some(bao) => openbao(&bao, &dsn, &table, conc, secs, [pairs_seq[0].p50(), issue_revoke.p50()], pairs.rate).await?,
    }
    sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(&mut admin).await?;
    Ok(())
}

/// OpenBao's database secrets engine against the same PostgreSQL: a role with the same grants as
/// airlock's default statements, then 200 sequential issue + revoke pairs and `conc` concurrent
/// loops for `secs` seconds. `airlock_p50`: airlock's sequential pair alone, and inside a cycle.
async fn openbao(bao: &Bao, dsn: &str, table: &str, conc: usize, secs: u64, airlock_p50: [f64; 2], airlock_rate: f64) -> Result<()> {
    use reqwest::Method;
    let u = url::Url::parse(dsn)?;
    let (host, port, db, user) = (u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(5432), u.path().trim_start_matches('/'), u.username());
    let password = u.password().unwrap_or("unused");
    bao.call(Method::POST, "sys/mounts/database", Some(json!({"type": "database"}))).await?;
    bao.call(
        Method::POST,
        "database/config/pg",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/{db}?sslmode=disable"),
            "username": user,
            "password": password,
            "allowed_roles": "ro",
            "verify_connection": true,
        })),
    )
    .await?;
    bao.call(
        Method::POST,
        "database/roles/ro",
        Some(json!({
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                format!("GRANT CONNECT ON DATABASE \"{db}\" TO \"{{{{name}}}}\";"),
                "GRANT USAGE ON SCHEMA public TO \"{{name}}\";",
                format!("GRANT SELECT ON {table} TO \"{{{{name}}}}\";"),
            ],
            "revocation_statements": [
                "ALTER ROLE \"{{name}}\" NOLOGIN;",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
                "REASSIGN OWNED BY \"{{name}}\" TO CURRENT_USER;",
                "DROP OWNED BY \"{{name}}\";",
                "DROP ROLE IF EXISTS \"{{name}}\";",
            ],
            "default_ttl": "60s",
            "max_ttl": "600s",
        })),
    )
    .await?;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        bao_pair(&http, &bao.addr).await?;
    }
    let (mut issue, mut revoke, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..200 {
        let (i, r) = bao_pair(&http, &bao.addr).await?;
        issue.push(i);
        revoke.push(r);
        both.push(i + r);
    }
    let (issue, revoke, both) = (Latencies::from_durations(issue), Latencies::from_durations(revoke), Latencies::from_durations(both));
    println!(
        "OpenBao database engine, sequential, 200 pairs: issue + revoke p50 {:.2} ms (issue {:.2} ms, revoke {:.2} ms); \
         airlock / OpenBao = {:.2} (pairs alone), {:.2} (pairs inside cycles)",
        ms(both.p50()),
        ms(issue.p50()),
        ms(revoke.p50()),
        airlock_p50[0] / both.p50(),
        airlock_p50[1] / both.p50()
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (http, addr) = (http.clone(), bao.addr.clone());
        tasks.spawn(async move {
            let mut done = 0usize;
            while Instant::now() < deadline {
                bao_pair(&http, &addr).await?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        });
    }
    let mut n = 0usize;
    while let Some(r) = tasks.join_next().await {
        n += r??;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "OpenBao database engine, concurrency {conc}, {secs} s: {rate:.0} leases/s sustained (issue + revoke); airlock / OpenBao = {:.2}",
        airlock_rate / rate
    );
    Ok(())
}

/// One OpenBao dynamic credential issued (`database/creds/ro`) and revoked (`sys/leases/revoke`,
/// synchronous): the time of each.
async fn bao_pair(http: &reqwest::Client, addr: &str) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let v: serde_json::Value =
        http.get(format!("{addr}/v1/database/creds/ro")).header("X-Vault-Token", bao::ROOT).send().await?.error_for_status()?.json().await?;
    let issued = t.elapsed();
    let lease = v["lease_id"].as_str().context("no lease_id")?.to_owned();
    let t = Instant::now();
    http.put(format!("{addr}/v1/sys/leases/revoke"))
        .header("X-Vault-Token", bao::ROOT)
        .json(&json!({"lease_id": lease}))
        .send()
        .await?
        .error_for_status()?;
    Ok((issued, t.elapsed()))
}
