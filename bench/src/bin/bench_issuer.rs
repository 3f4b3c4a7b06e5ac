//! `airlock-bench-issuer`: a call authenticated by a JWT of a trusted issuer against the same
//! call with a static airlock token, in the same run.
//!
//! One `airlock serve` (release build, `sync = full`) with an http handle on a local upstream,
//! an agent `bot` with a static token, and an issuer (a P-256 key set served by this process)
//! whose subject `bench` maps to agent `jwtbot` with the same grant. Each call is
//! `http_request GET /v1/ping`; the JWT is the same for every call (its key set is warm after
//! the first). 3 alternating runs at concurrency 1 and 32: p50 and calls/s of each. Then, since
//! whole calls vary by more than the difference, the authentication step alone in this process
//! (`Broker::authenticate`, 3 rounds of 50,000 each): nanoseconds per call.
//! Run: `cargo build --release -p airlock && cargo build --release -p airlock-bench && target/release/airlock-bench-issuer`.
#![forbid(unsafe_code)]

use airlock_bench::load::{alternate, median_spread as median, us, Phases, Target};
use airlock_bench::served::{free_port, Airlock};
use anyhow::Result;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const PHASES: Phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(5) };

async fn serve(app: Router) -> Result<String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(url)
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A P-256 key, its key set and a token for subject `bench` signed with it.
fn key_and_token(iss: &str, aud: &str) -> Result<(Value, String)> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| anyhow::anyhow!("keygen"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).map_err(|_| anyhow::anyhow!("key"))?;
    let p = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65]), "kid": "b1", "alg": "ES256"}]});
    let now = chrono::Utc::now().timestamp();
    let header = b64(br#"{"alg":"ES256","typ":"JWT","kid":"b1"}"#);
    let claims = b64(json!({"iss": iss, "sub": "bench", "aud": aud, "exp": now + 3600, "iat": now}).to_string().as_bytes());
    let input = format!("{header}.{claims}");
    let sig = pair.sign(&rng, input.as_bytes()).map_err(|_| anyhow::anyhow!("sign"))?;
    Ok((jwks, format!("{input}.{}", b64(sig.as_ref()))))
}

/// The configuration: an http handle on the upstream, agents `bot` (static token) and `jwtbot`
/// (the issuer's subject `bench`), the issuer.
fn config_text(upstream: &str, iss: &str, aud: &str, port: u16) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
[store]
data_dir = "airlock-data"
[limits]
rate_per_minute = 100000000
[handles.API]
kind = "http"
secret = "local:API"
[handles.API.http]
destinations = [{{ url = "{upstream}/v1/", methods = ["GET"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}
allow_private_addresses = true
[agents.bot]
grants = [{{ handle = "API", tools = ["http_request"] }}]
[agents.jwtbot]
grants = [{{ handle = "API", tools = ["http_request"] }}]
[issuers.bench]
issuer = "{iss}"
jwks_url = "{iss}/jwks"
audience = "{aud}"
algorithms = ["ES256"]
subjects = [{{ subject = "bench", agent = "jwtbot" }}]
"#
    )
}


#[tokio::main]
async fn main() -> Result<()> {
    let airlock = Airlock::next_to_this()?;
    let upstream = serve(Router::new().route("/v1/ping", get(|| async { "{\"ok\":true}" }))).await?;
    let aud = "https://airlock.bench";
    // The issuer's URL is the key server's, known once it listens.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let iss = format!("http://{}", l.local_addr()?);
    let (jwks, jwt) = key_and_token(&iss, aud)?;
    tokio::spawn(async move { axum::serve(l, Router::new().route("/jwks", get(move || std::future::ready(Json(jwks.clone()))))).await });

    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("airlock.toml");
    std::fs::write(&config, config_text(&upstream, &iss, aud, port))?;
    airlock.init_data(dir.path())?;
    airlock.secret_put(&config, "API", "static-upstream-key-0123456789")?;
    let token = airlock.agent_add(&config, "bot")?;
    let _proc = airlock.serve(&config, &base).await?;
    let args = json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/ping"});
    let targets = [("static", Target::invoke(&base, &token, "http_request", args.clone())), ("jwt", Target::invoke(&base, &jwt, "http_request", args))];
    println!("http_request through airlock serve (sync = full): a trusted issuer's JWT against a static airlock token; 3 alternating runs");
    for conc in [1usize, 32] {
        let res = alternate(&targets, conc, 3, PHASES).await?;
        let (sp, _, _) = median(res["static"].0.clone());
        for (name, _) in &targets {
            let (p, pmin, pmax) = median(res[name].0.clone());
            let (r, rmin, rmax) = median(res[name].1.clone());
            println!(
                "  conc {conc:>2} {name:>6}: p50 {} ({}-{}), {r:.0} calls/s ({rmin:.0}-{rmax:.0}); p50 {:+.0} µs against static",
                us(p),
                us(pmin),
                us(pmax),
                (p - sp) * 1e6
            );
        }
    }
    authentication_alone(&config_text(&upstream, &iss, aud, 0), &jwt).await
}

/// `Broker::authenticate` in this process: a static token against the JWT, warm caches.
async fn authentication_alone(config: &str, jwt: &str) -> Result<()> {
    let s = airlock_bench::scratch::Scratch::new(config).await?;
    let (_, token) = s.store.add_agent("bot", None, None).await?;
    let broker = s.broker().await?;
    let token = token.reveal().to_owned();
    const N: u32 = 50_000;
    println!("Broker::authenticate alone, in process, {N} calls a round, 3 rounds (median, min-max):");
    let mut res: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..3 {
        for (name, t) in [("static", token.as_str()), ("jwt", jwt)] {
            broker.authenticate(Some(t)).await.map_err(|e| anyhow::anyhow!("{name}: {}", e.code))?;
            let t0 = std::time::Instant::now();
            for _ in 0..N {
                broker.authenticate(Some(t)).await.map_err(|e| anyhow::anyhow!("{name}: {}", e.code))?;
            }
            res.entry(name).or_default().push(t0.elapsed().as_secs_f64() * 1e9 / f64::from(N));
        }
    }
    for name in ["static", "jwt"] {
        let (m, lo, hi) = median(res[name].clone());
        println!("  {name:>6}: {m:.0} ns ({lo:.0}-{hi:.0})");
    }
    Ok(())
}
