//! Leases on aws handles against a real AWS emulator (`moto_server`, PyPI `moto[server]`),
//! started per test on a free loopback port: STS `AssumeRole` with the lease's session policy,
//! and `s3_object` signed with the lease's temporary credentials. Between the broker and moto
//! sits a byte relay that records every request the broker sends, so a test can show what
//! STS received and that a refused call sent nothing. Skips when `moto_server` is not
//! installed, unless AIRLOCK_REQUIRE_SERVICES=1, when it fails.

mod common;
mod moto;

use airlock_core::Secret;
use airlock_vault::{MasterKey, Vault};
use common::*;
use moto::{free_port, Moto};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const ROLE: &str = "airlock-agent-s3";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/airlock-agent-s3";
/// The broker's own (long-lived) key pair: canaries that must appear nowhere.
const BASE_KEY_ID: &str = "AKIACANARYBASE7Q2XZ9";
const BASE_SECRET: &str = "canaryAwsBaseSecret/Kx81Lq0PwZ3vN5";

impl Moto {
    /// The sessions STS issued, as moto recorded them.
    async fn assumed_roles(&self) -> Vec<Value> {
        self.data().await["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default()
    }

    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut all = vec![("Version", "2010-05-08")];
        all.extend_from_slice(params);
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(all).finish();
        let (s, t) = self.setup("iam", "POST", "/", body.into_bytes()).await;
        assert_eq!(s, 200, "{t}");
        t
    }

    async fn create_role(&self, policy: Option<&str>) {
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
        self.iam(&[("Action", "CreateRole"), ("RoleName", ROLE), ("AssumeRolePolicyDocument", trust)]).await;
        if let Some(p) = policy {
            self.iam(&[("Action", "PutRolePolicy"), ("RoleName", ROLE), ("PolicyName", "s3"), ("PolicyDocument", p)]).await;
        }
    }

    async fn bucket(&self, b: &str) {
        let (s, t) = self.setup("s3", "PUT", &format!("/{b}"), vec![]).await;
        assert_eq!(s, 200, "{t}");
    }

    async fn object(&self, b: &str, k: &str, body: &[u8]) {
        let (s, t) = self.setup("s3", "PUT", &format!("/{b}/{k}"), body.to_vec()).await;
        assert_eq!(s, 200, "{t}");
    }
}

/// A loopback relay to `target` that records every byte sent to it.
#[derive(Clone)]
struct Relay {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s2 = sent.clone();
        let target = target.trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = l.accept().await else { return };
                let sent = s2.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = { let s = server; s.into_split() };
                    let up = async {
                        let mut buf = vec![0u8; 16384];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            sent.lock().unwrap().extend_from_slice(&buf[..n]);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Relay { url, sent }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }

    fn len(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

struct Env {
    moto: Moto,
    relay: Relay,
    f: Fixture,
    bot: String,
}

/// The aws handle S3 (buckets `leased` and `other`, both scopes, leases up to 1800 s, objects up
/// to 64 bytes), in front of `endpoint`; the agent `s3bot` may lease it.
fn with_aws(t: String, endpoint: &str) -> String {
    format!(
        r#"{t}
[handles.S3]
kind = "aws"
secret = "local:S3"
description = "reports bucket"
[handles.S3.aws]
region = "us-east-1"
endpoint = "{endpoint}"
role_arn = "{ROLE_ARN}"
buckets = ["leased", "other"]
scopes = ["read_only", "read_write"]
max_ttl_seconds = 1800
max_object_bytes = 64

[agents.s3bot]
grants = [{{ handle = "S3", tools = ["request_lease"] }}]
"#
    )
}

fn base_secret() -> Secret {
    Secret::from_str_value(&json!({"access_key_id": BASE_KEY_ID, "secret_access_key": BASE_SECRET}).to_string())
}

async fn fixture(endpoint: &str) -> (Fixture, String) {
    let e = endpoint.to_owned();
    let f = Fixture::start_with(move |t| with_aws(t, &e)).await;
    let data = f.dir.path().join("data");
    let v = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), f.store.clone());
    v.put("S3", &base_secret()).await.unwrap();
    f.broker.refresh().await.unwrap();
    let (_, t) = f.store.add_agent("s3bot", None, None).await.unwrap();
    (f, t.reveal().to_owned())
}

/// moto (no IAM enforcement) with the role, buckets `leased` and `other` and an object in each,
/// behind a recording relay, and a broker whose S3 handle points at the relay.
async fn setup() -> Option<Env> {
    let moto = Moto::start(&[]).await?;
    moto.create_role(None).await;
    moto.bucket("leased").await;
    moto.bucket("other").await;
    moto.object("leased", "reports/q1.txt", b"revenue up").await;
    moto.object("other", "private.txt", b"not for the agent").await;
    let relay = Relay::start(moto.url.clone()).await;
    let (f, bot) = fixture(&relay.url).await;
    Some(Env { moto, relay, f, bot })
}

impl Env {
    async fn lease(&self, args: Value) -> (u16, Value) {
        let mut a = json!({"credential_handle": "S3"});
        a.as_object_mut().unwrap().extend(args.as_object().unwrap().clone());
        self.f.invoke_as(&self.bot, "request_lease", a).await
    }

    async fn s3(&self, handle: &str, args: Value) -> (u16, Value) {
        let mut a = json!({"credential_handle": handle});
        a.as_object_mut().unwrap().extend(args.as_object().unwrap().clone());
        self.f.invoke_as(&self.bot, "s3_object", a).await
    }
}

fn lease_handle(v: &Value) -> String {
    v["result"]["lease_handle"].as_str().unwrap_or_else(|| panic!("no lease: {v}")).to_owned()
}

#[tokio::test]
async fn a_lease_assumes_the_role_with_the_exact_session_policy_duration_and_session_name() {
    let Some(e) = setup().await else { return };
    let (s, v) = e.lease(json!({"scope": "read_only", "ttl_seconds": 900, "buckets": ["leased"]})).await;
    assert_eq!(s, 200, "{v}");
    let lease_id = v["result"]["lease_id"].as_str().unwrap().to_owned();
    assert_eq!(v["result"]["buckets"], json!(["leased"]));
    assert_eq!(v["result"]["session_name"], json!(format!("s3bot@{lease_id}")));

    // What STS received and kept, as moto recorded it.
    let roles = e.moto.assumed_roles().await;
    assert_eq!(roles.len(), 1, "{roles:?}");
    let expected = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ListLeasedBuckets","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::leased"]},{"Sid":"ObjectsInLeasedBuckets","Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::leased/*"]}]}"#;
    assert_eq!(roles[0]["policy"], json!(expected));
    assert_eq!(roles[0]["session_name"], json!(format!("s3bot@{lease_id}")));
    assert_eq!(roles[0]["role_arn"], json!(ROLE_ARN));
    // The form STS was sent (moto does not record the duration): DurationSeconds from the TTL.
    let sent = e.relay.text();
    assert!(sent.contains("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fairlock-agent-s3"), "{sent}");
    assert!(sent.contains("&DurationSeconds=900&"), "{sent}");
    assert!(sent.contains(&format!("Credential={BASE_KEY_ID}/")), "signed with the handle's key pair");
    // Nothing of the session went back to the agent; the broker holds it sealed.
    let text = v.to_string();
    for k in ["access_key_id", "secret_access_key", "session_token"] {
        assert!(!text.contains(roles[0][k].as_str().unwrap()), "{k} in {text}");
    }
    let sealed: Vec<String> = e.f.store.all_sealed().await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(sealed.contains(&lease_handle(&v)), "{sealed:?}");

    // A longer lease, within the handle's limit, asks STS for that duration; the default is 900.
    let (s, v) = e.lease(json!({"scope": "read_write", "ttl_seconds": 1800})).await;
    assert_eq!(s, 200, "{v}");
    assert!(e.relay.text().contains("&DurationSeconds=1800&"));
    let roles = e.moto.assumed_roles().await;
    let rw = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ListLeasedBuckets","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::leased","arn:aws:s3:::other"]},{"Sid":"ObjectsInLeasedBuckets","Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],"Resource":["arn:aws:s3:::leased/*","arn:aws:s3:::other/*"]}]}"#;
    assert_eq!(roles[1]["policy"], json!(rw));
    let (s, _) = e.lease(json!({"scope": "read_only"})).await;
    assert_eq!(s, 200);
    assert_eq!(e.relay.text().matches("&DurationSeconds=900&").count(), 2);
}

#[tokio::test]
async fn get_put_list_and_delete_work_on_the_leased_bucket() {
    let Some(e) = setup().await else { return };
    let (s, v) = e.lease(json!({"scope": "read_write", "ttl_seconds": 900, "buckets": ["leased"]})).await;
    assert_eq!(s, 200, "{v}");
    let h = lease_handle(&v);

    let (s, v) = e.s3(&h, json!({"operation": "get", "bucket": "leased", "key": "reports/q1.txt"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["body"], "revenue up");
    assert_eq!((v["result"]["encoding"].as_str(), v["result"]["truncated"].as_bool()), (Some("utf-8"), Some(false)));

    let (s, v) = e.s3(&h, json!({"operation": "put", "bucket": "leased", "key": "notes/a b+é.txt", "body": "written by the agent"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["bytes"], 20);
    let (s, v) = e.s3(&h, json!({"operation": "get", "bucket": "leased", "key": "notes/a b+é.txt"})).await;
    assert_eq!((s, v["result"]["body"].as_str()), (200, Some("written by the agent")), "{v}");

    let (s, v) = e.s3(&h, json!({"operation": "list", "bucket": "leased"})).await;
    assert_eq!(s, 200, "{v}");
    let keys: Vec<&str> = v["result"]["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["notes/a b+é.txt", "reports/q1.txt"]);
    let (_, v) = e.s3(&h, json!({"operation": "list", "bucket": "leased", "key": "reports/"})).await;
    assert_eq!(v["result"]["keys"], json!([{"key": "reports/q1.txt", "size": 10}]));

    let (s, v) = e.s3(&h, json!({"operation": "delete", "bucket": "leased", "key": "notes/a b+é.txt"})).await;
    assert_eq!((s, &v["result"]["deleted"]), (200, &json!(true)), "{v}");
    let (s, v) = e.s3(&h, json!({"operation": "get", "bucket": "leased", "key": "notes/a b+é.txt"})).await;
    assert_eq!((s, code(&v)), (404, "not-found"), "{v}");

    // Binary content comes back as base64; content over the handle's cap (64 bytes) is cut.
    e.moto.object("leased", "bin", &[0xff, 0x00, 0x10]).await;
    let (_, v) = e.s3(&h, json!({"operation": "get", "bucket": "leased", "key": "bin"})).await;
    assert_eq!((v["result"]["encoding"].as_str(), v["result"]["body"].as_str()), (Some("base64"), Some("/wAQ")), "{v}");
    e.moto.object("leased", "big", &[b'x'; 1000]).await;
    let (_, v) = e.s3(&h, json!({"operation": "get", "bucket": "leased", "key": "big"})).await;
    assert_eq!((v["result"]["body"].as_str().map(str::len), v["result"]["truncated"].as_bool()), (Some(64), Some(true)), "{v}");
    let (s, v) = e.s3(&h, json!({"operation": "put", "bucket": "leased", "key": "k", "body": "y".repeat(65)})).await;
    assert_eq!((s, code(&v)), (413, "limit-exceeded"));
}

#[tokio::test]
async fn another_bucket_is_refused_before_any_request_leaves() {
    let Some(e) = setup().await else { return };
    let (_, v) = e.lease(json!({"scope": "read_write", "buckets": ["leased"]})).await;
    let h = lease_handle(&v);
    let before = e.relay.len();
    // `other` is one of the handle's buckets, but not this lease's.
    for (args, want) in [
        (json!({"operation": "get", "bucket": "other", "key": "private.txt"}), "bucket-not-allowed"),
        (json!({"operation": "list", "bucket": "other"}), "bucket-not-allowed"),
        (json!({"operation": "put", "bucket": "elsewhere", "key": "x", "body": "x"}), "bucket-not-allowed"),
        // A key that a URL parser would resolve into the other bucket.
        (json!({"operation": "get", "bucket": "leased", "key": "../other/private.txt"}), "invalid-arguments"),
        (json!({"operation": "get", "bucket": "leased", "key": "a\r\nb"}), "invalid-arguments"),
    ] {
        let (s, v) = e.s3(&h, args.clone()).await;
        assert_eq!((s, code(&v)), (if want == "invalid-arguments" { 400 } else { 403 }, want), "{args}: {v}");
        assert!(!v.to_string().contains("not for the agent"));
    }
    assert_eq!(e.relay.len(), before, "a refused call sent nothing: {}", e.relay.text());
    // The same call on the leased bucket does leave.
    let (s, _) = e.s3(&h, json!({"operation": "list", "bucket": "leased"})).await;
    assert_eq!(s, 200);
    assert!(e.relay.len() > before);
}

#[tokio::test]
async fn a_read_only_lease_cannot_put_or_delete() {
    let Some(e) = setup().await else { return };
    let (_, v) = e.lease(json!({"scope": "read_only", "buckets": ["leased"]})).await;
    let h = lease_handle(&v);
    let before = e.relay.len();
    let (s, v) = e.s3(&h, json!({"operation": "put", "bucket": "leased", "key": "x", "body": "x"})).await;
    assert_eq!((s, code(&v)), (403, "operation-not-allowed"), "{v}");
    let (s, v) = e.s3(&h, json!({"operation": "delete", "bucket": "leased", "key": "reports/q1.txt"})).await;
    assert_eq!((s, code(&v)), (403, "operation-not-allowed"), "{v}");
    assert_eq!(e.relay.len(), before);
    let (s, v) = e.s3(&h, json!({"operation": "get", "bucket": "leased", "key": "reports/q1.txt"})).await;
    assert_eq!((s, v["result"]["body"].as_str()), (200, Some("revenue up")));
    // The tool list shows a read-only, non-destructive s3_object with get and list only.
    let tools: Value = e.f.client.get(format!("{}/v1/tools", e.f.base)).bearer_auth(&e.bot).send().await.unwrap().json().await.unwrap();
    let t = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "s3_object").expect("s3_object listed").clone();
    assert_eq!(t["inputSchema"]["properties"]["credential_handle"]["enum"], json!([h]));
    assert_eq!(t["inputSchema"]["properties"]["operation"]["enum"], json!(["get", "list"]));
    assert_eq!(t["inputSchema"]["properties"]["bucket"]["enum"], json!(["leased"]));
    assert_eq!((t["annotations"]["readOnlyHint"].as_bool(), t["annotations"]["destructiveHint"].as_bool()), (Some(true), Some(false)));
    assert_eq!(t["annotations"]["openWorldHint"], true);
}

#[tokio::test]
async fn out_of_range_durations_and_foreign_buckets_mint_nothing() {
    let Some(e) = setup().await else { return };
    for (args, status, want) in [
        (json!({"scope": "read_only", "ttl_seconds": 899}), 403, "lease-not-allowed"),
        (json!({"scope": "read_only", "ttl_seconds": 1801}), 403, "lease-not-allowed"),
        (json!({"scope": "read_only", "ttl_seconds": 0}), 403, "lease-not-allowed"),
        (json!({"scope": "read_only", "buckets": ["leased", "payroll"]}), 403, "bucket-not-allowed"),
        (json!({"scope": "read_only", "buckets": []}), 400, "invalid-arguments"),
        (json!({"scope": "read_only", "tables": ["t"]}), 400, "invalid-arguments"),
        (json!({"scope": "admin"}), 400, "invalid-arguments"),
    ] {
        let (s, v) = e.lease(args.clone()).await;
        assert_eq!((s, code(&v)), (status, want), "{args}: {v}");
    }
    assert!(e.moto.assumed_roles().await.is_empty(), "no AssumeRole reached STS");
    assert_eq!(e.relay.len(), 0, "nothing was sent at all");
    assert!(e.f.store.list_leases().await.unwrap().is_empty(), "no lease record");
    // The base handle itself is never usable with s3_object.
    let (s, v) = e.s3("S3", json!({"operation": "list", "bucket": "leased"})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "{v}");
}

#[tokio::test]
async fn an_unknown_operation_is_invalid_arguments_and_sends_nothing() {
    let Some(e) = setup().await else { return };
    let (_, v) = e.lease(json!({"scope": "read_write", "buckets": ["leased"]})).await;
    let h = lease_handle(&v);
    let before = e.relay.len();
    for args in [
        json!({"operation": "copy", "bucket": "leased", "key": "a"}),
        json!({"operation": "GET", "bucket": "leased", "key": "a"}),
        json!({"operation": "get", "bucket": "leased"}),
        json!({"operation": "get", "bucket": "leased", "key": "a", "acl": "public-read"}),
    ] {
        let (s, v) = e.s3(&h, args.clone()).await;
        assert_eq!((s, code(&v)), (400, "invalid-arguments"), "{args}: {v}");
    }
    assert_eq!(e.relay.len(), before);
}

#[tokio::test]
async fn sts_down_is_upstream_unavailable_and_leaves_no_lease() {
    // No moto needed: nothing listens on this port.
    let (f, bot) = fixture(&format!("http://127.0.0.1:{}", free_port())).await;
    let (s, v) = f.invoke_as(&bot, "request_lease", json!({"credential_handle": "S3", "scope": "read_only"})).await;
    assert_eq!((s, code(&v)), (502, "upstream-unavailable"), "{v}");
    let leases = f.store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].status, "failed");
    let mut sealed: Vec<String> = f.store.all_sealed().await.unwrap().into_iter().map(|(n, _)| n).collect();
    sealed.sort();
    assert_eq!(sealed, ["API", "APP_DB", "RW_DB", "S3", "SECRET_ONLY"], "no credentials were stored");
    let (s, v) = f.invoke_as(&bot, "s3_object", json!({"credential_handle": leases[0].handle, "operation": "list", "bucket": "leased"})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "{v}");
    assert!(!v.to_string().contains("127.0.0.1"));
}

#[tokio::test]
async fn revocation_forgets_the_credentials_and_the_lease_handle_becomes_unavailable() {
    let Some(e) = setup().await else { return };
    let (_, v) = e.lease(json!({"scope": "read_only", "buckets": ["leased"]})).await;
    let (h, id) = (lease_handle(&v), v["result"]["lease_id"].as_str().unwrap().to_owned());
    let (s, _) = e.s3(&h, json!({"operation": "list", "bucket": "leased"})).await;
    assert_eq!(s, 200);
    let r = e.f.client.delete(format!("{}/v1/leases/{id}", e.f.base)).bearer_auth(&e.bot).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let l = e.f.store.lease(&id).await.unwrap().unwrap();
    assert_eq!(l.status, "revoked");
    let sealed: Vec<String> = e.f.store.all_sealed().await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(!sealed.contains(&h), "the temporary credentials are forgotten: {sealed:?}");
    let before = e.relay.len();
    let (s, v) = e.s3(&h, json!({"operation": "list", "bucket": "leased"})).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "{v}");
    assert_eq!(e.relay.len(), before);

    // Expiry goes the same way, through the reaper (revoking the agent brings its leases due).
    let (_, v) = e.lease(json!({"scope": "read_only"})).await;
    let h2 = lease_handle(&v);
    e.f.broker.revoke_agent("s3bot").await.unwrap();
    let sealed: Vec<String> = e.f.store.all_sealed().await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(!sealed.contains(&h2), "{sealed:?}");
}

#[tokio::test]
async fn t14_t18_aws_credentials_never_reach_results_or_the_audit() {
    let Some(e) = setup().await else { return };
    let (_, v) = e.lease(json!({"scope": "read_write", "buckets": ["leased"]})).await;
    let h = lease_handle(&v);
    let mut responses = v.to_string();
    let session = e.moto.assumed_roles().await[0].clone();
    let temp_secret = session["secret_access_key"].as_str().unwrap().to_owned();
    let temp_token = session["session_token"].as_str().unwrap().to_owned();
    let temp_id = session["access_key_id"].as_str().unwrap().to_owned();
    // An object that echoes the credentials back (T18), and an agent smuggling them in a put.
    // (Each within the 64-byte cap: a value cut by the cap is only partly known to the scrubber.)
    e.moto.object("leased", "echo.txt", format!("key={temp_secret}").as_bytes()).await;
    e.moto.object("leased", "id.txt", format!("id={temp_id}").as_bytes()).await;
    e.moto.object("leased", "base.txt", format!("base={BASE_SECRET}").as_bytes()).await;
    for args in [
        json!({"operation": "get", "bucket": "leased", "key": "echo.txt"}),
        json!({"operation": "get", "bucket": "leased", "key": "base.txt"}),
        json!({"operation": "get", "bucket": "leased", "key": "id.txt"}),
        json!({"operation": "list", "bucket": "leased"}),
        json!({"operation": "get", "bucket": "other", "key": "private.txt"}),
        json!({"operation": "get", "bucket": "leased", "key": "missing"}),
        json!({"operation": "put", "bucket": "leased", "key": temp_secret.clone(), "body": "x"}),
    ] {
        let (_, v) = e.s3(&h, args).await;
        responses.push_str(&v.to_string());
    }
    assert!(responses.contains("[REDACTED:S3__L"), "the echo was scrubbed under the lease's label: {responses}");
    assert!(responses.contains("[REDACTED:S3]"), "the base key was scrubbed: {responses}");
    let mut audit = String::new();
    for (_, r) in e.f.store.audit_tail(1000).await.unwrap() {
        audit.push_str(&serde_json::to_string(&r).unwrap());
    }
    for s in [BASE_KEY_ID, BASE_SECRET, &temp_secret, &temp_token, &temp_id] {
        assert!(!responses.contains(s), "{s} in responses");
        assert!(!audit.contains(s), "{s} in the audit");
    }
    assert!(audit.contains("s3_object") && audit.contains("request_lease"));
}

#[tokio::test]
async fn with_iam_enforced_the_temporary_credentials_are_signed_and_checked_by_the_cloud() {
    // Every request after the setup's nine is authenticated: moto verifies the SigV4 signature
    // and the session token, and evaluates the role's policy (moto 5.2 does not evaluate
    // session policies; the broker's bucket check and the exact policy are tested above).
    let Some(moto) = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "9")]).await else { return };
    let x = moto.iam(&[("Action", "CreateUser"), ("UserName", "broker")]).await;
    assert!(x.contains("broker"));
    let k = moto.iam(&[("Action", "CreateAccessKey"), ("UserName", "broker")]).await;
    let field = |t: &str, f: &str| t.split(&format!("<{f}>")).nth(1).and_then(|r| r.split(&format!("</{f}>")).next()).unwrap().to_owned();
    let (kid, ksecret) = (field(&k, "AccessKeyId"), field(&k, "SecretAccessKey"));
    let assume = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#;
    moto.iam(&[("Action", "PutUserPolicy"), ("UserName", "broker"), ("PolicyName", "assume"), ("PolicyDocument", assume)]).await;
    // The role itself may use `leased` only.
    moto.create_role(Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":["arn:aws:s3:::leased","arn:aws:s3:::leased/*"]}]}"#)).await;
    moto.bucket("leased").await;
    moto.bucket("other").await;
    moto.object("leased", "reports/q1.txt", b"revenue up").await;
    moto.object("other", "private.txt", b"not for the agent").await;
    // Setup is over: a request with made-up credentials is now refused.
    let (s, _) = moto.setup("s3", "GET", "/leased", vec![]).await;
    assert_eq!(s, 403);

    let (f, bot) = fixture(&moto.url).await;
    let data = f.dir.path().join("data");
    let v = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), f.store.clone());
    v.put("S3", &Secret::from_str_value(&json!({"access_key_id": kid, "secret_access_key": ksecret}).to_string())).await.unwrap();
    f.broker.refresh().await.unwrap();
    let (s, v) = f.invoke_as(&bot, "request_lease", json!({"credential_handle": "S3", "scope": "read_write", "buckets": ["leased"]})).await;
    assert_eq!(s, 200, "{v}");
    let h = lease_handle(&v);
    for args in [
        json!({"operation": "get", "bucket": "leased", "key": "reports/q1.txt"}),
        json!({"operation": "put", "bucket": "leased", "key": "notes/x y.txt", "body": "hello"}),
        json!({"operation": "delete", "bucket": "leased", "key": "notes/x y.txt"}),
    ] {
        let (s, v) = f.invoke_as(&bot, "s3_object", {
            let mut a = args.clone();
            a["credential_handle"] = json!(h);
            a
        })
        .await;
        assert_eq!(s, 200, "moto accepted the signature: {args}: {v}");
    }
    // A lease on `other` (allowed by the handle, not by the role): the cloud refuses the
    // temporary credentials, and the agent gets a code, not AWS's error body.
    let (s, v) = f.invoke_as(&bot, "request_lease", json!({"credential_handle": "S3", "scope": "read_only", "buckets": ["other"]})).await;
    assert_eq!(s, 200, "{v}");
    let h2 = lease_handle(&v);
    let (s, v) = f.invoke_as(&bot, "s3_object", json!({"credential_handle": h2, "operation": "get", "bucket": "other", "key": "private.txt"})).await;
    assert_eq!((s, code(&v)), (502, "upstream-unavailable"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("403 (AccessDenied)"), "{v}");
    assert!(!v.to_string().contains("not for the agent"));
}
