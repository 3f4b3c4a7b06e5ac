//! Traces over OTLP/HTTP, received by a real receiver built on OpenTelemetry's official protobuf
//! definitions (tests/otlp/receiver.py, PyPI opentelemetry-proto): every stage of a call is a
//! span under the call's span in one trace, the call span carries the request id, agent, tool,
//! handle, decision and outcome; a call the policy refuses stops at `check`; and no canary (the
//! handle's secret, an argument's value, the upstream's response body, the agent's token) is in
//! any byte the receiver got. The spans still queued when `airlock serve` gets SIGTERM are sent
//! before it exits.
//!
//! The bad inputs: a collector that refuses connections costs one warning in the log, naming
//! the endpoint, and nothing else (every call succeeds and is in the audit, the broker stops at
//! once on SIGTERM); an endpoint that would send spans in clear across the network, from the
//! configuration or from OTEL_EXPORTER_OTLP_ENDPOINT, stops `airlock serve` with an error naming
//! it.
//!
//! Without python3 and opentelemetry-proto the receiver tests skip, unless
//! AIRLOCK_REQUIRE_SERVICES=1 (CI), where they fail.

mod common;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "otlpSecretCanary_Qm7Zt2Wx9Kd4";
const ARG_CANARY: &str = "otlpArgumentCanary_Hs3Lp8Vb1";
const BODY_CANARY: &str = "otlpResponseCanary_Fy6Nc0Jr5";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Why the receiver cannot run here, if it cannot.
fn missing_receiver() -> Option<String> {
    let ok = Command::new("python3")
        .args(["-c", "import opentelemetry.proto.collector.trace.v1.trace_service_pb2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "python3 with opentelemetry-proto is missing (python3 -m pip install opentelemetry-proto==1.45.2)".to_owned())
}

fn skip_or_fail() -> bool {
    if let Some(why) = missing_receiver() {
        if common::require() {
            panic!("AIRLOCK_REQUIRE_SERVICES=1 but {why}");
        }
        eprintln!("skipping: {why}");
        return true;
    }
    false
}

/// The receiver, writing to `dir`; stopped (its stdin closed, then killed) when dropped.
struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new("python3")
            .arg(common::root().join("tests/otlp/receiver.py"))
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the receiver's port, not {line:?}"));
        Receiver { child, port, dir: dir.to_owned() }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("spans.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn raw(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("raw.bin")).unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream on 127.0.0.1 answering every request with a JSON body holding [`BODY_CANARY`]
/// and the handle's secret (which the broker scrubs from the result).
fn upstream() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as much body as Content-Length says.
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = json!({"data": BODY_CANARY, "echo": SECRET}).to_string();
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            });
        }
    });
    port
}

/// `airlock init` in `dir`; an http handle API on the upstream (its secret [`SECRET`]) that the
/// agent `bot` may use, a handle OTHER it may not; the listener on `port`, `telemetry` appended;
/// the agent's token.
fn setup(dir: &Path, port: u16, up: u16, telemetry: &str) -> String {
    assert!(common::airlock_in(dir, &["init"], None, &[]).status.success());
    let mut cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    cfg = cfg.replace("[policy]\n", "").replace("files = []\n", "");
    cfg = cfg.replace("listen = \"127.0.0.1:7878\"", &format!("listen = \"127.0.0.1:{port}\"\nsocket = \"off\""));
    cfg.push_str(&format!(
        "\n[handles.API]\nkind = \"http\"\nsecret = \"local:API\"\n[handles.API.http]\n\
         destinations = [{{ url = \"http://127.0.0.1:{up}/v1/\", methods = [\"GET\", \"POST\"] }}]\n\
         inject = {{ type = \"header\", name = \"X-API-Key\", format = \"{{}}\" }}\n\n\
         [handles.OTHER]\nkind = \"http\"\nsecret = \"local:API\"\n[handles.OTHER.http]\n\
         destinations = [{{ url = \"http://127.0.0.1:{up}/v2/\", methods = [\"GET\", \"POST\"] }}]\n\
         inject = {{ type = \"header\", name = \"X-API-Key\", format = \"{{}}\" }}\n\n\
         [agents.bot]\ngrants = [{{ handle = \"API\", tools = [\"http_request\"] }}]\n\n{telemetry}"
    ));
    std::fs::write(dir.join("airlock.toml"), cfg).unwrap();
    let o = common::airlock_in(dir, &["secret", "put", "API"], Some(&format!("{SECRET}\n")), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = common::airlock_in(dir, &["agent", "add", "bot"], None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// `airlock serve` in `dir` with `env`, its stderr in `serve.log`; once it answers /healthz.
async fn serve(dir: &Path, base: &str, env: &[(&str, &str)]) -> common::Server {
    serve_with(dir, base, env, &[]).await
}

/// [`serve`] with more arguments (`--log-json`); RUST_LOG may be set in `env`.
async fn serve_with(dir: &Path, base: &str, env: &[(&str, &str)], args: &[&str]) -> common::Server {
    common::serve_http(dir, base, env, args).await
}

/// SIGTERM, then the exit status within `secs`.
fn stop(server: &mut common::Server, secs: u64) -> std::process::ExitStatus {
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "airlock serve did not stop within {secs} s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One http_request on `handle` with [`ARG_CANARY`] in its path and body; the answer.
async fn call(client: &reqwest::Client, base: &str, token: &str, handle: &str) -> Value {
    let prefix = if handle == "API" { "v1" } else { "v2" };
    let body = json!({"tool": "http_request", "arguments": {
        "credential_handle": handle, "method": "POST", "path_or_url": format!("/{prefix}/items/{ARG_CANARY}"),
        "body": format!("{{\"note\": \"{ARG_CANARY}\"}}")}});
    client.post(format!("{base}/v1/invoke")).bearer_auth(token).json(&body).send().await.unwrap().json().await.unwrap()
}

/// The call span of `request_id`, and every span of its trace.
fn trace_of<'a>(spans: &'a [Value], request_id: &str) -> Option<(&'a Value, Vec<&'a Value>)> {
    let call = spans.iter().find(|s| s["name"] == "airlock.call" && s["attributes"]["request_id"] == request_id)?;
    let all = spans.iter().filter(|s| s["trace_id"] == call["trace_id"]).collect();
    Some((call, all))
}

fn names(spans: &[&Value]) -> BTreeSet<String> {
    spans.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_is_a_span_of_the_call_and_no_canary_reaches_the_collector() {
    if skip_or_fail() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start(&dir.join("receiver"));
    let up = upstream();
    let port = free_port();
    let token = setup(
        dir,
        port,
        up,
        &format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\nservice_name = \"airlock-test\"\n", rx.port),
    );
    let base = format!("http://127.0.0.1:{port}");
    // The batch processor's default delay (5 s): the spans are sent by the flush at SIGTERM.
    let mut server = serve(dir, &base, &[]).await;
    let client = reqwest::Client::new();

    let ok = call(&client, &base, &token, "API").await;
    assert_eq!(ok["ok"], true, "{ok}");
    let result = ok["result"].to_string();
    assert!(result.contains(BODY_CANARY) && !result.contains(SECRET), "the upstream answered, scrubbed: {result}");
    let denied = call(&client, &base, &token, "OTHER").await;
    assert_eq!(denied["error"]["code"], "handle-unavailable", "{denied}");
    let bad_token = call(&client, &base, &format!("{token}x"), "API").await;
    assert_eq!(bad_token["error"]["code"], "unauthenticated", "{bad_token}");

    let status = stop(&mut server, 20);
    assert!(status.success(), "airlock serve: {status}; {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(log.contains("call spans sent over OTLP/HTTP") && log.contains("call spans flushed"), "{log}");
    assert!(!log.contains("OTLP collector not reached"), "{log}");

    let spans = rx.spans();
    assert!(!spans.is_empty(), "the receiver got no span; serve.log: {log}");
    eprintln!("{} spans received ({} bytes); the allowed call's span: {}", spans.len(), rx.raw().len(), spans.iter().find(|s| s["attributes"]["request_id"] == ok["request_id"]).unwrap());
    for s in &spans {
        assert_eq!(s["service"], "airlock-test", "{s}");
        assert!(s["name"].as_str().unwrap().starts_with("airlock."), "only the call spans are exported: {s}");
        assert_eq!(s["events"], 0, "no log event is exported: {s}");
    }

    // The allowed call: every stage, under the call span; resolve inside execute.
    let rid = ok["request_id"].as_str().unwrap();
    let (call_span, trace) = trace_of(&spans, rid).unwrap_or_else(|| panic!("no call span for {rid}: {spans:#?}"));
    let a = &call_span["attributes"];
    assert_eq!(a["agent"], "bot", "{call_span}");
    assert_eq!(a["tool"], "http_request", "{call_span}");
    assert_eq!(a["handle"], "API", "{call_span}");
    assert_eq!(a["decision"], "allow", "{call_span}");
    assert_eq!(a["outcome"], "ok", "{call_span}");
    assert_eq!(call_span["parent_span_id"], "", "the call span is the trace's root: {call_span}");
    assert_eq!(call_span["kind"], 2, "SPAN_KIND_SERVER: {call_span}");
    let stages = ["airlock.authenticate", "airlock.check", "airlock.prepare", "airlock.approval", "airlock.execute", "airlock.resolve", "airlock.scrub", "airlock.audit"];
    let want: BTreeSet<String> = std::iter::once("airlock.call").chain(stages).map(str::to_owned).collect();
    assert_eq!(names(&trace), want, "{trace:#?}");
    assert_eq!(trace.len(), want.len(), "one span per stage: {trace:#?}");
    let by_name = |n: &str| *trace.iter().find(|s| s["name"] == n).unwrap();
    for s in stages.iter().filter(|s| **s != "airlock.resolve") {
        assert_eq!(by_name(s)["parent_span_id"], call_span["span_id"], "{s} is a child of the call: {trace:#?}");
    }
    assert_eq!(by_name("airlock.resolve")["parent_span_id"], by_name("airlock.execute")["span_id"], "resolve runs inside execute");
    // In the order they ran, each within the call.
    let start = |n: &str| by_name(n)["start"].as_u64().unwrap();
    let order = ["airlock.authenticate", "airlock.check", "airlock.prepare", "airlock.approval", "airlock.execute", "airlock.scrub", "airlock.audit"];
    for w in order.windows(2) {
        assert!(start(w[0]) <= start(w[1]), "{} starts before {}: {trace:#?}", w[0], w[1]);
    }
    for s in &trace {
        assert!(s["start"].as_u64() >= call_span["start"].as_u64() && s["end"].as_u64() <= call_span["end"].as_u64(), "{s} within the call");
    }

    // The refused call: the decision, and nothing after check but the ending.
    let rid = denied["request_id"].as_str().unwrap();
    let (call_span, trace) = trace_of(&spans, rid).unwrap_or_else(|| panic!("no call span for {rid}: {spans:#?}"));
    let a = &call_span["attributes"];
    assert_eq!((&a["decision"], &a["outcome"], &a["handle"], &a["agent"]), (&json!("deny"), &json!("handle-unavailable"), &json!("OTHER"), &json!("bot")));
    assert_eq!(call_span["status"], 2, "STATUS_CODE_ERROR: {call_span}");
    let want: BTreeSet<String> = ["airlock.call", "airlock.authenticate", "airlock.check", "airlock.scrub", "airlock.audit"].map(str::to_owned).into();
    assert_eq!(names(&trace), want, "{trace:#?}");

    // The refused token: authenticated by no one, audited, traced without an agent.
    let rid = bad_token["request_id"].as_str().unwrap();
    let (call_span, trace) = trace_of(&spans, rid).unwrap_or_else(|| panic!("no call span for {rid}: {spans:#?}"));
    assert_eq!(call_span["attributes"]["outcome"], "unauthenticated", "{call_span}");
    assert!(call_span["attributes"].get("agent").is_none(), "{call_span}");
    assert!(names(&trace).contains("airlock.authenticate") && !names(&trace).contains("airlock.check"), "{trace:#?}");

    // No canary in any byte received.
    let raw = rx.raw();
    let decoded = serde_json::to_string(&spans).unwrap();
    for (what, canary) in [("the secret", SECRET), ("an argument", ARG_CANARY), ("the response body", BODY_CANARY), ("the token", token.as_str())] {
        assert!(!raw.windows(canary.len()).any(|w| w == canary.as_bytes()), "{what} reached the collector");
        assert!(!decoded.contains(canary), "{what} reached the collector");
    }
    // Nor a piece of the token long enough to matter (its secret part, past the prefix).
    let tail = &token[token.len() - 16..];
    assert!(!raw.windows(tail.len()).any(|w| w == tail.as_bytes()), "a piece of the token reached the collector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_costs_a_warning_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = upstream();
    let port = free_port();
    // A port nothing listens on: every export is refused at once.
    let closed = free_port();
    let token = setup(dir, port, up, &format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}/v1/traces\"\n"));
    let base = format!("http://127.0.0.1:{port}");
    // Batches every 50 ms, so that exports fail while the calls run.
    let mut server = serve(dir, &base, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let started = Instant::now();
    for i in 0..20 {
        let t0 = Instant::now();
        let v = call(&client, &base, &token, "API").await;
        assert_eq!(v["ok"], true, "call {i}: {v}");
        assert!(t0.elapsed() < Duration::from_secs(5), "call {i} took {:?}", t0.elapsed());
        ids.push(v["request_id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Long enough for several failed exports.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("20 calls with the collector down in {:?}", started.elapsed());
    // SIGTERM: the flush fails fast, the broker stops.
    let status = stop(&mut server, 15);
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("OTLP collector not reached")).collect();
    assert_eq!(warnings.len(), 1, "one warning a minute at most: {log}");
    eprintln!("{}", warnings[0]);
    assert!(warnings[0].contains(&format!("127.0.0.1:{closed}/v1/traces")) && warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("reason=Connection refused") || warnings[0].contains("reason=\"Connection refused\""), "{}", warnings[0]);
    assert!(!log.contains("ERROR"), "{log}");
    // The audit holds every call.
    let o = common::airlock_in(dir, &["audit", "tail", "-n", "50"], None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let audited: BTreeSet<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["outcome"] == "ok" && r["tool"] == "http_request")
        .map(|r| r["request_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    for id in &ids {
        assert!(audited.contains(id), "{id} is not in the audit");
    }
    let o = common::airlock_in(dir, &["audit", "verify"], None, &[]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// `airlock serve` in `dir` with `env`, expected to stop at once: its stderr (killed, and the
/// test failed, if it is still running after 20 s).
fn serve_fails(dir: &Path, env: &[(&str, &str)]) -> String {
    let err = dir.join("serve-fails.log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    for v in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"] {
        c.env_remove(v);
    }
    let child = c
        .current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .envs(env.iter().copied())
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut server = common::Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "airlock serve started: {}", std::fs::read_to_string(&err).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(!status.success(), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_in_clear_across_the_network_stops_serve_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    setup(dir, port, free_port(), "");
    let cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    std::fs::write(dir.join("airlock.toml"), format!("{cfg}\n[telemetry]\notlp_endpoint = \"http://collector.example:4318/v1/traces\"\n")).unwrap();
    let err = serve_fails(dir, &[]);
    assert!(err.contains("telemetry.otlp_endpoint") && err.contains("insecure-transport"), "{err}");

    // The same through the standard variables, with no endpoint in the file.
    let cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    std::fs::write(dir.join("airlock.toml"), cfg.replace("otlp_endpoint = \"http://collector.example:4318/v1/traces\"\n", "")).unwrap();
    let err = serve_fails(dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318")]);
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && err.contains("use https"), "{err}");
    let err = serve_fails(dir, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318")]);
    assert!(err.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_the_spans_are_json_log_lines_when_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = upstream();
    let port = free_port();
    let token = setup(dir, port, up, "");
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve_with(dir, &base, &[("RUST_LOG", "info,airlock::trace=debug")], &["--log-json"]).await;
    let client = reqwest::Client::new();
    let ok = call(&client, &base, &token, "API").await;
    assert_eq!(ok["ok"], true, "{ok}");
    let denied = call(&client, &base, &token, "OTHER").await;
    assert_eq!(denied["ok"], false, "{denied}");
    assert!(stop(&mut server, 20).success());
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    // One line as each span closes: the span's name and fields, and the call's in `spans`.
    let closed = |rid: &Value| -> BTreeSet<String> {
        lines
            .iter()
            .filter(|l| l["target"] == "airlock::trace" && l["fields"]["message"] == "close")
            .filter(|l| l["span"]["request_id"] == *rid || l["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["request_id"] == *rid)))
            .map(|l| l["span"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Authentication closes before the call has its request id: it is counted apart.
    let want: BTreeSet<String> =
        ["call", "check", "prepare", "approval", "execute", "resolve", "scrub", "audit"].iter().map(|n| format!("airlock.{n}")).collect();
    assert_eq!(closed(&ok["request_id"]), want, "{log}");
    let authenticated = lines.iter().filter(|l| l["span"]["name"] == "airlock.authenticate" && l["fields"]["message"] == "close").count();
    assert_eq!(authenticated, 2, "{log}");
    let call_line = lines.iter().find(|l| l["span"]["name"] == "airlock.call" && l["span"]["request_id"] == ok["request_id"]).unwrap();
    assert_eq!((&call_line["span"]["agent"], &call_line["span"]["handle"], &call_line["span"]["decision"]), (&json!("bot"), &json!("API"), &json!("allow")), "{call_line}");
    let want: BTreeSet<String> = ["call", "check", "scrub", "audit"].iter().map(|n| format!("airlock.{n}")).collect();
    assert_eq!(closed(&denied["request_id"]), want, "{log}");
    for (what, canary) in [("the secret", SECRET), ("an argument", ARG_CANARY), ("the response body", BODY_CANARY), ("the token", token.as_str())] {
        assert!(!log.contains(canary), "{what} is in the log");
    }
}
