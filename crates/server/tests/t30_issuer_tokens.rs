//! T30: agents authenticate with a JWT of a trusted issuer (`[issuers.NAME]`): a locally
//! generated P-256 key set served over HTTP on 127.0.0.1 plays a Kubernetes- or CI-style issuer.
//! A token maps to an agent of the configuration by its subject or its claims; every bad token
//! is `unauthenticated`; a flood of unknown key ids fetches the key set at most once per
//! interval; a key removed from the set stops verifying within one interval; a revoked agent
//! stays revoked.

mod common;

use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use common::{code, Fixture};
use jsonwebtoken::{encode, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AUD: &str = "https://airlock.test";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A P-256 signing key and its JWK.
struct Key {
    pkcs8: Vec<u8>,
    jwk: Value,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref().to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]), "kid": kid, "alg": "ES256", "use": "sig"});
        Key { pkcs8, jwk, kid: kid.to_owned() }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        encode(&h, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

/// The issuer: its key set (replaceable) at /jwks, and how often it was fetched.
struct IssuerServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicU64>,
}

async fn issuer(keys: Value) -> IssuerServer {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicU64::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = Router::new().route(
        "/jwks",
        get(move || {
            let (k, f) = (k.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                Json(k.lock().unwrap().clone())
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    IssuerServer { url, keys, fetches }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": AUD, "exp": now() + 300, "iat": now(), "nbf": now() - 5})
}

async fn setup() -> (Fixture, IssuerServer, Key) {
    let key = Key::new("k1");
    let iss = issuer(json!({"keys": [key.jwk.clone()]})).await;
    let url = iss.url.clone();
    let fx = Fixture::start_with(move |t| {
        format!(
            r#"{t}
[agents.deployer]
grants = [{{ handle = "API", tools = ["http_request"] }}]

[agents.ci]
grants = [{{ handle = "API", tools = ["http_request"] }}]

[issuers.cluster]
issuer = "{url}"
jwks_url = "{url}/jwks"
audience = "{AUD}"
algorithms = ["ES256"]
leeway_seconds = 0
refetch_interval_seconds = 1
subjects = [
  {{ subject = "system:serviceaccount:ci:deployer", agent = "deployer" }},
  {{ claims = {{ repository = "acme/app", ref = "refs/heads/main" }}, agent = "ci" }},
  {{ claims = {{ "/kubernetes.io/namespace" = "ci", "/kubernetes.io/serviceaccount/name" = "builder" }}, agent = "ci" }},
]

[agents.scoped]
grants = [
  {{ handle = "API", tools = ["http_request"] }},
  {{ handle = "APP_DB", tools = ["query_db", "request_lease"] }},
]

[issuers.idp]
issuer = "{url}/idp"
jwks_url = "{url}/jwks"
audience = "{AUD}"
algorithms = ["ES256"]
tool_scopes = true
subjects = [{{ subject = "person-1", agent = "scoped" }}]
"#
        )
    })
    .await;
    (fx, iss, key)
}

async fn call(fx: &Fixture, token: &str) -> (u16, Value) {
    fx.invoke_as(token, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_token_of_a_trusted_issuer_authenticates_its_mapped_agent() {
    let (fx, iss, key) = setup().await;
    let (status, v) = call(&fx, &key.sign(&claims(&iss.url, "system:serviceaccount:ci:deployer"))).await;
    assert_eq!((status, v["result"]["status"].as_i64()), (200, Some(200)), "{v}");
    let mut ci = claims(&iss.url, "repo:acme/app:ref:refs/heads/main");
    ci["repository"] = json!("acme/app");
    ci["ref"] = json!("refs/heads/main");
    let (status, v) = call(&fx, &key.sign(&ci)).await;
    assert_eq!(status, 200, "{v}");
    let records: Vec<_> = fx.store.audit_tail(10).await.unwrap().into_iter().map(|(_, r)| r).collect();
    let agents: Vec<&str> = records.iter().map(|r| r.agent.as_str()).collect();
    assert!(agents.contains(&"deployer") && agents.contains(&"ci"), "{agents:?}");
    // The audit says who vouched for each: the issuer's name and the token's subject.
    let who: Vec<(String, String)> = records.iter().filter_map(|r| r.identity.clone()).map(|i| (i.issuer, i.subject)).collect();
    assert!(who.contains(&("cluster".into(), "system:serviceaccount:ci:deployer".into())), "{who:?}");
    assert!(who.contains(&("cluster".into(), "repo:acme/app:ref:refs/heads/main".into())), "{who:?}");
    // An airlock token's records carry no issuer.
    assert_eq!(fx.invoke("http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"})).await.0, 200);
    assert_eq!(fx.store.audit_tail(1).await.unwrap()[0].1.identity, None);
    // The same claims on another branch map to nothing.
    ci["ref"] = json!("refs/heads/evil");
    assert_eq!(call(&fx, &key.sign(&ci)).await.0, 401);
    // Nested claims by JSON pointer: a Kubernetes token's namespace and service account, whatever
    // its subject says; the same names at the top level or another namespace map to nothing.
    let mut k8s = claims(&iss.url, "system:serviceaccount:ci:builder");
    k8s["kubernetes.io"] = json!({"namespace": "ci", "serviceaccount": {"name": "builder", "uid": "u-1"}});
    assert_eq!(call(&fx, &key.sign(&k8s)).await.0, 200);
    k8s["kubernetes.io"]["namespace"] = json!("prod");
    assert_eq!(call(&fx, &key.sign(&k8s)).await.0, 401);
    let mut flat = claims(&iss.url, "x");
    flat["namespace"] = json!("ci");
    flat["kubernetes.io/namespace"] = json!("ci");
    flat["kubernetes.io/serviceaccount/name"] = json!("builder");
    assert_eq!(call(&fx, &key.sign(&flat)).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_bad_tokens_are_unauthenticated() {
    let (fx, iss, key) = setup().await;
    let sub = "system:serviceaccount:ci:deployer";
    let good = claims(&iss.url, sub);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("expired", key.sign(&with("exp", json!(now() - 10)))),
        ("not yet valid", key.sign(&with("nbf", json!(now() + 120)))),
        ("wrong audience", key.sign(&with("aud", json!("https://other.example")))),
        ("an ID token (audience: the client)", key.sign(&with("aud", json!("airlock-client")))),
        ("wrong issuer", key.sign(&with("iss", json!("https://evil.example")))),
        ("unmapped subject", key.sign(&with("sub", json!("system:serviceaccount:ci:other")))),
        ("no subject", key.sign(&{
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("sub");
            c
        })),
        ("oversized", key.sign(&with("pad", json!("x".repeat(9_000))))),
        ("malformed", "a.b.c".to_owned()),
        ("not base64", "eyJ!.eyJ.sig".to_owned()),
    ];
    // alg none, with and without a signature part.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(good.to_string().as_bytes());
    cases.push(("alg none", format!("{none_header}.{body}.")));
    cases.push(("alg none, signed", format!("{none_header}.{body}.AAAA")));
    // HS256 "signed" with the issuer's public key, under its kid.
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("k1".into());
    let public = serde_json::to_vec(&key.jwk).unwrap();
    cases.push(("HMAC with the public key", encode(&h, &good, &EncodingKey::from_secret(&public)).unwrap()));
    // Signed by a key the issuer does not have, under the issuer's kid.
    cases.push(("foreign key, known kid", Key::new("k1").sign(&good)));
    for (what, token) in &cases {
        let (status, v) = call(&fx, token).await;
        assert_eq!((status, code(&v)), (401, "unauthenticated"), "{what}: {v}");
    }
    // A token in the query string is not read.
    let r = fx.client.get(format!("{}/v1/tools?access_token={}", fx.base, key.sign(&good))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The good one works.
    assert_eq!(call(&fx, &key.sign(&good)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_unknown_key_ids_fetch_at_most_once_per_interval_and_a_removed_key_stops_working() {
    let (fx, iss, key) = setup().await;
    let sub = "system:serviceaccount:ci:deployer";
    assert_eq!(call(&fx, &key.sign(&claims(&iss.url, sub))).await.0, 200);
    let before = iss.fetches.load(Ordering::SeqCst);
    // 200 tokens under made-up key ids, as fast as they come.
    let t0 = std::time::Instant::now();
    for i in 0..200 {
        let mut k = Key::new(&format!("made-up-{i}"));
        k.kid = format!("made-up-{i}");
        assert_eq!(call(&fx, &k.sign(&claims(&iss.url, sub))).await.0, 401);
    }
    let secs = t0.elapsed().as_secs() + 1;
    let fetched = iss.fetches.load(Ordering::SeqCst) - before;
    assert!(fetched <= secs + 1, "{fetched} key-set fetches in about {secs} s for 200 unknown kids");
    // Rotation: the issuer now serves k2 only. Within one interval k1's tokens stop working and
    // k2's work.
    let k2 = Key::new("k2");
    *iss.keys.lock().unwrap() = json!({"keys": [k2.jwk.clone()]});
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The first call after the interval may still verify with the set it finds (another caller
    // is fetching); a short while later the old key is gone.
    let _ = call(&fx, &key.sign(&claims(&iss.url, sub))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(call(&fx, &key.sign(&claims(&iss.url, sub))).await.0, 401, "a removed key stops verifying");
    assert_eq!(call(&fx, &k2.sign(&claims(&iss.url, sub))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_revoked_agent_stays_revoked_for_its_issuers_tokens() {
    let (fx, iss, key) = setup().await;
    let token = key.sign(&claims(&iss.url, "system:serviceaccount:ci:deployer"));
    assert_eq!(call(&fx, &token).await.0, 200);
    assert!(fx.store.revoke_agent("deployer").await.unwrap() >= 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, v) = call(&fx, &token).await;
    assert_eq!((status, code(&v)), (401, "unauthenticated"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_every_one_character_change_of_a_valid_token_is_refused() {
    let (fx, iss, key) = setup().await;
    let good = key.sign(&claims(&iss.url, "system:serviceaccount:ci:deployer"));
    assert!(fx.broker.authenticate(Some(&good)).await.is_ok());
    // Every position, replaced by a base64url character it does not hold, and by a '.'; plus
    // the token cut at every position. None may authenticate.
    let mut tried = 0;
    for i in 0..good.len() {
        let c = good.as_bytes()[i];
        for r in [if c == b'A' { b'B' } else { b'A' }, b'.'] {
            let mut t = good.clone().into_bytes();
            t[i] = r;
            let t = String::from_utf8(t).unwrap();
            // A change in a base64 part's padding bits can decode to the same bytes: such a token
            // says exactly what the issuer signed and is not a forgery.
            let same = {
                let dec = |s: &str| s.split('.').map(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok()).collect::<Vec<_>>();
                dec(&t) == dec(&good)
            };
            if same {
                continue;
            }
            let e = fx.broker.authenticate(Some(&t)).await.err().unwrap_or_else(|| panic!("position {i} changed to {}: accepted", r as char));
            assert_eq!(e.code, airlock_core::ErrorCode::Unauthenticated);
            tried += 1;
        }
        assert!(fx.broker.authenticate(Some(&good[..i])).await.is_err(), "cut at {i}: accepted");
    }
    assert!(tried > good.len(), "{tried} variants tried");
}

fn scoped(iss: &IssuerServer, scope: Value) -> Value {
    let mut c = claims(&format!("{}/idp", iss.url), "person-1");
    match scope {
        Value::Array(_) => c["scp"] = scope,
        other => c["scope"] = other,
    }
    c
}

async fn tool_names(fx: &Fixture, token: &str) -> Vec<String> {
    let r = fx.client.get(format!("{}/v1/tools", fx.base)).bearer_auth(token).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    v["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_scopes_limit_the_tools_within_the_agents_grants() {
    let (fx, iss, key) = setup().await;
    let db = json!({"credential_handle": "APP_DB", "query": "SELECT id FROM orders ORDER BY id"});
    let api = json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"});
    // Only airlock:query_db: the list shows query_db alone, http_request is insufficient-scope
    // and nothing reached the upstream.
    let only_db = key.sign(&scoped(&iss, json!("openid airlock:query_db")));
    assert_eq!(tool_names(&fx, &only_db).await, ["query_db"]);
    assert_eq!(fx.invoke_as(&only_db, "query_db", db.clone()).await.0, 200);
    let (status, v) = fx.invoke_as(&only_db, "http_request", api.clone()).await;
    assert_eq!((status, code(&v)), (403, "insufficient-scope"), "{v}");
    assert!(fx.upstream_requests().is_empty());
    // The scp array form, both tools.
    let both = key.sign(&scoped(&iss, json!(["airlock:query_db", "airlock:http_request"])));
    assert_eq!(tool_names(&fx, &both).await, ["query_db", "http_request"]);
    assert_eq!(fx.invoke_as(&both, "http_request", api.clone()).await.0, 200);
    // A scope never widens the grants: send_email and RW_DB are not the agent's.
    let wide = key.sign(&scoped(&iss, json!("airlock:query_db airlock:send_email airlock:http_request")));
    let (status, v) = fx.invoke_as(&wide, "query_db", json!({"credential_handle": "RW_DB", "query": "SELECT 1"})).await;
    assert_eq!((status, code(&v)), (403, "handle-unavailable"), "{v}");
    // No airlock scope at all: no tool. Look-alike scopes count for nothing.
    for s in ["", "openid profile", "airlock:", "airlock:*", "Airlock:query_db", "airlock:query_db2", "airlock:query_db:APP_DB", "xairlock:query_db"] {
        let t = key.sign(&scoped(&iss, json!(s)));
        assert!(tool_names(&fx, &t).await.is_empty(), "{s:?}");
        let (status, v) = fx.invoke_as(&t, "query_db", db.clone()).await;
        assert_eq!((status, code(&v)), (403, "insufficient-scope"), "{s:?}: {v}");
    }
    // A request_lease needs its own scope too.
    let (status, v) = fx.invoke_as(&only_db, "request_lease", json!({"credential_handle": "APP_DB", "ttl_seconds": 60})).await;
    assert_eq!((status, code(&v)), (403, "insufficient-scope"), "{v}");
    // The refusal is audited with the identity.
    let last = fx.store.audit_tail(1).await.unwrap().remove(0).1;
    assert_eq!((last.code.as_deref(), last.identity.map(|i| i.subject)), (Some("insufficient-scope"), Some("person-1".into())));
}

async fn exchange(fx: &Fixture, form: &[(&str, &str)]) -> (u16, Value) {
    let r = fx.client.post(format!("{}/v1/token", fx.base)).form(form).send().await.unwrap();
    let s = r.status().as_u16();
    let cc = r.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(cc.as_deref(), Some("no-store"));
    (s, r.json().await.unwrap())
}

const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_token_exchange_gives_a_child_no_wider_than_its_parent() {
    let (fx, iss, key) = setup().await;
    let parent = key.sign(&scoped(&iss, json!("airlock:query_db airlock:request_lease")));
    let base = |scope: &'static str| vec![("grant_type", TE), ("subject_token_type", JWT_TYPE), ("scope", scope)];
    // A child for query_db on APP_DB, from the parent's JWT.
    let mut form = base("airlock:query_db:APP_DB");
    form.push(("subject_token", &parent));
    form.push(("expires_in", "120"));
    let (status, v) = exchange(&fx, &form).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!((v["token_type"].as_str(), v["expires_in"].as_u64()), (Some("Bearer"), Some(120)));
    assert_eq!(v["scope"], "airlock:query_db:APP_DB");
    assert_eq!(v["parent_chain"], json!(["scoped"]));
    let child = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fx.invoke_as(&child, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT 1"})).await.0, 200);
    // The child has only what it was given.
    let (status, v) = fx.invoke_as(&child, "http_request", json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"})).await;
    assert_eq!((status, code(&v)), (403, "handle-unavailable"), "{v}");
    // Its records chain to the parent; the exchange's record names the parent's issuer and
    // subject, and holds no token.
    let tail = fx.store.audit_tail(3).await.unwrap();
    let child_rec = &tail.last().unwrap().1;
    assert_eq!(child_rec.parent_chain, ["scoped"]);
    let ex = tail.iter().map(|(_, r)| r).find(|r| r.tool == "token_exchange").expect("the exchange is audited");
    assert_eq!(ex.identity.as_ref().map(|i| (i.issuer.as_str(), i.subject.as_str())), Some(("idp", "person-1")));
    let body = serde_json::to_string(ex).unwrap();
    assert!(!body.contains(&parent) && !body.contains(&child));

    // Wider than the parent: a tool outside the parent's token scopes (the agent holds
    // http_request on API, its token does not), a handle the agent lacks, an unknown tool.
    for scope in ["airlock:http_request:API", "airlock:query_db:RW_DB", "airlock:drop_db:APP_DB", "airlock:query_db:NOPE"] {
        let mut form = vec![("grant_type", TE), ("subject_token_type", JWT_TYPE), ("scope", scope)];
        form.push(("subject_token", &parent));
        let (status, v) = exchange(&fx, &form).await;
        assert_eq!((status, v["error"].as_str()), (400, Some("invalid_scope")), "{scope}: {v}");
    }
    // A child of the child: never wider, and a chain of two.
    let mut form = vec![("grant_type", TE), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")];
    form.push(("subject_token", &child));
    form.push(("scope", "airlock:query_db:APP_DB"));
    let (status, v) = exchange(&fx, &form).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["parent_chain"][0].as_str().unwrap().starts_with("child-") && v["parent_chain"][1] == "scoped", "{v}");
    // Its life is cut to what its parent has left (120 s), not the 900 s default.
    assert!((110..=120).contains(&v["expires_in"].as_u64().unwrap()), "{v}");
    let mut form = vec![("grant_type", TE), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")];
    form.push(("subject_token", &child));
    form.push(("scope", "airlock:request_lease:APP_DB"));
    assert_eq!(exchange(&fx, &form).await.1["error"], "invalid_scope");

    // Malformed requests, each with its OAuth error.
    let good = |extra: Vec<(&'static str, &'static str)>| {
        let mut f: Vec<(&str, String)> =
            vec![("grant_type", TE.into()), ("subject_token_type", JWT_TYPE.into()), ("scope", "airlock:query_db:APP_DB".into()), ("subject_token", parent.clone())];
        for (k, v) in extra {
            f.retain(|(kk, _)| *kk != k);
            if !v.is_empty() {
                f.push((k, v.into()));
            }
        }
        f
    };
    // (parameters replaced or added, HTTP status, OAuth error)
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("grant_type", "authorization_code")], 400, "unsupported_grant_type"),
        (vec![("grant_type", "")], 400, "unsupported_grant_type"),
        (vec![("subject_token", "")], 400, "invalid_request"),
        (vec![("subject_token", "not-a-token")], 400, "invalid_request"),
        (vec![("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")], 400, "invalid_request"),
        (vec![("actor_token", "x")], 400, "invalid_request"),
        (vec![("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")], 400, "invalid_request"),
        (vec![("resource", "https://elsewhere.example/")], 400, "invalid_target"),
        (vec![("audience", "https://elsewhere.example/")], 400, "invalid_target"),
        (vec![("expires_in", "86400")], 400, "invalid_request"),
        (vec![("expires_in", "0")], 400, "invalid_request"),
        (vec![("scope", "")], 400, "invalid_scope"),
        (vec![("scope", "query_db:APP_DB")], 400, "invalid_scope"),
        (vec![("client_secret", "x")], 400, "invalid_request"),
    ];
    for (extra, want_status, want) in cases {
        let f = good(extra.clone());
        let form: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, v) = exchange(&fx, &form).await;
        assert_eq!((status, v["error"].as_str()), (want_status, Some(want)), "{extra:?}: {v}");
    }
    // A parameter given twice.
    let r = fx.client.post(format!("{}/v1/token", fx.base)).body(format!("grant_type={TE}&grant_type={TE}")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A body over limits.max_request_bytes: OAuth's error, not a bare status.
    let r = fx.client.post(format!("{}/v1/token", fx.base)).body(format!("grant_type={TE}&scope={}", "a".repeat(2 << 20))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    // An expired parent token gets nothing.
    let mut old = scoped(&iss, json!("airlock:query_db"));
    old["exp"] = json!(now() - 60);
    let old = key.sign(&old);
    let mut form = base("airlock:query_db:APP_DB");
    form.push(("subject_token", &old));
    assert_eq!(exchange(&fx, &form).await.1["airlock_code"], "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_no_token_is_in_any_log_line_or_audit_record() {
    common::capture_logs();
    let (fx, iss, key) = setup().await;
    let good = claims(&iss.url, "system:serviceaccount:ci:deployer");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 60);
    let mut foreign = good.clone();
    foreign["aud"] = json!("https://other.example");
    let tokens = vec![
        key.sign(&good),
        key.sign(&expired),
        key.sign(&foreign),
        Key::new("k1").sign(&good),
        key.sign(&scoped(&iss, json!("airlock:query_db"))),
    ];
    for t in &tokens {
        call(&fx, t).await;
        fx.invoke_as(t, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT 1"})).await;
    }
    // An exchange: the parent's token in, the child's out; neither may be logged.
    let form = [("grant_type", TE), ("subject_token_type", JWT_TYPE), ("scope", "airlock:query_db:APP_DB"), ("subject_token", tokens[4].as_str())];
    let (status, v) = exchange(&fx, &form).await;
    assert_eq!(status, 200, "{v}");
    let child = v["access_token"].as_str().unwrap().to_owned();
    fx.invoke_as(&child, "query_db", json!({"credential_handle": "APP_DB", "query": "SELECT 1"})).await;
    // A replayable piece is the whole token; its signature alone is swept too.
    let mut needles: Vec<String> = tokens.iter().flat_map(|t| [t.clone(), t.rsplit('.').next().unwrap().to_owned()]).collect();
    needles.push(child.clone());
    let log = common::captured_logs();
    assert!(log.contains("airlock"), "the broker's log lines are captured");
    let mut haystack = vec![log];
    for (_, r) in fx.store.audit_tail(10_000).await.unwrap() {
        haystack.push(serde_json::to_string(&r).unwrap());
    }
    for n in &needles {
        for h in &haystack {
            assert!(!h.contains(n.as_str()), "a token leaked into {}", &h[..h.len().min(300)]);
        }
    }
}
