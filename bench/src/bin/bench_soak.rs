//! `airlock-bench-soak`: a long mixed run against real `airlock serve` processes, checking what
//! must hold after it rather than how fast it went.
//!
//! One `airlock serve` on its SQLite store (or, with `--replicas`, two on one PostgreSQL store
//! database, the clients split between them) gets `calls` calls from a closed-loop generator at
//! `concurrency` (default 200,000 and 64). The mix, each secret a random canary:
//!
//! - `http_request` to an upstream in this process that echoes the injected credential back
//!   (raw, base64 and hex), so the scrubber must catch it;
//! - `query_db` on SQLite, PostgreSQL (127.0.0.1:5432, db `test`) and MariaDB (127.0.0.1:3306,
//!   db `test`, a user of its own whose password is the canary); each table holds rows with
//!   other handles' canaries (raw, base64, hex), which the scrubber must catch too;
//! - a `query_db` on a table outside the handle's list: the one error the mix expects
//!   (`table-not-allowed`);
//! - `share_secret` to a webhook in this process, then the link consumed through
//!   `POST /v1/shares/{id}/consume` (on the other replica with `--replicas`) and opened;
//! - less often, `request_lease` (a real PostgreSQL role), the first query with the lease, and
//!   `DELETE /v1/leases/{id}` (on the other replica with `--replicas`).
//!
//! A call is one HTTP request to a broker. Every 10,000 calls the broker's resident memory
//! (`VmRSS`) and open file descriptors are sampled. Afterwards: `airlock audit verify`; the
//! audit read back, which must hold exactly one final record for each request id the generator
//! was answered with (and nothing else but intent records and `lease_revoked` events); and a
//! sweep for every canary (raw, base64 at every alignment, hex) over every answer body, every
//! webhook payload, every audit record, the data directory's files (SQLite store) and the
//! brokers' logs (`RUST_LOG=info`). Any unexpected error or failed check exits 1.
//!
//! `cargo build --release -p airlock && cargo build --release -p airlock-bench && target/release/airlock-bench-soak
//! [calls] [concurrency] [--replicas] [--max-seconds S]` (`--max-seconds` stops the generator
//! early, and says so). The PostgreSQL admin URL is `AIRLOCK_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`), MariaDB's `AIRLOCK_BENCH_MY` (default
//! `mysql://root@127.0.0.1:3306/test`).
#![forbid(unsafe_code)]

use airlock_bench::load::Latencies;
use airlock_bench::served::{free_port, open_fds, pg_exec, vm_rss_kib, Airlock, Proc};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Calls between two samples of the brokers' memory and descriptors.
const SAMPLE_EVERY: u64 = 10_000;

/// The mix, per 400 operations (an operation is one call, or the 2 calls of a share, or the 3
/// of a lease).
const MIX: [(Op, u32); 7] =
    [(Op::Http, 140), (Op::Sqlite, 75), (Op::Postgres, 70), (Op::Mariadb, 70), (Op::Denied, 4), (Op::Share, 40), (Op::Lease, 1)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Http,
    Sqlite,
    Postgres,
    Mariadb,
    Denied,
    Share,
    Lease,
}

/// The operation of sequence number `i`: a fixed permutation of the 400 slots, so the kinds
/// interleave evenly.
fn op_of(i: u64) -> Op {
    let mut slot = ((i % 400) * 7919 % 400) as u32;
    for (op, n) in MIX {
        if slot < n {
            return op;
        }
        slot -= n;
    }
    unreachable!("the mix sums to 400")
}

/// What one call was, for the counts.
const KINDS: [&str; 10] = [
    "http_request",
    "query_db sqlite",
    "query_db postgres",
    "query_db mariadb",
    "query_db denied (expected)",
    "share_secret",
    "share consume",
    "request_lease",
    "query_db lease",
    "revoke lease",
];

// ---------------------------------------------------------------------------------------------
// Canaries and the sweep

/// The secrets of the run, by handle name. Never printed.
struct Canaries(Vec<(&'static str, String)>);

impl Canaries {
    fn new() -> Canaries {
        Canaries(["API", "LITE", "PG", "MY", "PGL", "SHARED"].into_iter().map(|n| (n, canary())).collect())
    }

    fn get(&self, name: &str) -> &str {
        &self.0.iter().find(|(n, _)| *n == name).expect("a known canary").1
    }
}

/// 32 random lowercase letters and digits.
fn canary() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..32).map(|_| A[rand::random::<u32>() as usize % A.len()] as char).collect()
}

/// The base64 characters determined by `c` alone when it starts at each of the three
/// alignments, in the standard and the URL-safe alphabet: one of them is in any base64 text
/// that encodes `c` anywhere.
fn b64_cores(c: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    for p in 0..3 {
        let mut buf = vec![b'x'; p];
        buf.extend_from_slice(c);
        let e = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&buf);
        let core = e[(8 * p).div_ceil(6)..8 * (p + c.len()) / 6].to_owned();
        let url = core.replace('+', "-").replace('/', "_");
        if url != core {
            v.push(url);
        }
        v.push(core);
    }
    v
}

/// A matcher for every canary in raw, base64 and hex form.
struct Sweep {
    ac: aho_corasick::AhoCorasick,
    labels: Vec<(&'static str, &'static str)>,
}

impl Sweep {
    fn new(c: &Canaries) -> Result<Sweep> {
        let (mut pats, mut labels) = (Vec::new(), Vec::new());
        for (name, v) in &c.0 {
            let mut add = |p: String, form: &'static str| {
                pats.push(p);
                labels.push((*name, form));
            };
            add(v.clone(), "raw");
            add(hex::encode(v), "hex");
            add(hex::encode_upper(v), "hex");
            for core in b64_cores(v.as_bytes()) {
                add(core, "base64");
            }
        }
        Ok(Sweep { ac: aho_corasick::AhoCorasick::new(pats)?, labels })
    }

    /// (canary, form) of every match in `hay`.
    fn scan(&self, hay: &[u8]) -> Vec<(&'static str, &'static str)> {
        self.ac.find_overlapping_iter(hay).map(|m| self.labels[m.pattern().as_usize()]).collect()
    }

    /// `text` with every canary replaced by its name, fit to print.
    fn redact(&self, text: &str) -> String {
        let mut out = String::new();
        let mut last = 0;
        for m in self.ac.find_iter(text) {
            out.push_str(&text[last..m.start()]);
            out.push_str(&format!("[CANARY {} {}]", self.labels[m.pattern().as_usize()].0, self.labels[m.pattern().as_usize()].1));
            last = m.end();
        }
        out.push_str(&text[last..]);
        out
    }
}

/// Canary hits by where they were found, canary and form.
#[derive(Default)]
struct Hits(Mutex<BTreeMap<(String, &'static str, &'static str), u64>>);

impl Hits {
    fn record(&self, sweep: &Sweep, place: &str, hay: &[u8]) -> usize {
        let found = sweep.scan(hay);
        if !found.is_empty() {
            let mut m = self.0.lock().expect("hits");
            for (name, form) in &found {
                *m.entry((place.to_owned(), name, form)).or_default() += 1;
            }
        }
        found.len()
    }

    fn total(&self) -> u64 {
        self.0.lock().expect("hits").values().sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream and the webhook in this process

struct Local {
    sweep: Arc<Sweep>,
    hits: Arc<Hits>,
    /// Links delivered to the webhook, by share id.
    links: Mutex<HashMap<String, String>>,
    webhook_payloads: AtomicU64,
}

/// `GET /v1/echo`: the credential the broker injected, back in the body, raw, base64 and hex.
async fn echo(headers: HeaderMap) -> axum::Json<Value> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let token = auth.strip_prefix("Bearer ").unwrap_or(&auth);
    axum::Json(json!({
        "note": "this upstream echoes the credential it was sent",
        "authorization": auth,
        "token_base64": base64::engine::general_purpose::STANDARD.encode(token),
        "token_hex": hex::encode(token),
    }))
}

/// `POST /hook`: a share's link, delivered by the broker; kept for the consume.
async fn hook(State(l): State<Arc<Local>>, body: Bytes) -> axum::http::StatusCode {
    l.hits.record(&l.sweep, "webhook payloads", &body);
    l.webhook_payloads.fetch_add(1, Ordering::Relaxed);
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    if let (Some(id), Some(link)) = (v["share_id"].as_str(), v["link"].as_str()) {
        l.links.lock().expect("links").insert(id.to_owned(), link.to_owned());
    }
    axum::http::StatusCode::OK
}

async fn serve_local(l: Arc<Local>) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/v1/echo", get(echo)).route("/hook", post(hook)).with_state(l);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// The databases

/// What the run creates outside airlock, dropped at the end.
struct Fixtures {
    pg_admin: String,
    my_admin: String,
    table: String,
    my_user: String,
    store_db: Option<String>,
}

/// The rows every table holds: other handles' canaries, raw, in base64 and in hex.
fn rows(c: &Canaries) -> Vec<(i32, String)> {
    vec![
        (1, "a plain row".into()),
        (2, format!("token {}", c.get("API"))),
        (3, base64::engine::general_purpose::STANDARD.encode(c.get("SHARED"))),
        (4, hex::encode(c.get("MY"))),
    ]
}

async fn create_fixtures(fx: &Fixtures, c: &Canaries, lite: &Path) -> Result<()> {
    use sqlx::Connection;
    let t = &fx.table;
    let values: Vec<String> = rows(c).into_iter().map(|(i, s)| format!("({i}, '{s}')")).collect();
    let values = values.join(", ");
    pg_exec(&fx.pg_admin, &format!("CREATE TABLE {t} (id int, note text); INSERT INTO {t} VALUES {values};")).await?;
    let mut my = sqlx::MySqlConnection::connect(&fx.my_admin).await.context("connecting to MariaDB (AIRLOCK_BENCH_MY)")?;
    let u = &fx.my_user;
    let pw = c.get("MY");
    sqlx::raw_sql(&format!(
        "CREATE TABLE {t} (id int, note text); INSERT INTO {t} VALUES {values};\
         CREATE USER '{u}'@'%' IDENTIFIED BY '{pw}'; CREATE USER '{u}'@'localhost' IDENTIFIED BY '{pw}';\
         GRANT SELECT ON test.{t} TO '{u}'@'%'; GRANT SELECT ON test.{t} TO '{u}'@'localhost';"
    ))
    .execute(&mut my)
    .await?;
    let mut l = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", lite.display())).await?;
    sqlx::raw_sql(&format!("CREATE TABLE {t} (id int, note text); INSERT INTO {t} VALUES {values}; CREATE TABLE other (x int);"))
        .execute(&mut l)
        .await?;
    if let Some(db) = &fx.store_db {
        pg_exec(&fx.pg_admin, &format!("CREATE DATABASE {db}")).await?;
    }
    Ok(())
}

async fn drop_fixtures(fx: &Fixtures) {
    use sqlx::Connection;
    let t = &fx.table;
    if let Err(e) = pg_exec(&fx.pg_admin, &format!("DROP TABLE IF EXISTS {t}")).await {
        eprintln!("cleanup: dropping the PostgreSQL table: {e:#}");
    }
    if let Some(db) = &fx.store_db {
        if let Err(e) = pg_exec(&fx.pg_admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await {
            eprintln!("cleanup: dropping the store database: {e:#}");
        }
    }
    let u = &fx.my_user;
    let r = async {
        let mut my = sqlx::MySqlConnection::connect(&fx.my_admin).await?;
        sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {t}; DROP USER IF EXISTS '{u}'@'%'; DROP USER IF EXISTS '{u}'@'localhost';"))
            .execute(&mut my)
            .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = r {
        eprintln!("cleanup: MariaDB: {e:#}");
    }
}

/// `url` with its path (the database) replaced by `db`.
fn with_db(url: &str, db: &str) -> Result<String> {
    let mut u = url::Url::parse(url)?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

// ---------------------------------------------------------------------------------------------
// The brokers

struct Brokers {
    procs: Vec<Proc>,
    bases: Vec<String>,
    cfgs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    token: String,
}

#[allow(clippy::too_many_arguments)]
async fn start_brokers(
    airlock: &Airlock,
    dir: &Path,
    n: usize,
    store_url: Option<&str>,
    fx: &Fixtures,
    c: &Canaries,
    local: std::net::SocketAddr,
    lite: &Path,
) -> Result<Brokers> {
    airlock.init_data(dir)?;
    let t = &fx.table;
    let pg = url::Url::parse(&fx.pg_admin)?;
    let (pg_host, pg_port, pg_user) = (pg.host_str().unwrap_or("127.0.0.1").to_owned(), pg.port().unwrap_or(5432), pg.username().to_owned());
    let my = url::Url::parse(&fx.my_admin)?;
    let (my_host, my_port) = (my.host_str().unwrap_or("127.0.0.1").to_owned(), my.port().unwrap_or(3306));
    let store_line = store_url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let (mut cfgs, mut bases) = (Vec::new(), Vec::new());
    for i in 0..n {
        let port = free_port()?;
        let cfg = dir.join(format!("airlock-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
socket = "airlock-{i}.sock"
[store]
{store_line}[limits]
rate_per_minute = 100000000
[handles.API]
kind = "http"
secret = "local:API"
[handles.API.http]
destinations = [{{ url = "http://{local}/v1/", methods = ["GET"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}
[handles.LITE]
kind = "sqlite"
secret = "local:LITE"
[handles.LITE.database]
tables = ["{t}"]
[handles.PG]
kind = "postgres"
secret = "local:PG"
[handles.PG.database]
tables = ["{t}"]
url = "postgres://{pg_user}@{pg_host}:{pg_port}/test"
[handles.MY]
kind = "mysql"
secret = "local:MY"
[handles.MY.database]
tables = ["{t}"]
url = "mysql://{my_user}@{my_host}:{my_port}/test"
[handles.PGL]
kind = "postgres"
secret = "local:PGL"
[handles.PGL.database]
tables = ["{t}"]
[handles.PGL.lease]
dynamic = true
max_ttl_seconds = 600
scopes = ["read_only"]
[handles.SHARED]
kind = "generic"
secret = "local:SHARED"
[shares]
create_per_minute = 100000000
[shares.channels.hook]
type = "webhook"
url = "http://{local}/hook"
[shares.recipients]
"soak-recipient" = "hook"
[agents.soak]
grants = [
  {{ handle = "API", tools = ["http_request"] }},
  {{ handle = "LITE", tools = ["query_db"] }},
  {{ handle = "PG", tools = ["query_db"] }},
  {{ handle = "MY", tools = ["query_db"] }},
  {{ handle = "PGL", tools = ["request_lease"] }},
  {{ handle = "SHARED", tools = ["share_secret"] }},
]
"#,
                my_user = fx.my_user,
            ),
        )?;
        cfgs.push(cfg);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let lite_dsn = format!("sqlite://{}", lite.display());
    let pgl_dsn = format!("postgres://{pg_user}:{}@{pg_host}:{pg_port}/test", c.get("PGL"));
    for (name, value) in [
        ("API", c.get("API")),
        ("LITE", lite_dsn.as_str()),
        ("PG", c.get("PG")),
        ("MY", c.get("MY")),
        ("PGL", pgl_dsn.as_str()),
        ("SHARED", c.get("SHARED")),
    ] {
        airlock.secret_put(&cfgs[0], name, value)?;
    }
    let token = airlock.agent_add(&cfgs[0], "soak")?;
    let (mut procs, mut logs) = (Vec::new(), Vec::new());
    for (i, (cfg, base)) in cfgs.iter().zip(&bases).enumerate() {
        let log = dir.join(format!("serve-{i}.log"));
        procs.push(airlock.serve_logged(cfg, base, &log, "info").await?);
        logs.push(log);
    }
    Ok(Brokers { procs, bases, cfgs, logs, token })
}

// ---------------------------------------------------------------------------------------------
// The generator

#[derive(Default)]
struct KindStats {
    ok: u64,
    expected: u64,
    unexpected: u64,
    lat: Vec<f64>,
}

#[derive(Default)]
struct Worker {
    stats: HashMap<&'static str, KindStats>,
    request_ids: Vec<String>,
    errors: Vec<String>,
    leases_revoked: u64,
}

struct Run {
    client: reqwest::Client,
    bases: Vec<String>,
    token: String,
    table: String,
    shared: String,
    local: Arc<Local>,
    calls: AtomicU64,
    ops: AtomicU64,
    target: u64,
    deadline: Option<Instant>,
    stopped_early: AtomicBool,
    unexpected: AtomicU64,
}

/// One answer: its status and its JSON.
struct Answer {
    status: u16,
    v: Value,
}

impl Run {
    /// Sends one call, sweeps its body, times it.
    async fn send(&self, rq: reqwest::RequestBuilder) -> (Result<Answer>, f64) {
        let t0 = Instant::now();
        let r = async {
            let r = rq.send().await?;
            let status = r.status().as_u16();
            let body = r.bytes().await?;
            self.local.hits.record(&self.local.sweep, "answer bodies", &body);
            let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Ok(Answer { status, v })
        }
        .await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        (r, t0.elapsed().as_secs_f64())
    }

    fn invoke(&self, base: &str, tool: &str, args: Value) -> reqwest::RequestBuilder {
        self.client.post(format!("{base}/v1/invoke")).bearer_auth(&self.token).json(&json!({"tool": tool, "arguments": args}))
    }

    /// Counts an audited call: `check` says whether its answer is the one expected (`Ok(true)`:
    /// a success, `Ok(false)`: the expected error); its request id is kept.
    fn tally(&self, w: &mut Worker, kind: &'static str, (r, secs): (Result<Answer>, f64), check: impl FnOnce(&Answer) -> Result<bool>) -> Option<Value> {
        let st = w.stats.entry(kind).or_default();
        let outcome = r.and_then(|a| {
            match a.v["request_id"].as_str() {
                Some(id) => w.request_ids.push(id.to_owned()),
                None => bail!("status {}, no request_id: {}", a.status, self.local.sweep.redact(&a.v.to_string())),
            }
            let fine = check(&a).map_err(|e| {
                anyhow::anyhow!(
                    "{e}: status {} {} {}",
                    a.status,
                    a.v["error"]["code"].as_str().unwrap_or(""),
                    self.local.sweep.redact(a.v["error"]["message"].as_str().unwrap_or(""))
                )
            })?;
            Ok((fine, a.v))
        });
        match outcome {
            Ok((true, v)) => {
                st.ok += 1;
                st.lat.push(secs);
                Some(v)
            }
            Ok((false, _)) => {
                st.expected += 1;
                None
            }
            Err(e) => {
                st.unexpected += 1;
                self.unexpected.fetch_add(1, Ordering::Relaxed);
                if w.errors.len() < 20 {
                    w.errors.push(format!("{kind}: {}", self.local.sweep.redact(&format!("{e:#}"))));
                }
                None
            }
        }
    }

    fn unexpected(&self, w: &mut Worker, kind: &'static str, e: String) {
        w.stats.entry(kind).or_default().unexpected += 1;
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        if w.errors.len() < 20 {
            w.errors.push(format!("{kind}: {}", self.local.sweep.redact(&e)));
        }
    }

    async fn op(&self, w: &mut Worker, op: Op, home: &str, other: &str) {
        let t = &self.table;
        let rows = |a: &Answer| -> Result<bool> {
            if a.status == 200 && a.v["ok"] == true && a.v["result"]["row_count"] == 4 {
                Ok(true)
            } else {
                bail!("not 4 rows")
            }
        };
        match op {
            Op::Http => {
                let r = self.send(self.invoke(home, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"}))).await;
                self.tally(w, KINDS[0], r, |a| {
                    if a.status == 200 && a.v["ok"] == true && a.v["result"]["status"] == 200 {
                        Ok(true)
                    } else {
                        bail!("not an upstream 200")
                    }
                });
            }
            Op::Sqlite | Op::Postgres | Op::Mariadb => {
                let (h, kind) = match op {
                    Op::Sqlite => ("LITE", KINDS[1]),
                    Op::Postgres => ("PG", KINDS[2]),
                    _ => ("MY", KINDS[3]),
                };
                let r = self.send(self.invoke(home, "query_db", json!({"credential_handle": h, "query": format!("SELECT id, note FROM {t} ORDER BY id")}))).await;
                self.tally(w, kind, r, rows);
            }
            Op::Denied => {
                let r = self.send(self.invoke(home, "query_db", json!({"credential_handle": "LITE", "query": "SELECT x FROM other"}))).await;
                self.tally(w, KINDS[4], r, |a| {
                    if a.status == 403 && a.v["error"]["code"] == "table-not-allowed" {
                        Ok(false)
                    } else {
                        bail!("not refused table-not-allowed")
                    }
                });
            }
            Op::Share => {
                let r = self.send(self.invoke(home, "share_secret", json!({"credential_handle": "SHARED", "recipient": "soak-recipient"}))).await;
                let ok = |a: &Answer| if a.status == 200 && a.v["ok"] == true { Ok(true) } else { bail!("no share") };
                let Some(v) = self.tally(w, KINDS[5], r, ok) else { return };
                let Some(id) = v["result"]["share_id"].as_str() else {
                    return self.unexpected(w, KINDS[6], "no share_id in the result".into());
                };
                let Some(link) = self.local.links.lock().expect("links").remove(id) else {
                    return self.unexpected(w, KINDS[6], "the webhook got no link for the share".into());
                };
                if let Err(e) = self.consume(w, &link, other).await {
                    self.unexpected(w, KINDS[6], format!("{e:#}"));
                }
            }
            Op::Lease => {
                let args = json!({"credential_handle": "PGL", "scope": "read_only", "ttl_seconds": 60, "tables": [t]});
                let r = self.send(self.client.post(format!("{home}/v1/leases")).bearer_auth(&self.token).json(&args)).await;
                let ok = |a: &Answer| if a.status == 200 && a.v["ok"] == true { Ok(true) } else { bail!("no lease") };
                let Some(v) = self.tally(w, KINDS[7], r, ok) else { return };
                let (Some(handle), Some(id)) = (v["result"]["lease_handle"].as_str(), v["result"]["lease_id"].as_str()) else {
                    return self.unexpected(w, KINDS[7], "no lease_handle or lease_id".into());
                };
                let r = self.send(self.invoke(home, "query_db", json!({"credential_handle": handle, "query": format!("SELECT id, note FROM {t} ORDER BY id")}))).await;
                self.tally(w, KINDS[8], r, rows);
                let r = self.send(self.client.delete(format!("{other}/v1/leases/{id}")).bearer_auth(&self.token)).await;
                let revoked = self.tally(w, KINDS[9], r, |a| {
                    if a.status == 200 && a.v["result"]["status"] == "revoked" {
                        Ok(true)
                    } else {
                        bail!("not revoked")
                    }
                });
                if revoked.is_some() {
                    w.leases_revoked += 1;
                }
            }
        }
    }

    /// The link's consume through the REST route, and the secret opened from it.
    async fn consume(&self, w: &mut Worker, link: &str, base: &str) -> Result<()> {
        let l = airlock_share::Link::parse(link).map_err(|e| anyhow::anyhow!("the link does not parse: {e}"))?;
        let d = airlock_share::derive(&l.key, &l.id, None);
        let (r, secs) = self.send(self.client.post(format!("{base}/v1/shares/{}/consume", l.id)).json(&json!({"proof": d.proof().as_str()}))).await;
        let a = r?;
        if a.status != 200 {
            bail!("consume answered {} {}", a.status, a.v["error"]["code"]);
        }
        let blob = airlock_share::decode_blob(a.v["ciphertext"].as_str().unwrap_or(""))?;
        let limits = airlock_share::Limits {
            expires_at: a.v["expires_at"].as_i64().context("no expires_at")?,
            views: a.v["views"].as_u64().context("no views")? as u32,
            passphrase: false,
        };
        let plain = airlock_share::open(&blob, &d, &l.id, &limits).map_err(|e| anyhow::anyhow!("the share does not open: {e}"))?;
        if plain.expose_secret() != self.shared.as_bytes() {
            bail!("the share opened to another value than the handle's secret");
        }
        let st = w.stats.entry(KINDS[6]).or_default();
        st.ok += 1;
        st.lat.push(secs);
        Ok(())
    }
}

async fn generate(run: Arc<Run>, concurrency: usize) -> Result<Vec<Worker>> {
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Worker::default();
            let n = run.bases.len();
            let (home, other) = (run.bases[i % n].clone(), run.bases[(i + 1) % n].clone());
            while run.calls.load(Ordering::Relaxed) < run.target {
                if run.deadline.is_some_and(|d| Instant::now() >= d) {
                    run.stopped_early.store(true, Ordering::Relaxed);
                    break;
                }
                let op = op_of(run.ops.fetch_add(1, Ordering::Relaxed));
                run.op(&mut w, op, &home, &other).await;
            }
            w
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Samples

struct Sample {
    calls: u64,
    secs: f64,
    rss_kib: Vec<u64>,
    fds: Vec<usize>,
}

fn sample(pids: &[u32], calls: u64, secs: f64) -> Result<Sample> {
    let mut s = Sample { calls, secs, rss_kib: Vec::new(), fds: Vec::new() };
    for &p in pids {
        s.rss_kib.push(vm_rss_kib(p)?);
        s.fds.push(open_fds(p)?);
    }
    Ok(s)
}

fn print_row(s: &Sample, prev: Option<&Sample>) {
    let rate = prev.map(|p| (s.calls - p.calls) as f64 / (s.secs - p.secs).max(1e-9)).unwrap_or(0.0);
    let rss: Vec<String> = s.rss_kib.iter().map(|k| format!("{:>7.1}", *k as f64 / 1024.0)).collect();
    let fds: Vec<String> = s.fds.iter().map(|f| format!("{f:>4}")).collect();
    println!("  {:>8} {:>7.1} {:>8.0}   {}   {}", s.calls, s.secs, rate, rss.join(" "), fds.join(" "));
}

fn end_of(samples: &[Sample]) -> &Sample {
    samples.last().expect("at least the idle sample")
}

fn pct(a: f64, b: f64) -> f64 {
    100.0 * (b - a) / a
}

// ---------------------------------------------------------------------------------------------
// The audit

#[derive(Default)]
struct AuditCount {
    records: u64,
    finals: HashMap<String, u32>,
    intents: HashMap<String, u32>,
    other: BTreeMap<String, u64>,
}

/// Reads every audit record, sweeps it and counts it by request id.
async fn read_audit(store_url: Option<&str>, data_dir: &Path, sweep: &Sweep, hits: &Hits) -> Result<AuditCount> {
    let mut count = AuditCount::default();
    let mut last = 0i64;
    let pg = match store_url {
        Some(u) => Some(sqlx::PgPool::connect(u).await?),
        None => None,
    };
    let lite = match store_url {
        None => Some(sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", data_dir.join("store.db").display())).await?),
        Some(_) => None,
    };
    loop {
        let page: Vec<(i64, String, String, String, String)> = match (&pg, &lite) {
            (Some(p), _) => {
                sqlx::query_as("SELECT seq, ts, agent, tool, body FROM audit WHERE seq > $1 ORDER BY seq LIMIT 20000").bind(last).fetch_all(p).await?
            }
            (_, Some(l)) => {
                sqlx::query_as("SELECT seq, ts, agent, tool, body FROM audit WHERE seq > ? ORDER BY seq LIMIT 20000").bind(last).fetch_all(l).await?
            }
            _ => unreachable!(),
        };
        let Some(end) = page.last().map(|r| r.0) else { break };
        last = end;
        for (_, ts, agent, tool, body) in page {
            count.records += 1;
            for f in [&ts, &agent, &tool, &body] {
                hits.record(sweep, "audit records", f.as_bytes());
            }
            let v: Value = serde_json::from_str(&body).context("an audit body is not JSON")?;
            let id = v["request_id"].as_str().unwrap_or("").to_owned();
            match v["outcome"].as_str() {
                Some("started") => *count.intents.entry(id).or_default() += 1,
                _ if tool == "lease_revoked" => *count.other.entry(tool).or_default() += 1,
                _ => {
                    if count.finals.insert(id, 1).is_some() {
                        // Counted below against the request ids, as a second final record.
                        *count.other.entry(format!("{tool} (second final record of one request id)")).or_default() += 1;
                    }
                }
            }
        }
    }
    Ok(count)
}

/// `line` without its terminal colours.
fn strip_ansi(line: &str) -> String {
    let (mut plain, mut esc) = (String::new(), false);
    for ch in line.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain
}

/// A log line without its timestamp, digits as `#`, at most 110 characters: lines of one kind
/// look alike.
fn log_shape(line: &str) -> String {
    let mut plain = strip_ansi(line);
    // Up to the first field (`key=value`), which tells lines of one kind apart.
    if let Some(eq) = plain.find('=') {
        let cut = plain[..eq].rfind(' ').unwrap_or(eq);
        plain.truncate(cut);
    }
    let line = plain.as_str();
    let rest = line.split_once(' ').map(|(ts, r)| if ts.starts_with("20") { r } else { line }).unwrap_or(line);
    rest.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).take(110).collect()
}

/// Every file under `dir`, swept whole.
fn sweep_files(dir: &Path, place: &str, sweep: &Sweep, hits: &Hits) -> Result<(usize, u64)> {
    let (mut files, mut bytes) = (0usize, 0u64);
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            let (f, b) = sweep_files(&p, place, sweep, hits)?;
            files += f;
            bytes += b;
        } else if e.file_type()?.is_file() {
            let data = std::fs::read(&p)?;
            hits.record(sweep, place, &data);
            files += 1;
            bytes += data.len() as u64;
        }
    }
    Ok((files, bytes))
}

// ---------------------------------------------------------------------------------------------

struct Args {
    calls: u64,
    concurrency: usize,
    replicas: bool,
    max_seconds: Option<u64>,
}

fn args() -> Result<Args> {
    let mut a = Args { calls: 200_000, concurrency: 64, replicas: false, max_seconds: None };
    let mut pos = 0;
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--replicas" => a.replicas = true,
            "--max-seconds" => a.max_seconds = Some(it.next().context("--max-seconds needs a value")?.parse()?),
            _ if pos == 0 => {
                a.calls = s.parse().context("calls")?;
                pos += 1;
            }
            _ if pos == 1 => {
                a.concurrency = s.parse().context("concurrency")?;
                pos += 1;
            }
            _ => bail!("usage: airlock-bench-soak [calls] [concurrency] [--replicas] [--max-seconds S]"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let a = args()?;
    let airlock = Airlock::next_to_this()?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let pg_admin = std::env::var("AIRLOCK_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let my_admin = std::env::var("AIRLOCK_BENCH_MY").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let fx = Fixtures {
        pg_admin: pg_admin.clone(),
        my_admin,
        table: format!("soak_{tag}"),
        my_user: format!("soak_{tag}"),
        store_db: a.replicas.then(|| format!("airlock_soak_{tag}")),
    };
    let c = Canaries::new();
    let dir = tempfile::tempdir()?;
    let lite = dir.path().join(format!("lite-{}.db", c.get("LITE")));
    create_fixtures(&fx, &c, &lite).await?;
    let r = soak(&a, &airlock, &fx, &c, dir.path(), &lite).await;
    drop_fixtures(&fx).await;
    match r {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        Err(e) => Err(e),
    }
}

/// The run and its checks; false when a check failed.
async fn soak(a: &Args, airlock: &Airlock, fx: &Fixtures, c: &Canaries, dir: &Path, lite: &Path) -> Result<bool> {
    let sweep = Arc::new(Sweep::new(c)?);
    // The sweep finds what it looks for: each canary raw, in base64 at each offset, in hex.
    for (name, v) in &c.0 {
        for (form, text) in [
            ("raw", format!("x{v}y")),
            ("hex", format!("0x{}", hex::encode_upper(v))),
            ("base64", base64::engine::general_purpose::STANDARD.encode(format!("Bearer {v}"))),
            ("base64", base64::engine::general_purpose::URL_SAFE.encode(format!("ab{v}"))),
            ("base64", base64::engine::general_purpose::STANDARD.encode(format!("a{v}"))),
        ] {
            if !sweep.scan(text.as_bytes()).contains(&(*name, form)) {
                bail!("the sweep misses the {name} canary in {form}");
            }
        }
    }
    let hits = Arc::new(Hits::default());
    let local = Arc::new(Local { sweep: sweep.clone(), hits: hits.clone(), links: Mutex::new(HashMap::new()), webhook_payloads: AtomicU64::new(0) });
    let local_addr = serve_local(local.clone()).await?;
    let store_url = match &fx.store_db {
        Some(db) => Some(with_db(&fx.pg_admin, db)?),
        None => None,
    };
    let n = if a.replicas { 2 } else { 1 };
    let b = start_brokers(airlock, dir, n, store_url.as_deref(), fx, c, local_addr, lite).await?;
    let pids: Vec<u32> = b.procs.iter().map(|p| p.0.id()).collect();
    println!(
        "airlock-bench-soak: {} cores; {} calls at concurrency {}; {} (store.sync = full){}",
        std::thread::available_parallelism()?,
        a.calls,
        a.concurrency,
        if a.replicas { "two `airlock serve` on one PostgreSQL store database" } else { "one `airlock serve` on its SQLite store" },
        a.max_seconds.map(|s| format!("; the generator stops after {s} s")).unwrap_or_default()
    );
    let mix: Vec<String> = MIX.iter().map(|(op, n)| format!("{op:?} {n}")).collect();
    println!("mix per 400 operations: {} (Share = share_secret + consume, Lease = issue + query + revoke)", mix.join(", "));

    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency * 2).timeout(Duration::from_secs(60)).build()?;
    let run = Arc::new(Run {
        client: client.clone(),
        bases: b.bases.clone(),
        token: b.token.clone(),
        table: fx.table.clone(),
        shared: c.get("SHARED").to_owned(),
        local: local.clone(),
        calls: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        target: a.calls,
        deadline: a.max_seconds.map(|s| Instant::now() + Duration::from_secs(s)),
        stopped_early: AtomicBool::new(false),
        unexpected: AtomicU64::new(0),
    });

    println!("\n     calls       s  calls/s   RSS MiB{}   fds", if n == 2 { " (each replica)" } else { "" });
    let t0 = Instant::now();
    let mut samples = vec![sample(&pids, 0, 0.0)?];
    print_row(&samples[0], None);
    let gen = tokio::spawn(generate(run.clone(), a.concurrency));
    let mut next = SAMPLE_EVERY;
    while !gen.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = run.calls.load(Ordering::Relaxed);
        if done >= next {
            let s = sample(&pids, done, t0.elapsed().as_secs_f64())?;
            print_row(&s, samples.last());
            samples.push(s);
            next = (done / SAMPLE_EVERY + 1) * SAMPLE_EVERY;
        }
    }
    let workers = gen.await??;
    let secs = t0.elapsed().as_secs_f64();
    let total = run.calls.load(Ordering::Relaxed);
    let last = sample(&pids, total, secs)?;
    if samples.last().map(|s| s.calls) != Some(total) {
        print_row(&last, samples.last());
        samples.push(last);
    }
    let mut failures: Vec<String> = Vec::new();
    if run.stopped_early.load(Ordering::Relaxed) {
        println!("the generator stopped at --max-seconds: {total} calls of the {} asked", a.calls);
    }

    // The counts.
    let mut by_kind: BTreeMap<&str, KindStats> = BTreeMap::new();
    let (mut ids, mut errors, mut leases_revoked) = (Vec::new(), Vec::new(), 0u64);
    for w in workers {
        for (k, s) in w.stats {
            let e = by_kind.entry(k).or_default();
            e.ok += s.ok;
            e.expected += s.expected;
            e.unexpected += s.unexpected;
            e.lat.extend(s.lat);
        }
        ids.extend(w.request_ids);
        errors.extend(w.errors);
        leases_revoked += w.leases_revoked;
    }
    println!("\n{total} calls in {secs:.1} s = {:.0} calls/s", total as f64 / secs);
    println!("  {:<28} {:>8} {:>8} {:>10} {:>9} {:>9}", "kind", "ok", "expected", "unexpected", "p50 ms", "p99 ms");
    for k in KINDS {
        let Some(s) = by_kind.remove(k) else { continue };
        let l = Latencies::from_secs(s.lat);
        println!("  {k:<28} {:>8} {:>8} {:>10} {:>9.2} {:>9.2}", s.ok, s.expected, s.unexpected, l.p50() * 1e3, l.p99() * 1e3);
    }
    let unexpected = run.unexpected.load(Ordering::Relaxed);
    println!("unexpected errors: {unexpected}");
    for e in errors.iter().take(10) {
        println!("  {e}");
    }
    if unexpected > 0 {
        failures.push(format!("{unexpected} unexpected errors"));
    }

    // The curve. Flat: the highest value of the second half of the run is at most 10 % (memory)
    // or 8 descriptors above the highest of the first half after its first sample; the highest,
    // because the allocator's sawtooth makes any single sample a poor reference.
    let first = &samples[0];
    let at10k = samples.iter().find(|s| s.calls >= SAMPLE_EVERY).unwrap_or(end_of(&samples));
    let end = samples.last().expect("samples");
    let halves = |f: &dyn Fn(&Sample) -> f64| {
        let h1 = samples.iter().filter(|s| s.calls >= at10k.calls && s.calls <= total / 2).map(f).fold(f64::NAN, f64::max);
        let h2 = samples.iter().filter(|s| s.calls > total / 2).map(f).fold(f64::NAN, f64::max);
        (h1, h2)
    };
    let mut judged = true;
    println!("\neach broker: idle, after the first {SAMPLE_EVERY} calls, at the end; the highest of the first and of the second half of the run:");
    for i in 0..pids.len() {
        let mib = |s: &Sample| s.rss_kib[i] as f64 / 1024.0;
        let fds = |s: &Sample| s.fds[i] as f64;
        let (r1, r2) = halves(&mib);
        let (f1, f2) = halves(&fds);
        println!(
            "  broker {i}: RSS {:.1} / {:.1} / {:.1} MiB ({:+.1} % from {} calls to the end); highest {r1:.1} then {r2:.1} MiB ({:+.1} %)",
            mib(first),
            mib(at10k),
            mib(end),
            pct(mib(at10k), mib(end)),
            at10k.calls,
            pct(r1, r2),
        );
        println!(
            "            fds {} / {} / {} ({:+.1} % from {} calls to the end); highest {f1} then {f2} ({:+.1} %)",
            first.fds[i],
            at10k.fds[i],
            end.fds[i],
            pct(fds(at10k), fds(end)),
            at10k.calls,
            pct(f1, f2),
        );
        if r1.is_nan() || r2.is_nan() {
            println!("            too short to judge: no sample after the first {SAMPLE_EVERY} calls in one of the halves");
            judged = false;
            continue;
        }
        if r2 > r1 * 1.10 {
            failures.push(format!("broker {i}: RSS not flat, highest {r1:.1} MiB in the first half, {r2:.1} MiB in the second ({:+.1} %)", pct(r1, r2)));
        }
        if f2 > f1 + 8.0 {
            failures.push(format!("broker {i}: descriptors not flat, highest {f1} in the first half, {f2} in the second"));
        }
    }

    // Leases: none left live.
    let r = client.get(format!("{}/v1/leases", b.bases[0])).bearer_auth(&b.token).send().await?;
    let body = r.bytes().await?;
    hits.record(&sweep, "answer bodies", &body);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let list = v["leases"].as_array().or_else(|| v["result"]["leases"].as_array()).or_else(|| v.as_array()).cloned().unwrap_or_default();
    let live = list.iter().filter(|l| l["status"] != "revoked").count();
    println!("\nleases: {leases_revoked} revoked by the generator; GET /v1/leases lists {}, {live} not revoked", list.len());
    if live > 0 {
        failures.push(format!("{live} leases not revoked"));
    }

    // Stop the brokers: their logs are complete, the store is theirs no more.
    let Brokers { procs, cfgs, logs, .. } = b;
    for mut p in procs {
        let _ = terminate(&mut p);
    }

    // The audit: the chain, then one final record per call.
    let verify = std::process::Command::new(airlock.path()).arg("--config").arg(&cfgs[0]).args(["audit", "verify"]).output()?;
    let vout = String::from_utf8_lossy(&verify.stdout).into_owned() + &String::from_utf8_lossy(&verify.stderr);
    hits.record(&sweep, "audit verify output", vout.as_bytes());
    println!("\n`airlock audit verify`: {}", sweep.redact(vout.trim()));
    if !verify.status.success() {
        failures.push("audit verify failed".into());
    }
    let data_dir = dir.join("airlock-data");
    let ac = read_audit(store_url.as_deref(), &data_dir, &sweep, &hits).await?;
    let distinct: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let dup_ids = ids.len() - distinct.len();
    let missing = distinct.iter().filter(|id| !ac.finals.contains_key(**id)).count();
    let strangers: Vec<&String> = ac.finals.keys().filter(|id| !distinct.contains(id.as_str())).collect();
    let intents_unmatched = ac.intents.keys().filter(|id| !distinct.contains(id.as_str())).count();
    let double_intents = ac.intents.values().filter(|&&n| n > 1).count();
    let intents: u32 = ac.intents.values().sum();
    println!(
        "audit: {} records = {} final records + {} intent records + {}; the generator got {} request ids ({} calls were share consumes, which are not audited calls)",
        ac.records,
        ac.finals.len(),
        intents,
        if ac.other.is_empty() { "nothing else".to_owned() } else { ac.other.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ") },
        ids.len(),
        total - ids.len() as u64
    );
    println!(
        "  request ids answered twice: {dup_ids}; without a final record: {missing}; final records of no answered call: {}; intent records of no answered call: {intents_unmatched}; request ids with two intent records: {double_intents}",
        strangers.len()
    );
    let second_finals: u64 = ac.other.iter().filter(|(k, _)| k.contains("second final")).map(|(_, v)| v).sum();
    let lease_events = ac.other.get("lease_revoked").copied().unwrap_or(0);
    if dup_ids > 0 || missing > 0 || !strangers.is_empty() || intents_unmatched > 0 || double_intents > 0 || second_finals > 0 {
        failures.push("the audit does not hold exactly one final record per call".into());
    }
    if lease_events != leases_revoked {
        failures.push(format!("{lease_events} lease_revoked records for {leases_revoked} revoked leases"));
    }
    if ac.other.keys().any(|k| k != "lease_revoked" && !k.contains("second final")) {
        failures.push("records of unexpected kinds in the audit".into());
    }

    // The sweep of what is at rest: the store's files (SQLite) and the logs.
    if store_url.is_none() {
        let (f, by) = sweep_files(&data_dir, "data directory files", &sweep, &hits)?;
        println!("swept the data directory: {f} files, {:.1} MB", by as f64 / 1e6);
    }
    let mut log_bytes = 0;
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    let mut warnings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &logs {
        let data = std::fs::read(l)?;
        log_bytes += data.len();
        hits.record(&sweep, "broker logs", &data);
        for line in String::from_utf8_lossy(&data).lines() {
            let shape = log_shape(&sweep.redact(line));
            *lines.entry(shape.clone()).or_default() += 1;
            if shape.contains("WARN") || shape.contains("ERROR") {
                let seen = warnings.entry(shape).or_default();
                if seen.len() < 2 {
                    seen.push(strip_ansi(&sweep.redact(line)));
                }
            }
        }
    }
    println!("swept the brokers' logs (RUST_LOG=info): {log_bytes} bytes, {} lines; the most frequent, digits as #:", lines.values().sum::<u64>());
    let mut top: Vec<_> = lines.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    for (shape, n) in top.iter().take(8) {
        println!("  {n:>7}  {shape}");
    }
    for (_, seen) in warnings {
        for w in seen {
            println!("  e.g. {w}");
        }
    }
    println!("webhook payloads received: {}", local.webhook_payloads.load(Ordering::Relaxed));
    let found = hits.total();
    println!("canary sweep ({} canaries, raw, base64 at 3 alignments, hex): {found} hits", c.0.len());
    for ((place, name, form), n) in hits.0.lock().expect("hits").iter() {
        println!("  {n} in {place}: the {name} canary, {form}");
    }
    if found > 0 {
        failures.push(format!("{found} canary hits"));
    }

    println!();
    if failures.is_empty() {
        let flat = if judged { "memory and descriptors flat" } else { "memory and descriptors not judged (too short)" };
        println!("SOAK PASSED: {total} calls, 0 unexpected errors, {flat}, audit verified with one final record per call, no canary found");
        Ok(true)
    } else {
        for f in &failures {
            println!("SOAK FAILED: {f}");
        }
        Ok(false)
    }
}

/// Asks a broker to stop (SIGTERM) and waits up to 10 s for it, so its log is complete; killed
/// after that when it is dropped.
fn terminate(p: &mut Proc) -> Result<()> {
    std::process::Command::new("kill").arg("-TERM").arg(p.0.id().to_string()).status()?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if p.0.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
