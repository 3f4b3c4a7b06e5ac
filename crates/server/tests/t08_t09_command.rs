//! run_command through the whole broker with real programs (`sh`, `env`, `printenv`, `cat`,
//! `curl`, `socat`) under the real sandbox: T08 (the child must not see the secret in argv, in
//! its environment, in the broker's /proc entries, or get it back unscrubbed) and T09 (no network
//! unless the handle allows it).

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const CMD_SECRET: &str = "canaryCmd_Hv3Jp8Wq2Ls5Xb9";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn with_commands(t: String) -> String {
    let names = ["SH", "SH_NET", "SH_FILE", "SH_ENV", "ENV", "PRINTENV", "DEPLOY", "SLOW", "MISSING"];
    let grants: String =
        names.iter().map(|n| format!("  {{ handle = \"{n}\", tools = [\"run_command\"] }},\n")).collect();
    let t = t.replace(
        "  { handle = \"API\", tools = [\"http_request\"] },\n]",
        &format!("  {{ handle = \"API\", tools = [\"http_request\"] }},\n{grants}]"),
    );
    let sh = |name: &str, extra: &str| {
        format!(
            "\n[handles.{name}]\nkind = \"command\"\nsecret = \"env:AIRLOCK_TEST_CMD_SECRET\"\n[handles.{name}.command]\n\
             program = \"/bin/sh\"\nargs = [\"-c\", \"{{script}}\"]\nplaceholders = {{ script = {{ regex = '(?s).*' }} }}\n\
             timeout_ms = 5000\nmax_output_bytes = 4096\n{extra}"
        )
    };
    let mut out = t;
    out += &sh("SH", "");
    out += &sh("SH_NET", "network = true\n");
    out += &sh("SH_ENV", "secret_via = \"env\"\nsecret_env = \"DEPLOY_TOKEN\"\nenv = { APP_MODE = \"test\" }\n");
    out += &sh("SLOW", "").replace("timeout_ms = 5000", "timeout_ms = 500");
    out += "\n[handles.SH_FILE]\nkind = \"command\"\nsecret = \"env:AIRLOCK_TEST_CMD_SECRET\"\n[handles.SH_FILE.command]\n\
            program = \"/bin/sh\"\nargs = [\"-c\", \"{script}\", \"sh\", \"{secret_file}\"]\n\
            placeholders = { script = { regex = '(?s).*' } }\nsecret_via = \"file\"\n";
    for (name, prog) in [("ENV", "/usr/bin/env"), ("PRINTENV", "/usr/bin/printenv"), ("MISSING", "/nonexistent/airlock-test-prog")] {
        out += &format!(
            "\n[handles.{name}]\nkind = \"command\"\nsecret = \"env:AIRLOCK_TEST_CMD_SECRET\"\n[handles.{name}.command]\nprogram = \"{prog}\"\n"
        );
    }
    out += "\n[handles.DEPLOY]\nkind = \"command\"\nsecret = \"env:AIRLOCK_TEST_CMD_SECRET\"\n[handles.DEPLOY.command]\n\
            program = \"/bin/echo\"\nargs = [\"deploy\", \"{target}\", \"{tag}\"]\n\
            placeholders = { target = { enum = [\"staging\", \"prod\"] }, tag = { regex = 'v[0-9]+\\.[0-9]+', max_bytes = 16 } }\n";
    out
}

async fn setup() -> Fixture {
    std::env::set_var("AIRLOCK_TEST_CMD_SECRET", CMD_SECRET);
    Fixture::start_with(with_commands).await
}

async fn sh(f: &Fixture, handle: &str, script: &str) -> (u16, Value) {
    f.invoke("run_command", json!({"credential_handle": handle, "args": {"script": script}})).await
}

fn assert_clean(v: &Value) {
    let s = v.to_string();
    assert!(!s.contains(CMD_SECRET), "secret leaked: {s}");
    assert!(!s.contains(&b64(CMD_SECRET)), "base64 of the secret leaked: {s}");
}

#[tokio::test]
async fn t08_env_and_printenv_show_only_a_clean_environment() {
    let f = setup().await;
    for h in ["ENV", "PRINTENV"] {
        let (s, v) = f.invoke("run_command", json!({"credential_handle": h})).await;
        assert_eq!(s, 200, "{v}");
        assert_clean(&v);
        let out = v["result"]["stdout"].as_str().unwrap();
        let mut names: Vec<&str> = out.lines().map(|l| l.split('=').next().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["LANG", "PATH"], "{out}");
        assert_eq!(v["result"]["exit_code"], 0);
    }
    f.stop().await;
}

#[tokio::test]
async fn t08_secret_arrives_on_stdin_never_in_argv_and_comes_back_scrubbed() {
    let f = setup().await;
    let (s, v) = sh(&f, "SH", "read -r s || true; echo \"len=${#s}\"; tr '\\0' ' ' < /proc/$$/cmdline; echo; env").await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = v["result"]["stdout"].as_str().unwrap();
    assert!(out.contains(&format!("len={}", CMD_SECRET.len())), "{out}");
    assert!(out.contains("/bin/sh -c"), "{out}");
    assert_eq!(v["result"]["truncated"], false);

    // A child that prints what it was given gets it back redacted (as does an encoding of it).
    let (s, v) = sh(&f, "SH", "cat; echo; cat | base64").await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    assert!(v["result"]["stdout"].as_str().unwrap().contains("[REDACTED:"), "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t08_a_child_cannot_read_the_brokers_environ() {
    let f = setup().await;
    assert!(airlock_exec_command::is_non_dumpable(), "the broker must be non-dumpable");
    let (s, v) = sh(
        &f,
        "SH",
        "echo \"ppid=$PPID\"; cat /proc/$PPID/environ; echo \"environ_rc=$?\"; cat /proc/$PPID/mem 2>/dev/null | head -c 1; \
         tr '\\0' '\\n' < /proc/$PPID/environ | grep -c AIRLOCK_TEST_CMD_SECRET",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = v["result"]["stdout"].as_str().unwrap();
    // The parent the child sees is the broker itself (unshare and setpriv exec in place).
    assert!(out.contains(&format!("ppid={}", std::process::id())), "{out}");
    assert!(out.contains("environ_rc=1"), "{out}");
    assert!(v["result"]["stderr"].as_str().unwrap().contains("Permission denied"), "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t08_a_secret_written_to_a_file_comes_back_scrubbed_in_a_later_call() {
    let f = setup().await;
    let path = f.dir.path().join("leak.txt");
    let p = path.display();
    let (s, v) = sh(&f, "SH", &format!("cat > '{p}'")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CMD_SECRET, "the child did get the secret");
    let (s, v) = sh(&f, "SH", &format!("cat '{p}'; echo; base64 '{p}'; od -An -c '{p}' | tr -d ' \\n'")).await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = v["result"]["stdout"].as_str().unwrap();
    assert!(out.matches("[REDACTED:").count() >= 2, "{out}");
    f.stop().await;
}

#[tokio::test]
async fn t08_secret_file_is_private_and_removed_afterwards() {
    let f = setup().await;
    let (s, v) = sh(
        &f,
        "SH_FILE",
        "echo \"path=$1\"; stat -c 'file=%a' \"$1\"; stat -c 'dir=%a' \"$(dirname \"$1\")\"; \
         [ \"$1\" = \"$AIRLOCK_SECRET_FILE\" ] && echo same; wc -c < \"$1\"",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = v["result"]["stdout"].as_str().unwrap();
    assert!(out.contains("file=400") && out.contains("dir=700") && out.contains("same"), "{out}");
    assert!(out.contains(&CMD_SECRET.len().to_string()), "{out}");
    let path = out.lines().find_map(|l| l.strip_prefix("path=")).unwrap();
    assert!(!std::path::Path::new(path).exists(), "the secret file must be removed: {path}");
    f.stop().await;
}

#[tokio::test]
async fn t08_env_delivery_only_where_the_handle_says_so_and_output_is_scrubbed() {
    let f = setup().await;
    let (s, v) = sh(&f, "SH_ENV", "[ -n \"$DEPLOY_TOKEN\" ] && echo has-token; echo \"mode=$APP_MODE\"; env").await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = v["result"]["stdout"].as_str().unwrap();
    assert!(out.contains("has-token") && out.contains("mode=test") && out.contains("DEPLOY_TOKEN=[REDACTED:"), "{out}");
    // The stdin handle puts nothing in the environment.
    let (_, v) = sh(&f, "SH", "echo \"[${DEPLOY_TOKEN}${AIRLOCK_SECRET}]\"").await;
    assert_eq!(v["result"]["stdout"], "[]\n");
    f.stop().await;
}

#[tokio::test]
async fn t09_no_network_by_default_tcp_and_udp_listeners_receive_nothing() {
    let f = setup().await;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let (tp, up) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
    let (s, v) = sh(
        &f,
        "SH",
        &format!(
            "curl -sS --max-time 3 http://127.0.0.1:{tp}/ ; echo \"curl_rc=$?\"; \
             printf 'q' | socat -u - UDP-SENDTO:127.0.0.1:{up}; echo \"udp_rc=$?\"; \
             getent hosts example.com; echo \"dns_rc=$?\""
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let out = v["result"]["stdout"].as_str().unwrap();
    assert!(out.contains("curl_rc=7"), "curl must fail to connect: {v}");
    assert!(!out.contains("udp_rc=0"), "{v}");
    assert!(!out.contains("dns_rc=0"), "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tcp.accept().is_err(), "the TCP listener must receive no connection");
    let mut buf = [0u8; 16];
    assert!(udp.recv_from(&mut buf).is_err(), "the UDP listener must receive nothing");
    f.stop().await;
}

#[tokio::test]
async fn t09_network_only_where_the_handle_allows_it() {
    let f = setup().await;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = tcp.accept().unwrap();
        let mut b = [0u8; 1024];
        let _ = c.read(&mut b);
        c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    });
    let (s, v) = sh(&f, "SH_NET", &format!("curl -sS --max-time 5 http://127.0.0.1:{port}/")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["stdout"], "hello", "{v}");
    server.join().unwrap();
    f.stop().await;
}

#[tokio::test]
async fn t08_a_command_that_never_exits_is_killed_with_its_whole_group() {
    let f = setup().await;
    let pidfile = f.dir.path().join("bg.pid");
    let started = Instant::now();
    let (s, v) = sh(&f, "SLOW", &format!("sleep 300 & echo $! > '{}'; sleep 300", pidfile.display())).await;
    assert_eq!((s, code(&v)), (504, "command-timeout"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Gone, or a zombie waiting for its reaper: not running either way.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.is_empty() || state.contains(") Z "), "background child still alive: {state}");
    f.stop().await;
}

#[tokio::test]
async fn t08_a_command_flooding_its_output_is_capped_and_stopped() {
    let f = setup().await;
    let started = Instant::now();
    let (s, v) = sh(&f, "SH", "yes airlock").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["truncated"], true);
    assert_eq!(v["result"]["stdout"].as_str().unwrap().len(), 4096);
    assert!(v["result"]["exit_code"].is_null(), "killed by a signal: {v}");
    assert!(started.elapsed() < Duration::from_secs(3));
    f.stop().await;
}

#[tokio::test]
async fn t08_arguments_outside_the_template_are_refused() {
    let f = setup().await;
    let call = |args: Value| f.invoke("run_command", json!({"credential_handle": "DEPLOY", "args": args}));
    let (s, v) = call(json!({"target": "prod", "tag": "v1.2"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["stdout"], "deploy prod v1.2\n");
    for bad in [
        json!({"target": "dev", "tag": "v1.2"}),
        json!({"target": "prod", "tag": "v1.2; cat /etc/shadow"}),
        json!({"target": "prod", "tag": "v1.2\n"}),
        json!({"target": "prod"}),
        json!({"target": "prod", "tag": "v1.2", "extra": "--force"}),
        json!({"target": "prod", "tag": "v111111111111111111.2"}),
    ] {
        let (s, v) = call(bad.clone()).await;
        assert_eq!((s, code(&v)), (403, "argument-not-allowed"), "{bad} {v}");
        assert!(!v.to_string().contains("cat /etc/shadow"), "values are not echoed: {v}");
    }
    let (s, v) = call(json!(["prod", "v1.2"])).await;
    assert_eq!((s, code(&v)), (400, "invalid-arguments"), "{v}");
    let (s, v) = f.invoke("run_command", json!({"credential_handle": "DEPLOY", "program": "/bin/sh", "args": {}})).await;
    assert_eq!((s, code(&v)), (400, "invalid-arguments"), "{v}");
    f.stop().await;
}

#[tokio::test]
async fn non_zero_exit_is_a_result_and_a_missing_program_is_command_failed() {
    let f = setup().await;
    let (s, v) = sh(&f, "SH", "echo out; echo err >&2; exit 3").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["exit_code"], 3);
    assert_eq!(v["result"]["stdout"], "out\n");
    assert_eq!(v["result"]["stderr"], "err\n");
    let (s, v) = f.invoke("run_command", json!({"credential_handle": "MISSING"})).await;
    assert_eq!((s, code(&v)), (502, "command-failed"), "{v}");
    // The audit keeps placeholder names and sizes, not the script.
    let tail = f.store.audit_tail(3).await.unwrap();
    let all = serde_json::to_string(&tail.iter().map(|t| &t.1).collect::<Vec<_>>()).unwrap();
    assert!(all.contains("arg_names") && !all.contains("echo err"), "{all}");
    f.stop().await;
}

#[tokio::test]
async fn t21_tool_schemas_for_email_and_commands_are_truthful_and_secret_free() {
    let f = setup().await;
    let r = f.client.get(format!("{}/v1/tools?format=mcp", f.base)).bearer_auth(&f.token).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_clean(&v);
    let run = v["tools"].as_array().unwrap().iter().find(|t| t["name"] == "run_command").unwrap();
    assert_eq!(run["annotations"], json!({"readOnlyHint": false, "destructiveHint": true, "openWorldHint": true}));
    let handles = run["inputSchema"]["properties"]["credential_handle"]["enum"].as_array().unwrap();
    assert!(handles.contains(&json!("DEPLOY")) && handles.contains(&json!("SH_NET")));
    assert_eq!(run["inputSchema"]["properties"]["args"]["properties"]["target"]["enum"], json!(["staging", "prod"]));
    let desc = run["description"].as_str().unwrap();
    assert!(desc.contains("network: off") && desc.contains("network: on"), "{desc}");
    f.stop().await;
}
