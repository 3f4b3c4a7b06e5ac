//! T15/T27 with identities kept in memory: a known token authenticates without the store, and
//! nothing kept outlives a revocation, an expiry or a changed grant (at once when made through
//! this broker, within `IDENTITY_RECHECK` when made by another process).

mod common;

use airlock_server::broker::IDENTITY_RECHECK;
use common::{code, Fixture};
use serde_json::{json, Value};

async fn tools(f: &Fixture, token: &str) -> u16 {
    f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(token).send().await.unwrap().status().as_u16()
}

async fn select(f: &Fixture, token: &str) -> (u16, Value) {
    f.invoke_as(token, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT id FROM orders"})).await
}

#[tokio::test]
async fn t15_a_known_token_is_kept_and_a_wrong_secret_under_its_id_is_still_refused() {
    let f = Fixture::start().await;
    assert_eq!(f.broker.identities_kept(), 0);
    assert_eq!(select(&f, &f.token).await.0, 200);
    assert_eq!(f.broker.identities_kept(), 1);
    assert_eq!(select(&f, &f.token).await.0, 200);
    assert_eq!(f.broker.identities_kept(), 1, "the second call used what was kept");
    // The same agent id with any other tail: refused, and what is kept is unchanged.
    let (id_part, tail) = f.token.rsplit_once('_').unwrap();
    for forged in [
        format!("{id_part}_{}", "A".repeat(tail.len())),
        format!("{id_part}_{}", &tail[..tail.len() - 1]),
        format!("{id_part}_{tail}x"),
        format!("{id_part}_"),
    ] {
        let (s, v) = select(&f, &forged).await;
        assert_eq!((s, code(&v)), (401, "unauthenticated"), "{forged}");
    }
    assert_eq!(select(&f, &f.token).await.0, 200);
}

#[tokio::test]
async fn t15_a_revocation_through_the_broker_ends_the_kept_identity_at_once() {
    let f = Fixture::start().await;
    assert_eq!(select(&f, &f.token).await.0, 200);
    assert_eq!(select(&f, &f.other_token).await.0, 403, "other has no grant on APP_DB");
    f.broker.revoke_agent("bot").await.unwrap();
    let (s, v) = select(&f, &f.token).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"));
    assert_eq!(tools(&f, &f.other_token).await, 200, "another agent is unaffected");
}

#[tokio::test]
async fn t15_a_revocation_by_another_process_ends_the_kept_identity_within_the_recheck() {
    let f = Fixture::start().await;
    // The fixture's store is another pool on the same file: as the CLI, or another replica.
    let elsewhere = &f.store;
    assert_eq!(select(&f, &f.token).await.0, 200);
    assert_eq!(select(&f, &f.token).await.0, 200);
    elsewhere.revoke_agent("bot").await.unwrap();
    tokio::time::sleep(IDENTITY_RECHECK).await;
    let (s, v) = select(&f, &f.token).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"));
    assert_eq!(tools(&f, &f.token).await, 401);
    assert_eq!(tools(&f, &f.other_token).await, 200);
}

#[tokio::test]
async fn t27_a_sub_agent_whose_grants_change_elsewhere_gets_the_new_grants_within_the_recheck() {
    let f = Fixture::start().await;
    let r = f
        .client
        .post(format!("{}/v1/agents/self/children", f.base))
        .bearer_auth(&f.token)
        .json(&json!({"name": "kid", "grants": [{"handle": "APP_DB", "tools": ["query_db"]}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let (kid, kid_id) = (v["result"]["token"].as_str().unwrap().to_owned(), v["result"]["agent_id"].as_str().unwrap().to_owned());
    assert_eq!(select(&f, &kid).await.0, 200);
    assert_eq!(select(&f, &kid).await.0, 200);
    let elsewhere = &f.store;
    elsewhere.set_agent_grants(&kid_id, &[("API".into(), "http_request".into())]).await.unwrap();
    tokio::time::sleep(IDENTITY_RECHECK).await;
    let (s, v) = select(&f, &kid).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "{v}");
    // The parent revoked elsewhere takes the child with it.
    elsewhere.revoke_agent("bot").await.unwrap();
    tokio::time::sleep(IDENTITY_RECHECK).await;
    assert_eq!(tools(&f, &kid).await, 401);
}

#[tokio::test]
async fn t15_an_expired_agent_is_refused_though_nothing_in_the_store_changed() {
    let f = Fixture::start().await;
    let exp = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, token) = f.store.add_agent("brief", None, Some(&exp)).await.unwrap();
    let token = token.reveal().to_owned();
    assert_eq!(tools(&f, &token).await, 200);
    assert_eq!(tools(&f, &token).await, 200);
    assert_eq!(f.broker.identities_kept(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(tools(&f, &token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_a_token_rotated_with_an_overlap_fails_no_call_and_stops_when_the_overlap_ends() {
    let f = std::sync::Arc::new(Fixture::start().await);
    let old = f.token.clone();
    // Four callers on the old token until each sees the new one, which they pick up as soon as
    // it is printed; every call on the way must succeed.
    let current = std::sync::Arc::new(std::sync::RwLock::new(old.clone()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (f, current, stop) = (f.clone(), current.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = current.read().unwrap().clone();
                let (s, v) = select(&f, &t).await;
                if s == 200 {
                    ok += 1;
                } else {
                    failed.push(v);
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (a, new) = f.broker.rotate_agent_token("bot", std::time::Duration::from_secs(2)).await.unwrap();
    assert_eq!(a.name, "bot");
    let new = new.reveal().to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with(&format!("alk_{}_", a.id)), "same agent id, new secret");
    // Some callers still use the old token for a while.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    *current.write().unwrap() = new.clone();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in callers {
        let (ok, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "a call failed during the rotation: {failed:?}");
        total += ok;
    }
    assert!(total > 20, "{total} calls");
    // Both work during the overlap; after it, only the new one, kept or not.
    assert_eq!(select(&f, &old).await.0, 200);
    assert_eq!(select(&f, &new).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, v) = select(&f, &old).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"));
    assert_eq!(select(&f, &new).await.0, 200);
    // The rotation is audited, with no token.
    let recs = f.store.audit_tail(10_000).await.unwrap();
    let rot = recs.iter().map(|(_, r)| r).find(|r| r.tool == "agent_token_rotated").expect("audited");
    assert_eq!(rot.arguments["agent"], "bot");
    assert_eq!(rot.arguments["overlap_seconds"], 2);
    for (_, r) in &recs {
        let body = serde_json::to_string(r).unwrap();
        assert!(!body.contains(&old) && !body.contains(&new));
    }

    // No overlap: the token it replaces stops at once, and so does the one before.
    let (_, newer) = f.broker.rotate_agent_token("bot", std::time::Duration::ZERO).await.unwrap();
    let newer = newer.reveal().to_owned();
    for t in [&new, &old] {
        let (s, v) = select(&f, t).await;
        assert_eq!((s, code(&v)), (401, "unauthenticated"));
    }
    assert_eq!(select(&f, &newer).await.0, 200);
    // A rotation with an overlap, then another: only the latest previous token overlaps.
    let (_, n2) = f.broker.rotate_agent_token("bot", std::time::Duration::from_secs(60)).await.unwrap();
    let (_, n3) = f.broker.rotate_agent_token("bot", std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(select(&f, &newer).await.0, 401, "two rotations back");
    assert_eq!(select(&f, n2.reveal()).await.0, 200);
    assert_eq!(select(&f, n3.reveal()).await.0, 200);
    // An unknown or revoked agent has nothing to rotate.
    assert!(f.broker.rotate_agent_token("nobody", std::time::Duration::ZERO).await.is_err());
    f.broker.revoke_agent("other").await.unwrap();
    assert!(f.broker.rotate_agent_token("other", std::time::Duration::ZERO).await.is_err());
}
