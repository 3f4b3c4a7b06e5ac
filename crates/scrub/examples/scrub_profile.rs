//! A profiling loop over the bench workloads, with no harness around it: builds one scrubber,
//! then scrubs the chosen text repeatedly for the given number of seconds and prints the median
//! rate, measured in CPU time of the scrubbing thread (Linux), so a loaded machine does not
//! skew it. `cargo run --release -p airlock-scrub --example scrub_profile -- CASE SECONDS`, where CASE
//! is `clean`, `rules`, `planted`, `zero_width` or `adversarial`; run it under `perf record -g`.

use airlock_scrub::{adversarial_text, bench_fixture_with};
use std::time::{Duration, Instant};

const TEXT: usize = 1 << 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "clean".to_owned());
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let (s, text) = match case.as_str() {
        "clean" => bench_fixture_with(1000, TEXT, 42, false, 0),
        "rules" => bench_fixture_with(1000, TEXT, 42, true, 0),
        "planted" => bench_fixture_with(1000, TEXT, 42, true, 100),
        "zero_width" => {
            let (s, t) = bench_fixture_with(1000, TEXT, 42, true, 0);
            (s, t.replace("and ", "and\u{200B} "))
        }
        "adversarial" => (bench_fixture_with(1000, 0, 42, false, 0).0, adversarial_text(TEXT, 42)),
        other => panic!("unknown case {other}"),
    };
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut rates = Vec::new();
    let mut n = 0usize;
    // CPU time of this thread over the whole run (the kernel updates it at scheduler ticks, so
    // it is read around the loop, not per scrub): other processes on a loaded machine do not
    // count in it, as they do in the per-run wall-clock rates.
    let cpu0 = cpu_ns();
    while Instant::now() < until || rates.is_empty() {
        let t = Instant::now();
        n += std::hint::black_box(s.scrub_str(std::hint::black_box(&text))).1;
        rates.push(text.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    let cpu = (cpu_ns() - cpu0) as f64;
    let runs = rates.len();
    rates.sort_by(f64::total_cmp);
    println!(
        "{case}: {runs} runs, {:.1} MB/s of CPU time; wall clock per run: median {:.1} MB/s (p10 {:.1}, p90 {:.1}); {} redactions per run",
        (runs * text.len()) as f64 / cpu * 1e3,
        rates[runs / 2],
        rates[runs / 10],
        rates[runs * 9 / 10],
        n / runs
    );
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat is readable")
}
