//! What a command line is expected to have: shell completions that the shell accepts, a man page
//! for every command that renders, the exit codes docs/cli-json.md documents, no color where
//! it is not wanted (NO_COLOR, a pipe), and examples in every command's `--help`; a
//! `serve` log that holds its calls and not its libraries' per-request bookkeeping.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn airlock(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    for v in ["AIRLOCK_TOKEN", "AIRLOCK_TOKEN_FILE", "AIRLOCK_APPROVER_TOKEN", "AIRLOCK_URL", "RUST_LOG", "NO_COLOR"] {
        c.env_remove(v);
    }
    c.current_dir(dir).env("AIRLOCK_CONFIG", dir.join("airlock.toml")).args(args).stdin(Stdio::null());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    airlock(dir, args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The subcommands listed in `airlock PATH --help` (but `help`).
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let o = run(Path::new("."), &args);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("  ").and_then(|l| l.split_whitespace().next()))
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command's path (`["agent", "add"]`), groups included.
fn all_commands(path: Vec<String>, out: &mut Vec<Vec<String>>) {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    for s in subcommands(&p) {
        let mut sub = path.clone();
        sub.push(s);
        out.push(sub.clone());
        all_commands(sub, out);
    }
}

#[test]
fn the_bash_completion_parses_and_completes_airlock() {
    let d = tempfile::tempdir().unwrap();
    let o = run(d.path(), &["completions", "bash"]);
    assert!(o.status.success(), "{}", text(&o));
    let script = d.path().join("airlock.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let o = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", text(&o));
    let o = Command::new("bash").arg("-c").arg(format!("source {} && complete -p airlock", script.display())).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(line.starts_with("complete ") && line.trim_end().ends_with(" airlock"), "{line}");
    // The words it offers after `airlock ag<TAB>` and `airlock agent <TAB>`.
    let complete = |words: &str, cword: usize| {
        let cmd = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             f=$(complete -p airlock | sed -E 's/.*-F ([^ ]+).*/\\1/'); $f airlock; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        String::from_utf8(Command::new("bash").arg("-c").arg(cmd).output().unwrap().stdout).unwrap()
    };
    let got = complete("airlock ag", 1);
    assert!(got.lines().any(|l| l == "agent"), "{got}");
    let got = complete("airlock agent ''", 2);
    assert!(got.lines().any(|l| l == "rotate") && got.lines().any(|l| l == "tree"), "{got}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = run(d.path(), &["completions", shell]);
        assert!(o.status.success() && o.stdout.len() > 1000, "{shell}: {}", text(&o));
    }
    let o = run(d.path(), &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn a_man_page_for_every_command_and_they_render() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("man1");
    let o = run(d.path(), &["man", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut commands = Vec::new();
    all_commands(Vec::new(), &mut commands);
    assert!(commands.len() > 50, "{commands:?}");
    let mut want: Vec<String> = commands.iter().map(|c| format!("airlock-{}.1", c.join("-"))).collect();
    want.push("airlock.1".into());
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    got.sort();
    assert_eq!(got, want, "one page a command");
    let groff = Command::new("groff").arg("--version").output().is_ok_and(|o| o.status.success());
    for page in &got {
        let p = out.join(page);
        let roff = std::fs::read_to_string(&p).unwrap();
        let th = roff.lines().find(|l| l.starts_with(".TH ")).unwrap_or_else(|| panic!("{page} has no .TH header"));
        assert!(th.contains(concat!("airlock ", env!("CARGO_PKG_VERSION"))), "{page}: {th}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644, "{page}");
        }
        if groff {
            let o = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-P-cbou"]).arg(&p).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success() && err.trim().is_empty(), "{page}: {err}");
            let shown = String::from_utf8_lossy(&o.stdout);
            let name = page.trim_end_matches(".1");
            assert!(shown.contains("NAME") && shown.contains(name), "{page}:\n{shown}");
        }
    }
    if !groff {
        println!("groff is not installed: the pages were checked for their .TH header only");
    }
    let add = std::fs::read_to_string(out.join("airlock-agent-add.1")).unwrap();
    assert!(add.contains("expires\\-in"), "{add}");
}

/// Two top-level commands' help and the examples at its end.
#[test]
fn every_top_level_command_has_examples_in_its_help() {
    let top = subcommands(&[]);
    assert!(top.len() > 25 && top.iter().any(|c| c == "completions") && top.iter().any(|c| c == "man"), "{top:?}");
    let mut without = Vec::new();
    for c in std::iter::once(None).chain(top.iter().map(Some)) {
        let args: Vec<&str> = c.map(|c| vec![c.as_str(), "--help"]).unwrap_or_else(|| vec!["--help"]);
        let o = run(Path::new("."), &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let help = String::from_utf8(o.stdout).unwrap();
        match help.split_once("\nExamples:\n") {
            Some((_, ex)) if ex.lines().next().is_some_and(|l| l.starts_with("  airlock ") || l.starts_with("  ") && l.contains(" airlock ")) => {}
            _ => without.push(c.cloned().unwrap_or_default()),
        }
    }
    assert!(without.is_empty(), "--help without an Examples: block: {without:?}");
    // `-h` stays short.
    let o = run(Path::new("."), &["agent", "-h"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Examples:"));
}

#[test]
fn exit_codes_are_the_documented_ones() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let code = |args: &[&str]| run(dir, args).status.code();
    // Usage and errors: 2.
    assert_eq!(code(&["--version"]), Some(0));
    assert_eq!(code(&["no-such-command"]), Some(2));
    assert_eq!(code(&["agent", "list", "--no-such-flag"]), Some(2));
    assert_eq!(code(&["policy", "check"]), Some(2), "no configuration");
    assert_eq!(code(&["demo", "--json"]), Some(2), "--json where there is none");
    assert_eq!(run(dir, &["init"]).status.code(), Some(0));
    assert_eq!(code(&["init"]), Some(2), "refuses to overwrite");
    // Refused, or a finding: 1.
    assert_eq!(code(&["policy", "explain", "--agent", "nobody", "--tool", "query_db", "--handle", "NOPE"]), Some(1));
    assert_eq!(code(&["unshare", "not-a-share-id"]), Some(1));
    let o = run(dir, &["lease", "revoke", "0190c3e2-d4a8-7b1c-9e0f-5a6b7c8d9e0f"]);
    assert_eq!(o.status.code(), Some(1), "no such lease: {}", text(&o));
    assert!(text(&o).contains("no such lease"), "{}", text(&o));
    assert_eq!(code(&["audit", "verify"]), Some(0));
    assert_eq!(code(&["key", "status"]), Some(0));
    // No broker at the endpoint: 3.
    let o = airlock(dir, &["tools"]).env("AIRLOCK_TOKEN", "alk_0000000000000000_000000000000000000000000000000000000000").env("AIRLOCK_ENDPOINT", format!("unix:{}", dir.join("none.sock").display())).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // The documented table names each of these.
    let doc = include_str!("../docs/cli-json.md");
    for row in ["| 0 |", "| 1 |", "| 2 |", "| 3 |", "| `policy explain` |", "| `unshare` |", "| `doctor` |", "| `audit verify` |"] {
        assert!(doc.contains(row), "docs/cli-json.md has no row {row}");
    }
}

const ESC: u8 = 0x1b;

/// `airlock ARGS` under a pseudo-terminal (`script`), with `env`; what the terminal showed.
fn on_a_terminal(dir: &Path, args: &str, env: &[(&str, &str)]) -> Option<Vec<u8>> {
    if !Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return None;
    }
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_airlock"));
    let mut c = Command::new("script");
    c.args(["-qefc", &cmd, "/dev/null"]).current_dir(dir).env("AIRLOCK_CONFIG", dir.join("airlock.toml")).env("TERM", "xterm-256color");
    c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE").env_remove("RUST_LOG");
    c.envs(env.iter().copied());
    Some(c.stdin(Stdio::null()).output().unwrap().stdout)
}

#[test]
fn no_color_with_no_color_or_off_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(run(dir, &["init"]).status.success());
    // A command that logs (the store's statements at debug), to a pipe: plain text.
    let o = airlock(dir, &["agent", "list"]).env("RUST_LOG", "debug").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!o.stderr.is_empty(), "nothing was logged: the test would prove nothing");
    assert!(!o.stderr.contains(&ESC), "escape sequences in a piped log: {}", String::from_utf8_lossy(&o.stderr));
    let o = airlock(dir, &["--help"]).output().unwrap();
    assert!(!o.stdout.contains(&ESC), "escape sequences in piped help");

    // On a terminal: colored, unless NO_COLOR says otherwise.
    let Some(colored) = on_a_terminal(dir, "agent list", &[("RUST_LOG", "debug")]) else {
        println!("`script` is not installed: checked off a terminal only");
        return;
    };
    assert!(colored.contains(&ESC), "no color on a terminal: the check below would prove nothing: {}", String::from_utf8_lossy(&colored));
    let plain = on_a_terminal(dir, "agent list", &[("RUST_LOG", "debug"), ("NO_COLOR", "1")]).unwrap();
    assert!(plain.len() > 100 && !plain.contains(&ESC), "NO_COLOR=1 on a terminal: {}", String::from_utf8_lossy(&plain));
    let help = on_a_terminal(dir, "--help", &[("NO_COLOR", "1")]).unwrap();
    assert!(String::from_utf8_lossy(&help).contains("Usage:") && !help.contains(&ESC), "{}", String::from_utf8_lossy(&help));
}

#[test]
fn audit_export_draws_a_progress_bar_on_a_terminal_and_nowhere_else() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(run(dir, &["init"]).status.success());
    for _ in 0..3 {
        let o = run(dir, &["audit", "rotate-key"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Off a terminal: the records on stdout, nothing on stderr.
    let o = run(dir, &["audit", "export", "--from", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    let records = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(records >= 3, "{}", text(&o));
    assert!(o.stderr.is_empty(), "a bar or a message off a terminal: {}", String::from_utf8_lossy(&o.stderr));
    // On a terminal, the records to a file: the bar is drawn on the terminal, the file holds
    // only the records.
    let Some(shown) = on_a_terminal(dir, "audit export --from 0 > export.jsonl", &[]) else {
        println!("`script` is not installed: checked off a terminal only");
        return;
    };
    let shown = String::from_utf8_lossy(&shown);
    assert!(shown.contains(&format!("/{records} records")), "no bar on the terminal: {shown:?}");
    let file = std::fs::read_to_string(dir.join("export.jsonl")).unwrap();
    assert_eq!(file.lines().count(), records, "{file}");
    assert!(file.lines().all(|l| l.starts_with('{')), "{file}");
}

/// `airlock serve` with no RUST_LOG: its start and each refused call are logged, and nothing of the MCP
/// SDK's per-request session (rmcp writes three `info` lines for every streamable HTTP request).
#[tokio::test]
async fn serve_logs_its_calls_and_not_the_mcp_sdks_bookkeeping() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(run(dir, &["init"]).status.success());
    let socket = dir.join("airlock.sock");
    let cfg = std::fs::read_to_string(dir.join("airlock.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:7878\"", &format!("listen = \"127.0.0.1:0\"\nsocket = \"{}\"", socket.display()));
    std::fs::write(dir.join("airlock.toml"), format!("{cfg}\n[agents.bot]\ngrants = []\n")).unwrap();
    let token = common::operator_run(dir, &["agent", "add", "bot"], "");
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let serving = common::serve_until_socket(dir, &socket);
    let addr = serving
        .log()
        .lines()
        .find_map(|l| l.split("addr=").nth(1).map(|a| a.split_whitespace().next().unwrap_or_default().to_owned()))
        .expect("serve logs its address at the default level");
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client.post(format!("http://{addr}/mcp")).bearer_auth(&token).header("accept", "application/json, text/event-stream").json(&body).send()
    };
    const CALLS: usize = 3;
    for id in 0..CALLS {
        // A call of a tool the agent has no grant for: refused, audited and logged.
        let r = post(serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "query_db", "arguments": {"credential_handle": "NOPE", "query": "SELECT 1"}}}))
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["result"]["isError"], true, "{v}");
        // A request the SDK's session machinery serves.
        let r = post(serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"})).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let log = serving.log();
    let calls = log.lines().filter(|l| l.contains("call refused")).count();
    assert_eq!(calls, CALLS, "each refused call is one line of the default log: {log}");
    assert!(!log.contains("rmcp"), "the MCP SDK's per-request lines are in the default log: {log}");
}
