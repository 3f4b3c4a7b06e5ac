//! The store on PostgreSQL, as several replicas use it: each test creates its own database
//! (`airlock_t_<random>`) on the machine's server, opens it through separate pools as separate
//! replicas would, and drops it after. Skips (printing why) when the server is down, unless
//! AIRLOCK_REQUIRE_SERVICES=1.

mod common;

use airlock_store::audit::{AuditKey, AuditLog, AuditRecord};
use airlock_store::leases::{status, NewLease};
use airlock_store::shares::NewShareRecord;
use airlock_store::{Store, StoreError};
use common::TempDb;

fn rec(i: usize, agent: &str) -> AuditRecord {
    common::record(i, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_opening_a_fresh_database_together_migrate_it_once() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open_postgres(&db.url, dir.path());
    let (s1, s2, s3, s4) = tokio::join!(open(), open(), open(), open());
    let stores = vec![s1.unwrap(), s2.unwrap(), s3.unwrap(), s4.unwrap()];
    let (v,): (i64,) = sqlx::query_as("SELECT version FROM airlock_schema").fetch_one(stores[0].pg_pool().unwrap()).await.unwrap();
    assert_eq!(v, airlock_store::PG_SCHEMA_VERSION);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM airlock_schema").fetch_one(stores[0].pg_pool().unwrap()).await.unwrap();
    assert_eq!(rows, 1);
    assert_eq!(stores[0].engine(), "postgres");
    // Opening again changes nothing; a newer schema than this build is refused.
    Store::open_postgres(&db.url, dir.path()).await.unwrap();
    sqlx::query("UPDATE airlock_schema SET version = 99").execute(stores[0].pg_pool().unwrap()).await.unwrap();
    assert!(matches!(Store::open_postgres(&db.url, dir.path()).await, Err(StoreError::Invalid(m)) if m.contains("newer")));
    for s in &stores {
        s.close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_64_concurrent_consumers_on_two_replicas_give_exactly_one_success() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    for (id, views, want) in [("share-one-view", 1u32, 1usize), ("share-three-views", 3, 3)] {
        a.create_share(&NewShareRecord {
            id,
            ciphertext: b"ct",
            proof_hash: &[7; 32],
            expires_at: chrono::Utc::now().timestamp() + 60,
            views,
            creator: Some("creator"),
            recipient: None,
        })
        .await
        .unwrap();
        assert!(matches!(
            b.create_share(&NewShareRecord { id, ciphertext: b"x", proof_hash: &[1; 32], expires_at: 0, views: 1, creator: None, recipient: None }).await,
            Err(StoreError::Conflict(_))
        ));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move { s.consume_share(id, &[7; 32], None).await.unwrap() }));
        }
        let mut ok = 0;
        for t in tasks {
            if let Some(c) = t.await.unwrap() {
                assert_eq!(c.ciphertext, b"ct");
                ok += 1;
            }
        }
        assert_eq!(ok, want, "{id}");
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM shares WHERE id = $1 AND (length(ciphertext) > 0 OR views_left > 0)")
            .bind(id)
            .fetch_one(a.pg_pool().unwrap())
            .await
            .unwrap();
        assert_eq!(n, 0, "the used-up share is a tombstone");
        let r = b.share_receipt(id, "creator").await.unwrap().unwrap();
        assert_eq!(r.views_used as usize, want);
    }
    // A wrong proof burns nothing.
    a.create_share(&NewShareRecord { id: "guarded", ciphertext: b"ct", proof_hash: &[7; 32], expires_at: chrono::Utc::now().timestamp() + 60, views: 1, creator: None, recipient: None })
        .await
        .unwrap();
    assert!(b.consume_share("guarded", &[8; 32], None).await.unwrap().is_none());
    assert_eq!(a.share_views_left("guarded").await.unwrap(), Some(1));
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_appends_from_two_replicas_form_one_gap_free_chain_that_verifies() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    AuditKey::create(dir.path()).unwrap();
    let pk = AuditKey::load_public(dir.path()).unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let la = AuditLog::start(a.clone(), AuditKey::load(dir.path()).unwrap());
    let lb = AuditLog::start(b.clone(), AuditKey::load(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (log, who) = if i % 2 == 0 { (la.clone(), "a") } else { (lb.clone(), "b") };
        tasks.push(tokio::spawn(async move { log.append(rec(i, who)).await.unwrap() }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=400).collect::<Vec<i64>>(), "every record has its own seq, with no gap");
    let r = b.verify_audit(&pk).await.unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.records, r.last_seq), (400, 400));
    assert!(r.checkpoints >= 2);
    let tail = a.audit_tail(2).await.unwrap();
    assert_eq!(tail.iter().map(|t| t.0).collect::<Vec<_>>(), vec![399, 400]);

    // An edit is found at the record.
    sqlx::query("UPDATE audit SET body = replace(body, 'SELECT', 'DELETE') WHERE seq = 123")
        .execute(a.pg_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(a.verify_audit(&pk).await.unwrap().first_bad.unwrap().seq, 123);
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_under_load_lose_no_acknowledged_record_and_the_log_recovers() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    AuditKey::create(dir.path()).unwrap();
    let pk = AuditKey::load_public(dir.path()).unwrap();
    let s = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let log = AuditLog::start(s.clone(), AuditKey::load(dir.path()).unwrap());
    let load = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0;
            for i in 0..600 {
                match log.append(rec(i, "bot")).await {
                    Ok(seq) => acked.push(seq),
                    Err(StoreError::AuditWriterGone) => refused += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
                if i % 50 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            (acked, refused)
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        db.kill_sessions().await;
    }
    let (acked, refused) = load.await.unwrap();
    println!("acknowledged {}, refused {refused}", acked.len());
    // The log works again after the sessions died.
    let last = log.append(rec(9999, "bot")).await.unwrap();
    let r = s.verify_audit(&pk).await.unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.last_seq, last);
    // Every acknowledged record is there, and nothing else: refused calls left no record.
    assert_eq!(r.records as usize, acked.len() + 1);
    for seq in &acked {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit WHERE seq = $1").bind(seq).fetch_one(s.pg_pool().unwrap()).await.unwrap();
        assert_eq!(n, 1);
    }
    s.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t15_an_agent_revoked_on_one_replica_is_refused_by_the_other_and_its_leases_fall_due() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let (p, ptok) = a.add_agent("parent", None, None).await.unwrap();
    let (c, ctok) = a.add_agent("child", Some(&p.id), None).await.unwrap();
    assert!(matches!(b.add_agent("parent", None, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(b.authenticate(ctok.reveal()).await.unwrap().unwrap().id, c.id);
    assert_eq!(b.parent_chain(&c).await.unwrap(), vec!["parent"]);
    b.set_agent_grants(&c.id, &[("DB".into(), "query_db".into()), ("DB".into(), "query_db".into())]).await.unwrap();
    assert_eq!(a.agent_grants(&c.id).await.unwrap(), vec![("DB".to_owned(), "query_db".to_owned())]);

    let task = b.create_task(&c.id).await.unwrap();
    let far = "2999-01-01T00:00:00.000000Z";
    let nl = NewLease {
        id: "l1",
        handle: "DB__LABCDEF",
        base: "DB",
        agent_id: &c.id,
        scope: "read_only",
        tables: Some(&["orders".to_owned()]),
        dynamic: true,
        role_name: Some("airlock_x_l1"),
        buckets: None,
        task_id: Some(&task.id),
        expires_at: far,
    };
    a.insert_lease(&nl).await.unwrap();
    assert!(matches!(b.insert_lease(&NewLease { id: "l2", ..nl.clone() }).await, Err(StoreError::Conflict(_))));
    assert!(b.transition_lease("l1", &[status::PENDING], status::ACTIVE).await.unwrap());
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert!(a.leases_due(&now(), "2000-01-01").await.unwrap().is_empty());
    assert_eq!(a.next_lease_deadline().await.unwrap().as_deref(), Some(far));

    assert_eq!(a.revoke_agent("parent").await.unwrap(), 2);
    assert!(b.authenticate(ptok.reveal()).await.unwrap().is_none());
    assert!(b.authenticate(ctok.reveal()).await.unwrap().is_none());
    let due = b.leases_due(&now(), "2000-01-01").await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(due[0].dynamic && due[0].tables.as_deref() == Some(&["orders".to_owned()][..]));
    // Two reapers on two replicas: one claims it.
    let from = [status::ACTIVE, status::REVOKE_PENDING];
    let (x, y) = tokio::join!(a.transition_lease("l1", &from, status::REVOKING), b.transition_lease("l1", &from, status::REVOKING));
    assert!(x.unwrap() ^ y.unwrap());
    a.lease_revoke_failed("l1", "2000-01-01T00:00:00.000000Z").await.unwrap();
    assert_eq!(b.lease("l1").await.unwrap().unwrap().attempts, 1);
    assert!(b.transition_lease("l1", &from, status::REVOKING).await.unwrap());
    assert!(a.transition_lease("l1", &[status::REVOKING], status::REVOKED).await.unwrap());
    assert!(b.lease_by_handle("DB__LABCDEF").await.unwrap().unwrap().revoked_at.is_some());
    assert_eq!(a.leases_in(status::REVOKED).await.unwrap().len(), 1);
    assert_eq!(a.list_leases().await.unwrap().len(), 1);
    assert!(matches!(a.close_task(&task.id, &p.id).await, Err(StoreError::NotFound(_))));
    assert!(a.close_task(&task.id, &c.id).await.unwrap().is_empty());
    assert!(matches!(b.close_task(&task.id, &c.id).await, Err(StoreError::Conflict(_))));
    assert_eq!(a.list_agents().await.unwrap().len(), 2);
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealed_secrets_are_shared_and_versioned() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let g0 = b.secrets_generation().await.unwrap();
    assert_eq!(a.put_sealed("DB", b"sealed-1").await.unwrap(), 1);
    assert_eq!(a.put_sealed("DB", b"sealed-2").await.unwrap(), 2);
    assert_eq!(b.get_sealed("DB").await.unwrap(), Some((b"sealed-2".to_vec(), 2)));
    let g1 = b.secrets_generation().await.unwrap();
    assert_ne!(g0, g1);
    assert_eq!(b.all_sealed().await.unwrap(), vec![("DB".to_owned(), b"sealed-2".to_vec())]);
    assert_eq!(b.list_secrets().await.unwrap()[0].version, 2);
    b.remove_secret("DB").await.unwrap();
    assert!(matches!(a.remove_secret("DB").await, Err(StoreError::NotFound(_))));
    assert!(a.get_sealed("DB").await.unwrap().is_none());
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_reaper_turn_at_a_time_over_all_replicas() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let turn = a.reaper_turn().await.unwrap();
    assert!(turn.is_some());
    assert!(b.reaper_turn().await.unwrap().is_none(), "a second reaper ran alongside the first");
    assert!(a.reaper_turn().await.unwrap().is_none());
    drop(turn);
    // The turn is released when dropped (the transaction rolls back on its connection).
    let t0 = std::time::Instant::now();
    loop {
        if b.reaper_turn().await.unwrap().is_some() {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "the turn was never released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_copies_a_sqlite_store_once_and_refuses_a_target_with_other_data() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    AuditKey::create(dir.path()).unwrap();
    let pk = AuditKey::load_public(dir.path()).unwrap();
    let lite = Store::open(dir.path()).await.unwrap();
    let (p, ptok) = lite.add_agent("parent", None, None).await.unwrap();
    let (c, _) = lite.add_agent("child", Some(&p.id), None).await.unwrap();
    lite.set_agent_grants(&c.id, &[("DB".into(), "query_db".into())]).await.unwrap();
    lite.put_sealed("DB", b"sealed").await.unwrap();
    let task = lite.create_task(&c.id).await.unwrap();
    lite.insert_lease(&NewLease {
        id: "l1",
        handle: "DB__LABCDEF",
        base: "DB",
        agent_id: &c.id,
        scope: "read_only",
        tables: None,
        dynamic: true,
        role_name: Some("r"),
        buckets: Some(&["b1".to_owned()]),
        task_id: Some(&task.id),
        expires_at: "2999-01-01T00:00:00.000000Z",
    })
    .await
    .unwrap();
    lite.create_share(&NewShareRecord { id: "s1", ciphertext: b"ct", proof_hash: &[7; 32], expires_at: chrono::Utc::now().timestamp() + 600, views: 2, creator: Some(&p.id), recipient: Some("ops") })
        .await
        .unwrap();
    let log = AuditLog::start(lite.clone(), AuditKey::load(dir.path()).unwrap());
    for i in 0..30 {
        log.append(rec(i, "parent")).await.unwrap();
    }

    let pg = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let first = lite.copy_into(&pg).await.unwrap();
    assert!(first.copied > 30 && first.copied == first.rows, "{first:?}");
    let again = lite.copy_into(&pg).await.unwrap();
    assert_eq!(again.copied, 0, "a second run changed something");
    assert_eq!(again.rows, first.rows);

    // The copy is the store: tokens, secrets, leases, shares and the verified chain.
    assert_eq!(pg.authenticate(ptok.reveal()).await.unwrap().unwrap().id, p.id);
    assert_eq!(pg.get_sealed("DB").await.unwrap(), Some((b"sealed".to_vec(), 1)));
    let l = pg.lease("l1").await.unwrap().unwrap();
    assert!(l.dynamic && l.status == status::PENDING);
    assert_eq!(pg.agent_grants(&c.id).await.unwrap().len(), 1);
    assert!(pg.consume_share("s1", &[7; 32], None).await.unwrap().is_some());
    let r = pg.verify_audit(&pk).await.unwrap();
    assert!(r.ok() && r.records == 30, "{r:?}");
    // The PostgreSQL chain continues from the copied head.
    let pglog = AuditLog::start(pg.clone(), AuditKey::load(dir.path()).unwrap());
    assert_eq!(pglog.append(rec(30, "parent")).await.unwrap(), 31);
    assert!(pg.verify_audit(&pk).await.unwrap().ok());

    // Now the target holds more than the source: refused, and nothing is written.
    let before: (i64,) = sqlx::query_as("SELECT count(*) FROM audit").fetch_one(pg.pg_pool().unwrap()).await.unwrap();
    assert!(matches!(lite.copy_into(&pg).await, Err(StoreError::Conflict(m)) if m.contains("differs")));
    let after: (i64,) = sqlx::query_as("SELECT count(*) FROM audit").fetch_one(pg.pg_pool().unwrap()).await.unwrap();
    assert_eq!(before, after);
    // Backwards is refused too.
    assert!(matches!(pg.copy_into(&lite).await, Err(StoreError::Invalid(_))));
    pg.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_on_two_replicas_are_decided_once_and_used_once() {
    use airlock_store::approvals::{ApprovalStatus, DecideOutcome, NewApproval};
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();

    let (approver, token) = a.add_approver("alice").await.unwrap();
    assert_eq!(b.authenticate_approver(token.reveal()).await.unwrap().map(|x| x.id), Some(approver.id.clone()));
    assert!(matches!(b.add_approver("alice").await, Err(StoreError::Conflict(_))));

    let now = chrono::Utc::now().timestamp_millis();
    let args = serde_json::json!({"query": "DELETE FROM t WHERE id = $1", "params": [7]});
    let chain = vec!["parent".to_owned()];
    a.create_approval(&NewApproval {
        id: "apv1",
        call_hash: &[1u8; 32],
        binding: &[2u8; 32],
        agent_id: "ag1",
        agent_name: "bot",
        parent_chain: &chain,
        tool: "query_db",
        handle: "DB",
        arguments: &args,
        reason: "writes",
        policy_version: "pv1",
        created_at: now,
        expires_at: now + 60_000,
    })
    .await
    .unwrap();
    let seen = b.approval("apv1", now).await.unwrap().unwrap();
    assert_eq!((seen.status, seen.arguments.clone(), seen.parent_chain.clone()), (ApprovalStatus::Pending, args, chain));

    // A decision under another policy version does not land; then exactly one of two does.
    assert_eq!(a.decide_approval("apv1", true, "alice", now, "pv2").await.unwrap(), DecideOutcome::NotPending);
    let (d1, d2) = tokio::join!(a.decide_approval("apv1", true, "alice", now, "pv1"), b.decide_approval("apv1", false, "alice", now, "pv1"));
    let outcomes = [d1.unwrap(), d2.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| **o == DecideOutcome::Decided).count(), 1, "{outcomes:?}");
    if b.approval("apv1", now).await.unwrap().unwrap().status == ApprovalStatus::Approved {
        // 32 concurrent uses over both replicas: one wins; a wrong binding never does.
        assert!(!a.consume_approval("apv1", &[9u8; 32], now).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..32 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move { s.consume_approval("apv1", &[2u8; 32], now).await.unwrap() }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1);
        assert_eq!(a.approval("apv1", now).await.unwrap().unwrap().status, ApprovalStatus::Used);
    } else {
        assert!(!a.consume_approval("apv1", &[2u8; 32], now).await.unwrap(), "a denied approval is never used");
    }
    assert_eq!(b.decide_approval("nope", true, "alice", now, "pv1").await.unwrap(), DecideOutcome::NotFound);
    b.revoke_approver("alice").await.unwrap();
    assert!(a.authenticate_approver(token.reveal()).await.unwrap().is_none());
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn t17_t29_on_postgres_ids_are_never_reused_and_anonymous_shares_are_capped() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let rec = |id: &'static str, creator: Option<&'static str>, expires_in: i64| NewShareRecord {
        id,
        ciphertext: b"ct",
        proof_hash: &[7; 32],
        expires_at: chrono::Utc::now().timestamp() + expires_in,
        views: 1,
        creator,
        recipient: None,
    };
    let ids = ["pg-anon-0", "pg-anon-1", "pg-anon-2", "pg-anon-3", "pg-anon-4"];
    let mut evicted = 0;
    for id in ids {
        evicted += a.create_share_capped(&rec(id, None, 600), Some(2)).await.unwrap();
    }
    assert_eq!(evicted, 3);
    a.create_share_capped(&rec("pg-agent", Some("creator"), 600), Some(2)).await.unwrap();
    assert_eq!(a.share_views_left("pg-anon-0").await.unwrap(), None);
    assert_eq!(a.share_views_left("pg-anon-4").await.unwrap(), Some(1));
    assert_eq!(a.share_views_left("pg-agent").await.unwrap(), Some(1));
    a.consume_share("pg-anon-4", &[7; 32], None).await.unwrap().unwrap();
    a.create_share(&rec("pg-expired", None, -1)).await.unwrap();
    assert_eq!(a.sweep_shares().await.unwrap(), 1);
    for id in ["pg-anon-0", "pg-anon-4", "pg-expired"] {
        assert!(matches!(a.create_share(&rec(id, None, 600)).await, Err(StoreError::Conflict(_))), "{id}");
    }
    assert!(a.share_proof_matches("pg-anon-3", &[7; 32]).await.unwrap());
    assert!(!a.share_proof_matches("pg-anon-3", &[8; 32]).await.unwrap());
    assert!(!a.share_proof_matches("pg-anon-4", &[7; 32]).await.unwrap(), "used");
    a.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t17_a_lost_answer_is_given_again_to_its_attempt_only_on_postgres() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let (url, path) = (db.url.clone(), dir.path().to_owned());
    common::redelivery_is_for_the_attempt_only(&store, || {
        let (u, p) = (url.clone(), path.clone());
        async move { Store::open_postgres(&u, &p).await.unwrap() }
    })
    .await;
    store.close().await;
    db.drop_db().await;
}
