//! A broker on a throw-away data directory with a SQLite handle, an HTTP handle in front of a real
//! recording upstream on 127.0.0.1:0, and two agents; served on 127.0.0.1:0.
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
use std::sync::{Arc, Mutex};

/// Every log line the brokers of this test binary write, at trace level (swept for tokens and
/// secrets like the answers): [`capture_logs`] once, then [`captured_logs`].
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of this test binary to the capture (idempotent).
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::new("trace,hyper=info,h2=info,reqwest=debug,rustls=info,sqlx=info,tower=info");
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| LogWriter).try_init();
}

/// Everything captured so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// The canary secrets: distinctive so a sweep can find them anywhere.
pub const API_TOKEN: &str = "canaryTok_7Qm2Xv9LpR4sT8wZ1nB6";
pub const DB_NAME_SECRET_PART: &str = "canaryDb_K3j9Vq";

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub broker: Arc<Broker>,
    pub base: String,
    pub upstream: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub token: String,
    pub other_token: String,
    pub store: Store,
    pub db_dsn: String,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn record(seen: Arc<Mutex<Vec<Seen>>>, method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap, body: String) -> Json<Value> {
    let hs: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    seen.lock().unwrap().push(Seen { method: method.to_string(), path: uri.to_string(), headers: hs, body });
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    use base64::Engine as _;
    if uri.path().starts_with("/v1/echo") {
        return Json(json!({
            "raw": auth,
            "b64": base64::engine::general_purpose::STANDARD.encode(&auth),
            "hex": hex::encode(&auth),
            "reversed": auth.chars().rev().collect::<String>(),
        }));
    }
    Json(json!({"items": [{"id": 1, "name": "widget"}], "path": uri.path()}))
}

/// The workspace's `airlock` binary (target/<profile>/airlock), the sandbox's second stage for
/// run_command: this in-process broker's own executable is the test binary, which has no
/// stage 2. `cargo test --workspace` builds it; with `-p airlock-server`, `cargo build -p
/// airlock` first (without it, run_command answers sandbox-unavailable).
///
/// Used from a copy in the temporary directory: under a root broker the sandbox starts as uid
/// 65534, which must reach the binary, and a build tree inside a private home would not let it.
pub fn stage2_binary() -> Option<std::path::PathBuf> {
    static COPY: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::current_exe().ok()?;
        let built = exe.ancestors().skip(1).map(|d| d.join("airlock")).find(|p| p.is_file())?;
        let m = std::fs::metadata(&built).ok()?;
        let stamp = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
        // One copy per build, shared by every test process.
        let dir = std::env::temp_dir().join(format!("airlock-test-stage2-{stamp:x}-{:x}", m.len()));
        let path = dir.join("airlock");
        if !path.is_file() {
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).ok()?;
            let tmp = dir.join(format!("airlock.{}", std::process::id()));
            std::fs::copy(&built, &tmp).ok()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).ok()?;
            std::fs::rename(&tmp, &path).ok()?;
        }
        Some(path)
    })
    .clone()
}

pub fn config_text(upstream: SocketAddr) -> String {
    format!(
        r#"
{sandbox}
[store]
data_dir = "data"

[limits]
rate_per_minute = 100000

[handles.APP_DB]
kind = "sqlite"
secret = "local:APP_DB"
description = "test database"
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
description = "test API"
[handles.API.http]
destinations = [{{ url = "http://127.0.0.1:{port}/v1/", methods = ["GET", "POST"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}

[handles.SECRET_ONLY]
kind = "generic"
secret = "local:SECRET_ONLY"

[agents.bot]
grants = [
  {{ handle = "APP_DB", tools = ["query_db"] }},
  {{ handle = "RW_DB", tools = ["query_db"] }},
  {{ handle = "API", tools = ["http_request"] }},
]

[agents.other]
grants = [{{ handle = "API", tools = ["http_request"] }}]
"#,
        port = upstream.port(),
        sandbox = stage2_binary().map(|p| format!("[sandbox]\nstage2 = \"{}\"\n", p.display())).unwrap_or_default()
    )
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(|t| t).await
    }

    pub async fn start_with(edit: impl FnOnce(String) -> String) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = up.local_addr().unwrap();
        let s2 = seen.clone();
        let app = Router::new().fallback(any(move |m, u, h, b| record(s2.clone(), m, u, h, b)));
        tokio::spawn(async move { axum::serve(up, app).await });

        let db_path = dir.path().join(format!("{DB_NAME_SECRET_PART}.db"));
        {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db_path.display())).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, total INTEGER);
                 CREATE TABLE secrets_table (id INTEGER PRIMARY KEY, v TEXT);
                 INSERT INTO orders VALUES (1, 'widget', 100), (2, 'gadget', 250);
                 INSERT INTO secrets_table VALUES (1, 'nope');",
            )
            .execute(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
        }
        let db_dsn = format!("sqlite://{}?mode=ro", db_path.display());
        let rw_dsn = format!("sqlite://{}?mode=rw", db_path.display());

        let text = edit(config_text(upstream));
        let cfg_path = dir.path().join("airlock.toml");
        std::fs::write(&cfg_path, text).unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        let data = cfg.store.data_dir.clone();
        std::fs::create_dir_all(&data).unwrap();
        MasterKey::create(&data.join("master.key")).unwrap();
        AuditKey::create(&data).unwrap();
        let store = Store::open(&data).await.unwrap();
        let vault = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), store.clone());
        vault.put("API", &Secret::from_str_value(API_TOKEN)).await.unwrap();
        vault.put("APP_DB", &Secret::from_str_value(&db_dsn)).await.unwrap();
        vault.put("RW_DB", &Secret::from_str_value(&rw_dsn)).await.unwrap();
        vault.put("SECRET_ONLY", &Secret::from_str_value("canaryGeneric_Zx81Lq0Pw")).await.unwrap();
        let (_, t1) = store.add_agent("bot", None, None).await.unwrap();
        let (_, t2) = store.add_agent("other", None, None).await.unwrap();

        let broker = Arc::new(Broker::open(cfg).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(airlock_server::http::serve(listener, broker.clone(), async {
            let _ = rx.await;
        }));
        Fixture {
            dir,
            broker,
            base: format!("http://{addr}"),
            upstream,
            seen,
            token: t1.reveal().to_owned(),
            other_token: t2.reveal().to_owned(),
            store,
            db_dsn,
            client: reqwest::Client::new(),
            stop: Some(tx),
        }
    }

    /// POST /v1/invoke as `token`; returns (status, body).
    pub async fn invoke_as(&self, token: &str, tool: &str, args: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/invoke", self.base))
            .bearer_auth(token)
            .json(&json!({"tool": tool, "arguments": args}))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap())
    }

    pub async fn invoke(&self, tool: &str, args: Value) -> (u16, Value) {
        self.invoke_as(&self.token, tool, args).await
    }

    pub fn upstream_requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The code of an error envelope.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// The envelope without its request id, for comparing two answers.
pub fn without_request_id(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("request_id");
    v
}

/// True when a service answers on `addr` within two seconds. When it does not: with
/// `AIRLOCK_REQUIRE_SERVICES=1` (CI) the test fails; otherwise it says it is skipped.
pub async fn reachable(addr: &str, what: &str) -> bool {
    let ok = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if !ok {
        if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{what} at {addr} is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
        }
        println!("skipped: {what} at {addr} is unreachable");
    }
    ok
}


/// Helper processes that announce themselves on their first line (shared with airlock-mcp's tests).
mod spawn;
#[allow(unused_imports, reason = "not every test crate that includes common starts a helper")]
pub use spawn::spawn_announcing;
