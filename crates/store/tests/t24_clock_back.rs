//! The clock set back after something expired (issue 24, item 4): what the store once found
//! expired stays ended. A one-time link a consume found expired, an approval seen lapsed and an
//! agent whose token was refused as expired do not come back when their expiry is in the future
//! again (a clock stepped back by NTP after running ahead). The jump itself, under libfaketime
//! against `airlock serve`, is `tests/t24_clock_jump.rs` in the root package; here the expiry
//! is moved instead of the clock.

use airlock_store::approvals::{ApprovalStatus, DecideOutcome, NewApproval};
use airlock_store::shares::NewShareRecord;
use airlock_store::Store;
use sqlx::Connection;
use std::path::Path;

/// Runs `sql` on the store's SQLite file, as a clock set back would make it look.
async fn rewind(dir: &Path, sql: &str) {
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

#[tokio::test]
async fn t24_an_expired_link_a_consume_found_stays_gone_when_the_clock_goes_back() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let rec = |id: &'static str, expires_at: i64| NewShareRecord {
        id,
        ciphertext: b"ciphertext-bytes",
        proof_hash: &[7; 32],
        expires_at,
        views: 1,
        creator: None,
        recipient: None,
    };
    store.create_share(&rec("seenExpiredSeenExpired", now - 5)).await.unwrap();
    store.create_share(&rec("neverAskedNeverAsked00", now - 5)).await.unwrap();
    assert_eq!(store.consume_share("seenExpiredSeenExpired", &[7; 32], None).await.unwrap(), None);
    // Both expiries an hour ahead again.
    rewind(d.path(), &format!("UPDATE shares SET expires_at = {}", now + 3600)).await;
    assert_eq!(store.consume_share("seenExpiredSeenExpired", &[7; 32], None).await.unwrap(), None, "refused as expired, then opened");
    assert_eq!(store.share_views_left("seenExpiredSeenExpired").await.unwrap(), None);
    // One nobody tried is not ended by this (the sweeper ends it within 30 s).
    assert_eq!(store.share_views_left("neverAskedNeverAsked00").await.unwrap(), Some(1));
}

#[tokio::test]
async fn t24_a_lapsed_approval_is_never_pending_again() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).await.unwrap();
    let (t0, ttl) = (1_000_000_i64, 60_000);
    let args = serde_json::json!({"query": "DELETE FROM t"});
    let new = |id: &'static str, call: &'static [u8]| NewApproval {
        id,
        call_hash: call,
        binding: b"binding",
        agent_id: "agent-id",
        agent_name: "bot",
        parent_chain: &[],
        tool: "query_db",
        handle: "APP",
        arguments: &args,
        reason: "writes",
        policy_version: "v1",
        created_at: t0,
        expires_at: t0 + ttl,
    };
    let later = t0 + 2 * 3600 * 1000;
    // Seen lapsed by the approver's look-up, then the clock back before the expiry.
    store.create_approval(&new("held", b"call-1")).await.unwrap();
    assert_eq!(store.approval("held", later).await.unwrap().unwrap().status, ApprovalStatus::Expired);
    assert_eq!(store.approval("held", t0 + 1).await.unwrap().unwrap().status, ApprovalStatus::Expired);
    assert_eq!(store.decide_approval("held", true, "alice", t0 + 1, "v1").await.unwrap(), DecideOutcome::NotPending);
    assert!(store.approvals_for_call(b"call-1", t0 + 1).await.unwrap().is_empty());
    assert!(store.pending_approvals(t0 + 1).await.unwrap().is_empty());
    // Seen lapsed by the agent's repeated call (the look-up by call); approved before, never used.
    store.create_approval(&new("approved", b"call-2")).await.unwrap();
    assert_eq!(store.decide_approval("approved", true, "alice", t0 + 1, "v1").await.unwrap(), DecideOutcome::Decided);
    assert!(store.approvals_for_call(b"call-2", later).await.unwrap().is_empty());
    assert!(!store.consume_approval("approved", b"binding", t0 + 2).await.unwrap(), "a lapsed approval ran its call");
    // A refused decision and a refused use end it too.
    store.create_approval(&new("decided-late", b"call-3")).await.unwrap();
    assert_eq!(store.decide_approval("decided-late", true, "alice", later, "v1").await.unwrap(), DecideOutcome::NotPending);
    assert_eq!(store.decide_approval("decided-late", true, "alice", t0 + 1, "v1").await.unwrap(), DecideOutcome::NotPending);
    // One that was never looked at after its expiry is still pending when the clock is back.
    store.create_approval(&new("untouched", b"call-4")).await.unwrap();
    assert_eq!(store.approval("untouched", t0 + 1).await.unwrap().unwrap().status, ApprovalStatus::Pending);
}

#[tokio::test]
async fn t24_an_agent_refused_as_expired_stays_refused_when_the_clock_goes_back() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).await.unwrap();
    let past = airlock_store::leases::stamp(chrono::Utc::now() - chrono::Duration::seconds(5));
    let (parent, _) = store.add_agent("parent", None, None).await.unwrap();
    let (kid, token) = store.add_agent("kid", Some(&parent.id), Some(&past)).await.unwrap();
    assert!(store.authenticate(token.reveal()).await.unwrap().is_none());
    let ahead = airlock_store::leases::stamp(chrono::Utc::now() + chrono::Duration::seconds(3600));
    rewind(d.path(), &format!("UPDATE agents SET expires_at = '{ahead}' WHERE id = '{}'", kid.id)).await;
    assert!(store.authenticate(token.reveal()).await.unwrap().is_none(), "refused as expired, then authenticated");
}
