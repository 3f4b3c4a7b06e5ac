//! The cost of building a scrubber over many secrets: `cargo run --release -p airlock-scrub
//! --example scrub_build -- N` builds one over `N` random 40-character base62 secrets (as the
//! scale bench's handles hold) and prints the time, the patterns compiled and the peak RSS.

use airlock_core::{HandleName, Secret};
use airlock_scrub::ScrubberBuilder;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut b = ScrubberBuilder::new();
    for i in 0..n {
        let v: String = (0..40)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                BASE62[(x % 62) as usize] as char
            })
            .collect();
        b.add_secret(&HandleName::parse(&format!("H{i}")).expect("handle"), &Secret::from_str_value(&v));
    }
    let t = Instant::now();
    let s = b.build();
    let took = t.elapsed();
    drop(b);
    let status = |key: &str| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned()))
            .unwrap_or_default()
    };
    println!(
        "{n} secrets: built in {:.2} s, {} secrets, {} patterns; peak RSS {} kB, RSS after {} kB",
        took.as_secs_f64(),
        s.known_secret_count(),
        s.pattern_count(),
        status("VmHWM"),
        status("VmRSS")
    );
}
