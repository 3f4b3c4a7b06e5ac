//! `airlock-bench-scale`: whether the cost of one brokered call stays flat as the work the
//! broker holds grows (issue target P9: the added p50 of an `http_request` at concurrency 1 with
//! 100,000 agents, 10,000 handles and secrets and 1,000 Cedar policies within 20 % of the same
//! call with 10 of each).
//!
//! Three sizes, each a data directory and a config made the way an operator makes them:
//!
//! | size | agents (store + `[agents.*]` grants) | http handles, each with its own sealed secret | Cedar policies in `[policy] files` |
//! |---|---|---|---|
//! | small | 10 | 10 | 10 |
//! | medium | 1,000 | 1,000 | 1,000 |
//! | large | 100,000 | 10,000 | 1,000 |
//!
//! Every agent is granted `http_request` on one handle (so the grants compile to one `permit`
//! per agent besides the policy files); every handle points at its own path of one local
//! upstream served by this process. The policy files hold, at each size, 1 in 20 common policies
//! (at least 2: forbids with conditions on the host, the agent's name or a requested handle) and
//! the rest tied to one agent each (`principal == Airlock::Agent::"..."`: forbids on a host,
//! permits of a second handle, forbids of `read_write` databases); the measured agent (the last
//! one) owns two of them at every size.
//!
//! Agents and secrets are created through the store's and the vault's API (`Store::add_agent`,
//! `Vault::put`, what `airlock agent add` and `airlock secret put` call) on the store the config
//! names, one process for all of them: the CLI has no bulk path, and one `airlock agent add` per
//! agent costs 14 ms here with a small config and loads the whole config each time (10 MB for the
//! largest size): hours for 100,000 agents. The data directory and its keys come from `airlock
//! init`.
//!
//! Each size's `airlock serve` is started once, as its own process, and timed from the spawn to
//! its first answered `http_request` (polled every millisecond); its resident memory is read then
//! and at the end. Then, for `rounds` rounds, each size in turn (forward, then backward in the
//! next round): the agent's `http_request` at concurrency 1 for a warm-up second and the measured
//! window, then the same request sent directly to the upstream, the round's baseline. Printed:
//! each round, then per size the median and spread (min to max) of the added p50 (brokered minus
//! direct), p50 and p99, the start time and memory, and the ratio of each size's median to the
//! smallest's. The store runs with `sync = normal`
//! (`full` as the third argument): with `full` the fsync of the audit commit, a fixed cost,
//! dilutes what grows.
//!
//! Run (the `airlock` binary of the same profile must be built first):
//!
//! ```sh
//! cargo build --release -p airlock && cargo build --release -p airlock-bench
//! cargo run --release -p airlock-bench --bin airlock-bench-scale -- [rounds=3] [measure_secs=3] [normal|full]
//! # one size alone (small, medium or large: the default), loaded at concurrency 1 for SECONDS, its
//! # pid printed (for `perf record -g -p PID`):
//! cargo run --release -p airlock-bench --bin airlock-bench-scale -- profile [SECONDS=30] [SIZE]
//! ```
//!
//! About 2 minutes on 2 cores with the defaults: about 15 s to create the largest size's 100,000
//! agents, its broker's start (about 17 s and 1.6 GB here), then the rounds. The three brokers run side by side from their start to the end, so
//! each start is timed once.
#![forbid(unsafe_code)]

use airlock_bench::load::{http_load, median_spread, us, Phases, Stats, Target};
use airlock_bench::served::{free_port, vm_rss_kib, Airlock, Proc};
use airlock_core::config::Config;
use airlock_core::Secret;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{bail, ensure, Context, Result};
use axum::Router;
use rand::RngCore;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One size of the work the broker holds.
#[derive(Clone, Copy, Debug)]
struct Size {
    name: &'static str,
    agents: usize,
    handles: usize,
    policies: usize,
}

const SIZES: [Size; 3] = [
    Size { name: "small", agents: 10, handles: 10, policies: 10 },
    Size { name: "medium", agents: 1_000, handles: 1_000, policies: 1_000 },
    Size { name: "large", agents: 100_000, handles: 10_000, policies: 1_000 },
];

/// How long `airlock serve` may take to answer its first call.
const START_WITHIN: Duration = Duration::from_secs(600);

fn agent_name(i: usize) -> String {
    format!("agent-{i:06}")
}

fn handle_name(i: usize) -> String {
    format!("H{i:05}")
}

/// The upstream: any GET on a loopback port of this process answers `{"ok":true}`.
async fn upstream() -> Result<std::net::SocketAddr> {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = up.local_addr()?;
    tokio::spawn(async move { axum::serve(up, Router::new().fallback(|| async { "{\"ok\":true}" })).await });
    Ok(addr)
}

/// One size's data directory and config, and what its measured call needs.
struct Setup {
    size: Size,
    airlock: Airlock,
    /// Holds the config, the policies and the data directory; removed when dropped.
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    /// The measured call, as the measured agent.
    target: Target,
    /// The same request sent directly to the upstream.
    direct: Target,
}

/// The config text of `size`: server, store, every handle and every agent's grant.
fn config_text(size: Size, port: u16, up: std::net::SocketAddr, sync: &str) -> String {
    let mut t = String::with_capacity(128 * (size.agents + 2 * size.handles));
    let _ = write!(
        t,
        "[server]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"airlock.sock\"\n[store]\nsync = \"{sync}\"\n[limits]\nrate_per_minute = 100000000\n[policy]\nfiles = [\"policies/common.cedar\", \"policies/agents.cedar\"]\n"
    );
    for h in 0..size.handles {
        let n = handle_name(h);
        let _ = write!(
            t,
            "[handles.{n}]\nkind = \"http\"\nsecret = \"local:{n}\"\n[handles.{n}.http]\ndestinations = [{{ url = \"http://{up}/h{h}/\", methods = [\"GET\"] }}]\ninject = {{ type = \"header\", name = \"Authorization\", format = \"Bearer {{}}\" }}\n"
        );
    }
    for a in 0..size.agents {
        let _ = write!(t, "[agents.{}]\ngrants = [{{ handle = \"{}\", tools = [\"http_request\"] }}]\n", agent_name(a), handle_name(a % size.handles));
    }
    t
}

/// How many of `size`'s policies are common (not tied to one agent): 1 in 20, at least 2.
fn common_count(size: Size) -> usize {
    (size.policies / 20).max(2)
}

/// The policy files of `size`: (common.cedar, agents.cedar).
fn policy_texts(size: Size) -> (String, String) {
    let mut common = String::new();
    for k in 0..common_count(size) {
        let _ = match k % 3 {
            0 => writeln!(
                common,
                "@id(\"common-{k}\")\nforbid (principal, action == Airlock::Action::\"http_request\", resource)\n  when {{ resource.hosts.contains(\"blocked-{k}.example.net\") }};"
            ),
            1 => writeln!(
                common,
                "@id(\"common-{k}\")\nforbid (principal is Airlock::Agent, action, resource is Airlock::Handle)\n  when {{ principal.name like \"quarantine-{k}-*\" }};"
            ),
            _ => writeln!(
                common,
                "@id(\"common-{k}\")\nforbid (principal, action, resource)\n  when {{ resource.requested && resource.kind == \"http\" && principal.name like \"ci-{k}-*\" }};"
            ),
        };
    }
    let own = size.policies - common_count(size);
    let measured = size.agents - 1;
    let stride = (size.agents / own).max(1);
    let mut agents = String::new();
    for k in 0..own {
        // The measured agent owns the first two at every size.
        let a = if k < 2 { measured } else { (k * stride) % size.agents };
        let who = agent_name(a);
        let _ = match k % 3 {
            0 => writeln!(
                agents,
                "@id(\"own-{k}\")\nforbid (principal == Airlock::Agent::\"{who}\", action == Airlock::Action::\"http_request\", resource)\n  when {{ resource.hosts.contains(\"payments-{k}.example.com\") }};"
            ),
            1 => writeln!(
                agents,
                "@id(\"own-{k}\")\npermit (principal == Airlock::Agent::\"{who}\", action == Airlock::Action::\"http_request\", resource == Airlock::Handle::\"{}\")\n  when {{ resource.kind == \"http\" }};",
                handle_name((a + 1) % size.handles)
            ),
            _ => writeln!(
                agents,
                "@id(\"own-{k}\")\nforbid (principal == Airlock::Agent::\"{who}\", action in [Airlock::Action::\"query_db\"], resource)\n  when {{ resource.scope == \"read_write\" }};"
            ),
        };
    }
    (common, agents)
}

/// A random upstream token: 40 base62 characters, as many API keys look.
fn token_value() -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut b = [0u8; 40];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| BASE62[*x as usize % BASE62.len()] as char).collect()
}

impl Setup {
    /// Writes `size`'s config and policies, makes the data directory with `airlock init`, seals
    /// one secret per handle and adds every agent to the store.
    async fn build(size: Size, up: std::net::SocketAddr, sync: &str) -> Result<Setup> {
        let airlock = Airlock::next_to_this()?;
        let t0 = Instant::now();
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let cfg = dir.path().join("airlock.toml");
        std::fs::write(&cfg, config_text(size, port, up, sync))?;
        std::fs::create_dir(dir.path().join("policies"))?;
        let (common, agents) = policy_texts(size);
        std::fs::write(dir.path().join("policies/common.cedar"), common)?;
        std::fs::write(dir.path().join("policies/agents.cedar"), agents)?;
        airlock.init_data(dir.path())?;
        let config = Config::load(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t_cfg = t0.elapsed();

        let store = Store::connect(&config.store).await.context("opening the store")?;
        let vault = Vault::new(MasterKey::load(&config.store.data_dir.join("master.key"))?, store.clone());
        let t1 = Instant::now();
        for h in 0..size.handles {
            vault.put(&handle_name(h), &Secret::new(token_value().into_bytes())).await?;
        }
        let t_secrets = t1.elapsed();
        let t2 = Instant::now();
        let measured = size.agents - 1;
        let mut token = String::new();
        for a in 0..size.agents {
            let (_, t) = store.add_agent(&agent_name(a), None, None).await?;
            if a == measured {
                token = t.reveal().to_owned();
            }
        }
        let t_agents = t2.elapsed();
        store.close().await;
        println!(
            "  {:<6} set up in {:.1} s: config, policies and `airlock init` {:.1} s ({:.1} MB of config); {} secrets {:.1} s; {} agents {:.1} s",
            size.name,
            t0.elapsed().as_secs_f64(),
            t_cfg.as_secs_f64(),
            std::fs::metadata(&cfg)?.len() as f64 / 1e6,
            size.handles,
            t_secrets.as_secs_f64(),
            size.agents,
            t_agents.as_secs_f64()
        );

        let h = measured % size.handles;
        let base = format!("http://127.0.0.1:{port}");
        let args = serde_json::json!({"credential_handle": handle_name(h), "method": "GET", "path_or_url": format!("/h{h}/ping")});
        let target = Target::invoke(&base, &token, "http_request", args);
        let direct = Target {
            url: format!("http://{up}/h{h}/ping"),
            method: reqwest::Method::GET,
            headers: vec![("authorization".into(), "Bearer direct".into())],
            body: None,
        };
        Ok(Setup { size, airlock, _dir: dir, cfg, target, direct })
    }

    /// Starts `airlock serve` and waits for its first answered call: the broker and the time
    /// from the spawn to that answer.
    async fn start(&self) -> Result<(Proc, Duration)> {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let t0 = Instant::now();
        let mut proc = Proc(self.airlock.command(&self.cfg).arg("serve").env("RUST_LOG", "error").stdout(Stdio::null()).spawn()?);
        loop {
            if self.target.send(&client).await.is_ok() {
                return Ok((proc, t0.elapsed()));
            }
            if let Some(status) = proc.0.try_wait()? {
                bail!("airlock serve ({}) exited ({status}) before answering", self.size.name);
            }
            ensure!(t0.elapsed() < START_WITHIN, "airlock serve ({}) did not answer within {} s", self.size.name, START_WITHIN.as_secs());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// One size in one round.
struct Round {
    brokered: Stats,
    direct: Stats,
}

impl Round {
    fn added_p50(&self) -> f64 {
        self.brokered.p50() - self.direct.p50()
    }
}

/// One size's running broker.
struct Running {
    proc: Proc,
    start: Duration,
    rss_idle_kib: u64,
}

/// The measured call at concurrency 1, then the same request sent directly as the baseline.
async fn measure(s: &Setup, phases: Phases) -> Result<Round> {
    let brokered = http_load(std::slice::from_ref(&s.target), 1, phases).await?;
    ensure!(brokered.errors == 0, "{}: {} calls failed", s.size.name, brokered.errors);
    let direct = http_load(std::slice::from_ref(&s.direct), 1, Phases { warmup: Duration::from_millis(200), measure: Duration::from_secs(1) }).await?;
    Ok(Round { brokered, direct })
}

fn mb(kib: f64) -> String {
    format!("{:.1} MB", kib * 1024.0 / 1e6)
}

const USAGE: &str = "usage: airlock-bench-scale [rounds] [measure_secs] [normal|full] | profile [SECONDS] [SIZE]";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("profile") {
        let secs = args.get(1).map(|s| s.parse()).transpose().context(USAGE)?.unwrap_or(30u64);
        let size = match args.get(2).map(String::as_str) {
            None => SIZES[SIZES.len() - 1],
            Some(n) => *SIZES.iter().find(|s| s.name == n).context("SIZE: small, medium or large")?,
        };
        return profile(secs, size).await;
    }
    let rounds: usize = args.first().map(|s| s.parse()).transpose().context(USAGE)?.unwrap_or(3);
    let secs: u64 = args.get(1).map(|s| s.parse()).transpose().context(USAGE)?.unwrap_or(3);
    let sync = args.get(2).map_or("normal", String::as_str);
    ensure!(rounds > 0 && secs > 0 && matches!(sync, "normal" | "full"), USAGE);
    let phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(secs) };
    println!(
        "airlock-bench-scale: {} cores; store sync = {sync}; {rounds} rounds of {} s warm-up + {} s of http_request at concurrency 1 per size",
        std::thread::available_parallelism()?,
        phases.warmup.as_secs(),
        secs
    );
    let up = upstream().await?;
    println!("\nsetup:");
    let mut setups = Vec::new();
    for size in SIZES {
        setups.push(Setup::build(size, up, sync).await?);
        println!(
            "         {} agents, {} handles + secrets, {} policies in files ({} common) + {} grants",
            size.agents,
            size.handles,
            size.policies,
            common_count(size),
            size.agents
        );
    }

    println!("\nstart of `airlock serve` to its first answered http_request, and its resident memory then:");
    let mut running = Vec::new();
    for s in &setups {
        let (proc, start) = s.start().await?;
        let rss_idle_kib = vm_rss_kib(proc.0.id())?;
        println!("  {:<6} {:>9.1} ms   RSS {}", s.size.name, start.as_secs_f64() * 1e3, mb(rss_idle_kib as f64));
        running.push(Running { proc, start, rss_idle_kib });
    }

    let mut results: Vec<Vec<Round>> = setups.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        println!("\nround {}", r + 1);
        let order: Vec<usize> = if r % 2 == 0 { (0..setups.len()).collect() } else { (0..setups.len()).rev().collect() };
        for i in order {
            let m = measure(&setups[i], phases).await?;
            println!(
                "  {:<6} {:>6} calls  p50 {:>7}  p99 {:>7}  direct p50 {:>6}  added p50 {:>7}",
                setups[i].size.name,
                m.brokered.latencies.len(),
                us(m.brokered.p50()),
                us(m.brokered.p99()),
                us(m.direct.p50()),
                us(m.added_p50())
            );
            results[i].push(m);
        }
    }

    println!("\nmedian (min to max) over {rounds} rounds; ratio = this size's median / the smallest's");
    let base_added = median_spread(results[0].iter().map(Round::added_p50).collect()).0;
    let base_p50 = median_spread(results[0].iter().map(|m| m.brokered.p50()).collect()).0;
    for ((s, rs), run) in setups.iter().zip(&results).zip(&running) {
        let f = |g: &dyn Fn(&Round) -> f64| median_spread(rs.iter().map(g).collect());
        let added = f(&|m| m.added_p50());
        let p50 = f(&|m| m.brokered.p50());
        let p99 = f(&|m| m.brokered.p99());
        let after = vm_rss_kib(run.proc.0.id())?;
        println!(
            "  {:<6} ({} agents, {} handles, {} policies)\n    added p50 {} ({} to {}), ratio {:.2}\n    p50 {} ({} to {}), ratio {:.2}; p99 {} ({} to {})\n    start to first answer {:.1} ms; RSS after start {}, after the rounds {}",
            s.size.name,
            s.size.agents,
            s.size.handles,
            s.size.policies,
            us(added.0),
            us(added.1),
            us(added.2),
            added.0 / base_added,
            us(p50.0),
            us(p50.1),
            us(p50.2),
            p50.0 / base_p50,
            us(p99.0),
            us(p99.1),
            us(p99.2),
            run.start.as_secs_f64() * 1e3,
            mb(run.rss_idle_kib as f64),
            mb(after as f64)
        );
    }
    let largest = median_spread(results[results.len() - 1].iter().map(Round::added_p50).collect()).0;
    let verdict = if largest <= 1.2 * base_added { "within" } else { "NOT within" };
    println!("\nP9: the largest size's added p50 is {:.2}x the smallest's: {verdict} 20 %", largest / base_added);
    Ok(())
}

/// `profile SECONDS [SIZE]`: one size alone (the largest by default), its broker's pid printed, loaded at concurrency 1
/// for SECONDS after a warm-up second (for `perf record -g -p PID` meanwhile).
async fn profile(secs: u64, size: Size) -> Result<()> {
    let up = upstream().await?;
    let s = Setup::build(size, up, "normal").await?;
    let (proc, start) = s.start().await?;
    println!("broker pid {} (started in {:.1} ms); loading for {secs} s after 1 s", proc.0.id(), start.as_secs_f64() * 1e3);
    let st = http_load(std::slice::from_ref(&s.target), 1, Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(secs) }).await?;
    println!("{} calls, p50 {}, p99 {}, errors {}", st.latencies.len(), us(st.p50()), us(st.p99()), st.errors);
    drop(proc);
    Ok(())
}
