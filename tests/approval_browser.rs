//! Approvals through `airlock serve` as people use them: the approval page in real headless
//! Chromium (tests/browser/approve.mjs, playwright-core), and `airlock approve` / `airlock deny`.
//! The agent's side is `airlock call` (AIRLOCK_TOKEN), a thin client of the same `airlock serve`.
//!
//! Without Chromium or the node modules the browser test skips, unless AIRLOCK_REQUIRE_SERVICES=1
//! (CI), where it fails.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{missing_browser, require, root, Server};

struct Setup {
    dir: tempfile::TempDir,
    base: String,
    agent: String,
    approver: String,
    _server: Server,
}

fn airlock(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env_remove("AIRLOCK_TOKEN")
        .env_remove("AIRLOCK_APPROVER_TOKEN")
        .env_remove("AIRLOCK_URL")
        .env("RUST_LOG", "warn")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

impl Setup {
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(&airlock(d, &["init"], "", &[]));
        let db = d.join("notes.db");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await.unwrap();
            sqlx::raw_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)").execute(&mut c).await.unwrap();
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(
            d.join("airlock.toml"),
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
socket = "off"

[store]
data_dir = "airlock-data"

[handles.NOTES]
kind = "sqlite"
secret = "local:NOTES"
[handles.NOTES.database]
scope = "read_write"
tables = ["notes"]
[handles.NOTES.approval]
writes = true

[agents.bot]
grants = [{{ handle = "NOTES", tools = ["query_db"] }}]
"#
            ),
        )
        .unwrap();
        ok(&airlock(d, &["secret", "put", "NOTES"], &format!("sqlite://{}?mode=rw\n", db.display()), &[]));
        let agent = ok(&airlock(d, &["agent", "add", "bot"], "", &[]));
        let approver = ok(&airlock(d, &["approver", "add", "alice"], "", &[]));
        assert!(approver.starts_with("apr_"), "{approver}");
        let server = Server(
            Command::new(env!("CARGO_BIN_EXE_airlock"))
                .current_dir(d)
                .env("AIRLOCK_CONFIG", d.join("airlock.toml"))
                .env("RUST_LOG", "warn")
                .arg("serve")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "airlock serve did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Setup { base: format!("http://127.0.0.1:{port}"), agent, approver, _server: server, dir }
    }

    /// `airlock call query_db` as the agent: (exit code, envelope).
    fn call(&self, query: &str, params: Value) -> (i32, Value) {
        let args = serde_json::json!({"credential_handle": "NOTES", "query": query, "params": params}).to_string();
        let o = airlock(self.dir.path(), &["call", "query_db", "--args", &args], "", &[("AIRLOCK_TOKEN", &self.agent), ("AIRLOCK_ENDPOINT", &self.base)]);
        (o.status.code().unwrap(), serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
    }

    fn decide(&self, verb: &str, id: &str, token: &str) -> Output {
        airlock(self.dir.path(), &[verb, id], "", &[("AIRLOCK_APPROVER_TOKEN", token)])
    }
}

fn approval_id(v: &Value) -> String {
    assert_eq!(v["error"]["code"], "approval-required", "{v}");
    v["error"]["approval"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn approve_and_deny_from_the_cli_decide_held_calls_and_an_agent_token_cannot() {
    let s = Setup::start();
    let insert = "INSERT INTO notes (id, body) VALUES (?, ?)";
    let (code, v) = s.call(insert, serde_json::json!([1, "first"]));
    assert_eq!(code, 1);
    let id = approval_id(&v);
    assert_eq!(v["error"]["approval"]["url"], format!("{}/approve/{id}", s.base));

    // The agent's own token does not approve.
    let o = s.decide("approve", &id, &s.agent);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("unauthenticated"), "{o:?}");
    let (_, v) = s.call(insert, serde_json::json!([1, "first"]));
    assert_eq!(approval_id(&v), id, "still pending");

    let o = s.decide("approve", &id, &s.approver);
    assert_eq!(ok(&o), format!("approved {id}"));
    let shown = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(shown.contains("query_db") && shown.contains("INSERT INTO notes") && shown.contains("first"), "{shown}");
    let (code, v) = s.call(insert, serde_json::json!([1, "first"]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"]["rows_affected"], 1);

    let (_, v) = s.call(insert, serde_json::json!([2, "second"]));
    let id2 = approval_id(&v);
    assert_eq!(ok(&s.decide("deny", &id2, &s.approver)), format!("denied {id2}"));
    let (code, v) = s.call(insert, serde_json::json!([2, "second"]));
    assert_eq!((code, v["error"]["code"].as_str()), (1, Some("approval-denied")), "{v}");
    let o = s.decide("approve", &id2, &s.approver);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("conflict"), "{o:?}");
    let (_, v) = s.call("SELECT id FROM notes ORDER BY id", serde_json::json!([]));
    assert_eq!(v["result"]["rows"], serde_json::json!([[1]]));
    let o = airlock(s.dir.path(), &["audit", "verify"], "", &[]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn approval_page_in_chromium_shows_the_exact_call_inert_and_approves_it() {
    if let Some(why) = missing_browser() {
        if require() {
            panic!("AIRLOCK_REQUIRE_SERVICES=1 but {why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    let s = Setup::start();
    let out = Command::new("node")
        .arg(root().join("tests/browser/approve.mjs"))
        .current_dir(root().join("tests/browser"))
        .env("AIRLOCK_BASE", &s.base)
        .env("AIRLOCK_AGENT_TOKEN", &s.agent)
        .env("AIRLOCK_APPROVER_TOKEN", &s.approver)
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "browser checks failed:\n{report}");
    assert!(report.contains(" 0 failed"), "{report}");
    // What the browser approved ran once, with the exact text.
    let (_, v) = s.call("SELECT body FROM notes", serde_json::json!([]));
    assert_eq!(v["result"]["rows"].as_array().unwrap().len(), 1, "{v}");
    // The exact text ran; read back, its active markup comes defanged (T11).
    assert!(v["result"]["rows"][0][0].as_str().unwrap().contains("&lt;img src=x onerror="), "{v}");
    assert_eq!(v["result"]["untrusted_markup"]["action"], "neutralized", "{v}");
}
