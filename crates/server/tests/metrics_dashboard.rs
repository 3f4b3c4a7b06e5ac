//! The metrics an operator puts on a dashboard: every series `docs/grafana/airlock.json` queries
//! is exported by a running broker under the type its query assumes (`_total` of a counter,
//! `_bucket` of a histogram, a bare gauge), and the series that calls should move do move: stage
//! timings, decisions by reason, redactions by handle, errors by component, link events, the live
//! state read from the store and the commit groups (and which of them were written on the calling
//! request's own thread). Labels carry no name an agent chose.

mod common;

use common::{code, Fixture};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// Every PromQL expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana/airlock.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(p["title"].is_string() && p["gridPos"].is_object(), "a panel Grafana can place: {p}");
        for t in p["targets"].as_array().unwrap() {
            out.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// The `airlock_*` names an expression reads.
fn series(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("airlock_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// `# TYPE name kind` lines of an exposition.
fn types(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut p = l.split(' ');
            (p.next().unwrap().to_owned(), p.next().unwrap().to_owned())
        })
        .collect()
}

/// The value of the first sample line that starts with `prefix`.
fn sample(exposition: &str, prefix: &str) -> Option<f64> {
    exposition.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_series_is_exported_and_calls_move_them() {
    // A receiver that is not there: the export's metrics exist (and lag), calls go on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = Fixture::start_with(move |t| {
        format!(
            "{t}\n[audit.export]\nsink = \"syslog\"\naddress = \"127.0.0.1:{closed}\"\nformat = \"ocsf\"\n\
             [shares]\nbase_url = \"https://airlock.example\"\n[shares.channels.box]\ntype = \"outbox\"\npath = \"outbox.jsonl\"\n\
             [shares.recipients]\n\"bob\" = \"box\"\n"
        )
        .replace(
            "  { handle = \"API\", tools = [\"http_request\"] },\n]",
            "  { handle = \"API\", tools = [\"http_request\"] },\n  { handle = \"SECRET_ONLY\", tools = [\"share_secret\"] },\n]",
        )
    })
    .await;
    // An allowed call whose upstream echoes the credential (redacted), a refusal, a link.
    let (st, v) = f.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = f.invoke("query_db", json!({"credential_handle": "NOT_A_HANDLE_OF_MINE", "query": "SELECT 1"})).await;
    assert_eq!(code(&v), "handle-unavailable");
    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "SECRET_ONLY", "recipient": "bob"})).await;
    assert_eq!(st, 200, "{v}");

    let m = f.client.get(format!("{}/metrics", f.base)).send().await.unwrap().text().await.unwrap();
    let types = types(&m);
    let kind_of = |name: &str| types.iter().find(|(n, _)| n == name).map(|(_, k)| k.as_str());

    // Every series the dashboard reads exists, with the type its suffix says.
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 12, "{exprs:?}");
    let mut checked = 0;
    for e in &exprs {
        for s in series(e) {
            let (base, want) = if let Some(b) = s.strip_suffix("_bucket") {
                (b, "histogram")
            } else if let Some(b) = s.strip_suffix("_total") {
                (b, "counter")
            } else {
                (s.as_str(), "gauge")
            };
            assert_eq!(kind_of(base), Some(want), "{s} (in {e}) is not exported as a {want}:\n{m}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");

    // What the calls moved.
    for stage in ["authenticate", "check", "prepare", "approval", "resolve", "execute", "scrub", "audit"] {
        let n = sample(&m, &format!("airlock_call_stage_duration_seconds_count{{stage=\"{stage}\"}}"));
        assert!(n.is_some_and(|n| n >= 1.0), "stage {stage} timed:\n{m}");
    }
    assert!(sample(&m, "airlock_decisions_total{decision=\"deny\",reason=\"handle-unavailable\"}").is_some_and(|n| n >= 1.0), "{m}");
    assert!(sample(&m, "airlock_decisions_total{decision=\"allow\",reason=\"allowed\"}").is_some_and(|n| n >= 2.0), "{m}");
    assert!(sample(&m, "airlock_redactions_total{handle=\"API\"}").is_some_and(|n| n >= 1.0), "{m}");
    assert!(sample(&m, "airlock_share_events_total{event=\"created\"}") == Some(1.0), "{m}");
    assert_eq!(sample(&m, "airlock_shares_live "), Some(1.0), "{m}");
    assert!(sample(&m, "airlock_store_commit_groups_total ").is_some_and(|n| n >= 1.0), "{m}");
    let (groups, writes) = (sample(&m, "airlock_store_commit_groups_total ").unwrap(), sample(&m, "airlock_store_commit_writes_total ").unwrap());
    assert!(writes >= groups, "a group holds at least one write: {groups} {writes}");
    // One call at a time, each alone on its lane: with `sync = full` (the default) its group is
    // written on its own thread, fsync included (all but the first, which opens the writer's
    // connection off the worker). Requests that were not counted on their lane would not be.
    let on_worker = sample(&m, "airlock_store_commit_groups_on_worker_total ").expect("exported");
    assert!(on_worker >= 1.0 && on_worker <= groups, "groups on the calling thread: {on_worker} of {groups}\n{m}");
    assert!(!m.contains("NOT_A_HANDLE_OF_MINE"), "a name the agent made up is no label");

    // The link opened: counted once, no longer live.
    let (id, proof) = {
        let text = std::fs::read_to_string(f.dir.path().join("outbox.jsonl")).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let link = airlock_share::Link::parse(line["link"].as_str().unwrap()).unwrap();
        let d = airlock_share::derive(&link.key, &link.id, None);
        (link.id.clone(), d.proof().as_str().to_owned())
    };
    let r = f.client.post(format!("{}/v1/shares/{id}/consume", f.base)).json(&json!({"proof": proof})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = f.client.get(format!("{}/metrics", f.base)).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&m, "airlock_share_events_total{event=\"opened\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "airlock_shares_live "), Some(0.0), "{m}");
    f.stop().await;
}
