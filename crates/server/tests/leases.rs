//! Leases, tasks and sub-agents through the REST API, with real roles on the machine's
//! PostgreSQL and MariaDB (T15, T16). Skips when a server is down, unless
//! AIRLOCK_REQUIRE_SERVICES=1, when it fails.
#![allow(clippy::disallowed_methods, reason = "the test connects to the database as the lease, with the DSN it was issued")]

mod common;

use airlock_core::config::SecretRef;
use airlock_core::Secret;
use airlock_vault::{MasterKey, Vault};
use common::*;
use serde_json::{json, Value};
use sqlx::Connection;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY: &str = "mysql://root@127.0.0.1:3306/test";

/// Config: a dynamic PostgreSQL handle (read_write base, two tables), a read-only one, a
/// dynamic MariaDB handle, and agents that may lease them.
fn with_lease_handles(t: String, ta: &str, tb: &str) -> String {
    format!(
        r#"{t}
[handles.PGL]
kind = "postgres"
secret = "local:PGL"
[handles.PGL.database]
scope = "read_write"
tables = ["{ta}", "{tb}"]
[handles.PGL.lease]
dynamic = true
max_ttl_seconds = 600
agent_max_ttl_seconds = {{ leaser = 120 }}
scopes = ["read_only", "read_write"]

[handles.PGRO]
kind = "postgres"
secret = "local:PGL"
[handles.PGRO.database]
tables = ["{ta}"]
[handles.PGRO.lease]
dynamic = true

[handles.MYL]
kind = "mysql"
secret = "local:MYL"
[handles.MYL.database]
scope = "read_write"
tables = ["{ta}", "{tb}"]
[handles.MYL.lease]
dynamic = true
scopes = ["read_only", "read_write"]

[agents.leaser]
grants = [
  {{ handle = "PGL", tools = ["query_db", "request_lease"] }},
  {{ handle = "PGRO", tools = ["request_lease"] }},
  {{ handle = "MYL", tools = ["request_lease"] }},
]

[agents.thief]
grants = [{{ handle = "PGL", tools = ["query_db"] }}]
"#
    )
}

struct Env {
    f: Fixture,
    leaser: String,
    thief: String,
    ta: String,
    tb: String,
}

async fn setup(tag: &str, pg: bool, my: bool) -> Env {
    // Tests of one binary run in parallel: each has its own tables.
    let ta = format!("lease_a_{tag}_{}", std::process::id());
    let tb = format!("lease_b_{tag}_{}", std::process::id());
    if pg {
        let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {ta}; DROP TABLE IF EXISTS {tb};
             CREATE TABLE {ta} (id int, v text); CREATE TABLE {tb} (id int, v text);
             INSERT INTO {ta} VALUES (1, 'a1'), (2, 'a2'); INSERT INTO {tb} VALUES (1, 'b1');"
        ))
        .execute(&mut c)
        .await
        .unwrap();
    }
    if my {
        let mut c = sqlx::MySqlConnection::connect(MY).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {ta}; DROP TABLE IF EXISTS {tb};
             CREATE TABLE {ta} (id int, v text); CREATE TABLE {tb} (id int, v text);
             INSERT INTO {ta} VALUES (1, 'a1'), (2, 'a2'); INSERT INTO {tb} VALUES (1, 'b1');"
        ))
        .execute(&mut c)
        .await
        .unwrap();
    }
    let (a, b) = (ta.clone(), tb.clone());
    let f = Fixture::start_with(move |t| with_lease_handles(t, &a, &b)).await;
    let v = vault(&f);
    v.put("PGL", &Secret::from_str_value(PG)).await.unwrap();
    v.put("MYL", &Secret::from_str_value(MY)).await.unwrap();
    f.broker.refresh().await.unwrap();
    let (_, l) = f.store.add_agent("leaser", None, None).await.unwrap();
    let (_, t) = f.store.add_agent("thief", None, None).await.unwrap();
    Env { leaser: l.reveal().to_owned(), thief: t.reveal().to_owned(), f, ta, tb }
}

fn vault(f: &Fixture) -> Vault {
    let data = f.dir.path().join("data");
    Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), f.store.clone())
}

async fn post(f: &Fixture, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = f.client.post(format!("{}{path}", f.base)).bearer_auth(token).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn delete(f: &Fixture, token: &str, path: &str) -> (u16, Value) {
    let r = f.client.delete(format!("{}{path}", f.base)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn tool_handles(f: &Fixture, token: &str, tool: &str) -> Vec<String> {
    let v: Value = f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == tool)
        .flat_map(|t| t["inputSchema"]["properties"]["credential_handle"]["enum"].as_array().unwrap().clone())
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

async fn pg_roles(inst: &str) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1")
        .bind(format!("airlock\\_l\\_{inst}%"))
        .fetch_all(&mut c)
        .await
        .unwrap()
}

async fn my_users(inst: &str) -> Vec<String> {
    let mut c = sqlx::MySqlConnection::connect(MY).await.unwrap();
    sqlx::query_scalar("SELECT CAST(user AS CHAR) FROM mysql.user WHERE user LIKE ? ORDER BY 1")
        .bind(format!("airlock\\_l\\_{inst}%"))
        .fetch_all(&mut c)
        .await
        .unwrap()
}

fn lease_body(handle: &str, scope: &str, ttl: u64, tables: &[&str]) -> Value {
    json!({"credential_handle": handle, "scope": scope, "ttl_seconds": ttl, "tables": tables})
}

#[tokio::test]
async fn t15_postgres_lease_is_a_real_role_bound_to_agent_scope_tables_and_expiry() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("cycle", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 60, &[&e.ta.to_uppercase()])).await;
    assert_eq!(s, 200, "{v}");
    let lh = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    let lid = v["result"]["lease_id"].as_str().unwrap().to_owned();
    assert!(lh.starts_with("PGL__L") && lh.len() == 12, "{lh}");
    // The config's spelling, not the agent's.
    assert_eq!(v["result"]["tables"], json!([e.ta]));
    let text = v.to_string();
    assert!(!text.contains("postgres://") && !text.contains("password"), "{text}");
    let roles = pg_roles(&inst).await;
    assert_eq!(roles.len(), 1, "{roles:?}");
    let role = roles[0].clone();

    // Only the owner sees it.
    assert!(tool_handles(f, &e.leaser, "query_db").await.contains(&lh));
    assert!(!tool_handles(f, &e.thief, "query_db").await.contains(&lh));

    // The owner reads the listed table; the other table is refused by airlock.
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id FROM {} ORDER BY id", e.ta)})).await;
    assert_eq!((s, &v["result"]["row_count"]), (200, &json!(2)), "{v}");
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id FROM {}", e.tb)})).await;
    assert_eq!((s, code(&v)), (403, "table-not-allowed"));
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh, "query": format!("DELETE FROM {}", e.ta)})).await;
    assert_eq!((s, code(&v)), (403, "statement-not-allowed"));

    // The database enforces the same: connect as the role with the lease's own credential.
    let dsn = vault(f).resolve(&SecretRef::Local(lh.clone())).await.unwrap();
    // The first query covered the lease's credential in the scrubber (added to it, no rebuild);
    // the refresh that sees the store changed rebuilds from all secrets and still covers it.
    let label = airlock_core::HandleName::parse(&lh).unwrap();
    assert!(f.broker.scrubber().knows(&label, &dsn));
    let shown = format!("dsn: {}", dsn.expose_str().unwrap());
    assert_eq!(f.broker.scrubber().scrub_str(&shown).0, format!("dsn: [REDACTED:{lh}]"));
    f.broker.refresh().await.unwrap();
    assert_eq!(f.broker.scrubber().added_count(), 0);
    assert!(f.broker.scrubber().knows(&label, &dsn));
    assert_eq!(f.broker.scrubber().scrub_str(&shown).0, format!("dsn: [REDACTED:{lh}]"));
    let dsn = dsn.expose_str().unwrap().to_owned();
    assert!(dsn.contains(&role));
    let mut c = sqlx::PgConnection::connect(&dsn).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", e.ta)).fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 2);
    let w = sqlx::raw_sql(&format!("INSERT INTO {} VALUES (9, 'x')", e.ta)).execute(&mut c).await;
    assert!(w.is_err(), "write under read_only");
    let r = sqlx::raw_sql(&format!("SELECT * FROM {}", e.tb)).execute(&mut c).await;
    assert!(r.is_err(), "read of an unlisted table");
    let who: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut c).await.unwrap();
    assert_eq!(who, role);

    // T15: another agent, another tool, leasing a lease: all handle-unavailable.
    let (s, v) = f.invoke_as(&e.thief, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    let (s, v) = f.invoke_as(&e.leaser, "http_request", json!({"credential_handle": lh, "method": "GET", "path_or_url": "/"})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    let (s, v) = f.invoke_as(&e.leaser, "request_lease", lease_body(&lh, "read_only", 10, &[])).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    let (s, _) = delete(f, &e.thief, &format!("/v1/leases/{lid}")).await;
    assert_eq!(s, 404);

    // Revocation: the role's live session ends, the role is gone, the handle is unavailable.
    let (s, v) = delete(f, &e.leaser, &format!("/v1/leases/{lid}")).await;
    assert_eq!((s, &v["result"]["status"]), (200, &json!("revoked")), "{v}");
    assert!(pg_roles(&inst).await.is_empty());
    assert!(sqlx::query("SELECT 1").execute(&mut c).await.is_err(), "the role's session survived revocation");
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    assert!(!tool_handles(f, &e.leaser, "query_db").await.contains(&lh));
    assert!(f.store.get_sealed(&lh).await.unwrap().is_none(), "the lease password stays in the vault");
    // Never twice.
    assert!(!f.broker.revoke_lease(&lid).await.unwrap());

    // read_write lease: the database allows writes on the listed table only.
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_write", 60, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let lh2 = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh2, "query": format!("INSERT INTO {} VALUES (3, 'a3')", e.ta)})).await;
    assert_eq!(s, 200, "{v}");

    // Expiry: a 1-second lease stops working at once and the reaper drops its role.
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 1, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let lh3 = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    let lid3 = v["result"]["lease_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh3, "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    // The server's reaper, or this call, revokes it; either way exactly once.
    f.broker.reap_once().await;
    let l = f.store.lease(&lid3).await.unwrap().unwrap();
    assert_eq!(l.status, "revoked");
    assert!(!pg_roles(&inst).await.contains(l.role_name.as_ref().unwrap()));
    f.broker.revoke_agent("leaser").await.unwrap();
    assert!(pg_roles(&inst).await.is_empty(), "revoking the agent leaves its lease roles");
}

/// Another replica revoked the lease (it dropped the role, killed its sessions and removed the
/// credential from the shared store): this broker's refresh closes its own pool for the lease,
/// instead of keeping the killed connection open.
#[tokio::test]
async fn t15_a_lease_revoked_by_another_replica_closes_this_ones_pool() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("replica", true, false).await;
    let f = &e.f;
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 60, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let lh = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    let (s, v) = f.invoke_as(&e.leaser, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!(s, 200, "{v}");
    let pools = f.broker.sql_pool_count();
    assert!(pools >= 1);
    f.broker.refresh().await.unwrap();
    assert_eq!(f.broker.sql_pool_count(), pools, "a live lease keeps its pool");
    // What the other replica's revocation leaves in the shared store.
    f.store.remove_secret(&lh).await.unwrap();
    // The server's own refresh may come first; either one closes it.
    f.broker.refresh().await.unwrap();
    assert_eq!(f.broker.sql_pool_count(), pools - 1);
}

#[tokio::test]
async fn t15_bad_lease_requests_get_a_code_and_create_nothing() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("bad", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let cases = [
        (lease_body("PGL", "read_only", 121, &[&e.ta]), "lease-not-allowed"), // over leaser's 120 s
        (lease_body("PGL", "read_only", 0, &[&e.ta]), "lease-not-allowed"),
        (lease_body("PGRO", "read_write", 10, &[&e.ta]), "lease-not-allowed"), // wider than the base
        (lease_body("PGL", "read_only", 10, &["nope"]), "table-not-allowed"),
        (lease_body("PGRO", "read_only", 10, &[&e.tb]), "table-not-allowed"), // not the base's
        (lease_body("PGL", "read_only", 10, &["pg_authid"]), "table-not-allowed"),
        (json!({"credential_handle": "PGL", "scope": "admin", "ttl_seconds": 10}), "invalid-arguments"),
        (json!({"credential_handle": "PGL", "scope": "read_only", "ttl_seconds": 10, "extra": 1}), "invalid-arguments"),
        (json!({"credential_handle": "PGL", "scope": "read_only", "ttl_seconds": 10, "task_id": "task_nope"}), "not-found"),
        (lease_body("APP_DB", "read_only", 10, &[]), "handle-unavailable"), // no grant
        (lease_body("PGL\u{0421}", "read_only", 10, &[]), "handle-unavailable"),
    ];
    for (body, want) in cases {
        let (_, v) = post(f, &e.leaser, "/v1/leases", body.clone()).await;
        assert_eq!(code(&v), want, "{body} → {v}");
    }
    // The thief holds query_db on PGL but not request_lease.
    let (_, v) = post(f, &e.thief, "/v1/leases", lease_body("PGL", "read_only", 10, &[&e.ta])).await;
    assert_eq!(code(&v), "handle-unavailable");
    assert!(pg_roles(&inst).await.is_empty());
    let live: Vec<_> = f.store.list_leases().await.unwrap().into_iter().filter(|l| l.status != "failed").collect();
    assert!(live.is_empty(), "{live:?}");
}

#[tokio::test]
async fn t15_leases_across_a_restart_and_reconciliation() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("restart", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 1, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let lid = v["result"]["lease_id"].as_str().unwrap().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 110, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let keep = v["result"]["lease_id"].as_str().unwrap().to_owned();
    // A role of ours that no lease accounts for (a crash after CREATE ROLE), and one of another
    // installation, which must be left alone.
    let orphan = format!("airlock_l_{inst}_dead00");
    let foreign = format!("airlock_l_0f0f0f0f_{}", std::process::id());
    {
        let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
        for r in [&orphan, &foreign] {
            sqlx::raw_sql(&format!("DROP ROLE IF EXISTS \"{r}\"; CREATE ROLE \"{r}\" NOLOGIN")).execute(&mut c).await.unwrap();
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // "Restart": a second broker on the same data directory and configuration.
    let cfg = airlock_core::config::Config::load(&f.dir.path().join("airlock.toml")).unwrap();
    let b2 = std::sync::Arc::new(airlock_server::Broker::open(cfg).await.unwrap());
    assert_eq!(b2.installation(), inst);
    b2.reconcile_leases().await.unwrap();
    b2.reap_once().await;
    assert_eq!(f.store.lease(&lid).await.unwrap().unwrap().status, "revoked");
    assert_eq!(f.store.lease(&keep).await.unwrap().unwrap().status, "active");
    let roles = pg_roles(&inst).await;
    assert_eq!(roles, vec![f.store.lease(&keep).await.unwrap().unwrap().role_name.unwrap()]);
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(&foreign).fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 1, "another installation's role was dropped");
    sqlx::raw_sql(&format!("DROP ROLE \"{foreign}\"")).execute(&mut c).await.unwrap();
    b2.revoke_lease(&keep).await.unwrap();
    assert!(pg_roles(&inst).await.is_empty());
}

#[tokio::test]
async fn t15_a_failed_revocation_is_pending_and_retried() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("retry", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 60, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let lid = v["result"]["lease_id"].as_str().unwrap().to_owned();
    // The database goes away (the admin credential now points at a closed port).
    vault(f).put("PGL", &Secret::from_str_value("postgres://postgres@127.0.0.1:1/test")).await.unwrap();
    f.broker.refresh().await.unwrap();
    let (s, v) = delete(f, &e.leaser, &format!("/v1/leases/{lid}")).await;
    assert_eq!((s, &v["result"]["status"]), (200, &json!("revoke-pending")), "{v}");
    let l = f.store.lease(&lid).await.unwrap().unwrap();
    assert_eq!((l.status.as_str(), l.attempts), ("revoke-pending", 1));
    assert_eq!(pg_roles(&inst).await.len(), 1);
    // Back up: the next retry revokes it.
    vault(f).put("PGL", &Secret::from_str_value(PG)).await.unwrap();
    f.broker.refresh().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    f.broker.reap_once().await;
    assert_eq!(f.store.lease(&lid).await.unwrap().unwrap().status, "revoked");
    assert!(pg_roles(&inst).await.is_empty());
}

#[tokio::test]
async fn t15_closing_a_task_revokes_its_leases() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("task", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/tasks", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let task = v["result"]["task_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let mut body = lease_body("PGL", "read_only", 100, &[&e.ta]);
        body["task_id"] = json!(task);
        let (s, v) = post(f, &e.leaser, "/v1/leases", body).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(pg_roles(&inst).await.len(), 2);
    let (s, _) = post(f, &e.thief, &format!("/v1/tasks/{task}/close"), json!({})).await;
    assert_eq!(s, 404);
    let (s, v) = post(f, &e.leaser, &format!("/v1/tasks/{task}/close"), json!({})).await;
    assert_eq!((s, &v["result"]["revoked"]), (200, &json!(2)), "{v}");
    assert!(pg_roles(&inst).await.is_empty());
    let (s, v) = post(f, &e.leaser, &format!("/v1/tasks/{task}/close"), json!({})).await;
    assert_eq!((s, code(&v)), (409, "conflict"));
    let mut body = lease_body("PGL", "read_only", 100, &[&e.ta]);
    body["task_id"] = json!(task);
    let (_, v) = post(f, &e.leaser, "/v1/leases", body).await;
    assert_eq!(code(&v), "conflict");
}

#[tokio::test]
async fn t16_children_are_never_wider_than_parents_and_never_see_their_leases() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("child", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 100, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let parent_lease = v["result"]["lease_handle"].as_str().unwrap().to_owned();

    // A child with a subset of the parent's grants.
    let req = json!({"name": "worker", "grants": [{"handle": "PGL", "tools": ["query_db", "request_lease"]}], "ttl_seconds": 600});
    let (s, v) = post(f, &e.leaser, "/v1/agents/self/children", req).await;
    assert_eq!(s, 200, "{v}");
    let child = v["result"]["token"].as_str().unwrap().to_owned();
    assert_ne!(child, e.leaser);
    assert_eq!(v["result"]["parent_chain"], json!(["leaser"]));

    // Grants the parent lacks, unknown handles and tools, a configured agent's name: refused.
    for (req, want) in [
        (json!({"name": "w2", "grants": [{"handle": "APP_DB", "tools": ["query_db"]}]}), "grant-not-allowed"),
        (json!({"name": "w2", "grants": [{"handle": "PGRO", "tools": ["query_db"]}]}), "grant-not-allowed"),
        (json!({"name": "w2", "grants": [{"handle": "NOPE", "tools": ["query_db"]}]}), "grant-not-allowed"),
        (json!({"name": "w2", "grants": [{"handle": "PGL", "tools": ["run_anything"]}]}), "grant-not-allowed"),
        (json!({"name": "thief", "grants": []}), "conflict"),
        (json!({"name": "W2", "grants": []}), "invalid-arguments"),
    ] {
        let (_, v) = post(f, &e.leaser, "/v1/agents/self/children", req.clone()).await;
        assert_eq!(code(&v), want, "{req} → {v}");
    }
    // The child cannot hand its own child more than it holds either.
    let (_, v) = post(f, &child, "/v1/agents/self/children", json!({"name": "w3", "grants": [{"handle": "PGRO", "tools": ["request_lease"]}]})).await;
    assert_eq!(code(&v), "grant-not-allowed");
    let (s, v) = post(f, &child, "/v1/agents/self/children", json!({"name": "w3", "grants": [{"handle": "PGL", "tools": ["query_db"]}]})).await;
    assert_eq!(s, 200, "{v}");
    let grandchild = v["result"]["token"].as_str().unwrap().to_owned();
    assert_eq!(v["result"]["parent_chain"], json!(["worker", "leaser"]));

    // The child works with its own grants, not with the parent's lease.
    let (s, v) = f.invoke_as(&child, "query_db", json!({"credential_handle": "PGL", "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = f.invoke_as(&child, "query_db", json!({"credential_handle": parent_lease, "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    assert!(!tool_handles(f, &child, "query_db").await.contains(&parent_lease));
    let (s, v) = f.invoke_as(&child, "request_lease", lease_body("PGRO", "read_only", 10, &[])).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"));
    // Its own lease, capped by the parent's per-agent TTL (leaser: 120 s).
    let (_, v) = f.invoke_as(&child, "request_lease", lease_body("PGL", "read_only", 121, &[&e.ta])).await;
    assert_eq!(code(&v), "lease-not-allowed");
    let (s, v) = f.invoke_as(&child, "request_lease", lease_body("PGL", "read_only", 100, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(pg_roles(&inst).await.len(), 2);

    // The audit record of the grandchild's call carries the chain.
    let (s, _) = f.invoke_as(&grandchild, "query_db", json!({"credential_handle": "PGL", "query": format!("SELECT id FROM {}", e.ta)})).await;
    assert_eq!(s, 200);
    let tail = f.store.audit_tail(1).await.unwrap();
    assert_eq!(tail[0].1.agent, "w3");
    assert_eq!(tail[0].1.parent_chain, vec!["worker", "leaser"]);

    // Revoking the parent revokes its descendants and every lease of theirs.
    assert_eq!(f.broker.revoke_agent("leaser").await.unwrap(), 3);
    for t in [&e.leaser, &child, &grandchild] {
        let (s, _) = f.invoke_as(t, "query_db", json!({"credential_handle": "PGL", "query": "SELECT 1"})).await;
        assert_eq!(s, 401);
    }
    assert!(pg_roles(&inst).await.is_empty());
}

#[tokio::test]
async fn t15_mariadb_lease_is_a_real_user() {
    if !reachable("127.0.0.1:3306", "MariaDB").await {
        return;
    }
    let e = setup("my", false, true).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("MYL", "read_only", 60, &[&e.ta])).await;
    assert_eq!(s, 200, "{v}");
    let lh = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    let lid = v["result"]["lease_id"].as_str().unwrap().to_owned();
    let users = my_users(&inst).await;
    assert_eq!(users.len(), 1, "{users:?}");
    let dsn = vault(f).resolve(&SecretRef::Local(lh.clone())).await.unwrap();
    let mut c = sqlx::MySqlConnection::connect(dsn.expose_str().unwrap()).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", e.ta)).fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 2);
    assert!(sqlx::raw_sql(&format!("INSERT INTO {} VALUES (9, 'x')", e.ta)).execute(&mut c).await.is_err());
    assert!(sqlx::raw_sql(&format!("SELECT * FROM {}", e.tb)).execute(&mut c).await.is_err());
    assert!(f.broker.revoke_lease(&lid).await.expect("revoked"));
    assert!(my_users(&inst).await.is_empty());
    assert!(sqlx::query("SELECT 1").execute(&mut c).await.is_err(), "the user's session survived revocation");
}

/// The admin sessions of the test's own credential (its `application_name` is unique).
async fn admin_pids(app: &str) -> Vec<i32> {
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND usename = 'postgres' ORDER BY pid")
        .bind(app)
        .fetch_all(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn t15_lease_operations_reuse_one_admin_session_and_survive_its_loss() {
    if !reachable("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let e = setup("kept", true, false).await;
    let f = &e.f;
    let inst = f.broker.installation().to_owned();
    // A credential of this test alone: the kept admin session is found by its application name.
    let app = format!("airlock_kept_{}", std::process::id());
    vault(f).put("PGL", &Secret::from_str_value(&format!("{PG}?application_name={app}"))).await.unwrap();
    f.broker.refresh().await.unwrap();

    let issue = || async {
        let (s, v) = post(f, &e.leaser, "/v1/leases", lease_body("PGL", "read_only", 60, &[&e.ta])).await;
        assert_eq!(s, 200, "{v}");
        v["result"]["lease_id"].as_str().unwrap().to_owned()
    };
    let first = issue().await;
    let kept = admin_pids(&app).await;
    assert_eq!(kept.len(), 1, "one admin session is kept after the issue: {kept:?}");
    let (s, v) = delete(f, &e.leaser, &format!("/v1/leases/{first}")).await;
    assert_eq!((s, &v["result"]["status"]), (200, &json!("revoked")), "{v}");
    let second = issue().await;
    assert_eq!(admin_pids(&app).await, kept, "the revoke and the next issue ran on the kept session");
    assert_eq!(pg_roles(&inst).await.len(), 1);

    // The kept session dies (a server restart, an idle timeout): the next operation connects anew.
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)").bind(kept[0]).execute(&mut c).await.unwrap();
    let (s, v) = delete(f, &e.leaser, &format!("/v1/leases/{second}")).await;
    assert_eq!((s, &v["result"]["status"]), (200, &json!("revoked")), "{v}");
    assert!(pg_roles(&inst).await.is_empty(), "the revoke went through on a new session");
    let now = admin_pids(&app).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, kept);

    // A rotated credential is a different key: the old session is not used for it.
    vault(f).put("PGL", &Secret::from_str_value(&format!("{PG}?application_name={app}_2"))).await.unwrap();
    f.broker.refresh().await.unwrap();
    let _third = issue().await;
    assert_eq!(admin_pids(&format!("{app}_2")).await.len(), 1);
    assert_eq!(admin_pids(&app).await, now, "the old credential's session was not used");
}
