//! T17 over HTTP: the share endpoints and pages, and the `share_secret` tool with its outbox.
#![allow(clippy::disallowed_methods, reason = "the test plays the recipient, who reads the shared secret")]

mod common;

use airlock_share::{derive, Link, NewShare};
use common::{code, Fixture};
use serde_json::{json, Value};

const MAX: usize = 1 << 20;

fn with_shares(fail_rate: u32) -> impl FnOnce(String) -> String {
    move |t: String| {
        let t = t.replace(
            "  { handle = \"API\", tools = [\"http_request\"] },\n]",
            "  { handle = \"API\", tools = [\"http_request\"] },\n  { handle = \"SECRET_ONLY\", tools = [\"share_secret\"] },\n]",
        );
        format!(
            "{t}\n[shares]\ncreate_per_minute = 100000\nfailed_consumes_per_minute = {fail_rate}\nbase_url = \"https://airlock.example\"\n\
             [shares.channels.box]\ntype = \"outbox\"\npath = \"outbox.jsonl\"\n\
             [shares.recipients]\n\"alice@example.com\" = \"box\"\n"
        )
    }
}

async fn create(f: &Fixture, plaintext: &[u8], views: u32) -> NewShare {
    create_as(f, None, plaintext, views).await
}

/// Uploads a share, as the agent holding `token` (its creator) or anonymously.
async fn create_as(f: &Fixture, token: Option<&str>, plaintext: &[u8], views: u32) -> NewShare {
    let exp = chrono::Utc::now().timestamp() + 3600;
    let s = NewShare::create(plaintext, None, exp, views, MAX).unwrap();
    let (ct, ph) = s.request_fields();
    let mut req = f.client.post(format!("{}/v1/shares", f.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req
        .json(&json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": views}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    s
}

async fn consume(f: &Fixture, id: &str, proof: &str) -> (u16, Value) {
    let r = f.client.post(format!("{}/v1/shares/{id}/consume", f.base)).json(&json!({"proof": proof})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_consume_needs_the_proof_burns_once_and_used_looks_unknown() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let s = create(&f, b"one-time canary_Sh4re", 1).await;
    let wrong = derive(&airlock_share::LinkKey::generate().unwrap(), &s.id, None);
    let (st, v) = consume(&f, &s.id, &wrong.proof()).await;
    assert_eq!((st, code(&v)), (404, "share-unavailable"));
    assert_eq!(f.store.share_views_left(&s.id).await.unwrap(), Some(1), "a wrong proof burns nothing");

    let d = derive(&s.key, &s.id, None);
    let (st, v) = consume(&f, &s.id, &d.proof()).await;
    assert_eq!(st, 200, "{v}");
    let blob = airlock_share::decode_blob(v["ciphertext"].as_str().unwrap()).unwrap();
    let limits = airlock_share::Limits { expires_at: v["expires_at"].as_i64().unwrap(), views: 1, passphrase: false };
    assert_eq!(airlock_share::open(&blob, &d, &s.id, &limits).unwrap().expose_secret(), b"one-time canary_Sh4re");

    let (st2, used) = consume(&f, &s.id, &d.proof()).await;
    let (st3, unknown) = consume(&f, &airlock_share::new_id().unwrap(), &d.proof()).await;
    assert_eq!((st2, st3), (404, 404));
    assert_eq!(used, unknown, "used and unknown answer identically");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_64_concurrent_http_consumers_one_success() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let s = create(&f, b"race", 1).await;
    let proof = derive(&s.key, &s.id, None).proof().to_string();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (c, url, p) = (f.client.clone(), format!("{}/v1/shares/{}/consume", f.base, s.id), proof.clone());
        tasks.push(tokio::spawn(async move { c.post(url).json(&json!({"proof": p})).send().await.unwrap().status().as_u16() }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 404), "{codes:?}");
}

#[tokio::test]
async fn t17_failed_consumes_are_rate_limited_per_address() {
    let f = Fixture::start_with(with_shares(5)).await;
    let s = create(&f, b"x", 1).await;
    let wrong = derive(&airlock_share::LinkKey::generate().unwrap(), &s.id, None);
    for _ in 0..5 {
        assert_eq!(consume(&f, &s.id, &wrong.proof()).await.0, 404);
    }
    let (st, v) = consume(&f, &s.id, &wrong.proof()).await;
    assert_eq!((st, code(&v)), (429, "rate-limited"));
    assert_eq!(f.store.share_views_left(&s.id).await.unwrap(), Some(1));
}

#[tokio::test]
async fn t17_bad_input_gets_clear_codes() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let post = |body: Value| f.client.post(format!("{}/v1/shares", f.base)).json(&body).send();
    let exp = chrono::Utc::now().timestamp() + 60;
    let s = NewShare::create(b"x", None, exp, 1, MAX).unwrap();
    let (ct, ph) = s.request_fields();
    // Malformed ciphertext, id, proof hash, views, expiry.
    for body in [
        json!({"id": s.id, "ciphertext": "!!", "proof_hash": ph, "expires_at": exp, "views": 1}),
        json!({"id": s.id, "ciphertext": &ct[..ct.len() - 8], "proof_hash": ph, "expires_at": exp, "views": 1}),
        json!({"id": "short", "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1}),
        json!({"id": s.id, "ciphertext": ct, "proof_hash": "AAAA", "expires_at": exp, "views": 1}),
        json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 0}),
        json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp - 120, "views": 1}),
        json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp + 30 * 86400, "views": 1}),
        json!({"nope": 1}),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid-share");
    }
    // Oversized: a 2 MiB plaintext sealed by a client that ignores the limit.
    let big = NewShare::create(&vec![b'a'; 2 << 20], None, exp, 1, 4 << 20).unwrap();
    let (bct, bph) = big.request_fields();
    // Refused with the contract's envelope; the server reads the rest of the body before it
    // answers, so the connection stays usable for the requests below.
    let r = f
        .client
        .post(format!("{}/v1/shares", f.base))
        .json(&json!({"id": big.id, "ciphertext": bct, "proof_hash": bph, "expires_at": exp, "views": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "limit-exceeded");
    let (st, _) = consume(&f, &big.id, &derive(&big.key, &big.id, None).proof()).await;
    assert_eq!(st, 404, "the oversized share was stored");
    // Malformed consume requests.
    let (st, v) = consume(&f, &s.id, "not-a-proof").await;
    assert_eq!((st, code(&v)), (400, "invalid-share"));
    let (st, v) = consume(&f, "bad id", &derive(&s.key, &s.id, None).proof()).await;
    assert_eq!((st, code(&v)), (400, "invalid-share"));
}

#[tokio::test]
async fn t17_pages_have_strict_headers_and_the_open_page_is_static() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let s = create(&f, b"x", 1).await;
    for path in [format!("/s/{}", s.id), "/share".to_owned(), "/web/open.js".to_owned(), "/web/share-format.js".to_owned()] {
        let r = f.client.get(format!("{}{path}", f.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["x-robots-tag"].to_str().unwrap().contains("noindex"));
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>") && !body.contains("http://") && !body.contains("https://"), "{path}: inline or third-party");
    }
    // The open page is the same for a live, an unknown and a malformed id, and touches nothing.
    let a = f.client.get(format!("{}/s/{}", f.base, s.id)).send().await.unwrap().text().await.unwrap();
    let b = f.client.get(format!("{}/s/{}", f.base, airlock_share::new_id().unwrap())).send().await.unwrap().text().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(f.store.share_views_left(&s.id).await.unwrap(), Some(1), "a previewer burns nothing");
}

#[tokio::test]
async fn t17_share_secret_delivers_the_link_to_the_recipient_only() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let tools = f.client.get(format!("{}/v1/tools", f.base)).bearer_auth(&f.token).send().await.unwrap().json::<Value>().await.unwrap();
    let t = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "share_secret").expect("share_secret listed").clone();
    assert_eq!(t["annotations"]["openWorldHint"], true);
    assert_eq!(t["annotations"]["readOnlyHint"], false);
    assert_eq!(t["inputSchema"]["properties"]["credential_handle"]["enum"], json!(["SECRET_ONLY"]));

    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "SECRET_ONLY", "recipient": "mallory@evil.test"})).await;
    assert_eq!((st, code(&v)), (403, "recipient-not-allowed"));
    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "API", "recipient": "alice@example.com"})).await;
    assert_eq!((st, code(&v)), (403, "handle-unavailable"));

    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "SECRET_ONLY", "recipient": "alice@example.com", "expires_in": 600})).await;
    assert_eq!(st, 200, "{v}");
    let r = &v["result"];
    let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["expires_at", "recipient", "share_id"], "the agent gets only these");
    let id = r["share_id"].as_str().unwrap();

    let outbox = f.dir.path().join("outbox.jsonl");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&outbox).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let line: Value = serde_json::from_str(std::fs::read_to_string(&outbox).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["recipient"], "alice@example.com");
    assert_eq!(line["share_id"], id);
    let link_text = line["link"].as_str().unwrap().to_owned();
    assert!(link_text.starts_with(&format!("https://airlock.example/s/{id}#")));
    let key_part = link_text.split('#').nth(1).unwrap().to_owned();
    assert!(!v.to_string().contains(&key_part), "the key never reaches the agent");

    // Receipt: not yet opened; only the creating agent may ask.
    let receipt = |tok: String| {
        let (c, url) = (f.client.clone(), format!("{}/v1/shares/{id}", f.base));
        async move {
            let r = c.get(url).bearer_auth(tok).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, rc) = receipt(f.token.clone()).await;
    assert_eq!((st, rc["opened"].clone()), (200, json!(false)), "{rc}");
    assert_eq!(receipt(f.other_token.clone()).await.0, 404);

    // The recipient opens it (the link's base is the public URL; consume on the test server).
    let link = Link::parse(&link_text).unwrap();
    let d = derive(&link.key, &link.id, None);
    let (st, c) = consume(&f, id, &d.proof()).await;
    assert_eq!(st, 200);
    let blob = airlock_share::decode_blob(c["ciphertext"].as_str().unwrap()).unwrap();
    let limits = airlock_share::Limits { expires_at: c["expires_at"].as_i64().unwrap(), views: 1, passphrase: false };
    assert_eq!(airlock_share::open(&blob, &d, id, &limits).unwrap().expose_str(), Some("canaryGeneric_Zx81Lq0Pw"));
    let (_, rc) = receipt(f.token.clone()).await;
    assert_eq!(rc["opened"], true, "{rc}");
    assert!(rc["first_opened_at"].is_string());

    // The audit names the share id and never the link, its key or the secret.
    let tail = f.store.audit_tail(50).await.unwrap();
    let audit = serde_json::to_string(&tail.iter().map(|(_, r)| serde_json::to_value(r).unwrap()).collect::<Vec<_>>()).unwrap();
    assert!(audit.contains(id));
    assert!(!audit.contains(&key_part) && !audit.contains("canaryGeneric_Zx81Lq0Pw"));
}

#[tokio::test]
async fn t17_creation_is_rate_limited_per_address() {
    let f = Fixture::start_with(|t| with_shares(100000)(t).replace("create_per_minute = 100000", "create_per_minute = 3")).await;
    for _ in 0..3 {
        create(&f, b"x", 1).await;
    }
    let exp = chrono::Utc::now().timestamp() + 60;
    let s = NewShare::create(b"x", None, exp, 1, MAX).unwrap();
    let (ct, ph) = s.request_fields();
    let r = f
        .client
        .post(format!("{}/v1/shares", f.base))
        .json(&json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "rate-limited");
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches the loopback
/// listener), like people behind different proxies.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(Some(ip.parse().unwrap())).build().unwrap()
}

async fn consume_from(f: &Fixture, c: &reqwest::Client, id: &str, proof: &str) -> (u16, Value) {
    let r = c.post(format!("{}/v1/shares/{id}/consume", f.base)).json(&json!({"proof": proof})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn t29_forty_wrong_proofs_from_one_address_never_lock_out_the_key_holder() {
    let f = Fixture::start_with(|t| {
        with_shares(5)(t).replace("failed_consumes_per_minute = 5", "failed_consumes_per_minute = 5\nfailed_consumes_per_share_per_minute = 20")
    })
    .await;
    let s = create(&f, b"held by the key holder", 3).await;
    let right = derive(&s.key, &s.id, None).proof().to_string();
    let wrong = derive(&airlock_share::LinkKey::generate().unwrap(), &s.id, None).proof().to_string();
    let (attacker, holder, bystander) = (client_from("127.0.0.2"), client_from("127.0.0.3"), client_from("127.0.0.4"));

    let mut codes = Vec::new();
    for _ in 0..40 {
        codes.push(consume_from(&f, &attacker, &s.id, &wrong).await.0);
    }
    assert_eq!(&codes[..5], &[404; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| *c == 429), "past the limit for (share, address): {codes:?}");
    // Past the share's own limit too: a wrong proof from anywhere is rate-limited now...
    assert_eq!(consume_from(&f, &bystander, &s.id, &wrong).await.0, 429);
    // ...but the right key opens it, from another address and from the attacker's own.
    let (st, v) = consume_from(&f, &holder, &s.id, &right).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = consume_from(&f, &attacker, &s.id, &right).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(f.store.share_views_left(&s.id).await.unwrap(), Some(1), "wrong proofs burned nothing");
    // Other shares are not affected by this share's limits.
    let other = create(&f, b"another", 1).await;
    assert_eq!(consume_from(&f, &bystander, &other.id, &wrong).await.0, 404);
    let (st, _) = consume_from(&f, &attacker, &other.id, &derive(&other.key, &other.id, None).proof()).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn t29_maps_keyed_by_client_input_stay_within_their_cap_with_evictions_counted() {
    // (A bucket that has refilled holds nothing and is dropped without counting as an eviction,
    // so the limits are low enough here not to refill during the test.)
    let f = Fixture::start_with(|t| with_shares(5)(t).replace("create_per_minute = 100000", "create_per_minute = 100000\nmax_tracked_clients = 16"))
        .await;
    let proof = derive(&airlock_share::LinkKey::generate().unwrap(), "x", None).proof().to_string();
    for _ in 0..200 {
        let id = airlock_share::new_id().unwrap();
        assert_eq!(consume(&f, &id, &proof).await.0, 404);
    }
    let rates = f.broker.share_rates();
    assert!(rates.failed_pair.len() <= 16 && rates.failed_share.len() <= 16, "{} {}", rates.failed_pair.len(), rates.failed_share.len());
    let m = f.broker.metrics().encode();
    for limiter in ["share_failed_pair", "share_failed_share"] {
        let line = format!("airlock_rate_limiter_evictions_total{{limiter=\"{limiter}\"}} ");
        let n: u64 = m.lines().find_map(|l| l.strip_prefix(line.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        assert!(n >= 200 - 16, "{limiter}: {n} evictions\n{m}");
    }
}

#[tokio::test]
async fn t29_a_flood_of_unauthenticated_shares_stays_within_the_cap_and_ids_are_never_reused() {
    let f = Fixture::start_with(|t| with_shares(100000)(t).replace("create_per_minute = 100000", "create_per_minute = 100000\nmax_anonymous_shares = 10"))
        .await;
    // An agent's share is not counted against anonymous ones and is never evicted by them.
    let exp = chrono::Utc::now().timestamp() + 3600;
    let mine = NewShare::create(b"agent's", None, exp, 1, MAX).unwrap();
    let (ct, ph) = mine.request_fields();
    let r = f
        .client
        .post(format!("{}/v1/shares", f.base))
        .bearer_auth(&f.token)
        .json(&json!({"id": mine.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut made = Vec::new();
    for _ in 0..300 {
        made.push(create(&f, b"flood", 1).await);
    }
    let (live,): (i64,) = sqlx::query_as("SELECT count(*) FROM shares WHERE views_left > 0").fetch_one(f.store.pool().unwrap()).await.unwrap();
    assert_eq!(live, 11, "ten anonymous and the agent's");
    assert!(f.broker.metrics().encode().contains("airlock_shares_evicted_total 290"), "{}", f.broker.metrics().encode());
    // The oldest go first: no evicted share was created after a surviving one (created_at has
    // whole seconds, so shares of one second are told apart by id, not by the order made).
    let live_ids: Vec<(String, i64)> = sqlx::query_as("SELECT id, created_at FROM shares WHERE views_left > 0 AND id <> ?")
        .bind(&mine.id)
        .fetch_all(f.store.pool().unwrap())
        .await
        .unwrap();
    let first_live = live_ids.iter().map(|(_, c)| *c).min().unwrap();
    let (evicted_last,): (i64,) = sqlx::query_as("SELECT max(created_at) FROM shares WHERE views_left = 0").fetch_one(f.store.pool().unwrap()).await.unwrap();
    assert!(evicted_last <= first_live, "an older share outlived a newer one");
    // The newest survives; an evicted one is unavailable and its id cannot be created again.
    let newest = made.last().unwrap();
    assert_eq!(consume(&f, &newest.id, &derive(&newest.key, &newest.id, None).proof()).await.0, 200);
    let oldest = made.iter().find(|m| !live_ids.iter().any(|(id, _)| *id == m.id)).expect("290 were evicted");
    assert_eq!(consume(&f, &oldest.id, &derive(&oldest.key, &oldest.id, None).proof()).await.0, 404);
    assert_eq!(consume(&f, &mine.id, &derive(&mine.key, &mine.id, None).proof()).await.0, 200);
    for used in [oldest, newest] {
        let (ct, ph) = used.request_fields();
        let r = f
            .client
            .post(format!("{}/v1/shares", f.base))
            .json(&json!({"id": used.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "an evicted or used id is taken for good");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid-share");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_the_creator_or_the_operator_revokes_a_live_share_and_each_revocation_is_audited() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let revoke = |token: Option<String>, id: String| {
        let (c, url) = (f.client.clone(), format!("{}/v1/shares/{id}", f.base));
        async move {
            let mut req = c.delete(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let s = create_as(&f, Some(&f.token), b"revocable canary_Rv0ke", 2).await;
    let proof = derive(&s.key, &s.id, None).proof().to_string();

    // Nobody else can: no token, another agent, a malformed id.
    assert_eq!(revoke(None, s.id.clone()).await.0, 401);
    let (st, v) = revoke(Some(f.other_token.clone()), s.id.clone()).await;
    assert_eq!((st, code(&v)), (404, "share-unavailable"));
    let (st, v) = revoke(Some(f.token.clone()), "not-an-id".into()).await;
    assert_eq!((st, code(&v)), (400, "invalid-share"), "{v}");
    assert_eq!(f.store.share_views_left(&s.id).await.unwrap(), Some(2), "a refused revocation burns nothing");

    // The creator can, once; the link is dead for its holder too.
    let (st, v) = revoke(Some(f.token.clone()), s.id.clone()).await;
    assert_eq!((st, &v["result"]["revoked"]), (200, &json!(true)), "{v}");
    let (st, v) = consume(&f, &s.id, &proof).await;
    assert_eq!((st, code(&v)), (404, "share-unavailable"));
    let (st, v) = revoke(Some(f.token.clone()), s.id.clone()).await;
    assert_eq!((st, code(&v)), (404, "share-unavailable"), "twice is unavailable");

    // An opened (used up) share cannot be revoked; an anonymous one is the operator's alone.
    let used = create_as(&f, Some(&f.token), b"x", 1).await;
    assert_eq!(consume(&f, &used.id, &derive(&used.key, &used.id, None).proof()).await.0, 200);
    assert_eq!(revoke(Some(f.token.clone()), used.id.clone()).await.0, 404);
    let anon = create(&f, b"anonymous canary_An0n", 1).await;
    assert_eq!(revoke(Some(f.token.clone()), anon.id.clone()).await.0, 404);
    let op = airlock_server::broker::Revoker::OPERATOR;
    f.broker.revoke_share_by(&anon.id, None, &op).await.unwrap();
    assert_eq!(consume(&f, &anon.id, &derive(&anon.key, &anon.id, None).proof()).await.0, 404);
    assert_eq!(f.broker.revoke_share_by(&anon.id, None, &op).await.unwrap_err().code, airlock_core::ErrorCode::ShareUnavailable);

    // Each revocation is one record: what, by whom, why; the refused attempts are audited as calls.
    let recs: Vec<_> = f.store.audit_tail(200).await.unwrap().into_iter().map(|(_, r)| r).collect();
    let revoked: Vec<_> = recs.iter().filter(|r| r.tool == "share_revoked").collect();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    let by_agent = revoked.iter().find(|r| r.arguments["share_id"] == json!(s.id)).unwrap();
    assert_eq!((by_agent.agent.as_str(), by_agent.arguments["revoked_by"].as_str()), ("bot", Some("bot")));
    assert_eq!(by_agent.arguments["reason"], "revoked by the agent that created it");
    let by_op = revoked.iter().find(|r| r.arguments["share_id"] == json!(anon.id)).unwrap();
    assert_eq!((by_op.agent.as_str(), by_op.arguments["reason"].as_str()), ("operator", Some("revoked by the operator")));
    let calls: Vec<_> = recs.iter().filter(|r| r.tool == "revoke_share").collect();
    assert!(calls.iter().any(|r| r.agent == "other" && r.code.as_deref() == Some("share-unavailable")), "{calls:?}");
    let pk = airlock_store::audit::AuditKey::load_public(&f.dir.path().join("data")).unwrap();
    assert!(f.store.verify_audit(&pk).await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t17_a_consume_asked_again_with_its_attempt_is_answered_again_and_only_it() {
    let f = Fixture::start_with(with_shares(100000)).await;
    let s = create(&f, b"lost-answer canary_R3try", 1).await;
    let proof = derive(&s.key, &s.id, None).proof().to_string();
    let post = |body: Value| f.client.post(format!("{}/v1/shares/{}/consume", f.base, s.id)).json(&body).send();
    // An attempt that is not 16 to 64 base64url characters: refused, nothing burned.
    for bad in ["short", "has spaces in it, which are not base64url", &"a".repeat(65), "ü-not-ascii-but-long-enough"] {
        let r = post(json!({"proof": proof, "attempt": bad})).await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    assert_eq!(f.store.share_views_left(&s.id).await.unwrap(), Some(1));
    let attempt = "attempt-0123456789abcdef";
    let first: Value = post(json!({"proof": proof, "attempt": attempt})).await.unwrap().json().await.unwrap();
    assert_eq!((first["ok"].as_bool(), first["redelivered"].as_bool()), (Some(true), Some(false)), "{first}");
    let again: Value = post(json!({"proof": proof, "attempt": attempt})).await.unwrap().json().await.unwrap();
    assert_eq!((again["redelivered"].as_bool(), &again["ciphertext"]), (Some(true), &first["ciphertext"]), "{again}");
    // Another attempt, or none: the used link looks unknown.
    for body in [json!({"proof": proof, "attempt": "attempt-fedcba9876543210"}), json!({"proof": proof})] {
        let r = post(body).await.unwrap();
        let (st, v): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
        assert_eq!((st, code(&v)), (404, "share-unavailable"));
    }
}
