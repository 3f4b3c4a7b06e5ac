//! Timing of audit appends, to measure what a change to the append path costs (the per-group
//! check of the current signing key, for one). Ignored by default; run with
//!
//! ```text
//! CARGO_INCREMENTAL=0 cargo test --release -p airlock-store --test audit_append_timing -- --ignored --nocapture
//! ```
//!
//! Each case appends `AIRLOCK_TIMING_N` records (default 100,000) and prints records per second:
//! one at a time (every record its own group, so a per-group cost shows at its largest) and from
//! 64 concurrent tasks (groups of many), on SQLite with `sync = normal` (no fsync per group, so
//! the fsync does not hide the rest) and on PostgreSQL when 127.0.0.1:5432 is up.

mod common;

use airlock_core::config::SyncMode;
use airlock_store::audit::{AuditKey, AuditLog};
use airlock_store::Store;
use sqlx::Connection;
use std::time::Instant;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn n() -> usize {
    std::env::var("AIRLOCK_TIMING_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

async fn sequential(log: &AuditLog, n: usize) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        log.append(common::record(i, "bot")).await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn concurrent(log: &AuditLog, n: usize) -> f64 {
    const TASKS: usize = 64;
    let t = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|k| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in (k..n).step_by(TASKS) {
                    log.append(common::record(i, "bot")).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: run by hand with --ignored --nocapture"]
async fn audit_append_timing_sqlite() {
    let n = n();
    for mode in ["sequential", "concurrent"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), SyncMode::Normal).await.unwrap();
        let log = AuditLog::start(store.clone(), AuditKey::create(dir.path()).unwrap());
        let rate = if mode == "sequential" { sequential(&log, n).await } else { concurrent(&log, n).await };
        println!("sqlite (sync=normal) {mode}: {n} appends, {rate:.0} records/s");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: run by hand with --ignored --nocapture"]
async fn audit_append_timing_postgres() {
    if tokio::net::TcpStream::connect("127.0.0.1:5432").await.is_err() {
        assert_ne!(std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref(), Ok("1"), "PostgreSQL at 127.0.0.1:5432 is required");
        println!("skipped on PostgreSQL: 127.0.0.1:5432 is unreachable");
        return;
    }
    let n = n();
    for mode in ["sequential", "concurrent"] {
        let name = format!("airlock_timing_{:016x}", rand::random::<u64>());
        let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_postgres(&format!("postgres://postgres@127.0.0.1:5432/{name}"), dir.path()).await.unwrap();
        let log = AuditLog::start(store.clone(), AuditKey::create(dir.path()).unwrap());
        // One at a time is a network round trip or more per record: fewer of them.
        let count = if mode == "sequential" { n / 10 } else { n };
        let rate = if mode == "sequential" { sequential(&log, count).await } else { concurrent(&log, count).await };
        println!("postgres {mode}: {count} appends, {rate:.0} records/s");
        store.close().await;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await.unwrap();
    }
}

/// The per-group check on its own, on SQLite: the statement every group now runs in its
/// transaction (the chain's current key), next to the head read every record already ran,
/// each a cached prepared statement on the writer's kind of connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: run by hand with --ignored --nocapture"]
async fn audit_key_check_cost_sqlite() {
    const N: u32 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), SyncMode::Normal).await.unwrap();
    let log = AuditLog::start(store.clone(), AuditKey::create(dir.path()).unwrap());
    for i in 0..100 {
        log.append(common::record(i, "bot")).await.unwrap();
    }
    log.rotate_key(AuditKey::stage(dir.path()).unwrap()).await.unwrap();
    store.close().await;
    let c = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let time = |sql: &str| {
        let t = Instant::now();
        for _ in 0..N {
            let v: Vec<u8> = c.prepare_cached(sql).unwrap().query_row([], |r| r.get(1)).unwrap();
            std::hint::black_box(v);
        }
        t.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let key = time("SELECT 1, public FROM audit_signing_key WHERE id = 1");
    let head = time("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
    println!("sqlite: current-key check {key:.0} ns per group; head read {head:.0} ns per record (for scale)");
}
