//! T17 at the store: a share burns only for its proof, atomically, and survives a restart.

#[allow(dead_code)] // the helpers of the other store tests
mod common;

use airlock_store::shares::NewShareRecord;
use airlock_store::Store;
use std::sync::Arc;

fn hash(b: u8) -> [u8; 32] {
    [b; 32]
}

async fn put(store: &Store, id: &str, views: u32, expires_in: i64) {
    store
        .create_share(&NewShareRecord {
            id,
            ciphertext: b"ciphertext-bytes",
            proof_hash: &hash(7),
            expires_at: chrono::Utc::now().timestamp() + expires_in,
            views,
            creator: None,
            recipient: None,
        })
        .await
        .unwrap();
}

async fn race(store: &Store, id: &str, n: usize, proof: [u8; 32]) -> usize {
    let store = Arc::new(store.clone());
    let mut tasks = Vec::new();
    for _ in 0..n {
        let s = store.clone();
        let id = id.to_owned();
        tasks.push(tokio::spawn(async move { s.consume_share(&id, &proof, None).await.unwrap().is_some() }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_64_concurrent_consumers_of_a_single_view_share_give_exactly_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    put(&store, "AAAAAAAAAAAAAAAAAAAAAA", 1, 3600).await;
    assert_eq!(race(&store, "AAAAAAAAAAAAAAAAAAAAAA", 64, hash(7)).await, 1);
    assert_eq!(store.share_views_left("AAAAAAAAAAAAAAAAAAAAAA").await.unwrap(), None, "wiped at its last view");
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM shares WHERE length(ciphertext) > 0 OR length(proof_hash) > 0")
        .fetch_one(store.pool().unwrap())
        .await
        .unwrap();
    assert_eq!(n.0, 0, "only a tombstone is left: no ciphertext, no proof hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_exactly_views_successes_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).await.unwrap();
        put(&store, "BBBBBBBBBBBBBBBBBBBBBB", 1, 3600).await;
        put(&store, "CCCCCCCCCCCCCCCCCCCCCC", 3, 3600).await;
        assert!(store.consume_share("CCCCCCCCCCCCCCCCCCCCCC", &hash(7), None).await.unwrap().is_some());
        store.close().await;
    }
    let store = Store::open(dir.path()).await.unwrap();
    assert_eq!(store.share_views_left("CCCCCCCCCCCCCCCCCCCCCC").await.unwrap(), Some(2));
    assert_eq!(race(&store, "BBBBBBBBBBBBBBBBBBBBBB", 64, hash(7)).await, 1);
    assert_eq!(race(&store, "CCCCCCCCCCCCCCCCCCCCCC", 64, hash(7)).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_wrong_proofs_burn_nothing_even_a_thousand_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    put(&store, "DDDDDDDDDDDDDDDDDDDDDD", 2, 3600).await;
    assert_eq!(race(&store, "DDDDDDDDDDDDDDDDDDDDDD", 1000, hash(8)).await, 0);
    assert_eq!(store.share_views_left("DDDDDDDDDDDDDDDDDDDDDD").await.unwrap(), Some(2));
    let c = store.consume_share("DDDDDDDDDDDDDDDDDDDDDD", &hash(7), None).await.unwrap().unwrap();
    assert_eq!((c.views, c.views_left, c.ciphertext.as_slice()), (2, 1, &b"ciphertext-bytes"[..]));
}

#[tokio::test]
async fn t17_expired_and_unknown_are_alike_and_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    put(&store, "EEEEEEEEEEEEEEEEEEEEEE", 1, -1).await;
    put(&store, "HHHHHHHHHHHHHHHHHHHHHH", 1, -1).await;
    assert_eq!(store.consume_share("EEEEEEEEEEEEEEEEEEEEEE", &hash(7), None).await.unwrap(), None);
    assert_eq!(store.consume_share("FFFFFFFFFFFFFFFFFFFFFF", &hash(7), None).await.unwrap(), None);
    // The consume that found it expired already made it a tombstone; the sweeper ends the other.
    assert_eq!(store.sweep_shares().await.unwrap(), 1);
    assert_eq!(store.share_views_left("HHHHHHHHHHHHHHHHHHHHHH").await.unwrap(), None);
    let dup = store
        .create_share(&NewShareRecord {
            id: "GGGGGGGGGGGGGGGGGGGGGG",
            ciphertext: b"x",
            proof_hash: &hash(1),
            expires_at: chrono::Utc::now().timestamp() + 60,
            views: 1,
            creator: Some("agent1"),
            recipient: Some("alice"),
        })
        .await;
    assert!(dup.is_ok());
    let r = store.share_receipt("GGGGGGGGGGGGGGGGGGGGGG", "agent1").await.unwrap().unwrap();
    assert_eq!((r.views_used, r.first_opened_at), (0, None));
    assert!(store.share_receipt("GGGGGGGGGGGGGGGGGGGGGG", "agent2").await.unwrap().is_none(), "only the creator");
    store.consume_share("GGGGGGGGGGGGGGGGGGGGGG", &hash(1), None).await.unwrap().unwrap();
    let r = store.share_receipt("GGGGGGGGGGGGGGGGGGGGGG", "agent1").await.unwrap().unwrap();
    assert_eq!(r.views_used, 1);
    assert!(r.first_opened_at.is_some());
}

async fn put_as(store: &Store, id: &str, creator: Option<&str>, cap: Option<u64>) -> airlock_store::Result<u64> {
    store
        .create_share_capped(
            &NewShareRecord {
                id,
                ciphertext: b"ct",
                proof_hash: &hash(7),
                expires_at: chrono::Utc::now().timestamp() + 3600,
                views: 1,
                creator,
                recipient: None,
            },
            cap,
        )
        .await
}

#[tokio::test]
async fn t17_t29_a_used_expired_deleted_or_swept_share_id_can_never_be_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    put(&store, "HHHHHHHHHHHHHHHHHHHHHH", 1, 3600).await;
    store.consume_share("HHHHHHHHHHHHHHHHHHHHHH", &hash(7), None).await.unwrap().unwrap();
    put(&store, "IIIIIIIIIIIIIIIIIIIIII", 1, -1).await;
    put(&store, "JJJJJJJJJJJJJJJJJJJJJJ", 1, 3600).await;
    store.delete_share("JJJJJJJJJJJJJJJJJJJJJJ").await.unwrap();
    assert_eq!(store.sweep_shares().await.unwrap(), 1, "the expired one");
    assert_eq!(store.sweep_shares().await.unwrap(), 0, "tombstones are not swept again");
    for id in ["HHHHHHHHHHHHHHHHHHHHHH", "IIIIIIIIIIIIIIIIIIIIII", "JJJJJJJJJJJJJJJJJJJJJJ"] {
        for creator in [None, Some("agent1")] {
            let again = put_as(&store, id, creator, None).await;
            assert!(matches!(again, Err(airlock_store::StoreError::Conflict(_))), "{id} {creator:?}: {again:?}");
        }
        assert_eq!(store.consume_share(id, &hash(7), None).await.unwrap(), None, "{id}");
        assert_eq!(store.share_views_left(id).await.unwrap(), None, "{id}");
    }
    // Nothing readable is kept in a tombstone.
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM shares WHERE length(ciphertext) > 0").fetch_one(store.pool().unwrap()).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn t29_shares_without_an_agent_stay_within_the_cap_oldest_evicted_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let id = |i: usize| format!("{i:0>22}");
    let mut evicted = 0;
    for i in 0..500 {
        evicted += put_as(&store, &id(i), None, Some(20)).await.unwrap();
    }
    assert_eq!(evicted, 480);
    // Agents' shares are not counted and never evicted by anonymous ones.
    put_as(&store, "agent-share-0000000000", Some("agent1"), Some(20)).await.unwrap();
    assert_eq!(put_as(&store, &id(500), None, Some(20)).await.unwrap(), 1);
    let (live,): (i64,) = sqlx::query_as("SELECT count(*) FROM shares WHERE views_left > 0").fetch_one(store.pool().unwrap()).await.unwrap();
    assert_eq!(live, 21, "20 anonymous and the agent's");
    assert_eq!(store.share_views_left("agent-share-0000000000").await.unwrap(), Some(1));
    assert_eq!(store.share_views_left(&id(480)).await.unwrap(), None, "the oldest went first");
    assert_eq!(store.share_views_left(&id(500)).await.unwrap(), Some(1));
    // An evicted id stays taken.
    assert!(matches!(put_as(&store, &id(0), None, Some(20)).await, Err(airlock_store::StoreError::Conflict(_))));
}

#[tokio::test]
async fn t17_a_lost_answer_is_given_again_to_its_attempt_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let path = dir.path().to_owned();
    common::redelivery_is_for_the_attempt_only(&store, || {
        let p = path.clone();
        async move { Store::open(&p).await.unwrap() }
    })
    .await;
}
