//! `airlock-bench-oauth`: a connected OAuth account against a static key, in the same run.
//!
//! One `airlock serve` (release build, `store.sync = "full"`) with two handles on the same
//! upstream path: `ACME`, an oauth handle whose account is connected at a real authorization
//! server (npm oidc-provider, tests/oauth/provider.mjs, over HTTPS with a throw-away CA), and
//! `STATIC`, an http handle with a fixed bearer key. The upstream is the provider's resource
//! server answering a constant body on `/plain` without checking the token, so both handles do
//! the same upstream work. Alternating runs at concurrency 1 and 32 give p50 and calls/s of
//! each (no refresh is due: the access token lives an hour).
//!
//! Then the refresh under load: a second broker whose account's access token lives 5 s, with a
//! refresh margin of 1 s; when it is due, 100 calls start at once; the time until all are
//! answered is reported with the number of refreshes the provider saw (it must be 1).
//!
//! Needs node with tests/oauth/node_modules (`cd tests/oauth && npm ci`) and the openssl
//! command. Run: `cargo build --release -p airlock && cargo build --release -p airlock-bench && target/release/airlock-bench-oauth`.
#![forbid(unsafe_code)]

use airlock_bench::load::{alternate, median_spread as median, us, Phases, Target};
use airlock_bench::served::{free_port, Airlock, Proc};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PHASES: Phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(5) };

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A CA and a certificate for 127.0.0.1 it signed, in `dir`.
fn tls_files(dir: &Path) -> Result<()> {
    let run = |args: &[&str]| -> Result<()> {
        let o = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
        if !o.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA"]].concat())?;
    run(&[&["req"][..], &ec, &["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]].concat())?;
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")?;
    run(&["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "leaf.ext"])
}

/// The authorization and resource servers.
struct Provider {
    _proc: Proc,
    info: Value,
}

impl Provider {
    fn start(dir: &Path, redirect: &str, access_ttl: u64) -> Result<Provider> {
        let mut child = Command::new("node")
            .arg(repo().join("tests/oauth/provider.mjs"))
            .env("REDIRECT_URI", redirect)
            .env("ACCESS_TTL", access_ttl.to_string())
            .env("AUTO_CONSENT", "1")
            .env("TLS_CERT", dir.join("cert.pem"))
            .env("TLS_KEY", dir.join("key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node tests/oauth/provider.mjs (cd tests/oauth && npm ci)")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let info: Value = serde_json::from_str(&line).with_context(|| format!("the provider said {line:?}"))?;
        Ok(Provider { _proc: Proc(child), info })
    }

    fn get(&self, k: &str) -> String {
        self.info[k].as_str().unwrap_or_default().to_owned()
    }

    async fn refreshes(&self) -> Result<i64> {
        let v: Value = reqwest::get(format!("{}/_stats", self.get("rs"))).await?.json().await?;
        Ok(v["refresh"].as_i64().unwrap_or(-1))
    }
}

/// One `airlock serve` with the two handles, its account connected.
struct Setup {
    _dir: tempfile::TempDir,
    _proc: Proc,
    provider: Provider,
    base: String,
    token: String,
}

async fn setup(airlock: &Airlock, access_ttl: u64, margin: u64) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    tls_files(d)?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let provider = Provider::start(d, &format!("{base}/oauth/callback"), access_ttl)?;
    let config = d.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
[store]
data_dir = "airlock-data"
[limits]
rate_per_minute = 100000000
[shares]
base_url = "{base}"
[shares.channels.box]
type = "outbox"
path = "outbox.jsonl"
[shares.recipients]
"owner@example.com" = "box"

[handles.ACME]
kind = "oauth"
secret = "local:ACME_CLIENT"
[handles.ACME.oauth]
authorization_url = "{authorize}"
token_url = "{token}"
revocation_url = "{revocation}"
client_id = "{client_id}"
scopes = ["api:read"]
resource = "{resource}"
owners = ["owner@example.com"]
refresh_margin_seconds = {margin}
ca_file = "ca.pem"
[handles.ACME.http]
destinations = [{{ url = "{rs}/" }}]

[handles.STATIC]
kind = "http"
secret = "local:STATIC"
[handles.STATIC.http]
destinations = [{{ url = "{rs}/" }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}

[agents.bot]
grants = [
  {{ handle = "ACME", tools = ["http_request", "connect_account"] }},
  {{ handle = "STATIC", tools = ["http_request"] }},
]
"#,
            authorize = provider.get("authorize"),
            token = provider.get("token"),
            revocation = provider.get("revocation"),
            client_id = provider.get("client_id"),
            resource = provider.get("resource"),
            rs = provider.get("rs"),
        ),
    )?;
    airlock.init_data(d)?;
    airlock.secret_put(&config, "ACME_CLIENT", &provider.get("client_secret"))?;
    airlock.secret_put(&config, "STATIC", "static-bench-key-0123456789")?;
    let token = airlock.agent_add(&config, "bot")?;
    let proc = airlock.serve(&config, &base).await?;
    connect(d, &base, &token).await?;
    Ok(Setup { _dir: dir, _proc: proc, provider, base, token })
}

/// The connect flow over HTTP: the agent asks, the owner's code from the outbox, the provider
/// (which logs in and consents by itself) redirects back.
async fn connect(dir: &Path, base: &str, token: &str) -> Result<()> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem"))?)?;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).add_root_certificate(ca).build()?;
    let asked: Value = c
        .post(format!("{base}/v1/invoke"))
        .bearer_auth(token)
        .json(&json!({"tool": "connect_account", "arguments": {"credential_handle": "ACME", "owner": "owner@example.com"}}))
        .send()
        .await?
        .json()
        .await?;
    let id = asked["result"]["connect_id"].as_str().with_context(|| format!("connect_account: {asked}"))?;
    let outbox = std::fs::read_to_string(dir.join("outbox.jsonl"))?;
    let code = serde_json::from_str::<Value>(outbox.lines().last().unwrap_or("{}"))?["code"].as_str().unwrap_or_default().to_owned();
    let r = c.post(format!("{base}/v1/connect/{id}/verify")).json(&json!({"code": code})).send().await?;
    let binding = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).unwrap_or("").to_owned();
    let v: Value = r.json().await?;
    let mut url = v["authorize_url"].as_str().with_context(|| format!("verify: {v}"))?.to_owned();
    let mut jar: HashMap<String, String> = HashMap::new();
    for _ in 0..12 {
        let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let r = c.get(&url).header("cookie", cookies.join("; ")).send().await?;
        for h in r.headers().get_all("set-cookie") {
            if let Some((k, v)) = h.to_str()?.split(';').next().and_then(|p| p.split_once('=')) {
                jar.insert(k.to_owned(), v.to_owned());
            }
        }
        let loc = r.headers().get("location").and_then(|l| l.to_str().ok()).with_context(|| format!("no redirect from {url}"))?;
        url = url::Url::parse(&url)?.join(loc)?.to_string();
        if url.starts_with(&format!("{base}/oauth/callback")) {
            let r = c.get(&url).header("cookie", &binding).send().await?;
            if r.status() != 200 {
                bail!("the callback answered {}", r.status());
            }
            return Ok(());
        }
    }
    bail!("the provider never redirected back")
}

fn call(s: &Setup, handle: &str) -> Target {
    Target::invoke(&s.base, &s.token, "http_request", json!({"credential_handle": handle, "method": "GET", "path_or_url": "/plain"}))
}


#[tokio::main]
async fn main() -> Result<()> {
    let airlock = Airlock::next_to_this()?;
    let s = setup(&airlock, 3600, 60).await?;
    println!("http_request through airlock serve (sync = full), oauth handle vs static key, same upstream; 3 alternating runs");
    println!("conc   handle  p50 (min-max)                  calls/s (min-max)    against STATIC");
    for conc in [1usize, 32] {
        let res = alternate(&[("STATIC", call(&s, "STATIC")), ("ACME", call(&s, "ACME"))], conc, 3, PHASES).await?;
        let (sp, _, _) = median(res["STATIC"].0.clone());
        let (sr, _, _) = median(res["STATIC"].1.clone());
        for h in ["STATIC", "ACME"] {
            let (p, pmin, pmax) = median(res[h].0.clone());
            let (r, rmin, rmax) = median(res[h].1.clone());
            println!(
                "{conc:>4} {h:>8} {:>8} ({}-{}) {:>7.0} ({:.0}-{:.0}) p50 {:+.1} %, calls/s {:+.1} %",
                us(p),
                us(pmin),
                us(pmax),
                r,
                rmin,
                rmax,
                (p / sp - 1.0) * 100.0,
                (r / sr - 1.0) * 100.0
            );
        }
    }
    drop(s);

    println!("\nrefresh under load: 100 calls started together when the access token is due (ttl 5 s, margin 1 s)");
    let s = setup(&airlock, 5, 1).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(200).build()?;
    // Warm the connections.
    for _ in 0..3 {
        call(&s, "ACME").send(&client).await?;
    }
    let mut times = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(4_300)).await;
        let before = s.provider.refreshes().await?;
        let t0 = Instant::now();
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let (t, c) = (call(&s, "ACME"), client.clone());
                tokio::spawn(async move { t.send(&c).await })
            })
            .collect();
        for c in calls {
            c.await??;
        }
        let all = t0.elapsed().as_secs_f64();
        let refreshes = s.provider.refreshes().await? - before;
        println!("  round {}: all 100 answered in {:.1} ms, refreshes at the provider: {refreshes}", round + 1, all * 1e3);
        if refreshes != 1 {
            bail!("expected exactly one refresh, saw {refreshes}");
        }
        times.push(all);
    }
    let (m, lo, hi) = median(times);
    println!("  median {:.1} ms ({:.1}-{:.1})", m * 1e3, lo * 1e3, hi * 1e3);
    Ok(())
}
