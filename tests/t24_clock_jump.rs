//! The wall clock jumping under a running `airlock serve` (issue 24, item 4): the broker runs
//! under libfaketime, whose offset the test rewrites while it serves (`+0`, then `+2h`, then
//! `+0` again), as when NTP steps a clock that drifted or a suspended VM resumes.
//!
//! Before the jump: a one-time link made by `share_secret` and one uploaded anonymously, both
//! expiring in a minute, and a control link good for a day; a PostgreSQL lease of 60 s (a real
//! role) and a control lease of 3 h; a write held for approval (60 s); a sub-agent of 60 s.
//! After the jump forward: the short links answer `share-unavailable` without their ciphertext
//! and their receipt says unopened; the lease answers `handle-unavailable`, the reaper revokes it
//! (audited as expired) and its role leaves `pg_roles`; the approval is expired, cannot be
//! approved, and the write never ran; the sub-agent's token is refused; the control link opens,
//! the control lease and ordinary calls work, and `airlock audit verify` passes. After the jump
//! back: none of that comes back to life.
//!
//! Only the wall clock is faked (`FAKETIME_DONT_FAKE_MONOTONIC=1`). A real step of the clock
//! (settimeofday, NTP, a resumed VM) moves CLOCK_REALTIME, never CLOCK_MONOTONIC, which never
//! goes back. Faked as well, the monotonic clock going back two hours puts every new tokio
//! deadline behind the timer wheel, so it fires at once: an ordinary SQLite `query_db` after the
//! jump back was answered `upstream-timeout`. That is libfaketime, not a clock a host has.
//!
//! Needs libfaketime (`apt-get install faketime`) and PostgreSQL at 127.0.0.1:5432 (trust, db
//! `test`, user `postgres`); without them it prints `skipped: ...`, and fails under
//! `AIRLOCK_REQUIRE_SERVICES=1`. `cargo test -p airlock --test t24_clock_jump -- --nocapture`
//! prints what it saw.

mod common;

use airlock_share::NewShare;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The one-time links' content: distinctive, so a leak would show.
const NOTE: &str = "canaryClockJump_Vq31Lz";

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !Path::new(FAKETIME).exists() {
        return Some(format!("{FAKETIME} is missing (apt-get install faketime)"));
    }
    if std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(2)).is_err() {
        return Some("PostgreSQL at 127.0.0.1:5432 is unreachable".into());
    }
    None
}

/// Skips (prints why) or, with AIRLOCK_REQUIRE_SERVICES=1, fails.
fn skip_or_fail() -> bool {
    if let Some(why) = missing() {
        if common::require() {
            panic!("AIRLOCK_REQUIRE_SERVICES=1 but {why}");
        }
        println!("skipped: {why}");
        return true;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The broker's clock: libfaketime reads the offset from this file at every clock read.
struct Clock(PathBuf);
impl Clock {
    /// Replaced in one rename, so the broker never reads a half-written offset.
    fn set(&self, offset: &str) {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
        println!("clock: {offset}");
    }
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `airlock init`, an SQLite app database, the PostgreSQL lease handle, approvals on writes, a
/// recipient with an outbox, agent `bot` and approver `alice`. Returns (bot token, approver token).
fn configure(dir: &Path, port: u16, table: &str) -> (String, String) {
    let o = common::airlock_in(dir, &["init"], None, &[]);
    assert!(o.status.success(), "{}", out(&o));
    let app = dir.join("app.db");
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", app.display())).await.unwrap();
            sqlx::raw_sql("CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one');").execute(&mut c).await.unwrap();
        })
    });
    let mut cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    cfg = cfg.replace("[policy]\n", "").replace("files = []\n", "").replace("rate_per_minute = 600", "rate_per_minute = 100000");
    cfg = cfg.replace("listen = \"127.0.0.1:7878\"", &format!("listen = \"127.0.0.1:{port}\"\nsocket = \"off\""));
    cfg.push_str(&format!(
        r#"
[handles.APP]
kind = "sqlite"
secret = "local:APP"
[handles.APP.database]
scope = "read_write"
tables = ["t"]
[handles.APP.approval]
writes = true
expires_in_seconds = 60

[handles.PGL]
kind = "postgres"
secret = "local:PGL"
[handles.PGL.database]
tables = ["{table}"]
[handles.PGL.lease]
dynamic = true
max_ttl_seconds = 86400

[handles.NOTE]
kind = "generic"
secret = "local:NOTE"

[agents.bot]
grants = [
  {{ handle = "APP", tools = ["query_db"] }},
  {{ handle = "PGL", tools = ["query_db", "request_lease"] }},
  {{ handle = "NOTE", tools = ["share_secret"] }},
]

[shares]
create_per_minute = 100000
[shares.channels.box]
type = "outbox"
path = "outbox.jsonl"
[shares.recipients]
"alice@example.com" = "box"
"#
    ));
    std::fs::write(dir.join("airlock.toml"), cfg).unwrap();
    for (name, value) in [("APP", format!("sqlite://{}?mode=rw", app.display())), ("PGL", PG.to_owned()), ("NOTE", NOTE.to_owned())] {
        let o = common::airlock_in(dir, &["secret", "put", name], Some(&format!("{value}\n")), &[]);
        assert!(o.status.success(), "{}", out(&o));
    }
    let o = common::airlock_in(dir, &["agent", "add", "bot"], None, &[]);
    assert!(o.status.success(), "{}", out(&o));
    let bot = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let o = common::airlock_in(dir, &["approver", "add", "alice"], None, &[]);
    assert!(o.status.success(), "{}", out(&o));
    let alice = String::from_utf8_lossy(&o.stdout).split_whitespace().find(|w| w.starts_with("apr_")).expect("an apr_ token").to_owned();
    (bot, alice)
}

/// `airlock serve` under libfaketime, its offset read from `clock` at every clock read.
async fn serve(dir: &Path, clock: &Clock, base: &str, client: &reqwest::Client) -> common::Server {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child: Child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env("RUST_LOG", "info")
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &clock.0)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut s = common::Server(child);
    let t0 = Instant::now();
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return s;
        }
        assert!(s.0.try_wait().unwrap().is_none(), "airlock serve exited: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
        assert!(t0.elapsed() < Duration::from_secs(60), "airlock serve did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call's status and body.
async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().or(v["code"].as_str()).unwrap_or("")
}

struct Api {
    base: String,
    client: reqwest::Client,
    bot: String,
}

impl Api {
    async fn invoke_as(&self, token: &str, tool: &str, args: Value) -> (u16, Value) {
        send(self.client.post(format!("{}/v1/invoke", self.base)).bearer_auth(token).json(&json!({"tool": tool, "arguments": args}))).await
    }
    async fn invoke(&self, tool: &str, args: Value) -> (u16, Value) {
        self.invoke_as(&self.bot, tool, args).await
    }
    async fn consume(&self, id: &str, proof: &str) -> (u16, Value) {
        send(self.client.post(format!("{}/v1/shares/{id}/consume", self.base)).json(&json!({"proof": proof}))).await
    }
    async fn receipt(&self, id: &str) -> (u16, Value) {
        send(self.client.get(format!("{}/v1/shares/{id}", self.base)).bearer_auth(&self.bot)).await
    }
    async fn approval(&self, apr: &str, id: &str, verb: Option<&str>) -> (u16, Value) {
        match verb {
            Some(v) => send(self.client.post(format!("{}/v1/approvals/{id}/{v}", self.base)).bearer_auth(apr)).await,
            None => send(self.client.get(format!("{}/v1/approvals/{id}", self.base)).bearer_auth(apr)).await,
        }
    }
    async fn lease_status(&self, id: &str) -> String {
        let (s, v) = send(self.client.get(format!("{}/v1/leases", self.base)).bearer_auth(&self.bot)).await;
        assert_eq!(s, 200, "{v}");
        let all = v["leases"].as_array().unwrap_or_else(|| panic!("no leases in {v}")).clone();
        let l = all.iter().find(|l| l["lease_id"] == id).unwrap_or_else(|| panic!("lease {id} not listed: {v}"));
        l["status"].as_str().unwrap().to_owned()
    }
    /// An ordinary call: the broker keeps serving.
    async fn ordinary(&self) {
        let (s, v) = self.invoke("query_db", json!({"credential_handle": "APP", "query": "SELECT id, v FROM t ORDER BY id"})).await;
        assert_eq!(s, 200, "an ordinary call: {v}");
    }
    /// Rows of the app table with id 99 (the held write's row), read as the agent.
    async fn held_rows(&self) -> i64 {
        let (s, v) = self.invoke("query_db", json!({"credential_handle": "APP", "query": "SELECT count(*) FROM t WHERE id = 99"})).await;
        assert_eq!(s, 200, "{v}");
        v["result"]["rows"][0][0].as_i64().unwrap()
    }
}

async fn pg(sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

/// This installation's lease roles in `pg_roles`.
async fn roles(inst: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1")
        .bind(format!("airlock\\_l\\_{inst}\\_%"))
        .fetch_all(&mut c)
        .await
        .unwrap()
}

/// What a run leaves in PostgreSQL, dropped even when an assertion fails on the way: the lease
/// roles of this installation (a passing run has the broker revoke them) and the test's table.
struct Leftovers {
    table: String,
    inst: Option<String>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let (table, inst) = (self.table.clone(), self.inst.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Some(inst) = inst {
                    for r in roles(&inst).await {
                        pg(&format!("DROP OWNED BY \"{r}\"; DROP ROLE \"{r}\"")).await;
                    }
                }
                pg(&format!("DROP TABLE IF EXISTS {table}")).await;
            })
        })
        .join();
    }
}

/// The audit records, oldest first.
async fn audit(dir: &Path) -> Vec<Value> {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", dir.join("airlock-data/store.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let bodies: Vec<(String,)> = sqlx::query_as("SELECT body FROM audit ORDER BY rowid").fetch_all(&mut c).await.unwrap();
    bodies.into_iter().map(|(b,)| serde_json::from_str(&b).unwrap()).collect()
}

fn verify(dir: &Path) {
    let o = common::airlock_in(dir, &["audit", "verify"], None, &[]);
    assert!(o.status.success(), "airlock audit verify: {}", out(&o));
}

/// A link the test holds: its id and the proof that opens it.
struct Link {
    id: String,
    proof: String,
}

/// Uploads an anonymous link expiring `secs` from now.
async fn upload(api: &Api, secs: i64) -> (Link, String) {
    let exp = chrono::Utc::now().timestamp() + secs;
    let s = NewShare::create(NOTE.as_bytes(), None, exp, 1, 1 << 20).unwrap();
    let (ct, ph) = s.request_fields();
    let body = json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1});
    let (st, v) = send(api.client.post(format!("{}/v1/shares", api.base)).json(&body)).await;
    assert_eq!(st, 201, "{v}");
    let proof = airlock_share::derive(&s.key, &s.id, None).proof().to_string();
    (Link { id: s.id, proof }, ct)
}

/// `share_secret` of NOTE to alice, expiring in `secs`; the link read from the outbox.
async fn share(api: &Api, dir: &Path, secs: u64) -> Link {
    let (s, v) = api.invoke("share_secret", json!({"credential_handle": "NOTE", "recipient": "alice@example.com", "expires_in": secs})).await;
    assert_eq!(s, 200, "{v}");
    let id = v["result"]["share_id"].as_str().unwrap().to_owned();
    let outbox = std::fs::read_to_string(dir.join("outbox.jsonl")).unwrap();
    let line: Value = outbox.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["share_id"] == id.as_str()).unwrap();
    let link = airlock_share::Link::parse(line["link"].as_str().unwrap()).unwrap();
    let proof = airlock_share::derive(&link.key, &link.id, None).proof().to_string();
    Link { id, proof }
}

/// A link that must not open: `share-unavailable`, no ciphertext, and (for the agent's) an
/// unopened receipt when there still is one.
async fn assert_closed(api: &Api, l: &Link, what: &str) {
    let (s, v) = api.consume(&l.id, &l.proof).await;
    assert_eq!((s, code(&v)), (404, "share-unavailable"), "{what} opened: {v}");
    assert!(v.get("ciphertext").is_none(), "{what}: {v}");
    let (s, r) = api.receipt(&l.id).await;
    if s == 200 {
        assert_eq!((&r["opened"], &r["views_used"]), (&json!(false), &json!(0)), "{what}: {r}");
    }
}

/// Polls `f` until it is true or `deadline` passes (a bound on waiting, not a timing claim).
async fn eventually<F: AsyncFnMut() -> bool>(deadline: Duration, mut f: F) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_a_clock_jump_ends_links_leases_approvals_and_sub_agents_and_nothing_comes_back() {
    if skip_or_fail() {
        return;
    }
    let t_start = Instant::now();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let table = format!("clock_jump_{}", std::process::id());
    pg(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1), (2);")).await;
    // Declared before the server: dropped after it.
    let mut leftovers = Leftovers { table: table.clone(), inst: None };
    let port = free_port();
    let (bot, alice) = configure(dir, port, &table);
    let clock = Clock(dir.join("faketime.offset"));
    clock.set("+0");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let _server = serve(dir, &clock, &base, &client).await;
    let api = Api { base, client, bot };
    let inst = std::fs::read_to_string(dir.join("airlock-data/installation.id")).unwrap().trim().to_owned();
    leftovers.inst = Some(inst.clone());

    // ---- Before the jump.
    api.ordinary().await;
    let shared = share(&api, dir, 60).await;
    let (uploaded, _) = upload(&api, 60).await;
    let (control_link, control_ct) = upload(&api, 86400).await;
    let (s, r) = api.receipt(&shared.id).await;
    assert_eq!((s, &r["opened"]), (200, &json!(false)), "{r}");

    let lease = |ttl: u64| {
        let api = &api;
        let table = table.clone();
        async move {
            let (s, v) = send(
                api.client
                    .post(format!("{}/v1/leases", api.base))
                    .bearer_auth(&api.bot)
                    .json(&json!({"credential_handle": "PGL", "scope": "read_only", "ttl_seconds": ttl, "tables": [table]})),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            (v["result"]["lease_id"].as_str().unwrap().to_owned(), v["result"]["lease_handle"].as_str().unwrap().to_owned())
        }
    };
    let read = |h: String| {
        let api = &api;
        let q = format!("SELECT count(*) FROM {table}");
        async move { api.invoke("query_db", json!({"credential_handle": h, "query": q})).await }
    };
    let (short_id, short_h) = lease(60).await;
    let before = roles(&inst).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let short_role = before[0].clone();
    let (control_id, control_h) = lease(3 * 3600).await;
    let (s, v) = read(short_h.clone()).await;
    assert_eq!((s, &v["result"]["rows"][0][0]), (200, &json!(2)), "the lease works before the jump: {v}");
    assert_eq!(roles(&inst).await.len(), 2);

    let write = json!({"credential_handle": "APP", "query": "INSERT INTO t VALUES (99, 'held')"});
    let (s, v) = api.invoke("query_db", write.clone()).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    let held = v["error"]["approval"]["id"].as_str().unwrap().to_owned();
    let (s, v) = api.approval(&alice, &held, None).await;
    assert_eq!((s, &v["approval"]["status"]), (200, &json!("pending")), "{v}");

    let (s, v) = send(
        api.client
            .post(format!("{}/v1/agents/self/children", api.base))
            .bearer_auth(&api.bot)
            .json(&json!({"name": "kid", "grants": [{"handle": "APP", "tools": ["query_db"]}], "ttl_seconds": 60})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let kid = v["token"].as_str().or(v["result"]["token"].as_str()).unwrap_or_else(|| panic!("no token in {v}")).to_owned();
    let kid_call = json!({"credential_handle": "APP", "query": "SELECT id FROM t"});
    let (s, v) = api.invoke_as(&kid, "query_db", kid_call.clone()).await;
    assert_eq!(s, 200, "the sub-agent works before the jump: {v}");

    // ---- Two hours forward, while serving.
    clock.set("+2h");
    let t_jump = Instant::now();
    api.ordinary().await;

    // One-time links past their expiry no longer open; the control link does.
    assert_closed(&api, &shared, "share_secret's link after the jump").await;
    assert_closed(&api, &uploaded, "an uploaded link after the jump").await;
    let (s, v) = api.consume(&control_link.id, &control_link.proof).await;
    assert_eq!((s, v["ciphertext"].as_str()), (200, Some(control_ct.as_str())), "a link good for a day: {v}");

    // The short lease is refused at once and the reaper drops its role.
    let (s, v) = read(short_h.clone()).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "an expired lease was used: {v}");
    let gone = eventually(Duration::from_secs(30), async || !roles(&inst).await.contains(&short_role)).await;
    assert!(gone, "the expired lease's role {short_role} is still in pg_roles");
    let t_role = t_jump.elapsed();
    // The reaper marks the lease revoked once the role is gone, so the status follows the role
    // by one store write: waited for, not read at the instant the role disappears.
    let revoked = eventually(Duration::from_secs(30), async || api.lease_status(&short_id).await == "revoked").await;
    assert!(revoked, "the expired lease {short_id} did not end revoked: {}", api.lease_status(&short_id).await);
    let (s, v) = read(control_h.clone()).await;
    assert_eq!((s, &v["result"]["rows"][0][0]), (200, &json!(2)), "a lease of 3 h after a jump of 2 h: {v}");

    // The held write's approval lapsed: it cannot be approved, and the write never ran.
    let (s, v) = api.approval(&alice, &held, None).await;
    assert_eq!((s, &v["approval"]["status"]), (200, &json!("expired")), "{v}");
    let (s, v) = api.approval(&alice, &held, Some("approve")).await;
    assert_eq!((s, code(&v)), (409, "conflict"), "an expired approval was approved: {v}");
    let (s, v) = api.invoke("query_db", write.clone()).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_ne!(v["error"]["approval"]["id"].as_str(), Some(held.as_str()), "the lapsed approval was reused");
    let renewed = v["error"]["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(api.held_rows().await, 0, "the held write ran");

    // The sub-agent's life is over.
    let (s, v) = api.invoke_as(&kid, "query_db", kid_call.clone()).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "an expired sub-agent's call: {v}");

    verify(dir);

    // ---- Back to the true time: nothing that ended comes back.
    clock.set("+0");
    api.ordinary().await;
    assert_closed(&api, &shared, "share_secret's link after the jump back").await;
    assert_closed(&api, &uploaded, "an uploaded link after the jump back").await;
    let (s, v) = read(short_h.clone()).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "a revoked lease after the jump back: {v}");
    assert!(!roles(&inst).await.contains(&short_role));
    let (s, v) = api.approval(&alice, &held, Some("approve")).await;
    assert_eq!((s, code(&v)), (409, "conflict"), "a lapsed approval was approved after the jump back: {v}");
    let (s, v) = api.invoke("query_db", write.clone()).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_eq!(api.held_rows().await, 0, "the held write ran");
    let (s, v) = api.invoke_as(&kid, "query_db", kid_call.clone()).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "an expired sub-agent's call after the jump back: {v}");

    // The audit: the lease revoked as expired by the reaper, the held write never executed, no
    // link's content in any record, and the chain verifies.
    let records = audit(dir).await;
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(NOTE), "the link's content is in the audit");
    assert!(
        records.iter().any(|r| r["tool"] == "lease_revoked"
            && r["arguments"]["lease_id"] == short_id.as_str()
            && r["arguments"]["revoked_by"] == "reaper"
            && r["arguments"]["reason"] == "expired"),
        "no lease_revoked record by the reaper for the expired lease: {:?}",
        records.iter().filter(|r| r["tool"] == "lease_revoked").collect::<Vec<_>>()
    );
    for id in [&held, &renewed] {
        let ran: Vec<_> = records.iter().filter(|r| r["approval"] == id.as_str() && r["tool"] == "query_db" && r["outcome"] == "ok").collect();
        assert!(ran.is_empty(), "the held write was executed: {ran:?}");
    }
    verify(dir);

    // Clean up: the control lease revoked through the API, no role of this installation left.
    let (s, v) = send(api.client.delete(format!("{}/v1/leases/{control_id}", api.base)).bearer_auth(&api.bot)).await;
    assert_eq!((s, &v["result"]["status"]), (200, &json!("revoked")), "{v}");
    let left = roles(&inst).await;
    assert!(left.is_empty(), "roles left behind: {left:?}");
    println!(
        "expired lease's role dropped {:.1} s after the jump; {} audit records, chain verifies; whole run {:.1} s",
        t_role.as_secs_f64(),
        records.len(),
        t_start.elapsed().as_secs_f64()
    );
}
