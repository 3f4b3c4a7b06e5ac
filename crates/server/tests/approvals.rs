//! Human approval bound to the exact call, end to end against a real server on loopback with a
//! real SQLite database and a real HTTP upstream: held writes, the binding (row, agent, policy
//! version, expiry), single use under concurrency, deny, waiting calls, the webhook, approver
//! authentication, and the linked audit records.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const UPDATE: &str = "UPDATE orders SET total = ? WHERE id = ?";

fn upstream_port(text: &str) -> String {
    let i = text.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len();
    text[i..].chars().take_while(|c| c.is_ascii_digit()).collect()
}

/// The common fixture plus approval rules, a second agent with the same grants, and an approver.
async fn start(expires: u64) -> (Fixture, String, String) {
    let f = Fixture::start_with(|t| {
        let port = upstream_port(&t);
        format!(
            r#"{t}
[agents.bot2]
grants = [{{ handle = "RW_DB", tools = ["query_db"] }}]

[handles.RW_DB.approval]
writes = true
expires_in_seconds = {expires}

[handles.API.approval]
writes = true
wait_seconds = 5
webhook = "http://127.0.0.1:{port}/hook"
"#
        )
    })
    .await;
    let (_, t) = f.store.add_agent("bot2", None, None).await.unwrap();
    let (_, a) = f.store.add_approver("alice").await.unwrap();
    (f, t.reveal().to_owned(), a.reveal().to_owned())
}

async fn total(f: &Fixture, id: i64) -> i64 {
    let (s, v) = f.invoke("query_db", json!({"credential_handle": "APP_DB", "query": "SELECT total FROM orders WHERE id = ?", "params": [id]})).await;
    assert_eq!(s, 200, "{v}");
    v["result"]["rows"][0][0].as_i64().unwrap()
}

fn approval_id(v: &Value) -> String {
    v["error"]["approval"]["id"].as_str().unwrap_or_else(|| panic!("no approval in {v}")).to_owned()
}

async fn call(f: &Fixture, token: &str, query: &str, params: Value) -> (u16, Value) {
    f.invoke_as(token, "query_db", json!({"credential_handle": "RW_DB", "query": query, "params": params})).await
}

async fn decide(f: &Fixture, token: &str, id: &str, verb: &str) -> (u16, Value) {
    let r = f.client.post(format!("{}/v1/approvals/{id}/{verb}", f.base)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn show(f: &Fixture, token: &str, id: &str) -> (u16, Value) {
    let r = f.client.get(format!("{}/v1/approvals/{id}", f.base)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_write_is_held_then_runs_once_with_exactly_the_approved_arguments() {
    let (f, bot2, alice) = start(600).await;
    let (s, v) = call(&f, &f.token, UPDATE, json!([111, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    let id = approval_id(&v);
    assert_eq!(id.len(), 32);
    assert_eq!(v["error"]["approval"]["url"], format!("{}/approve/{id}", f.broker.share_base_url()));
    assert_eq!(v["error"]["approval"]["status"], "pending");
    assert_eq!(total(&f, 1).await, 100, "nothing ran while held");
    // Asking again while pending names the same approval; a read is not held.
    let (_, v) = call(&f, &f.token, UPDATE, json!([111, 1])).await;
    assert_eq!(approval_id(&v), id);
    let (s, _) = call(&f, &f.token, "SELECT id FROM orders", json!([])).await;
    assert_eq!(s, 200);

    // The approver sees the exact call.
    let (s, v) = show(&f, &alice, &id).await;
    assert_eq!(s, 200, "{v}");
    let a = &v["approval"];
    assert_eq!((a["agent"].as_str(), a["tool"].as_str(), a["handle"].as_str()), (Some("bot"), Some("query_db"), Some("RW_DB")));
    assert_eq!(a["arguments"], json!({"query": UPDATE, "params": [111, 1]}));
    assert_eq!(a["status"], "pending");
    assert_eq!(a["reason"], "this call changes data");
    let (s, v) = decide(&f, &alice, &id, "approve").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval"]["status"], "approved");
    assert_eq!(v["approval"]["approver"], "alice");

    // Replayed for another row, or by another agent with the same grants: a new approval each.
    let (s, v) = call(&f, &f.token, UPDATE, json!([111, 2])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_ne!(approval_id(&v), id);
    let (s, v) = call(&f, &bot2, UPDATE, json!([111, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_ne!(approval_id(&v), id);
    // Another spelling of the same query is another call.
    let (_, v) = call(&f, &f.token, "UPDATE orders SET total = ?  WHERE id = ?", json!([111, 1])).await;
    assert_eq!(code(&v), "approval-required");
    assert_eq!((total(&f, 1).await, total(&f, 2).await), (100, 250));

    // The approved call runs, once; the same call again needs a new approval.
    let (s, v) = call(&f, &f.token, UPDATE, json!([111, 1])).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["rows_affected"], 1);
    assert_eq!(total(&f, 1).await, 111);
    let (s, v) = call(&f, &f.token, UPDATE, json!([111, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_ne!(approval_id(&v), id);
    let (_, v) = show(&f, &alice, &id).await;
    assert_eq!(v["approval"]["status"], "used");
    let (s, v) = decide(&f, &alice, &id, "approve").await;
    assert_eq!((s, code(&v)), (409, "conflict"), "a used approval cannot be decided again");

    // The audit links request, decision and execution by the approval id, and verifies.
    let tail = f.store.audit_tail(200).await.unwrap();
    let linked: Vec<_> = tail.iter().map(|(_, r)| r).filter(|r| r.approval.as_deref() == Some(id.as_str())).collect();
    let req = linked.iter().find(|r| r.code.as_deref() == Some("approval-required")).expect("request record");
    assert_eq!((req.agent.as_str(), req.tool.as_str()), ("bot", "query_db"));
    let dec = linked.iter().find(|r| r.tool == "approve_call").expect("decision record");
    assert_eq!(dec.agent, "approver:alice");
    assert_eq!(dec.arguments["for_agent"], "bot");
    assert!(linked.iter().any(|r| r.outcome == "started"), "intent record");
    let exec = linked.iter().find(|r| r.tool == "query_db" && r.outcome == "ok").expect("execution record");
    assert_eq!(exec.arguments["params"], json!([111, 1]));
    let pk = airlock_store::audit::AuditKey::load_public(&f.broker.config().store.data_dir).unwrap();
    assert!(f.store.verify_audit(&pk).await.unwrap().ok());
}

#[tokio::test]
async fn concurrent_retries_of_an_approved_call_run_it_exactly_once() {
    let (f, _, alice) = start(600).await;
    let q = "UPDATE orders SET total = total + 1 WHERE id = ?";
    let (_, v) = call(&f, &f.token, q, json!([2])).await;
    let id = approval_id(&v);
    assert_eq!(decide(&f, &alice, &id, "approve").await.0, 200);
    let f = std::sync::Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move { call(&f, &f.token, q, json!([2])).await }));
    }
    let mut ok = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s {
            200 => ok += 1,
            403 => assert_eq!(code(&v), "approval-required", "{v}"),
            _ => panic!("{s} {v}"),
        }
    }
    assert_eq!(ok, 1, "one approval, one execution");
    assert_eq!(total(&f, 2).await, 251);
}

#[tokio::test]
async fn a_denied_call_never_runs_and_its_retries_are_told_so() {
    let (f, _, alice) = start(600).await;
    let (_, v) = call(&f, &f.token, UPDATE, json!([5, 1])).await;
    let id = approval_id(&v);
    let (s, v) = decide(&f, &alice, &id, "deny").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval"]["status"], "denied");
    let (s, v) = call(&f, &f.token, UPDATE, json!([5, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-denied"), "{v}");
    assert_eq!(approval_id(&v), id);
    assert_eq!(v["error"]["approval"]["status"], "denied");
    let (s, v) = decide(&f, &alice, &id, "approve").await;
    assert_eq!((s, code(&v)), (409, "conflict"), "a denial is final: {v}");
    assert_eq!(total(&f, 1).await, 100);
    let tail = f.store.audit_tail(50).await.unwrap();
    assert!(tail.iter().any(|(_, r)| r.tool == "deny_call" && r.approval.as_deref() == Some(id.as_str())));
    // Unknown and malformed ids.
    assert_eq!(decide(&f, &alice, &"0".repeat(32), "approve").await.0, 404);
    assert_eq!(show(&f, &alice, "../../etc").await.0, 404);
}

/// A decision's record is in the audit before the decision lands: the broker killed between the
/// two once left an approval approved with no record of who approved it (found by
/// tests/crash_under_load.rs). A trigger on the store refuses any decision whose record is not
/// there yet.
#[tokio::test]
async fn a_decision_is_audited_before_it_lands() {
    use sqlx::Connection;
    let (f, _, alice) = start(600).await;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", f.dir.path().join("data/store.db").display())).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER decided_after_its_record BEFORE UPDATE OF status ON approvals \
         WHEN OLD.status = 'pending' AND NEW.status IN ('approved', 'denied') AND NOT EXISTS (SELECT 1 FROM audit \
           WHERE json_extract(body, '$.approval') = NEW.id AND json_extract(body, '$.tool') IN ('approve_call', 'deny_call')) \
         BEGIN SELECT RAISE(ABORT, 'a decision without its audit record'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    // The trigger bites: a decision written with no record first is refused.
    let (_, v) = call(&f, &f.token, UPDATE, json!([9, 1])).await;
    let e = sqlx::query("UPDATE approvals SET status = 'approved' WHERE id = ?").bind(approval_id(&v)).execute(&mut db).await.unwrap_err();
    assert!(e.to_string().contains("a decision without its audit record"), "{e}");
    for (verb, params, status) in [("approve", json!([7, 1]), "approved"), ("deny", json!([8, 1]), "denied")] {
        let (_, v) = call(&f, &f.token, UPDATE, params.clone()).await;
        let id = approval_id(&v);
        let (s, v) = decide(&f, &alice, &id, verb).await;
        assert_eq!(s, 200, "{verb}: {v}");
        assert_eq!(v["approval"]["status"], status);
        // The intent and the result of the decision, under one request id.
        let tail = f.store.audit_tail(50).await.unwrap();
        let recs: Vec<_> = tail.iter().map(|(_, r)| r).filter(|r| r.tool == format!("{verb}_call") && r.approval.as_deref() == Some(id.as_str())).collect();
        assert_eq!(recs.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(), ["started", "ok"], "{verb}");
        assert_eq!(recs[0].request_id, recs[1].request_id);
        // Decided already: refused, with no record.
        let (s, v) = decide(&f, &alice, &id, verb).await;
        assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
        assert_eq!(f.store.audit_tail(50).await.unwrap().len(), tail.len());
    }
    assert_eq!(total(&f, 1).await, 100);
    let (s, v) = call(&f, &f.token, UPDATE, json!([7, 1])).await;
    assert_eq!(s, 200, "the approved call runs: {v}");
    assert_eq!(total(&f, 1).await, 7);
}

#[tokio::test]
async fn an_expired_approval_is_refused_and_the_expiry_is_bound() {
    let (f, _, alice) = start(2).await;
    let (_, v) = call(&f, &f.token, UPDATE, json!([7, 1])).await;
    let id = approval_id(&v);
    assert_eq!(decide(&f, &alice, &id, "approve").await.0, 200);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (s, v) = call(&f, &f.token, UPDATE, json!([7, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    let fresh = approval_id(&v);
    assert_ne!(fresh, id);
    assert_eq!(show(&f, &alice, &id).await.1["approval"]["status"], "expired");
    // A pending approval past its expiry cannot be approved either.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (s, v) = decide(&f, &alice, &fresh, "approve").await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    assert_eq!(total(&f, 1).await, 100);

    // Pushing an approval's expiry in the store breaks its binding: it is not used.
    let (_, v) = call(&f, &f.token, UPDATE, json!([8, 1])).await;
    let id = approval_id(&v);
    assert_eq!(decide(&f, &alice, &id, "approve").await.0, 200);
    sqlx::query("UPDATE approvals SET expires_at = expires_at + 3600000 WHERE id = ?")
        .bind(&id)
        .execute(f.store.pool().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (s, v) = call(&f, &f.token, UPDATE, json!([8, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    assert_eq!(total(&f, 1).await, 100);
    assert_eq!(show(&f, &alice, &id).await.1["approval"]["status"], "approved", "left unused");
}

#[tokio::test]
async fn an_agent_token_is_refused_on_every_approval_endpoint() {
    let (f, bot2, alice) = start(600).await;
    let (_, v) = call(&f, &f.token, UPDATE, json!([9, 1])).await;
    let id = approval_id(&v);
    for token in [f.token.as_str(), bot2.as_str(), "", "apr_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        for (m, path) in [
            ("GET", format!("/v1/approvals/{id}")),
            ("GET", "/v1/approvals".to_owned()),
            ("POST", format!("/v1/approvals/{id}/approve")),
            ("POST", format!("/v1/approvals/{id}/deny")),
        ] {
            let r = f.client.request(m.parse().unwrap(), format!("{}{path}", f.base)).bearer_auth(token).send().await.unwrap();
            let s = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert_eq!((s, code(&v)), (401, "unauthenticated"), "{m} {path} with {token:.8}: {v}");
            assert!(v.get("approval").is_none());
        }
    }
    assert_eq!(show(&f, &alice, &id).await.1["approval"]["status"], "pending", "nothing was decided");
    // Nor does an approver token work as an agent.
    let (s, v) = call(&f, &alice, UPDATE, json!([9, 1])).await;
    assert_eq!((s, code(&v)), (401, "unauthenticated"), "{v}");
    // A revoked approver is refused.
    f.store.revoke_approver("alice").await.unwrap();
    assert_eq!(decide(&f, &alice, &id, "approve").await.0, 401);
    let tail = f.store.audit_tail(50).await.unwrap();
    assert!(tail.iter().any(|(_, r)| r.tool == "approve_call" && r.code.as_deref() == Some("unauthenticated")), "refusals are audited");
    assert_eq!(total(&f, 1).await, 100);
}

#[tokio::test]
async fn a_policy_change_invalidates_pending_and_granted_approvals() {
    let (f, _, alice) = start(600).await;
    let (_, v) = call(&f, &f.token, UPDATE, json!([42, 1])).await;
    let granted = approval_id(&v);
    let (_, v) = call(&f, &f.token, UPDATE, json!([43, 2])).await;
    let pending = approval_id(&v);
    assert_eq!(decide(&f, &alice, &granted, "approve").await.0, 200);

    // The same store under a changed configuration (one more grant for another agent).
    let cfg_path = f.dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap()
        .replace("[agents.bot2]\ngrants = [", "[agents.bot2]\ngrants = [{ handle = \"APP_DB\", tools = [\"query_db\"] }, ");
    std::fs::write(&cfg_path, text).unwrap();
    let cfg = airlock_core::config::Config::load(&cfg_path).unwrap();
    let b2 = airlock_server::Broker::open(cfg).await.unwrap();
    assert_ne!(b2.policy_version(), f.broker.policy_version());
    let caller = b2.authenticate(Some(&f.token)).await.unwrap();
    let args = json!({"credential_handle": "RW_DB", "query": UPDATE, "params": [42, 1]});
    let inv = b2.invoke(&caller, "query_db", args).await;
    let e = inv.result.as_ref().unwrap_err();
    assert_eq!(e.code.as_str(), "approval-required");
    assert_ne!(inv.approval.as_ref().unwrap()["id"], granted.as_str(), "the old grant does not count");
    let approver = b2.authenticate_approver(Some(&alice)).await.unwrap();
    let e = b2.decide_approval(&approver, &pending, true).await.unwrap_err();
    assert_eq!(e.code.as_str(), "conflict", "a request made under the old policy cannot be approved");
    assert_eq!(b2.approval_view(&granted).await.unwrap()["current_policy"], false);
    assert_eq!((total(&f, 1).await, total(&f, 2).await), (100, 250));
}

#[tokio::test]
async fn a_waiting_call_runs_when_approved_and_the_webhook_names_it_without_arguments() {
    let (f, _, alice) = start(600).await;
    let f = std::sync::Arc::new(f);
    let marker = "bodyMarker_Q81x";
    let f2 = f.clone();
    let started = std::time::Instant::now();
    let held = tokio::spawn(async move {
        f2.invoke("http_request", json!({"credential_handle": "API", "method": "POST", "path_or_url": "/v1/items", "body": marker})).await
    });
    // The webhook tells the channel which approval to decide.
    let hook = loop {
        if let Some(s) = f.upstream_requests().into_iter().find(|s| s.path == "/hook") {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(4), "no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let notice: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!((notice["agent"].as_str(), notice["tool"].as_str(), notice["handle"].as_str()), (Some("bot"), Some("http_request"), Some("API")));
    assert!(!hook.body.contains(marker), "the notice carries no arguments");
    assert!(!hook.headers.iter().any(|(_, v)| v.contains(API_TOKEN)));
    let id = notice["approval_id"].as_str().unwrap().to_owned();
    assert!(notice["url"].as_str().unwrap().ends_with(&format!("/approve/{id}")));
    assert!(!f.upstream_requests().iter().any(|s| s.path.starts_with("/v1/items")), "held, not sent");
    assert_eq!(decide(&f, &alice, &id, "approve").await.0, 200);
    let (s, v) = held.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the decision");
    let sent: Vec<_> = f.upstream_requests().into_iter().filter(|s| s.path.starts_with("/v1/items")).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, marker);

    // A denial wakes the waiting call too; a GET is not held.
    let f2 = f.clone();
    let held = tokio::spawn(async move {
        f2.invoke("http_request", json!({"credential_handle": "API", "method": "POST", "path_or_url": "/v1/items", "body": "second"})).await
    });
    let id = loop {
        let hooks: Vec<_> = f.upstream_requests().into_iter().filter(|s| s.path == "/hook").collect();
        if hooks.len() == 2 {
            break serde_json::from_str::<Value>(&hooks[1].body).unwrap()["approval_id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(decide(&f, &alice, &id, "deny").await.0, 200);
    let (s, v) = held.await.unwrap();
    assert_eq!((s, code(&v)), (403, "approval-denied"), "{v}");
    let (s, _) = f.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"})).await;
    assert_eq!(s, 200);
    assert_eq!(f.upstream_requests().iter().filter(|s| s.method == "POST" && s.path.starts_with("/v1/items")).count(), 1);
}

#[tokio::test]
async fn t29_identical_concurrent_first_calls_create_exactly_one_pending_approval() {
    let (f, _, alice) = start(600).await;
    let q = "UPDATE orders SET total = total + 7 WHERE id = ?";
    let f = std::sync::Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move { call(&f, &f.token, q, json!([1])).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
        ids.insert(approval_id(&v));
    }
    assert_eq!(ids.len(), 1, "every call joined the same approval: {ids:?}");
    let pending = f.broker.pending_approvals().await.unwrap();
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    // The one approval, once approved, runs the call once.
    let id = ids.into_iter().next().unwrap();
    assert_eq!(decide(&f, &alice, &id, "approve").await.0, 200);
    assert_eq!(call(&f, &f.token, q, json!([1])).await.0, 200);
    assert_eq!(total(&f, 1).await, 107);
}

#[tokio::test]
async fn t16_the_approval_page_shows_invisible_and_bidirectional_characters_escaped() {
    let (f, _bot2, alice) = start(600).await;
    // An argument that reads "1 exe.txt" on screen but holds a right-to-left override, a
    // zero-width space and an isolate.
    let tricky = "txt.\u{202e}exe\u{200b}\u{2066}1\u{2069}\u{feff}";
    let (s, v) = call(&f, &f.token, UPDATE, json!([tricky, 1])).await;
    assert_eq!((s, code(&v)), (403, "approval-required"), "{v}");
    let id = approval_id(&v);
    let (s, v) = show(&f, &alice, &id).await;
    assert_eq!(s, 200, "{v}");
    let a = &v["approval"];
    assert_eq!(a["arguments"]["params"][0], tricky, "the raw value is unchanged");
    let shown = a["shown"]["arguments"].as_str().unwrap();
    assert!(shown.contains(r"txt.\u{202e}exe\u{200b}\u{2066}1\u{2069}\u{feff}"), "{shown}");
    for c in ['\u{202e}', '\u{200b}', '\u{2066}', '\u{2069}', '\u{feff}'] {
        assert!(!shown.contains(c), "{:x} shown raw", c as u32);
    }
    assert_eq!(a["shown"]["agent"], "bot");
    // The page displays `shown`, never the raw arguments when it is there.
    let page = f.client.get(format!("{}/approve/{id}", f.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r"shown as \u{…}"), "{page}");
    let js = f.client.get(format!("{}/web/approve.js", f.base)).send().await.unwrap().text().await.unwrap();
    assert!(js.contains("s.arguments ?? JSON.stringify(a.arguments"), "{js}");
    // Deciding answers with the same escaped view.
    let (s, v) = decide(&f, &alice, &id, "deny").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["approval"]["shown"]["arguments"].as_str().unwrap().contains(r"\u{202e}"));
}

#[tokio::test]
async fn t26_a_write_inside_a_select_is_held_like_any_write() {
    // The approval rule reads the statement's write analysis, which covers the whole tree: a
    // data-modifying CTE or a locking clause under a SELECT is held; a plain SELECT is not.
    let (f, _, _) = start(600).await;
    for q in [
        "WITH u AS (UPDATE orders SET total = 5 WHERE id = 1 RETURNING id) SELECT id FROM u",
        "SELECT id FROM orders WHERE id IN (SELECT id FROM orders FOR UPDATE)",
    ] {
        let (s, v) = call(&f, &f.token, q, json!([])).await;
        assert_eq!((s, code(&v)), (403, "approval-required"), "{q}: {v}");
    }
    assert_eq!(total(&f, 1).await, 100, "nothing ran while held");
    let (s, v) = call(&f, &f.token, "SELECT id FROM orders WHERE id IN (SELECT id FROM orders)", json!([])).await;
    assert_eq!(s, 200, "{v}");
}
