//! A reproducible workload for benchmarks: random base62 secrets and ordinary English-like text.
//! Shared by the criterion bench and the project's bench binary so both measure the same thing.

use crate::{Scrubber, ScrubberBuilder};
use airlock_core::{HandleName, Secret};

/// SplitMix64: a tiny deterministic generator (benchmark data only, never keys).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had",
    "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if",
    "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may", "these",
    "about", "into", "than", "time", "only", "new", "some", "could", "them", "system", "database",
    "request", "response", "server", "customer", "order", "invoice", "report", "quarterly",
    "revenue", "shipping", "address", "status", "pending", "completed", "error", "retry", "timeout",
    "cluster", "region", "europe", "north", "america", "table", "column", "value", "record",
    "number", "between", "during", "after", "before", "because", "through", "however", "example",
    "people", "year", "years", "work", "world", "first", "last", "long", "great", "little", "own",
    "2024", "2025", "17", "42", "3.14", "100%", "v1.2.3", "#1234", "user@example.com",
];

/// `n_secrets` random 32-character base62 secrets (handles `K0`, `K1`, ...), known values only,
/// and `text_bytes` of ordinary text with none of them in it.
pub fn bench_fixture(n_secrets: usize, text_bytes: usize, seed: u64) -> (Scrubber, String) {
    bench_fixture_with(n_secrets, text_bytes, seed, false, 0)
}

/// Like [`bench_fixture`], with the pattern rules on or off and `planted` secrets (random ones of
/// the set, each raw) inserted between words at random places.
pub fn bench_fixture_with(
    n_secrets: usize,
    text_bytes: usize,
    seed: u64,
    patterns: bool,
    planted: usize,
) -> (Scrubber, String) {
    let mut rng = Rng(seed);
    let secrets: Vec<String> = (0..n_secrets)
        .map(|_| (0..32).map(|_| BASE62[rng.below(BASE62.len())] as char).collect())
        .collect();
    let mut b = ScrubberBuilder::new();
    b.patterns(patterns);
    for (i, s) in secrets.iter().enumerate() {
        let h = HandleName::parse(&format!("K{i}")).expect("valid handle");
        b.add_secret(&h, &Secret::from_str_value(s));
    }
    let mut text = String::with_capacity(text_bytes + 64);
    let mut line = 0usize;
    let mut sentence_start = true;
    while text.len() < text_bytes {
        let w = WORDS[rng.below(WORDS.len())];
        if sentence_start {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                text.extend(f.to_uppercase());
                text.push_str(c.as_str());
            }
            sentence_start = false;
        } else {
            text.push_str(w);
        }
        line += w.len() + 1;
        match rng.below(16) {
            0 => {
                text.push('.');
                sentence_start = true;
            }
            1 => text.push(','),
            _ => {}
        }
        if line > 72 {
            text.push('\n');
            line = 0;
        } else {
            text.push(' ');
        }
    }
    text.truncate(text_bytes);
    if !secrets.is_empty() {
        // Positions in the original text, inserted back to front, so no secret splits another.
        let mut at: Vec<usize> = (0..planted).map(|_| rng.below(text.len() + 1)).collect();
        at.sort_unstable_by(|a, b| b.cmp(a));
        for mut p in at {
            while !text.is_char_boundary(p) {
                p -= 1;
            }
            let s = &secrets[rng.below(secrets.len())];
            text.insert_str(p, &format!(" {s} "));
        }
    }
    (b.build(), text)
}

/// `text_bytes` of text dense with near-misses for the decoding passes: between ordinary words,
/// about every third token is a base64 run of random bytes, a hex digest, a UUID, a MAC address,
/// a percent-, JSON-, HTML- or quoted-printable-escaped fragment, a `0x` byte list or a
/// dash-separated word, none of them a secret.
pub fn adversarial_text(text_bytes: usize, seed: u64) -> String {
    use base64::Engine;
    let mut rng = Rng(seed);
    let hex = |rng: &mut Rng, n: usize| -> String { (0..n).map(|_| format!("{:02x}", rng.below(256))).collect() };
    let mut text = String::with_capacity(text_bytes + 256);
    while text.len() < text_bytes {
        let tok = match rng.below(30) {
            0 => {
                let bytes: Vec<u8> = (0..12 + rng.below(40)).map(|_| rng.below(256) as u8).collect();
                base64::engine::general_purpose::STANDARD.encode(bytes)
            }
            1 => hex(&mut rng, 32),
            2 => {
                let h = hex(&mut rng, 16);
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
            }
            3 => {
                let h = hex(&mut rng, 6);
                (0..6).map(|i| &h[2 * i..2 * i + 2]).collect::<Vec<_>>().join(":")
            }
            4 => "caf%C3%A9%20menu%2Fprices?q=a%26b".to_owned(),
            5 => "\\u00e9t\\u00e9 \\\"quoted\\\"".to_owned(),
            6 => "&lt;b&gt;bold&#x3C;/b&#62; &amp; more".to_owned(),
            7 => "=C3=A9t=C3=A9 soft=\nbreak".to_owned(),
            8 => "0x1f,0x2e,0x3d,0x4c,0x5b,0x6a,0x79".to_owned(),
            9 => "w-e-l-l-k-n-o-w-n".to_owned(),
            _ => WORDS[rng.below(WORDS.len())].to_owned(),
        };
        text.push_str(&tok);
        text.push(if rng.below(12) == 0 { '\n' } else { ' ' });
    }
    let mut cut = text_bytes.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}
