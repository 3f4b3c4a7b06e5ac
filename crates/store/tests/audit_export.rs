//! Reading the audit log for an export ([`Store::audit_records`]) while it grows: a reader paging
//! by seq behind two appenders (two replicas on PostgreSQL, two logs on one SQLite file) gets
//! every record once, in order, with nothing skipped (a record is visible only once every record
//! before it is), and the head it reads never runs ahead of what it can page. The PostgreSQL
//! test skips (printing why) when the server is down, unless AIRLOCK_REQUIRE_SERVICES=1.

mod common;

use airlock_core::config::AuditExportFormat;
use airlock_store::audit::{AuditKey, AuditLog};
use airlock_store::audit_export::render;
use airlock_store::Store;
use common::TempDb;

/// Appends `n` records through `a` and `b` in turn while a reader pages through the log in
/// pages of 7; the seqs it read.
async fn page_while_appending(a: Store, b: Store, dir: &std::path::Path, n: usize) -> Vec<i64> {
    let la = AuditLog::start(a.clone(), AuditKey::load(dir).unwrap());
    let lb = AuditLog::start(b.clone(), AuditKey::load(dir).unwrap());
    let writers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..n {
            let (log, who) = if i % 2 == 0 { (la.clone(), "a") } else { (lb.clone(), "b") };
            tasks.push(tokio::spawn(async move { log.append(common::record(i, who)).await.unwrap() }));
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let head = a.audit_head().await.unwrap();
        let page = a.audit_records(after, 7).await.unwrap();
        for r in &page {
            // Each renders in both formats with its own seq.
            assert_eq!(render(r, AuditExportFormat::Ocsf).unwrap()["metadata"]["sequence"], r.seq);
            assert_eq!(render(r, AuditExportFormat::Jsonl).unwrap()["seq"], r.seq);
            seen.push(r.seq);
        }
        if let Some(last) = page.last() {
            after = last.seq;
        } else {
            assert!(head <= after, "the head ({head}) is past what paging reaches ({after})");
            if writers.is_finished() && after == a.audit_head().await.unwrap() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    writers.await.unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_behind_appends_on_sqlite_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    AuditKey::create(dir.path()).unwrap();
    let a = Store::open(dir.path()).await.unwrap();
    let b = Store::open(dir.path()).await.unwrap();
    assert_eq!(a.audit_head().await.unwrap(), 0);
    let seen = page_while_appending(a, b, dir.path(), 300).await;
    assert_eq!(seen, (1..=300).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_behind_two_replicas_on_postgres_misses_nothing() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    AuditKey::create(dir.path()).unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    assert_eq!(a.audit_head().await.unwrap(), 0);
    let seen = page_while_appending(a.clone(), b.clone(), dir.path(), 300).await;
    assert_eq!(seen, (1..=300).collect::<Vec<i64>>());
    a.close().await;
    b.close().await;
    db.drop_db().await;
}
