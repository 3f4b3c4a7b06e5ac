//! Known-value matching: an Aho-Corasick automaton behind a sound q-gram prefilter.
//!
//! Every pattern is at least `m` bytes long. The text is sampled at a stride of `m - q + 1`; at
//! each sample the q-gram is looked up in a Bloom filter holding every q-gram that occurs in the
//! first `m` bytes of any pattern. Any occurrence of a pattern covers exactly one sample inside
//! its first `m` bytes, and that sample's q-gram is in the filter (a Bloom filter has no false
//! negatives), so running the automaton only on windows around the hits finds every match the
//! automaton would find on the whole text. Windows start `m - q` bytes before a hit and end the
//! longest pattern length after it.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Texts shorter than this are scanned by the automaton directly.
const DIRECT_SCAN_BELOW: usize = 512;
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

/// An automaton with its prefilter.
pub struct Matcher {
    ac: AhoCorasick,
    filter: Option<QGramFilter>,
    max_len: usize,
}

impl Matcher {
    /// Builds a matcher over `patterns` (none empty).
    pub fn new(patterns: &[Vec<u8>]) -> Result<Self, aho_corasick::BuildError> {
        let ac = AhoCorasickBuilder::new().match_kind(MatchKind::Standard).build(patterns)?;
        let min_len = patterns.iter().map(Vec::len).min().unwrap_or(0);
        let max_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let filter = (min_len > 0).then(|| QGramFilter::new(patterns, min_len.min(MAX_PREFIX)));
        Ok(Matcher { ac, filter, max_len })
    }

    /// Number of patterns.
    pub fn pattern_count(&self) -> usize {
        self.ac.patterns_len()
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
        for m in self.ac.find_overlapping_iter(text) {
            out.push(Hit { start: m.start(), end: m.end(), pattern: m.pattern().as_usize() });
        }
    }

    /// Calls `f` on every hit until it returns false.
    fn scan(&self, text: &[u8], mut f: impl FnMut(Hit) -> bool) {
        let Some(filter) = &self.filter else { return };
        let mut emit = |base: usize, slice: &[u8]| -> bool {
            for m in self.ac.find_overlapping_iter(slice) {
                let h = Hit { start: base + m.start(), end: base + m.end(), pattern: m.pattern().as_usize() };
                if !f(h) {
                    return false;
                }
            }
            true
        };
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

/// A register-blocked Bloom filter over q-grams (q <= 8), three bits per entry in one 64-bit word.
struct QGramFilter {
    q: usize,
    m: usize,
    stride: usize,
    mask: u64,
    shift: u32,
    words: Vec<u64>,
}

impl QGramFilter {
    fn new(patterns: &[Vec<u8>], m: usize) -> Self {
        let q = m.min(8);
        let stride = m - q + 1;
        let entries = patterns.len() * stride;
        // About 16 bits per entry: a false-positive rate well under 1%.
        let n_words = (entries * 16 / 64).next_power_of_two().max(64);
        let shift = 64 - n_words.trailing_zeros();
        let mask = if q == 8 { u64::MAX } else { (1u64 << (8 * q)) - 1 };
        let mut f = QGramFilter { q, m, stride, mask, shift, words: vec![0; n_words] };
        for p in patterns {
            for off in 0..stride {
                let h = hash(load(p, off) & f.mask);
                f.words[(h >> f.shift) as usize] |= bits(h);
            }
        }
        f
    }

    #[inline(always)]
    fn maybe(&self, text: &[u8], x: usize) -> bool {
        let h = hash(load(text, x) & self.mask);
        let need = bits(h);
        self.words[(h >> self.shift) as usize] & need == need
    }
}

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
