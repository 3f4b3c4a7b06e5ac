//! MCP logging and progress: the official Python SDK (PyPI `mcp`, its `logging_callback`,
//! `set_logging_level` and `progress_callback`) over stdio and streamable HTTP, and a held call
//! over an in-process stdio session. Skipped (with `skipped: <reason>`) when python `mcp` is
//! missing, unless `AIRLOCK_REQUIRE_SERVICES=1` (the in-process test always runs).

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn run_client(args: &[&str], token: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(clients_dir().join("mcp_notify_client.py"))
        .args(args)
        .env("AIRLOCK_TOKEN", token)
        // The agent sends a secret as a handle name: no message may repeat it.
        .env("CANARY_AS_HANDLE", GENERIC_SECRET)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{stderr}\n{stdout}");
    let s: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary not JSON ({e}): {stdout}\n{stderr}"));
    // Every message and progress notification the client received: no secret, no link, no token.
    for (key, call) in s["calls"].as_object().unwrap() {
        for m in call["messages"].as_array().unwrap().iter().chain(call["progress"].as_array().unwrap()) {
            let text = m.to_string();
            assert_no_secret(&format!("message of {key}"), &text);
            assert!(!text.contains(token), "{key}: a message holds the agent's token: {text}");
            assert!(!text.contains("http://") && !text.contains("https://"), "{key}: a message holds a link: {text}");
            assert!(!text.contains("/v1/echo") && !text.contains("SELECT"), "{key}: a message holds an argument: {text}");
        }
    }
    s
}

fn levels(call: &Value) -> Vec<&str> {
    call["messages"].as_array().unwrap().iter().map(|m| m["level"].as_str().unwrap()).collect()
}

fn data<'a>(call: &'a Value, level: &str) -> &'a Value {
    let m = call["messages"].as_array().unwrap().iter().find(|m| m["level"] == level);
    &m.unwrap_or_else(|| panic!("no {level} message in {call}"))["data"]
}

/// Logging over a session that keeps the level the client set (stdio).
fn check_logging(s: &Value) {
    assert!(s["capabilities"]["logging"].is_object(), "logging is declared: {}", s["capabilities"]);
    assert_eq!(s["set_level"], "ok");
    let c = &s["calls"];
    assert_eq!(c["echo_notice"]["result"]["isError"], false, "{}", c["echo_notice"]);
    assert!(levels(&c["before_level"]).is_empty(), "nothing before a level is set: {}", c["before_level"]);

    // notice: the redaction (notice); the call's own `done` (debug) is below the level.
    assert_eq!(levels(&c["echo_notice"]), ["notice"], "{}", c["echo_notice"]);
    let d = data(&c["echo_notice"], "notice");
    assert_eq!(d["tool"], "http_request");
    assert_eq!(d["handle"], "API");
    assert_eq!(d["redactions"], 1, "{d}");
    assert_eq!(d["message"], "http_request on API: 1 value redacted from the result");
    assert!(d["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{d}");
    assert!(levels(&c["query_notice"]).is_empty(), "a clean call says nothing at notice: {}", c["query_notice"]);

    // Refusals (warning), each with its code and the request id of the refusal.
    let d = data(&c["forbidden_notice"], "warning");
    assert_eq!(d["code"], "handle-unavailable");
    assert_eq!(d["handle"], "SECRET_ONLY");
    assert_eq!(d["request_id"], c["forbidden_notice"]["result"]["structuredContent"]["request_id"]);
    assert_eq!(d["message"], "query_db on SECRET_ONLY was refused: handle-unavailable");
    let d = data(&c["unknown_tool_notice"], "warning");
    assert_eq!(d["code"], "unknown-tool");
    assert!(d.get("tool").is_none(), "an unknown tool's name is the client's text, not repeated: {d}");
    assert!(!d.to_string().contains("drop_everything"), "{d}");
    let d = data(&c["canary_handle_notice"], "warning");
    assert!(d.get("handle").is_none(), "a handle that is not configured is not repeated: {d}");
    assert_eq!(d["message"], "query_db was refused: handle-unavailable");

    // debug: the call's `done`.
    assert_eq!(levels(&c["query_debug"]), ["debug"], "{}", c["query_debug"]);
    assert_eq!(data(&c["query_debug"], "debug")["message"], "query_db on APP_DB done");
    // error: a refusal (warning) is below it.
    assert_eq!(c["forbidden_error"]["result"]["isError"], true);
    assert!(levels(&c["forbidden_error"]).is_empty(), "{}", c["forbidden_error"]);
    for m in c.as_object().unwrap().values().flat_map(|c| c["messages"].as_array().unwrap()) {
        assert_eq!(m["logger"], "airlock", "{m}");
    }
}

/// Progress for a call that sent a `progressToken`, over either transport.
fn check_progress(s: &Value) {
    let c = &s["calls"];
    for key in ["query_progress", "refused_progress"] {
        let p: Vec<&Value> = c[key]["progress"].as_array().unwrap().iter().collect();
        let messages: Vec<&str> = p.iter().map(|p| p["message"].as_str().unwrap()).collect();
        assert_eq!(messages, ["call received", "call finished"], "{key}: {}", c[key]);
        let values: Vec<f64> = p.iter().map(|p| p["progress"].as_f64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{key}: progress increases: {values:?}");
    }
    assert_eq!(c["query_progress"]["result"]["isError"], false);
    assert_eq!(c["refused_progress"]["result"]["isError"], true);
    // A call without a token gets none.
    assert!(c["query_debug"]["progress"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn python_sdk_over_stdio_gets_log_messages_at_its_level_and_progress() {
    if !available(python_mcp()) {
        return;
    }
    let env = Env::prepare().await;
    let bin = env!("CARGO_BIN_EXE_airlock-mcp-stdio-test");
    let s = run_client(&["stdio", bin, env.config_path.to_str().unwrap()], &env.token).await;
    check_logging(&s);
    check_progress(&s);
}

#[tokio::test]
async fn python_sdk_over_streamable_http_gets_progress_and_no_session_level() {
    if !available(python_mcp()) {
        return;
    }
    let env = Env::prepare().await;
    let url = serve_mcp(env.broker().await).await;
    let s = run_client(&["http", &url], &env.token).await;
    assert!(s["capabilities"]["logging"].is_object(), "logging is declared: {}", s["capabilities"]);
    assert_eq!(s["set_level"], "ok", "logging/setLevel is answered");
    // Stateless: no session keeps the level, so no call hears anything.
    for (key, call) in s["calls"].as_object().unwrap() {
        assert!(levels(call).is_empty(), "{key}: {call}");
    }
    check_progress(&s);
}

// ---- A held call over an in-process stdio session (raw JSON-RPC) ----

struct Session {
    to_server: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    from_server: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
}

impl Session {
    async fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.to_server.write_all(line.as_bytes()).await.unwrap();
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), self.from_server.next_line())
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("server closed");
        assert_no_secret("stdio answer", &line);
        serde_json::from_str(&line).unwrap()
    }

    /// Messages up to the one with `id` (a response or a request to the client), and that one.
    async fn until_id(&mut self, id: &Value) -> (Vec<Value>, Value) {
        let mut before = Vec::new();
        loop {
            let m = self.next().await;
            if m.get("id") == Some(id) || (m.get("method").is_some() && m.get("id").is_some()) {
                return (before, m);
            }
            before.push(m);
        }
    }
}

#[tokio::test]
async fn a_held_call_says_it_waits_for_a_person_in_a_log_message_and_in_progress() {
    let env = Env::prepare().await;
    let mut text = std::fs::read_to_string(&env.config_path).unwrap();
    text.push_str("\n[handles.RW_DB.approval]\nwrites = true\n");
    std::fs::write(&env.config_path, text).unwrap();
    let (_, alice) = env.store.add_approver("alice").await.unwrap();
    let broker = env.broker().await;
    let (client, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    tokio::spawn(airlock_mcp::serve_io(broker.clone(), env.other_token.clone(), sr, sw));
    let (cr, cw) = tokio::io::split(client);
    let mut s = Session { to_server: cw, from_server: BufReader::new(cr).lines() };
    s.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"url": {}}}, "clientInfo": {"name": "t", "version": "0"}}}))
        .await;
    let init = s.next().await;
    assert!(init["result"]["capabilities"]["logging"].is_object(), "{init}");
    s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "notice"}})).await;
    assert_eq!(s.next().await, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));

    let call = json!({"name": "query_db", "_meta": {"progressToken": "p-7"},
                      "arguments": {"credential_handle": "RW_DB", "query": "UPDATE orders SET total = 1 WHERE id = ?", "params": [1]}});
    s.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call})).await;
    let (before, req) = s.until_id(&json!(3)).await;
    assert_eq!(req["method"], "elicitation/create", "{req}");
    let id = req["params"]["elicitationId"].as_str().unwrap().to_owned();
    // Before the person is asked: progress (received), the notice that the call is held, and
    // progress (waiting), in that order.
    let kinds: Vec<String> = before
        .iter()
        .map(|m| match m["method"].as_str().unwrap() {
            "notifications/progress" => format!("progress: {}", m["params"]["message"].as_str().unwrap()),
            "notifications/message" => format!("{}: {}", m["params"]["level"].as_str().unwrap(), m["params"]["data"]["message"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "progress: call received",
            "notice: query_db on RW_DB is held until a person approves it (approval-required)",
            "progress: waiting for a person to approve the call",
        ],
        "{before:?}"
    );
    let held = &before[1]["params"]["data"];
    assert_eq!(held["code"], "approval-required");
    assert!(!held.to_string().contains(&id), "the approval id (part of the page's link) is not in the message: {held}");
    assert!(before.iter().filter(|m| m["method"] == "notifications/progress").all(|m| m["params"]["progressToken"] == "p-7"));

    let approver = broker.authenticate_approver(Some(alice.reveal())).await.unwrap();
    broker.decide_approval(&approver, &id, true).await.unwrap();
    s.send(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"action": "accept"}})).await;
    let (after, r) = s.until_id(&json!(3)).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(r["result"]["structuredContent"]["rows_affected"], 1, "{r}");
    // The approved call ran: at notice its `done` (debug) is not sent; the last progress step is.
    // (A "still waiting" step may come in between if the person took long.)
    let last = after.last().expect("a last progress step");
    assert_eq!(last["method"], "notifications/progress", "{after:?}");
    assert_eq!(last["params"]["message"], "call finished");
    assert!(after.iter().all(|m| m["method"] == "notifications/progress"), "{after:?}");
    let values: Vec<f64> = before.iter().chain(&after).filter_map(|m| m["params"]["progress"].as_f64()).collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "progress increases: {values:?}");
}

/// A stdio session of `token`'s agent with the level set to `level`.
async fn session_at(env: &Env, token: &str, level: &str) -> Session {
    let broker = env.broker().await;
    let (client, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    tokio::spawn(airlock_mcp::serve_io(broker, token.to_owned(), sr, sw));
    let (cr, cw) = tokio::io::split(client);
    let mut s = Session { to_server: cw, from_server: BufReader::new(cr).lines() };
    s.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}))
        .await;
    s.next().await;
    s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": level}})).await;
    assert_eq!(s.next().await, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
    s
}

#[tokio::test]
async fn a_lease_issued_in_session_is_said_at_info_with_the_tool_list_change() {
    let env = Env::prepare().await;
    let (_, tok) = env.store.add_agent("leaser", None, None).await.unwrap();
    let mut s = session_at(&env, tok.reveal(), "info").await;
    let args = json!({"credential_handle": "APP_DB", "scope": "read_only", "ttl_seconds": 30});
    s.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "request_lease", "arguments": args}})).await;
    // The answer, and the tool list change whenever it comes (it is sent from another task).
    let (mut answer, mut said, mut listed) = (None, Vec::new(), false);
    while answer.is_none() || !listed || said.len() < 2 {
        let m = s.next().await;
        if m["id"] == 3 {
            answer = Some(m);
        } else if m["method"] == "notifications/message" {
            said.push(m["params"].clone());
        } else if m["method"] == "notifications/tools/list_changed" {
            listed = true;
        }
    }
    let answer = answer.unwrap();
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let lease = answer["result"]["structuredContent"]["lease_handle"].as_str().unwrap();
    let texts: Vec<&str> = said.iter().map(|p| p["data"]["message"].as_str().unwrap()).collect();
    assert!(texts.contains(&"request_lease on APP_DB: lease issued"), "{said:?}");
    assert!(texts.iter().any(|t| t.starts_with("tool list changed")), "{said:?}");
    assert!(said.iter().all(|p| p["level"] == "info"), "{said:?}");
    for p in &said {
        assert!(!p.to_string().contains(lease), "the lease's handle is not in a message: {p}");
    }
}

#[tokio::test]
async fn over_stateless_http_a_request_sets_its_own_level_in_meta() {
    let env = Env::prepare().await;
    let url = serve_mcp(env.broker().await).await;
    let post = |meta: Value| {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "query_db", "_meta": meta,
            "arguments": {"credential_handle": "SECRET_ONLY", "query": "SELECT 1"}}});
        let (url, token) = (url.clone(), env.token.clone());
        async move {
            let r = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let text = r.text().await.unwrap();
            assert_no_secret("MCP HTTP answer", &text);
            // JSON, or server-sent events when notifications came before the answer.
            let messages: Vec<Value> = match serde_json::from_str::<Value>(&text) {
                Ok(v) => vec![v],
                Err(_) => text.lines().filter_map(|l| l.strip_prefix("data:")).filter_map(|d| serde_json::from_str(d.trim()).ok()).collect(),
            };
            messages
        }
    };
    let m = post(json!({"io.modelcontextprotocol/logLevel": "warning"})).await;
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0]["method"], "notifications/message", "{m:?}");
    assert_eq!(m[0]["params"]["level"], "warning");
    assert_eq!(m[0]["params"]["data"]["code"], "handle-unavailable");
    assert_eq!(m[0]["params"]["data"]["request_id"], m[1]["result"]["structuredContent"]["request_id"]);
    assert_eq!(m[1]["id"], 7);
    // Above the refusal's level, or no level: the answer alone.
    for meta in [json!({"io.modelcontextprotocol/logLevel": "error"}), json!({})] {
        let m = post(meta.clone()).await;
        assert_eq!(m.len(), 1, "{meta}: {m:?}");
        assert_eq!(m[0]["id"], 7, "{meta}: {m:?}");
    }
}
