//! Live reload in process, against a real server on loopback with a real SQLite database and a
//! real HTTP upstream: calls racing reloads each see one configuration or the other, every
//! answer matches its audit record, an approval granted under the old policies does not run a
//! call under the new ones, and a refused reload changes nothing.

mod common;

use airlock_core::config::Config;
use airlock_server::broker::reload::ReloadError;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

const BOT_API_GRANT: &str = "  { handle = \"API\", tools = [\"http_request\"] },\n";

/// The fixture's configuration file, and a copy without bot's grant on API (same directory, so
/// relative paths mean the same).
fn two_files(f: &Fixture) -> (PathBuf, PathBuf) {
    let with = f.dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(&with).unwrap();
    assert!(text.contains(BOT_API_GRANT), "the fixture grants API to bot");
    let without = f.dir.path().join("without-api.toml");
    std::fs::write(&without, text.replacen(BOT_API_GRANT, "", 1)).unwrap();
    (with, without)
}

async fn audit_by_request(f: &Fixture) -> HashMap<String, Vec<Value>> {
    let mut by: HashMap<String, Vec<Value>> = HashMap::new();
    for r in f.store.audit_records(0, 1_000_000).await.unwrap() {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        by.entry(body["request_id"].as_str().unwrap().to_owned()).or_default().push(body);
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_racing_reloads_see_one_configuration_or_the_other_and_match_their_audit() {
    let f = Fixture::start().await;
    let (with, without) = two_files(&f);
    let f = std::sync::Arc::new(f);
    let reloader = {
        let f = f.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let path = if i % 2 == 0 { &without } else { &with };
                let r = f.broker.reload(Config::load(path), "test").await;
                assert!(r.is_ok(), "reload {i}: {:?}", r.err());
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
        })
    };
    let mut callers = Vec::new();
    for _ in 0..8 {
        let f = f.clone();
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..40 {
                let (s, v) = f.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})).await;
                seen.push((s, v));
            }
            seen
        }));
    }
    reloader.await.unwrap();
    let mut answers = Vec::new();
    for c in callers {
        answers.extend(c.await.unwrap());
    }
    let (mut ok, mut refused) = (0, 0);
    for (s, v) in &answers {
        match (s, v["ok"].as_bool()) {
            (200, Some(true)) => {
                ok += 1;
                // The credential went out and came back scrubbed, whichever file was in force.
                assert!(!v.to_string().contains(API_TOKEN), "{v}");
            }
            (403, Some(false)) if code(v) == "handle-unavailable" => refused += 1,
            _ => panic!("neither configuration gives this answer: {s} {v}"),
        }
    }
    assert_eq!(ok + refused, 320);
    // The last reload put the grant back.
    let (s, v) = f.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 200, "{v}");
    // Each answer has exactly one final record, whose decision is the answer's.
    let by = audit_by_request(&f).await;
    for (s, v) in &answers {
        let id = v["request_id"].as_str().unwrap();
        let finals: Vec<&Value> = by.get(id).map(|r| r.iter().filter(|r| r["outcome"] != "started").collect()).unwrap_or_default();
        assert_eq!(finals.len(), 1, "{id}: {finals:?}");
        let want = if *s == 200 { "allow" } else { "deny" };
        assert_eq!(finals[0]["decision"], want, "{id}: {} for {v}", finals[0]);
    }
    let reloads = by.values().flatten().filter(|r| r["tool"] == "config_reloaded").count();
    assert_eq!(reloads, 40);
    eprintln!("racing reloads: {ok} calls allowed, {refused} refused");
}

#[tokio::test]
async fn an_approval_granted_under_the_old_policies_does_not_run_the_call_after_a_reload() {
    let f = Fixture::start_with(|t| format!("{t}\n[handles.RW_DB.approval]\nwrites = true\n")).await;
    let (_, alice) = f.store.add_approver("alice").await.unwrap();
    let update = json!({"credential_handle": "RW_DB", "query": "UPDATE orders SET total = ? WHERE id = ?", "params": [7, 1]});
    let (s, v) = f.invoke("query_db", update.clone()).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    let id = v["error"]["approval"]["id"].as_str().unwrap().to_owned();
    let r = f.client.post(format!("{}/v1/approvals/{id}/approve", f.base)).bearer_auth(alice.reveal()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A reload that changes what decides calls: a new handle granted to bot.
    let path = f.dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let more = text.replacen("[agents.bot]\ngrants = [\n", "[agents.bot]\ngrants = [\n  { handle = \"SECRET_ONLY\", tools = [\"share_secret\"] },\n", 1);
    assert_ne!(more, text);
    std::fs::write(&path, more).unwrap();
    let before = f.broker.policy_version();
    let w = f.broker.reload(Config::load(&path), "test").await.unwrap();
    assert!(w.policy_changed && w.policy_version != before, "{w:?}");
    assert_eq!(w.agents_changed, ["bot"]);
    // The approved call is held again, under a new approval; nothing ran.
    let (s, v) = f.invoke("query_db", update).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_ne!(v["error"]["approval"]["id"], json!(id), "{v}");
    let (_, v) = f.invoke("query_db", json!({"credential_handle": "APP_DB", "query": "SELECT total FROM orders WHERE id = 1"})).await;
    assert_eq!(v["result"]["rows"][0][0], 100, "{v}");
}

#[tokio::test]
async fn a_refused_reload_changes_nothing_and_lists_every_problem() {
    let f = Fixture::start().await;
    let path = f.dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let before = f.broker.policy_version();
    // A section read once at start, and a policy file that does not compile, in one file.
    let bad_policy = f.dir.path().join("bad.cedar");
    std::fs::write(&bad_policy, "permit(principal, action, resource) when { nonsense };").unwrap();
    let both = format!("[policy]\nfiles = [\"{}\"]\n{}", bad_policy.display(), text.replace("rate_per_minute = 100000", "rate_per_minute = 5"))
        .replace("data_dir = \"data\"", "data_dir = \"data\"\nsync = \"normal\"");
    let bad = f.dir.path().join("bad.toml");
    std::fs::write(&bad, &both).unwrap();
    let parsed = Config::load(&bad);
    match f.broker.reload(parsed, "test").await {
        Err(ReloadError::Refused { problems, restart_only }) => {
            assert_eq!(restart_only, ["store"], "{problems:?}");
            assert!(problems.iter().any(|p| p.starts_with("policy:")), "{problems:?}");
            assert_eq!(problems.len(), 2, "{problems:?}");
        }
        Err(ReloadError::Config(e)) => panic!("the file should load: {e}"),
        other => panic!("not refused: {other:?}"),
    }
    // A file that does not load.
    std::fs::write(&bad, "[handles.X]\nkind = 1\n[agents.y]\ngrants = 3\n").unwrap();
    let e = f.broker.reload(Config::load(&bad), "test").await.unwrap_err();
    assert!(matches!(&e, ReloadError::Config(c) if c.problems().len() >= 2), "{e}");
    // Nothing changed: same version, bot still calls API.
    assert_eq!(f.broker.policy_version(), before);
    let (s, v) = f.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(s, 200, "{v}");
    let by = audit_by_request(&f).await;
    let refused: Vec<&Value> = by.values().flatten().filter(|r| r["tool"] == "config_reload_refused").collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let codes: std::collections::BTreeSet<&str> = refused.iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["config-invalid", "reload-refused"].into_iter().collect());
}
