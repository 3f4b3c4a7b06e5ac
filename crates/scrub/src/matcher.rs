//! Known-value matching: a hashed index of anchored patterns behind a sound q-gram prefilter.
//!
//! Every pattern is at least `m` bytes long. The text is sampled at a stride of `m - q + 1`; at
//! each sample the q-gram is looked up in a Bloom filter (two levels, see `QGramFilter`) holding
//! every q-gram that occurs in the first `m` bytes of any pattern. Any occurrence of a pattern covers exactly one sample inside
//! its first `m` bytes, and that sample's q-gram is in the filter (a Bloom filter has no false
//! negatives), so searching only the windows around the hits finds every match a search of
//! the whole text would find. Windows start `m - q` bytes before a hit and end the longest
//! pattern length after it; an occurrence lies wholly inside the window of its sample.
//!
//! Inside a window, each pattern is found through its **anchor**: `a = min(m, 8)` bytes at an
//! offset of the builder's choosing. Every anchor goes into a hash table keyed by its bytes
//! (ASCII case folded); the search reads the `a` bytes at every position of the window, looks
//! them up, and compares each pattern anchored there with the text around it, byte for byte or
//! ASCII-case-insensitively. This finds every occurrence of every pattern wholly inside the
//! window (overlapping ones included), as an Aho-Corasick automaton would, with memory and
//! build time linear in the patterns' total length: an automaton over ten thousand secrets'
//! encodings took minutes and gigabytes to build. Each pattern's anchor is the window of it
//! (of up to [`MAX_ANCHOR_CHOICES`], tiling it) whose key fewest patterns have taken so far, so
//! patterns that share a prefix (encodings of URLs with one scheme and user) are anchored in
//! the parts where they differ, and a position of the text is compared with few patterns.
//!
//! Patterns come in two sets: exact ones and ASCII-case-insensitive ones (case-insensitive
//! encodings such as hex and base32). Both sets share the index (keys fold case); an exact
//! pattern matches only when the text equals it byte for byte. The filter folds ASCII case
//! (`| 0x20` on every byte) both when it is built and when it samples, so a case variant of a
//! pattern hits the same filter bits; folding only merges q-grams, which can add false hits but
//! never lose one.

use std::collections::HashMap;

/// Texts shorter than this are searched directly. (The prefilter is sound at any length; below
/// this its setup is not worth it. Kept low because the decoding passes run the matcher on many
/// short decoded layers, where skipping the search is the whole saving.)
const DIRECT_SCAN_BELOW: usize = 64;
/// The q-gram prefix length considered, capped to keep the filter small for long patterns.
const MAX_PREFIX: usize = 64;
/// A pattern's anchor is chosen among at most this many of its windows.
pub const MAX_ANCHOR_CHOICES: usize = 32;

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

/// Why a matcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A pattern is empty (it would match everywhere).
    #[error("an empty pattern")]
    EmptyPattern,
    /// The patterns together exceed the index's 4 GiB of pattern bytes or 2^32 patterns.
    #[error("the patterns exceed the index's capacity")]
    TooLarge,
}

/// One pattern anchored in the index.
#[derive(Clone, Copy)]
struct Entry {
    /// The anchor's `a` bytes, ASCII case folded.
    key: u64,
    /// Where the pattern's bytes start in the arena.
    at: u32,
    len: u32,
    /// The anchor's offset in the pattern.
    offset: u32,
    pattern: u32,
}

/// The patterns, their anchors in a hash table, and the prefilter.
pub struct Matcher {
    /// Every pattern's bytes, one after another (wiped when dropped).
    arena: Vec<u8>,
    /// Entries grouped by hash slot: slot `h` holds `entries[slots[h]..slots[h + 1]]`.
    slots: Vec<u32>,
    entries: Vec<Entry>,
    /// `64 - log2(slot count)`: the shift that turns a hash into a slot.
    shift: u32,
    /// Anchor length and the mask of its bytes in a little-endian load.
    a: usize,
    mask: u64,
    /// Patterns of the exact set; case-insensitive patterns are numbered after them.
    n_exact: usize,
    n_all: usize,
    filter: Option<QGramFilter>,
    min_len: usize,
    max_len: usize,
}

impl Drop for Matcher {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.arena);
        for e in &mut self.entries {
            e.key = 0;
        }
    }
}

impl Matcher {
    /// Builds a matcher over `patterns` (none empty), all matched exactly.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Result<Self, BuildError> {
        Self::with_nocase::<P>(patterns, &[])
    }

    /// Builds a matcher over `exact` patterns and ASCII-case-insensitive `nocase` patterns (none
    /// empty). Hits number the exact patterns first, then the case-insensitive ones.
    pub fn with_nocase<P: AsRef<[u8]>>(exact: &[P], nocase: &[P]) -> Result<Self, BuildError> {
        let all = || exact.iter().chain(nocase.iter()).map(AsRef::as_ref);
        if all().any(<[u8]>::is_empty) {
            return Err(BuildError::EmptyPattern);
        }
        let n_all = exact.len() + nocase.len();
        let total: usize = all().map(<[u8]>::len).sum();
        if total > u32::MAX as usize || n_all > u32::MAX as usize {
            return Err(BuildError::TooLarge);
        }
        let min_len = all().map(<[u8]>::len).min().unwrap_or(0);
        let max_len = all().map(<[u8]>::len).max().unwrap_or(0);
        let a = min_len.clamp(1, 8);
        let mask = if a == 8 { u64::MAX } else { (1u64 << (8 * a)) - 1 };
        let key = |p: &[u8], o: usize| (load(p, o) | FOLD) & mask;

        // Anchors: for each pattern, the window whose key the fewest patterns took before it.
        let mut taken: HashMap<u64, u32, KeyHash> = HashMap::with_capacity_and_hasher(n_all, KeyHash);
        let mut arena = Vec::with_capacity(total);
        let mut entries = Vec::with_capacity(n_all);
        for (i, p) in all().enumerate() {
            let last = p.len() - a;
            let step = last.div_ceil(MAX_ANCHOR_CHOICES - 2).max(a);
            let choices = (0..=last).step_by(step).chain(std::iter::once(last));
            let offset = choices
                .min_by_key(|&o| (taken.get(&key(p, o)).copied().unwrap_or(0), o))
                .unwrap_or(0);
            let k = key(p, offset);
            *taken.entry(k).or_insert(0) += 1;
            entries.push(Entry { key: k, at: arena.len() as u32, len: p.len() as u32, offset: offset as u32, pattern: i as u32 });
            arena.extend_from_slice(p);
        }
        drop(taken);
        let bits = (n_all * 2).next_power_of_two().max(16).trailing_zeros();
        let shift = 64 - bits;
        let slot_of = |k: u64| (hash(k) >> shift) as usize;
        let mut slots = vec![0u32; (1usize << bits) + 1];
        for e in &entries {
            slots[slot_of(e.key) + 1] += 1;
        }
        for h in 1..slots.len() {
            slots[h] += slots[h - 1];
        }
        let mut next = slots.clone();
        let mut placed = vec![Entry { key: 0, at: 0, len: 0, offset: 0, pattern: 0 }; entries.len()];
        for e in entries {
            let h = slot_of(e.key);
            placed[next[h] as usize] = e;
            next[h] += 1;
        }
        let filter = (min_len > 0).then(|| QGramFilter::new(all(), min_len.min(MAX_PREFIX)));
        Ok(Matcher { arena, slots, entries: placed, shift, a, mask, n_exact: exact.len(), n_all, filter, min_len, max_len })
    }

    /// Number of patterns.
    pub fn pattern_count(&self) -> usize {
        self.n_all
    }

    /// Every occurrence in `slice` (both sets) wholly inside it, offset by `base`, until `f`
    /// returns false.
    fn each(&self, base: usize, slice: &[u8], f: &mut impl FnMut(Hit) -> bool) -> bool {
        if self.entries.is_empty() || slice.len() < self.a {
            return true;
        }
        for i in 0..=slice.len() - self.a {
            let k = (load(slice, i) | FOLD) & self.mask;
            let h = (hash(k) >> self.shift) as usize;
            let (lo, hi) = (self.slots[h] as usize, self.slots[h + 1] as usize);
            for e in &self.entries[lo..hi] {
                let offset = e.offset as usize;
                if e.key != k || i < offset {
                    continue;
                }
                let start = i - offset;
                let end = start + e.len as usize;
                let Some(text) = slice.get(start..end) else { continue };
                let pat = &self.arena[e.at as usize..e.at as usize + e.len as usize];
                let pattern = e.pattern as usize;
                let found = if pattern < self.n_exact { text == pat } else { text.eq_ignore_ascii_case(pat) };
                if found && !f(Hit { start: base + start, end: base + end, pattern }) {
                    return false;
                }
            }
        }
        true
    }

    /// The longest pattern, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The shortest pattern, in bytes (0 with no pattern): no hit fits in a shorter text.
    pub fn min_len(&self) -> usize {
        self.min_len
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

    /// Every occurrence, searching the whole text with no prefilter (the reference the
    /// prefilter must agree with).
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

/// Hashes an anchor's key (its bytes in a `u64`) with the index's own mixing function, for the
/// map of anchors taken while building.
#[derive(Clone, Copy, Default)]
struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// See [`KeyHash`].
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        hash(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = k;
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
    fn new<'p>(patterns: impl Iterator<Item = &'p [u8]> + Clone, m: usize) -> Self {
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

    /// Patterns that share a long prefix (encodings of URLs with one scheme and user) are
    /// anchored where they differ: no key is shared by more than a few of them, so a text made
    /// of the shared prefix, repeated, is compared with few patterns at each position.
    #[test]
    fn shared_prefixes_are_anchored_apart() {
        const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut x = 7u64;
        let pats: Vec<Vec<u8>> = (0..5000)
            .map(|_| {
                let mut p = b"postgres://airlock_reader:".to_vec();
                p.extend((0..24).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    B62[(x % 62) as usize]
                }));
                p
            })
            .collect();
        let m = Matcher::new(&pats).unwrap();
        let mut per_key: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        for e in &m.entries {
            *per_key.entry(e.key).or_default() += 1;
        }
        let most = per_key.values().max().copied().unwrap_or(0);
        assert!(most <= 2, "{most} patterns share one anchor");
        // Every slot holds few entries (the table has twice as many slots as patterns).
        let fullest = m.slots.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(fullest <= 12, "a slot holds {fullest} entries");
        let mut hits = Vec::new();
        m.find_all(&pats[4321], &mut hits);
        assert_eq!(hits, vec![Hit { start: 0, end: pats[4321].len(), pattern: 4321 }]);
    }

    #[test]
    fn an_empty_pattern_is_refused() {
        assert!(matches!(Matcher::new(&[b"abcdef".to_vec(), Vec::new()]), Err(BuildError::EmptyPattern)));
    }
}
