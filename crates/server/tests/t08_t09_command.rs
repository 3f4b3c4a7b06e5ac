//! run_command through the whole broker with real programs (`sh`, `env`, `printenv`, `cat`,
//! `curl`, `socat`, `strace`, `python3`, `su`) under the real sandbox (bubblewrap plus the
//! `airlock` binary's second stage): T08 (the child must not see the secret in argv, in its
//! environment, in the broker's /proc entries, or get it back unscrubbed), T09 (no network unless
//! the handle allows it) and T23 (the child cannot escape its call: no broker files, no other
//! call's secrets, processes or files, nothing left running or behind, no privileges).
//!
//! The tests run as root, as CI does; the sandbox must drop to uid 65534 all the same.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const CMD_SECRET: &str = "canaryCmd_Hv3Jp8Wq2Ls5Xb9";
/// The secret of the other agent's handles (T23: invisible to every other call).
const OTHER_SECRET: &str = "canaryOther_Qz7Rt2Vn5Mk8Lp3";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn with_commands(t: String) -> String {
    let names = ["SH", "SH_NET", "SH_FILE", "SH_ENV", "ENV", "PRINTENV", "DEPLOY", "SLOW", "MISSING", "BOMB"];
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
    // The other agent runs commands holding its own secret, by env and by file.
    let t = t.replace(
        "grants = [{ handle = \"API\", tools = [\"http_request\"] }]",
        "grants = [{ handle = \"API\", tools = [\"http_request\"] }, \
         { handle = \"OTHER_ENV\", tools = [\"run_command\"] }, { handle = \"OTHER_FILE\", tools = [\"run_command\"] }]",
    );
    let mut out = t;
    out += &sh("SH", "");
    // bash, not dash: when the bomb (or another call of the same sandbox user) holds every
    // process slot, dash ends the script at its next failed fork ("Cannot fork", exit 2), where
    // bash retries the fork until the call's timeout, which is what the test is about.
    out += &sh("BOMB", "").replace("timeout_ms = 5000", "timeout_ms = 3000").replace("program = \"/bin/sh\"", "program = \"/bin/bash\"");
    for (name, via) in [("OTHER_ENV", "secret_via = \"env\"\nsecret_env = \"OTHER_TOKEN\"\n"), ("OTHER_FILE", "secret_via = \"file\"\n")] {
        out += &sh(name, via).replace("env:AIRLOCK_TEST_CMD_SECRET", "env:AIRLOCK_TEST_OTHER_SECRET");
    }
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
    std::env::set_var("AIRLOCK_TEST_OTHER_SECRET", OTHER_SECRET);
    Fixture::start_with(with_commands).await
}

/// A string found nowhere else on this host: goes into a child's command line or file names.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("airlockT23{what}{}x{nanos}", std::process::id())
}

/// Host processes whose command line contains `m`, with their host uid.
fn host_procs_with(m: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(m) {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            // A zombie waiting for its reaper runs nothing; it does not count.
            if status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
                continue;
            }
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse().ok())
                .unwrap_or(u32::MAX);
            found.push((pid, uid));
        }
    }
    found
}

/// Waits up to 3 s for every process with `m` in its command line to be gone.
async fn assert_gone(m: &str) {
    for _ in 0..30 {
        if host_procs_with(m).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("processes with {m} still run on the host: {:?}", host_procs_with(m));
}

fn stdout(v: &Value) -> &str {
    v["result"]["stdout"].as_str().unwrap_or_else(|| panic!("no stdout: {v}"))
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
    // The broker is not in the child's PID namespace: its parent is bubblewrap's init (pid 1),
    // whose environment holds no secret, and the broker's pid names nothing or someone else.
    let broker = std::process::id();
    let (s, v) = sh(
        &f,
        "SH",
        &format!(
            "echo \"ppid=$PPID\"; tr '\\0' '\\n' < /proc/$PPID/environ | grep -c AIRLOCK_TEST_CMD_SECRET; \
             cat /proc/{broker}/environ; echo \"environ_rc=$?\"; ls /proc | grep -c '^[0-9]'"
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = stdout(&v);
    assert!(out.starts_with("ppid=1\n0\n"), "{out}");
    assert!(out.contains("environ_rc=1"), "{out}");
    assert!(v["result"]["stderr"].as_str().unwrap().contains("No such file"), "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t08_a_secret_written_to_a_file_comes_back_scrubbed_and_is_gone_in_a_later_call() {
    let f = setup().await;
    // Within one call, a copy of the secret in a file comes back redacted, in any encoding.
    let (s, v) = sh(
        &f,
        "SH",
        "cat > /tmp/leak.txt; wc -c < /tmp/leak.txt; cat /tmp/leak.txt; echo; base64 /tmp/leak.txt; od -An -c /tmp/leak.txt | tr -d ' \\n'",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_clean(&v);
    let out = stdout(&v);
    assert!(out.starts_with(&format!("{}\n", CMD_SECRET.len())), "the child did get the secret: {out}");
    assert!(out.matches("[REDACTED:").count() >= 2, "{out}");
    // A later call has a fresh /tmp: the copy did not outlive its call (T23), and the child
    // cannot write anywhere on the host to keep it.
    let host = f.dir.path().join("leak.txt");
    let (s, v) = sh(&f, "SH", &format!("cat /tmp/leak.txt; echo \"rc=$?\"; ls -A /tmp | wc -l; echo x > '{}'; echo \"host_rc=$?\"", host.display())).await;
    assert_eq!(s, 200, "{v}");
    let out = stdout(&v);
    assert!(out.contains("rc=1\n0\n") && !out.contains("host_rc=0"), "{out}");
    assert!(!host.exists());
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
    // It lives in the sandbox's own /run, which dies with the call; the host never had it.
    let path = out.lines().find_map(|l| l.strip_prefix("path=")).unwrap();
    assert_eq!(path, "/run/airlock/secret");
    assert!(!std::path::Path::new(path).exists(), "the secret file is not on the host: {path}");
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
    // The sandbox's empty network namespace has its own loopback, so a UDP datagram to
    // 127.0.0.1 can be sent there; what matters is that the host's listener gets nothing.
    assert!(out.contains("udp_rc="), "{v}");
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
    let m = marker("bg");
    let started = Instant::now();
    let (s, v) = sh(&f, "SLOW", &format!("sh -c 'sleep 300; : {m}' & sleep 300")).await;
    assert_eq!((s, code(&v)), (504, "command-timeout"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_gone(&m).await;
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

#[tokio::test]
async fn t23_the_brokers_files_do_not_exist_inside_and_the_child_is_nobody() {
    let f = setup().await;
    let data = f.dir.path().join("data");
    let cfg = f.dir.path().join("airlock.toml");
    assert!(data.join("master.key").is_file() && cfg.is_file());
    let script = format!(
        "for p in '{d}' '{d}/master.key' '{d}/store.db' '{c}' '{t}' /root /home /var /srv /opt /etc/shadow /sys; do \
         [ -e \"$p\" ] && echo \"present $p\"; done; ls -A /; echo; ls -A /etc; echo; id -u; id -g; \
         grep -c . /etc/passwd; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status",
        d = data.display(),
        c = cfg.display(),
        t = f.dir.path().display(),
    );
    let (s, v) = sh(&f, "SH", &script).await;
    assert_eq!(s, 200, "{v}");
    let out = stdout(&v);
    assert!(!out.contains("present"), "{out}");
    let mut parts = out.split("\n\n");
    let root: Vec<&str> = parts.next().unwrap().lines().collect();
    for entry in &root {
        assert!(
            [".airlock", "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "tmp", "usr"].contains(entry),
            "unexpected /{entry} in {root:?}"
        );
    }
    let etc: Vec<&str> = parts.next().unwrap().lines().collect();
    for entry in &etc {
        assert!(
            ["ld.so.cache", "ld.so.conf", "nsswitch.conf", "hosts", "localtime", "alternatives", "ssl", "pki", "ca-certificates", "passwd", "group"]
                .contains(entry),
            "unexpected /etc/{entry} in {etc:?}: the host's /etc is not bound wholesale"
        );
    }
    // Root on the host, nobody in the sandbox, with no capabilities and no way to gain any.
    let rest = parts.next().unwrap();
    assert!(rest.starts_with("65534\n65534\n2\n"), "{rest}");
    assert!(rest.contains("CapEff:\t0000000000000000") && rest.contains("NoNewPrivs:\t1"), "{rest}");
    assert_eq!(v["result"]["sandbox"]["mode"], "bwrap", "{v}");
    assert_eq!(v["result"]["sandbox"]["seccomp"], true, "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t23_a_concurrent_call_of_another_agent_is_invisible_through_proc_tmp_and_run() {
    let f = setup().await;
    let (m_env, m_file) = (marker("holdenv"), marker("holdfile"));
    // The other agent's two calls hold its secret (in the environment, in a file) for 3 s,
    // each also leaving a file in its /tmp and /dev/shm.
    let hold = |handle: &'static str, m: String| {
        let f = &f;
        async move {
            let script = format!(
                "[ -n \"$OTHER_TOKEN\" ] && echo has-env; [ -r /run/airlock/secret ] && echo has-file; \
                 echo x > /tmp/{m}; echo x > /dev/shm/{m}; sleep 3; : {m}"
            );
            f.invoke_as(&f.other_token, "run_command", json!({"credential_handle": handle, "args": {"script": script}})).await
        }
    };
    let probe = async {
        // While both hold their secrets, this agent's call looks everywhere it can.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let seen_on_host = !host_procs_with(&m_env).is_empty() && !host_procs_with(&m_file).is_empty();
        let script =             "ls /proc | grep -c '^[0-9]'; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'airlockT23h[o]ld'; \
             cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c OTHER_TOKEN; \
             ls -A /tmp /dev/shm /run | grep -c airlockT23; ls -A /run | wc -l; [ -e /run/airlock/secret ] && echo has-file; \
             grep -rl airlockT23 /tmp /dev/shm /run 2>/dev/null | wc -l";
        (seen_on_host, sh(&f, "SH", script).await)
    };
    let ((s1, v1), (s2, v2), (seen, (s, v))) = tokio::join!(hold("OTHER_ENV", m_env.clone()), hold("OTHER_FILE", m_file.clone()), probe);
    assert_eq!((s1, s2, s), (200, 200, 200), "{v1} {v2} {v}");
    assert!(stdout(&v1).contains("has-env") && stdout(&v2).contains("has-file"), "the holders had their secret: {v1} {v2}");
    assert!(seen, "both holders were running during the probe");
    let out = stdout(&v);
    // Its own sh, its pipeline and bubblewrap's init only; none of the other calls' processes,
    // environments, files or secret file.
    let lines: Vec<&str> = out.lines().collect();
    let procs: usize = lines[0].parse().unwrap();
    assert!(procs <= 12, "{out}");
    assert_eq!(&lines[1..], ["0", "0", "0", "0", "0"], "{out}");
    assert!(!v.to_string().contains(OTHER_SECRET) && !v.to_string().contains("[REDACTED"), "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t23_the_audit_record_says_how_the_call_was_confined() {
    let f = setup().await;
    let (status, v) = sh(&f, "SH", "true").await;
    assert_eq!(status, 200, "{v}");
    let (_, rec) = f.store.audit_tail(1).await.unwrap().pop().unwrap();
    let sb = rec.sandbox.expect("the record carries the sandbox the call ran in");
    assert_eq!(sb, v["result"]["sandbox"], "the audit keeps what the result declared");
    assert_eq!(sb["mode"], "bwrap");
    assert_eq!(sb["uid"], 65534);
    assert!(sb["namespaces"].as_array().unwrap().iter().any(|n| n == "net"), "{sb}");
    assert!(sb["limits"] == "rlimit" || sb["limits"] == "cgroup", "{sb}");
}

#[tokio::test]
async fn t23_only_the_allowed_environment_variables_exist() {
    let f = setup().await;
    let (s, v) = sh(&f, "SH_ENV", "env | cut -d= -f1 | sort | tr '\\n' ' '").await;
    assert_eq!(s, 200, "{v}");
    // `PWD` is the shell's own.
    assert_eq!(stdout(&v), "APP_MODE DEPLOY_TOKEN LANG PATH PWD ", "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t23_setsid_and_double_forked_descendants_die_with_the_call() {
    let f = setup().await;
    for (handle, tail, expect) in [("SLOW", "sleep 300", 504), ("SH", "echo done", 200)] {
        let m = marker(handle);
        // The descendants' markers only exist once the shell expanded them: no other command
        // line (the script's own, bubblewrap's) holds them.
        let script = format!("(setsid sh -c \"sleep 300; : $(echo {m})a\" &); sh -c \"sh -c 'sleep 301; : $(echo {m})b' &\"; {tail}");
        let watch = async {
            // While the call runs (the timeout one), the descendants exist on the host...
            tokio::time::sleep(Duration::from_millis(250)).await;
            [host_procs_with(&format!("{m}a")), host_procs_with(&format!("{m}b"))].concat()
        };
        let ((s, v), during) = tokio::join!(sh(&f, handle, &script), watch);
        assert_eq!(s, expect, "{v}");
        if expect == 504 {
            assert_eq!(during.len(), 2, "{during:?}");
            // ...as uid 65534 on the host too, never root.
            assert!(during.iter().all(|(_, uid)| *uid == 65534), "{during:?}");
        }
        // ...and none outlive it, whether it timed out or ended normally.
        assert_gone(&format!("{m}a")).await;
        assert_gone(&format!("{m}b")).await;
    }
    f.stop().await;
}

#[tokio::test]
async fn t23_host_tmp_and_dev_shm_are_unchanged_by_a_call() {
    let f = setup().await;
    let m = marker("files");
    let list = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    };
    let (s, v) = sh(
        &f,
        "SH",
        &format!(
            "mkdir /tmp/{m}d && echo x > /tmp/{m} && echo x > /dev/shm/{m} && ls -A /tmp /dev/shm | grep -c {m}; \
             echo x > /{m}; echo x > /usr/{m}; echo x > /etc/{m}; echo x > /run/{m}; echo x > /proc/{m}; echo x > /dev/{m}; ls -d /{m} /usr/{m} /etc/{m} /run/{m} /dev/{m} 2>/dev/null | wc -l"
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // It wrote its private /tmp and /dev/shm, and nowhere else.
    assert_eq!(stdout(&v), "3\n0\n", "{v}");
    for dir in ["/tmp", "/dev/shm", "/run", "/"] {
        assert!(!list(dir).iter().any(|e| e.contains(&m)), "{dir} on the host holds a file of the call");
    }
    f.stop().await;
}

#[tokio::test]
async fn t23_filling_tmp_stops_at_its_cap_and_leaves_nothing() {
    let f = setup().await;
    let m = marker("fill");
    let before_free = nix_free_tmp();
    // Writes until the private /tmp (64 MiB by default, and RLIMIT_FSIZE the same) refuses more.
    let (s, v) = sh(
        &f,
        "SH",
        &format!("head -c 1073741824 /dev/zero > /tmp/{m} 2>/dev/null; echo \"rc=$?\"; wc -c < /tmp/{m}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let out = stdout(&v);
    let written: u64 = out.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("{v}"));
    assert!(!out.starts_with("rc=0"), "the write must fail at the cap: {v}");
    assert!(written <= 64 << 20, "the private /tmp held {written} bytes: {v}");
    // The broker answers the next call, and the host's /tmp kept neither the file nor the space.
    let (s, v) = sh(&f, "SH", "echo ok").await;
    assert_eq!((s, stdout(&v)), (200, "ok\n"), "{v}");
    assert!(!std::path::Path::new(&format!("/tmp/{m}")).exists());
    assert!(nix_free_tmp() + (32 << 20) >= before_free, "host /tmp lost space to the call");
    f.stop().await;
}

/// Free bytes of the host's /tmp, from `df`.
fn nix_free_tmp() -> u64 {
    let o = std::process::Command::new("df").args(["-B1", "--output=avail", "/tmp"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn t23_only_descriptors_0_to_2_are_open() {
    let f = setup().await;
    // `ls` runs as a plain child of the shell, not in a pipeline: a pipeline's shell holds the
    // pipe's two ends while it forks, so `ls` could see them there depending on scheduling.
    let (s, v) = sh(&f, "SH", "ls /proc/$$/fd").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(stdout(&v), "0\n1\n2\n", "{v}");
    f.stop().await;
}

/// Each syscall as python3 makes it raw, with arguments that would succeed or fail with another
/// errno without the seccomp filter; x86_64 numbers.
#[cfg(target_arch = "x86_64")]
const SYSCALLS_PY: &str = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for name, nr, args in [
    ("ptrace", 101, (0, 0, 0, 0)),                      # PTRACE_TRACEME
    ("process_vm_readv", 310, (1, 0, 0, 0, 0, 0)),
    ("unshare", 272, (0x10000000,)),                    # CLONE_NEWUSER
    ("setns", 308, (0, 0)),
    ("keyctl", 250, (0, -3, 0)),                        # KEYCTL_GET_KEYRING_ID, session
    ("add_key", 248, (0, 0, 0, 0, 0)),
    ("bpf", 321, (0, 0, 0)),
    ("perf_event_open", 298, (0, 0, -1, -1, 0)),
    ("userfaultfd", 323, (0,)),
    ("io_uring_setup", 425, (1, 0)),
    ("mount", 165, (0, 0, 0, 0, 0)),
    ("clone_newuser", 56, (0x10000000 | 17, 0, 0, 0, 0)),
    ("personality", 135, (0x0040000,)),                 # ADDR_NO_RANDOMIZE
]:
    r = libc.syscall(nr, *args)
    print(name, r, ctypes.get_errno())
"#;

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn t23_ptrace_namespaces_keyrings_and_mounts_are_refused() {
    let f = setup().await;
    let script = format!(
        "strace /bin/true 2>&1 | head -c 300; echo; unshare -U true; echo \"unshare_rc=$?\"; \
         unshare -r true; echo \"unshare_r_rc=$?\"; mount -t tmpfs none /tmp; echo \"mount_rc=$?\"; \
         python3 - <<'PY'\n{SYSCALLS_PY}\nPY\n"
    );
    let (s, v) = sh(&f, "SH", &script).await;
    assert_eq!(s, 200, "{v}");
    let out = stdout(&v);
    for rc in ["unshare_rc=0", "unshare_r_rc=0", "mount_rc=0"] {
        assert!(!out.contains(rc), "{rc}: {out}");
    }
    assert!(out.lines().next().unwrap().contains("Operation not permitted"), "strace must fail: {out}");
    for name in [
        "ptrace", "process_vm_readv", "unshare", "setns", "keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd",
        "io_uring_setup", "mount", "clone_newuser", "personality",
    ] {
        assert!(out.lines().any(|l| l == format!("{name} -1 1")), "{name} must fail with EPERM: {out}");
    }
    f.stop().await;
}

#[tokio::test]
async fn t23_a_fork_bomb_and_a_memory_hog_are_contained_while_the_broker_answers() {
    let f = setup().await;
    let m = marker("bomb");
    // The shell stays, so the bomb runs into its limit until the call's timeout. Its sleep is
    // started before the bomb and waited for with the `wait` builtin: once the bomb holds every
    // process slot, a `sleep` started after it could not be forked and the shell would end early.
    let bomb_script = format!("exec 2>/dev/null; sleep 10 & s=$!; bomb() {{ bomb | bomb & }}; bomb; wait $s; : {m}");
    let bomb = sh(&f, "BOMB", &bomb_script);
    let hog = sh(&f, "SH", "python3 -c 'b = bytearray(6 << 30); b[-1] = 1; print(len(b))'; echo \"hog_rc=$?\"");
    let procs = sh(&f, "SH", "(i=0; while [ $i -lt 400 ]; do sleep 5 & i=$((i+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo $#");
    let others = async {
        // Other calls are answered, quickly, while the bomb and the hog run.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let (s, v) = f.invoke("run_command", json!({"credential_handle": "DEPLOY", "args": {"target": "prod", "tag": "v1.2"}})).await;
        (s, v, t.elapsed())
    };
    let ((sb, vb), (sh_, vh), (sp, vp), (so, vo, took)) = tokio::join!(bomb, hog, procs, others);
    assert_eq!((sb, code(&vb)), (504, "command-timeout"), "{vb}");
    assert_eq!(sh_, 200, "{vh}");
    assert!(stdout(&vh).contains("hog_rc=1") && vh["result"]["stderr"].as_str().unwrap().contains("MemoryError"), "{vh}");
    assert_eq!(sp, 200, "{vp}");
    let n: u64 = stdout(&vp).trim().parse().unwrap_or_else(|_| panic!("{vp}"));
    assert!((100..=128).contains(&n), "RLIMIT_NPROC holds the call to 128 processes: {n}");
    assert_eq!((so, vo["result"]["stdout"].as_str()), (200, Some("deploy prod v1.2\n")), "{vo}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_gone(&m).await;
    f.stop().await;
}

#[tokio::test]
async fn t23_a_failing_preflight_refuses_every_call_and_runs_nothing() {
    std::env::set_var("AIRLOCK_TEST_CMD_SECRET", CMD_SECRET);
    std::env::set_var("AIRLOCK_TEST_OTHER_SECRET", OTHER_SECRET);
    let f = Fixture::start_with(|t| {
        let t = with_commands(t);
        assert!(t.contains("[sandbox]\n"), "the fixture configures the sandbox");
        t.replace("[sandbox]\n", "[sandbox]\nbwrap = \"/nonexistent/airlock-test/bwrap\"\n")
    })
    .await;
    let m = marker("preflight");
    for _ in 0..2 {
        let (s, v) = sh(&f, "SH", &format!("touch /tmp/{m}")).await;
        assert_eq!((s, code(&v)), (503, "sandbox-unavailable"), "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("/nonexistent/airlock-test/bwrap does not exist") && msg.contains("apparmor_restrict_unprivileged_userns"), "{msg}");
        assert!(!std::path::Path::new(&format!("/tmp/{m}")).exists(), "the program must not have run");
    }
    // Validation still comes first.
    let (s, v) = f.invoke("run_command", json!({"credential_handle": "DEPLOY", "args": {"target": "dev", "tag": "v1.2"}})).await;
    assert_eq!((s, code(&v)), (403, "argument-not-allowed"), "{v}");
    f.stop().await;
}

#[tokio::test]
async fn t23_ten_gib_to_stdout_is_cut() {
    let f = setup().await;
    let started = Instant::now();
    let (s, v) = sh(&f, "SH", "head -c 10737418240 /dev/zero | tr '\\0' a").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["truncated"], true);
    assert_eq!(stdout(&v).len(), 4096);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    f.stop().await;
}

#[tokio::test]
async fn t23_a_program_ignoring_sigterm_is_killed_at_the_timeout() {
    let f = setup().await;
    let m = marker("term");
    let started = Instant::now();
    let (s, v) = sh(&f, "SLOW", &format!("trap '' TERM INT HUP; while :; do :; done; : {m}")).await;
    assert_eq!((s, code(&v)), (504, "command-timeout"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_gone(&m).await;
    f.stop().await;
}

#[tokio::test]
async fn t23_a_setuid_binary_gains_nothing() {
    let f = setup().await;
    let (s, v) = sh(
        &f,
        "SH",
        "stat -c '%A' /usr/bin/su; su -c 'id -u' root < /dev/null; echo \"su_rc=$?\"; \
         python3 -c 'import os; os.setuid(0)'; echo \"setuid_rc=$?\"; id -u",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let out = stdout(&v);
    // The bit is there on the file, and gives nothing: nosuid mounts and no_new_privs.
    assert!(out.starts_with("-rws"), "{out}");
    assert!(!out.contains("su_rc=0") && !out.contains("setuid_rc=0"), "{out}");
    assert!(!out.lines().any(|l| l == "0"), "{out}");
    assert!(out.ends_with("65534\n"), "{out}");
    f.stop().await;
}

#[tokio::test]
async fn t23_the_sandbox_dies_when_the_broker_is_killed() {
    use airlock_exec_command::sandbox::Plan;
    use airlock_exec_command::stage2::{SecretSlot, Spec};
    // A stand-in broker: a shell that starts the executor's exact bubblewrap command line and
    // waits, then is SIGKILLed, as a broker can be.
    let settings = airlock_exec_command::SandboxSettings { stage2: stage2_binary(), ..Default::default() };
    let m = marker("brokerkill");
    let (program, workdir) = (std::path::Path::new("/bin/sh"), std::path::Path::new("/"));
    let plan = Plan {
        program,
        workdir,
        network: false,
        spec: Spec {
            program: program.into(),
            // The descendant's marker only exists once the shell expanded it: no other command
            // line holds it.
            args: vec!["-c".into(), format!("(setsid sh -c \"sleep 300; : $(echo {m})x\" &); sleep 300")],
            env: vec![("PATH".into(), airlock_exec_command::CHILD_PATH.into())],
            secret: SecretSlot::Stdin,
            paths: settings.landlock_paths(workdir, program, false),
            limits: settings.limits(300_000),
        },
        probe: false,
    };
    let mut broker = std::process::Command::new("/bin/sh");
    broker.arg("-c").arg("printf '\\0\\0\\0\\0\\0\\0\\0\\0' | \"$@\" & wait").arg("sh").arg(&settings.bwrap);
    broker.args(settings.bwrap_args(&plan).unwrap());
    // As the executor starts bubblewrap when the broker is root.
    std::os::unix::process::CommandExt::uid(&mut broker, 65534);
    std::os::unix::process::CommandExt::gid(&mut broker, 65534);
    let mut broker = broker.spawn().unwrap();
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = host_procs_with(&format!("{m}x"));
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), 1, "the setsid descendant started");
    assert_eq!(seen[0].1, 65534, "as nobody on the host");
    broker.kill().unwrap();
    broker.wait().unwrap();
    assert_gone(&m).await;
}
