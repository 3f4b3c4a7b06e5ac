//! T31: connected OAuth accounts against a real authorization server (npm `oidc-provider`, in
//! tests/oauth/provider.mjs: PKCE required, resource indicators, refresh-token rotation where a
//! reused refresh token revokes the whole grant, RFC 7009 revocation) and its resource server,
//! which accepts only live access tokens issued for it.
//!
//! The connect flow is driven over HTTP here (the provider logs in and consents at once,
//! `AUTO_CONSENT=1`); `t31_connect_flow_in_chromium` drives the provider's own login and consent
//! pages in headless Chromium. Without node, the provider's node modules or (for the browser
//! test) Chromium, the tests skip, unless AIRLOCK_REQUIRE_SERVICES=1 (CI), where they fail.

mod common;
use common::spawn_announcing;

use airlock_core::config::Config;
use airlock_server::Broker;
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require() -> bool {
    std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Why the provider cannot run here, if it cannot.
fn missing_provider() -> Option<String> {
    if !root().join("tests/oauth/node_modules/oidc-provider").exists() {
        return Some("tests/oauth/node_modules is missing (cd tests/oauth && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is missing".into());
    }
    None
}

fn skip(why: Option<String>) -> bool {
    match why {
        Some(w) if require() => panic!("{w} (AIRLOCK_REQUIRE_SERVICES=1)"),
        Some(w) => {
            println!("skipped: {w}");
            true
        }
        None => false,
    }
}

/// The authorization server and resource server, stopped when dropped.
struct Provider {
    child: Child,
    info: Value,
    http: reqwest::Client,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, made with the openssl
/// command: the provider serves HTTPS (the oauth2 crate refuses a revocation endpoint over plain
/// HTTP), and the handle trusts the authority through `ca_file`.
fn tls_files(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=airlock test CA"]].concat());
    run(&[&["req"][..], &ec, &["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "leaf.ext"]);
}

impl Provider {
    fn start(redirect: &str, o: &Options<'_>, tls: &Path) -> Provider {
        let (access_ttl, auto) = (o.access_ttl, o.auto);
        let (child, line) = spawn_announcing("the authorization server", || {
            let mut c = Command::new("node");
            c.arg(root().join("tests/oauth/provider.mjs"))
                .env("ROTATE", if o.rotate { "1" } else { "0" })
                .env("TLS_CERT", tls.join("cert.pem"))
                .env("TLS_KEY", tls.join("key.pem"))
                .env("REDIRECT_URI", redirect)
                .env("ACCESS_TTL", access_ttl.to_string())
                .env("AUTO_CONSENT", if auto { "1" } else { "0" })
                .stderr(Stdio::null());
            c
        });
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("provider said {line:?}: {e}"));
        Provider { child, info, http: reqwest::Client::new() }
    }

    fn get(&self, k: &str) -> String {
        self.info[k].as_str().unwrap().to_owned()
    }

    async fn stats(&self) -> Value {
        self.http.get(format!("{}/_stats", self.get("rs"))).send().await.unwrap().json().await.unwrap()
    }

    async fn stat(&self, k: &str) -> i64 {
        self.stats().await[k].as_i64().unwrap()
    }

    async fn tokens(&self) -> Vec<String> {
        self.http.get(format!("{}/_tokens", self.get("rs"))).send().await.unwrap().json().await.unwrap()
    }

    async fn mode(&self, q: &str) {
        let r = self.http.post(format!("{}/_mode?{q}", self.get("rs"))).send().await.unwrap();
        assert!(r.status().is_success());
    }
}

/// A broker (SQLite, or a PostgreSQL store shared with other replicas) with an oauth handle on
/// the provider, served on 127.0.0.1, and an agent `bot`.
struct Setup {
    dir: tempfile::TempDir,
    broker: Arc<Broker>,
    base: String,
    token: String,
    other_token: String,
    provider: Provider,
    http: reqwest::Client,
}

struct Options<'a> {
    access_ttl: u64,
    margin: u64,
    auto: bool,
    store_url: Option<&'a str>,
    extra_oauth: &'a str,
    /// Endpoints from the issuer's metadata instead of the configuration.
    discover: bool,
    /// The provider rotates refresh tokens.
    rotate: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { access_ttl: 3600, margin: 60, auto: true, store_url: None, extra_oauth: "", discover: false, rotate: true }
    }
}

fn config_text(base: &str, p: &Provider, o: &Options<'_>, outbox: &Path) -> String {
    let store_url = o.store_url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let endpoints = if o.discover {
        format!("issuer = \"{}\"", p.get("issuer"))
    } else {
        format!("authorization_url = \"{}\"\ntoken_url = \"{}\"\nrevocation_url = \"{}\"", p.get("authorize"), p.get("token"), p.get("revocation"))
    };
    format!(
        r#"
[store]
data_dir = "data"
{store_url}
[limits]
rate_per_minute = 100000

[shares]
base_url = "{base}"
[shares.channels.box]
type = "outbox"
path = "{outbox}"
[shares.recipients]
"owner@example.com" = "box"
"someone@example.com" = "box"

[handles.ACME]
kind = "oauth"
secret = "local:ACME_CLIENT"
description = "the owner's Acme account"
[handles.ACME.oauth]
{endpoints}
client_id = "{client_id}"
scopes = ["api:read"]
resource = "{resource}"
owners = ["owner@example.com"]
refresh_margin_seconds = {margin}
ca_file = "ca.pem"
{extra}
[handles.ACME.http]
destinations = [{{ url = "{rs}/", methods = ["GET", "POST"] }}]

[agents.bot]
grants = [{{ handle = "ACME", tools = ["http_request", "connect_account", "connect_status"] }}]

[agents.other]
grants = [{{ handle = "ACME", tools = ["connect_status"] }}]
"#,
        outbox = outbox.display(),
        client_id = p.get("client_id"),
        resource = p.get("resource"),
        rs = p.get("rs"),
        margin = o.margin,
        extra = o.extra_oauth,
    )
}

/// Opens a broker on `dir` (keys made on first use) and serves it on `listener`.
async fn serve(dir: &Path, listener: tokio::net::TcpListener) -> Arc<Broker> {
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    let broker = Arc::new(Broker::open(cfg).await.unwrap());
    tokio::spawn(airlock_server::http::serve(listener, broker.clone(), std::future::pending()));
    broker
}

impl Setup {
    async fn start(o: Options<'_>) -> Option<Setup> {
        if skip(missing_provider()) {
            return None;
        }
        common::capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tls_files(dir.path());
        let provider = Provider::start(&format!("{base}/oauth/callback"), &o, dir.path());
        std::fs::write(dir.path().join("airlock.toml"), config_text(&base, &provider, &o, &dir.path().join("outbox.jsonl"))).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        MasterKey::create(&data.join("master.key")).unwrap();
        AuditKey::create(&data).unwrap();
        let cfg = Config::load(&dir.path().join("airlock.toml")).unwrap();
        let store = Store::connect(&cfg.store).await.unwrap();
        let vault = Vault::new(MasterKey::load(&data.join("master.key")).unwrap(), store.clone());
        vault.put("ACME_CLIENT", &airlock_core::Secret::from_str_value(&provider.get("client_secret"))).await.unwrap();
        let (_, t1) = store.add_agent("bot", None, None).await.unwrap();
        let (_, t2) = store.add_agent("other", None, None).await.unwrap();
        let broker = serve(dir.path(), listener).await;
        Some(Setup {
            broker,
            base,
            token: t1.reveal().to_owned(),
            other_token: t2.reveal().to_owned(),
            provider,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap())
                .build()
                .unwrap(),
            dir,
        })
    }

    /// Another broker on the same data directory and store (a replica), served on its own port.
    async fn replica(&self) -> (Arc<Broker>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        (serve(self.dir.path(), listener).await, base)
    }

    async fn invoke_at(&self, base: &str, token: &str, tool: &str, args: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{base}/v1/invoke"))
            .bearer_auth(token)
            .json(&json!({"tool": tool, "arguments": args}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn invoke(&self, tool: &str, args: Value) -> (u16, Value) {
        self.invoke_at(&self.base, &self.token, tool, args).await
    }

    async fn api(&self, path: &str) -> (u16, Value) {
        self.invoke("http_request", json!({"credential_handle": "ACME", "method": "GET", "path_or_url": path})).await
    }

    /// The last delivery in the outbox (the owner's code and link).
    fn delivery(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("outbox.jsonl")).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }

    /// `connect_account` for the owner: the agent's answer and the owner's code.
    async fn ask(&self) -> (Value, String) {
        let (s, v) = self.invoke("connect_account", json!({"credential_handle": "ACME", "owner": "owner@example.com"})).await;
        assert_eq!(s, 200, "{v}");
        let d = self.delivery();
        assert_eq!(d["link"], v["result"]["link"]);
        (v["result"].clone(), d["code"].as_str().unwrap().to_owned())
    }

    /// The owner's code on the connect page: the authorization URL and the browser binding.
    async fn verify(&self, id: &str, code: &str) -> (u16, Value, Option<String>) {
        let r = self.http.post(format!("{}/v1/connect/{id}/verify", self.base)).json(&json!({"code": code})).send().await.unwrap();
        let cookie = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        (r.status().as_u16(), r.json().await.unwrap(), cookie)
    }

    /// Follows the provider's redirects (login and consent are automatic) to the callback URL.
    async fn authorize(&self, url: &str) -> String {
        let mut jar: HashMap<String, String> = HashMap::new();
        let mut url = url.to_owned();
        for _ in 0..12 {
            let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let r = self.http.get(&url).header("cookie", cookie.join("; ")).send().await.unwrap();
            for c in r.headers().get_all("set-cookie") {
                let first = c.to_str().unwrap().split(';').next().unwrap();
                if let Some((k, v)) = first.split_once('=') {
                    jar.insert(k.to_owned(), v.to_owned());
                }
            }
            let loc = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_else(|| panic!("no redirect from {url}: {}", r.status()));
            let next = url::Url::parse(&url).unwrap().join(&loc).unwrap().to_string();
            if next.starts_with(&format!("{}/oauth/callback", self.base)) {
                return next;
            }
            url = next;
        }
        panic!("the provider never redirected back");
    }

    /// GET the callback with `cookie`; the status and the page.
    async fn callback(&self, url: &str, cookie: Option<&str>) -> (u16, String) {
        let mut r = self.http.get(url);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The whole connect flow; the answers the agent saw on the way.
    async fn connect(&self) -> Vec<Value> {
        let (asked, code) = self.ask().await;
        let id = asked["connect_id"].as_str().unwrap();
        let (s, v, cookie) = self.verify(id, &code).await;
        assert_eq!(s, 200, "{v}");
        let back = self.authorize(v["authorize_url"].as_str().unwrap()).await;
        let (s, page) = self.callback(&back, cookie.as_deref()).await;
        assert_eq!(s, 200, "{page}");
        assert!(page.contains("Account connected"), "{page}");
        let (_, status) = self.invoke("connect_status", json!({"credential_handle": "ACME", "connect_id": id})).await;
        assert_eq!(status["result"]["status"], "connected", "{status}");
        vec![asked, status]
    }

    /// Everything that must never hold a token: the agent's answers, the audit log and every
    /// log line the brokers wrote (at trace level).
    async fn sweep(&self, seen: &[Value]) {
        let mut haystack: Vec<String> = seen.iter().map(Value::to_string).collect();
        for (_, rec) in self.broker.store().audit_tail(100_000).await.unwrap() {
            haystack.push(serde_json::to_string(&rec).unwrap());
        }
        let log = common::captured_logs();
        assert!(log.contains("airlock"), "the brokers' log lines are captured");
        haystack.push(log);
        let tokens = self.provider.tokens().await;
        assert!(!tokens.is_empty());
        let mut canaries = tokens.clone();
        canaries.push(self.provider.get("client_secret"));
        for c in &canaries {
            for h in &haystack {
                assert!(!h.contains(c.as_str()), "a token or the client secret leaked into {h}");
            }
        }
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn wait_until_due(secs: u64) {
    tokio::time::sleep(Duration::from_millis(secs * 1000 + 200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_connect_then_calls_carry_the_token_and_no_answer_or_record_holds_one() {
    let Some(s) = Setup::start(Options::default()).await else { return };
    let (_, before) = s.api("/api/items").await;
    assert_eq!(before["error"]["code"], "account-not-connected", "{before}");
    let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME"})).await;
    assert_eq!(st["result"]["status"], "not-connected");
    let mut seen = s.connect().await;
    let (code, ok) = s.api("/api/items").await;
    assert_eq!(code, 200, "{ok}");
    assert_eq!(ok["result"]["status"], 200, "{ok}");
    assert!(ok["result"]["body"].as_str().unwrap().contains("owner-1"), "{ok}");
    // A hostile upstream echoes the bearer token back: the result is scrubbed.
    let (_, echoed) = s.api("/echo/me").await;
    assert!(echoed["result"]["body"].as_str().unwrap().contains("[REDACTED:ACME]"), "{echoed}");
    // The agent's tools say nothing secret either.
    let tools: Value = s.http.get(format!("{}/v1/tools", s.base)).bearer_auth(&s.token).send().await.unwrap().json().await.unwrap();
    let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME"})).await;
    assert_eq!(st["result"]["status"], "connected");
    seen.extend([before, ok, echoed, tools, st]);
    s.sweep(&seen).await;
    // Nothing was refreshed: one code exchange only.
    assert_eq!(s.provider.stat("refresh").await, 0);
    let report = s.broker.store().verify_audit(&AuditKey::load_public(&s.dir.path().join("data")).unwrap()).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_a_hundred_calls_across_expiry_refresh_once_and_all_succeed() {
    let Some(s) = Setup::start(Options { access_ttl: 4, margin: 1, ..Options::default() }).await else { return };
    let mut seen = s.connect().await;
    wait_until_due(3).await;
    let s = Arc::new(s);
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.api(&format!("/api/n{i}")).await })
        })
        .collect();
    for c in calls {
        let (code, v) = c.await.unwrap();
        assert_eq!((code, v["result"]["status"].as_i64()), (200, Some(200)), "{v}");
        seen.push(v);
    }
    // With rotation on, a second refresh with the same refresh token would have revoked the grant.
    let stats = s.provider.stats().await;
    assert_eq!(stats["refresh"], 1, "{stats}");
    assert_eq!(stats["grant_revoked"], 0, "{stats}");
    assert_eq!(stats["api_refused"], 0, "{stats}");
    s.sweep(&seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_an_upstream_401_forces_one_refresh_and_one_retry() {
    let Some(s) = Setup::start(Options::default()).await else { return };
    s.connect().await;
    s.provider.mode("api=401-once").await;
    let (code, v) = s.api("/api/x").await;
    assert_eq!((code, v["result"]["status"].as_i64()), (200, Some(200)), "{v}");
    let stats = s.provider.stats().await;
    assert_eq!((stats["refresh"].as_i64(), stats["api_refused"].as_i64()), (Some(1), Some(1)), "{stats}");
    // An upstream that keeps refusing gets one refresh per call, not a loop: its 401 is the answer.
    for _ in 0..2 {
        s.provider.mode("api=401-once").await;
        let (_, v) = s.api("/api/x").await;
        assert_eq!(v["result"]["status"], 200, "{v}");
    }
    assert_eq!(s.provider.stat("refresh").await, 3);
    assert_eq!(s.provider.stat("grant_revoked").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_invalid_grant_marks_needs_reauth_and_the_provider_is_not_asked_again() {
    let Some(s) = Setup::start(Options { access_ttl: 3, margin: 1, ..Options::default() }).await else { return };
    s.connect().await;
    s.provider.mode("token=invalid_grant").await;
    wait_until_due(2).await;
    let (code, v) = s.api("/api/x").await;
    assert_eq!((code, v["error"]["code"].as_str()), (409, Some("needs-reauth")), "{v}");
    let asked = s.provider.stat("token_requests").await;
    let (_, again) = s.api("/api/x").await;
    assert_eq!(again["error"]["code"], "needs-reauth");
    assert_eq!(s.provider.stat("token_requests").await, asked, "a refused grant is not tried again");
    let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME"})).await;
    assert_eq!(st["result"]["status"], "needs-reauth");
    // The owner connects again and the account works.
    s.provider.mode("token=ok").await;
    s.connect().await;
    let (_, v) = s.api("/api/x").await;
    assert_eq!(v["result"]["status"], 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_a_provider_that_fails_or_stalls_keeps_the_account_and_backs_off() {
    let Some(s) = Setup::start(Options { access_ttl: 3, margin: 1, extra_oauth: "token_timeout_ms = 1500", ..Options::default() }).await
    else {
        return;
    };
    s.connect().await;
    for mode in ["503", "nonjson"] {
        s.provider.mode(&format!("token={mode}")).await;
        wait_until_due(3).await;
        let before = s.provider.stat("token_requests").await;
        let (code, v) = s.api("/api/x").await;
        assert_eq!((code, v["error"]["code"].as_str()), (502, Some("upstream-unavailable")), "{mode}: {v}");
        // Backing off: the next call does not ask the provider again.
        let (_, v) = s.api("/api/x").await;
        assert_eq!(v["error"]["code"], "upstream-unavailable", "{mode}: {v}");
        assert_eq!(s.provider.stat("token_requests").await, before + 1, "{mode}");
        let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME"})).await;
        assert_eq!(st["result"]["status"], "connected", "{mode}: the tokens stay");
        // After the back-off the provider is back and the account works.
        s.provider.mode("token=ok").await;
        tokio::time::sleep(Duration::from_millis(5_200)).await;
        let (_, v) = s.api("/api/x").await;
        assert_eq!(v["result"]["status"], 200, "{mode}: {v}");
    }
    // A token endpoint slower than the timeout may have spent the refresh token: the account
    // needs its owner again, and the token is never sent twice.
    s.provider.mode("token=slow").await;
    wait_until_due(3).await;
    let (_, v) = s.api("/api/x").await;
    assert_eq!(v["error"]["code"], "needs-reauth", "{v}");
    assert_eq!(s.provider.stat("grant_revoked").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_forged_replayed_foreign_and_late_callbacks_finish_nothing() {
    let Some(s) = Setup::start(Options::default()).await else { return };
    let (asked, code) = s.ask().await;
    let id = asked["connect_id"].as_str().unwrap().to_owned();
    // The page shows who asks for what; an unknown link is refused like a used one.
    let view: Value = s.http.get(format!("{}/v1/connect/{id}", s.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!((view["connect"]["agent"].as_str(), view["connect"]["handle"].as_str()), (Some("bot"), Some("ACME")), "{view}");
    let unknown = s.http.get(format!("{}/v1/connect/nope", s.base)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // A wrong code is refused and counted.
    let (st, v, cookie) = s.verify(&id, "WRONGCOD").await;
    assert_eq!((st, v["error"]["code"].as_str(), cookie), (403, Some("owner-not-allowed"), None), "{v}");
    // Another agent cannot read this link's status.
    let (_, other) = s.invoke_at(&s.base, &s.other_token, "connect_status", json!({"credential_handle": "ACME", "connect_id": id})).await;
    assert_eq!(other["error"]["code"], "connect-unavailable", "{other}");
    let (_, v, cookie) = s.verify(&id, &code.to_lowercase()).await;
    let cookie = cookie.expect("a browser binding");
    let back = s.authorize(v["authorize_url"].as_str().unwrap()).await;
    // Forged state, no cookie, another browser's cookie: nothing is finished.
    let mut forged = url::Url::parse(&back).unwrap();
    let pairs: Vec<(String, String)> = forged.query_pairs().map(|(k, v)| (k.to_string(), if k == "state" { "forged".into() } else { v.into_owned() })).collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(s.callback(forged.as_str(), Some(&cookie)).await.0, 404);
    assert_eq!(s.callback(&back, None).await.0, 404);
    let (name, _) = cookie.split_once('=').unwrap();
    assert_eq!(s.callback(&back, Some(&format!("{name}=someone-else"))).await.0, 404);
    // The real one, once; a replay finds nothing.
    assert_eq!(s.callback(&back, Some(&cookie)).await.0, 200);
    assert_eq!(s.callback(&back, Some(&cookie)).await.0, 404);
    let (st, _, _) = s.verify(&id, &code).await;
    assert_eq!(st, 404, "a finished link takes no code");
    // A callback after the link expired finishes nothing, even with the right state and browser.
    let (asked, code) = s.ask().await;
    let late = asked["connect_id"].as_str().unwrap().to_owned();
    let (_, v, cookie) = s.verify(&late, &code).await;
    let back = s.authorize(v["authorize_url"].as_str().unwrap()).await;
    let pool = s.broker.store().pool().expect("a SQLite store").clone();
    sqlx::query("UPDATE oauth_connects SET expires_at = ? WHERE id = ?").bind(chrono_now() - 1).bind(&late).execute(&pool).await.unwrap();
    assert_eq!(s.callback(&back, cookie.as_deref()).await.0, 404);
    let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME", "connect_id": late})).await;
    assert_eq!(st["result"]["status"], "expired", "{st}");
    // Five wrong codes end a link for good, even for the right code afterwards.
    let (asked, code) = s.ask().await;
    let id = asked["connect_id"].as_str().unwrap();
    for _ in 0..5 {
        s.verify(id, "AAAAAAAA").await;
    }
    assert_eq!(s.verify(id, &code).await.0, 404);
    // An owner the handle does not name is refused before anything is sent.
    let (st, v) = s.invoke("connect_account", json!({"credential_handle": "ACME", "owner": "someone@example.com"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("owner-not-allowed")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_revoke_ends_the_grant_at_the_provider_and_here() {
    let Some(s) = Setup::start(Options::default()).await else { return };
    s.connect().await;
    let h = s.broker.config().handles.values().find(|h| h.name.as_str() == "ACME").unwrap().clone();
    assert_eq!(s.broker.revoke_account(&h, &airlock_server::broker::Revoker::OPERATOR).await.unwrap(), Some(true));
    let stats = s.provider.stats().await;
    assert_eq!(stats["revocations"], 1, "{stats}");
    let (_, v) = s.api("/api/x").await;
    assert_eq!(v["error"]["code"], "account-not-connected", "{v}");
    assert_eq!(s.broker.revoke_account(&h, &airlock_server::broker::Revoker::OPERATOR).await.unwrap(), None);
    let events: Vec<String> = s.broker.store().audit_tail(1000).await.unwrap().into_iter().map(|(_, r)| r.tool).collect();
    for e in ["connect_verified", "account_connected", "account_revoked"] {
        assert!(events.iter().any(|t| t == e), "{e} not audited: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_two_replicas_on_postgres_racing_the_same_expiry_refresh_once() {
    const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
    let pg = tokio::net::TcpStream::connect("127.0.0.1:5432").await.is_ok();
    if skip((!pg).then(|| "PostgreSQL at 127.0.0.1:5432 is unreachable".to_owned())) {
        return;
    }
    use sqlx::Connection;
    let db = format!("airlock_t31_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(ADMIN).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db}")).execute(&mut admin).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {db}")).execute(&mut admin).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let Some(s) = Setup::start(Options { access_ttl: 4, margin: 1, store_url: Some(&url), ..Options::default() }).await else { return };
    let (_replica, other_base) = s.replica().await;
    s.connect().await;
    wait_until_due(3).await;
    let s = Arc::new(s);
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let s = s.clone();
            let base = if i % 2 == 0 { s.base.clone() } else { other_base.clone() };
            tokio::spawn(async move {
                let args = json!({"credential_handle": "ACME", "method": "GET", "path_or_url": "/api/r"});
                s.invoke_at(&base, &s.token, "http_request", args).await
            })
        })
        .collect();
    for c in calls {
        let (code, v) = c.await.unwrap();
        assert_eq!((code, v["result"]["status"].as_i64()), (200, Some(200)), "{v}");
    }
    let stats = s.provider.stats().await;
    assert_eq!((stats["refresh"].as_i64(), stats["grant_revoked"].as_i64()), (Some(1), Some(0)), "{stats}");
    drop(s);
    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_connect_flow_in_chromium() {
    let browser = if !Path::new("/usr/bin/chromium").exists() {
        Some("/usr/bin/chromium is missing (apt-get install chromium)".to_owned())
    } else if !root().join("tests/browser/node_modules/playwright-core").exists() {
        Some("tests/browser/node_modules is missing (cd tests/browser && npm ci)".to_owned())
    } else {
        None
    };
    if skip(browser) {
        return;
    }
    let Some(s) = Setup::start(Options { auto: false, ..Options::default() }).await else { return };
    let (asked, code) = s.ask().await;
    let out = tokio::process::Command::new("node")
        .arg(root().join("tests/browser/connect.mjs"))
        .current_dir(root().join("tests/browser"))
        .env("AIRLOCK_CONNECT_LINK", asked["link"].as_str().unwrap())
        .env("AIRLOCK_OWNER_CODE", &code)
        .output()
        .await
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success() && report.contains(" 0 failed"), "browser checks failed:\n{report}");
    let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME", "connect_id": asked["connect_id"]})).await;
    assert_eq!(st["result"]["status"], "connected", "{st}");
    let (_, v) = s.api("/api/me").await;
    assert_eq!(v["result"]["status"], 200, "{v}");
    s.sweep(&[asked, st, v]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_discovered_endpoints_and_extra_parameters_reach_the_provider() {
    let o = Options { discover: true, extra_oauth: "authorize_params = { prompt = \"consent\" }", ..Options::default() };
    let Some(s) = Setup::start(o).await else { return };
    s.connect().await;
    let stats = s.provider.stats().await;
    let a = &stats["last_authorize"];
    assert_eq!((a["prompt"].as_str(), a["code_challenge_method"].as_str(), a["scope"].as_str()), (Some("consent"), Some("S256"), Some("api:read")), "{stats}");
    assert_eq!(a["resource"].as_str(), Some(s.provider.get("resource").as_str()), "{stats}");
    let (_, v) = s.api("/api/x").await;
    assert_eq!(v["result"]["status"], 200, "{v}");
    // The discovered revocation endpoint is used too.
    let h = s.broker.config().handles.values().find(|h| h.name.as_str() == "ACME").unwrap().clone();
    assert_eq!(s.broker.revoke_account(&h, &airlock_server::broker::Revoker::OPERATOR).await.unwrap(), Some(true));
    assert_eq!(s.provider.stat("revocations").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_keep_alive_refreshes_an_idle_account_before_it_expires() {
    let o = Options { access_ttl: 4, margin: 2, extra_oauth: "keep_alive = true", ..Options::default() };
    let Some(s) = Setup::start(o).await else { return };
    s.connect().await;
    // No call at all: the serving loop refreshes it (its tick is 2 s).
    let t0 = std::time::Instant::now();
    while s.provider.stat("refresh").await < 2 && t0.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = s.provider.stats().await;
    assert!(stats["refresh"].as_i64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["grant_revoked"], 0, "{stats}");
    let (_, v) = s.api("/api/x").await;
    assert_eq!(v["result"]["status"], 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_a_provider_that_does_not_rotate_keeps_the_first_refresh_token_working() {
    let Some(s) = Setup::start(Options { access_ttl: 3, margin: 1, rotate: false, ..Options::default() }).await else { return };
    s.connect().await;
    // Three refreshes, each answered without a refresh token: the one from the connect is kept.
    for round in 1..=3 {
        wait_until_due(2).await;
        let (_, v) = s.api("/api/x").await;
        assert_eq!(v["result"]["status"], 200, "round {round}: {v}");
        assert_eq!(s.provider.stat("refresh").await, round, "round {round}");
    }
    assert_eq!(s.provider.stat("grant_revoked").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t29_t31_an_address_guessing_connect_links_is_slowed_down() {
    let Some(s) = Setup::start(Options::default()).await else { return };
    // [shares] failed_consumes_per_minute (30 by default) requests that find nothing, then 429.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = s.http.get(format!("{}/v1/connect/guess{i}", s.base)).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..30].iter().all(|&c| c == 404), "{statuses:?}");
    assert!(statuses[30..].iter().all(|&c| c == 429), "{statuses:?}");
    let (st, v, _) = s.verify("guess", "AAAAAAAA").await;
    assert_eq!((st, v["error"]["code"].as_str()), (429, Some("rate-limited")), "{v}");
    // The limit is per address: the agent's own calls are not affected.
    let (_, st) = s.invoke("connect_status", json!({"credential_handle": "ACME"})).await;
    assert_eq!(st["result"]["status"], "not-connected", "{st}");
}
