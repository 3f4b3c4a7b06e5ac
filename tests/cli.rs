//! The `airlock` command, run as a user would: init, secrets from stdin, agents, policy,
//! call, audit verify (including a tampered log), tools, and the demo.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn airlock(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env("AIRLOCK_ENDPOINT", format!("unix:{}", socket(dir).display()))
        .env_remove("AIRLOCK_TOKEN")
        .env_remove("AIRLOCK_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .args(args);
    c
}

/// The broker's socket in `setup`'s configuration.
fn socket(dir: &Path) -> std::path::PathBuf {
    dir.join("run/airlock.sock")
}

/// A running `airlock serve` (the agent commands are thin clients of it), killed on drop.
struct Serve(std::process::Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Serve {
    let mut s = Serve(airlock(dir, &["serve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(socket(dir)).is_ok() {
            return s;
        }
        assert!(s.0.try_wait().unwrap().is_none(), "airlock serve exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("airlock serve did not open its socket");
}

fn run(dir: &Path, args: &[&str]) -> Output {
    airlock(dir, args).output().unwrap()
}

fn with_stdin(dir: &Path, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let mut c = airlock(dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const SECRET: &str = "cliCanary_T0k3n_9fQ2xLm";

fn sqlite_exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    });
}

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let o = run(d.path(), &["init"]);
    assert!(o.status.success(), "{}", text(&o));
    let db = d.path().join("app.db");
    sqlite_exec(&format!("sqlite://{}?mode=rwc", db.display()), "CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one');");
    let mut cfg = std::fs::read_to_string(d.path().join("airlock.toml")).unwrap();
    cfg = cfg.replace("[policy]\n", "").replace("files = []\n", "");
    cfg = cfg.replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"\nsocket = \"run/airlock.sock\"");
    cfg.push_str(
        "\n[handles.APP]\nkind = \"sqlite\"\nsecret = \"local:APP\"\n[handles.APP.database]\ntables = [\"t\"]\n\n\
         [handles.API]\nkind = \"http\"\nsecret = \"local:API\"\n[handles.API.http]\n\
         destinations = [{ url = \"https://api.example.com/v1/\" }]\ninject = { type = \"header\", name = \"X-API-Key\", format = \"{}\" }\n\n\
         [agents.bot]\ngrants = [{ handle = \"APP\", tools = [\"query_db\"] }]\n",
    );
    std::fs::write(d.path().join("airlock.toml"), cfg).unwrap();
    let o = with_stdin(d.path(), &["secret", "put", "APP"], &format!("sqlite://{}?mode=ro\n", db.display()), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = with_stdin(d.path(), &["secret", "put", "API"], SECRET, &[]);
    assert!(o.status.success(), "{}", text(&o));
    d
}

#[test]
fn init_creates_private_keys_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let o = run(d.path(), &["init"]);
    assert!(o.status.success(), "{}", text(&o));
    let key = d.path().join("airlock-data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(d.path().join("airlock-data/audit-signing.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let before = std::fs::read(&key).unwrap();
    let o = run(d.path(), &["init"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // The starter config loads as it is.
    let o = run(d.path(), &["policy", "check"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn config_errors_name_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("airlock.toml"),
        "[handles.DB]\nkind = \"sqlite\"\nsecret = \"local:DB\"\n[handles.DB.database]\nscope = \"admin\"\n",
    )
    .unwrap();
    let o = run(d.path(), &["policy", "check"]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(t.contains("airlock.toml:5:") && t.contains("admin"), "{t}");
    std::fs::write(d.path().join("airlock.toml"), "[handles.db]\nkind = \"sqlite\"\nsecret = \"local:DB\"\n").unwrap();
    let t = text(&run(d.path(), &["policy", "check"]));
    assert!(t.contains("airlock.toml:1: handles.db:"), "{t}");
}

#[test]
fn secrets_come_from_stdin_and_are_never_listed_or_in_argv() {
    let d = setup();
    let o = run(d.path(), &["secret", "list"]);
    let t = text(&o);
    assert!(o.status.success());
    assert!(t.contains("API\tversion 1") && t.contains("APP\tversion 1"), "{t}");
    assert!(!t.contains(SECRET));
    // There is no argv form for a value.
    let o = run(d.path(), &["secret", "put", "API", "some-value"]);
    assert!(!o.status.success());
    // A bad name is refused.
    let o = with_stdin(d.path(), &["secret", "put", "api"], "x", &[]);
    assert_eq!(o.status.code(), Some(2));
    // --from-file works; the store holds no plaintext.
    let f = d.path().join("v.txt");
    std::fs::write(&f, "fromFileCanary_77\n").unwrap();
    let o = run(d.path(), &["secret", "put", "EXTRA", "--from-file", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for file in ["store.db", "store.db-wal"] {
        let bytes = std::fs::read(d.path().join("airlock-data").join(file)).unwrap_or_default();
        for needle in [SECRET.as_bytes(), b"fromFileCanary_77".as_slice()] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{file}");
        }
    }
    let o = run(d.path(), &["secret", "rm", "EXTRA"]);
    assert!(o.status.success());
    let o = run(d.path(), &["secret", "rm", "EXTRA"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn agent_call_revoke_and_audit_verify_with_tampering() {
    let d = setup();
    let o = run(d.path(), &["agent", "add", "bot"]);
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("alk_") && token.len() == 64, "{token}");
    let _broker = serve(d.path());

    let call = |args: &str, tok: &str| with_stdin(d.path(), &["call", "query_db", "--args", args], "", &[("AIRLOCK_TOKEN", tok)]);
    let o = call(r#"{"credential_handle": "APP", "query": "SELECT v FROM t"}"#, &token);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["rows"][0][0], "one");
    let o = call(r#"{"credential_handle": "API", "query": "SELECT 1"}"#, &token);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("handle-unavailable"));

    let o = run(d.path(), &["agent", "list"]);
    assert!(text(&o).contains("\tbot\tlive"), "{}", text(&o));
    assert!(!text(&o).contains(&token[20..]));
    let o = run(d.path(), &["agent", "revoke", "bot"]);
    assert!(o.status.success());
    // Revoked by another process: the broker drops what it keeps of identities within this.
    std::thread::sleep(airlock_server::broker::IDENTITY_RECHECK);
    let o = call(r#"{"credential_handle": "APP", "query": "SELECT 1"}"#, &token);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unauthenticated"));

    let o = run(d.path(), &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("audit ok: 4 records"), "{}", text(&o));
    let o = run(d.path(), &["audit", "tail", "-n", "2"]);
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    // T27: the revocation is audited, with who revoked and why.
    assert!(lines[0].contains("\"seq\":3") && lines[0].contains("agent_revoked") && lines[0].contains("revoked by the operator"), "{}", lines[0]);
    assert!(lines[1].contains("\"seq\":4") && lines[1].contains("unauthenticated"), "{}", lines[1]);

    // The public key and the signed checkpoints, exported for a verifier outside the host.
    let o = run(d.path(), &["audit", "public-key"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(d.path().join("pinned.pub"), &o.stdout).unwrap();
    let o = run(d.path(), &["audit", "checkpoints", "export", "--output", "cps.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));
    let exported = std::fs::read_to_string(d.path().join("cps.jsonl")).unwrap();
    assert_eq!(exported.lines().last().map(|l| l.contains("\"seq\":4")), Some(true), "{exported}");
    let offline = ["audit", "verify", "--offline", "--checkpoints", "cps.jsonl", "--public-key", "pinned.pub"];
    let o = run(d.path(), &offline);
    assert!(o.status.success() && text(&o).contains("checkpoints ok: "), "{}", text(&o));

    // T28: edit record 2 behind airlock's back: the body, then a column outside the body.
    let db = d.path().join("airlock-data/store.db");
    let url = format!("sqlite://{}", db.display());
    sqlite_exec(&url, "CREATE TABLE kept AS SELECT body FROM audit WHERE seq = 2");
    sqlite_exec(&url, "UPDATE audit SET body = replace(body, 'handle-unavailable', 'ok') WHERE seq = 2");
    let o = run(d.path(), &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("BROKEN at record 2: audit-hash-mismatch"), "{}", text(&o));
    sqlite_exec(&url, "UPDATE audit SET body = (SELECT body FROM kept) WHERE seq = 2");
    let o = run(d.path(), &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    sqlite_exec(&url, "UPDATE audit SET decision = decision || 'x' WHERE seq = 2");
    let o = run(d.path(), &["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["audit"]["first_bad"]["seq"].as_i64(), v["audit"]["first_bad"]["code"].as_str()), (Some(2), Some("audit-hash-mismatch")), "{v}");
    sqlite_exec(&url, "UPDATE audit SET decision = substr(decision, 1, length(decision) - 1) WHERE seq = 2");

    // Truncated back to an earlier checkpoint, later checkpoints gone: only the export tells.
    sqlite_exec(&url, "DELETE FROM audit WHERE seq > 2; DELETE FROM audit_checkpoints WHERE seq > 2");
    let o = run(d.path(), &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d.path(), &["audit", "verify", "--checkpoints", "cps.jsonl", "--public-key", "pinned.pub"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("BROKEN at record 3: audit-truncated"), "{}", text(&o));
}

#[test]
fn policy_explain_and_tools() {
    let d = setup();
    let o = run(d.path(), &["policy", "explain", "--agent", "bot", "--tool", "query_db", "--handle", "APP"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("allow: grant:bot:APP"), "{}", text(&o));
    let o = run(d.path(), &["policy", "explain", "--agent", "bot", "--tool", "http_request", "--handle", "API"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("deny: default deny"), "{}", text(&o));
    let o = run(d.path(), &["policy", "check", "--show"]);
    assert!(text(&o).contains("permit") && text(&o).contains("policies ok"), "{}", text(&o));

    let o = run(d.path(), &["agent", "add", "bot"]);
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let _broker = serve(d.path());
    let o = with_stdin(d.path(), &["tools", "--format", "anthropic"], "", &[("AIRLOCK_TOKEN", &token)]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tools"][0]["name"], "query_db");
    assert_eq!(v["tools"][0]["input_schema"]["properties"]["credential_handle"]["enum"], serde_json::json!(["APP"]));
    assert!(!text(&o).contains(SECRET));
    let o = with_stdin(d.path(), &["tools", "--format", "yaml"], "", &[("AIRLOCK_TOKEN", &token)]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn demo_runs_and_reports_no_leak() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_airlock")).current_dir(d.path()).arg("demo").output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("the secret appears nowhere"), "{t}");
    assert!(t.contains("chain verified"), "{t}");
    assert!(t.contains("[REDACTED:BILLING_API]"), "{t}");
    assert!(t.contains("[REDACTED:github-pat]"), "{t}");
    assert!(t.contains("a second open: refused, share-unavailable"), "{t}");
}

#[test]
fn serve_answers_and_shuts_down_gracefully_on_sigterm() {
    let d = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg_path = d.path().join("airlock.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = airlock(d.path(), &["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
            assert!(resp.contains("{\"ok\":true}"), "{resp}");
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(up, "airlock serve did not come up");
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutting down"));
}

#[test]
fn mcp_over_stdio_lists_the_agents_tools() {
    let d = setup();
    let o = run(d.path(), &["agent", "add", "bot"]);
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let _broker = serve(d.path());
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cli-test","version":"1"}}}"#, "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, "\n",
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query_db","arguments":{"credential_handle":"APP","query":"SELECT v FROM t"}}}"#, "\n",
    );
    let mut c = airlock(d.path(), &["mcp"]);
    c.env("AIRLOCK_TOKEN", &token);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    // Answers arrive line by line, in any order (JSON-RPC does not order
    // them, and requests are served concurrently); close stdin once both
    // answers are in.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines: Vec<String> = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            lines.push(line.unwrap());
            let seen = |id: &str| lines.iter().any(|l| l.contains(id));
            if seen("\"id\":2") && seen("\"id\":3") {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    // An answer that never comes fails the test instead of hanging it.
    let lines = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(lines) => lines,
        Err(_) => {
            let _ = child.kill();
            panic!("no answer to both requests within 60 s: {}", String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr));
        }
    };
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let all = format!("{}\n--- stderr ---\n{}", lines.join("\n"), String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_str(lines.iter().find(|l| l.contains("\"id\":2")).expect(&all)).unwrap();
    let tools = list["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{all}");
    assert_eq!(tools[0]["inputSchema"]["properties"]["credential_handle"]["enum"], serde_json::json!(["APP"]));
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], true);
    let call: serde_json::Value = serde_json::from_str(lines.iter().find(|l| l.contains("\"id\":3")).expect(&all)).unwrap();
    assert_eq!(call["result"]["structuredContent"]["rows"][0][0], "one", "{all}");
    assert!(!all.contains(SECRET));
}

#[test]
fn t15_lease_issue_list_revoke_and_agent_tree() {
    let d = setup();
    let mut cfg = std::fs::read_to_string(d.path().join("airlock.toml")).unwrap();
    cfg = cfg.replace(
        "[agents.bot]\ngrants = [{ handle = \"APP\", tools = [\"query_db\"] }]\n",
        "[agents.bot]\ngrants = [{ handle = \"APP\", tools = [\"query_db\", \"request_lease\"] }]\n\n[handles.APP.lease]\nmax_ttl_seconds = 60\n",
    );
    std::fs::write(d.path().join("airlock.toml"), cfg).unwrap();
    let o = run(d.path(), &["agent", "add", "bot"]);
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let _broker = serve(d.path());
    let issue = |ttl: &str| with_stdin(d.path(), &["lease", "issue", "APP", "--ttl", ttl, "--tables", "T"], "", &[("AIRLOCK_TOKEN", &token)]);
    let o = issue("61");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("lease-not-allowed"), "{}", text(&o));
    let o = issue("30");
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = v["result"]["lease_id"].as_str().unwrap().to_owned();
    let handle = v["result"]["lease_handle"].as_str().unwrap().to_owned();
    assert_eq!(v["result"]["tables"], serde_json::json!(["t"]));
    let args = format!(r#"{{"credential_handle": "{handle}", "query": "SELECT v FROM t"}}"#);
    let o = with_stdin(d.path(), &["call", "query_db", "--args", &args], "", &[("AIRLOCK_TOKEN", &token)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d.path(), &["lease", "list"]);
    assert!(text(&o).contains(&format!("{id}\t{handle}\tread_only\tactive")), "{}", text(&o));
    let o = run(d.path(), &["lease", "revoke", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d.path(), &["lease", "list"]);
    assert!(text(&o).contains("\trevoked\t"), "{}", text(&o));
    let o = with_stdin(d.path(), &["call", "query_db", "--args", &args], "", &[("AIRLOCK_TOKEN", &token)]);
    assert!(text(&o).contains("handle-unavailable"), "{}", text(&o));
    let o = run(d.path(), &["agent", "tree"]);
    assert!(o.status.success() && text(&o).contains("bot ("), "{}", text(&o));
}

#[test]
fn unshare_revokes_a_live_link_once_and_audits_it() {
    let d = setup();
    // A live share as an upload leaves it, stored through the store's own API.
    let id = airlock_share::new_id().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = airlock_store::Store::open(&d.path().join("airlock-data")).await.unwrap();
        let rec = airlock_store::shares::NewShareRecord {
            id: &id,
            ciphertext: &[1u8; 64],
            proof_hash: &[7u8; 32],
            expires_at: chrono::Utc::now().timestamp() + 3600,
            views: 1,
            creator: None,
            recipient: None,
        };
        store.create_share(&rec).await.unwrap();
        store.close().await;
    });
    let o = run(d.path(), &["unshare", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!("revoked {id}")), "{}", text(&o));
    // Once only; an unknown or malformed id is no live link either.
    let o = run(d.path(), &["unshare", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("share-unavailable"), "{}", text(&o));
    let o = run(d.path(), &["unshare", "not-a-share-id"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("invalid-share"), "{}", text(&o));
    let o = run(d.path(), &["audit", "tail", "-n", "5"]);
    assert!(text(&o).contains("share_revoked") && text(&o).contains(&id), "{}", text(&o));
    let o = run(d.path(), &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn agent_rotate_gives_a_new_token_and_the_old_one_works_for_the_overlap_only() {
    let d = setup();
    let o = run(d.path(), &["agent", "add", "bot"]);
    let old = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let _broker = serve(d.path());
    let call = |tok: &str| {
        with_stdin(d.path(), &["call", "query_db", "--args", r#"{"credential_handle": "APP", "query": "SELECT v FROM t"}"#], "", &[("AIRLOCK_TOKEN", tok)])
    };
    assert!(call(&old).status.success());
    for bad in ["2d", "25h", "x", "-5"] {
        let o = run(d.path(), &["agent", "rotate", "bot", "--overlap", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
    }
    // Rotated by another process than the serving broker, with a 2 s overlap.
    let o = run(d.path(), &["agent", "rotate", "bot", "--overlap", "2s"]);
    assert!(o.status.success(), "{}", text(&o));
    let new = String::from_utf8(o.stdout.clone()).unwrap().trim().to_owned();
    assert!(new.starts_with("alk_") && new != old && new[..20] == old[..20], "same agent id: {new}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains(&new[20..]), "the token is printed once, on stdout");
    assert!(call(&old).status.success(), "the old token works during the overlap");
    assert!(call(&new).status.success());
    std::thread::sleep(std::time::Duration::from_millis(2300));
    let o = call(&old);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unauthenticated"), "{}", text(&o));
    assert!(call(&new).status.success());
    let o = run(d.path(), &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn secret_rotate_replaces_the_value_and_refuses_an_unknown_name() {
    let d = setup();
    let o = with_stdin(d.path(), &["secret", "rotate", "APP", "--overlap", "10m"], "canaryRotCli_9Lx\n", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rotated APP (version 2)") && text(&o).contains("600 s") && !text(&o).contains("canaryRotCli"), "{}", text(&o));
    let o = run(d.path(), &["secret", "list"]);
    assert!(text(&o).contains("APP\tversion 2"), "{}", text(&o));
    let o = with_stdin(d.path(), &["secret", "rotate", "NOPE"], "x\n", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = with_stdin(d.path(), &["secret", "rotate", "APP", "--overlap", "3d"], "x\n", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
