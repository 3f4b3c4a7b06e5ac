//! The MCP Inspector CLI (npm `@modelcontextprotocol/inspector`, `--cli`) against the stdio
//! server. Skipped (with `skipped: <reason>`) when it is not installed (`npm ci` in
//! tests/clients), unless `AIRLOCK_REQUIRE_SERVICES=1`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;

/// Runs the inspector CLI on the stdio server with `method_args`; the token goes through the
/// environment (the inspector passes its environment to the server it starts), never argv.
async fn inspect(env: &Env, token: &str, method_args: &[&str]) -> (bool, String) {
    let cli = inspector().unwrap();
    let bin = env!("CARGO_BIN_EXE_airlock-mcp-stdio-test");
    let out = tokio::process::Command::new(cli)
        .arg("--cli")
        .arg(bin)
        .arg(&env.config_path)
        .args(method_args)
        .env("AIRLOCK_TOKEN", token)
        .current_dir(clients_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_secret("inspector stdout", &stdout);
    assert_no_secret("inspector stderr", &stderr);
    if !out.status.success() {
        eprintln!("inspector failed:\n{stderr}\n{stdout}");
    }
    (out.status.success(), stdout)
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn inspector_cli_lists_the_agents_tools() {
    if !available(inspector().map(|_| ())) {
        return;
    }
    let env = Env::prepare().await;
    let (ok, out) = inspect(&env, &env.token, &["--method", "tools/list"]).await;
    assert!(ok);
    let v = json_of(&out);
    let tools = v["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["query_db", "http_request"]);
    assert_eq!(tools[0]["inputSchema"]["properties"]["credential_handle"]["enum"], json!(["APP_DB"]));
    let (ok, out) = inspect(&env, &env.other_token, &["--method", "tools/list"]).await;
    assert!(ok);
    let v = json_of(&out);
    assert_eq!(v["tools"][0]["inputSchema"]["properties"]["credential_handle"]["enum"], json!(["RW_DB"]));
}

#[tokio::test]
async fn inspector_cli_calls_query_db_and_gets_a_coded_refusal() {
    if !available(inspector().map(|_| ())) {
        return;
    }
    let env = Env::prepare().await;
    let call = |handle: &'static str| {
        [
            "--method",
            "tools/call",
            "--tool-name",
            "query_db",
            "--tool-arg",
            if handle == "APP_DB" { "credential_handle=APP_DB" } else { "credential_handle=SECRET_ONLY" },
            "query=SELECT item FROM orders ORDER BY id",
        ]
    };
    let (ok, out) = inspect(&env, &env.token, &call("APP_DB")).await;
    assert!(ok);
    let v = json_of(&out);
    assert_eq!(v["isError"], false, "{v}");
    assert_eq!(v["structuredContent"]["rows"], json!([["widget"], ["gadget"]]));
    let (_, out) = inspect(&env, &env.token, &call("SECRET_ONLY")).await;
    let v = json_of(&out);
    assert_eq!(v["isError"], true, "{v}");
    assert_eq!(v["structuredContent"]["code"], "handle-unavailable");
}

#[tokio::test]
async fn inspector_cli_with_a_bad_token_gets_no_session() {
    if !available(inspector().map(|_| ())) {
        return;
    }
    let env = Env::prepare().await;
    let (ok, _) = inspect(&env, "not-a-token", &["--method", "tools/list"]).await;
    assert!(!ok, "the server refuses to serve an unauthenticated agent");
}
