//! The official Python MCP SDK (PyPI `mcp`) against airlock, over stdio and streamable HTTP.
//! Skipped (with `skipped: <reason>`) when python `mcp` is missing, unless
//! `AIRLOCK_REQUIRE_SERVICES=1`.

mod common;
use common::*;
use serde_json::Value;
use std::process::Stdio;

async fn run_client(args: &[&str], token: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(clients_dir().join("mcp_client.py"))
        .args(args)
        .env("AIRLOCK_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Everything the client received, and the server's stderr on stdio, must be free of secrets.
    assert_no_secret("python client stdout", &stdout);
    assert_no_secret("python client / server stderr", &stderr);
    assert!(out.status.success(), "client failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary not JSON ({e}): {stdout}\n{stderr}"))
}

fn code(call: &Value) -> &str {
    assert_eq!(call["isError"], true, "{call}");
    call["structuredContent"]["code"].as_str().unwrap_or("<none>")
}

/// The checks shared by both transports, on the client's summary.
fn check_summary(s: &Value, env: &Env) {
    let tools: Vec<&Value> = s["tools"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["query_db", "http_request"]);
    for t in &tools {
        let handles = &t["inputSchema"]["properties"]["credential_handle"]["enum"];
        let expect = if t["name"] == "query_db" { serde_json::json!(["APP_DB"]) } else { serde_json::json!(["API"]) };
        assert_eq!(handles, &expect, "{t}");
        assert!(t["annotations"]["readOnlyHint"].is_boolean());
    }
    let c = &s["calls"];
    assert_eq!(c["query_ok"]["isError"], false, "{}", c["query_ok"]);
    assert_eq!(c["query_ok"]["structuredContent"]["rows"], serde_json::json!([[1, "widget"], [2, "gadget"]]));
    assert_eq!(c["http_ok"]["isError"], false, "{}", c["http_ok"]);
    assert_eq!(c["http_ok"]["structuredContent"]["status"], 200);
    assert_eq!(c["echo"]["isError"], false, "{}", c["echo"]);
    assert_eq!(code(&c["forbidden_handle"]), "handle-unavailable");
    assert_eq!(code(&c["wrong_tool_for_handle"]), "handle-unavailable");
    assert_eq!(code(&c["unknown_handle"]), "handle-unavailable");
    assert_eq!(code(&c["unknown_tool"]), "unknown-tool");
    assert_eq!(code(&c["wrong_type"]), "invalid-arguments");
    // The upstream saw exactly the two allowed requests.
    assert_eq!(env.upstream_requests(), ["/v1/items", "/v1/echo"]);
}

#[tokio::test]
async fn python_sdk_over_stdio_lists_calls_and_sees_no_secret() {
    if !available(python_mcp()) {
        return;
    }
    let env = Env::prepare().await;
    let bin = env!("CARGO_BIN_EXE_airlock-mcp-stdio-test");
    let s = run_client(&["stdio", bin, env.config_path.to_str().unwrap()], &env.token).await;
    check_summary(&s, &env);
}

#[tokio::test]
async fn python_sdk_over_streamable_http_lists_calls_and_sees_no_secret() {
    if !available(python_mcp()) {
        return;
    }
    let env = Env::prepare().await;
    let url = serve_mcp(env.broker().await).await;
    let s = run_client(&["http", &url], &env.token).await;
    check_summary(&s, &env);
}
