//! A thin-client MCP session outlives its short-lived platform token: the token file is
//! rewritten (as Kubernetes rewrites a projected service-account token) and the session goes on
//! with the new token, handed to the broker in band (`notifications/airlock/token`). A token of
//! another agent is never adopted: the session keeps its own until that expires, and then every
//! request is `unauthenticated`; nothing ever runs as the other agent. A line longer than
//! `limits.max_request_bytes` ends the session.
//!
//! Real JWTs: an RSA key made with the `openssl` command signs RS256 tokens for an
//! `[issuers.k8s]` that reads its key set from a `jwks_file`. Each case runs twice: through the
//! real `airlock mcp` binary with `AIRLOCK_TOKEN_FILE` (the binary of this workspace's target
//! directory: `cargo build --bin airlock` first, else that half is skipped), and over the
//! broker's stream directly, the test sending the notification itself.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

const AUD: &str = "https://airlock.test";
const ISS: &str = "https://kubernetes.default.svc.cluster.local";
const BOT: &str = "system:serviceaccount:agents:bot";
const OTHER: &str = "system:serviceaccount:agents:other";
/// `limits.max_request_bytes` of these brokers.
const MAX_REQUEST: usize = 64 * 1024;
/// Lifetime of the first token.
const SHORT: i64 = 3;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut c = std::process::Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl not runnable: {e}"))?;
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or_default()).unwrap();
    drop(stdin);
    let o = c.wait_with_output().unwrap();
    if !o.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(o.stdout)
}

/// An RSA key (made by the `openssl` command) that signs RS256 tokens, and its key set.
struct Issuer {
    key: PathBuf,
    jwks: Value,
}

impl Issuer {
    fn new(dir: &Path) -> Result<Issuer, String> {
        let key = dir.join("issuer-key.pem");
        let k = key.to_str().unwrap();
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k], None)?;
        let out = String::from_utf8(openssl(&["rsa", "-in", k, "-noout", "-modulus"], None)?).unwrap();
        let mut hex = out.trim().strip_prefix("Modulus=").ok_or("no modulus")?.to_owned();
        if hex.len() % 2 == 1 {
            hex.insert(0, '0');
        }
        let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let jwks = json!({"keys": [{"kty": "RSA", "n": b64(&n), "e": "AQAB", "kid": "k1", "alg": "RS256", "use": "sig"}]});
        Ok(Issuer { key, jwks })
    }

    /// A service-account token for `sub` that expires at `exp`.
    fn token(&self, sub: &str, exp: i64) -> String {
        let header = b64(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let claims = json!({"iss": ISS, "sub": sub, "aud": AUD, "exp": exp, "iat": now(), "nbf": now() - 5});
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let sig = openssl(&["dgst", "-sha256", "-sign", self.key.to_str().unwrap()], Some(input.as_bytes())).unwrap();
        format!("{input}.{}", b64(&sig))
    }
}

/// A broker with `[issuers.k8s]` (bot and other by service account) serving the MCP router on
/// 127.0.0.1; its base URL.
async fn broker(env: &Env, issuer: &Issuer) -> String {
    let jwks = env.dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks.to_string()).unwrap();
    let text = std::fs::read_to_string(&env.config_path).unwrap().replace(
        "rate_per_minute = 100000",
        &format!("rate_per_minute = 100000\nmax_request_bytes = {MAX_REQUEST}"),
    ) + &format!(
        r#"
[issuers.k8s]
issuer = "{ISS}"
jwks_file = "{}"
audience = "{AUD}"
algorithms = ["RS256"]
leeway_seconds = 0
subjects = [
  {{ subject = "{BOT}", agent = "bot" }},
  {{ subject = "{OTHER}", agent = "other" }},
]
"#,
        jwks.display()
    );
    std::fs::write(&env.config_path, text).unwrap();
    let url = serve_mcp(env.broker().await).await;
    url.trim_end_matches(airlock_mcp::MCP_PATH).to_owned()
}

/// The `airlock` binary built in this workspace's target directory, if it is there and newer
/// than the client's and the stream's sources.
fn airlock_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("AIRLOCK_BIN") {
        return Ok(p.into());
    }
    // target/debug/deps/token_rotation-HASH -> target/debug/airlock
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("airlock")).ok_or("no target directory")?;
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map_err(|_| format!("{} is not built (cargo build --bin airlock)", bin.display()))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for src in ["src/client.rs", "crates/mcp/src/stream.rs"] {
        if std::fs::metadata(root.join(src)).and_then(|m| m.modified()).is_ok_and(|m| m > built) {
            return Err(format!("{} is older than {src} (cargo build --bin airlock)", bin.display()));
        }
    }
    Ok(bin)
}

/// How the session reaches the broker.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// The real `airlock mcp`, its token in a file the test rewrites.
    Binary,
    /// The broker's stream, upgraded by the test, which sends the notification itself.
    Stream,
}

struct Session {
    to_broker: Box<dyn AsyncWrite + Unpin + Send>,
    from_broker: tokio::io::Lines<BufReader<Box<dyn AsyncRead + Unpin + Send>>>,
    next_id: i64,
    via: Via,
    token_file: PathBuf,
    child: Option<tokio::process::Child>,
    /// Every line the session answered.
    seen: Vec<String>,
}

impl Session {
    /// A session for the token `token`, initialized.
    async fn start(via: Via, env: &Env, base: &str, token: &str) -> Session {
        let token_file = env.dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        let (to_broker, from_broker, child): (Box<dyn AsyncWrite + Unpin + Send>, Box<dyn AsyncRead + Unpin + Send>, _) = match via {
            Via::Binary => {
                let home = env.dir.path().join("home");
                std::fs::create_dir_all(&home).unwrap();
                let mut child = tokio::process::Command::new(airlock_bin().unwrap())
                    .arg("mcp")
                    .env_clear()
                    .env("HOME", &home)
                    .env("AIRLOCK_ENDPOINT", base)
                    .env("AIRLOCK_TOKEN_FILE", &token_file)
                    .env("RUST_LOG", "debug")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::from(std::fs::File::create(env.dir.path().join("mcp.stderr")).unwrap()))
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                (Box::new(child.stdin.take().unwrap()), Box::new(child.stdout.take().unwrap()), Some(child))
            }
            Via::Stream => {
                let r = reqwest::Client::new()
                    .get(format!("{base}{}", airlock_mcp::STREAM_PATH))
                    .header("connection", "upgrade")
                    .header("upgrade", airlock_mcp::STREAM_PROTOCOL)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 101);
                let (rd, wr) = tokio::io::split(r.upgrade().await.unwrap());
                (Box::new(wr), Box::new(rd), None)
            }
        };
        let mut s = Session { to_broker, from_broker: BufReader::new(from_broker).lines(), next_id: 0, via, token_file, child, seen: vec![] };
        let init = s
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "airlock", "{init}");
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()).await;
        s
    }

    async fn send(&mut self, line: &str) {
        self.to_broker.write_all(line.as_bytes()).await.unwrap();
        self.to_broker.write_all(b"\n").await.unwrap();
        self.to_broker.flush().await.unwrap();
    }

    /// The next line from the broker; `None` when the session ended.
    async fn next_line(&mut self) -> Option<String> {
        let line = tokio::time::timeout(Duration::from_secs(20), self.from_broker.next_line()).await.expect("no answer within 20 s");
        let line = line.ok().flatten()?;
        self.seen.push(line.clone());
        Some(line)
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()).await;
        loop {
            let line = self.next_line().await.expect("the session ended");
            assert_no_secret("MCP answer", &line);
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }

    /// The platform rotates the token: the file is rewritten (the binary notices), or the test
    /// sends what the binary would.
    async fn rotate(&mut self, token: &str) {
        match self.via {
            Via::Binary => std::fs::write(&self.token_file, token).unwrap(),
            Via::Stream => {
                let n = json!({"jsonrpc": "2.0", "method": airlock_mcp::TOKEN_NOTIFICATION, "params": {"token": token}});
                self.send(&n.to_string()).await;
            }
        }
    }

    async fn items(&mut self) -> Value {
        let args = json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"});
        self.request("tools/call", json!({"name": "http_request", "arguments": args})).await
    }

    /// The binary's stderr (it logs at debug): it must never hold a token.
    fn stderr(&self, env: &Env) -> String {
        std::fs::read_to_string(env.dir.path().join("mcp.stderr")).unwrap_or_default()
    }
}

/// Sleeps until a token with `exp` is expired (its `exp` second is over).
async fn until_expired(exp: i64) {
    let exp = UNIX_EPOCH + Duration::from_secs(exp as u64 + 1) + Duration::from_millis(200);
    if let Ok(d) = exp.duration_since(SystemTime::now()) {
        tokio::time::sleep(d).await;
    }
}

/// Whether this half of a case can run; `None` (skipped) otherwise.
async fn setup(via: Via) -> Option<(Env, Issuer, String)> {
    if via == Via::Binary && !available(airlock_bin().map(|_| ())) {
        return None;
    }
    let env = Env::prepare().await;
    let issuer = match Issuer::new(env.dir.path()) {
        Ok(i) => i,
        Err(e) => {
            available(Err(e));
            return None;
        }
    };
    let base = broker(&env, &issuer).await;
    Some((env, issuer, base))
}

async fn audit_agents(env: &Env) -> Vec<(String, String, String)> {
    env.store.audit_tail(100).await.unwrap().into_iter().map(|(_, r)| (r.agent, r.tool, r.outcome)).collect()
}

async fn a_rotated_token_of_the_same_agent_keeps_the_session_going(via: Via) {
    let Some((env, issuer, base)) = setup(via).await else { return };
    let exp_a = now() + SHORT;
    let a = issuer.token(BOT, exp_a);
    let mut s = Session::start(via, &env, &base, &a).await;
    let list = s.request("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"http_request"), "{list}");
    let r = s.items().await;
    assert_eq!(r["result"]["isError"], false, "{r}");

    // The platform writes a new token before the first expires; then the first expires.
    let b = issuer.token(BOT, now() + 300);
    assert_ne!(a, b);
    s.rotate(&b).await;
    until_expired(exp_a).await;
    assert!(now() > exp_a);

    let list = s.request("tools/list", json!({})).await;
    assert!(list["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{list}");
    let r = s.items().await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(r["result"]["structuredContent"]["status"], 200, "{r}");
    // Both calls ran as bot, and reached the upstream.
    let calls: Vec<_> = audit_agents(&env).await.into_iter().filter(|(_, t, _)| t == "http_request").collect();
    assert_eq!(calls, vec![("bot".into(), "http_request".into(), "ok".into()); 2], "{calls:?}");
    assert_eq!(env.upstream_requests(), ["/v1/items", "/v1/items"]);
    // The notification is the broker's: the session never answered it.
    assert!(s.seen.iter().all(|l| !l.contains(airlock_mcp::TOKEN_NOTIFICATION)), "{:?}", s.seen);
    if via == Via::Binary {
        let log = s.stderr(&env);
        assert!(!log.contains(&a) && !log.contains(&b), "the client logged a token: {log}");
        drop(s.to_broker);
        let status = tokio::time::timeout(Duration::from_secs(10), s.child.take().unwrap().wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status}");
    }
}

async fn a_token_of_another_agent_is_not_adopted(via: Via) {
    let Some((env, issuer, base)) = setup(via).await else { return };
    let exp_a = now() + SHORT;
    let a = issuer.token(BOT, exp_a);
    let mut s = Session::start(via, &env, &base, &a).await;
    assert_eq!(s.items().await["result"]["isError"], false);

    // The file now holds a valid token of another agent (which can run query_db on RW_DB).
    let other = issuer.token(OTHER, now() + 300);
    s.rotate(&other).await;
    // The session is still bot's, with bot's tools, while its token lasts.
    let r = s.items().await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    let list = s.request("tools/list", json!({})).await;
    let handles = list.to_string();
    assert!(handles.contains("http_request"), "{list}");

    until_expired(exp_a).await;
    let r = s.items().await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(r["result"]["structuredContent"]["code"], "unauthenticated", "{r}");
    let list = s.request("tools/list", json!({})).await;
    assert_eq!(list["error"]["data"]["code"], "unauthenticated", "{list}");
    // What only the other agent may do is refused too: nothing runs as it.
    let q = json!({"credential_handle": "RW_DB", "query": "SELECT id FROM orders"});
    let r = s.request("tools/call", json!({"name": "query_db", "arguments": q})).await;
    assert_eq!(r["result"]["structuredContent"]["code"], "unauthenticated", "{r}");

    let audit = audit_agents(&env).await;
    assert!(audit.iter().all(|(agent, _, _)| agent != "other"), "{audit:?}");
    let ok: Vec<_> = audit.iter().filter(|(_, _, o)| o == "ok").collect();
    assert_eq!(ok.len(), 2, "{audit:?}");
    assert!(ok.iter().all(|(agent, tool, _)| agent == "bot" && tool == "http_request"), "{audit:?}");
    assert_eq!(env.upstream_requests().len(), 2);
    if via == Via::Binary {
        let log = s.stderr(&env);
        assert!(!log.contains(&a) && !log.contains(&other), "the client logged a token: {log}");
    }
}

async fn a_line_over_the_request_limit_ends_the_session(via: Via) {
    let Some((env, issuer, base)) = setup(via).await else { return };
    let token = issuer.token(BOT, now() + 300);
    let mut s = Session::start(via, &env, &base, &token).await;
    // Just under the limit: answered, and the session goes on.
    let big = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/list", "params": {"pad": "x".repeat(MAX_REQUEST - 100)}}).to_string();
    assert!(big.len() <= MAX_REQUEST);
    s.send(&big).await;
    loop {
        let answer = s.next_line().await.expect("answered");
        if serde_json::from_str::<Value>(&answer).unwrap()["id"] == 99 {
            break;
        }
    }
    assert_eq!(s.items().await["result"]["isError"], false);
    // Over it, without a newline in sight: the broker ends the session rather than buffer it.
    // (The broker may close the connection before it has all of it: a write may fail.)
    let huge = "x".repeat(4 * MAX_REQUEST);
    let _ = s.to_broker.write_all(huge.as_bytes()).await;
    let _ = s.to_broker.flush().await;
    if let Some(l) = s.next_line().await {
        panic!("the session answered after an oversized line: {l}");
    }
    if let Some(mut child) = s.child.take() {
        // The binary ends when the broker does (with an error when the connection was reset).
        tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("airlock mcp did not end").unwrap();
    }
    assert_eq!(env.upstream_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_a_rotated_token_of_the_same_agent_keeps_the_session_going() {
    a_rotated_token_of_the_same_agent_keeps_the_session_going(Via::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_rotated_token_of_the_same_agent_keeps_the_session_going() {
    a_rotated_token_of_the_same_agent_keeps_the_session_going(Via::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_a_token_of_another_agent_is_not_adopted() {
    a_token_of_another_agent_is_not_adopted(Via::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_token_of_another_agent_is_not_adopted() {
    a_token_of_another_agent_is_not_adopted(Via::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_a_line_over_the_request_limit_ends_the_session() {
    a_line_over_the_request_limit_ends_the_session(Via::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_line_over_the_request_limit_ends_the_session() {
    a_line_over_the_request_limit_ends_the_session(Via::Stream).await;
}
