//! Two `airlock serve` replicas on one PostgreSQL database (`store.url`), sharing the data
//! directory's key files, as a team runs them behind a load balancer: one-time consumption
//! happens once over both, a lease is revoked once by whichever reaper, a revocation made
//! through one is refused by the other on the next call, the audit chain verifies after mixed
//! load and after one replica is killed with SIGKILL; and `airlock migrate` is idempotent.
//!
//! Each test creates its own database `airlock_t_<random>` and drops it after. Skips (printing
//! why) when PostgreSQL is down, unless AIRLOCK_REQUIRE_SERVICES=1.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn pg_up() -> bool {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(2)).is_ok();
    if !up {
        if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
        }
        println!("skipped: PostgreSQL at 127.0.0.1:5432 is unreachable");
    }
    up
}

async fn admin(sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

fn airlock(dir: &Path, cfg: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir).env("AIRLOCK_CONFIG", dir.join(cfg)).env_remove("AIRLOCK_TOKEN").env_remove("RUST_LOG").args(args);
    c
}

fn run(dir: &Path, cfg: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = airlock(dir, cfg, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Replica {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Replica {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    db: String,
    token: String,
    a: Replica,
    b: Replica,
}

impl Cluster {
    async fn drop_db(self) {
        let db = self.db.clone();
        drop(self);
        admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}

/// `airlock init` in a temp dir, a SQLite app database with handle APP (with a lease policy),
/// agent `bot`, and the configuration of replica A and B (same data_dir, same store.url, own port).
fn configure(dir: &Path, url: Option<&str>) {
    let o = run(dir, "airlock.toml", &["init"], None);
    assert!(o.status.success(), "{}", text(&o));
    let app = dir.join("app.db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", app.display())).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one');").execute(&mut c).await.unwrap();
    });
    let mut cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    if let Some(url) = url {
        cfg = cfg.replace("data_dir = \"airlock-data\"\n", &format!("data_dir = \"airlock-data\"\nurl = \"{url}\"\n"));
    }
    cfg = cfg.replace("rate_per_minute = 600", "rate_per_minute = 1000000");
    cfg.push_str(
        "\n[handles.APP]\nkind = \"sqlite\"\nsecret = \"local:APP\"\n[handles.APP.database]\ntables = [\"t\"]\n\
         [handles.APP.lease]\nmax_ttl_seconds = 600\n\n\
         [agents.bot]\ngrants = [{ handle = \"APP\", tools = [\"query_db\", \"request_lease\"] }]\n",
    );
    let port_a = free_port();
    std::fs::write(dir.join("airlock.toml"), cfg.replace("127.0.0.1:7878\"", &format!("127.0.0.1:{port_a}\"\nsocket = \"off\""))).unwrap();
    let port_b = free_port();
    std::fs::write(dir.join("airlock-b.toml"), cfg.replace("127.0.0.1:7878\"", &format!("127.0.0.1:{port_b}\"\nsocket = \"off\""))).unwrap();
    let o = run(dir, "airlock.toml", &["secret", "put", "APP"], Some(&format!("sqlite://{}?mode=ro\n", app.display())));
    assert!(o.status.success(), "{}", text(&o));
}

fn listen_of(dir: &Path, cfg: &str) -> String {
    let t = std::fs::read_to_string(dir.join(cfg)).unwrap();
    let l = t.lines().find(|l| l.starts_with("listen = ")).unwrap();
    l.trim_start_matches("listen = ").trim_matches('"').to_owned()
}

fn start(dir: &Path, cfg: &str, name: &str) -> Replica {
    let log = dir.join(format!("{name}.log"));
    let child = airlock(dir, cfg, &["serve"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = listen_of(dir, cfg);
    let mut r = Replica { child, base: format!("http://{addr}"), log };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Ok(Some(st)) = r.child.try_wait() {
            panic!("replica {name} exited ({st}): {}", r.log_text());
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "replica {name} did not start: {}", r.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

async fn cluster() -> Option<Cluster> {
    if !pg_up() {
        return None;
    }
    let db = format!("airlock_t_{:016x}", rand::random::<u64>());
    admin(&format!("CREATE DATABASE {db}")).await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let dir = tempfile::tempdir().unwrap();
    let (d, u) = (dir.path().to_owned(), url.clone());
    tokio::task::spawn_blocking(move || configure(&d, Some(&u))).await.unwrap();
    let o = run(dir.path(), "airlock.toml", &["agent", "add", "bot"], None);
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let a = start(dir.path(), "airlock.toml", "a");
    let b = start(dir.path(), "airlock-b.toml", "b");
    Some(Cluster { dir, db, token, a, b })
}

async fn invoke(http: &reqwest::Client, base: &str, token: &str, tool: &str, args: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v1/invoke"))
        .bearer_auth(token)
        .json(&json!({"tool": tool, "arguments": args}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn query() -> Value {
    json!({"credential_handle": "APP", "query": "SELECT v FROM t WHERE id = 1"})
}

fn verify(c: &Cluster, cfg: &str) -> (bool, String) {
    let o = run(c.dir.path(), cfg, &["audit", "verify"], None);
    (o.status.success(), text(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_64_concurrent_consumers_of_one_share_over_two_replicas_give_exactly_one_success() {
    let Some(c) = cluster().await else { return };
    let o = run(c.dir.path(), "airlock.toml", &["share", "--server", &c.a.base, "--views", "1"], Some("the-one-time-secret"));
    assert!(o.status.success(), "{}", text(&o));
    let link = airlock_share::Link::parse(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let proof = airlock_share::derive(&link.key, &link.id, None).proof().to_string();
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let base = if i % 2 == 0 { c.a.base.clone() } else { c.b.base.clone() };
        let (http, id, proof) = (http.clone(), link.id.clone(), proof.clone());
        tasks.push(tokio::spawn(async move {
            let r = http.post(format!("{base}/v1/shares/{id}/consume")).json(&json!({"proof": proof})).send().await.unwrap();
            r.status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 404).count(), 63, "{codes:?}");
    c.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t15_a_lease_issued_on_one_replica_is_revoked_exactly_once_by_whichever_reaper() {
    let Some(c) = cluster().await else { return };
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/leases", c.a.base))
        .bearer_auth(&c.token)
        .json(&json!({"credential_handle": "APP", "scope": "read_only", "ttl_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let id = v["result"]["lease_id"].as_str().unwrap().to_owned();
    let handle = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    // The lease works on the other replica too while it lives.
    let (st, body) = invoke(&http, &c.b.base, &c.token, "query_db", json!({"credential_handle": handle, "query": "SELECT v FROM t"})).await;
    assert_eq!(st, 200, "{body}");
    let t0 = Instant::now();
    loop {
        let o = run(c.dir.path(), "airlock.toml", &["lease", "list"], None);
        let t = text(&o);
        if t.lines().any(|l| l.contains(&id) && l.contains("revoked")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the lease was never revoked: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give the other reaper time to (not) revoke it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = |r: &Replica| r.log_text().lines().filter(|l| l.contains("lease revoked") && l.contains(&id)).count();
    let (na, nb) = (count(&c.a), count(&c.b));
    assert_eq!(na + nb, 1, "revocations: A {na}, B {nb}");
    let (st, body) = invoke(&http, &c.b.base, &c.token, "query_db", json!({"credential_handle": handle, "query": "SELECT v FROM t"})).await;
    assert_eq!(body["error"]["code"], "handle-unavailable", "{st} {body}");
    c.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t15_an_agent_revoked_through_one_replica_is_refused_by_the_other_on_its_next_call() {
    let Some(c) = cluster().await else { return };
    let http = reqwest::Client::new();
    for base in [&c.a.base, &c.b.base] {
        let (st, body) = invoke(&http, base, &c.token, "query_db", query()).await;
        assert_eq!(st, 200, "{body}");
    }
    let o = run(c.dir.path(), "airlock.toml", &["agent", "revoke", "bot"], None);
    assert!(o.status.success(), "{}", text(&o));
    // Every replica learns of it through the identity generation within this.
    tokio::time::sleep(airlock_server::broker::IDENTITY_RECHECK).await;
    for base in [&c.b.base, &c.a.base] {
        let (st, body) = invoke(&http, base, &c.token, "query_db", query()).await;
        assert_eq!((st, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{base}: {body}");
    }
    c.drop_db().await;
}

async fn load(http: reqwest::Client, base: String, token: String, n: usize) -> (usize, usize) {
    let mut ok = 0;
    let mut other = 0;
    for i in 0..n {
        // Mixed: allowed queries, a denied table and an unknown handle.
        let args = match i % 5 {
            3 => json!({"credential_handle": "APP", "query": "SELECT * FROM sqlite_master"}),
            4 => json!({"credential_handle": "NOPE", "query": "SELECT 1"}),
            _ => query(),
        };
        match http.post(format!("{base}/v1/invoke")).bearer_auth(&token).json(&json!({"tool": "query_db", "arguments": args})).send().await {
            Ok(r) if r.status().as_u16() == 200 => ok += 1,
            Ok(_) => other += 1,
            // The replica is gone: stop, as a load balancer would take it out.
            Err(_) => {
                other += 1;
                break;
            }
        }
    }
    (ok, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_chain_verifies_after_mixed_load_on_both_replicas() {
    let Some(c) = cluster().await else { return };
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = if i % 2 == 0 { c.a.base.clone() } else { c.b.base.clone() };
        tasks.push(tokio::spawn(load(http.clone(), base, c.token.clone(), 50)));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap().0;
    }
    assert_eq!(ok, 8 * 30, "allowed calls");
    let (good, out) = verify(&c, "airlock-b.toml");
    assert!(good, "{out}");
    // 400 calls, one record each, in one chain.
    assert!(out.contains("400 records"), "{out}");
    c.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_replica_under_load_leaves_the_other_serving_and_the_chain_verifying() {
    let Some(mut c) = cluster().await else { return };
    let http = reqwest::Client::new();
    let on_a = tokio::spawn(load(http.clone(), c.a.base.clone(), c.token.clone(), 100_000));
    let mut on_b = Vec::new();
    for _ in 0..2 {
        on_b.push(tokio::spawn(load(http.clone(), c.b.base.clone(), c.token.clone(), 150)));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.a.child.kill().unwrap(); // SIGKILL
    c.a.child.wait().unwrap();
    let (_, a_failed) = on_a.await.unwrap();
    assert!(a_failed > 0, "calls to the killed replica kept succeeding");
    for t in on_b {
        let (ok, _) = t.await.unwrap();
        assert_eq!(ok, 90, "the surviving replica refused allowed calls");
    }
    let (st, body) = invoke(&http, &c.b.base, &c.token, "query_db", query()).await;
    assert_eq!(st, 200, "{body}");
    let (good, out) = verify(&c, "airlock-b.toml");
    assert!(good, "{out}");
    c.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_copies_the_sqlite_store_to_postgres_and_a_second_run_changes_nothing() {
    if !pg_up() {
        return;
    }
    let db = format!("airlock_t_{:016x}", rand::random::<u64>());
    admin(&format!("CREATE DATABASE {db}")).await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    tokio::task::spawn_blocking(move || configure(&d, None)).await.unwrap();
    let o = run(dir.path(), "airlock.toml", &["agent", "add", "bot"], None);
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    {
        let a = start(dir.path(), "airlock.toml", "sqlite");
        let (st, body) = invoke(&reqwest::Client::new(), &a.base, &token, "query_db", query()).await;
        assert_eq!(st, 200, "{body}");
    }
    let o = run(dir.path(), "airlock.toml", &["migrate", "--to", &url], None);
    assert!(o.status.success() && text(&o).contains("copied"), "{}", text(&o));
    let o = run(dir.path(), "airlock.toml", &["migrate", "--to", &url], None);
    assert!(o.status.success() && text(&o).contains("nothing to do"), "{}", text(&o));
    let o = run(dir.path(), "airlock.toml", &["migrate", "--to", "mysql://root@127.0.0.1/test"], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Switch the configuration to PostgreSQL: the token and the chain came along.
    let cfg = std::fs::read_to_string(dir.path().join("airlock.toml")).unwrap();
    std::fs::write(
        dir.path().join("airlock.toml"),
        cfg.replace("data_dir = \"airlock-data\"\n", &format!("data_dir = \"airlock-data\"\nurl = \"{url}\"\n")),
    )
    .unwrap();
    let a = start(dir.path(), "airlock.toml", "postgres");
    let (st, body) = invoke(&reqwest::Client::new(), &a.base, &token, "query_db", query()).await;
    assert_eq!(st, 200, "{body}");
    let o = run(dir.path(), "airlock.toml", &["audit", "verify"], None);
    assert!(o.status.success() && text(&o).contains("2 records"), "{}", text(&o));
    drop(a);
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

#[test]
fn a_bad_or_unreachable_store_url_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path(), None);
    let cfg = std::fs::read_to_string(dir.path().join("airlock.toml")).unwrap();
    let with_url = |u: &str| cfg.replace("data_dir = \"airlock-data\"\n", &format!("data_dir = \"airlock-data\"\nurl = \"{u}\"\n"));
    for bad in ["mysql://root@127.0.0.1/test", "postgres:///nohost", "postgres://127.0.0.1:5432/", "not a url"] {
        std::fs::write(dir.path().join("airlock.toml"), with_url(bad)).unwrap();
        let o = run(dir.path(), "airlock.toml", &["agent", "list"], None);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("store.url"), "{bad}: {}", text(&o));
    }
    // Well formed but nobody listens there: the store cannot be opened, and says so.
    let port = free_port();
    std::fs::write(dir.path().join("airlock.toml"), with_url(&format!("postgres://airlock:pw-not-shown@127.0.0.1:{port}/airlock"))).unwrap();
    let o = run(dir.path(), "airlock.toml", &["agent", "list"], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("PostgreSQL store"), "{}", text(&o));
    assert!(!text(&o).contains("pw-not-shown"), "{}", text(&o));
}
