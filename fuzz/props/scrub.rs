//! The property of the `scrub` fuzz target, shared with
//! `crates/scrub/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust).
//!
//! Input: `[len, pos, cut, rest...]`. `rest` (invalid UTF-8 replaced) gives the secret (its first
//! characters, at least `8 + len % 57` bytes) and the text (the remaining characters); the secret
//! is embedded raw in the text at `pos/255` of its length. A scrubber is built for that secret
//! (pattern rules on, as the broker builds it), then:
//! * `scrub_str` never panics and its output does not contain the secret;
//! * scrubbing is idempotent (documented): scrubbing the output again changes nothing;
//! * `contains_known_secret` (the outbound check) sees the embedded secret;
//! * a cut through the secret (keeping `MIN_CUT_FRAGMENT + cut % ..` bytes of it) leaves, after
//!   `scrub_str` and `scrub_cut_tail`, no trailing prefix of the secret as long as its floor
//!   (`min_cut_fragment`: 4 bytes, 6 for a secret of hex digits) or longer (T24; not checked for
//!   a secret holding `]`, which ends every marker);
//! * the decoding work stays within the documented linear cap,
//!   `WORK_FACTOR * len + WORK_BASE` (a counter, never wall time).
//!
//! A secret that overlaps a redaction marker (`[REDACTED:API]`, or a rule's marker) is skipped
//! ([`overlaps_a_marker`]): the crate documents those as contrived and out of reach.

use airlock_core::{HandleName, Secret};
use airlock_scrub::decode::{WORK_BASE, WORK_FACTOR};
use airlock_scrub::{min_cut_fragment, Scrubber, ScrubberBuilder, MIN_CUT_FRAGMENT};

/// The smallest secret the target builds (the brief: at least 8 bytes).
pub const MIN_SECRET: usize = 8;
/// The handle the secret is labelled with.
pub const LABEL: &str = "API";

/// The secret, the text with the secret embedded, where the secret starts in it, and how many
/// of its bytes a cut keeps; `None` when the input is too short.
pub fn split(data: &[u8]) -> Option<(String, String, usize, usize)> {
    let [len, pos, cut, rest @ ..] = data else { return None };
    let rest = String::from_utf8_lossy(rest);
    let want = MIN_SECRET + *len as usize % 57;
    let mut end = 0;
    for (i, c) in rest.char_indices() {
        if end >= want {
            break;
        }
        end = i + c.len_utf8();
    }
    if end < want {
        return None;
    }
    let (secret, text) = rest.split_at(end);
    let mut at = text.len() * *pos as usize / 255;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let embedded = format!("{}{secret}{}", &text[..at], &text[at..]);
    // Bytes of the secret a cut keeps: from MIN_CUT_FRAGMENT to all but its last character.
    let last = secret.char_indices().last().map_or(0, |(i, _)| i);
    let mut keep = MIN_CUT_FRAGMENT + *cut as usize % secret.len().max(1);
    keep = keep.min(last);
    while !secret.is_char_boundary(keep) {
        keep -= 1;
    }
    Some((secret.to_owned(), embedded, at, keep))
}

/// True when the secret overlaps a redaction marker: it lies inside one, holds one, starts with
/// the end of one or ends with the start of one. The crate documents these as out of reach:
/// patterns inside a marker are public and dropped, and a match that straddles a marker just
/// inserted is looked for in at most `MAX_PASSES` (4) passes, "possible only for contrived
/// secrets" (a secret `EDACTED:API]xx` in `EDACTED:API]xxxxxxxx...` re-forms after every pass).
pub fn overlaps_a_marker(secret: &str) -> bool {
    markers().any(|m| {
        m.contains(secret)
            || secret.contains(&m)
            || (1..=m.len()).any(|k| m.is_char_boundary(m.len() - k) && secret.starts_with(&m[m.len() - k..]))
            || (1..=m.len()).any(|k| m.is_char_boundary(k) && secret.ends_with(&m[..k]))
    })
}

fn markers() -> impl Iterator<Item = String> {
    std::iter::once(LABEL).chain(airlock_scrub::rules::rule_ids()).map(|l| format!("[REDACTED:{l}]"))
}

/// True when some marker ends with `s`.
fn marker_ends_with(s: &str) -> bool {
    markers().any(|m| m.ends_with(s))
}

/// A scrubber for `secret`, as the broker builds one.
pub fn scrubber(secret: &str) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse(LABEL).expect("a valid handle name"), &Secret::from_str_value(secret));
    b.build()
}

/// [`scrubber`], kept for the next inputs with the same secret: building the automata is most of
/// the cost of one input, and most mutations leave the secret alone. The same secret always
/// gives the same scrubber, so the cache changes nothing the property sees.
pub fn cached_scrubber(secret: &str) -> std::sync::Arc<Scrubber> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Scrubber>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(secret) {
        return s.clone();
    }
    let s = Arc::new(scrubber(secret));
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= 256 {
        c.clear();
    }
    c.insert(secret.to_owned(), s.clone());
    s
}

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    let Some((secret, text, at, keep)) = split(data) else { return };
    if overlaps_a_marker(&secret) {
        return;
    }
    let s = cached_scrubber(&secret);
    if let Err(why) = holds(&s, &secret, &text, at, keep) {
        panic!("scrub property: {why}\nsecret: {secret:?}\ntext: {text:?}");
    }
}

/// The property for one scrubber, secret and text; `Err` says what failed.
pub fn holds(s: &Scrubber, secret: &str, text: &str, at: usize, keep: usize) -> Result<(), String> {
    let (out, n) = s.scrub_str(text);
    if out.contains(secret) {
        return Err(format!("the output still holds the secret ({n} redactions): {out:?}"));
    }
    if n == 0 {
        return Err("the secret is in the text but nothing was redacted".into());
    }
    let (again, m) = s.scrub_str(&out);
    if again != out {
        return Err(format!("scrubbing is not idempotent ({m} more redactions): {out:?} -> {again:?}"));
    }
    if !s.contains_known_secret(text) {
        return Err("contains_known_secret misses the raw secret".into());
    }
    // A cut through the secret: keep `keep` bytes of it. Skipped for a secret holding `]`: every
    // marker ends with one, so the marker that replaced the fragment can complete a prefix of
    // such a secret with text that was in front of the fragment (the property would then see
    // a prefix the cut did not leave).
    let floor = min_cut_fragment(secret.as_bytes());
    if keep >= floor && !secret.contains(']') {
        let cut = &text[..at + keep];
        let (whole, _) = s.scrub_str(cut);
        let (tail, _) = s.scrub_cut_tail(&whole);
        for j in (floor..secret.len()).filter(|&j| secret.is_char_boundary(j)) {
            // A marker's own ending is public text (the redaction that replaced the fragment).
            if tail.ends_with(&secret[..j]) && !marker_ends_with(&secret[..j]) {
                return Err(format!("a cut leaves {j} bytes of the secret at the end: {tail:?}"));
            }
        }
    }
    let (work, _) = s.decode_work(text);
    let cap = WORK_FACTOR * text.len() + WORK_BASE;
    if work > cap {
        return Err(format!("decoding work {work} exceeds the linear cap {cap} for {} bytes", text.len()));
    }
    Ok(())
}
