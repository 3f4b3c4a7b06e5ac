//! T22: the agent's side holds nothing. A real `airlock serve` owns the keys; the agent-facing
//! commands (`airlock call`, `tools`, `lease issue`, `mcp`) are thin clients that reach it over
//! its Unix socket (or loopback HTTP) with only a token. Tests run the thin client as a second,
//! real OS user, check what that user can reach, the audit's peer uid, the exit code when no
//! broker answers, a broker that refuses an unsafe home, and the official Python MCP SDK talking
//! to `airlock mcp`.

mod common;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SECRET: &str = "t22Canary_Zq8Lm3Vx7Pw2Kd";
/// The OS user the agent runs as in these tests (created when missing; needs root).
const AGENT_USER: &str = "airlock-t22-agent";

fn require() -> bool {
    std::env::var("AIRLOCK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    let o = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A broker home: config, data dir (0700 inside a 0700 temp dir), and a separate runtime dir
/// for the socket that the agent's user may enter.
struct Home {
    dir: tempfile::TempDir,
    run: tempfile::TempDir,
}

impl Home {
    fn config(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }
    fn socket(&self) -> PathBuf {
        self.run.path().join("airlock.sock")
    }
    fn endpoint(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// The `airlock` command as the broker's operator (the config and data dir are theirs).
    fn admin(&self, args: &[&str]) -> Command {
        common::operator(self.dir.path(), args)
    }

    fn admin_run(&self, args: &[&str], stdin: &str) -> Output {
        common::operator_run(self.dir.path(), args, stdin)
    }

    fn add_agent(&self, name: &str) -> String {
        let o = self.admin_run(&["agent", "add", name], "");
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }
}

fn sqlite_exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    });
}

/// `airlock init`, a SQLite handle APP (granted to `bot` and `other`), an http handle API whose
/// secret is [`SECRET`], and the socket in its own runtime directory.
fn home(extra_server: &str) -> Home {
    let h = Home { dir: tempfile::tempdir().unwrap(), run: tempfile::tempdir().unwrap() };
    std::fs::set_permissions(h.run.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = h.admin_run(&["init"], "");
    assert!(o.status.success(), "{}", text(&o));
    let db = h.dir.path().join("app.db");
    sqlite_exec(&format!("sqlite://{}?mode=rwc", db.display()), "CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one');");
    let cfg = std::fs::read_to_string(h.config())
        .unwrap()
        .replace("listen = \"127.0.0.1:7878\"", &format!("listen = \"127.0.0.1:0\"\nsocket = \"{}\"\n{extra_server}", h.socket().display()));
    let cfg = cfg
        + "\n[handles.APP]\nkind = \"sqlite\"\nsecret = \"local:APP\"\n[handles.APP.database]\ntables = [\"t\"]\n\n\
           [handles.API]\nkind = \"http\"\nsecret = \"local:API\"\n[handles.API.http]\n\
           destinations = [{ url = \"https://api.example.com/v1/\" }]\ninject = { type = \"header\", name = \"X-API-Key\", format = \"{}\" }\n\n\
           [agents.bot]\ngrants = [{ handle = \"APP\", tools = [\"query_db\"] }]\n\
           [agents.other]\ngrants = [{ handle = \"APP\", tools = [\"query_db\"] }]\n";
    std::fs::write(h.config(), cfg).unwrap();
    let o = h.admin_run(&["secret", "put", "APP"], &format!("sqlite://{}?mode=ro\n", db.display()));
    assert!(o.status.success(), "{}", text(&o));
    let o = h.admin_run(&["secret", "put", "API"], SECRET);
    assert!(o.status.success(), "{}", text(&o));
    h
}

/// A running `airlock serve` on the home, once its socket answers.
fn serve(h: &Home) -> common::Serving {
    common::serve_until_socket(h.dir.path(), &h.socket())
}

/// A thin client run, with only the endpoint and token in its environment.
fn thin(h: &Home, args: &[&str], token: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AIRLOCK_ENDPOINT", h.endpoint())
        .env("AIRLOCK_TOKEN", token)
        .current_dir("/")
        .args(args)
        .output()
        .unwrap()
}

fn audit(h: &Home, n: usize) -> Vec<Value> {
    let o = h.admin_run(&["audit", "tail", "-n", &n.to_string()], "");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn t22_call_tools_and_lease_go_through_the_socket_with_the_peer_in_the_audit() {
    let h = home("");
    let _s = serve(&h);
    let token = h.add_agent("bot");
    // The thin client runs with no config, no data dir, nothing but the endpoint and the token.
    let o = thin(&h, &["call", "query_db", "--args", r#"{"credential_handle":"APP","query":"SELECT v FROM t"}"#], &token);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["rows"][0][0], "one");
    let o = thin(&h, &["tools", "--format", "openai"], &token);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("query_db") && !text(&o).contains(SECRET), "{}", text(&o));
    // A refusal is exit 1, with the contract's envelope.
    let o = thin(&h, &["call", "query_db", "--args", r#"{"credential_handle":"API","query":"SELECT 1"}"#], &token);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("handle-unavailable"), "{}", text(&o));
    // A wrong token is refused (exit 1), and audited.
    let o = thin(&h, &["call", "query_db", "--args", r#"{"credential_handle":"APP","query":"SELECT 1"}"#], "alk_not_a_token");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("unauthenticated"), "{}", text(&o));

    let recs = audit(&h, 3);
    let me = nix_uid();
    let ok = recs.iter().find(|r| r["agent"] == "bot" && r["outcome"] == "ok").expect("the allowed call's record");
    assert_eq!(ok["peer"]["uid"], me, "{ok}");
    assert!(ok["peer"]["pid"].as_i64().unwrap_or(0) > 0, "{ok}");
}

#[test]
fn t22_no_broker_is_exit_3_naming_the_endpoint() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("nobody-here.sock");
    for endpoint in [format!("unix:{}", sock.display()), {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        format!("http://127.0.0.1:{port}")
    }] {
        for args in [&["call", "query_db", "--args", "{}"][..], &["tools"], &["mcp"], &["lease", "issue", "APP"]] {
            let o = Command::new(env!("CARGO_BIN_EXE_airlock"))
                .env_clear()
                .env("AIRLOCK_ENDPOINT", &endpoint)
                .env("AIRLOCK_TOKEN", "alk_x")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(3), "{args:?} {}", text(&o));
            let t = text(&o);
            assert!(t.contains(endpoint.trim_end_matches('/')) && t.contains("airlock serve"), "{t}");
        }
    }
    // Without a token the thin client says so before connecting (a usage error, exit 2).
    let o = Command::new(env!("CARGO_BIN_EXE_airlock")).env_clear().args(["tools"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("AIRLOCK_TOKEN"), "{}", text(&o));
    // Plain http to a non-loopback host would send the token in clear: refused.
    let o = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env_clear()
        .env("AIRLOCK_ENDPOINT", "http://192.0.2.1:7878")
        .env("AIRLOCK_TOKEN", "alk_x")
        .args(["tools"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("only for loopback"), "{}", text(&o));
}

#[test]
fn t22_token_may_come_from_a_file_and_never_from_argv() {
    let h = home("");
    let _s = serve(&h);
    let token = h.add_agent("bot");
    let tf = h.run.path().join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env_clear()
        .env("AIRLOCK_ENDPOINT", h.endpoint())
        .env("AIRLOCK_TOKEN_FILE", &tf)
        .args(["call", "query_db", "--args", r#"{"credential_handle":"APP","query":"SELECT v FROM t"}"#])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // And from a client config file, endpoint included.
    let cc = h.run.path().join("client.toml");
    std::fs::write(&cc, format!("endpoint = \"{}\"\ntoken_file = \"token\"\n", h.endpoint())).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env_clear()
        .env("AIRLOCK_CLIENT_CONFIG", &cc)
        .args(["tools"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // There is no flag for a token.
    let o = thin(&h, &["call", "query_db", "--token", &token], "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn t22_serve_refuses_a_home_others_can_read() {
    let h = home("");
    let data = h.dir.path().join("airlock-data");
    for (path, mode, check) in [
        (data.join("master.key"), 0o640, "key-file-mode"),
        (data.join("audit-signing.key"), 0o604, "key-file-mode"),
        (data.join("store.db"), 0o644, "key-file-mode"),
        (data.clone(), 0o750, "data-dir-mode"),
    ] {
        let before = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = h.admin(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}: {}", path.display(), text(&o));
        let t = text(&o);
        assert!(t.contains("refusing to serve") && t.contains(check) && t.contains(&path.display().to_string()), "{t}");
        assert!(!h.socket().exists(), "no socket may be opened by a broker that refused");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(before)).unwrap();
    }
    // Another owner, or a symbolic link, is refused too.
    if let Some((uid, _)) = agent_user() {
        let key = data.join("master.key");
        std::os::unix::fs::chown(&key, Some(uid), None).unwrap();
        let o = h.admin(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("key-file-owner"), "{}", text(&o));
        std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    }
    let audit_key = data.join("audit-signing.key");
    let elsewhere = h.dir.path().join("audit-elsewhere.key");
    std::fs::rename(&audit_key, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &audit_key).unwrap();
    let o = h.admin(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("key-file-symlink"), "{}", text(&o));
    std::fs::remove_file(&audit_key).unwrap();
    std::fs::rename(&elsewhere, &audit_key).unwrap();
    // Put right, it serves.
    let _s = serve(&h);
    // `airlock init` made the data dir 0700 and every key file 0600 (umask 077 from main).
    for f in ["master.key", "audit-signing.key", "store.db"] {
        assert_eq!(std::fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o077, 0, "{f}");
    }
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn t22_a_second_broker_does_not_take_over_a_live_socket() {
    let h = home("");
    let _s = serve(&h);
    let o = h.admin(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("another airlock broker is serving"), "{}", text(&o));
    // The first one still answers.
    assert!(std::os::unix::net::UnixStream::connect(h.socket()).is_ok());
}

#[test]
fn t22_garbage_and_disconnects_on_the_socket_leave_the_broker_serving() {
    let h = home("");
    let s = serve(&h);
    let token = h.add_agent("bot");
    // Garbage, a half request, an upgrade without a token, a client that leaves mid-request.
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET /v1/tools HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999\r\n\r\npartial",
        b"GET /v1/mcp/stream HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: airlock-mcp\r\n\r\n",
        b"POST /v1/invoke HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n{",
    ] {
        let mut c = std::os::unix::net::UnixStream::connect(h.socket()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let _ = c.write_all(junk);
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(!answer.contains("101"), "{answer}");
        drop(c);
    }
    // An MCP session whose client goes away mid-handshake.
    let mut c = std::os::unix::net::UnixStream::connect(h.socket()).unwrap();
    let req = format!(
        "GET /v1/mcp/stream HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: upgrade\r\nUpgrade: airlock-mcp\r\n\r\n{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\""
    );
    c.write_all(req.as_bytes()).unwrap();
    drop(c);
    let o = thin(&h, &["call", "query_db", "--args", r#"{"credential_handle":"APP","query":"SELECT v FROM t"}"#], &token);
    assert_eq!(o.status.code(), Some(0), "{} / {}", text(&o), s.log());
}

#[test]
fn t22_python_sdk_over_stdio_through_the_thin_client() {
    let have = Command::new("python3").args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(!require(), "python3 with the mcp package is required (pip install mcp==2.3.0)");
        eprintln!("skipped: python3 -m pip install mcp==2.3.0");
        return;
    }
    let h = home("");
    let _s = serve(&h);
    let token = h.add_agent("bot");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/thin_mcp.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_airlock"))
        .env("AIRLOCK_TOKEN", &token)
        .env("AIRLOCK_ENDPOINT", h.endpoint())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tools"], json!(["query_db"]), "{v}");
    assert_eq!(v["query"]["structuredContent"]["rows"][0][0], "one", "{v}");
    assert_eq!(v["refused"]["structuredContent"]["code"], "handle-unavailable", "{v}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(SECRET));
    // The calls came over the socket: their records name this process's user.
    let recs = audit(&h, 2);
    assert!(recs.iter().all(|r| r["peer"]["uid"] == nix_uid()), "{recs:?}");
    // Revoking the agent ends its use mid-session: a new session is refused at once.
    let o = h.admin_run(&["agent", "revoke", "bot"], "");
    assert!(o.status.success(), "{}", text(&o));
    // Revoked by another process: the broker drops what it keeps of identities within this.
    std::thread::sleep(airlock_server::broker::IDENTITY_RECHECK);
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("mcp")
        .env("AIRLOCK_TOKEN", &token)
        .env("AIRLOCK_ENDPOINT", h.endpoint())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("unauthenticated"), "{}", text(&o));
}

// ---- a second OS user ----

/// `(uid, gid)` of [`AGENT_USER`], created if missing. `None` when not root.
fn agent_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let id = |flag: &str| Command::new("id").args([flag, AGENT_USER]).output().ok().filter(|o| o.status.success());
    if id("-u").is_none() {
        let o = Command::new("useradd").args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", AGENT_USER]).output().unwrap();
        assert!(o.status.success() || id("-u").is_some(), "useradd: {}", text(&o));
    }
    let n = |flag: &str| String::from_utf8_lossy(&id(flag).unwrap().stdout).trim().parse::<u32>().unwrap();
    Some((n("-u"), n("-g")))
}

/// The airlock binary copied where the agent's user can run it (the build tree may sit under a
/// directory only root may enter).
fn agent_binary(dir: &Path) -> PathBuf {
    let p = dir.join("airlock");
    std::fs::copy(env!("CARGO_BIN_EXE_airlock"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn as_agent(uid: u32, gid: u32, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn t22_the_agents_user_calls_through_the_socket_and_reaches_no_key() {
    let Some((uid, gid)) = agent_user() else {
        assert!(!require(), "this test needs root to create a second OS user");
        eprintln!("skipped: needs root to create a second OS user");
        return;
    };
    let h = home(&format!("socket_group = \"{AGENT_USER}\"\nagent_users = [\"{AGENT_USER}\"]\n"));
    let s = serve(&h);
    let token = h.add_agent("bot");
    let tools = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = agent_binary(tools.path());
    let env = [("AIRLOCK_ENDPOINT", h.endpoint()), ("AIRLOCK_TOKEN", token.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The socket is the agents' group's, 0660.
    let m = std::fs::metadata(h.socket()).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&m), gid);

    let o = as_agent(uid, gid, &bin, &["call", "query_db", "--args", r#"{"credential_handle":"APP","query":"SELECT v FROM t"}"#], &env);
    assert_eq!(o.status.code(), Some(0), "{} / {}", text(&o), s.log());
    let rec = audit(&h, 1).pop().unwrap();
    assert_eq!(rec["agent"], "bot");
    assert_eq!(rec["peer"]["uid"], uid, "the audit names the OS user behind the call: {rec}");

    // Everything the broker holds, as bytes the agent's user must find nowhere: the master key,
    // the audit signing key, the store, in raw, hex and base64 forms.
    let data = h.dir.path().join("airlock-data");
    let broker_pid = s.child.id();
    for f in ["master.key", "audit-signing.key", "store.db"] {
        let o = as_agent(uid, gid, Path::new("/bin/cat"), &[data.join(f).to_str().unwrap()], &[]);
        assert!(!o.status.success(), "{f} is readable by the agent's user");
    }
    // Not dumpable: its environment, memory, mappings and descriptors are closed to others.
    for f in ["environ", "mem", "maps", "fd/0"] {
        let p = format!("/proc/{broker_pid}/{f}");
        let o = as_agent(uid, gid, Path::new("/usr/bin/head"), &["-c", "64", &p], &[]);
        assert!(!o.status.success() && o.stdout.is_empty(), "{p} is readable by the agent's user: {}", text(&o));
    }
    let master = std::fs::read(data.join("master.key")).unwrap();
    let audit_key = std::fs::read(data.join("audit-signing.key")).unwrap();
    let scan = tools.path().join("scan.py");
    std::fs::write(&scan, SCAN_PY).unwrap();
    std::fs::set_permissions(&scan, std::fs::Permissions::from_mode(0o755)).unwrap();
    let needles = format!("{},{},{}", hex(&master), hex(&audit_key), hex(SECRET.as_bytes()));
    let roots = [
        "/tmp".to_owned(),
        "/dev/shm".to_owned(),
        "/run".to_owned(),
        "/var/tmp".to_owned(),
        h.dir.path().display().to_string(),
        format!("/proc/{broker_pid}"),
    ];
    let mut args = vec![scan.to_str().unwrap(), &needles];
    args.extend(roots.iter().map(String::as_str));
    let o = as_agent(uid, gid, Path::new("/usr/bin/python3"), &args, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["hits"], json!([]), "the agent's user found key bytes: {report}");
    assert!(report["files_read"].as_u64().unwrap() > 0, "{report}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Walks the roots as the calling user and reports every readable file holding one of the
/// needles (hex-given bytes) raw, in hex (either case) or in base64 (any of three alignments).
const SCAN_PY: &str = r#"
import base64, json, os, stat, sys
needles = [bytes.fromhex(h) for h in sys.argv[1].split(",")]
forms = []
for n in needles:
    forms += [n, n.hex().encode(), n.hex().upper().encode()]
    for shift in range(3):
        # The stable middle of the encoding at each alignment (the ends depend on neighbours).
        b = base64.b64encode(b"\0" * shift + n)[4 if shift else 0:-4]
        forms += [b, b.replace(b"+", b"-").replace(b"/", b"_")]
hits, read = [], 0
def check(path):
    global read
    try:
        # Regular files only (through a /proc/PID/fd link too): opening a FIFO someone left in
        # /tmp would wait for a writer forever, and reading a pipe would take its bytes.
        if not stat.S_ISREG(os.stat(path).st_mode):
            return
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except Exception:
        return
    read += 1
    if any(x in data for x in forms):
        hits.append(path)
for root in sys.argv[2:]:
    for dirpath, dirs, files in os.walk(root, onerror=lambda e: None, followlinks=False):
        if dirpath.startswith("/proc/") and dirpath.count("/") > 3:
            dirs[:] = [d for d in dirs if d in ("fd",)]
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) and not dirpath.endswith("/fd"):
                continue
            check(p)
print(json.dumps({"hits": hits, "files_read": read}))
"#;

#[test]
fn t22_agent_commands_never_fall_back_to_an_in_process_broker() {
    // The broker's config and keys are right there and readable (this test runs as their
    // owner), but no broker runs: the agent commands still only try the endpoint.
    let h = home("");
    let token = h.add_agent("bot");
    for args in [&["call", "query_db", "--args", r#"{"credential_handle":"APP","query":"SELECT v FROM t"}"#][..], &["tools"], &["lease", "issue", "APP"], &["mcp"]] {
        let o = h.admin(args).env("AIRLOCK_TOKEN", &token).env("AIRLOCK_ENDPOINT", h.endpoint()).stdin(Stdio::null()).output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", text(&o));
    }
    // Nothing was called: the audit holds no record.
    assert!(audit(&h, 5).is_empty());
}

#[test]
fn t22_doctor_reports_modes_users_and_the_sandbox_with_fixes() {
    let h = home("agent_users = [\"root\"]\n");
    // The sandbox's second stage from where its unprivileged uid can reach it (a build tree in a
    // private home may not let it).
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stage2 = agent_binary(bin_dir.path());
    let cfg = std::fs::read_to_string(h.config()).unwrap() + &format!("\n[sandbox]\nstage2 = \"{}\"\n", stage2.display());
    std::fs::write(h.config(), cfg).unwrap();
    let doctor = |h: &Home| {
        let o = h.admin(&["doctor", "--json"]).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
        (o.status.code(), v)
    };
    let checks = |v: &Value, level: &str| -> Vec<String> {
        v["findings"].as_array().unwrap().iter().filter(|f| f["level"] == level).map(|f| f["check"].as_str().unwrap().to_owned()).collect()
    };
    // The broker (this test, root) is one of the agents' users: an error, with its fix.
    let (code, v) = doctor(&h);
    assert_eq!(code, Some(1), "{v}");
    assert!(checks(&v, "error").contains(&"broker-user-is-agent".to_owned()), "{v}");
    let f = v["findings"].as_array().unwrap().iter().find(|f| f["check"] == "broker-user-is-agent").unwrap();
    assert!(f["fix"].as_str().unwrap().contains("dedicated user"), "{f}");
    // Fixed that, a key file opened to others is the error.
    let cfg = std::fs::read_to_string(h.config()).unwrap().replace("agent_users = [\"root\"]\n", "agent_users = [\"nobody\"]\n");
    std::fs::write(h.config(), cfg).unwrap();
    let key = h.dir.path().join("airlock-data/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, v) = doctor(&h);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(checks(&v, "error"), vec!["key-file-mode".to_owned()], "{v}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // All put right: no error; the sandbox is probed for real and reported.
    let (code, v) = doctor(&h);
    assert_eq!(code, Some(0), "{v}");
    assert!(checks(&v, "ok").contains(&"sandbox".to_owned()), "{v}");
    assert!(checks(&v, "ok").contains(&"data-dir-mode".to_owned()), "{v}");
    // Text output names each finding and its fix.
    let o = h.admin(&["doctor"]).output().unwrap();
    assert!(text(&o).contains("0 error(s)"), "{}", text(&o));
}

#[test]
fn t22_doctor_warns_about_plain_http_links_and_a_broker_that_is_root() {
    let h = home("");
    let good = std::fs::read_to_string(h.config()).unwrap();
    let o = h.admin(&["doctor", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let has = |check: &str, level: &str| v["findings"].as_array().unwrap().iter().any(|f| f["check"] == check && f["level"] == level);
    assert!(has("agent-users-unknown", "warning"), "{v}");
    // Plain-HTTP links for people are refused when the configuration loads (insecure-link), by
    // doctor as by serve.
    std::fs::write(h.config(), good + "\n[shares]\nbase_url = \"http://airlock.example\"\n").unwrap();
    let o = h.admin(&["doctor", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("shares.base_url") && text(&o).contains("[insecure-link]"), "{}", text(&o));
    if is_root() {
        assert!(has("broker-user-root", "warning"), "{v}");
    }
}

#[test]
fn t22_doctor_warns_when_a_read_only_handle_sits_on_a_role_that_can_write_or_read_beyond_its_tables() {
    let admin = "postgres://postgres@127.0.0.1:5432/test";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(admin).await?;
        // A role that can only read, for the handle that should pass.
        sqlx::raw_sql(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'airlock_t22_ro') THEN \
               CREATE ROLE airlock_t22_ro LOGIN; END IF; END $$; \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'airlock_t22_wide') THEN \
               CREATE ROLE airlock_t22_wide LOGIN; END IF; END $$; \
             CREATE TABLE IF NOT EXISTS airlock_t22_items (id int); \
             GRANT SELECT ON airlock_t22_items TO airlock_t22_ro, airlock_t22_wide; \
             GRANT pg_read_all_settings, pg_read_server_files TO airlock_t22_wide;",
        )
        .execute(&mut c)
        .await?;
        Ok::<_, sqlx::Error>(())
    });
    if let Err(e) = up {
        assert!(!require(), "PostgreSQL on 127.0.0.1:5432 is required: {e}");
        eprintln!("skipped: PostgreSQL is not reachable ({e})");
        return;
    }
    let h = home("agent_users = [\"nobody\"]\n");
    let cfg = std::fs::read_to_string(h.config()).unwrap()
        + "\n[handles.PG_ADMIN]\nkind = \"postgres\"\nsecret = \"local:PG_ADMIN\"\n[handles.PG_ADMIN.database]\nscope = \"read_only\"\n\
           \n[handles.PG_RO]\nkind = \"postgres\"\nsecret = \"local:PG_RO\"\n[handles.PG_RO.database]\nscope = \"read_only\"\n\
           \n[handles.PG_QR]\nkind = \"postgres\"\nsecret = \"local:PG_QR\"\n[handles.PG_QR.database]\nscope = \"read_only\"\nquery_role = \"airlock_t22_ro\"\n\
           \n[handles.PG_WIDE]\nkind = \"postgres\"\nsecret = \"local:PG_WIDE\"\n[handles.PG_WIDE.database]\nscope = \"read_only\"\n";
    std::fs::write(h.config(), cfg).unwrap();
    for (name, dsn) in [
        ("PG_ADMIN", admin.to_owned()),
        ("PG_RO", "postgres://airlock_t22_ro@127.0.0.1:5432/test".to_owned()),
        ("PG_QR", admin.to_owned()),
        ("PG_WIDE", "postgres://airlock_t22_wide@127.0.0.1:5432/test".to_owned()),
    ] {
        let o = h.admin_run(&["secret", "put", name], &dsn);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = h.admin(&["doctor", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let find = |check: &str| v["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).cloned();
    let su = find("read-only-handle-superuser").unwrap_or_else(|| panic!("{v}"));
    assert_eq!(su["level"], "warning");
    assert!(su["message"].as_str().unwrap().contains("PG_ADMIN"), "{su}");
    let ok = |handle: &str| {
        v["findings"].as_array().unwrap().iter().any(|f| {
            f["check"] == "database-credentials" && f["level"] == "ok" && f["message"].as_str().unwrap().contains(handle)
        })
    };
    assert!(ok("PG_RO: "), "{v}");
    // A superuser credential whose reads run under a query_role is judged by that role.
    assert!(ok("PG_QR: role airlock_t22_ro reads only"), "{v}");
    // Built-in roles that read settings and server files are named.
    let wide = find("read-only-handle-reads-beyond").unwrap_or_else(|| panic!("{v}"));
    assert_eq!(wide["level"], "warning");
    let m = wide["message"].as_str().unwrap();
    assert!(m.contains("PG_WIDE") && m.contains("pg_read_all_settings") && m.contains("pg_read_server_files"), "{wide}");
    assert!(!m.contains("pg_read_all_data"), "{wide}");
    // No password or DSN in the report.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("postgres://"), "{v}");
}

#[test]
fn t30_doctor_notes_static_tokens_and_the_platform_issuer_that_could_replace_them() {
    let h = home("");
    // The finding `agent-identity` of a doctor run whose environment shows `env` and no other
    // platform (the variables of this test's own CI are removed).
    let identity = |env: &[(&str, &str)]| -> (Value, Value) {
        let mut c = h.admin(&["doctor", "--json"]);
        for v in ["KUBERNETES_SERVICE_HOST", "ACTIONS_ID_TOKEN_REQUEST_URL", "GITLAB_CI", "CI_SERVER_URL"] {
            c.env_remove(v);
        }
        let o = c.envs(env.iter().copied()).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
        let f = v["findings"].as_array().unwrap().iter().find(|f| f["check"] == "agent-identity").cloned();
        (f.unwrap_or_else(|| panic!("no agent-identity finding: {v}")), v)
    };
    let message = |f: &Value| f["message"].as_str().unwrap().to_owned();
    // A mounted service-account token says Kubernetes whatever the environment says.
    let in_kubernetes = Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists();

    // Static tokens only: a note (level ok, no fix), which changes neither errors nor warnings.
    let (f, plain) = identity(&[]);
    assert_eq!(f["level"], "ok", "{f}");
    assert!(f.get("fix").is_none(), "{f}");
    let m = message(&f);
    assert!(m.contains("static airlock tokens (bot, other)") && m.contains("[issuers.NAME]") && m.contains("short-lived"), "{m}");
    assert_eq!(m.contains("Kubernetes"), in_kubernetes, "{m}");
    assert!(!m.contains("GitHub") && !m.contains("GitLab"), "{m}");

    // The platform doctor runs on is named, with its issuer.
    let m = message(&identity(&[("ACTIONS_ID_TOKEN_REQUEST_URL", "https://pipelines.actions.githubusercontent.com/abc")]).0);
    assert!(m.contains("GitHub Actions") && m.contains("issuer = \"https://token.actions.githubusercontent.com\""), "{m}");
    let m = message(&identity(&[("GITLAB_CI", "true"), ("CI_SERVER_URL", "https://gitlab.acme.test")]).0);
    assert!(m.contains("GitLab CI") && m.contains("issuer = \"https://gitlab.acme.test\" (the instance URL)"), "{m}");
    assert!(!m.contains("GitHub"), "{m}");
    let m = message(&identity(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]).0);
    assert!(m.contains("Kubernetes") && m.contains("service-account issuer") && m.contains("AIRLOCK_TOKEN_FILE"), "{m}");

    // With an issuer: which agents it signs in, and which still use static tokens.
    let jwks = h.dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let cfg = std::fs::read_to_string(h.config()).unwrap()
        + &format!(
            "\n[issuers.cluster]\nissuer = \"https://kubernetes.default.svc\"\njwks_file = \"{}\"\naudience = \"https://airlock.test\"\n\
             subjects = [{{ subject = \"system:serviceaccount:agents:bot\", agent = \"bot\" }}]\n",
            jwks.display()
        );
    std::fs::write(h.config(), cfg).unwrap();
    let (f, with_issuer) = identity(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]);
    assert_eq!(f["level"], "ok", "{f}");
    let m = message(&f);
    assert!(m.contains("cluster (https://kubernetes.default.svc) signs in bot"), "{m}");
    assert!(m.contains("other only with static airlock tokens"), "{m}");
    assert!(!m.contains("[issuers.NAME]") && !m.contains("this runs in"), "{m}");
    // The note counts as nothing to fix.
    assert_eq!(plain["errors"], with_issuer["errors"], "{plain}\n{with_issuer}");
}
