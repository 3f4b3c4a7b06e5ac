//! OpenBao behind the broker: handles whose secret is in OpenBao's KV v2 (scrubbed, rotated,
//! failing closed when OpenBao is sealed or down) and leases issued by OpenBao's database
//! secrets engine on the machine's PostgreSQL. Each test starts its own `bao server -dev`.
#![allow(clippy::disallowed_methods, reason = "the test compares values read back from OpenBao")]

mod common;
#[path = "../../vault/tests/bao/mod.rs"]
mod bao;

use airlock_core::config::SecretRef;
use airlock_vault::{MasterKey, Vault};
use bao::Bao;
use common::*;
use serde_json::{json, Value};
use sqlx::Connection;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn pg_reachable() -> bool {
    let ok = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect("127.0.0.1:5432"))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if !ok {
        bao::skip("PostgreSQL at 127.0.0.1:5432 is unreachable");
    }
    ok
}

fn suffix() -> String {
    format!("{}_{:06x}", std::process::id(), rand::random::<u32>() & 0xff_ffff)
}

/// The answer to an agent must not say why a secret is unavailable.
fn assert_opaque(v: &Value) {
    assert_eq!(code(v), "secret-unavailable", "{v}");
    let text = v.to_string().to_ascii_lowercase();
    for word in ["sealed", "openbao", "vault", "127.0.0.1", "token", "connect", "refused", "corp"] {
        assert!(!text.contains(word), "the agent learns '{word}': {v}");
    }
}

#[tokio::test]
async fn handles_backed_by_openbao_are_scrubbed_rotated_and_fail_closed() {
    let Some(mut b) = Bao::start().await else { return };
    let pg = pg_reachable().await;
    let token = b.policy_and_token("1h").await;
    let var = format!("AIRLOCK_TEST_BAO_SRV_{}", suffix());
    std::env::set_var(&var, &token);
    // Trust auth: the password is checked by nobody but is the handle's secret all the same.
    b.kv_put("app/pg", json!({"password": "canaryBaoPw_71xQ", "user": "postgres"})).await;
    b.kv_put("app/api", json!({"key": "canaryBaoKey_5kLm"})).await;
    let vaults = b.vault_toml("corp", &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 30);
    let f = Fixture::start_with(|t| {
        let port = t.split("http://127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().to_owned();
        format!(
            "{t}\n{vaults}\n[handles.BAO_PG]\nkind = \"postgres\"\nsecret = \"openbao:corp/secret/app/pg#password\"\n\
             [handles.BAO_PG.database]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n\n\
             [handles.BAO_API]\nkind = \"http\"\nsecret = \"openbao:corp/secret/app/api#key\"\n[handles.BAO_API.http]\n\
             destinations = [{{ url = \"http://127.0.0.1:{port}/v1/\", methods = [\"GET\"] }}]\n\
             inject = {{ type = \"header\", name = \"Authorization\", format = \"Bearer {{}}\" }}\n\n\
             [agents.baobot]\ngrants = [{{ handle = \"BAO_PG\", tools = [\"query_db\"] }}, {{ handle = \"BAO_API\", tools = [\"http_request\"] }}]\n"
        )
    })
    .await;
    let (_, tok) = f.store.add_agent("baobot", None, None).await.unwrap();
    let tok = tok.reveal().to_owned();

    // http_request: the upstream gets the value from OpenBao; the echo of it comes back redacted.
    let (s, v) = f.invoke_as(&tok, "http_request", json!({"credential_handle": "BAO_API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 200, "{v}");
    assert!(f.upstream_requests().iter().any(|r| r.headers.iter().any(|(k, v)| k == "authorization" && v == "Bearer canaryBaoKey_5kLm")));
    assert!(!v.to_string().contains("canaryBaoKey_5kLm"), "{v}");
    assert!(v.to_string().contains("[REDACTED"), "{v}");

    if pg {
        let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": "BAO_PG", "query": "SELECT 'canaryBaoPw_71xQ' AS x, 1 AS n"})).await;
        assert_eq!(s, 200, "{v}");
        assert!(!v.to_string().contains("canaryBaoPw_71xQ"), "{v}");
        assert_eq!(v["result"]["rows"][0][1], 1);
    }

    // Rotation in OpenBao, then explicit invalidation: the new value is used and known to the
    // scrubber before any output is scrubbed.
    b.kv_put("app/api", json!({"key": "canaryBaoKey_6nPq"})).await;
    f.broker.invalidate_secrets().await.unwrap();
    let (s, v) = f.invoke_as(&tok, "http_request", json!({"credential_handle": "BAO_API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(f.upstream_requests().last().unwrap().headers.iter().find(|(k, _)| k == "authorization").unwrap().1, "Bearer canaryBaoKey_6nPq");
    assert!(!v.to_string().contains("canaryBaoKey_6nPq"), "{v}");

    // Sealed: the agent sees secret-unavailable and nothing else; the audit says the same.
    b.seal().await;
    f.broker.invalidate_secrets().await.unwrap();
    let (s, v) = f.invoke_as(&tok, "http_request", json!({"credential_handle": "BAO_API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 503, "{v}");
    assert_opaque(&v);
    if pg {
        let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": "BAO_PG", "query": "SELECT 1"})).await;
        assert_eq!(s, 503);
        assert_opaque(&v);
    }
    // Down.
    b.kill();
    let (s, v) = f.invoke_as(&tok, "http_request", json!({"credential_handle": "BAO_API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 503, "{v}");
    assert_opaque(&v);
    let requests = f.upstream_requests().len();
    assert_eq!(requests, 2, "no request left without its credential");
    f.stop().await;
}

#[tokio::test]
async fn an_openbao_database_lease_is_a_dynamic_credential_revoked_through_openbao() {
    let Some(b) = Bao::start().await else { return };
    if !pg_reachable().await {
        return;
    }
    let sfx = suffix();
    let schema = format!("airlock_bao_{sfx}");
    let mut admin = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int, v text); INSERT INTO {schema}.t VALUES (1, 'one'), (2, 'two');"))
        .execute(&mut admin)
        .await
        .unwrap();

    b.call("POST", "sys/mounts/database", Some(json!({"type": "database"}))).await;
    b.call(
        "POST",
        "database/config/pg",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/test?sslmode=disable",
            "username": "postgres",
            "password": "unused-under-trust-auth",
            "allowed_roles": "ro",
        })),
    )
    .await;
    b.call(
        "POST",
        "database/roles/ro",
        Some(json!({
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                format!("GRANT USAGE ON SCHEMA {schema} TO \"{{{{name}}}}\";"),
                format!("GRANT SELECT ON {schema}.t TO \"{{{{name}}}}\";"),
            ],
            "revocation_statements": [
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
                format!("REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM \"{{{{name}}}}\";"),
                format!("REVOKE USAGE ON SCHEMA {schema} FROM \"{{{{name}}}}\";"),
                "DROP ROLE IF EXISTS \"{{name}}\";",
            ],
            "default_ttl": "10m",
            "max_ttl": "1h",
        })),
    )
    .await;
    let token = b.policy_and_token("1h").await;
    let var = format!("AIRLOCK_TEST_BAO_DB_{sfx}");
    std::env::set_var(&var, &token);
    std::env::set_var(format!("{var}_BASE"), "unused");
    let vaults = b.vault_toml("corp", &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 30);
    let f = Fixture::start_with(|t| {
        format!(
            "{t}\n{vaults}\n[handles.BAO_DB]\nkind = \"postgres\"\nsecret = \"env:{var}_BASE\"\n[handles.BAO_DB.database]\n\
             url = \"postgres://nobody@127.0.0.1:5432/test\"\ntables = [\"{schema}.t\"]\nallow_catalogs = true\n\
             [handles.BAO_DB.lease]\nprovider = \"openbao\"\nvault = \"corp\"\nrole = \"ro\"\nmax_ttl_seconds = 900\n\n\
             [agents.leasebot]\ngrants = [{{ handle = \"BAO_DB\", tools = [\"request_lease\"] }}]\n"
        )
    })
    .await;
    let (_, tok) = f.store.add_agent("leasebot", None, None).await.unwrap();
    let tok = tok.reveal().to_owned();

    let (s, v) = f.invoke_as(&tok, "request_lease", json!({"credential_handle": "BAO_DB", "scope": "read_only", "ttl_seconds": 900})).await;
    assert_eq!(s, 200, "{v}");
    let lease_id = v["result"]["lease_id"].as_str().unwrap().to_owned();
    let lh = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    // OpenBao's role TTL (10 min) caps the 15 min asked for.
    let exp = chrono::DateTime::parse_from_rfc3339(v["result"]["expires_at"].as_str().unwrap()).unwrap();
    let left = exp.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((560..=600).contains(&left), "expires in {left} s");

    let rec = f.store.lease(&lease_id).await.unwrap().unwrap();
    let user = rec.role_name.clone().unwrap();
    let exists = |user: String| async move {
        let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(user).fetch_one(&mut c).await.unwrap() == 1
    };
    assert!(exists(user.clone()).await, "OpenBao created {user}");

    // The lease works with query_db, as OpenBao's user.
    let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id, current_user FROM {schema}.t ORDER BY id")})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["rows"][0][1], user.as_str());
    // Its password is sealed under the lease handle and known to the scrubber.
    let data = f.dir.path().join("data");
    let vault = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), f.store.clone());
    let pw = vault.resolve(&SecretRef::Local(lh.clone())).await.unwrap();
    let scrubber = f.broker.scrubber();
    let (scrubbed, n) = scrubber.scrub_str(pw.expose_str().unwrap());
    assert!(n >= 1 && !scrubbed.contains(pw.expose_str().unwrap()));

    // Revoked through OpenBao: the role is gone from PostgreSQL and the lease is over.
    let r = f.client.delete(format!("{}/v1/leases/{lease_id}", f.base)).bearer_auth(&tok).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"]["status"], "revoked", "{body}");
    assert!(!exists(user.clone()).await, "{user} dropped by OpenBao");
    assert!(f.store.get_sealed(&format!("openbao-lease:{lh}")).await.unwrap().is_none());
    let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": lh, "query": format!("SELECT id FROM {schema}.t")})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "{v}");

    // OpenBao down: a new lease is secret-unavailable, with nothing about why.
    drop(b);
    let (s, v) = f.invoke_as(&tok, "request_lease", json!({"credential_handle": "BAO_DB", "scope": "read_only", "ttl_seconds": 60})).await;
    assert_eq!(s, 503, "{v}");
    assert_opaque(&v);

    f.stop().await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await.unwrap();
}
