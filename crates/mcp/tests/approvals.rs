//! Approvals over MCP (stdio, in process): a held call is a tool error carrying the code and the
//! approval page; a client that declares URL-mode elicitation is sent to the page, and once the
//! person is done the call is tried again and runs if approved.

mod common;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
}

async fn start(env: &Env, token: &str, capabilities: Value) -> (Session, std::sync::Arc<airlock_server::Broker>) {
    let broker = env.broker().await;
    let (client, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    tokio::spawn(airlock_mcp::serve_io(broker.clone(), token.to_owned(), sr, sw));
    let (cr, cw) = tokio::io::split(client);
    let mut s = Session { to_server: cw, from_server: BufReader::new(cr).lines() };
    s.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "0"}}}))
        .await;
    let init = s.next().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "airlock", "{init}");
    s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    (s, broker)
}

async fn prepare() -> (Env, String) {
    let env = Env::prepare().await;
    let mut text = std::fs::read_to_string(&env.config_path).unwrap();
    text.push_str("\n[handles.RW_DB.approval]\nwrites = true\n");
    std::fs::write(&env.config_path, text).unwrap();
    let (_, t) = env.store.add_approver("alice").await.unwrap();
    (env, t.reveal().to_owned())
}

fn update(id: i64) -> Value {
    json!({"name": "query_db", "arguments": {"credential_handle": "RW_DB", "query": "UPDATE orders SET total = 1 WHERE id = ?", "params": [id]}})
}

#[tokio::test]
async fn a_held_call_is_a_tool_error_with_the_approval_page_when_the_client_cannot_elicit() {
    let (env, _) = prepare().await;
    let (mut s, _) = start(&env, &env.other_token, json!({})).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": update(1)})).await;
    let r = s.next().await;
    assert_eq!(r["id"], 2, "no elicitation is sent to a client that did not declare it: {r}");
    let sc = &r["result"]["structuredContent"];
    assert_eq!(r["result"]["isError"], true);
    assert_eq!(sc["code"], "approval-required", "{r}");
    let id = sc["approval"]["id"].as_str().unwrap();
    assert!(sc["approval"]["url"].as_str().unwrap().ends_with(&format!("/approve/{id}")));
}

#[tokio::test]
async fn url_mode_elicitation_sends_the_person_to_the_page_then_the_approved_call_runs() {
    let (env, alice) = prepare().await;
    let (mut s, broker) = start(&env, &env.other_token, json!({"elicitation": {"url": {}}})).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": update(1)})).await;
    let req = s.next().await;
    assert_eq!(req["method"], "elicitation/create", "{req}");
    assert_eq!(req["params"]["mode"], "url", "{req}");
    let id = req["params"]["elicitationId"].as_str().unwrap().to_owned();
    assert_eq!(req["params"]["url"], broker.approval_url(&id));
    // The person approves on the page (here: through the broker, as the page's endpoint does).
    let approver = broker.authenticate_approver(Some(&alice)).await.unwrap();
    broker.decide_approval(&approver, &id, true).await.unwrap();
    s.send(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"action": "accept"}})).await;
    let r = s.next().await;
    assert_eq!(r["id"], 2, "{r}");
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(r["result"]["structuredContent"]["rows_affected"], 1, "{r}");

    // Declined: the call stays held, nothing runs.
    s.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": update(2)})).await;
    let req = s.next().await;
    assert_eq!(req["method"], "elicitation/create", "{req}");
    s.send(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"action": "decline"}})).await;
    let r = s.next().await;
    assert_eq!(r["id"], 3, "{r}");
    assert_eq!(r["result"]["structuredContent"]["code"], "approval-required", "{r}");
    let tail = env.store.audit_tail(50).await.unwrap();
    let ran: Vec<_> = tail.iter().filter(|(_, r)| r.tool == "query_db" && r.outcome == "ok").collect();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].1.approval.as_deref(), Some(id.as_str()));
}
