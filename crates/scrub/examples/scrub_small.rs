//! Probe: the scrubber's cost on one small result, the shape of an `http_request` answer with a
//! short body, as the broker scrubs every result, with N known secrets of 32 characters (default
//! 2, as in `airlock-bench`) and, with SHORT, one more secret of SHORT characters (the decoding
//! passes make no layer shorter than the shortest pattern, so a short secret costs more).
//! `cargo run --release -p airlock-scrub --example scrub_small -- [N] [ITERATIONS] [SHORT]`
//! prints the p50 per result; run it under `perf record -g`.
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let iters: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let (mut scrubber, _) = airlock_scrub::bench_fixture(n, 0, 42);
    if let Some(short) = std::env::args().nth(3).and_then(|s| s.parse::<usize>().ok()) {
        let value: String = "pA55w0rd-Short-Value-0123456789".chars().cycle().take(short).collect();
        let label = airlock_core::HandleName::parse("SHORT").expect("valid handle");
        scrubber = scrubber.with_added(&[(label, airlock_core::Secret::from_str_value(&value))]).expect("builds");
    }
    let result = serde_json::json!({
        "status": 200,
        "headers": {"content-type": "text/plain; charset=utf-8", "content-length": "11", "date": "Sat, 05 Dec 2026 07:32:24 GMT"},
        "body": "{\"ok\":true}",
        "truncated": false,
    });
    let args = serde_json::json!({"method": "GET", "path_or_url": "/v1/ping"});
    let (mut r, mut a) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..iters {
        let mut v = result.clone();
        let t = Instant::now();
        std::hint::black_box(scrubber.scrub_result(&mut v));
        r.push(t.elapsed().as_nanos() as u64);
        let mut v = args.clone();
        let t = Instant::now();
        scrubber.scrub_json(&mut v);
        std::hint::black_box(&v);
        a.push(t.elapsed().as_nanos() as u64);
    }
    r.sort_unstable();
    a.sort_unstable();
    println!("{n} secrets: result p50 {:.2} µs, arguments p50 {:.2} µs", r[iters / 2] as f64 / 1e3, a[iters / 2] as f64 / 1e3);
}
