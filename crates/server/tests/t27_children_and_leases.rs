//! T27: a sub-agent or a lease outliving or widening its grant. Children share their parents'
//! call budget and are bounded in number, depth and creation rate; a lease is re-checked against
//! the current grants at every use and revoked (its role dropped) when its grant is gone; every
//! revocation is audited with who revoked and why. The lease tests use the machine's PostgreSQL
//! and skip when it is down, unless AIRLOCK_REQUIRE_SERVICES=1, when they fail.

mod common;

use airlock_core::Secret;
use airlock_vault::{MasterKey, Vault};
use common::*;
use serde_json::{json, Value};
use sqlx::Connection;
use std::sync::Arc;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn post(f: &Fixture, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = f.client.post(format!("{}{path}", f.base)).bearer_auth(token).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Creates a child of `token`'s agent with query_db on APP_DB; returns (status, body).
async fn child(f: &Fixture, token: &str, name: &str) -> (u16, Value) {
    post(f, token, "/v1/agents/self/children", json!({"name": name, "grants": [{"handle": "APP_DB", "tools": ["query_db"]}]})).await
}

fn token_of(v: &Value) -> String {
    v["result"]["token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_owned()
}

async fn query(f: &Fixture, token: &str) -> (u16, Value) {
    f.invoke_as(token, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT id FROM orders"})).await
}

/// The fixture with `extra` lines added to `[agents.bot]` and `limits` to `[limits]`.
async fn start(extra: &'static str, limits: &'static str) -> Fixture {
    Fixture::start_with(move |t| {
        t.replacen("[agents.bot]\n", &format!("[agents.bot]\n{extra}\n"), 1)
            .replacen("rate_per_minute = 100000\n", &format!("rate_per_minute = 100000\n{limits}\n"), 1)
    })
    .await
}

#[tokio::test]
async fn t27_a_childs_calls_spend_its_parents_budget() {
    // The child's own configured rate (50) is clamped to its parent's (5).
    let f = start("rate_per_minute = 5\nchild_rate_per_minute = 50", "").await;
    let (s, v) = child(&f, &f.token, "worker").await;
    assert_eq!(s, 200, "{v}");
    let worker = token_of(&v);
    let (s, v) = child(&f, &worker, "helper").await;
    assert_eq!(s, 200, "{v}");
    let helper = token_of(&v);
    for t in [&helper, &helper, &worker, &helper, &worker] {
        let (s, v) = query(&f, t).await;
        assert_eq!(s, 200, "{v}");
    }
    // Five calls by the descendants spent the root's five.
    for t in [&helper, &worker, &f.token] {
        let (s, v) = query(&f, t).await;
        assert_eq!((s, code(&v)), (429, "rate-limited"), "{v}");
    }
    // Another configured agent has its own budget.
    let (s, _) = f.invoke_as(&f.other_token, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"})).await;
    assert_eq!(s, 200);
    assert!(f.broker.metrics().encode().contains("rate_limiter_keys"), "the limiter's size is exported");
}

#[tokio::test]
async fn t27_a_child_never_gets_a_wider_budget_than_configured_for_children() {
    let f = start("child_rate_per_minute = 2", "").await;
    let (_, v) = child(&f, &f.token, "worker").await;
    let worker = token_of(&v);
    for _ in 0..2 {
        assert_eq!(query(&f, &worker).await.0, 200);
    }
    let (s, v) = query(&f, &worker).await;
    assert_eq!((s, code(&v)), (429, "rate-limited"));
    // The parent still has its own.
    assert_eq!(query(&f, &f.token).await.0, 200);
}

#[tokio::test]
async fn t27_live_children_and_depth_are_limited() {
    let f = start("max_children = 2\nmax_child_depth = 2", "").await;
    let (s, v) = child(&f, &f.token, "c1").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = child(&f, &f.token, "c2").await;
    assert_eq!(s, 200, "{v}");
    let c2 = token_of(&v);
    let (s, v) = child(&f, &f.token, "c3").await;
    assert_eq!((s, code(&v)), (403, "child-limit"), "{v}");
    // A revoked child no longer counts.
    f.broker.revoke_agent("c1").await.unwrap();
    let (s, v) = child(&f, &f.token, "c3").await;
    assert_eq!(s, 200, "{v}");
    // Depth: bot → c2 → g1 is 2 deep; a child of g1 would be 3.
    let (s, v) = child(&f, &c2, "g1").await;
    assert_eq!(s, 200, "{v}");
    let g1 = token_of(&v);
    let (s, v) = child(&f, &g1, "gg").await;
    assert_eq!((s, code(&v)), (403, "child-limit"), "{v}");
    // Each refusal is audited like any other.
    let tail = f.store.audit_tail(1).await.unwrap();
    assert_eq!((tail[0].1.tool.as_str(), tail[0].1.code.as_deref()), ("create_child", Some("child-limit")));
}

#[tokio::test]
async fn t27_concurrent_creations_never_pass_the_live_children_limit() {
    let f = Arc::new(start("max_children = 3", "children_per_minute = 1000").await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move { child(&f, &f.token, &format!("w{i}")).await }));
    }
    let mut ok = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s {
            200 => ok += 1,
            _ => assert_eq!(code(&v), "child-limit", "{v}"),
        }
    }
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn t27_child_creation_is_rate_limited_over_the_chain() {
    let f = start("", "children_per_minute = 3").await;
    let (s, v) = child(&f, &f.token, "a").await;
    assert_eq!(s, 200, "{v}");
    let a = token_of(&v);
    assert_eq!(child(&f, &a, "b").await.0, 200);
    assert_eq!(child(&f, &f.token, "c").await.0, 200);
    // Three creations in the tree spent the root's budget: neither the root nor its child
    // may create more.
    for t in [&f.token, &a] {
        let (s, v) = child(&f, t, "d").await;
        assert_eq!((s, code(&v)), (429, "rate-limited"), "{v}");
    }
}

// ---- leases: re-checked at every use, revoked and audited when their grant is gone ----

fn lease_config(t: String, table: &str, leaser_grants: &str) -> String {
    format!(
        r#"{t}
[handles.PGL]
kind = "postgres"
secret = "local:PGL"
[handles.PGL.database]
scope = "read_write"
tables = ["{table}"]
[handles.PGL.lease]
dynamic = true
max_ttl_seconds = 600
scopes = ["read_only"]

[agents.leaser]
grants = [{leaser_grants}]
"#
    )
}

const ALL_GRANTS: &str = r#"{ handle = "PGL", tools = ["query_db", "request_lease"] }"#;

struct Env {
    f: Fixture,
    leaser: String,
    table: String,
}

async fn setup(tag: &str) -> Env {
    let table = format!("t27_{tag}_{}", std::process::id());
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1);"))
        .execute(&mut c)
        .await
        .unwrap();
    let t2 = table.clone();
    let f = Fixture::start_with(move |t| lease_config(t, &t2, ALL_GRANTS)).await;
    let data = f.dir.path().join("data");
    let v = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), f.store.clone());
    v.put("PGL", &Secret::from_str_value(PG)).await.unwrap();
    f.broker.refresh().await.unwrap();
    let (_, l) = f.store.add_agent("leaser", None, None).await.unwrap();
    Env { f, leaser: l.reveal().to_owned(), table }
}

async fn role_exists(role: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(role).fetch_one(&mut c).await.unwrap();
    n == 1
}

/// Issues a lease as `token`: (lease id, lease handle, role name).
async fn lease(e: &Env, token: &str) -> (String, String, String) {
    let body = json!({"credential_handle": "PGL", "scope": "read_only", "ttl_seconds": 300, "tables": [e.table]});
    let (s, v) = post(&e.f, token, "/v1/leases", body).await;
    assert_eq!(s, 200, "{v}");
    let id = v["result"]["lease_id"].as_str().unwrap().to_owned();
    let role = e.f.store.lease(&id).await.unwrap().unwrap().role_name.unwrap();
    assert!(role_exists(&role).await);
    (id, v["result"]["lease_handle"].as_str().unwrap().to_owned(), role)
}

fn lease_query(e: &Env, handle: &str) -> Value {
    json!({"credential_handle": handle, "query": format!("SELECT id FROM {}", e.table)})
}

/// The audit records written so far with tool `event`.
async fn audited(f: &Fixture, event: &str) -> Vec<airlock_store::audit::AuditRecord> {
    f.store.audit_tail(200).await.unwrap().into_iter().map(|(_, r)| r).filter(|r| r.tool == event).collect()
}

#[tokio::test]
async fn t27_removing_a_childs_grant_revokes_its_lease_at_the_next_use() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("child").await;
    let f = &e.f;
    let (s, v) = post(f, &e.leaser, "/v1/agents/self/children", json!({"name": "worker", "grants": [{"handle": "PGL", "tools": ["request_lease"]}]})).await;
    assert_eq!(s, 200, "{v}");
    let (worker, worker_id) = (token_of(&v), v["result"]["agent_id"].as_str().unwrap().to_owned());
    let (id, handle, role) = lease(&e, &worker).await;
    let (s, v) = f.invoke_as(&worker, "query_db", lease_query(&e, &handle)).await;
    assert_eq!(s, 200, "{v}");

    // The grant that allowed the lease is removed: the next use fails at once, and the lease
    // is revoked with its role.
    f.store.set_agent_grants(&worker_id, &[("PGL".into(), "query_db".into())]).await.unwrap();
    let (s, v) = f.invoke_as(&worker, "query_db", lease_query(&e, &handle)).await;
    assert_eq!((s, code(&v)), (403, "lease-revoked"), "{v}");
    assert_eq!(f.store.lease(&id).await.unwrap().unwrap().status, "revoked");
    assert!(!role_exists(&role).await, "the lease's role was dropped");
    let (s, v) = f.invoke_as(&worker, "query_db", lease_query(&e, &handle)).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));

    // The revocation is in the audit: what, by whom, why.
    let recs = audited(f, "lease_revoked").await;
    let r = recs.iter().find(|r| r.arguments["lease_id"] == json!(id)).expect("a lease_revoked record");
    assert_eq!(r.agent, "broker");
    assert_eq!(r.handle.as_deref(), Some(handle.as_str()));
    assert_eq!(r.arguments["revoked_by"], "broker");
    assert!(r.arguments["reason"].as_str().unwrap().contains("grant"), "{}", r.arguments);
    assert_eq!(r.outcome, "ok");
}

#[tokio::test]
async fn t27_a_grant_removed_from_the_configuration_revokes_the_lease_after_a_restart() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("config").await;
    let f = &e.f;
    let (id, handle, role) = lease(&e, &e.leaser).await;
    // The operator takes request_lease away and restarts the broker.
    let path = f.dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(ALL_GRANTS, r#"{ handle = "PGL", tools = ["query_db"] }"#);
    std::fs::write(&path, text).unwrap();
    let b2 = Arc::new(airlock_server::Broker::open(airlock_core::config::Config::load(&path).unwrap()).await.unwrap());
    let caller = b2.authenticate(Some(&e.leaser)).await.unwrap();
    let inv = b2.invoke(&caller, "query_db", lease_query(&e, &handle)).await;
    assert_eq!(inv.result.unwrap_err().code.as_str(), "lease-revoked");
    assert_eq!(f.store.lease(&id).await.unwrap().unwrap().status, "revoked");
    assert!(!role_exists(&role).await);
}

#[tokio::test]
async fn t27_revoking_an_agent_is_audited_with_its_leases_and_descendants() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("revoke").await;
    let f = &e.f;
    let (s, v) = post(f, &e.leaser, "/v1/agents/self/children", json!({"name": "worker", "grants": [{"handle": "PGL", "tools": ["request_lease"]}]})).await;
    assert_eq!(s, 200, "{v}");
    let worker = token_of(&v);
    let (own, _, own_role) = lease(&e, &e.leaser).await;
    let (childs, _, child_role) = lease(&e, &worker).await;
    // The agent revokes one of its own leases: audited with the agent as the revoker.
    let r = f.client.delete(format!("{}/v1/leases/{own}", f.base)).bearer_auth(&e.leaser).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!role_exists(&own_role).await);
    let recs = audited(f, "lease_revoked").await;
    let r = recs.iter().find(|r| r.arguments["lease_id"] == json!(own)).expect("own lease revocation audited");
    assert_eq!((r.agent.as_str(), r.arguments["reason"].as_str()), ("leaser", Some("revoked by its agent")));

    // The operator revokes the parent: the child goes too, and the child's lease.
    assert_eq!(f.broker.revoke_agent("leaser").await.unwrap(), 2);
    let (s, _) = f.invoke_as(&worker, "query_db", json!({"credential_handle": "PGL", "query": "SELECT 1"})).await;
    assert_eq!(s, 401);
    assert!(!role_exists(&child_role).await);
    let recs = audited(f, "agent_revoked").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].agent, "operator");
    assert_eq!(recs[0].arguments["agents"], json!(["leaser", "worker"]));
    assert_eq!(recs[0].arguments["revoked"], 2);
    assert_eq!(recs[0].arguments["reason"], "revoked by the operator");
    let recs = audited(f, "lease_revoked").await;
    let r = recs.iter().find(|r| r.arguments["lease_id"] == json!(childs)).expect("the child's lease revocation audited");
    assert_eq!(r.agent, "operator");
    assert!(r.arguments["reason"].as_str().unwrap().starts_with("agent leaser was revoked"), "{}", r.arguments);
    // The chain of records, revocations included, verifies.
    let pk = airlock_store::audit::AuditKey::load_public(&f.dir.path().join("data")).unwrap();
    assert!(f.store.verify_audit(&pk).await.unwrap().ok());
}
