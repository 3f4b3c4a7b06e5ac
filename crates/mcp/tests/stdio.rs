//! The stdio transport in process (an in-memory pipe): the token is checked at start and again on
//! every request, so a revoked agent is refused mid-session.

mod common;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Session {
    to_server: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    from_server: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    next_id: i64,
}

impl Session {
    async fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.to_server.write_all(line.as_bytes()).await.unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        loop {
            let line = self.from_server.next_line().await.unwrap().expect("server closed");
            assert_no_secret("stdio answer", &line);
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }
}

async fn start(env: &Env, token: &str) -> (Session, tokio::task::JoinHandle<Result<(), airlock_mcp::StdioError>>) {
    let broker = env.broker().await;
    let (client, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    let task = tokio::spawn(airlock_mcp::serve_io(broker, token.to_owned(), sr, sw));
    let (cr, cw) = tokio::io::split(client);
    let mut s = Session { to_server: cw, from_server: BufReader::new(cr).lines(), next_id: 0 };
    let init = s
        .request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
        )
        .await;
    assert_eq!(init["result"]["serverInfo"]["name"], "airlock", "{init}");
    s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    (s, task)
}

#[tokio::test]
async fn a_bad_token_is_refused_before_any_session() {
    let env = Env::prepare().await;
    let (_c, server) = tokio::io::duplex(1024);
    let (r, w) = tokio::io::split(server);
    let err = airlock_mcp::serve_io(env.broker().await, "not-a-token".into(), r, w).await.unwrap_err();
    assert!(matches!(err, airlock_mcp::StdioError::Auth(_)), "{err}");
    assert!(err.to_string().contains("unauthenticated"));
}

#[tokio::test]
async fn a_token_revoked_mid_session_is_refused_and_nothing_runs() {
    let env = Env::prepare().await;
    let (mut s, task) = start(&env, &env.token).await;
    let args = json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"});
    let r = s.request("tools/call", json!({"name": "http_request", "arguments": args})).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    env.store.revoke_agent("bot").await.unwrap();
    // Revoked by another process: the broker drops what it keeps of identities within this.
    tokio::time::sleep(airlock_server::broker::IDENTITY_RECHECK).await;
    let r = s.request("tools/call", json!({"name": "http_request", "arguments": args})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(r["result"]["structuredContent"]["code"], "unauthenticated");
    let r = s.request("tools/list", json!({})).await;
    assert_eq!(r["error"]["data"]["code"], "unauthenticated", "{r}");
    assert_eq!(env.upstream_requests().len(), 1);
    // Closing stdin ends the session cleanly.
    drop(s);
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn bad_input_over_stdio_gets_protocol_errors_and_the_session_goes_on() {
    let env = Env::prepare().await;
    let (mut s, _task) = start(&env, &env.token).await;
    let r = s.request("no/such_method", json!({})).await;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = s.request("tools/call", json!({"name": "query_db", "arguments": {"credential_handle": "APP_DB", "query": ["x"]}})).await;
    assert_eq!(r["result"]["structuredContent"]["code"], "invalid-arguments", "{r}");
    let r = s.request("tools/call", json!({"name": "nope", "arguments": {}})).await;
    assert_eq!(r["result"]["structuredContent"]["code"], "unknown-tool", "{r}");
    // A line that is not JSON-RPC does not end the session.
    s.to_server.write_all(b"{not json\n[1,2]\n").await.unwrap();
    let r = s.request("tools/list", json!({})).await;
    assert_eq!(r["result"]["tools"].as_array().unwrap().len(), 2, "{r}");
}

#[tokio::test]
async fn a_lease_issued_in_session_sends_tools_list_changed_and_lists_the_lease() {
    let env = Env::prepare().await;
    let (_, tok) = env.store.add_agent("leaser", None, None).await.unwrap();
    let (mut s, _task) = start(&env, tok.reveal()).await;
    s.next_id += 1;
    let id = s.next_id;
    let args = json!({"credential_handle": "APP_DB", "scope": "read_only", "ttl_seconds": 30});
    s.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "request_lease", "arguments": args}})).await;
    let (mut answer, mut notified) = (None, false);
    while answer.is_none() || !notified {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), s.from_server.next_line())
            .await
            .expect("no answer or notification")
            .unwrap()
            .expect("server closed");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == id {
            answer = Some(v);
        } else if v["method"] == "notifications/tools/list_changed" {
            notified = true;
        }
    }
    let answer = answer.unwrap();
    let lease = answer["result"]["structuredContent"]["lease_handle"].as_str().expect("a lease handle").to_owned();
    let r = s.request("tools/list", json!({})).await;
    let query = r["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "query_db").expect("query_db listed").clone();
    assert_eq!(query["inputSchema"]["properties"]["credential_handle"]["enum"], json!([lease]));
}
