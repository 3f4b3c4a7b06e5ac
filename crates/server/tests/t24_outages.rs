//! Outages and resource faults against real components (issue 24, item 4): OpenBao stopped and
//! started, upstream APIs that hang at every point of an answer, the store's disk full, and a
//! private PostgreSQL restarted under load (as a `query_db` database and as the broker's store).
//!
//! Each scenario asserts the broker fails closed with a stable code, never hangs past the bound
//! its configuration sets, keeps one audit record per answered call, and recovers on its own
//! once the component is back, without a restart. Scenarios that need root (a tmpfs mount, a
//! private PostgreSQL run as the `postgres` user) or `bao` print `skipped: ...` without them,
//! unless `AIRLOCK_REQUIRE_SERVICES=1`, where they fail.
//!
//! `cargo test -p airlock-server --test t24_outages -- --nocapture` prints the figures.

mod common;

use airlock_core::config::Config;
use airlock_core::Secret;
use airlock_store::audit::{AuditKey, AuditRecord};
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use common::{code, Fixture};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn require() -> bool {
    std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Skips (prints why) or, with AIRLOCK_REQUIRE_SERVICES=1, fails.
fn skip(what: &str) {
    if require() {
        panic!("{what} (required: AIRLOCK_REQUIRE_SERVICES=1)");
    }
    println!("skipped: {what}");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One answered (or unanswered) call: status 0 means the broker's answer never came.
#[derive(Debug, Clone)]
struct Call {
    status: u16,
    body: Value,
    elapsed: Duration,
    /// When the call was sent, from the scenario's start.
    at: Duration,
}

impl Call {
    fn code(&self) -> &str {
        if self.status == 200 {
            "ok"
        } else {
            code(&self.body)
        }
    }
    fn request_id(&self) -> Option<&str> {
        self.body["request_id"].as_str()
    }
}

/// A client that gives up after `limit`: a broker that hangs shows up as status 0, not as a
/// test that never ends.
fn client(limit: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(limit).build().unwrap()
}

async fn invoke(c: &reqwest::Client, base: &str, token: &str, tool: &str, args: Value, t0: Instant) -> Call {
    let start = Instant::now();
    let r = c.post(format!("{base}/v1/invoke")).bearer_auth(token).json(&json!({"tool": tool, "arguments": args})).send().await;
    let (status, body) = match r {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    };
    Call { status, body, elapsed: start.elapsed(), at: start.duration_since(t0) }
}

/// Every audit record of the store, by request id (an intent record, `started`, shares its
/// call's id).
async fn audit_by_request(store: &Store) -> HashMap<String, Vec<AuditRecord>> {
    let mut m: HashMap<String, Vec<AuditRecord>> = HashMap::new();
    for (_, r) in store.audit_tail(10_000_000).await.unwrap() {
        m.entry(r.request_id.clone()).or_default().push(r);
    }
    m
}

/// The call's one final record (not its intent record), checked against its answer.
fn assert_one_record(audit: &HashMap<String, Vec<AuditRecord>>, c: &Call) {
    let id = c.request_id().unwrap_or_else(|| panic!("an answer without a request id: {} {}", c.status, c.body));
    let recs = audit.get(id).map(Vec::as_slice).unwrap_or(&[]);
    let finals: Vec<&AuditRecord> = recs.iter().filter(|r| r.outcome != "started").collect();
    assert_eq!(finals.len(), 1, "call {id} ({}) has {} final audit records", c.code(), finals.len());
    assert!(recs.len() - finals.len() <= 1, "call {id} has more than one intent record");
    let r = finals[0];
    if c.status == 200 {
        assert_eq!((r.outcome.as_str(), r.code.as_deref()), ("ok", None), "call {id}");
    } else {
        assert_eq!(r.outcome, "error", "call {id}");
        assert_eq!(r.code.as_deref(), Some(c.code()), "call {id}: the audit names the code the caller got");
    }
}

async fn verify_chain(store: &Store, data_dir: &Path) {
    let pk = AuditKey::load_public(data_dir).unwrap();
    let report = store.verify_audit(&pk).await.unwrap();
    assert!(report.ok(), "the audit chain verifies: {report:?}");
}

/// No answer carries the value: checked without printing it.
fn assert_absent(calls: &[Call], secret: &str) {
    for c in calls {
        assert!(!c.body.to_string().contains(secret), "an answer ({}) carries a secret value", c.code());
    }
}

fn counts(calls: &[Call]) -> String {
    let mut m: std::collections::BTreeMap<String, usize> = Default::default();
    for c in calls {
        *m.entry(format!("{} {}", c.status, c.code())).or_default() += 1;
    }
    format!("{m:?}")
}

// ---------------------------------------------------------------------------------------------
// 1. OpenBao stopped and started

const BAO_ROOT: &str = "airlock-outage-root-token";
const BAO_SECRET: &str = "canaryOutageBao_4TqZ8wPn2Lx";
/// `[vaults.X] cache_ttl_seconds` in this scenario.
const BAO_CACHE_TTL: u64 = 1;

fn bao_installed() -> bool {
    Command::new("bao").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

fn bao_spawn(port: u16, dir: &Path) -> std::process::Child {
    let log = std::fs::File::create(dir.join(format!("bao-{port}-{}.log", rand::random::<u32>()))).unwrap();
    Command::new("bao")
        .args(["server", "-dev", &format!("-dev-root-token-id={BAO_ROOT}"), &format!("-dev-listen-address=127.0.0.1:{port}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start bao")
}

async fn bao_ready(port: u16) -> bool {
    let c = client(Duration::from_secs(2));
    for _ in 0..200 {
        if let Ok(r) = c.get(format!("http://127.0.0.1:{port}/v1/sys/health")).send().await {
            if r.status().as_u16() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn bao_put(port: u16, path: &str, data: Value) {
    let r = client(Duration::from_secs(5))
        .post(format!("http://127.0.0.1:{port}/v1/secret/data/{path}"))
        .header("X-Vault-Token", BAO_ROOT)
        .json(&json!({"data": data}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "KV put: {}", r.status());
}

struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_openbao_stopped_fails_closed_and_recovers_without_restart() {
    if !bao_installed() {
        return skip("the OpenBao binary `bao` is not installed");
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut port = free_port();
    let mut bao = KillOnDrop(Some(bao_spawn(port, scratch.path())));
    let mut tries = 1;
    while !bao_ready(port).await {
        bao.kill();
        assert!(tries < 3, "bao server -dev did not start");
        tries += 1;
        port = free_port();
        bao = KillOnDrop(Some(bao_spawn(port, scratch.path())));
    }
    bao_put(port, "app/api", json!({"key": BAO_SECRET})).await;
    let var = format!("AIRLOCK_TEST_OUTAGE_BAO_{}", std::process::id());
    std::env::set_var(&var, BAO_ROOT);
    let f = Fixture::start_with(|t| {
        let up = t.split("http://127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().to_owned();
        format!(
            "{t}\n[vaults.corp]\nkind = \"openbao\"\naddr = \"http://127.0.0.1:{port}\"\nauth = {{ method = \"token\", token = \"env:{var}\" }}\n\
             cache_ttl_seconds = {BAO_CACHE_TTL}\ntimeout_ms = 1000\n\n\
             [handles.BAO_API]\nkind = \"http\"\nsecret = \"openbao:corp/secret/app/api#key\"\n[handles.BAO_API.http]\n\
             destinations = [{{ url = \"http://127.0.0.1:{up}/v1/\", methods = [\"GET\", \"POST\"] }}]\n\
             inject = {{ type = \"header\", name = \"Authorization\", format = \"Bearer {{}}\" }}\n\n\
             [agents.baobot]\ngrants = [{{ handle = \"BAO_API\", tools = [\"http_request\"] }}, {{ handle = \"API\", tools = [\"http_request\"] }}]\n"
        )
    })
    .await;
    let (_, tok) = f.store.add_agent("baobot", None, None).await.unwrap();
    let tok = tok.reveal().to_owned();
    let c = client(Duration::from_secs(30));
    let t0 = Instant::now();
    let get = json!({"credential_handle": "BAO_API", "method": "GET", "path_or_url": "/v1/items"});
    let post = json!({"credential_handle": "BAO_API", "method": "POST", "path_or_url": "/v1/items", "body": "{}"});
    let mut calls = Vec::new();

    let first = invoke(&c, &f.base, &tok, "http_request", get.clone(), t0).await;
    assert_eq!(first.status, 200, "{}", first.body);
    calls.push(first);
    let injected = |n: usize| {
        f.upstream_requests()[n..]
            .iter()
            .all(|r| r.headers.iter().any(|(k, v)| k == "authorization" && v.strip_prefix("Bearer ") == Some(BAO_SECRET)))
    };
    assert!(injected(0), "the upstream got the value from OpenBao");

    // Down. Until the caches expire (the broker's own 5 s of `RECENT_TTL`, then the vault
    // client's `cache_ttl_seconds`) calls still use the value read before; after, every call is
    // refused before anything is sent.
    bao.kill();
    let down = Instant::now();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "bao is down");
    let window = airlock_vault::RECENT_TTL + Duration::from_secs(BAO_CACHE_TTL);
    let mut cached_ok = 0;
    let first_refusal = loop {
        let call = invoke(&c, &f.base, &tok, "http_request", get.clone(), t0).await;
        let ok = call.status == 200;
        calls.push(call);
        if !ok {
            break down.elapsed();
        }
        cached_ok += 1;
        assert!(down.elapsed() < window + Duration::from_secs(2), "a value read before the outage is used past the documented cache window");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let upstream_at_refusal = f.upstream_requests().len();
    let mut refused = vec![calls.last().unwrap().clone()];
    for i in 0..20 {
        let args = if i % 2 == 0 { get.clone() } else { post.clone() };
        refused.push(invoke(&c, &f.base, &tok, "http_request", args, t0).await);
    }
    // Another handle, on a local secret, keeps working meanwhile.
    let other = invoke(&c, &f.base, &tok, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"}), t0).await;
    assert_eq!(other.status, 200, "{}", other.body);
    let upstream_other = f.upstream_requests().len();
    assert_eq!(upstream_other, upstream_at_refusal + 1, "nothing was sent upstream on the handle whose secret is unavailable");
    for r in &refused {
        assert_eq!((r.status, r.code()), (503, "secret-unavailable"), "{}", r.body);
        assert!(r.elapsed < Duration::from_millis(1000 + 1500), "a refusal took {:?} (vault timeout_ms = 1000)", r.elapsed);
        let text = r.body.to_string().to_ascii_lowercase();
        for word in ["openbao", "vault", "127.0.0.1", "refused", "corp"] {
            assert!(!text.contains(word), "the agent learns '{word}' from the refusal");
        }
    }
    let outage = down.elapsed();

    // Back, on the same port: a dev server keeps nothing, so the secret is put again.
    let up_at = Instant::now();
    bao.0 = Some(bao_spawn(port, scratch.path()));
    assert!(bao_ready(port).await, "bao restarted on the same port");
    bao_put(port, "app/api", json!({"key": BAO_SECRET})).await;
    let bao_back = up_at.elapsed();
    let back = Instant::now();
    let mut recovered = Vec::new();
    for i in 0..10 {
        let args = if i % 2 == 0 { get.clone() } else { post.clone() };
        recovered.push(invoke(&c, &f.base, &tok, "http_request", args, t0).await);
    }
    for r in &recovered {
        assert_eq!(r.status, 200, "no restart of airlock needed: {}", r.body);
    }
    assert!(injected(upstream_other), "after the outage the upstream gets the value from OpenBao again");
    let recover = back.elapsed();

    let audit = audit_by_request(&f.store).await;
    for call in calls.iter().chain(&refused).chain(&recovered).chain(std::iter::once(&other)) {
        assert_one_record(&audit, call);
    }
    assert_absent(&calls, BAO_SECRET);
    assert_absent(&refused, BAO_SECRET);
    assert_absent(&recovered, BAO_SECRET);
    assert!(!common::captured_logs().contains(BAO_SECRET));
    verify_chain(&f.store, &f.broker.config().store.data_dir).await;
    println!(
        "openbao outage: {cached_ok} calls served from the cache for {first_refusal:?} after the kill (window {window:?}); \
         {} calls refused secret-unavailable (max {:?}), 0 sent upstream; outage {outage:?}; bao back in {bao_back:?}; \
         {} calls ok after it in {recover:?}, the first one included",
        refused.len(),
        refused.iter().map(|r| r.elapsed).max().unwrap(),
        recovered.len()
    );
    f.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. An upstream that hangs

/// Where a stalling upstream stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Accepts the connection, reads nothing, answers nothing.
    Accept,
    /// Reads the request, answers nothing.
    BeforeHeaders,
    /// Half a status line.
    MidStatus,
    /// The status line and part of the headers.
    MidHeaders,
    /// Headers, then a byte of a header every 100 ms, forever.
    TrickleHeaders,
    /// Complete headers (Content-Length: 4096), then part of the body.
    MidBody,
    /// Chunked: headers and one chunk, then nothing.
    MidChunk,
    /// Complete headers, then a byte of the body every 100 ms, forever.
    TrickleBody,
}

const STALLS: [Stall; 8] =
    [Stall::Accept, Stall::BeforeHeaders, Stall::MidStatus, Stall::MidHeaders, Stall::TrickleHeaders, Stall::MidBody, Stall::MidChunk, Stall::TrickleBody];

/// Per connection: when the upstream saw the broker close it.
type Closed = Arc<Mutex<Vec<Option<Instant>>>>;

async fn stalling_upstream(mode: Stall) -> (u16, Closed) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let closed: Closed = Arc::new(Mutex::new(Vec::new()));
    let cl = closed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else { return };
            let i = {
                let mut v = cl.lock().unwrap();
                v.push(None);
                v.len() - 1
            };
            let cl = cl.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = sock.into_split();
                if mode != Stall::Accept {
                    // The request head.
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match rd.read(&mut b).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                }
                let partial: &[u8] = match mode {
                    Stall::Accept | Stall::BeforeHeaders => b"",
                    Stall::MidStatus => b"HTTP/1.1 20",
                    Stall::MidHeaders => b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pa",
                    Stall::TrickleHeaders => b"HTTP/1.1 200 OK\r\n",
                    Stall::MidBody => b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"items\": [1, 2, 3",
                    Stall::MidChunk => b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"items\": [1, 2,\r\n",
                    Stall::TrickleBody => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n",
                };
                let _ = wr.write_all(partial).await;
                let trickle: Option<&'static [u8]> = match mode {
                    Stall::TrickleHeaders => Some(b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"),
                    Stall::TrickleBody => Some(b"z"),
                    _ => None,
                };
                let writer = tokio::spawn(async move {
                    if let Some(t) = trickle {
                        let mut k = 0;
                        loop {
                            if wr.write_all(&t[k % t.len()..k % t.len() + 1]).await.is_err() {
                                return;
                            }
                            k += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    } else {
                        // Held open, never written to again.
                        std::future::pending::<()>().await;
                        drop(wr);
                    }
                });
                // Until the broker closes the connection.
                let mut b = [0u8; 1024];
                loop {
                    match rd.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                cl.lock().unwrap()[i] = Some(Instant::now());
                writer.abort();
            });
        }
    });
    (port, closed)
}

/// The handle's `timeout_ms` for the stalling upstreams.
const HANG_TIMEOUT_MS: u64 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_upstream_hanging_at_any_point_times_out_and_the_broker_keeps_serving() {
    let mut ups = Vec::new();
    for m in STALLS {
        ups.push((m, stalling_upstream(m).await));
    }
    let handles: String = ups
        .iter()
        .enumerate()
        .map(|(i, (_, (port, _)))| {
            format!(
                "[handles.HANG_{i}]\nkind = \"http\"\nsecret = \"local:API\"\n[handles.HANG_{i}.http]\n\
                 destinations = [{{ url = \"http://127.0.0.1:{port}/v1/\", methods = [\"GET\", \"POST\"] }}]\n\
                 inject = {{ type = \"header\", name = \"Authorization\", format = \"Bearer {{}}\" }}\ntimeout_ms = {HANG_TIMEOUT_MS}\n\n"
            )
        })
        .collect();
    let grants: String = (0..ups.len()).map(|i| format!("{{ handle = \"HANG_{i}\", tools = [\"http_request\"] }}, ")).collect();
    let f = Fixture::start_with(|t| {
        format!("{t}\n{handles}[agents.hangbot]\ngrants = [{grants}{{ handle = \"API\", tools = [\"http_request\"] }}, {{ handle = \"APP_DB\", tools = [\"query_db\"] }}]\n")
    })
    .await;
    let (_, tok) = f.store.add_agent("hangbot", None, None).await.unwrap();
    let tok = tok.reveal().to_owned();
    let c = client(Duration::from_secs(30));
    let t0 = Instant::now();

    // Every stall, twice (GET, and POST which also writes an intent record), all at once, while
    // other calls go on.
    let mut hung = Vec::new();
    for (i, (m, _)) in ups.iter().enumerate() {
        for method in ["GET", "POST"] {
            let (c, base, tok, m) = (c.clone(), f.base.clone(), tok.clone(), *m);
            let mut args = json!({"credential_handle": format!("HANG_{i}"), "method": method, "path_or_url": "/v1/slow"});
            if method == "POST" {
                args["body"] = json!("{}");
            }
            hung.push(tokio::spawn(async move { (m, invoke(&c, &base, &tok, "http_request", args, t0).await) }));
        }
    }
    let mut others = Vec::new();
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(HANG_TIMEOUT_MS + 500) {
        others.push(invoke(&c, &f.base, &tok, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"}), t0).await);
        others.push(invoke(&c, &f.base, &tok, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT id FROM orders"}), t0).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = Vec::new();
    for h in hung {
        answers.push(h.await.unwrap());
    }
    let during: Vec<&Call> = others.iter().filter(|o| o.at < Duration::from_millis(HANG_TIMEOUT_MS)).collect();
    assert!(during.len() >= 4, "calls were made while the upstreams hung");
    for o in &others {
        assert_eq!(o.status, 200, "another handle's call meanwhile: {}", o.body);
        assert!(o.elapsed < Duration::from_millis(1000), "another handle's call took {:?} while upstreams hung", o.elapsed);
    }
    let bound = Duration::from_millis(HANG_TIMEOUT_MS + 1500);
    for (m, a) in &answers {
        assert_eq!((a.status, a.code()), (504, "upstream-timeout"), "{m:?}: {}", a.body);
        assert!(
            a.elapsed >= Duration::from_millis(HANG_TIMEOUT_MS - 100) && a.elapsed < bound,
            "{m:?}: answered after {:?}, the handle's timeout_ms is {HANG_TIMEOUT_MS}",
            a.elapsed
        );
    }
    // The broker let go of every stalled connection.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (m, (_, closed)) in &ups {
        let v = closed.lock().unwrap().clone();
        assert!(!v.is_empty(), "{m:?}: the broker connected");
        assert!(v.iter().all(Option::is_some), "{m:?}: a stalled connection was left open after the call ended");
    }
    let audit = audit_by_request(&f.store).await;
    for (_, a) in &answers {
        assert_one_record(&audit, a);
    }
    for o in &others {
        assert_one_record(&audit, o);
    }
    let posts = answers.iter().filter(|(_, a)| audit[a.request_id().unwrap()].iter().any(|r| r.outcome == "started")).count();
    assert_eq!(posts, STALLS.len(), "each POST has its intent record next to its outcome");
    verify_chain(&f.store, &f.broker.config().store.data_dir).await;
    println!(
        "hanging upstream: {} stalled calls ({} stall points x GET/POST) answered upstream-timeout in {:?}..{:?} (timeout_ms {HANG_TIMEOUT_MS}); \
         {} other calls meanwhile, all ok, slowest {:?}",
        answers.len(),
        STALLS.len(),
        answers.iter().map(|(_, a)| a.elapsed).min().unwrap(),
        answers.iter().map(|(_, a)| a.elapsed).max().unwrap(),
        others.len(),
        others.iter().map(|o| o.elapsed).max().unwrap()
    );
    f.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. The store's disk full

/// A tmpfs mounted for the test, unmounted when dropped.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn mount(dir: &Path, size: &str) -> Option<TmpfsMount> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| TmpfsMount(dir.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` with a file there; returns its size.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut n = 0u64;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    let _ = f.sync_all();
    n
}

async fn create_share(f: &Fixture) -> (u16, Value) {
    let exp = chrono::Utc::now().timestamp() + 3600;
    let s = airlock_share::NewShare::create(b"outage share", None, exp, 1, 1 << 20).unwrap();
    let (ct, ph) = s.request_fields();
    let r = f
        .client
        .post(format!("{}/v1/shares", f.base))
        .json(&json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_store_disk_full_refuses_calls_and_recovers_when_space_returns() {
    if !is_root() {
        return skip("the disk-full scenario mounts a tmpfs and needs root");
    }
    let outer = tempfile::tempdir().unwrap();
    let mnt = outer.path().join("data");
    std::fs::create_dir_all(&mnt).unwrap();
    let Some(_mount) = TmpfsMount::mount(&mnt, "2m") else {
        return skip("mount -t tmpfs failed (no CAP_SYS_ADMIN?)");
    };
    let f = Fixture::start_with(|t| {
        format!("{}\n[shares]\ncreate_per_minute = 100000\n", t.replace("data_dir = \"data\"", &format!("data_dir = {:?}", mnt.display().to_string())))
    })
    .await;
    assert_eq!(f.broker.config().store.data_dir, mnt);
    let c = client(Duration::from_secs(30));
    let t0 = Instant::now();
    let get = json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"});
    let post = json!({"credential_handle": "API", "method": "POST", "path_or_url": "/v1/items", "body": "{}"});
    let query = json!({"credential_handle": "APP_DB", "query": "SELECT id, item FROM orders"});
    let mut before = Vec::new();
    for args in [&get, &post] {
        before.push(invoke(&c, &f.base, &f.token, "http_request", args.clone(), t0).await);
    }
    before.push(invoke(&c, &f.base, &f.token, "query_db", query.clone(), t0).await);
    for b in &before {
        assert_eq!(b.status, 200, "{}", b.body);
    }
    assert_eq!(create_share(&f).await.0, 201);

    // Full.
    let ballast = mnt.join("ballast");
    let size = fill(&ballast);
    // Writes may still land in space SQLite already holds (the WAL): reads until one is refused.
    // The broker cannot know before the first failed write: that read runs, and its result is
    // withheld (`audit-unavailable`) since its record cannot be kept.
    let full_at = Instant::now();
    let mut absorbed = 0;
    loop {
        let sent = f.upstream_requests().len();
        let r = invoke(&c, &f.base, &f.token, "http_request", get.clone(), t0).await;
        if r.status != 200 {
            assert_eq!((r.status, r.code()), (503, "audit-unavailable"), "{}", r.body);
            assert_eq!(f.upstream_requests().len(), sent + 1, "the first read after the disk filled ran");
            assert!(r.body.get("result").is_none(), "its result is withheld");
            break;
        }
        absorbed += 1;
        assert!(absorbed < 500, "the store kept accepting records on a full disk");
    }
    // Steady state: every call is refused with audit-unavailable and nothing reaches the
    // upstream (no intent record, no request; a read whose record cannot be kept is not made).
    let sent = f.upstream_requests().len();
    let mut refused = Vec::new();
    for i in 0..30 {
        refused.push(match i % 3 {
            0 => invoke(&c, &f.base, &f.token, "http_request", post.clone(), t0).await,
            1 => invoke(&c, &f.base, &f.token, "http_request", get.clone(), t0).await,
            _ => invoke(&c, &f.base, &f.token, "query_db", query.clone(), t0).await,
        });
    }
    println!("disk full: {}", counts(&refused));
    for r in &refused {
        assert_eq!((r.status, r.code()), (503, "audit-unavailable"), "{}", r.body);
        assert!(r.elapsed < Duration::from_secs(5), "a refusal took {:?}", r.elapsed);
    }
    assert_eq!(f.upstream_requests().len(), sent, "nothing was sent upstream while no record could be kept");
    // A link's upload is not a call (no audit record): the store's write fails and the answer
    // is the generic 500 `internal` (there is no store-unavailable code); nothing is kept.
    let (st, v) = create_share(&f).await;
    assert_eq!((st, code(&v)), (500, "internal"), "a one-time link is not created on a full disk: {v}");
    let full_for = full_at.elapsed();

    // Space again: no restart, no repair.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let mut after = Vec::new();
    for i in 0..30 {
        after.push(match i % 3 {
            0 => invoke(&c, &f.base, &f.token, "http_request", post.clone(), t0).await,
            1 => invoke(&c, &f.base, &f.token, "http_request", get.clone(), t0).await,
            _ => invoke(&c, &f.base, &f.token, "query_db", query.clone(), t0).await,
        });
    }
    let recover = freed.elapsed();
    for r in &after {
        assert_eq!(r.status, 200, "after space returned: {}", r.body);
    }
    let (st, v) = create_share(&f).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(f.upstream_requests().len(), sent + 20);

    let audit = audit_by_request(&f.store).await;
    for r in before.iter().chain(&after) {
        assert_one_record(&audit, r);
    }
    for r in &refused {
        // Refused because no record could be written: none was.
        let id = r.request_id().unwrap();
        assert!(audit.get(id).is_none_or(|v| v.iter().all(|x| x.outcome == "started")), "{id}");
    }
    verify_chain(&f.store, &mnt).await;
    println!(
        "disk full: ballast {size} bytes; {absorbed} calls absorbed by space SQLite held, then 1 read ran with its result withheld; {} calls refused audit-unavailable \
         over {full_for:?}, 0 sent upstream; after the ballast went {} calls ok in {recover:?}, the first included; chain verifies",
        refused.len(),
        after.len()
    );
    f.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. A private PostgreSQL restarted under load

/// A PostgreSQL cluster of the test's own, run as the `postgres` OS user on a free port, with
/// trust authentication. Stopped (immediate) when dropped.
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    fn start() -> Option<PrivatePg> {
        if !is_root() {
            skip("a private PostgreSQL is run as the postgres user, which needs root");
            return None;
        }
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            let mut v: Vec<PathBuf> = d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").is_file()).collect();
            v.sort();
            v.pop()
        });
        let Some(bin) = bin else {
            skip("no initdb under /usr/lib/postgresql/*/bin");
            return None;
        };
        if !Command::new("id").arg("postgres").stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false) {
            skip("no postgres OS user");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap().success());
        let pg = PrivatePg { bin, dir, port: free_port() };
        let data = pg.dir.path().join("data");
        assert!(
            pg.run("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]),
            "initdb"
        );
        assert!(pg.ctl(&["start"]), "pg_ctl start: {}", pg.log());
        Some(pg)
    }

    /// Runs `bin/prog args` as the postgres user; true on success.
    fn run(&self, prog: &str, args: &[&str]) -> bool {
        Command::new("setpriv")
            .args(["--reuid", "postgres", "--regid", "postgres", "--init-groups"])
            .arg(self.bin.join(prog))
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// `pg_ctl ACTION` with the cluster's options, waiting for it to finish.
    fn ctl(&self, action: &[&str]) -> bool {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let mut args = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &opts];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    async fn exec(&self, sql: &str) {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.url("postgres")).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.ctl(&["stop", "-m", "immediate"]);
    }
}

/// Runs `pg_ctl ACTION` off the runtime; returns when it started and ended, from `t0`.
async fn pg_ctl_timed(pg: &Arc<PrivatePg>, action: &[&str], t0: Instant) -> (Duration, Duration) {
    let (p, action): (Arc<PrivatePg>, Vec<String>) = (pg.clone(), action.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let start = t0.elapsed();
        let args: Vec<&str> = action.iter().map(String::as_str).collect();
        assert!(p.ctl(&args), "pg_ctl {}: {}", args[0], p.log());
        (start, t0.elapsed())
    })
    .await
    .unwrap()
}

/// Stops the load tasks and returns their calls in the order they were sent.
async fn finish(tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>, stop: &AtomicBool) -> Vec<Call> {
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await.unwrap());
    }
    calls.sort_by_key(|c| c.at);
    calls
}

/// Calls in a loop from `tasks` tasks until `stop`; every call, in order of sending.
fn load(c: &reqwest::Client, base: &str, token: &str, tasks: usize, args: Value, t0: Instant, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Call>>> {
    (0..tasks)
        .map(|_| {
            let (c, base, token, args, stop) = (c.clone(), base.to_owned(), token.to_owned(), args.clone(), stop.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    out.push(invoke(&c, &base, &token, "query_db", args.clone(), t0).await);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                out
            })
        })
        .collect()
}

/// How long the private database stays stopped (longer than its handle's statement timeout,
/// which also bounds the wait for a connection).
const PG_OUTAGE_MS: u64 = 5000;

/// The statement timeout of the private database's handle.
const PG_STATEMENT_TIMEOUT_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_private_postgres_restarted_under_load_fails_clearly_and_the_pool_reconnects() {
    let Some(pg) = tokio::task::spawn_blocking(PrivatePg::start).await.unwrap() else { return };
    pg.exec("CREATE TABLE items (id int primary key, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;").await;
    let var = format!("AIRLOCK_TEST_OUTAGE_PG_{}", std::process::id());
    // Trust auth: nobody checks it, but it is the handle's secret all the same.
    std::env::set_var(&var, "canaryOutagePgPw_9sKd");
    let url = pg.url("postgres");
    let f = Fixture::start_with(|t| {
        format!(
            "{t}\n[handles.PRIV_PG]\nkind = \"postgres\"\nsecret = \"env:{var}\"\n[handles.PRIV_PG.database]\nurl = \"{url}\"\n\
             tables = [\"items\"]\nstatement_timeout_ms = {PG_STATEMENT_TIMEOUT_MS}\n\n\
             [agents.pgbot]\ngrants = [{{ handle = \"PRIV_PG\", tools = [\"query_db\"] }}]\n"
        )
    })
    .await;
    let (_, tok) = f.store.add_agent("pgbot", None, None).await.unwrap();
    let tok = tok.reveal().to_owned();
    let c = client(Duration::from_secs(60));
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&c, &f.base, &tok, 4, json!({"credential_handle": "PRIV_PG", "query": "SELECT count(*) AS n, max(name) AS m FROM items"}), t0, stop.clone());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A fast restart (sessions terminated), then a stop with PG_OUTAGE_MS of outage before the
    // start.
    let pg = Arc::new(pg);
    let (r0, r1) = pg_ctl_timed(&pg, &["restart", "-m", "fast"], t0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s0, s1) = pg_ctl_timed(&pg, &["stop", "-m", "fast"], t0).await;
    tokio::time::sleep(Duration::from_millis(PG_OUTAGE_MS)).await;
    let (u0, u1) = pg_ctl_timed(&pg, &["start"], t0).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let calls = finish(tasks, &stop).await;

    println!("private postgres under load: {}", counts(&calls));
    let fails: Vec<String> = calls.iter().filter(|k| k.status != 200).map(|k| format!("{:?}+{:?} {}", k.at, k.elapsed, k.code())).collect();
    println!("refused: {fails:?}");
    let bound = Duration::from_millis(PG_STATEMENT_TIMEOUT_MS + 3000);
    for k in &calls {
        assert!(k.status != 0, "a call was never answered (sent at {:?})", k.at);
        assert!(k.elapsed < bound, "a call took {:?} (statement_timeout_ms {PG_STATEMENT_TIMEOUT_MS})", k.elapsed);
        assert!(
            k.status == 200 || (k.status, k.code()) == (502, "upstream-unavailable"),
            "a call during the restarts: {} {}",
            k.status,
            k.body
        );
        if k.status == 200 {
            assert_eq!(k.body["result"]["rows"][0][0], 50);
        }
    }
    // Fail closed while it is down: every call sent between the end of the stop and the
    // start is refused.
    let down: Vec<&Call> = calls.iter().filter(|k| k.at > s1 && k.at + k.elapsed < u0).collect();
    assert!(down.len() >= 4, "calls were made while PostgreSQL was down ({})", down.len());
    assert!(down.iter().all(|k| k.status == 502), "calls while PostgreSQL was down were refused");
    // Steady before, recovered after: every call outside the restarts succeeds.
    let settle = Duration::from_millis(1000);
    let outside = |k: &&Call| k.at + k.elapsed < r0 || (k.at > r1 + settle && k.at + k.elapsed < s0) || k.at > u1 + settle;
    for k in calls.iter().filter(outside) {
        assert_eq!(k.status, 200, "a call at {:?}, away from the restarts: {}", k.at, k.body);
    }
    let first_ok_after = calls.iter().find(|k| k.at > u1 && k.status == 200).map(|k| k.at - u1);
    assert!(first_ok_after.is_some(), "calls succeed again after the start, without restarting airlock");
    let after: Vec<&Call> = calls.iter().filter(|k| k.at > u1 + settle).collect();
    assert!(after.len() >= 20, "calls after the restart");
    let audit = audit_by_request(&f.store).await;
    for k in &calls {
        assert_one_record(&audit, k);
    }
    verify_chain(&f.store, &f.broker.config().store.data_dir).await;
    let failed = calls.iter().filter(|k| k.status != 200).count();
    println!(
        "private postgres under load: {} calls from 4 tasks, {failed} refused upstream-unavailable, slowest {:?}; \
         restart -m fast took {:?}; stop {:?}, down {:?}, start {:?}; first ok {:?} after the start; every call one audit record",
        calls.len(),
        calls.iter().map(|k| k.elapsed).max().unwrap(),
        r1 - r0,
        s1 - s0,
        u0 - s1,
        u1 - u0,
        first_ok_after.unwrap()
    );
    f.stop().await;
}

/// How long the store's PostgreSQL stays down.
const STORE_OUTAGE_MS: u64 = 8000;

/// A broker whose store is on PostgreSQL, with a SQLite `query_db` handle and one agent.
struct PgStoreRig {
    _dir: tempfile::TempDir,
    data: PathBuf,
    base: String,
    token: String,
    store: Store,
    _broker: Arc<airlock_server::Broker>,
}

async fn pg_store_rig(store_url: &str) -> PgStoreRig {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db_path.display())).await.unwrap();
        sqlx::raw_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT); INSERT INTO orders VALUES (1, 'widget'), (2, 'gadget');")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let text = format!(
        "[store]\ndata_dir = \"data\"\nurl = \"{store_url}\"\n\n[limits]\nrate_per_minute = 100000\n\n\
         [handles.APP_DB]\nkind = \"sqlite\"\nsecret = \"local:APP_DB\"\n[handles.APP_DB.database]\nscope = \"read_only\"\ntables = [\"orders\"]\n\n\
         [agents.bot]\ngrants = [{{ handle = \"APP_DB\", tools = [\"query_db\"] }}]\n"
    );
    let cfg_path = dir.path().join("airlock.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let cfg = Config::load(&cfg_path).unwrap();
    let data = cfg.store.data_dir.clone();
    std::fs::create_dir_all(&data).unwrap();
    MasterKey::create(&data.join("master.key")).unwrap();
    AuditKey::create(&data).unwrap();
    let store = Store::connect(&cfg.store).await.unwrap();
    assert_eq!(store.engine(), "postgres");
    let vault = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), store.clone());
    vault.put("APP_DB", &Secret::from_str_value(&format!("sqlite://{}?mode=ro", db_path.display()))).await.unwrap();
    let (_, t) = store.add_agent("bot", None, None).await.unwrap();
    let broker = Arc::new(airlock_server::Broker::open(cfg).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(airlock_server::http::serve(listener, broker.clone(), std::future::pending::<()>()));
    PgStoreRig { _dir: dir, data, base: format!("http://{addr}"), token: t.reveal().to_owned(), store, _broker: broker }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_store_on_private_postgres_restarted_refuses_calls_and_recovers() {
    let Some(pg) = tokio::task::spawn_blocking(PrivatePg::start).await.unwrap() else { return };
    pg.exec("CREATE DATABASE airlock_store").await;
    let rig = pg_store_rig(&pg.url("airlock_store")).await;
    let c = client(Duration::from_secs(60));
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&c, &rig.base, &rig.token, 4, json!({"credential_handle": "APP_DB", "query": "SELECT id, item FROM orders"}), t0, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg = Arc::new(pg);
    let (s0, s1) = pg_ctl_timed(&pg, &["stop", "-m", "fast"], t0).await;
    // Longer than the store pool's 5 s wait for a connection, so calls find no store.
    tokio::time::sleep(Duration::from_millis(STORE_OUTAGE_MS)).await;
    let (u0, u1) = pg_ctl_timed(&pg, &["start"], t0).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let calls = finish(tasks, &stop).await;
    println!("store on private postgres: {}", counts(&calls));
    let fails: Vec<String> = calls.iter().filter(|k| k.status != 200).map(|k| format!("{:?}+{:?} {}", k.at, k.elapsed, k.code())).collect();
    println!("refused: {fails:?}");
    // The store's pool waits at most 5 s for a connection: for the token check (once per
    // 100 ms, shared), and for the audit group, which may queue behind the group before it.
    let bound = Duration::from_secs(5 + 5 + 5 + 2);
    for k in &calls {
        assert!(k.status != 0, "a call was never answered (sent at {:?})", k.at);
        assert!(k.elapsed < bound, "a call took {:?}", k.elapsed);
        // docs/deployment.md, "When PostgreSQL goes away": a record that cannot be committed
        // is `audit-unavailable`; a token check that cannot reach the store is `internal`.
        assert!(
            k.status == 200 || matches!((k.status, k.code()), (503, "audit-unavailable") | (500, "internal")),
            "a call with the store down: {} {}",
            k.status,
            k.body
        );
    }
    // Fail closed: no call is answered ok while its record cannot be written; calls made while
    // the store was down waited for it (at most the pool's 5 s) and were then refused, or were
    // answered once it was back.
    for k in calls.iter().filter(|k| k.status == 200) {
        let done = k.at + k.elapsed;
        assert!(!(done > s1 && done < u0), "a call was answered ok at {done:?}, with the store down ({s1:?}..{u0:?})");
    }
    let refused = calls.iter().filter(|k| k.status != 200).count();
    assert!(refused >= 1, "calls made while the store was down were refused");
    let settle = Duration::from_millis(1500);
    for k in calls.iter().filter(|k| k.at + k.elapsed < s0 || k.at > u1 + settle) {
        assert_eq!(k.status, 200, "a call at {:?}, away from the outage: {}", k.at, k.body);
    }
    let first_ok_after = calls.iter().find(|k| k.at > u1 && k.status == 200).map(|k| k.at - u1);
    assert!(first_ok_after.is_some(), "calls succeed again after the store is back, without restarting airlock");
    let audit = audit_by_request(&rig.store).await;
    for k in calls.iter().filter(|k| k.status == 200) {
        assert_one_record(&audit, k);
    }
    for k in calls.iter().filter(|k| k.status != 200) {
        let id = k.request_id().unwrap();
        assert!(audit.get(id).is_none_or(|v| v.iter().filter(|x| x.outcome != "started").count() <= 1), "{id}");
    }
    verify_chain(&rig.store, &rig.data).await;
    println!(
        "store on private postgres: {} calls from 4 tasks, {refused} refused, slowest {:?}; stop {:?}, down {:?}, start {:?}; \
         first ok {:?} after the start; every ok call one record; chain verifies",
        calls.len(),
        calls.iter().map(|k| k.elapsed).max().unwrap(),
        s1 - s0,
        u0 - s1,
        u1 - u0,
        first_ok_after.unwrap()
    );
}
