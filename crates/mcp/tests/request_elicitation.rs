//! `request_secret` over MCP with the official Python SDK (stdio): a recipient reached by
//! URL-mode elicitation gets the intake link as `elicitation/create` (`mode: "url"`) at the
//! client, never in the tool's result; the test follows the URL (open, seal, submit, as the page
//! does) and the handle lands. A client that declares no URL-mode elicitation is refused that
//! recipient. Skipped (with `skipped: <reason>`) when python `mcp` is missing, unless
//! `AIRLOCK_REQUIRE_SERVICES=1`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;

const VALUE: &str = "sk_live_canaryElicit_4Hq8Zr2";

async fn run(env: &Env, args: &Value, mode: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(clients_dir().join("mcp_request_client.py"))
        .args([env!("CARGO_BIN_EXE_airlock-mcp-stdio-test"), env.config_path.to_str().unwrap(), &args.to_string(), mode])
        .env("AIRLOCK_TOKEN", &env.token)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_no_secret("python client stdout", &stdout);
    assert_no_secret("python client / server stderr", &stderr);
    assert!(!stderr.contains(VALUE));
    assert!(out.status.success(), "client failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary not JSON ({e}): {stdout}\n{stderr}"))
}

/// `bot` may ask for keys bound to 127.0.0.1 and use them at once; the recipient `me` is the
/// person at the client.
async fn prepare() -> Env {
    let env = Env::prepare().await;
    let cedar = env.dir.path().join("requests.cedar");
    std::fs::write(
        &cedar,
        "permit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"request_secret\", resource) when { resource.requested && resource.hosts.contains(\"127.0.0.1\") };\n\
         permit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"http_request\", resource) when { resource.requested && resource.hosts.contains(\"127.0.0.1\") };\n",
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&env.config_path).unwrap();
    text.push_str(&format!(
        "\n[policy]\nfiles = [\"{}\"]\n[shares.channels.here]\ntype = \"elicitation\"\n[shares.recipients]\nme = \"here\"\n",
        cedar.display()
    ));
    std::fs::write(&env.config_path, text).unwrap();
    env
}

fn args(env: &Env, handle: &str) -> Value {
    json!({
        "handle": handle, "description": "the items API key", "kind": "http", "recipient": "me",
        "destination": format!("http://127.0.0.1:{}/v1/", env.upstream.port()), "format": {"prefix": "sk_live_"},
    })
}

#[tokio::test]
async fn the_intake_link_reaches_the_person_at_the_client_by_url_elicitation_never_the_result() {
    if !available(python_mcp()) {
        return;
    }
    let env = prepare().await;
    let s = run(&env, &args(&env, "ITEMS_KEY"), "elicit").await;
    assert!(s["protocol"].as_str().is_some_and(|p| p < "2026-07-28"), "{}", s["protocol"]);
    assert!(s["tools"].as_array().unwrap().contains(&json!("request_secret")), "{s}");
    let result = &s["result"];
    assert_eq!(result["isError"], false, "{result}");
    let id = result["structuredContent"]["request_id"].as_str().unwrap().to_owned();
    assert_eq!(s["status"]["structuredContent"]["status"], "pending", "{s}");

    let e = s["elicitations"].as_array().unwrap();
    assert_eq!(e.len(), 1, "{s}");
    assert_eq!(e[0]["mode"], "url", "{s}");
    assert_eq!(e[0]["elicitationId"], id);
    let url = e[0]["url"].as_str().unwrap();
    assert!(url.contains(&format!("/r/{id}#")), "{url}");
    let proof = url.split('#').nth(1).unwrap();
    assert!(!result.to_string().contains(proof), "the link is not in the tool's result");
    assert!(!s["status"].to_string().contains(proof));

    // Follow the URL as the page does: open with the proof, seal to the key, submit.
    let broker = env.broker().await;
    let opened = broker.open_request(&id, proof, "127.0.0.1").await.unwrap();
    let public = airlock_share::decode_b64(opened["public_key"].as_str().unwrap()).unwrap();
    let sealed = airlock_share::intake::seal(&public, VALUE.as_bytes(), opened["context"].as_str().unwrap().as_bytes(), 8192).unwrap();
    let landed = broker.submit_request(&id, proof, &sealed.enc, &sealed.ciphertext, "127.0.0.1").await.unwrap();
    assert_eq!(landed["status"], "approved", "{landed}");
    let caller = broker.authenticate(Some(&env.token)).await.unwrap();
    let inv = broker.invoke(&caller, "http_request", json!({"credential_handle": "ITEMS_KEY", "method": "GET", "path_or_url": "/v1/echo"})).await;
    let v = inv.result.unwrap();
    assert!(!v.to_string().contains(VALUE), "the echoed key comes back scrubbed: {v}");
    let audit = serde_json::to_string(&env.store.audit_tail(100).await.unwrap().iter().map(|(_, r)| serde_json::to_value(r).unwrap()).collect::<Vec<_>>()).unwrap();
    assert!(!audit.contains(VALUE) && !audit.contains(proof));
}

/// A client that declared no URL-mode elicitation, and one on protocol 2026-07-28 (where a
/// server sends the client no requests; airlock does not answer with an input-required result
/// yet): that recipient is refused and nothing is stored.
#[tokio::test]
async fn a_client_that_cannot_be_sent_the_link_is_refused_that_recipient() {
    if !available(python_mcp()) {
        return;
    }
    let env = prepare().await;
    for (how, handle) in [("plain", "NOT_HERE"), ("modern", "NOT_MODERN")] {
        let s = run(&env, &args(&env, handle), how).await;
        let modern = s["protocol"].as_str().is_some_and(|p| p >= "2026-07-28");
        assert_eq!(modern, how == "modern", "{how} negotiated {}", s["protocol"]);
        assert_eq!(s["result"]["isError"], true, "{how}: {s}");
        assert_eq!(s["result"]["structuredContent"]["code"], "recipient-not-allowed", "{how}: {s}");
        assert!(s["elicitations"].as_array().unwrap().is_empty());
        assert!(env.store.request_for_handle(handle).await.unwrap().is_none(), "{how}: nothing was stored");
    }
}
