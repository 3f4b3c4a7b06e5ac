//! Requests for a secret over HTTP: `request_secret` → the link in the recipient's outbox → the
//! intake API with the value encrypted to the request's key (HPKE) → the handle it lands as,
//! granted by policy or by an approver; and every bad input the issue names.

mod common;

use airlock_share::intake;
use airlock_store::requests::value_seal_name;
use common::{code, Fixture, API_TOKEN};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The person's value in these tests: distinctive, so a sweep finds it anywhere.
const CANARY: &str = "sk_live_canaryReq_9Tz4Qw7Lm2Xp";

/// Cedar for the tests: `bot` may ask for keys bound to 127.0.0.1 and plain secrets; with
/// `auto`, a key it was given is usable at once (else an approver decides).
fn policy(auto: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "@id(\"bot-may-ask\")\npermit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"request_secret\", resource)\n\
         when { resource.requested && (resource.kind == \"generic\" || resource.hosts.contains(\"127.0.0.1\")) };\n",
    );
    if auto {
        text.push_str(
            "@id(\"bot-uses-what-it-asked-for\")\npermit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"http_request\", resource)\n\
             when { resource.requested && resource.hosts.contains(\"127.0.0.1\") };\n",
        );
    }
    let path = dir.path().join("requests.cedar");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn with_requests(policy: PathBuf, max_open: u32) -> impl FnOnce(String) -> String {
    with_limits(policy, max_open, 100_000)
}

fn with_limits(policy: PathBuf, max_open: u32, per_minute: u32) -> impl FnOnce(String) -> String {
    move |t: String| {
        format!(
            "{t}\n[policy]\nfiles = [\"{}\"]\n[requests]\nmax_open_per_agent = {max_open}\ncreate_per_minute = {per_minute}\nmax_value_bytes = 256\nfailed_per_minute = 1000\n\
             [shares]\nbase_url = \"https://airlock.example\"\n\
             [shares.channels.box]\ntype = \"outbox\"\npath = \"outbox.jsonl\"\n\
             [shares.recipients]\n\"alice@example.com\" = \"box\"\n",
            policy.display()
        )
    }
}

/// The HTTP key request the tests make, for `handle`, bound to the fixture's upstream.
fn http_request_args(f: &Fixture, handle: &str) -> Value {
    json!({
        "handle": handle,
        "description": "the test API's key",
        "kind": "http",
        "recipient": "alice@example.com",
        "destination": format!("http://127.0.0.1:{}/v1/", f.upstream.port()),
        "methods": ["GET"],
        "format": {"prefix": "sk_live_", "min_length": 20},
    })
}

/// The link delivered for `request_id`: (id, proof).
fn delivered(f: &Fixture, request_id: &str) -> (String, String) {
    let text = std::fs::read_to_string(f.dir.path().join("outbox.jsonl")).unwrap();
    let line: Value = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["request_id"] == request_id).expect("delivered");
    assert_eq!(line["purpose"], "request");
    let link = line["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("https://airlock.example/r/{request_id}#")), "{link}");
    let proof = link.split('#').nth(1).unwrap().to_owned();
    (request_id.to_owned(), proof)
}

async fn post(f: &Fixture, path: &str, body: Value) -> (u16, Value) {
    let r = f.client.post(format!("{}{path}", f.base)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The page's open: (status, body).
async fn open(f: &Fixture, id: &str, proof: &str) -> (u16, Value) {
    post(f, &format!("/v1/requests/{id}/open"), json!({"proof": proof})).await
}

/// Seals `value` as the page does, to the key and context `open` gave.
fn seal(opened: &Value, value: &[u8], context: Option<&str>) -> intake::Sealed {
    let public = airlock_share::decode_b64(opened["public_key"].as_str().unwrap()).unwrap();
    let ctx = context.unwrap_or(opened["context"].as_str().unwrap());
    intake::seal(&public, value, ctx.as_bytes(), 256).unwrap()
}

async fn submit(f: &Fixture, id: &str, proof: &str, s: &intake::Sealed) -> (u16, Value) {
    post(f, &format!("/v1/requests/{id}/submit"), json!({"proof": proof, "enc": s.enc_b64(), "ciphertext": s.ciphertext_b64()})).await
}

async fn ask(f: &Fixture, handle: &str) -> String {
    let (st, v) = f.invoke("request_secret", http_request_args(f, handle)).await;
    assert_eq!(st, 200, "{v}");
    let r = &v["result"];
    let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["expires_at", "handle", "recipient", "request_id", "status"], "the agent gets no link: {r}");
    r["request_id"].as_str().unwrap().to_owned()
}

async fn status(f: &Fixture, token: &str, id: &str) -> (u16, Value) {
    f.invoke_as(token, "request_status", json!({"request_id": id})).await
}

async fn audit_text(f: &Fixture) -> String {
    let tail = f.store.audit_tail(500).await.unwrap();
    serde_json::to_string(&tail.iter().map(|(_, r)| serde_json::to_value(r).unwrap()).collect::<Vec<_>>()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_round_trip_lands_as_a_handle_the_agent_uses_but_never_reads() {
    common::capture_logs();
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 10)).await;
    let tools: Value = f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(&f.token).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"request_secret") && names.contains(&"request_status"), "{names:?}");
    let other: Value = f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(&f.other_token).send().await.unwrap().json().await.unwrap();
    assert!(!other.to_string().contains("request_secret"), "an agent no policy lets ask does not see the tool");

    let id = ask(&f, "STRIPE_TEST").await;
    let (_, s) = status(&f, &f.token, &id).await;
    assert_eq!(s["result"]["status"], "pending", "{s}");
    let (rid, proof) = delivered(&f, &id);

    let (st, opened) = open(&f, &rid, &proof).await;
    assert_eq!(st, 200, "{opened}");
    let ctx: Value = serde_json::from_str(opened["context"].as_str().unwrap()).unwrap();
    assert_eq!(ctx["handle"], "STRIPE_TEST");
    assert_eq!(ctx["from_agent"], "bot");
    assert_eq!(ctx["binding"]["destination"], format!("http://127.0.0.1:{}/v1/", f.upstream.port()));
    assert_eq!(ctx["binding"]["inject"], json!({"type": "header", "name": "Authorization", "format": "Bearer {}"}));
    assert_eq!(ctx["grant"], json!(["http_request"]));

    let (st, v) = submit(&f, &rid, &proof, &seal(&opened, CANARY.as_bytes(), None)).await;
    assert_eq!((st, v["status"].clone()), (200, json!("approved")), "{v}");
    let (_, s) = status(&f, &f.token, &id).await;
    assert_eq!(s["result"]["status"], "approved", "{s}");

    // The new handle is listed for the agent that asked, and works.
    let tools: Value = f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(&f.token).send().await.unwrap().json().await.unwrap();
    let http = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "http_request").unwrap();
    assert!(http["inputSchema"]["properties"]["credential_handle"]["enum"].as_array().unwrap().contains(&json!("STRIPE_TEST")));
    let (st, v) = f.invoke("http_request", json!({"credential_handle": "STRIPE_TEST", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(st, 200, "{v}");
    let seen = f.upstream_requests();
    let auth = seen.last().unwrap().headers.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
    assert_eq!(auth, format!("Bearer {CANARY}"), "the person's key reached its destination");
    assert!(!v.to_string().contains(CANARY), "the echoed key is scrubbed: {v}");
    assert!(!v.to_string().contains("canaryReq"), "no part of it either: {v}");

    // Known to the scrubber for good: after a rebuild from the store (as at a restart), the
    // value is redacted wherever it appears, through any handle.
    f.broker.rebuild_scrubber().await.unwrap();
    let row = format!("row: {CANARY}; b64: {}", airlock_share::encode_b64(CANARY.as_bytes()));
    let scrubber = f.broker.scrubber();
    let (text, n) = scrubber.scrub_str(&row);
    assert!(n >= 2 && !text.contains(CANARY) && !text.contains("canaryReq"), "{text}");

    // Bound as the person saw: another destination, another method, another agent.
    let (st, v) = f.invoke("http_request", json!({"credential_handle": "STRIPE_TEST", "method": "POST", "path_or_url": "/v1/echo"})).await;
    assert_ne!(st, 200, "{v}");
    let (st, v) = f.invoke("http_request", json!({"credential_handle": "STRIPE_TEST", "method": "GET", "path_or_url": "https://example.com/v1/echo"})).await;
    assert_ne!(st, 200, "{v}");
    let (st, v) = f.invoke_as(&f.other_token, "http_request", json!({"credential_handle": "STRIPE_TEST", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!((st, code(&v)), (403, "handle-unavailable"));
    let (st, v) = status(&f, &f.other_token, &id).await;
    assert_eq!((st, code(&v)), (404, "request-unavailable"), "another agent's request looks unknown");

    // The link is burned: a second submit, even of the same ciphertext, stores nothing.
    let (st, v) = submit(&f, &rid, &proof, &seal(&opened, b"sk_live_second_value_000000", None)).await;
    assert_eq!((st, code(&v)), (404, "request-unavailable"));
    let (st, _) = open(&f, &rid, &proof).await;
    assert_eq!(st, 404);

    // Nothing the agent saw, nothing in the audit, nothing in the logs holds the value.
    let audit = audit_text(&f).await;
    assert!(audit.contains("secret_request_received") && audit.contains("secret_request_approved"), "{audit}");
    assert!(!audit.contains(CANARY) && !audit.contains(&proof), "the audit holds neither the value nor the link");
    let logs = common::captured_logs();
    assert!(!logs.contains(CANARY) && !logs.contains(&proof), "the logs hold neither the value nor the link");
    assert!(!s.to_string().contains(&proof));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_policy_an_approver_decides_and_a_denial_deletes_the_value() {
    let (_p, path) = policy(false);
    let f = Fixture::start_with(with_requests(path, 10)).await;
    let (_, approver) = f.store.add_approver("ops").await.unwrap();
    for (handle, approve) in [("KEY_APPROVED", true), ("KEY_DENIED", false)] {
        let id = ask(&f, handle).await;
        let (rid, proof) = delivered(&f, &id);
        let (_, opened) = open(&f, &rid, &proof).await;
        let (st, v) = submit(&f, &rid, &proof, &seal(&opened, CANARY.as_bytes(), None)).await;
        assert_eq!((st, v["status"].clone()), (200, json!("received")), "{v}");
        let (_, s) = status(&f, &f.token, &id).await;
        assert_eq!(s["result"]["status"], "received");
        let approval = s["result"]["approval"]["id"].as_str().unwrap().to_owned();
        assert!(f.store.get_sealed(&value_seal_name(handle)).await.unwrap().is_some(), "the value is stored once received");
        let (st, v) = f.invoke("http_request", json!({"credential_handle": handle, "method": "GET", "path_or_url": "/v1/items"})).await;
        assert_eq!((st, code(&v)), (403, "handle-unavailable"), "not usable before the approver decides");

        let verb = if approve { "approve" } else { "deny" };
        let r = f.client.post(format!("{}/v1/approvals/{approval}/{verb}", f.base)).bearer_auth(approver.reveal()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let (_, s) = status(&f, &f.token, &id).await;
        let (st, v) = f.invoke("http_request", json!({"credential_handle": handle, "method": "GET", "path_or_url": "/v1/items"})).await;
        if approve {
            assert_eq!(s["result"]["status"], "approved", "{s}");
            assert_eq!(st, 200, "{v}");
        } else {
            assert_eq!(s["result"]["status"], "rejected", "{s}");
            assert_eq!((st, code(&v)), (403, "handle-unavailable"));
            assert!(f.store.get_sealed(&value_seal_name(handle)).await.unwrap().is_none(), "a denied value is deleted");
        }
    }
    let audit = audit_text(&f).await;
    assert!(audit.contains("secret_request_rejected") && !audit.contains(CANARY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_store_nothing_and_leave_the_link_usable() {
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 10)).await;
    let id = ask(&f, "BAD_INPUT").await;
    let (rid, proof) = delivered(&f, &id);
    let (_, opened) = open(&f, &rid, &proof).await;
    let stored = || async { f.store.get_sealed(&value_seal_name("BAD_INPUT")).await.unwrap().is_some() };

    // The wrong format: refused, nothing stored, the person may correct it.
    for bad in ["pk_live_canaryReq_9Tz4Qw7Lm2Xp", "sk_live_short", ""] {
        let (st, v) = submit(&f, &rid, &proof, &seal(&opened, bad.as_bytes(), None)).await;
        assert_eq!((st, code(&v)), (422, "value-rejected"), "{bad:?}: {v}");
    }
    // Too large for the request.
    let big = format!("sk_live_{}", "x".repeat(300));
    let public = airlock_share::decode_b64(opened["public_key"].as_str().unwrap()).unwrap();
    let sealed_big = intake::seal(&public, big.as_bytes(), opened["context"].as_str().unwrap().as_bytes(), 4096).unwrap();
    let (st, v) = submit(&f, &rid, &proof, &sealed_big).await;
    assert!(matches!(code(&v), "limit-exceeded" | "invalid-submission"), "{st} {v}");
    // Bound to another context (a binding the person did not see): does not open.
    let mut ctx: Value = serde_json::from_str(opened["context"].as_str().unwrap()).unwrap();
    ctx["binding"]["destination"] = json!("https://evil.example/");
    let other = airlock_server::broker::approval::canonical_json(&ctx);
    let (st, v) = submit(&f, &rid, &proof, &seal(&opened, CANARY.as_bytes(), Some(&other))).await;
    assert_eq!((st, code(&v)), (400, "invalid-submission"), "{v}");
    // Every single flipped byte of the encapsulated key or the ciphertext: does not open.
    let good = seal(&opened, CANARY.as_bytes(), None);
    for i in (0..good.enc.len()).step_by(7).chain([good.enc.len() - 1]) {
        let mut s = intake::Sealed { enc: good.enc.clone(), ciphertext: good.ciphertext.clone() };
        s.enc[i] ^= 0x01;
        let (st, v) = submit(&f, &rid, &proof, &s).await;
        assert_eq!((st, code(&v)), (400, "invalid-submission"), "enc byte {i}");
    }
    for i in (0..good.ciphertext.len()).step_by(13).chain([good.ciphertext.len() - 1]) {
        let mut s = intake::Sealed { enc: good.enc.clone(), ciphertext: good.ciphertext.clone() };
        s.ciphertext[i] ^= 0x80;
        let (st, v) = submit(&f, &rid, &proof, &s).await;
        assert_eq!((st, code(&v)), (400, "invalid-submission"), "ciphertext byte {i}");
    }
    // A wrong proof, a malformed one, an unknown id: alike.
    let wrong = airlock_share::encode_b64(&[7u8; 32]);
    assert_eq!(code(&submit(&f, &rid, &wrong, &good).await.1), "request-unavailable");
    assert_eq!(code(&open(&f, &rid, &wrong).await.1), "request-unavailable");
    assert_eq!(code(&open(&f, "AAAAAAAAAAAAAAAAAAAAAA", &proof).await.1), "request-unavailable");
    let (st, _) = post(&f, &format!("/v1/requests/{rid}/submit"), json!({"proof": proof, "enc": "!!", "ciphertext": "x"})).await;
    assert_eq!(st, 400);
    assert!(!stored().await, "nothing stored by any bad submission");

    // The person's correct value still lands.
    let (st, v) = submit(&f, &rid, &proof, &good).await;
    assert_eq!((st, v["status"].clone()), (200, json!("approved")), "{v}");
    assert!(stored().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_codes() {
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 3)).await;
    // An existing handle, configured or requested.
    let (st, v) = f.invoke("request_secret", http_request_args(&f, "API")).await;
    assert_eq!((st, code(&v)), (409, "handle-exists"), "{v}");
    ask(&f, "TAKEN").await;
    let (st, v) = f.invoke("request_secret", http_request_args(&f, "TAKEN")).await;
    assert_eq!((st, code(&v)), (409, "handle-exists"), "{v}");
    // A hostile binding: a host no policy allows; plain http to a remote host; a bad name.
    let mut a = http_request_args(&f, "EVIL");
    a["destination"] = json!("https://evil.example/");
    let (st, v) = f.invoke("request_secret", a).await;
    assert_eq!((st, code(&v)), (403, "handle-unavailable"), "{v}");
    let mut a = http_request_args(&f, "PLAIN");
    a["destination"] = json!("http://api.example.com/");
    assert_eq!(code(&f.invoke("request_secret", a).await.1), "invalid-arguments");
    for name in ["lower", "A B", "X__L123456", ""] {
        assert_eq!(code(&f.invoke("request_secret", http_request_args(&f, name)).await.1), "invalid-arguments", "{name:?}");
    }
    let mut a = http_request_args(&f, "NOBODY");
    a["recipient"] = json!("mallory@evil.example");
    assert_eq!(code(&f.invoke("request_secret", a).await.1), "recipient-not-allowed");
    let mut a = http_request_args(&f, "BADFMT");
    a["format"] = json!({"pattern": "(unclosed"});
    assert_eq!(code(&f.invoke("request_secret", a).await.1), "invalid-arguments");
    // Another agent that no policy lets ask.
    let (st, v) = f.invoke_as(&f.other_token, "request_secret", http_request_args(&f, "OTHERS")).await;
    assert_eq!((st, code(&v)), (403, "handle-unavailable"));
    // At most 3 waiting at once (one is TAKEN): the flood stops at the cap.
    ask(&f, "SECOND").await;
    ask(&f, "THIRD").await;
    let (st, v) = f.invoke("request_secret", http_request_args(&f, "FOURTH")).await;
    assert_eq!((st, code(&v)), (413, "limit-exceeded"), "{v}");
    // An expired link: refused, and its handle name is free again.
    let id = ask_expired(&f).await;
    let _ = id;
}

/// A request made, then aged past its expiry in the store: its link answers
/// `request-unavailable`, its status `expired`, and its name can be asked for again.
async fn ask_expired(f: &Fixture) -> String {
    let pool = f.store.pool().unwrap();
    sqlx::query("DELETE FROM secret_requests WHERE handle IN ('SECOND', 'THIRD')").execute(pool).await.unwrap();
    let id = ask(f, "SHORT_LIVED").await;
    let (rid, proof) = delivered(f, &id);
    let (_, opened) = open(f, &rid, &proof).await;
    sqlx::query("UPDATE secret_requests SET expires_at = 1 WHERE id = ?").bind(&id).execute(pool).await.unwrap();
    let (st, v) = submit(f, &rid, &proof, &seal(&opened, CANARY.as_bytes(), None)).await;
    assert_eq!((st, code(&v)), (404, "request-unavailable"));
    let (_, s) = status(f, &f.token, &id).await;
    assert_eq!(s["result"]["status"], "expired", "{s}");
    assert!(f.store.get_sealed(&value_seal_name("SHORT_LIVED")).await.unwrap().is_none());
    ask(f, "SHORT_LIVED").await;
    let _ = API_TOKEN;
    id
}

/// The binding the person is shown is the handle that lands, whatever the agent writes: for
/// hostile destinations, methods and header names (quotes, brackets, newlines, `=` and `#`,
/// everything that could break out of a TOML value), a request is either refused, with nothing
/// stored, or its stored definition parses to exactly one destination, on the host the context
/// shows, with the methods and header the context shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bindings_land_exactly_as_shown_or_not_at_all() {
    use rand::{Rng, SeedableRng};
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 10_000)).await;
    let seed: u64 = std::env::var("AIRLOCK_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("AIRLOCK_TEST_SEED={seed}");
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let alphabet: Vec<char> = "\"'\n\r\t]}[{=,#\\%?@:/ .aZ09_-\u{0}\u{2028}é".chars().collect();
    let junk = |r: &mut rand::rngs::StdRng, n: usize| -> String { (0..r.random_range(0..n)).map(|_| alphabet[r.random_range(0..alphabet.len())]).collect() };
    let (mut landed, mut refused) = (0, 0);
    for i in 0..150 {
        let handle = format!("H{i}");
        let destination = format!("http://127.0.0.1:{}/{}", f.upstream.port(), junk(&mut r, 12));
        let method = if r.random_bool(0.7) { "GET".to_owned() } else { junk(&mut r, 6) };
        let header = if r.random_bool(0.6) { "X-Api-Key".to_owned() } else { junk(&mut r, 8) };
        let mut a = http_request_args(&f, &handle);
        a["destination"] = json!(destination);
        a["methods"] = json!([method]);
        a["inject"] = json!({"type": "header", "name": header, "format": "Key {}"});
        let (st, v) = f.invoke("request_secret", a).await;
        let stored = f.store.request_for_handle(&handle).await.unwrap();
        if st != 200 {
            assert!(matches!(code(&v), "invalid-arguments" | "handle-unavailable"), "{destination:?} {method:?} {header:?}: {v}");
            assert!(stored.is_none(), "a refused request stores nothing");
            refused += 1;
            continue;
        }
        let req = stored.expect("stored");
        let ctx: Value = serde_json::from_str(&req.context).unwrap();
        assert_eq!(ctx["binding"]["destination"], json!(destination));
        assert_eq!(ctx["binding"]["methods"], json!([method]));
        assert_eq!(ctx["binding"]["inject"]["name"], json!(header));
        let name = airlock_core::HandleName::parse(&handle).unwrap();
        let h = airlock_core::config::parse_handle(&req.definition, &name).unwrap();
        let http = h.http().unwrap();
        assert_eq!(http.destinations.len(), 1, "{destination:?}");
        assert_eq!(http.destinations[0].host, "127.0.0.1", "{destination:?}");
        assert_eq!(http.destinations[0].port, f.upstream.port());
        assert_eq!(http.destinations[0].methods, vec![method.to_ascii_uppercase()]);
        assert_eq!(http.inject, airlock_core::config::Injection::Header { name: header.clone(), format: "Key {}".into() });
        landed += 1;
    }
    println!("{landed} requests stored exactly as shown, {refused} refused");
    assert!(landed > 30 && refused > 10, "both outcomes were exercised: {landed} / {refused}");
}

/// Requests per agent per minute: past the bucket, `rate-limited`, and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_rate_limited_per_agent() {
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_limits(path, 100, 3)).await;
    for i in 0..3 {
        ask(&f, &format!("RATE_{i}")).await;
    }
    let (st, v) = f.invoke("request_secret", http_request_args(&f, "RATE_3")).await;
    assert_eq!((st, code(&v)), (429, "rate-limited"), "{v}");
    assert!(f.store.request_for_handle("RATE_3").await.unwrap().is_none());
}

/// Values landing while full rebuilds of the scrubber run back to back (more of them than the
/// added automaton holds, so some landings build in full themselves) are all known to the
/// scrubber as soon as their submission is answered: a full build that read the store before a
/// value landed adds it again at its swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_landing_during_full_rebuilds_are_all_covered() {
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 40)).await;
    let n = 24;
    let mut links = Vec::new();
    for i in 0..n {
        let id = ask(&f, &format!("COVER_{i}")).await;
        links.push(delivered(&f, &id));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rebuilds = {
        let (b, stop) = (f.broker.clone(), stop.clone());
        tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                b.rebuild_scrubber().await.unwrap();
                k += 1;
            }
            k
        })
    };
    let values: Vec<String> = (0..n).map(|i| format!("sk_live_cover_{i}_{:x}", rand_u64())).collect();
    for ((id, proof), value) in links.iter().zip(&values) {
        let (_, opened) = open(&f, id, proof).await;
        let (st, v) = submit(&f, id, proof, &seal(&opened, value.as_bytes(), None)).await;
        assert_eq!(st, 200, "{v}");
        // Known the moment the submission is answered.
        let label = airlock_core::HandleName::parse(v["result"]["handle"].as_str().or(v["handle"].as_str()).unwrap()).unwrap();
        assert!(f.broker.scrubber().knows(&label, &airlock_core::Secret::from_str_value(value)), "{label} not covered");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(rebuilds.await.unwrap() >= 1);
    let s = f.broker.scrubber();
    for (i, value) in values.iter().enumerate() {
        let label = airlock_core::HandleName::parse(&format!("COVER_{i}")).unwrap();
        assert!(s.knows(&label, &airlock_core::Secret::from_str_value(value)), "{label} lost by a rebuild");
        assert_eq!(s.scrub_str(&format!("v={value}")).0, format!("v=[REDACTED:{label}]"));
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Values landed by earlier versions were stored under `request\0HANDLE`, a name a PostgreSQL
/// store cannot hold. A broker opening a store that has one moves it to `request:HANDLE`,
/// sealed again for that name, and the handle keeps working with the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_under_its_legacy_name_moves_when_the_broker_opens_and_stays_usable() {
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 10)).await;
    let id = ask(&f, "OLD_KEY").await;
    let (rid, proof) = delivered(&f, &id);
    let (_, opened) = open(&f, &rid, &proof).await;
    let (st, v) = submit(&f, &rid, &proof, &seal(&opened, CANARY.as_bytes(), None)).await;
    assert_eq!((st, v["status"].clone()), (200, json!("approved")), "{v}");

    // Put the value where an earlier version kept it.
    let (current, legacy) = (value_seal_name("OLD_KEY"), "request\u{0}OLD_KEY");
    assert_eq!(current, "request:OLD_KEY");
    let (sealed, _) = f.store.get_sealed(&current).await.unwrap().unwrap();
    let value = f.broker.vault().open_value(&current, &sealed).await.unwrap();
    f.broker.vault().put(legacy, &value).await.unwrap();
    f.store.remove_secret(&current).await.unwrap();
    assert!(f.store.get_sealed(&current).await.unwrap().is_none());

    // A broker opening the store moves it: once, sealed for the new name.
    let cfg = airlock_core::config::Config::load(&f.dir.path().join("airlock.toml")).unwrap();
    let reopened = airlock_server::Broker::open(cfg).await.unwrap();
    assert!(f.store.get_sealed(legacy).await.unwrap().is_none(), "the legacy row is gone");
    let (moved, _) = f.store.get_sealed(&current).await.unwrap().expect("moved to its current name");
    assert!(f.broker.vault().open_value(legacy, &moved).await.is_err(), "sealed for the new name only");
    assert_eq!(reopened.move_legacy_request_values().await.unwrap(), 0, "nothing left to move");

    // The handle works with the person's value, which stays scrubbed.
    let (st, v) = f.invoke("http_request", json!({"credential_handle": "OLD_KEY", "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(st, 200, "{v}");
    let seen = f.upstream_requests();
    let auth = seen.last().unwrap().headers.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
    assert_eq!(auth, format!("Bearer {CANARY}"));
    assert!(!v.to_string().contains(CANARY), "{v}");
}

/// An operator revokes a request: a pending link stops opening; a landed value is deleted, its
/// handle stops resolving and leaves the agent's tools, and its name can be asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_revokes_a_request_and_its_handle_and_the_name_is_free_again() {
    let (_p, path) = policy(true);
    let f = Fixture::start_with(with_requests(path, 10)).await;
    let id = ask(&f, "REVOKED_KEY").await;
    let (rid, proof) = delivered(&f, &id);
    let (_, opened) = open(&f, &rid, &proof).await;
    let (st, v) = submit(&f, &rid, &proof, &seal(&opened, CANARY.as_bytes(), None)).await;
    assert_eq!((st, v["status"].clone()), (200, json!("approved")), "{v}");
    let call = json!({"credential_handle": "REVOKED_KEY", "method": "GET", "path_or_url": "/v1/echo"});
    assert_eq!(f.invoke("http_request", call.clone()).await.0, 200);

    assert_eq!(f.broker.live_request_for("REVOKED_KEY").await.unwrap().as_deref(), Some(id.as_str()));
    assert!(f.broker.revoke_request(&id, "operator:test").await.unwrap());
    assert!(!f.broker.revoke_request(&id, "operator:test").await.unwrap(), "a second revocation finds nothing");
    assert!(f.broker.live_request_for("REVOKED_KEY").await.unwrap().is_none());
    let (st, v) = f.invoke("http_request", call.clone()).await;
    assert_eq!((st, code(&v)), (403, "handle-unavailable"), "{v}");
    let tools: Value = f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(&f.token).send().await.unwrap().json().await.unwrap();
    assert!(!tools.to_string().contains("REVOKED_KEY"), "the handle left the agent's tools");
    assert!(f.store.get_sealed(&value_seal_name("REVOKED_KEY")).await.unwrap().is_none(), "the value is deleted");
    let (_, s) = status(&f, &f.token, &id).await;
    assert_eq!(s["result"]["status"], "revoked", "{s}");
    let audit = audit_text(&f).await;
    assert!(audit.contains("secret_request_revoked") && audit.contains("operator:test"), "{audit}");
    assert!(!audit.contains(CANARY));

    // The name is free: a new request for it, revoked while pending, takes its link with it.
    let again = ask(&f, "REVOKED_KEY").await;
    let (rid2, proof2) = delivered(&f, &again);
    let (st, opened2) = open(&f, &rid2, &proof2).await;
    assert_eq!(st, 200, "{opened2}");
    assert!(f.broker.revoke_request(&again, "operator:test").await.unwrap());
    assert_eq!(open(&f, &rid2, &proof2).await.0, 404, "a revoked link does not open");
    let (st, v) = submit(&f, &rid2, &proof2, &seal(&opened2, CANARY.as_bytes(), None)).await;
    assert_eq!((st, code(&v)), (404, "request-unavailable"), "{v}");
    assert!(f.store.get_sealed(&value_seal_name("REVOKED_KEY")).await.unwrap().is_none(), "nothing landed");
}
