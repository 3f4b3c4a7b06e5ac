//! What the store's integration tests share.

use airlock_store::audit::{AuditRecord, Decision};
use sqlx::Connection;

/// An allowed `query_db` call of `agent`, numbered `i` (in its request id and query).
#[allow(dead_code, reason = "not every test of the store writes audit records")]
pub fn record(i: usize, agent: &str) -> AuditRecord {
    AuditRecord {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request_id: format!("req-{i}"),
        agent: agent.into(),
        parent_chain: vec![],
        tool: "query_db".into(),
        handle: Some("DB".into()),
        arguments: serde_json::json!({"query": format!("SELECT {i}")}),
        decision: Decision::Allow,
        code: None,
        outcome: "ok".into(),
        result_bytes: 1,
        redactions: 0,
        duration_us: 1,
        policies: vec![],
        approval: None,
        peer: None,
        sandbox: None,
        identity: None,
        key_handover: None,
    }
}

/// T17, a lost answer: a consume that named an attempt is answered again to the same proof and
/// attempt (without burning another view, after the store is reopened too), and to nothing else;
/// the kept answer goes after `REDELIVERY_SECS`. `reopen` opens the same store again, as a
/// restarted broker does.
#[allow(dead_code, reason = "only the share tests use it")]
pub async fn redelivery_is_for_the_attempt_only<F, Fut>(store: &airlock_store::Store, reopen: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = airlock_store::Store>,
{
    use airlock_store::shares::NewShareRecord;
    let now = chrono::Utc::now().timestamp();
    for (id, views) in [("RRRRRRRRRRRRRRRRRRRRR1", 1u32), ("RRRRRRRRRRRRRRRRRRRRR2", 2)] {
        let rec = NewShareRecord { id, ciphertext: b"redelivered-bytes", proof_hash: &[7; 32], expires_at: now + 3600, views, creator: None, recipient: None };
        store.create_share(&rec).await.unwrap();
    }
    let (one, two) = ("RRRRRRRRRRRRRRRRRRRRR1", "RRRRRRRRRRRRRRRRRRRRR2");
    let first = store.consume_share(one, &[7; 32], Some(&[1; 32])).await.unwrap().unwrap();
    assert_eq!((first.views_left, first.redelivered, first.ciphertext.as_slice()), (0, false, &b"redelivered-bytes"[..]));
    // The broker restarts; the client retries the same attempt: the same answer.
    let store = reopen().await;
    let again = store.consume_share(one, &[7; 32], Some(&[1; 32])).await.unwrap().unwrap();
    assert_eq!((again.views_left, again.redelivered, again.ciphertext.as_slice()), (0, true, &b"redelivered-bytes"[..]));
    // Anyone else: the used link is unknown, with the right proof and another attempt or none.
    assert_eq!(store.consume_share(one, &[7; 32], Some(&[2; 32])).await.unwrap(), None);
    assert_eq!(store.consume_share(one, &[7; 32], None).await.unwrap(), None);
    assert_eq!(store.consume_share(one, &[8; 32], Some(&[1; 32])).await.unwrap(), None);
    // Two views: a retried attempt burns nothing more; a new attempt burns the second view.
    let a = store.consume_share(two, &[7; 32], Some(&[3; 32])).await.unwrap().unwrap();
    let a2 = store.consume_share(two, &[7; 32], Some(&[3; 32])).await.unwrap().unwrap();
    assert_eq!((a.views_left, a2.views_left, a2.redelivered), (1, 1, true));
    assert_eq!(store.share_views_left(two).await.unwrap(), Some(1));
    let b = store.consume_share(two, &[7; 32], Some(&[4; 32])).await.unwrap().unwrap();
    assert_eq!((b.views_left, b.redelivered), (0, false));
    assert_eq!(store.consume_share(two, &[7; 32], Some(&[5; 32])).await.unwrap(), None);
    // The kept answers go once their time is up (moved back past it here).
    store.age_share_deliveries(airlock_store::shares::REDELIVERY_SECS + 1).await.unwrap();
    assert_eq!(store.consume_share(one, &[7; 32], Some(&[1; 32])).await.unwrap(), None);
    assert_eq!(store.consume_share(two, &[7; 32], Some(&[4; 32])).await.unwrap(), None);
}

#[allow(dead_code, reason = "only the PostgreSQL tests use it")]
const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own on the machine's PostgreSQL, for one test; dropped by `drop_db`.
#[allow(dead_code, reason = "only the PostgreSQL tests use it")]
pub struct TempDb {
    pub name: String,
    pub url: String,
}

#[allow(dead_code, reason = "only the PostgreSQL tests use it")]
impl TempDb {
    /// None (skip) when the server is down, unless AIRLOCK_REQUIRE_SERVICES=1.
    pub async fn create() -> Option<TempDb> {
        let up = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect("127.0.0.1:5432"))
            .await
            .is_ok_and(|r| r.is_ok());
        if !up {
            if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
            }
            println!("skipped: PostgreSQL at 127.0.0.1:5432 is unreachable");
            return None;
        }
        let name = format!("airlock_t_{:016x}", rand::random::<u64>());
        let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
        Some(TempDb { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name })
    }

    pub async fn drop_db(self) {
        let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut c).await.unwrap();
    }

    /// Ends every session on the database, as a server restart does for its clients.
    pub async fn kill_sessions(&self) -> i64 {
        let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
        sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&self.name)
        .fetch_one(&mut c)
        .await
        .unwrap()
    }
}

