//! `airlock-bench-requests`: a request for a secret from start to first use, per round.
//!
//! One round is what an agent asking a person for a key costs end to end: `request_secret`
//! over REST, the link delivered to a webhook, the person's `open` (context and public key),
//! HPKE sealing of the value to the request's key, `submit` (open, format check, landing in one
//! transaction with the burn, the grant by policy, the scrubber learning the value), then the
//! first `http_request` on the new handle against a local upstream. The same closed-loop load
//! generator runs it at concurrency 1 and 32 on the SQLite store (`sync = "full"`).
//! Run: `cargo run --release -p airlock-bench --bin airlock-bench-requests`.
#![forbid(unsafe_code)]

use airlock_bench::load::{closed_loop, us, Phases};
use airlock_bench::scratch::Scratch;
use anyhow::{bail, Context, Result};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PHASES: Phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(5) };

/// Links by request id, as the webhook received them.
type Inbox = Arc<Mutex<HashMap<String, String>>>;

struct Setup {
    base: String,
    token: String,
    upstream: u16,
    inbox: Inbox,
    next: AtomicU64,
}

async fn round(c: &reqwest::Client, s: &Setup) -> Result<()> {
    let n = s.next.fetch_add(1, Ordering::Relaxed);
    let handle = format!("KEY_{n}");
    let args = json!({
        "handle": handle, "description": "bench key", "kind": "http", "recipient": "person",
        "destination": format!("http://127.0.0.1:{}/v1/", s.upstream), "format": {"prefix": "sk_"},
    });
    let r = c.post(format!("{}/v1/invoke", s.base)).bearer_auth(&s.token).json(&json!({"tool": "request_secret", "arguments": args})).send().await?;
    let v: Value = r.json().await?;
    let id = v["result"]["request_id"].as_str().with_context(|| format!("request_secret: {v}"))?.to_owned();
    let link = s.inbox.lock().unwrap().remove(&id).context("no link delivered")?;
    let proof = link.split('#').nth(1).context("no proof")?.to_owned();
    let r = c.post(format!("{}/v1/requests/{id}/open", s.base)).json(&json!({"proof": proof})).send().await?;
    let opened: Value = r.json().await?;
    let public = airlock_share::decode_b64(opened["public_key"].as_str().context("no key")?).context("key")?;
    let context = opened["context"].as_str().context("no context")?;
    let value = format!("sk_bench_{n:016}");
    let sealed = airlock_share::intake::seal(&public, value.as_bytes(), context.as_bytes(), 8192)?;
    let body = json!({"proof": proof, "enc": sealed.enc_b64(), "ciphertext": sealed.ciphertext_b64()});
    let r = c.post(format!("{}/v1/requests/{id}/submit", s.base)).json(&body).send().await?;
    let v: Value = r.json().await?;
    if v["status"] != "approved" {
        bail!("submit: {v}");
    }
    let call = json!({"tool": "http_request", "arguments": {"credential_handle": handle, "method": "GET", "path_or_url": "/v1/ping"}});
    let r = c.post(format!("{}/v1/invoke", s.base)).bearer_auth(&s.token).json(&call).send().await?;
    if r.status() != 200 {
        bail!("first call: {}", r.text().await?);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // The person's side: a webhook that keeps each link by request id.
    let inbox: Inbox = Arc::default();
    let keep = inbox.clone();
    let hook = Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let keep = keep.clone();
            async move {
                if let (Some(id), Some(link)) = (v["request_id"].as_str(), v["link"].as_str()) {
                    keep.lock().unwrap().insert(id.to_owned(), link.to_owned());
                }
                "ok"
            }
        }),
    );
    let hl = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_port = hl.local_addr()?.port();
    tokio::spawn(async move { axum::serve(hl, hook).await });
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream = up.local_addr()?.port();
    tokio::spawn(async move { axum::serve(up, Router::new().fallback(any(|| async { Json(json!({"ok": true})) }))).await });

    let dir = tempfile::tempdir()?;
    let cedar = dir.path().join("requests.cedar");
    std::fs::write(
        &cedar,
        "permit(principal == Airlock::Agent::\"bench\", action == Airlock::Action::\"request_secret\", resource) when { resource.requested };\n\
         permit(principal == Airlock::Agent::\"bench\", action == Airlock::Action::\"http_request\", resource) when { resource.requested && resource.hosts.contains(\"127.0.0.1\") };\n",
    )?;
    let scratch = Scratch::new(&format!(
        "[store]\ndata_dir = \"data\"\nsync = \"full\"\n[limits]\nrate_per_minute = 100000000\n[policy]\nfiles = [\"{}\"]\n\
         [requests]\nmax_open_per_agent = 10000\ncreate_per_minute = 100000\n\
         [shares.channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n[shares.recipients]\nperson = \"hook\"\n",
        cedar.display()
    ))
    .await?;
    let (_, token) = scratch.store.add_agent("bench", None, None).await?;
    let broker = Arc::new(scratch.broker().await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(airlock_server::http::serve(listener, broker, async {
        let _ = rx.await;
    }));
    let setup = Arc::new(Setup { base, token: token.reveal().to_owned(), upstream, inbox, next: AtomicU64::new(0) });

    println!(
        "airlock-bench-requests: {} cores; request → link → open → seal → submit → first http_request, per round; sync = full; each run {}s after {}s warm-up",
        std::thread::available_parallelism()?,
        PHASES.measure.as_secs(),
        PHASES.warmup.as_secs()
    );
    for cc in [1usize, 32] {
        let known = setup.next.load(Ordering::Relaxed);
        let client = reqwest::Client::builder().pool_max_idle_per_host(cc * 2).build()?;
        let s = setup.clone();
        let stats = closed_loop(cc, PHASES, move |_| {
            let (c, s) = (client.clone(), s.clone());
            async move { round(&c, &s).await }
        })
        .await?;
        println!(
            "  concurrency {cc:>2} ({known:>4} requested values known before): {:>7.0} rounds/s   p50 {}   p99 {}   errors {}",
            stats.rps(),
            us(stats.p50()),
            us(stats.p99()),
            stats.errors
        );
    }
    Ok(())
}
