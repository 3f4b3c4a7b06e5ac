//! `--json`: every command that prints data is run with it on a real setup (`airlock init` in a
//! temporary directory, agents, secrets, an oauth handle, `airlock serve` for the agents'
//! commands and the people's), and each output is validated against its JSON Schema in
//! docs/cli-json.md by Python's `jsonschema` (Draft 2020-12). The command tree (walked through
//! `--help`) and the document must agree: a command that prints data without a schema, or a
//! schema without a command, fails.
//!
//! `secret import` and `secret export` need an OpenBao dev server (`bao`), `migrate` PostgreSQL
//! at 127.0.0.1:5432; without them those three are skipped, unless AIRLOCK_REQUIRE_SERVICES=1.

#[path = "../crates/vault/tests/bao/mod.rs"]
mod bao;
mod common;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const DOC: &str = include_str!("../docs/cli-json.md");

/// The schemas of docs/cli-json.md by command (`agent list`), and the commands it lists as
/// having no JSON output.
struct Doc {
    schemas: BTreeMap<String, Value>,
    without: BTreeSet<String>,
}

fn doc() -> Doc {
    let mut schemas = BTreeMap::new();
    let mut without = BTreeSet::new();
    let mut section = "";
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        if let Some(s) = line.strip_prefix("## ") {
            section = s;
        } else if let Some(name) = line.strip_prefix("### `airlock ").and_then(|l| l.strip_suffix('`')) {
            let mut block = String::new();
            let mut inside = false;
            for l in lines.by_ref() {
                match (inside, l.trim_end()) {
                    (false, "```json") => inside = true,
                    (true, "```") => break,
                    (true, _) => block.push_str(&format!("{l}\n")),
                    (false, l) if l.starts_with('#') => panic!("`{name}` has no ```json block before {l}"),
                    _ => {}
                }
            }
            let schema: Value = serde_json::from_str(&block).unwrap_or_else(|e| panic!("the schema of `{name}` is not JSON: {e}"));
            assert!(schemas.insert(name.to_owned(), schema).is_none(), "`{name}` has two schemas");
        } else if section == "Commands without JSON output" {
            if let Some(rest) = line.strip_prefix("- `airlock ") {
                without.insert(rest.split('`').next().unwrap().to_owned());
            }
        }
    }
    Doc { schemas, without }
}

/// `airlock ARGS` in `dir` (its airlock.toml, its socket), with `env` and nothing of the
/// machine's airlock variables, `input` on stdin.
fn airlock(dir: &Path, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    let endpoint = format!("unix:{}", dir.join("run/airlock.sock").display());
    let mut all = vec![("AIRLOCK_ENDPOINT", endpoint.as_str())];
    all.extend_from_slice(env);
    common::airlock_in(dir, args, input, &all)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The leaf commands under `path` (`agent add`, `audit checkpoints export`, ...), from `--help`.
fn leaves(path: &[String], out: &mut BTreeSet<String>) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let o = Command::new(env!("CARGO_BIN_EXE_airlock")).args(&args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    let help = String::from_utf8(o.stdout).unwrap();
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("  ").and_then(|l| l.split_whitespace().next()))
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    if subs.is_empty() {
        out.insert(path.join(" "));
    }
    for s in subs {
        let mut p = path.to_vec();
        p.push(s);
        leaves(&p, out);
    }
}

#[test]
fn every_command_that_prints_data_has_a_schema_and_every_schema_a_command() {
    let d = doc();
    let mut all = BTreeSet::new();
    leaves(&[], &mut all);
    assert!(all.len() > 40 && all.contains("agent add") && all.contains("audit checkpoints export"), "{all:?}");
    let both: Vec<_> = d.schemas.keys().filter(|k| d.without.contains(*k)).collect();
    assert!(both.is_empty(), "both with a schema and without JSON output: {both:?}");
    let documented: BTreeSet<String> = d.schemas.keys().chain(&d.without).cloned().collect();
    let missing: Vec<_> = all.difference(&documented).collect();
    assert!(missing.is_empty(), "commands with neither a schema nor a place among those without JSON output in docs/cli-json.md: {missing:?}");
    let stale: Vec<_> = documented.difference(&all).collect();
    assert!(stale.is_empty(), "docs/cli-json.md names commands that do not exist: {stale:?}");
}

#[test]
fn json_is_refused_where_there_is_none() {
    let d = tempfile::tempdir().unwrap();
    for args in [&["demo", "--json"][..], &["--json", "audit", "tail"], &["completions", "bash", "--json"], &["open", "--json"], &["mcp", "--json"]] {
        let o = airlock(d.path(), args, None, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("has no JSON output"), "{args:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

/// Validates each (command, output) against the command's schema with Python's jsonschema;
/// the messages of the failures.
fn validate(schemas: &BTreeMap<String, Value>, outputs: &[(String, Value)]) -> Result<(), String> {
    const SCRIPT: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
bad = []
for c in json.load(sys.stdin):
    Draft202012Validator.check_schema(c["schema"])
    for e in Draft202012Validator(c["schema"]).iter_errors(c["instance"]):
        bad.append(f"{c['name']}: at {list(e.absolute_path)}: {e.message}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
"#;
    let cases: Vec<Value> = outputs.iter().map(|(name, v)| json!({"name": name, "schema": schemas[name], "instance": v})).collect();
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the validator (pip install jsonschema)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&cases).unwrap()).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("No module named"), "Python's jsonschema is needed (pip install jsonschema): {err}");
    match o.status.code() {
        Some(0) => Ok(()),
        Some(1) if err.trim().is_empty() => Err(String::from_utf8_lossy(&o.stdout).into_owned()),
        _ => panic!("the validator did not run: {err}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The configuration: a SQLite handle the agent may query and lease, an oauth handle for
/// `connect` and `account`, an outbox channel for alice (the links of `request new` land in
/// it), a policy that lets `bot` ask for secrets, the listener on `port` and the agents' socket.
async fn configure(dir: &Path, port: u16) {
    let db = dir.join("app.db");
    std::fs::write(
        dir.join("requests.cedar"),
        "@id(\"bot-may-ask\")\npermit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"request_secret\", resource)\n\
         when { resource.requested && resource.kind == \"generic\" };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("airlock.toml"),
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
socket = "run/airlock.sock"

[store]
data_dir = "airlock-data"

[policy]
files = ["requests.cedar"]

[shares]
base_url = "http://127.0.0.1:{port}"
[shares.channels.box]
type = "outbox"
path = "outbox.jsonl"
[shares.recipients]
"alice@example.com" = "box"

[handles.APP]
kind = "sqlite"
secret = "local:APP"
[handles.APP.database]
tables = ["t"]
[handles.APP.lease]
max_ttl_seconds = 60

[handles.HELD]
kind = "sqlite"
secret = "local:APP"
[handles.HELD.database]
tables = ["t"]
[handles.HELD.approval]
always = true
expires_in_seconds = 900

[handles.GH]
kind = "oauth"
secret = "local:GH_CLIENT"
[handles.GH.oauth]
authorization_url = "https://github.example/login/oauth/authorize"
token_url = "https://github.example/login/oauth/access_token"
client_id = "Iv1.0123456789abcdef"
scopes = ["repo"]
owners = ["alice@example.com"]
[handles.GH.http]
destinations = [{{ url = "https://api.github.example/" }}]

[agents.bot]
grants = [{{ handle = "APP", tools = ["query_db", "request_lease"] }}, {{ handle = "HELD", tools = ["query_db"] }}]
"#
        ),
    )
    .unwrap();
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one');").execute(&mut c).await.unwrap();
}

/// A running `airlock serve`, once its socket answers.
fn serve(dir: &Path) -> common::Server {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir).env("AIRLOCK_CONFIG", dir.join("airlock.toml")).env_remove("RUST_LOG").arg("serve");
    let mut s = common::Server(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(dir.join("run/airlock.sock")).is_ok() {
            return s;
        }
        assert!(s.0.try_wait().unwrap().is_none(), "airlock serve exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("airlock serve did not open its socket");
}

const SECRET: &str = "cliJsonCanary_7Hq2ZpW";
const FILLED: &str = "cliJsonFilled_3Kd9RtX";

/// The outputs gathered, each checked for its exit code and parsed as one JSON value.
#[derive(Default)]
struct Outputs(Vec<(String, Value)>);

impl Outputs {
    /// Runs `airlock ARGS --json`, which must exit `code`; the JSON it printed, recorded under
    /// `name`.
    fn run(&mut self, dir: &Path, name: &str, args: &[&str], input: Option<&str>, env: &[(&str, &str)], code: i32) -> Value {
        self.run_codes(dir, name, args, input, env, &[code])
    }

    fn run_codes(&mut self, dir: &Path, name: &str, args: &[&str], input: Option<&str>, env: &[(&str, &str)], codes: &[i32]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = airlock(dir, &a, input, env);
        assert!(o.status.code().is_some_and(|c| codes.contains(&c)), "{a:?}: exit {:?}, not {codes:?}: {}", o.status.code(), text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{a:?} printed no single JSON value ({e}): {}", text(&o)));
        let stdout = String::from_utf8_lossy(&o.stdout);
        for s in [SECRET, FILLED] {
            assert!(!stdout.contains(s), "{a:?} printed a secret value: {stdout}");
        }
        self.0.push((name.to_owned(), v.clone()));
        v
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_json_output_matches_its_schema() {
    let d = doc();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut out = Outputs::default();
    let mut skipped: Vec<&str> = Vec::new();

    let v = out.run(dir, "init", &["init"], None, &[], 0);
    assert!(v["config"].as_str().unwrap().ends_with("airlock.toml"), "{v}");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    configure(dir, port).await;

    // Secrets: values from stdin, never in any output.
    let app = format!("sqlite://{}?mode=ro", dir.join("app.db").display());
    out.run(dir, "secret put", &["secret", "put", "APP"], Some(&app), &[], 0);
    out.run(dir, "secret put", &["secret", "put", "GH_CLIENT"], Some(SECRET), &[], 0);
    out.run(dir, "secret put", &["secret", "put", "SPARE"], Some(SECRET), &[], 0);
    let v = out.run(dir, "secret rotate", &["secret", "rotate", "SPARE", "--overlap", "10m"], Some("cliJsonRotated_1x"), &[], 0);
    assert_eq!((v["version"].as_i64(), v["overlap_seconds"].as_u64()), (Some(2), Some(600)), "{v}");
    out.run(dir, "secret rm", &["secret", "rm", "SPARE"], None, &[], 0);
    let v = out.run(dir, "secret list", &["secret", "list"], None, &[], 0);
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");

    // Agents and approvers: a token once, in `token`, and never in a listing.
    let v = out.run(dir, "agent add", &["agent", "add", "bot"], None, &[], 0);
    let token = v["token"].as_str().unwrap().to_owned();
    out.run(dir, "agent add", &["agent", "add", "spare", "--expires-in", "3600"], None, &[], 0);
    let v = out.run(dir, "agent list", &["agent", "list"], None, &[], 0);
    assert!(!v.to_string().contains(&token[20..]), "{v}");
    let v = out.run(dir, "agent tree", &["agent", "tree"], None, &[], 0);
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let v = out.run(dir, "approver add", &["approver", "add", "alice"], None, &[], 0);
    let approver = v["token"].as_str().unwrap().to_owned();
    out.run(dir, "approver add", &["approver", "add", "bob"], None, &[], 0);
    out.run(dir, "approver revoke", &["approver", "revoke", "bob"], None, &[], 0);
    let v = out.run(dir, "approver list", &["approver", "list"], None, &[], 0);
    assert!(!v.to_string().contains(&approver[approver.len() - 12..]), "{v}");

    // Policies.
    let v = out.run(dir, "policy check", &["policy", "check", "--show", "--schema"], None, &[], 0);
    assert!(v["cedar_schema"].as_str().is_some_and(|s| s.contains("namespace Airlock")), "{v}");
    out.run(dir, "policy check", &["policy", "check"], None, &[], 0);
    let v = out.run(dir, "policy explain", &["policy", "explain", "--agent", "bot", "--tool", "query_db", "--handle", "APP"], None, &[], 0);
    assert_eq!(v["decision"], "allow", "{v}");
    let v = out.run(dir, "policy explain", &["policy", "explain", "--agent", "spare", "--tool", "query_db", "--handle", "APP"], None, &[], 1);
    assert_eq!(v["decision"], "deny", "{v}");
    out.run(dir, "policy explain", &["policy", "explain", "--agent", "bot", "--tool", "query_db", "--handle", "NOPE"], None, &[], 1);

    // The deployment and the master key.
    // Whether this machine's sandbox and user pass is not the point: 0 or 1, with its reason.
    let v = out.run_codes(dir, "doctor", &["doctor"], None, &[], &[0, 1]);
    assert!(v["findings"].as_array().is_some_and(|f| !f.is_empty()), "{v}");
    let v = out.run(dir, "key status", &["key", "status"], None, &[], 0);
    assert_eq!((v["wrap"].as_str(), v["matches_configuration"].as_bool()), (Some("file"), Some(true)), "{v}");
    let v = out.run(dir, "key rotate", &["key", "rotate"], None, &[], 0);
    assert_eq!(v["rewrapped"].as_u64(), Some(3), "{v}");
    out.run(dir, "key status", &["key", "status"], None, &[], 0);

    // Backup and restore.
    out.run(dir, "backup", &["backup", "snap.bak"], None, &[], 0);
    let v = out.run(dir, "restore", &["restore", "snap.bak", "--to", "restored", "--master-key-file", "airlock-data/master.key"], None, &[], 0);
    assert!(v["data_dir"].as_str().unwrap().ends_with("restored"), "{v}");

    // Connected accounts: none yet; a connect link for alice.
    let v = out.run(dir, "account list", &["account", "list"], None, &[], 0);
    assert_eq!(v, json!([]));
    let v = out.run(dir, "account revoke", &["account", "revoke", "GH"], None, &[], 1);
    assert_eq!(v["revoked"], false, "{v}");
    out.run(dir, "connect", &["connect", "GH", "--owner", "alice@example.com"], None, &[], 0);

    // The agent's commands, the people's and the operator's, with the broker serving.
    {
        let _broker = serve(dir);
        let agent = [("AIRLOCK_TOKEN", token.as_str())];
        let v = out.run(dir, "tools", &["tools"], None, &agent, 0);
        assert!(v["tools"].as_array().is_some_and(|t| !t.is_empty()), "{v}");
        out.run(dir, "tools", &["tools", "--format", "openai"], None, &agent, 0);
        let v = out.run(dir, "call", &["call", "query_db", "--args", r#"{"credential_handle": "APP", "query": "SELECT v FROM t"}"#], None, &agent, 0);
        assert_eq!(v["result"]["rows"][0][0], "one", "{v}");
        out.run(dir, "call", &["call", "query_db", "--args", r#"{"credential_handle": "GH", "query": "SELECT 1"}"#], None, &agent, 1);
        let v = out.run(dir, "lease issue", &["lease", "issue", "APP", "--ttl", "30"], None, &agent, 0);
        let lease = v["result"]["lease_id"].as_str().unwrap().to_owned();
        out.run(dir, "lease issue", &["lease", "issue", "APP", "--ttl", "61"], None, &agent, 1);
        out.run(dir, "lease list", &["lease", "list"], None, &[], 0);
        let v = out.run(dir, "lease revoke", &["lease", "revoke", &lease], None, &[], 0);
        assert_eq!(v["status"], "revoked", "{v}");
        let v = out.run(dir, "lease revoke", &["lease", "revoke", &lease], None, &[], 0);
        assert_eq!(v["status"], "already-revoked", "{v}");

        // A request for a secret, filled by alice from the link in her outbox.
        let ask = ["request", "new", "--handle", "NEW_KEY", "--kind", "secret", "--recipient", "alice@example.com", "--description", "a key"];
        let v = out.run(dir, "request new", &ask, None, &agent, 0);
        let request = v["result"]["request_id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
        out.run(dir, "request status", &["request", "status", &request], None, &agent, 0);
        let outbox = std::fs::read_to_string(dir.join("outbox.jsonl")).unwrap();
        let link = outbox.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["request_id"] == request.as_str()).expect("delivered")["link"]
            .as_str()
            .unwrap()
            .to_owned();
        std::fs::write(dir.join("link.txt"), &link).unwrap();
        let v = out.run(dir, "request fill", &["request", "fill", "--link-file", "link.txt", "--yes"], Some(FILLED), &[], 0);
        assert_eq!(v["sent"], true, "{v}");
        let v = out.run(dir, "request fill", &["request", "fill", "--link-file", "link.txt", "--yes"], Some(FILLED), &[], 1);
        assert_eq!((v["sent"].as_bool(), v["status"].as_str()), (Some(false), Some("gone")), "{v}");
        // Revoked by the operator by its handle; then again by its id, refused.
        let v = out.run(dir, "request revoke", &["request", "revoke", "--handle", "NEW_KEY"], None, &[], 0);
        assert_eq!((v["revoked"].as_bool(), v["request_id"].as_str()), (Some(true), Some(request.as_str())), "{v}");
        let v = out.run(dir, "request revoke", &["request", "revoke", "--id", &request], None, &[], 1);
        assert_eq!(v["revoked"], false, "{v}");
        let v = out.run(dir, "request status", &["request", "status", &request], None, &agent, 0);
        assert_eq!(v["result"]["status"], "revoked", "{v}");

        // The configuration put in force again in the running broker, unchanged.
        let v = out.run(dir, "reload", &["reload"], None, &[], 0);
        assert_eq!((v["reloaded"].as_bool(), v["policy_changed"].as_bool()), (Some(true), Some(false)), "{v}");

        // A one-time link, revoked by the operator; then again, refused.
        let v = out.run(dir, "share", &["share", "--server", &base, "--expires", "5m"], Some("shared note"), &[], 0);
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(v["link"].as_str().unwrap().starts_with(&format!("{base}/s/{id}#")), "{v}");
        let v = out.run(dir, "unshare", &["unshare", &id], None, &[], 0);
        assert_eq!(v["revoked"], true, "{v}");
        let v = out.run(dir, "unshare", &["unshare", &id], None, &[], 1);
        assert_eq!(v["error"], "share-unavailable", "{v}");

        // Held calls decided by an approver; then one that does not exist, refused.
        let person = [("AIRLOCK_APPROVER_TOKEN", approver.as_str())];
        let held = |query: &str, out: &mut Outputs| {
            let args = format!(r#"{{"credential_handle": "HELD", "query": "{query}"}}"#);
            let v = out.run(dir, "call", &["call", "query_db", "--args", &args], None, &agent, 1);
            assert_eq!(v["error"]["code"], "approval-required", "{v}");
            v["error"]["approval"]["id"].as_str().unwrap().to_owned()
        };
        let id = held("SELECT v FROM t", &mut out);
        let v = out.run(dir, "approve", &["approve", &id, "--server", &base], None, &person, 0);
        assert_eq!(v["decision"], "approved", "{v}");
        let id = held("SELECT id FROM t", &mut out);
        let v = out.run(dir, "deny", &["deny", &id, "--server", &base], None, &person, 0);
        assert_eq!(v["decision"], "denied", "{v}");
        let v = out.run(dir, "approve", &["approve", &id, "--server", &base], None, &person, 1);
        assert!(v["error"]["code"].is_string() && v["decision"].is_null(), "{v}");
        let unknown = "0123456789abcdef0123456789abcdef";
        out.run(dir, "deny", &["deny", unknown, "--server", &base], None, &person, 1);

        // Rotation and revocation through the broker's configuration, while it serves.
        let v = out.run(dir, "agent rotate", &["agent", "rotate", "bot", "--overlap", "1m"], None, &[], 0);
        assert!(v["token"].as_str().is_some_and(|t| t != token && t[..20] == token[..20]), "{v}");
        let v = out.run(dir, "agent revoke", &["agent", "revoke", "spare"], None, &[], 0);
        assert_eq!(v["revoked"], 1, "{v}");
    }

    // The audit chain, with the flag on either side of the command.
    let v = out.run(dir, "audit verify", &["audit", "verify"], None, &[], 0);
    assert_eq!(v["ok"], true, "{v}");
    let o = airlock(dir, &["--json", "audit", "verify"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    out.0.push(("audit verify".into(), serde_json::from_slice(&o.stdout).unwrap()));
    let o_key = airlock(dir, &["audit", "public-key"], None, &[]);
    std::fs::write(dir.join("pinned.pub"), &o_key.stdout).unwrap();
    let o = airlock(dir, &["audit", "checkpoints", "export", "--output", "cps.jsonl"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    out.run(dir, "audit verify", &["audit", "verify", "--offline", "--checkpoints", "cps.jsonl", "--public-key", "pinned.pub"], None, &[], 0);
    let pinned = String::from_utf8_lossy(&o_key.stdout).trim().to_owned();
    let v = out.run(dir, "audit public-key", &["audit", "public-key"], None, &[], 0);
    assert_eq!((v["public_key"].as_str(), v["pub_file_matches"].as_bool()), (Some(pinned.as_str()), Some(true)), "{v}");
    let v = out.run(dir, "audit rotate-key", &["audit", "rotate-key"], None, &[], 0);
    assert_eq!(v["previous_public_key"].as_str(), Some(pinned.as_str()), "{v}");
    assert_ne!(v["public_key"], v["previous_public_key"], "{v}");
    out.run(dir, "audit verify", &["audit", "verify"], None, &[], 0);

    // Man pages.
    let v = out.run(dir, "man", &["man", "--out", "man"], None, &[], 0);
    assert!(v["pages"].as_array().is_some_and(|p| p.contains(&json!("airlock-agent-add.1"))), "{v}");

    // The key protected with a passphrase now (last: the other commands would need it).
    std::fs::write(dir.join("pass.txt"), "a passphrase for the json test\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("pass.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    let cfg = cfg.replace("data_dir = \"airlock-data\"\n", "data_dir = \"airlock-data\"\n[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"pass.txt\"\n");
    std::fs::write(dir.join("airlock.toml"), cfg).unwrap();
    let v = out.run(dir, "key wrap", &["key", "wrap"], None, &[], 0);
    assert_eq!((v["from"].as_str(), v["to"].as_str()), (Some("file"), Some("passphrase")), "{v}");

    // With the services they need: OpenBao, PostgreSQL.
    match bao::Bao::start().await {
        Some(b) => {
            let t = b.policy_and_token("1h").await;
            b.kv_put("imp/app", json!({"api_key": SECRET})).await;
            let cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
            let var = "AIRLOCK_TEST_BAO_JSON_TOKEN";
            let vault = b.vault_toml("corp", &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 30);
            std::fs::write(dir.join("airlock.toml"), format!("{cfg}\n{vault}")).unwrap();
            let env = [(var, t.as_str())];
            let v = out.run(dir, "secret import", &["secret", "import", "--from", "openbao:corp/secret/imp/app#api_key"], None, &env, 0);
            assert_eq!(v["name"], "API_KEY", "{v}");
            out.run(dir, "secret export", &["secret", "export", "API_KEY", "--to", "openbao:corp/secret/exp/app#api_key"], None, &env, 0);
        }
        None => skipped.extend(["secret import", "secret export"]),
    }
    if pg_up().await {
        // A store of its own: an agent and its audit record.
        let fresh = tempfile::tempdir().unwrap();
        let f = fresh.path();
        out.run(f, "init", &["init"], None, &[], 0);
        out.run(f, "agent add", &["agent", "add", "bot"], None, &[], 0);
        let db = format!("airlock_j_{:016x}", rand::random::<u64>());
        pg_admin(&format!("CREATE DATABASE {db}")).await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let v = out.run(f, "migrate", &["migrate", "--to", &url], None, &[], 0);
        assert!(v["copied"].as_u64().is_some_and(|c| c > 0), "{v}");
        let v = out.run(f, "migrate", &["migrate", "--to", &url], None, &[], 0);
        assert_eq!(v["copied"], 0, "{v}");
        pg_admin(&format!("DROP DATABASE {db} WITH (FORCE)")).await;
    } else {
        skipped.push("migrate");
    }

    // Every schema was exercised (but those whose services are missing here), and every
    // output is valid.
    let ran: BTreeSet<&str> = out.0.iter().map(|(n, _)| n.as_str()).collect();
    let unrun: Vec<&String> = d.schemas.keys().filter(|k| !ran.contains(k.as_str()) && !skipped.contains(&k.as_str())).collect();
    assert!(unrun.is_empty(), "documented in docs/cli-json.md but not run here: {unrun:?}");
    assert!(out.0.len() >= 55, "{} outputs", out.0.len());
    if let Err(e) = validate(&d.schemas, &out.0) {
        panic!("outputs that do not match their schema in docs/cli-json.md:\n{e}");
    }
    if !skipped.is_empty() {
        println!("skipped (no service): {skipped:?}");
    }
}

#[test]
fn the_validator_rejects_what_does_not_match() {
    let d = doc();
    let wrong = [
        ("secret put", json!({"name": "APP"})),
        ("agent list", json!([{"id": "a", "name": "b", "parent": null, "status": "gone", "created_at": "t", "expires_at": null, "revoked_at": null}])),
        ("secret list", json!([{"name": "APP", "version": 1, "created_at": "t", "updated_at": "t", "value": "x"}])),
        ("call", json!({"ok": false, "request_id": "r"})),
    ];
    for (name, v) in wrong {
        let e = validate(&d.schemas, &[(name.to_owned(), v)]).expect_err(name);
        assert!(e.contains(name), "{e}");
    }
}

async fn pg_up() -> bool {
    let up = tokio::net::TcpStream::connect("127.0.0.1:5432").await.is_ok();
    if !up && common::require() {
        panic!("PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
    }
    up
}

async fn pg_admin(sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}
