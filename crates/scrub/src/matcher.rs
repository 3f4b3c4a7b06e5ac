//! Known-value matching: an Aho-Corasick automaton behind a sound q-gram prefilter.
//!
//! Every pattern is at least `m` bytes long. The text is sampled at a stride of `m - q + 1`; at
//! each sample the q-gram is looked up in a Bloom filter (two levels, see `QGramFilter`) holding
//! every q-gram that occurs in the first `m` bytes of any pattern. Any occurrence of a pattern covers exactly one sample inside
//! its first `m` bytes, and that sample's q-gram is in the filter (a Bloom filter has no false
//! negatives), so running the automaton only on windows around the hits finds every match the
//! automaton would find on the whole text. Windows start `m - q` bytes before a hit and end the
//! longest pattern length after it.
//!
//! Patterns come in two sets: exact ones and ASCII-case-insensitive ones (case-insensitive
//! encodings such as hex and base32). When there are case-insensitive patterns, one
//! case-insensitive automaton holds both sets (one pass per window instead of two) and a hit on
//! an exact pattern is kept only if the text equals the pattern byte for byte. The filter folds
//! ASCII case (`| 0x20` on every byte) both when it is built and when it samples, so a case
//! variant of a pattern hits the same filter bits; folding only merges q-grams, which can add
//! false hits but never lose one.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// Texts shorter than this are scanned by the automaton directly. (The prefilter is sound at any
/// length; below this its setup is not worth it. Kept low because the decoding passes run the
/// matcher on many short decoded layers, where skipping the automaton is the whole saving.)
const DIRECT_SCAN_BELOW: usize = 64;
/// The q-gram prefix length considered, capped to keep the filter small for long patterns.
const MAX_PREFIX: usize = 64;

/// A match: byte range and pattern index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Index of the pattern.
    pub pattern: usize,
}

/// How a matcher's automaton is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The fastest search for the set (a DFA for small sets): for what is built once and scans
    /// every result.
    ForSearch,
    /// A contiguous NFA, built in a fraction of a DFA's time and searched a little slower: for
    /// what is rebuilt often (the secrets of leases, added and taken out as they come and go).
    Quick,
}

/// The automaton (exact and case-insensitive patterns) with its prefilter.
pub struct Matcher {
    ac: Option<AhoCorasick>,
    /// The exact patterns, to verify hits when the automaton is case-insensitive (empty when it
    /// is not).
    verify: Vec<Box<[u8]>>,
    /// Patterns of the exact set; case-insensitive patterns are numbered after them.
    n_exact: usize,
    n_all: usize,
    filter: Option<QGramFilter>,
    max_len: usize,
}

impl Matcher {
    /// Builds a matcher over `patterns` (none empty), all matched exactly.
    pub fn new(patterns: &[Vec<u8>]) -> Result<Self, aho_corasick::BuildError> {
        Self::with_nocase(patterns, &[], Build::ForSearch)
    }

    /// Builds a matcher over `exact` patterns and ASCII-case-insensitive `nocase` patterns (none
    /// empty). Hits number the exact patterns first, then the case-insensitive ones.
    pub fn with_nocase(exact: &[Vec<u8>], nocase: &[Vec<u8>], build: Build) -> Result<Self, aho_corasick::BuildError> {
        let all = || exact.iter().chain(nocase.iter());
        let ci = !nocase.is_empty();
        let ac = if exact.is_empty() && nocase.is_empty() {
            None
        } else {
            let mut b = AhoCorasickBuilder::new();
            b.match_kind(MatchKind::Standard).ascii_case_insensitive(ci);
            if build == Build::Quick {
                b.kind(Some(AhoCorasickKind::ContiguousNFA));
            }
            Some(b.build(all())?)
        };
        let verify = if ci { exact.iter().map(|p| p.clone().into_boxed_slice()).collect() } else { Vec::new() };
        let min_len = all().map(Vec::len).min().unwrap_or(0);
        let max_len = all().map(Vec::len).max().unwrap_or(0);
        let filter = (min_len > 0).then(|| QGramFilter::new(all(), min_len.min(MAX_PREFIX)));
        Ok(Matcher { ac, verify, n_exact: exact.len(), n_all: exact.len() + nocase.len(), filter, max_len })
    }

    /// Number of patterns.
    pub fn pattern_count(&self) -> usize {
        self.n_all
    }

    /// Every occurrence in `slice` (both sets), offset by `base`, until `f` returns false.
    fn each(&self, base: usize, slice: &[u8], f: &mut impl FnMut(Hit) -> bool) -> bool {
        let Some(ac) = &self.ac else { return true };
        for m in ac.find_overlapping_iter(slice) {
            let p = m.pattern().as_usize();
            // A case-insensitive automaton also reports case variants of exact patterns.
            if p < self.n_exact && !self.verify.is_empty() && slice[m.start()..m.end()] != *self.verify[p] {
                continue;
            }
            let h = Hit { start: base + m.start(), end: base + m.end(), pattern: p };
            if !f(h) {
                return false;
            }
        }
        true
    }

    /// The longest pattern, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Every occurrence of every pattern (overlapping), via the prefilter.
    pub fn find_all(&self, text: &[u8], out: &mut Vec<Hit>) {
        self.scan(text, |h| {
            out.push(h);
            true
        });
    }

    /// True when any pattern occurs.
    pub fn is_match(&self, text: &[u8]) -> bool {
        let mut found = false;
        self.scan(text, |_| {
            found = true;
            false
        });
        found
    }

    /// Every occurrence, scanning the whole text with the automaton (the reference the prefilter
    /// must agree with).
    pub fn find_all_unfiltered(&self, text: &[u8], out: &mut Vec<Hit>) {
        self.each(0, text, &mut |h| {
            out.push(h);
            true
        });
    }

    /// Calls `f` on every hit until it returns false.
    fn scan(&self, text: &[u8], mut f: impl FnMut(Hit) -> bool) {
        let Some(filter) = &self.filter else { return };
        let mut emit = |base: usize, slice: &[u8]| -> bool { self.each(base, slice, &mut f) };
        if text.len() < DIRECT_SCAN_BELOW {
            emit(0, text);
            return;
        }
        let back = filter.m - filter.q;
        let mut window: Option<(usize, usize)> = None;
        let mut x = 0usize;
        while x + filter.q <= text.len() {
            if filter.maybe(text, x) {
                let start = x.saturating_sub(back);
                let end = (x + self.max_len).min(text.len());
                window = match window {
                    Some((s, e)) if start <= e => Some((s, e.max(end))),
                    Some((s, e)) => {
                        if !emit(s, &text[s..e]) {
                            return;
                        }
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            x += filter.stride;
        }
        if let Some((s, e)) = window {
            emit(s, &text[s..e]);
        }
    }
}

/// Two register-blocked Bloom filters over the same q-grams (q <= 8): a small first level (two
/// bits per entry in one 64-bit word, about [`L1_BITS`] bits per entry) that stays in the
/// core's cache and rejects most samples, and a larger second level (three bits per entry,
/// about [`L2_BITS`] bits per entry, independent hash bits) consulted only on a first-level
/// hit. A sample passes when both say maybe; neither has false negatives, so the pair has none.
/// With a thousand secrets the second level alone is a few MiB, and a lookup that misses the
/// cache on every sample was the scan's largest cost; the first level keeps that to a few
/// percent of the samples.
struct QGramFilter {
    q: usize,
    m: usize,
    stride: usize,
    mask: u64,
    l1: Vec<u64>,
    l2: Vec<u64>,
}

/// Bits per entry of the first-level filter (about 16% of non-members pass it).
const L1_BITS: usize = 4;
/// Bits per entry of the second-level filter (under 1% of non-members pass it).
const L2_BITS: usize = 16;

impl QGramFilter {
    fn new<'p>(patterns: impl Iterator<Item = &'p Vec<u8>> + Clone, m: usize) -> Self {
        let q = m.min(8);
        let stride = m - q + 1;
        let entries = patterns.clone().count() * stride;
        // Sized exactly (no rounding to a power of two, which could double the memory).
        let words = |bits: usize| (entries * bits / 64).max(64);
        let mask = if q == 8 { u64::MAX } else { (1u64 << (8 * q)) - 1 };
        let mut f = QGramFilter { q, m, stride, mask, l1: vec![0; words(L1_BITS)], l2: vec![0; words(L2_BITS)] };
        for p in patterns {
            for off in 0..stride {
                let h = hash((load(p, off) | FOLD) & f.mask);
                let i = slot(h, f.l1.len());
                f.l1[i] |= bits2(h);
                let h2 = rehash(h);
                let i = slot(h2, f.l2.len());
                f.l2[i] |= bits(h2);
            }
        }
        f
    }

    #[inline(always)]
    fn maybe(&self, text: &[u8], x: usize) -> bool {
        let h = hash((load(text, x) | FOLD) & self.mask);
        let need = bits2(h);
        if self.l1[slot(h, self.l1.len())] & need != need {
            return false;
        }
        let h2 = rehash(h);
        let need = bits(h2);
        self.l2[slot(h2, self.l2.len())] & need == need
    }
}

/// The word of an `n`-word filter for hash `h` (its high 32 bits scaled to `n`, so any size
/// works; the low bits choose the bits in the word).
#[inline(always)]
fn slot(h: u64, n: usize) -> usize {
    (((h >> 32) * n as u64) >> 32) as usize
}

/// A second, independent hash from the first.
#[inline(always)]
fn rehash(h: u64) -> u64 {
    let x = (h ^ (h >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^ (x >> 29)
}

/// ASCII case fold for the filter: sets bit 5 of every byte (maps `A`-`Z` onto `a`-`z`, and merges
/// some other pairs, which only costs a few false hits).
const FOLD: u64 = 0x2020_2020_2020_2020;

/// Up to 8 bytes from `x` (little-endian), zero-filled past the end.
#[inline(always)]
fn load(b: &[u8], x: usize) -> u64 {
    match b.get(x..x + 8) {
        Some(s) => u64::from_le_bytes(s.try_into().unwrap_or([0; 8])),
        None => {
            let mut buf = [0u8; 8];
            let tail = &b[x.min(b.len())..];
            buf[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(buf)
        }
    }
}

#[inline(always)]
fn hash(g: u64) -> u64 {
    let mut h = g ^ (g >> 31);
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

#[inline(always)]
fn bits(h: u64) -> u64 {
    (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63)) | (1u64 << ((h >> 12) & 63))
}

#[inline(always)]
fn bits2(h: u64) -> u64 {
    (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_scan_equals_full_scan_on_planted_text() {
        let pats: Vec<Vec<u8>> = ["abcdefgh12", "zzzzzzzzzzzzzzzzzzzz", "short6"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let m = Matcher::new(&pats).unwrap();
        let mut text = "lorem ipsum dolor sit amet ".repeat(100);
        text.insert_str(0, "abcdefgh12");
        text.insert_str(700, "short6zzzzzzzzzzzzzzzzzzzzz");
        text.push_str("short6");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        m.find_all(text.as_bytes(), &mut a);
        m.find_all_unfiltered(text.as_bytes(), &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(a.len() >= 4);
        assert!(m.is_match(text.as_bytes()));
        assert!(!m.is_match("lorem ipsum dolor sit amet ".repeat(100).as_bytes()));
    }
}
