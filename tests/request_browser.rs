//! Requests for a secret in a real browser: `airlock serve` on a free port, an agent calls
//! `request_secret` over REST, the link is read from the recipient's outbox, and
//! tests/browser/request.mjs drives headless Chromium (playwright-core) through the intake page
//! (crates/server/web/request.html, request.js, request-format.js: HPKE in WebCrypto), recording
//! every request and response of the page. This side asserts on what it printed: the page shows
//! the exact binding, the value lands as a handle the agent can use (the upstream sees it) but
//! that the browser's traffic, the agent's results, the audit, the server's logs and the data
//! directory never hold in clear, and the link's proof never travels in a URL.
//!
//! Without Chromium or the node modules the tests skip, unless AIRLOCK_REQUIRE_SERVICES=1 (CI),
//! where they fail.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{airlock_in, missing_browser, require, root, Server};

/// The person's value: distinctive, so a sweep finds it anywhere.
const CANARY: &str = "sk_live_canaryBrowser_R7x2Q9";
/// A part of it no other text holds.
const CANARY_PART: &str = "canaryBrowser";
/// What the agent says the key is for; shown to the person as text, never as markup.
const DESCRIPTION: &str = "Payments sandbox key for the nightly <b>billing</b> job <img src=x onerror=\"window.__pwned=1\">";
const HANDLE: &str = "PAYMENTS_KEY";

fn skip_or_fail() -> bool {
    if let Some(why) = missing_browser() {
        if require() {
            panic!("AIRLOCK_REQUIRE_SERVICES=1 but {why}");
        }
        eprintln!("skipping: {why}");
        return true;
    }
    false
}

/// An HTTP server on 127.0.0.1:0 that records each request's Authorization header and answers
/// with it (so the agent's result would carry the key if airlock did not scrub it).
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request the upstream got: "METHOD /path" and its Authorization header.
type Seen = (String, Option<String>);

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                let (mut auth, mut length) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "authorization" => auth = Some(v.trim().to_owned()),
                            "content-length" => length = v.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let answer = json!({"ok": true, "authorization": auth}).to_string();
                s.lock().unwrap().push((target, auth));
                let _ =
                    write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len());
            }
        });
        Upstream { addr, seen }
    }
}

/// `airlock serve` with the request feature set up: a Cedar policy letting `bot` ask for keys
/// bound to 127.0.0.1 and use them at once, an outbox channel for alice@example.com, links based
/// on the served address. Its stderr (RUST_LOG=debug) is kept.
struct Setup {
    dir: tempfile::TempDir,
    base: String,
    token: String,
    upstream: Upstream,
    logs: Arc<Mutex<Vec<u8>>>,
    server: Option<Server>,
    client: reqwest::Client,
}

/// Cedar: `bot` may ask for keys bound to 127.0.0.1 and plain secrets, and may use what it was
/// given at once (crates/server/tests/requests.rs, `policy(true)`).
const POLICY: &str = r#"@id("bot-may-ask")
permit(principal == Airlock::Agent::"bot", action == Airlock::Action::"request_secret", resource)
when { resource.requested && (resource.kind == "generic" || resource.hosts.contains("127.0.0.1")) };

@id("bot-uses-what-it-asked-for")
permit(principal == Airlock::Agent::"bot", action == Airlock::Action::"http_request", resource)
when { resource.requested && resource.hosts.contains("127.0.0.1") };
"#;

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

impl Setup {
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(&airlock_in(d, &["init"], None, &[]));
        let upstream = Upstream::start();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let policy = d.join("requests.cedar");
        std::fs::write(&policy, POLICY).unwrap();
        std::fs::write(
            d.join("airlock.toml"),
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
socket = "off"

[store]
data_dir = "airlock-data"

[policy]
files = ["{policy}"]

[shares]
base_url = "{base}"
[shares.channels.box]
type = "outbox"
path = "{outbox}"
[shares.recipients]
"alice@example.com" = "box"

[agents.bot]
grants = []
"#,
                policy = policy.display(),
                outbox = d.join("outbox.jsonl").display(),
            ),
        )
        .unwrap();
        let token = ok(&airlock_in(d, &["agent", "add", "bot"], None, &[]));
        let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .current_dir(d)
            .env("AIRLOCK_CONFIG", d.join("airlock.toml"))
            .env("RUST_LOG", "debug")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (mut stderr, l) = (child.stderr.take().unwrap(), logs.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                l.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut server = Server(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("airlock serve exited ({status}):\n{}", String::from_utf8_lossy(&logs.lock().unwrap()));
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "airlock serve did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Setup { dir, base, token, upstream, logs, server: Some(server), client: reqwest::Client::new() }
    }

    fn destination(&self) -> String {
        format!("http://127.0.0.1:{}/v1/", self.upstream.addr.port())
    }

    /// POST /v1/invoke as the agent: (status, body).
    async fn invoke(&self, tool: &str, args: Value) -> (u16, Value) {
        let r =
            self.client.post(format!("{}/v1/invoke", self.base)).bearer_auth(&self.token).json(&json!({"tool": tool, "arguments": args})).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The agent asks alice for an http key bound to the upstream: the result.
    async fn ask(&self) -> Value {
        let args = json!({
            "handle": HANDLE,
            "description": DESCRIPTION,
            "kind": "http",
            "recipient": "alice@example.com",
            "destination": self.destination(),
            "methods": ["GET", "POST"],
            "format": {"prefix": "sk_live_", "min_length": 20},
        });
        let (st, v) = self.invoke("request_secret", args).await;
        assert_eq!(st, 200, "{v}");
        let r = v["result"].clone();
        let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["expires_at", "handle", "recipient", "request_id", "status"], "the agent gets no link: {r}");
        assert_eq!(r["status"], "pending", "{r}");
        r
    }

    async fn status(&self, id: &str) -> Value {
        let (st, v) = self.invoke("request_status", json!({"request_id": id})).await;
        assert_eq!(st, 200, "{v}");
        v
    }

    /// The link delivered for `request_id`, and its proof (the fragment).
    fn delivered(&self, request_id: &str) -> (String, String) {
        let text = std::fs::read_to_string(self.dir.path().join("outbox.jsonl")).unwrap();
        let line = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["request_id"] == request_id).expect("delivered");
        assert_eq!(line["purpose"], "request", "{line}");
        let link = line["link"].as_str().unwrap().to_owned();
        assert!(link.starts_with(&format!("{}/r/{request_id}#", self.base)), "{link}");
        let proof = link.split_once('#').unwrap().1.to_owned();
        assert_eq!(proof.len(), 43, "{link}");
        (link, proof)
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// Stops the server (so its logs are complete and the store is free) and returns the logs.
    fn stop(&mut self) -> String {
        drop(self.server.take());
        // The reader thread drains what was left in the pipe.
        std::thread::sleep(Duration::from_millis(200));
        self.logs()
    }

    /// The newest audit records as JSON (the server stopped).
    async fn audit(&self) -> String {
        let store = airlock_store::Store::open(&self.dir.path().join("airlock-data")).await.unwrap();
        let tail = store.audit_tail(1000).await.unwrap();
        serde_json::to_string(&tail.iter().map(|(_, r)| serde_json::to_value(r).unwrap()).collect::<Vec<_>>()).unwrap()
    }
}

/// Runs tests/browser/request.mjs: its report and its RESULT.
async fn browser(base: &str, env: &[(&str, &str)]) -> (String, Value) {
    let run = tokio::process::Command::new("node")
        .arg(root().join("tests/browser/request.mjs"))
        .current_dir(root().join("tests/browser"))
        .env("AIRLOCK_BASE", base)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    // The script stops itself after 120 s; this is for a node that does not.
    let out = tokio::time::timeout(Duration::from_secs(180), run).await.expect("request.mjs did not finish in 180 s").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: String = stdout.lines().filter(|l| !l.starts_with("RESULT ")).collect::<Vec<_>>().join("\n");
    let report = format!("{report}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "browser checks failed:\n{report}");
    assert!(report.contains(" 0 failed"), "{report}");
    let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no RESULT line:\n{report}"));
    let result: Value = serde_json::from_str(result).unwrap();
    for t in result["traffic"].as_array().unwrap() {
        println!("  {} {} {} {}", t["type"], t["method"].as_str().unwrap_or(""), t["url"], t["status"]);
    }
    (report, result)
}

fn entries<'a>(result: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    result["traffic"].as_array().unwrap().iter().filter(move |t| t["type"] == kind)
}

fn path_of<'a>(base: &str, t: &'a Value) -> &'a str {
    let url = t["url"].as_str().unwrap();
    assert!(url.starts_with(base), "every request of the page goes to the server: {url}");
    &url[base.len()..]
}

fn b64(s: &str, url: bool) -> String {
    use base64::Engine as _;
    if url {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(s)
    }
}

/// The value is nowhere in `text`: not whole, not its distinctive part, not base64-encoded.
fn assert_no_value(what: &str, text: &str, value: &str) {
    for needle in [value.to_owned(), CANARY_PART.to_owned(), b64(value, false), b64(value, true)] {
        assert!(!text.contains(&needle), "{what} holds the value ({needle:?}):\n{text}");
    }
}

/// What every run of the page must satisfy: no value anywhere in the traffic (URLs, headers,
/// bodies, both directions); the proof in no URL, no header, no response, only in the request
/// bodies of the intake API's POSTs; nothing leaves the server; no CSP violation.
fn assert_traffic_clean(base: &str, result: &Value, value: &str, proof: &str) {
    assert_no_value("the browser's traffic", &result["traffic"].to_string(), value);
    for t in result["traffic"].as_array().unwrap() {
        assert!(t["type"] != "failed", "a request of the page failed: {t}");
        assert!(t.get("headers_error").is_none() && t.get("body_error").is_none(), "a part of the traffic was not recorded, so not checked: {t}");
    }
    assert_eq!(result["offsite"], json!([]), "the page loads nothing from elsewhere");
    for t in result["traffic"].as_array().unwrap() {
        let url = t["url"].as_str().unwrap();
        assert!(!url.contains(proof), "the proof travels in a URL: {t}");
        assert!(!t["headers"].to_string().contains(proof), "the proof travels in a header: {t}");
        if t["type"] == "request" {
            let body = t["body"].as_str().unwrap_or("");
            if body.contains(proof) {
                let p = path_of(base, t);
                assert!(
                    t["method"] == "POST" && p.starts_with("/v1/requests/") && (p.ends_with("/open") || p.ends_with("/submit")),
                    "the proof only goes to the intake API: {t}"
                );
                let v: Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["proof"], proof, "{t}");
            }
            assert!(t["headers"].get("referer").is_none(), "no Referer is sent: {t}");
            assert!(t["headers"].get("cookie").is_none(), "no cookie is sent: {t}");
        } else {
            assert!(!t["body"].to_string().contains(proof), "a response holds the proof: {t}");
        }
    }
    let console = result["console"].to_string();
    assert!(!console.contains("Content Security Policy") && !console.contains("Refused to"), "{console}");
    assert_no_value("the browser console", &console, value);
    assert_eq!(result["page_errors"], json!([]));
}

/// The page's own response: the share pages' headers (a CSP with no inline script and no
/// framing, no referrer, no caching) and only external scripts from the server.
fn assert_page_headers(base: &str, result: &Value, id: &str) {
    let page = entries(result, "response").find(|t| path_of(base, t) == format!("/r/{id}")).expect("the page's response");
    assert_eq!(page["status"], 200);
    let h = &page["headers"];
    let csp = h["content-security-policy"].as_str().unwrap_or_else(|| panic!("no CSP: {h}"));
    let directive = |name: &str| csp.split(';').map(str::trim).find(|d| d.split_whitespace().next() == Some(name)).map(str::to_owned);
    let script = directive("script-src").or_else(|| directive("default-src")).unwrap_or_else(|| panic!("{csp}"));
    assert!(script.contains("'self'") && !script.contains("'unsafe-inline'") && !script.contains("'unsafe-eval'") && !script.contains('*'), "{csp}");
    assert_eq!(directive("frame-ancestors").as_deref(), Some("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{h}");
    assert!(h["cache-control"].as_str().unwrap().contains("no-store"), "{h}");
    assert_eq!(h["x-frame-options"], "DENY", "{h}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{h}");
    // No inline script for the CSP to have to allow: every <script> has a same-origin src.
    let html = page["body"].as_str().unwrap();
    let scripts: Vec<&str> = html.split("<script").skip(1).map(|s| &s[..s.find('>').unwrap()]).collect();
    assert!(!scripts.is_empty(), "{html}");
    for s in &scripts {
        assert!(s.contains("src=\"/web/"), "an inline or foreign script: <script{s}>");
    }
    for s in html.split("</script>") {
        if let Some(open) = s.rfind("<script") {
            assert!(s[open..].ends_with('>'), "a script with inline code: {s}");
        }
    }
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices(" on") {
        let name: String = lower[i + 3..].chars().take_while(char::is_ascii_alphabetic).collect();
        assert!(name.is_empty() || !lower[i + 3 + name.len()..].starts_with('='), "an inline handler: on{name}");
    }
    // The intake API's answers are not cached either.
    for t in entries(result, "response").filter(|t| path_of(base, t).starts_with("/v1/requests/")) {
        assert!(t["headers"]["cache-control"].as_str().is_some_and(|c| c.contains("no-store")), "{t}");
    }
}

/// The page's one submission: a POST of {proof, enc, ciphertext}, the ciphertext one padding
/// bucket (256) plus the tag, answered `approved`.
fn assert_one_submit(base: &str, result: &Value, id: &str, proof: &str) {
    let submits: Vec<&Value> = entries(result, "request").filter(|t| path_of(base, t) == format!("/v1/requests/{id}/submit")).collect();
    assert_eq!(submits.len(), 1, "one submit: {submits:?}");
    let body: Value = serde_json::from_str(submits[0]["body"].as_str().unwrap()).unwrap();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["ciphertext", "enc", "proof"], "{body}");
    // The request's headers were recorded (so the checks of headers above are not vacuous).
    assert!(submits[0]["headers"]["content-type"].as_str().is_some_and(|c| c.starts_with("application/json")), "{}", submits[0]);
    assert_eq!(body["proof"], proof);
    let unb64 = |s: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap()
    };
    assert_eq!(unb64(&body["enc"]).len(), 32, "{body}");
    assert_eq!(unb64(&body["ciphertext"]).len(), 256 + 16, "padded to the first bucket: {body}");
    let answer = entries(result, "response").find(|t| path_of(base, t) == format!("/v1/requests/{id}/submit")).expect("the submit's answer");
    assert_eq!(answer["status"], 200, "{answer}");
    let v: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["status"], "approved", "{v}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sends_a_key_through_the_page_and_it_lands_bound_as_shown() {
    if skip_or_fail() {
        return;
    }
    let mut s = Setup::start();
    let asked = s.ask().await;
    let id = asked["request_id"].as_str().unwrap().to_owned();
    let (link, proof) = s.delivered(&id);

    let (_, result) = browser(&s.base, &[("AIRLOCK_MODE", "submit"), ("AIRLOCK_LINK", &link), ("AIRLOCK_CANARY", CANARY)]).await;

    // The page showed the exact request, parsed from the context the value is bound to.
    let shown = &result["shown"];
    let expires = chrono::DateTime::parse_from_rfc3339(asked["expires_at"].as_str().unwrap()).unwrap();
    let expected = json!({
        "from-agent": "bot",
        "description": DESCRIPTION,
        "handle": HANDLE,
        "kind": "http",
        "binding": format!("GET, POST {} (sent in the header Authorization: Bearer {{}}), and nowhere else", s.destination()),
        "grant": "http_request, by bot only",
        "format": "starts with sk_live_; at least 20 characters",
        "expires": expires.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    });
    assert_eq!(shown, &expected, "what the page displays");

    assert_traffic_clean(&s.base, &result, CANARY, &proof);
    assert_page_headers(&s.base, &result, &id);
    assert_one_submit(&s.base, &result, &id, &proof);
    let opens = entries(&result, "request").filter(|t| path_of(&s.base, t) == format!("/v1/requests/{id}/open")).count();
    assert_eq!(opens, 1);

    // Landed and granted by policy: the agent uses the key, the upstream gets it.
    let status = s.status(&id).await;
    assert_eq!(status["result"]["status"], "approved", "{status}");
    let (st, used) = s.invoke("http_request", json!({"credential_handle": HANDLE, "method": "GET", "path_or_url": "/v1/echo"})).await;
    assert_eq!(st, 200, "{used}");
    let seen = s.upstream.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("GET /v1/echo".to_owned(), Some(format!("Bearer {CANARY}")))], "the person's key reached its destination");
    // Bound as the person saw it: elsewhere it is refused and the upstream sees nothing more.
    let (st, refused) = s.invoke("http_request", json!({"credential_handle": HANDLE, "method": "GET", "path_or_url": "http://127.0.0.2:9/v1/echo"})).await;
    assert_ne!(st, 200, "{refused}");
    let (st, refused2) = s.invoke("http_request", json!({"credential_handle": HANDLE, "method": "DELETE", "path_or_url": "/v1/echo"})).await;
    assert_ne!(st, 200, "{refused2}");
    assert_eq!(s.upstream.seen.lock().unwrap().len(), 1);

    // The agent never sees the value.
    let agent_saw = json!([asked, status, used, refused, refused2]).to_string();
    assert_no_value("the agent's results", &agent_saw, CANARY);
    assert!(!agent_saw.contains(&proof), "the agent never sees the link: {agent_saw}");

    // Nor the logs, the audit, or the data directory in clear.
    let logs = s.stop();
    assert!(!logs.is_empty(), "the server's stderr was captured");
    assert_no_value("the server's logs", &logs, CANARY);
    assert!(!logs.contains(&proof), "the logs hold the link's proof");
    let audit = s.audit().await;
    assert!(audit.contains("secret_request_received") && audit.contains("secret_request_approved"), "{audit}");
    assert_no_value("the audit", &audit, CANARY);
    assert!(!audit.contains(&proof), "the audit holds the link's proof");
    for f in files_under(s.dir.path()) {
        // SQLite's -wal and -shm files go when the last connection closes.
        let bytes = match std::fs::read(&f) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            r => r.unwrap(),
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CANARY) && !text.contains(CANARY_PART), "{} holds the value in clear", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_link_sends_nothing_and_a_used_link_says_so() {
    if skip_or_fail() {
        return;
    }
    let mut s = Setup::start();
    let asked = s.ask().await;
    let id = asked["request_id"].as_str().unwrap().to_owned();
    let (link, proof) = s.delivered(&id);
    let page = format!("{}/r/{id}", s.base);
    // Same length, one character changed: only the broker can tell.
    let last = proof.chars().last().unwrap();
    let altered = format!("{}{}", &proof[..42], if last == 'A' { 'B' } else { 'A' });
    let links = json!([
        {"name": "truncated", "url": format!("{page}#{}", &proof[..30])},
        {"name": "altered", "url": format!("{page}#{altered}")},
        {"name": "no_fragment", "url": page},
    ]);
    let (_, result) = browser(&s.base, &[("AIRLOCK_MODE", "refused"), ("AIRLOCK_LINKS", &links.to_string())]).await;
    let pages = result["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3, "{result}");
    for p in pages {
        assert!(p["error"] == true && !p["error_text"].as_str().unwrap().is_empty(), "an error is shown: {p}");
        assert!(p["ask"] == false && p["done"] == false, "{p}");
        assert!(p["after_click"]["done"] == false && p["after_click"]["ask"] == false, "{p}");
    }
    for name in ["truncated", "no_fragment"] {
        let p = pages.iter().find(|p| p["name"] == name).unwrap();
        assert!(p["error_text"].as_str().unwrap().contains("incomplete or damaged"), "{p}");
    }
    let p = pages.iter().find(|p| p["name"] == "altered").unwrap();
    assert!(p["error_text"].as_str().unwrap().contains("never existed"), "{p}");
    // Nothing submitted: no submit at all; only the altered proof was tried, once, and refused.
    let posts: Vec<&Value> = entries(&result, "request").filter(|t| t["method"] != "GET").collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(path_of(&s.base, posts[0]), format!("/v1/requests/{id}/open"));
    assert_eq!(serde_json::from_str::<Value>(posts[0]["body"].as_str().unwrap()).unwrap(), json!({"proof": altered}));
    let answer = entries(&result, "response").find(|t| t["url"].as_str().unwrap().ends_with("/open")).unwrap();
    assert_eq!(answer["status"], 404, "{answer}");
    assert!(!answer["body"].as_str().unwrap().contains("context"), "{answer}");
    assert_traffic_clean(&s.base, &result, CANARY, &proof);
    let status = s.status(&id).await;
    assert_eq!(status["result"]["status"], "pending", "nothing landed: {status}");

    // The whole link still works; after it is used, the page says so and sends nothing.
    let value = "sk_live_canaryBrowser_second_4Kp8";
    let (_, sent) = browser(&s.base, &[("AIRLOCK_MODE", "submit"), ("AIRLOCK_LINK", &link), ("AIRLOCK_CANARY", value)]).await;
    assert_one_submit(&s.base, &sent, &id, &proof);
    assert_traffic_clean(&s.base, &sent, value, &proof);
    assert_eq!(s.status(&id).await["result"]["status"], "approved");

    let again = json!([{"name": "used", "url": link}]);
    let (_, used) = browser(&s.base, &[("AIRLOCK_MODE", "refused"), ("AIRLOCK_LINKS", &again.to_string())]).await;
    let p = &used["pages"][0];
    assert!(p["error_text"].as_str().unwrap().contains("already used"), "{p}");
    assert!(p["ask"] == false && p["after_click"]["done"] == false, "{p}");
    assert!(entries(&used, "request").all(|t| !path_of(&s.base, t).ends_with("/submit")), "nothing submitted");
    let answer = entries(&used, "response").find(|t| t["url"].as_str().unwrap().ends_with("/open")).unwrap();
    assert_eq!(answer["status"], 404, "{answer}");
    assert_traffic_clean(&s.base, &used, value, &proof);

    let logs = s.stop();
    assert_no_value("the server's logs", &logs, value);
    assert!(!logs.contains(&proof) && !logs.contains(&altered), "the logs hold a proof");
    let audit = s.audit().await;
    assert_no_value("the audit", &audit, value);
    assert!(!audit.contains(&proof) && !audit.contains(&altered));
}
