//! Requests for a secret under contention, on SQLite and on PostgreSQL with two replicas: a
//! flood of requests from one agent opens exactly its cap; agents racing for one handle name get
//! one request; racing submits of one link land the value once; a wrong proof, a late submit or
//! a used link stores nothing; an operator's revocation racing with submits leaves no value
//! behind. The broker relies on these for "at most N open requests per
//! agent", "a requested handle never overwrites another" and "the link burns on submit".

mod common;

use airlock_store::requests::{status, value_seal_name, CreateOutcome, LandOutcome, NewRequest};
use airlock_store::Store;
use common::TempDb;

const PROOF: [u8; 32] = [7; 32];

fn new_request<'a>(id: &'a str, agent: &'a str, handle: &'a str, expires_at: i64) -> NewRequest<'a> {
    NewRequest {
        id,
        agent_id: agent,
        agent_name: agent,
        handle,
        kind: "generic",
        context: "{}",
        definition: "",
        tools: "share_secret",
        recipient: "alice",
        proof_hash: &PROOF,
        intake_key: b"sealed-key",
        expires_at,
    }
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

/// `n` creates at once, spread over `stores`; `make(i)` gives the (id, agent, handle) of the
/// i-th. Returns how many were created, refused as too many, and refused as taken.
async fn race_creates(stores: &[Store], n: usize, max_open: i64, make: fn(usize) -> (String, String, String)) -> (usize, usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = stores[i % stores.len()].clone();
        let (id, agent, handle) = make(i);
        tasks.push(tokio::spawn(async move { s.create_request(&new_request(&id, &agent, &handle, in_an_hour()), max_open).await.unwrap() }));
    }
    let mut counts = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created => counts.0 += 1,
            CreateOutcome::TooMany => counts.1 += 1,
            CreateOutcome::HandleTaken => counts.2 += 1,
        }
    }
    counts
}

async fn pending_of(s: &Store, agent: &str) -> i64 {
    let sql = "SELECT count(*) FROM secret_requests WHERE agent_id = 'AGENT' AND status = 'pending'".replace("AGENT", agent);
    match (s.pool(), s.pg_pool()) {
        (Some(p), _) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
        (_, Some(p)) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
        _ => unreachable!("a store has one pool"),
    }
}

/// The properties, on whichever store (or replicas of one store) `stores` are.
async fn contention_holds(stores: &[Store]) {
    let a = &stores[0];
    // One agent floods: 1,000 requests for distinct handles, at most 5 open.
    let (created, too_many, taken) = race_creates(stores, 1000, 5, |i| (format!("flood-{i}"), "flooder".into(), format!("FLOOD_{i}"))).await;
    assert_eq!((created, too_many, taken), (5, 995, 0), "the cap holds under a flood");
    assert_eq!(pending_of(a, "flooder").await, 5);

    // 64 agents race for one handle name: one request names it.
    let (created, too_many, taken) = race_creates(stores, 64, 5, |i| (format!("race-{i}"), format!("agent-{i}"), "CONTESTED".into())).await;
    assert_eq!((created, too_many, taken), (1, 0, 63), "one live request per handle name");
    let owner = a.request_for_handle("CONTESTED").await.unwrap().expect("the winner's request");

    // 64 submits of the winner's link at once: the value lands once.
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let s = stores[i % stores.len()].clone();
        let id = owner.id.clone();
        tasks.push(tokio::spawn(async move { s.land_request(&id, &PROOF, "CONTESTED", format!("value-{i}").as_bytes()).await.unwrap() }));
    }
    let mut landed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap() == LandOutcome::Received {
            landed.push(i);
        }
    }
    assert_eq!(landed.len(), 1, "one submit lands: {landed:?}");
    let (stored, _) = a.get_sealed(&value_seal_name("CONTESTED")).await.unwrap().expect("the landed value");
    assert_eq!(stored, format!("value-{}", landed[0]).into_bytes(), "the value of the submit that was told it landed");
    // A later submit, even with the right proof, changes nothing.
    assert_eq!(a.land_request(&owner.id, &PROOF, "CONTESTED", b"late").await.unwrap(), LandOutcome::Unavailable);
    assert_eq!(a.get_sealed(&value_seal_name("CONTESTED")).await.unwrap().unwrap().0, stored);
    // The name stays taken while the request lives (received).
    let (created, _, taken) = race_creates(stores, 8, 5, |i| (format!("again-{i}"), format!("agent-{i}"), "CONTESTED".into())).await;
    assert_eq!((created, taken), (0, 8));

    // A wrong proof, a handle other than the request's, an expired link: nothing stored.
    let now = chrono::Utc::now().timestamp();
    for (id, handle, expires_at) in [("wrong-proof", "GUARDED", in_an_hour()), ("other-handle", "NAMED", in_an_hour()), ("late", "LATE", now - 1)] {
        assert_eq!(a.create_request(&new_request(id, "careful", handle, expires_at), 5).await.unwrap(), CreateOutcome::Created);
    }
    assert_eq!(a.land_request("wrong-proof", &[8; 32], "GUARDED", b"x").await.unwrap(), LandOutcome::Unavailable);
    assert_eq!(a.land_request("other-handle", &PROOF, "CONTESTED", b"x").await.unwrap(), LandOutcome::Unavailable);
    assert_eq!(a.land_request("late", &PROOF, "LATE", b"x").await.unwrap(), LandOutcome::Unavailable);
    for name in ["GUARDED", "NAMED", "LATE"] {
        assert!(a.get_sealed(&value_seal_name(name)).await.unwrap().is_none(), "{name}: nothing stored");
    }
    assert_eq!(a.get_sealed(&value_seal_name("CONTESTED")).await.unwrap().unwrap().0, stored, "a refused submit touches no other value");
    // The expired link frees its name for a new request (and only the expired one is replaced).
    assert_eq!(a.create_request(&new_request("late-again", "careful", "LATE", in_an_hour()), 5).await.unwrap(), CreateOutcome::Created);
    assert!(a.request("late").await.unwrap().is_none());
    assert_eq!(a.create_request(&new_request("guarded-again", "careful", "GUARDED", in_an_hour()), 5).await.unwrap(), CreateOutcome::HandleTaken);

    // An operator's revocation racing with submits: in whatever order they run, the request
    // ends revoked and no value is left behind.
    for round in 0..20 {
        let (id, handle) = (format!("raced-{round}"), format!("RACED_{round}"));
        assert_eq!(a.create_request(&new_request(&id, "racer", &handle, in_an_hour()), 100).await.unwrap(), CreateOutcome::Created);
        let mut submits = Vec::new();
        for i in 0..8usize {
            let (s, id, handle) = (stores[i % stores.len()].clone(), id.clone(), handle.clone());
            submits.push(tokio::spawn(async move { s.land_request(&id, &PROOF, &handle, b"raced value").await.unwrap() }));
        }
        let revoker = stores[round % stores.len()].clone();
        let revoked = revoker.revoke_request(&id).await.unwrap().expect("a live request is revoked");
        assert_eq!(revoked.status, status::REVOKED);
        let landed = landed_count(submits).await;
        assert!(landed <= 1, "round {round}: {landed} submits landed");
        assert!(a.get_sealed(&value_seal_name(&handle)).await.unwrap().is_none(), "round {round}: a value outlived the revocation");
        assert_eq!(a.request(&id).await.unwrap().unwrap().status, status::REVOKED);
        assert!(a.revoke_request(&id).await.unwrap().is_none(), "revoked once");
    }
}

/// How many of the submits landed.
async fn landed_count(submits: Vec<tokio::task::JoinHandle<LandOutcome>>) -> usize {
    let mut n = 0;
    for t in submits {
        n += usize::from(t.await.unwrap() == LandOutcome::Received);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t22_requests_under_contention_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    contention_holds(std::slice::from_ref(&store)).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t22_requests_under_contention_on_two_postgres_replicas() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let b = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    contention_holds(&[a.clone(), b.clone()]).await;
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

/// A SQLite store holding a requested value under its legacy NUL-separated name is not copied
/// into PostgreSQL (which cannot hold the name) until the value has moved to its current name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_legacy_request_names_block_a_migration_until_they_move() {
    let Some(db) = TempDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let lite = Store::open(dir.path()).await.unwrap();
    let legacy = format!("{}OLD", airlock_store::requests::LEGACY_VALUE_PREFIX);
    lite.put_sealed(&legacy, b"sealed for the old name").await.unwrap();
    assert_eq!(lite.legacy_request_values().await.unwrap().len(), 1);
    let pg = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let e = lite.copy_into(&pg).await.unwrap_err().to_string();
    assert!(e.contains("old names"), "{e}");
    assert!(pg.get_sealed(&value_seal_name("OLD")).await.unwrap().is_none(), "nothing copied");
    assert!(lite.rename_sealed(&legacy, &value_seal_name("OLD"), b"sealed for the new name").await.unwrap());
    assert!(!lite.rename_sealed(&legacy, &value_seal_name("OLD"), b"again").await.unwrap(), "moved once");
    lite.copy_into(&pg).await.unwrap();
    assert_eq!(pg.get_sealed(&value_seal_name("OLD")).await.unwrap().unwrap().0, b"sealed for the new name");
    lite.close().await;
    pg.close().await;
    db.drop_db().await;
}
