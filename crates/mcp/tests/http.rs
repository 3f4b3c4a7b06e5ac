//! Streamable HTTP MCP with plain HTTP requests (reqwest): authentication, T19, bad input.

mod common;
use common::*;
use serde_json::{json, Value};

const PROTOCOL: &str = "2025-06-18";

struct Rpc {
    url: String,
    client: reqwest::Client,
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Rpc {
    fn new(url: String) -> Rpc {
        Rpc { url, client: reqwest::Client::new() }
    }

    async fn post_raw(&self, token: Option<&str>, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut r = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_no_secret("MCP HTTP answer", &body);
        Answer { status, body }
    }

    async fn call(&self, token: &str, method: &str, params: Value) -> Answer {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        self.post_raw(Some(token), &body, &[]).await
    }

    async fn tool(&self, token: &str, name: &str, args: Value) -> Value {
        let a = self.call(token, "tools/call", json!({"name": name, "arguments": args})).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()
    }
}

fn initialize_params() -> Value {
    json!({"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "reqwest-test", "version": "0"}})
}

async fn start(extra_server: &str) -> (Env, Rpc) {
    let env = Env::prepare_with(extra_server).await;
    let rpc = Rpc::new(serve_mcp(env.broker().await).await);
    (env, rpc)
}

fn tools_by_name(list: &Value) -> std::collections::BTreeMap<String, Value> {
    list["result"]["tools"].as_array().unwrap().iter().map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone())).collect()
}

fn tool_error_code(r: &Value) -> &str {
    assert_eq!(r["result"]["isError"], true, "{r}");
    r["result"]["structuredContent"]["code"].as_str().unwrap()
}

#[tokio::test]
async fn initialize_names_airlock_and_offers_tools() {
    let (env, rpc) = start("").await;
    let a = rpc.call(&env.token, "initialize", initialize_params()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["result"]["serverInfo"]["name"], "airlock");
    assert!(v["result"]["capabilities"]["tools"].is_object());
}

#[tokio::test]
async fn two_agents_see_different_handle_enums_and_truthful_annotations() {
    let (env, rpc) = start("").await;
    let bot = rpc.call(&env.token, "tools/list", json!({})).await.json();
    let other = rpc.call(&env.other_token, "tools/list", json!({})).await.json();
    // Per-agent lists must not be cached for anyone else.
    assert_eq!(bot["result"]["cacheScope"], "private");
    let bot = tools_by_name(&bot);
    let other = tools_by_name(&other);
    assert_eq!(bot.keys().collect::<Vec<_>>(), ["http_request", "query_db"]);
    assert_eq!(other.keys().collect::<Vec<_>>(), ["query_db"]);
    let handles = |t: &Value| t["inputSchema"]["properties"]["credential_handle"]["enum"].clone();
    assert_eq!(handles(&bot["query_db"]), json!(["APP_DB"]));
    assert_eq!(handles(&bot["http_request"]), json!(["API"]));
    assert_eq!(handles(&other["query_db"]), json!(["RW_DB"]));
    // Read-only handle: read-only, not destructive; read-write handle: destructive.
    assert_eq!(bot["query_db"]["annotations"], json!({"readOnlyHint": true, "destructiveHint": false, "openWorldHint": false}));
    assert_eq!(other["query_db"]["annotations"], json!({"readOnlyHint": false, "destructiveHint": true, "openWorldHint": false}));
    assert_eq!(bot["http_request"]["annotations"]["openWorldHint"], true);
    assert_eq!(bot["http_request"]["annotations"]["readOnlyHint"], true, "GET-only handle");
    assert!(bot["query_db"]["description"].as_str().unwrap().contains("APP_DB: orders database"));
}

#[tokio::test]
async fn query_db_answers_structured_content_with_a_text_rendering() {
    let (env, rpc) = start("").await;
    let r = rpc
        .tool(&env.token, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT id, item FROM orders ORDER BY id"}))
        .await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    let s = &r["result"]["structuredContent"];
    assert_eq!(s["rows"], json!([[1, "widget"], [2, "gadget"]]));
    assert_eq!(s["row_count"], 2);
    let text: Value = serde_json::from_str(r["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, s);
}

#[tokio::test]
async fn t18_an_endpoint_echoing_the_credential_is_scrubbed_over_mcp() {
    let (env, rpc) = start("").await;
    let r = rpc.tool(&env.token, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    // The upstream did receive the credential; the agent did not (post_raw sweeps every answer).
    assert_eq!(env.upstream_requests(), ["/v1/echo"]);
    assert!(!r.to_string().contains(API_TOKEN));
}

#[tokio::test]
async fn t13_forbidden_unknown_and_wrong_kind_handles_give_the_same_tool_error() {
    let (env, rpc) = start("").await;
    let mut seen = Vec::new();
    for h in ["SECRET_ONLY", "NOPE", "RW_DB", "API", "app_db"] {
        let r = rpc.tool(&env.token, "query_db", json!({"credential_handle": h, "query": "SELECT 1"})).await;
        assert_eq!(tool_error_code(&r), "handle-unavailable", "{h}");
        let mut s = r["result"]["structuredContent"].clone();
        assert!(s["request_id"].as_str().is_some_and(|id| !id.is_empty()));
        s.as_object_mut().unwrap().remove("request_id");
        seen.push(s);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

#[tokio::test]
async fn unknown_tool_and_wrong_argument_types_are_tool_errors_and_run_nothing() {
    let (env, rpc) = start("").await;
    let r = rpc.tool(&env.token, "drop_everything", json!({"credential_handle": "APP_DB"})).await;
    assert_eq!(tool_error_code(&r), "unknown-tool");
    let r = rpc.tool(&env.token, "query_db", json!({"credential_handle": "APP_DB", "query": 5})).await;
    assert_eq!(tool_error_code(&r), "invalid-arguments");
    let r = rpc.tool(&env.token, "http_request", json!({"credential_handle": "API", "method": ["GET"], "path_or_url": "/v1/items"})).await;
    assert_eq!(tool_error_code(&r), "invalid-arguments");
    let r = rpc.tool(&env.token, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items", "x": 1})).await;
    assert_eq!(tool_error_code(&r), "invalid-arguments");
    // Arguments that are not an object at all are a protocol error from the SDK.
    let a = rpc.call(&env.token, "tools/call", json!({"name": "query_db", "arguments": "SELECT 1"})).await;
    assert!(a.json()["error"]["code"].is_i64(), "{}", a.body);
    assert!(env.upstream_requests().is_empty());
}

#[tokio::test]
async fn malformed_json_rpc_gets_protocol_errors() {
    let (env, rpc) = start("").await;
    let a = rpc.post_raw(Some(&env.token), "{not json", &[]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["code"], -32700);
    assert_eq!(a.json()["id"], Value::Null);
    for body in ["[1,2]", "\"tools/list\"", "{\"id\":1,\"method\":\"tools/list\"}", "null"] {
        let a = rpc.post_raw(Some(&env.token), body, &[]).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.json()["error"]["code"], -32600, "{body}");
    }
    let a = rpc.call(&env.token, "no/such_method", json!({})).await;
    assert_eq!(a.json()["error"]["code"], -32601, "{}", a.body);
    // The parse error quotes nothing of the body.
    let a = rpc.post_raw(Some(&env.token), "{\"jsonrpc\": \"2.0\", canaryBody_x", &[]).await;
    assert!(!a.body.contains("canaryBody"));
    // The server still answers afterwards.
    let a = rpc.call(&env.token, "tools/list", json!({})).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn missing_or_bad_token_is_401_and_nothing_runs() {
    let (env, rpc) = start("").await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "http_request", "arguments": {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"}}})
    .to_string();
    for token in [None, Some("not-a-token"), Some(""), Some(&env.token[..env.token.len() - 1])] {
        let a = rpc.post_raw(token, &call, &[]).await;
        assert_eq!(a.status, 401, "{token:?}");
        let v = a.json();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "unauthenticated");
    }
    let r = reqwest::Client::new().post(&rpc.url).body(call).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert!(env.upstream_requests().is_empty());
}

#[tokio::test]
async fn a_token_revoked_mid_session_is_refused_at_the_next_request() {
    let (env, rpc) = start("").await;
    let args = json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"});
    assert_eq!(rpc.call(&env.token, "initialize", initialize_params()).await.status, 200);
    let r = rpc.tool(&env.token, "http_request", args.clone()).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(env.store.revoke_agent("bot").await.unwrap(), 1);
    // Revoked by another process: the broker drops what it keeps of identities within this.
    tokio::time::sleep(airlock_server::broker::IDENTITY_RECHECK).await;
    let a = rpc.call(&env.token, "tools/call", json!({"name": "http_request", "arguments": args})).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["code"], "unauthenticated");
    assert_eq!(rpc.call(&env.token, "tools/list", json!({})).await.status, 401);
    assert_eq!(env.upstream_requests().len(), 1, "nothing ran after revocation");
    // The other agent is unaffected.
    assert_eq!(rpc.call(&env.other_token, "tools/list", json!({})).await.status, 200);
}

#[tokio::test]
async fn t19_foreign_origin_is_refused() {
    let (env, rpc) = start(r#"allowed_origins = ["https://app.example"]"#).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "http_request", "arguments": {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"}}})
    .to_string();
    for origin in ["https://attacker.test", "http://localhost:1234", "https://app.example.attacker.test", "null", "http://app.example"] {
        let a = rpc.post_raw(Some(&env.token), &call, &[("origin", origin)]).await;
        assert_eq!(a.status, 403, "{origin}");
        assert_eq!(a.json(), json!({"ok": false, "error": {"code": "bad-request", "message": "origin not allowed"}}));
    }
    // Also refused before authentication: no token needed to be told no, and nothing ran.
    let a = rpc.post_raw(None, &call, &[("origin", "https://attacker.test")]).await;
    assert_eq!(a.status, 403);
    assert!(env.upstream_requests().is_empty());
    let a = rpc.post_raw(Some(&env.token), &call, &[("origin", "https://app.example")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["result"]["isError"], false);
}

#[tokio::test]
async fn t19_rebound_host_is_refused() {
    let (env, rpc) = start(r#"allowed_hosts = ["mcp.internal:8443"]"#).await;
    let port = url_port(&rpc.url);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for host in [
        format!("attacker.test:{port}"),
        "attacker.test".to_owned(),
        format!("localhost.attacker.test:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "mcp.internal".to_owned(),
        "mcp.internal:443".to_owned(),
    ] {
        let a = rpc.post_raw(Some(&env.token), &list, &[("host", &host)]).await;
        assert_eq!(a.status, 403, "{host}");
        assert_eq!(a.json(), json!({"ok": false, "error": {"code": "bad-request", "message": "host not allowed"}}));
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "mcp.internal:8443".to_owned()] {
        let a = rpc.post_raw(Some(&env.token), &list, &[("host", &host)]).await;
        assert_eq!(a.status, 200, "{host}: {}", a.body);
    }
}

fn url_port(url: &str) -> u16 {
    reqwest::Url::parse(url).unwrap().port().unwrap()
}

/// One `tools/call` as a test sends it: the JSON-RPC id, the tool, its arguments (any JSON: the
/// SDK refuses a non-object), and the protocol version header, if any.
#[derive(Debug, Clone)]
struct Generated {
    id: Value,
    tool: String,
    arguments: Option<Value>,
    version: Option<&'static str>,
    /// An empty `_meta` in the params.
    empty_meta: bool,
}

fn generated_call() -> impl proptest::strategy::Strategy<Value = Generated> {
    use proptest::prelude::*;
    let id = prop_oneof![any::<i64>().prop_map(Value::from), "[a-zA-Z0-9 é_-]{0,12}".prop_map(Value::from)];
    let tool = prop_oneof![
        Just("query_db".to_owned()),
        Just("http_request".to_owned()),
        Just("request_lease".to_owned()),
        Just("create_share".to_owned()),
        "[a-z_/]{0,14}",
    ];
    let handle = prop_oneof![Just("APP_DB"), Just("RW_DB"), Just("API"), Just("SECRET_ONLY"), Just("NOPE"), Just("app_db")];
    let text = prop_oneof![
        Just(json!("SELECT id, item FROM orders ORDER BY id")),
        Just(json!("SELECT total FROM orders WHERE id = 2")),
        Just(json!("DELETE FROM orders")),
        Just(json!("/v1/items")),
        Just(json!("/v1/echo")),
        Just(json!("http://169.254.169.254/")),
        "[ -~]{0,20}".prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        Just(json!(["GET"])),
    ];
    let method = prop_oneof![Just(json!("GET")), Just(json!("POST")), Just(json!(null)), "[A-Z]{0,6}".prop_map(Value::from)];
    let object = (handle, text.clone(), text, method, any::<bool>()).prop_map(|(h, query, path, method, extra)| {
        let mut a = json!({"credential_handle": h, "query": query, "path_or_url": path, "method": method});
        if extra {
            a["unexpected"] = json!(1);
        }
        a
    });
    let arguments = prop_oneof![
        8 => object.prop_map(Some),
        1 => Just(None),
        1 => Just(Some(json!("SELECT 1"))),
        1 => Just(Some(json!(null))),
    ];
    // Calls that run: the agent's granted handles, well-formed.
    let runs = prop_oneof![
        prop_oneof![Just("SELECT id, item FROM orders ORDER BY id"), Just("SELECT total FROM orders WHERE id = 2"), Just("SELECT 1")]
            .prop_map(|q| ("query_db".to_owned(), Some(json!({"credential_handle": "APP_DB", "query": q})))),
        prop_oneof![Just("/v1/items"), Just("/v1/echo"), Just("items?x=1")]
            .prop_map(|p| ("http_request".to_owned(), Some(json!({"credential_handle": "API", "method": "GET", "path_or_url": p})))),
    ];
    let call = prop_oneof![1 => runs, 3 => (tool, arguments)];
    let version = prop_oneof![Just(None), Just(Some("2024-11-05")), Just(Some("2025-03-26")), Just(Some(PROTOCOL)), Just(Some("2025-11-25"))];
    (id, call, version, any::<bool>())
        .prop_map(|(id, (tool, arguments), version, empty_meta)| Generated { id, tool, arguments, version, empty_meta })
}

/// Status, content type and body of `call` sent with `accept`, every request id in the body
/// replaced by the same placeholder (each call gets its own).
async fn answer_of(client: &reqwest::Client, url: &str, token: &str, call: &Generated, accept: &str) -> (u16, String, String) {
    let mut params = json!({"name": call.tool});
    if let Some(a) = &call.arguments {
        params["arguments"] = a.clone();
    }
    if call.empty_meta {
        params["_meta"] = json!({});
    }
    let body = json!({"jsonrpc": "2.0", "id": call.id, "method": "tools/call", "params": params}).to_string();
    let mut r = client.post(url).bearer_auth(token).header("content-type", "application/json").header("accept", accept).body(body);
    if let Some(v) = call.version {
        r = r.header("mcp-protocol-version", v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let mut body = resp.text().await.unwrap();
    assert_no_secret("MCP HTTP answer", &body);
    if let Ok(v) = serde_json::from_str::<Value>(&body) {
        if let Some(id) = v["result"]["structuredContent"]["request_id"].as_str() {
            body = body.replace(id, "REQUEST-ID");
        }
        // The upstream's `date` header has a resolution of one second: two answers a moment
        // apart may straddle one.
        if let Some(date) = v["result"]["structuredContent"]["headers"]["date"].as_str() {
            body = body.replace(date, "HTTP-DATE");
        }
    }
    (status, content_type, body)
}

/// The one-message `tools/call` is answered without the SDK's per-request session; this holds
/// that answer to the SDK's own. Every generated call goes out twice, once as sent and once with
/// an `Accept` the SDK reads the same way (explicit weights of 1) but that sends the request
/// through the SDK, and the two answers (status, content type, body) must be the same bytes,
/// request ids aside. Refusals, bad arguments, protocol errors and results alike.
#[test]
fn a_tools_call_answered_without_the_sdk_session_is_the_sdks_answer() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (env, rpc) = rt.block_on(start(""));
    let client = reqwest::Client::new();
    let mut runner = TestRunner::new(Config { cases: 96, failure_persistence: None, ..Config::default() });
    let kinds = std::sync::Mutex::new(std::collections::BTreeSet::new());
    runner
        .run(&generated_call(), |call| {
            let (direct, sdk) = rt.block_on(async {
                let direct = answer_of(&client, &rpc.url, &env.token, &call, "application/json, text/event-stream").await;
                let sdk = answer_of(&client, &rpc.url, &env.token, &call, "application/json;q=1, text/event-stream;q=1").await;
                (direct, sdk)
            });
            proptest::prop_assert_eq!(&direct, &sdk, "{:?}", call);
            let v: Value = serde_json::from_str(&direct.2).unwrap_or(Value::Null);
            kinds.lock().unwrap().insert(match (&v["result"]["isError"], &v["error"]) {
                (Value::Bool(false), _) => "result".to_owned(),
                (Value::Bool(true), _) => format!("tool error {}", v["result"]["structuredContent"]["code"]),
                (_, e) if !e.is_null() => "protocol error".to_owned(),
                _ => format!("HTTP {}", direct.0),
            });
            Ok(())
        })
        .unwrap();
    // The comparison is worth something only if the calls reached every kind of answer.
    let kinds = kinds.into_inner().unwrap();
    for kind in ["result", "protocol error", "tool error \"handle-unavailable\"", "tool error \"invalid-arguments\"", "tool error \"unknown-tool\""] {
        assert!(kinds.contains(kind), "no generated call got a {kind}: {kinds:?}");
    }
}
