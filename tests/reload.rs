//! Live reload through the binary: `airlock serve`, `airlock reload` (SIGHUP to the process behind
//! the socket, the outcome read from the audit log), the thin client's calls, and the official
//! Python MCP SDK over `airlock mcp` told of its tool list changes. The MCP part is skipped (with
//! `skipped: <reason>`) when python `mcp` is missing, unless `AIRLOCK_REQUIRE_SERVICES=1`.

mod common;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET_APP: &str = "canaryReloadApp_Qv81Lx";
const SECRET_NEW: &str = "canaryReloadNew_Zp40Wk";

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A data directory from `airlock init`, its socket in a directory of its own, two SQLite
/// databases (APP's and NEW's) and the agents `bot` and `other`.
struct Home {
    dir: tempfile::TempDir,
    run: tempfile::TempDir,
    base: String,
    bot: String,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut h = Home { dir, run, base: String::new(), bot: String::new() };
        h.ok(&["init"], "");
        let socket = h.socket();
        h.base = std::fs::read_to_string(h.config())
            .unwrap()
            .replace("listen = \"127.0.0.1:7878\"", &format!("listen = \"127.0.0.1:0\"\nsocket = \"{}\"", socket.display()));
        for (name, secret) in [("app", SECRET_APP), ("new", SECRET_NEW)] {
            // The secret is the DSN, its file named after the canary; a row holds the DSN itself,
            // which the scrubber must redact.
            let db = h.dir.path().join(format!("{secret}.db"));
            let dsn = format!("sqlite://{}?mode=ro", db.display());
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await.unwrap();
                let sql = format!("CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, '{name}'), (2, '{dsn}');");
                sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
            });
            // APP's in the local vault; NEW's in a file the broker reads only once a reload
            // brings the handle.
            if name == "app" {
                h.ok(&["secret", "put", "APP"], &dsn);
            } else {
                std::fs::write(h.dir.path().join("new.dsn"), &dsn).unwrap();
            }
        }
        h.write(&h.config_with("", ""));
        h.bot = h.ok(&["agent", "add", "bot"], "").trim().to_owned();
        h.ok(&["agent", "add", "other"], "");
        h
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }

    fn socket(&self) -> PathBuf {
        self.run.path().join("airlock.sock")
    }

    /// The configuration: APP granted to `bot`, `handles` and `bot_grants` added.
    fn config_with(&self, handles: &str, bot_grants: &str) -> String {
        format!(
            "{}\n[handles.APP]\nkind = \"sqlite\"\nsecret = \"local:APP\"\n[handles.APP.database]\ntables = [\"t\"]\n\n{handles}\n\
             [agents.bot]\ngrants = [{{ handle = \"APP\", tools = [\"query_db\"] }}{bot_grants}]\n\n[agents.other]\ngrants = []\n",
            self.base
        )
    }

    fn write(&self, cfg: &str) {
        std::fs::write(self.config(), cfg).unwrap();
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        common::operator_run(self.dir.path(), args, stdin)
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let o = self.run(args, stdin);
        assert!(o.status.success(), "airlock {args:?}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `airlock call query_db` on `handle` as `bot`, over the socket.
    fn query(&self, handle: &str) -> Output {
        let args = format!(r#"{{"credential_handle":"{handle}","query":"SELECT v FROM t ORDER BY id"}}"#);
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AIRLOCK_ENDPOINT", format!("unix:{}", self.socket().display()))
            .env("AIRLOCK_TOKEN", &self.bot)
            .args(["call", "query_db", "--args", &args])
            .output()
            .unwrap()
    }

    fn serve(&self) -> common::Serving {
        common::serve_until_socket(self.dir.path(), &self.socket())
    }

    /// Every audit record, oldest first.
    fn audit(&self) -> Vec<Value> {
        self.ok(&["audit", "export", "--from", "0"], "").lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

const NEW_HANDLE: &str = "[handles.NEW]\nkind = \"sqlite\"\nsecret = \"file:new.dsn\"\n[handles.NEW.database]\ntables = [\"t\"]\n";
const NEW_GRANT: &str = ", { handle = \"NEW\", tools = [\"query_db\"] }";

fn reload(h: &Home) -> Output {
    h.run(&["reload"], "")
}

#[test]
fn reload_puts_a_new_handle_in_force_refuses_a_bad_file_whole_and_audits_both() {
    let h = Home::new();
    let s = h.serve();
    let o = h.query("NEW");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("handle-unavailable"), "{}", text(&o));

    // A new handle and its grant: in force at once, no restart.
    h.write(&h.config_with(NEW_HANDLE, NEW_GRANT));
    let o = reload(&h);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o), s.log());
    assert!(text(&o).contains("handles added: NEW"), "{}", text(&o));
    let o = h.query("NEW");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["rows"][0][0], "new", "{v}");
    // The new handle's secret (its DSN's canary, stored in a row) is scrubbed.
    assert!(!text(&o).contains(SECRET_NEW), "{}", text(&o));
    assert_eq!(v["result"]["row_count"], 2, "{v}");

    // A file that does not load: every problem listed, nothing sent, nothing changed.
    h.write(&(h.config_with(NEW_HANDLE, NEW_GRANT) + "\n[handles.BAD]\nkind = \"nope\"\nsecret = \"local:X\"\n[agents.bot2]\ngrants = [{ handle = \"MISSING\", tools = [\"query_db\"] }]\n"));
    let o = reload(&h);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("BAD") && out.contains("MISSING") && out.contains("nothing was sent"), "every problem at once: {out}");

    // A section read once at start, and a grant removed, in one file: refused whole by the
    // broker, which names the section; the grant stays.
    let moved = h.config_with(NEW_HANDLE, "").replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    h.write(&moved);
    let o = reload(&h);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", text(&o), s.log());
    assert!(text(&o).contains("server"), "{}", text(&o));
    assert!(s.log().contains("[server] changed"), "{}", s.log());
    assert_eq!(h.query("NEW").status.code(), Some(0), "the refused reload changed nothing");

    // Without the section's change, the grant's removal goes through.
    h.write(&h.config_with(NEW_HANDLE, ""));
    let o = h.run(&["--json", "reload"], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reloaded"], true, "{v}");
    assert_eq!(v["agents_changed"], serde_json::json!(["bot"]), "{v}");
    assert_eq!(v["policy_changed"], true, "{v}");
    let o = h.query("NEW");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("handle-unavailable"), "{}", text(&o));

    // The audit holds each reload, by name only, and the log chain verifies.
    let recs = h.audit();
    let kinds: Vec<(&str, &str)> = recs
        .iter()
        .filter(|r| r["tool"].as_str().is_some_and(|t| t.starts_with("config_reload")))
        .map(|r| (r["tool"].as_str().unwrap(), r["agent"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("config_reloaded", "sighup"), ("config_reload_refused", "sighup"), ("config_reloaded", "sighup")], "{recs:?}");
    h.ok(&["audit", "verify"], "");
    let all = format!("{recs:?}{}", s.log());
    assert!(!all.contains(SECRET_NEW) && !all.contains(SECRET_APP), "a secret in the audit or the log");
    drop(s);
}

#[test]
fn reload_without_a_broker_is_exit_3() {
    let h = Home::new();
    let o = reload(&h);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(&h.socket().display().to_string()), "{}", text(&o));
}

fn python_mcp() -> Result<(), String> {
    let o = Command::new("python3").args(["-c", "import mcp"]).output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err("python3 -m pip install mcp==2.3.0".into())
    }
}

fn wait_for(p: &Path, child: &mut Child) {
    let start = Instant::now();
    while !p.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("the MCP client exited with {st} before {}: {err}", p.display());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the MCP client did not write {}", p.display());
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The credential handles a tool list names, sorted.
fn handles(tools: &Value) -> Vec<String> {
    let mut v: Vec<String> = tools
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["inputSchema"]["properties"]["credential_handle"]["enum"].as_array())
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn an_mcp_session_is_told_when_a_reload_changes_its_tools_and_only_then() {
    if let Err(why) = python_mcp() {
        assert!(!common::require(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let h = Home::new();
    let s = h.serve();
    let steps = tempfile::tempdir().unwrap();
    let script = common::root().join("tests/clients/reload_mcp.py");
    let mut client = Command::new("python3")
        .arg(script)
        .args([env!("CARGO_BIN_EXE_airlock"), steps.path().to_str().unwrap(), "2"])
        .env("AIRLOCK_TOKEN", &h.bot)
        .env("AIRLOCK_ENDPOINT", format!("unix:{}", h.socket().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&steps.path().join("listed-0"), &mut client);
    // 1: bot gets NEW. The session is told.
    h.write(&h.config_with(NEW_HANDLE, NEW_GRANT));
    assert_eq!(reload(&h).status.code(), Some(0), "{}", s.log());
    wait_for(&steps.path().join("listed-1"), &mut client);
    // 2: a handle for `other` only: bot's tools are the same, its session is not told.
    let other = "[handles.OTHER]\nkind = \"sqlite\"\nsecret = \"local:APP\"\n[handles.OTHER.database]\ntables = [\"t\"]\n";
    let cfg = h.config_with(&format!("{NEW_HANDLE}\n{other}"), NEW_GRANT).replace("grants = []", "grants = [{ handle = \"OTHER\", tools = [\"query_db\"] }]");
    h.write(&cfg);
    assert_eq!(reload(&h).status.code(), Some(0), "{}", s.log());
    // 3: bot loses NEW. The session is told again.
    h.write(&cfg.replace(NEW_GRANT, ""));
    assert_eq!(reload(&h).status.code(), Some(0), "{}", s.log());
    let o = client.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let lists = v["lists"].as_array().unwrap();
    assert_eq!(handles(&lists[0]), ["APP"], "{v}");
    assert_eq!(handles(&lists[1]), ["APP", "NEW"], "{v}");
    assert_eq!(handles(&lists[2]), ["APP"], "{v}");
    let told = v["notifications"].as_array().unwrap().iter().filter(|n| *n == "notifications/tools/list_changed").count();
    assert_eq!(told, 2, "told once per change of its own list, not for another agent's: {v}");
}
