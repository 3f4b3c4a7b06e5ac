//! T30 over MCP: the streamable HTTP endpoint is an OAuth 2.1 protected resource (MCP
//! authorization). The official Python SDK's OAuth client runs the whole flow against a real
//! authorization server (npm oidc-provider: dynamic client registration, PKCE, resource
//! indicators, JWT access tokens) with no token given to it: 401 → protected resource metadata →
//! authorization server metadata → registration → authorize → token → call; then a tool its
//! token has no scope for → 403 `insufficient_scope` → a second authorization → the call runs.
//! Skipped (with `skipped: <reason>`) when python `mcp` or node's oidc-provider is missing,
//! unless `AIRLOCK_REQUIRE_SERVICES=1`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;

fn provider_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth/mcp_as.mjs")
}

fn oidc_provider() -> Result<(), String> {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth/node_modules/oidc-provider");
    if !modules.exists() {
        return Err("oidc-provider not installed (cd tests/oauth && npm ci)".into());
    }
    std::process::Command::new("node").arg("--version").output().map_err(|e| format!("node not runnable: {e}"))?;
    Ok(())
}

/// The authorization server, killed on drop.
struct AuthServer {
    child: std::process::Child,
    issuer: String,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(resource: &str, scopes: &str) -> AuthServer {
    let (child, line) = spawn_announcing("the authorization server", || {
        let mut c = std::process::Command::new("node");
        c.arg(provider_script()).env("RESOURCE", resource).env("SCOPES", scopes).stderr(Stdio::inherit());
        c
    });
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("provider said {line:?}: {e}"));
    AuthServer { child, issuer: v["issuer"].as_str().unwrap().to_owned() }
}

/// airlock with the MCP endpoint and the REST routes on `listener`, with `[issuers.idp]` an MCP
/// authorization server whose person `mcp-user` signs in as agent `bot`.
async fn serve_with_issuer(env: &Env, listener: tokio::net::TcpListener, issuer: &str, resource: &str) -> std::sync::Arc<airlock_server::Broker> {
    let mut text = std::fs::read_to_string(&env.config_path).unwrap();
    text.push_str(&format!(
        r#"
[issuers.idp]
issuer = "{issuer}"
audience = "{resource}"
algorithms = ["RS256"]
mcp = true
subjects = [{{ subject = "mcp-user", agent = "bot" }}]
"#
    ));
    std::fs::write(&env.config_path, text).unwrap();
    let broker = env.broker().await;
    let app = airlock_server::http::router(broker.clone()).merge(airlock_mcp::http_router(broker.clone()));
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await });
    broker
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

async fn post(url: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_mcp_sdk_oauth_flow_registers_authorizes_steps_up_and_calls() {
    if !available(python_mcp()) || !available(oidc_provider()) {
        return;
    }
    let env = Env::prepare().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = format!("{base}{}", airlock_mcp::MCP_PATH);
    // The person agrees to query_db at first; http_request comes with the step-up.
    let provider = start_provider(&url, "airlock:query_db");
    let broker = serve_with_issuer(&env, listener, &provider.issuer, &url).await;

    // The challenge and the metadata, as any client sees them.
    let r = post(&url, None, &initialize()).await;
    assert_eq!(r.status(), 401);
    let challenge = www_authenticate(&r);
    let prm_url = format!("{base}/.well-known/oauth-protected-resource/mcp");
    assert!(challenge.starts_with("Bearer ") && challenge.contains(&format!("resource_metadata=\"{prm_url}\"")), "{challenge}");
    assert!(challenge.contains("scope=\"airlock:query_db airlock:http_request"), "{challenge}");
    for u in [prm_url.clone(), format!("{base}/.well-known/oauth-protected-resource")] {
        let prm: Value = reqwest::get(&u).await.unwrap().json().await.unwrap();
        assert_eq!(prm["resource"], url.as_str(), "{prm}");
        assert_eq!(prm["authorization_servers"], json!([provider.issuer]), "{prm}");
        assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
        assert!(prm["scopes_supported"].as_array().unwrap().contains(&json!("airlock:run_command")));
    }

    // The SDK, with no token.
    let out = tokio::process::Command::new("python3")
        .arg(clients_dir().join("mcp_oauth_client.py"))
        .args([&url, &provider.issuer])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_secret("python client stdout", &stdout);
    assert!(out.status.success(), "client failed:\n{stderr}\n{stdout}");
    let s: Value = serde_json::from_str(stdout.trim()).unwrap();
    // Its first token names query_db only: the list shows that tool alone.
    assert_eq!(s["tools_before"], json!(["query_db"]), "{s}");
    let c = &s["calls"];
    assert_eq!(c["query_ok"]["structuredContent"]["rows"], json!([[1, "widget"], [2, "gadget"]]), "{s}");
    // http_request: 403 insufficient_scope, a second authorization asking for both scopes, then
    // the call ran.
    assert_eq!(c["http_after_step_up"]["isError"], false, "{s}");
    assert_eq!(s["tools_after"], json!(["query_db", "http_request"]), "{s}");
    let auths: Vec<&str> = s["authorizations"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(auths.len(), 2, "{s}");
    let resource_param = format!("resource={}", urlencode(&url));
    for a in &auths {
        assert!(a.contains("code_challenge_method=S256") && a.contains(&resource_param), "{a}");
    }
    assert!(auths[1].contains("airlock%3Ahttp_request") && auths[1].contains("airlock%3Aquery_db"), "{}", auths[1]);
    let tokens: Vec<String> = s["access_tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    assert_eq!(tokens.len(), 2);
    // The registration happened (RFC 7591), once.
    let stats: Value = reqwest::get(format!("{}/_stats", provider.issuer)).await.unwrap().json().await.unwrap();
    assert_eq!(stats["registrations"], 1, "{stats}");

    // The client's token never went upstream: the echo endpoint saw the handle's credential
    // (scrubbed in the answer), not the JWT.
    let echo = c["http_after_step_up"].to_string();
    for t in &tokens {
        assert!(!echo.contains(t.as_str()), "{echo}");
    }
    assert!(echo.contains("REDACTED"), "{echo}");

    // The audit names the issuer and the subject on the agent's calls; the step-up's refusal is
    // there too; no token is in any record.
    let records = env.store.audit_tail(50).await.unwrap();
    let bot: Vec<_> = records.iter().map(|(_, r)| r).filter(|r| r.agent == "bot").collect();
    assert!(!bot.is_empty());
    for r in &bot {
        let id = r.identity.as_ref().expect("identity");
        assert_eq!((id.issuer.as_str(), id.subject.as_str()), ("idp", "mcp-user"));
        let body = serde_json::to_string(r).unwrap();
        assert!(tokens.iter().all(|t| !body.contains(t.as_str())));
    }
    assert!(bot.iter().any(|r| r.tool == "http_request" && r.code.as_deref() == Some("insufficient-scope")));
    assert!(bot.iter().any(|r| r.tool == "http_request" && r.code.is_none()));

    // With the first token (query_db only), by hand: the step-up answer.
    let first = &tokens[0];
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "http_request",
        "arguments": {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"}}});
    let before = env.upstream_requests().len();
    let r = post(&url, Some(first), &call).await;
    assert_eq!(r.status(), 403);
    let h = www_authenticate(&r);
    assert!(h.contains("error=\"insufficient_scope\"") && h.contains("scope=\"airlock:query_db airlock:http_request\""), "{h}");
    assert!(h.contains(&format!("resource_metadata=\"{prm_url}\"")), "{h}");
    assert_eq!(env.upstream_requests().len(), before, "nothing ran");
    // An unknown tool is not a step-up: the MCP answer says unknown-tool.
    let unknown = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope", "arguments": {}}});
    assert_eq!(post(&url, Some(first), &unknown).await.status(), 200);
    // Tokens only from the Authorization header: the query string and a form field are ignored.
    let r = post(&format!("{url}?access_token={first}"), None, &initialize()).await;
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .form(&[("access_token", first.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // REST takes the same JWT.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/invoke"))
        .bearer_auth(&tokens[1])
        .json(&json!({"tool": "query_db", "arguments": {"credential_handle": "APP_DB", "query": "SELECT 1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Every token the SDK got was checked at most once per key set fetch interval: a handful of
    // key set fetches, not one per request.
    assert!(broker.issuer_key_fetches(&provider.issuer) <= 2, "{}", broker.issuer_key_fetches(&provider.issuer));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn without_an_mcp_issuer_there_is_no_metadata_and_the_challenge_is_plain() {
    let env = Env::prepare().await;
    let url = serve_mcp(env.broker().await).await;
    let base = url.trim_end_matches(airlock_mcp::MCP_PATH);
    let r = post(&url, None, &initialize()).await;
    assert_eq!((r.status().as_u16(), www_authenticate(&r)), (401, "Bearer".to_owned()));
    let r = reqwest::get(format!("{base}/.well-known/oauth-protected-resource/mcp")).await.unwrap();
    assert_eq!(r.status(), 404);
}
