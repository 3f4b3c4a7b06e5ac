//! Scrubber throughput: known values over 1 MiB of clean text with 1,000 secrets (all encodings),
//! the same with the pattern rules on, a text with 100 planted secrets, a suspicious text that
//! takes the normalisation pass, and an adversarial text dense with near-misses for the decoding
//! passes (base64 of random bytes, hex digests, UUIDs, MACs, escapes, separated words); and the
//! cost per call of scrubbing one `http_request` result with a 1 KiB body.

use airlock_scrub::{adversarial_text, bench_fixture_with};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const TEXT: usize = 1 << 20;

fn scrub(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrub");
    g.throughput(Throughput::Bytes(TEXT as u64));
    let cases = [
        ("known_values_1000_secrets_clean_1MiB", false, 0),
        ("known_values_and_patterns_1000_secrets_clean_1MiB", true, 0),
        ("known_values_and_patterns_1000_secrets_100_planted_1MiB", true, 100),
    ];
    for (name, patterns, planted) in cases {
        let (s, text) = bench_fixture_with(1000, TEXT, 42, patterns, planted);
        g.bench_function(name, |b| b.iter(|| s.scrub_str(black_box(&text)).1));
    }
    // The normalisation path: the same text with zero-width spaces sprinkled in (suspicious text
    // takes the slower, normalizing pass).
    let (s, text) = bench_fixture_with(1000, TEXT, 42, true, 0);
    let text = text.replace("and ", "and\u{200B} ");
    g.bench_function("known_values_and_patterns_1000_secrets_zero_width_1MiB", |b| {
        b.iter(|| s.scrub_str(black_box(&text)).1)
    });
    let (s, _) = bench_fixture_with(1000, 0, 42, false, 0);
    let text = adversarial_text(TEXT, 42);
    g.bench_function("known_values_1000_secrets_adversarial_near_misses_1MiB", |b| {
        b.iter(|| s.scrub_str(black_box(&text)).1)
    });
    g.finish();

    // The scrubber's share of one call: an `http_request` result with a 1 KiB body of the same
    // ordinary text, scrubbed as the broker scrubs every result (leaves, joined leaves, keys).
    let mut g = c.benchmark_group("scrub_per_call");
    let (s, text) = bench_fixture_with(1000, 4096, 42, false, 0);
    let result = serde_json::json!({
        "status": 200,
        "headers": {"content-type": "application/json", "content-length": "1024"},
        "body": &text[..1024],
        "truncated": false,
    });
    g.bench_function("http_request_result_1KiB_body_1000_secrets", |b| {
        b.iter_batched(|| result.clone(), |mut v| s.scrub_result(&mut v), criterion::BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, scrub);
criterion_main!(benches);
