//! A throw-away airlock: data directory, SQLite database, a recording HTTP upstream on
//! 127.0.0.1:0, secrets, two agents; the MCP router served on 127.0.0.1:0; and the skip rule for
//! tests that need an external client (python `mcp`, node).
#![allow(dead_code)]

use airlock_core::config::Config;
use airlock_core::Secret;
use airlock_server::Broker;
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use axum::http::HeaderMap;
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Canary secrets: distinctive, so a sweep finds them anywhere.
pub const API_TOKEN: &str = "canaryTok_Mcp7Qm2Xv9LpR4sT8wZ";
pub const DB_NAME_SECRET_PART: &str = "canaryDb_Mcp3j9Vq";
pub const GENERIC_SECRET: &str = "canaryGeneric_Mcp81Lq0Pw";
pub const CANARIES: &[&str] = &[API_TOKEN, DB_NAME_SECRET_PART, GENERIC_SECRET];

/// Panics if any canary appears in `text`.
pub fn assert_no_secret(what: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "{what} contains a secret: {text}");
    }
}

/// True when the test may run; otherwise prints `skipped: <reason>` (or fails when
/// `AIRLOCK_REQUIRE_SERVICES=1`).
pub fn available(check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("required but unavailable: {reason}");
            }
            println!("skipped: {reason}");
            false
        }
    }
}

/// Python with the official MCP SDK.
pub fn python_mcp() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import mcp, httpx2"])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("python package `mcp` not installed (pip install mcp)".into())
    }
}

/// The folder of the client scripts and the npm project.
pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The MCP Inspector CLI installed by `npm ci` in tests/clients.
pub fn inspector() -> Result<PathBuf, String> {
    let cli = clients_dir().join("node_modules/.bin/mcp-inspector");
    if !cli.exists() {
        return Err("MCP Inspector not installed (cd crates/mcp/tests/clients && npm ci)".into());
    }
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node not runnable: {e}"))?;
    Ok(cli)
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub upstream: SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub token: String,
    pub other_token: String,
    pub store: Store,
}

async fn record(seen: Arc<Mutex<Vec<String>>>, uri: axum::http::Uri, headers: HeaderMap) -> Json<Value> {
    seen.lock().unwrap().push(uri.to_string());
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if uri.path().starts_with("/v1/echo") {
        // An endpoint that echoes the credential back (T18): the broker must scrub it.
        return Json(json!({"raw": auth}));
    }
    Json(json!({"items": [{"id": 1, "name": "widget"}], "path": uri.path()}))
}

fn config_text(upstream: SocketAddr, extra_server: &str) -> String {
    format!(
        r#"
[server]
{extra_server}

[store]
data_dir = "data"

[limits]
rate_per_minute = 100000

[handles.APP_DB]
kind = "sqlite"
secret = "local:APP_DB"
description = "orders database"
[handles.APP_DB.database]
scope = "read_only"
tables = ["orders"]

[handles.RW_DB]
kind = "sqlite"
secret = "local:RW_DB"
[handles.RW_DB.database]
scope = "read_write"
tables = ["orders"]

[handles.API]
kind = "http"
secret = "local:API"
description = "items API"
[handles.API.http]
destinations = [{{ url = "http://127.0.0.1:{port}/v1/", methods = ["GET"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}

[handles.SECRET_ONLY]
kind = "generic"
secret = "local:SECRET_ONLY"

[agents.bot]
grants = [
  {{ handle = "APP_DB", tools = ["query_db"] }},
  {{ handle = "API", tools = ["http_request"] }},
]

[agents.other]
grants = [{{ handle = "RW_DB", tools = ["query_db"] }}]

[handles.APP_DB.lease]
max_ttl_seconds = 60

[agents.leaser]
grants = [{{ handle = "APP_DB", tools = ["request_lease"] }}]
"#,
        port = upstream.port()
    )
}

impl Env {
    /// Data directory, keys, secrets and agents; no broker is open (a child process may open it).
    pub async fn prepare() -> Env {
        Env::prepare_with("").await
    }

    /// As [`Env::prepare`], with lines added to the `[server]` table.
    pub async fn prepare_with(extra_server: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = up.local_addr().unwrap();
        let s2 = seen.clone();
        let app = Router::new().fallback(any(move |u, h| record(s2.clone(), u, h)));
        tokio::spawn(async move { axum::serve(up, app).await });

        let db_path = dir.path().join(format!("{DB_NAME_SECRET_PART}.db"));
        {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db_path.display())).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, total INTEGER);
                 INSERT INTO orders VALUES (1, 'widget', 100), (2, 'gadget', 250);",
            )
            .execute(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
        }
        let text = config_text(upstream, extra_server);
        let config_path = dir.path().join("airlock.toml");
        std::fs::write(&config_path, text).unwrap();
        let cfg = Config::load(&config_path).unwrap();
        let data = cfg.store.data_dir.clone();
        std::fs::create_dir_all(&data).unwrap();
        MasterKey::create(&data.join("master.key")).unwrap();
        AuditKey::create(&data).unwrap();
        let store = Store::open(&data).await.unwrap();
        let vault = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), store.clone());
        vault.put("API", &Secret::from_str_value(API_TOKEN)).await.unwrap();
        vault.put("APP_DB", &Secret::from_str_value(&format!("sqlite://{}?mode=ro", db_path.display()))).await.unwrap();
        vault.put("RW_DB", &Secret::from_str_value(&format!("sqlite://{}?mode=rw", db_path.display()))).await.unwrap();
        vault.put("SECRET_ONLY", &Secret::from_str_value(GENERIC_SECRET)).await.unwrap();
        let (_, t1) = store.add_agent("bot", None, None).await.unwrap();
        let (_, t2) = store.add_agent("other", None, None).await.unwrap();
        Env {
            dir,
            config_path,
            upstream,
            seen,
            token: t1.reveal().to_owned(),
            other_token: t2.reveal().to_owned(),
            store,
        }
    }

    pub async fn broker(&self) -> Arc<Broker> {
        Arc::new(Broker::open(Config::load(&self.config_path).unwrap()).await.unwrap())
    }

    pub fn upstream_requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The MCP router alone, served on 127.0.0.1:0. Returns the endpoint URL.
pub async fn serve_mcp(broker: Arc<Broker>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, airlock_mcp::http_router(broker)).await });
    format!("http://{addr}{}", airlock_mcp::MCP_PATH)
}


/// Helper processes that announce themselves on their first line (airlock-server's test helper).
#[path = "../../../server/tests/common/spawn.rs"]
mod spawn;
#[allow(unused_imports, reason = "not every test crate that includes common starts a helper")]
pub use spawn::spawn_announcing;
