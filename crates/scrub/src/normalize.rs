//! Normalisation before matching (T04): a copy of the text with separators and invisible
//! characters removed and look-alike characters folded, with a map back to original byte ranges.
//!
//! The same [`normalize_str`] is applied to the known patterns, so a pattern found in the
//! normalized text maps back to the original span that covers it. Folding is deliberately
//! lossy (`0`/`O`, `1`/`l`/`I` collapse, as in a confusables skeleton): an obfuscated secret must
//! collapse onto the same skeleton as the real one.

/// What normalisation does to one character.
enum Norm {
    /// Removed (whitespace, control, format, combining or other invisible characters).
    Drop,
    /// Replaced by an ASCII character.
    Ascii(u8),
    /// Kept as is.
    Keep,
}

fn classify(c: char) -> Norm {
    if c.is_ascii() {
        return match c as u8 {
            b if b <= 0x20 || b == 0x7f => Norm::Drop,
            b'0' => Norm::Ascii(b'O'),
            b'1' | b'I' => Norm::Ascii(b'l'),
            b => Norm::Ascii(b),
        };
    }
    let cp = c as u32;
    if c.is_whitespace() || c.is_control() || is_invisible(cp) {
        return Norm::Drop;
    }
    if let Some(a) = fold_non_ascii(cp) {
        // The skeleton folds apply after mapping to ASCII.
        return match a {
            b'0' => Norm::Ascii(b'O'),
            b'1' | b'I' => Norm::Ascii(b'l'),
            a => Norm::Ascii(a),
        };
    }
    Norm::Keep
}

/// Format characters, combining marks and fillers that render as nothing (or only decorate the
/// previous character), so they can be interleaved with a secret without changing how it reads.
fn is_invisible(cp: u32) -> bool {
    matches!(cp,
        0x00AD            // soft hyphen
        | 0x034F          // combining grapheme joiner
        | 0x0300..=0x036F // combining diacritical marks
        | 0x061C          // Arabic letter mark
        | 0x115F | 0x1160 | 0x3164 | 0xFFA0 // Hangul fillers
        | 0x17B4 | 0x17B5
        | 0x180B..=0x180F // Mongolian variation selectors, vowel separator
        | 0x200B..=0x200F // zero-width space/non-joiner/joiner, LRM, RLM
        | 0x202A..=0x202E // bidi embeddings and overrides
        | 0x2060..=0x206F // word joiner, invisible operators, bidi isolates
        | 0x20D0..=0x20FF // combining marks for symbols
        | 0xFE00..=0xFE0F // variation selectors
        | 0xFE20..=0xFE2F // combining half marks
        | 0xFEFF          // zero-width no-break space / BOM
        | 0xFFF9..=0xFFFB // interlinear annotation
        | 0x1D173..=0x1D17A
        | 0xE0000..=0xE007F // Unicode TAG characters
        | 0xE0100..=0xE01EF // variation selectors supplement
    )
}

/// Maps look-alikes of ASCII letters and digits to them: fullwidth forms, mathematical
/// alphanumerics, and common Cyrillic and Greek homoglyphs.
fn fold_non_ascii(cp: u32) -> Option<u8> {
    // Fullwidth ASCII.
    if (0xFF01..=0xFF5E).contains(&cp) {
        return Some((cp - 0xFEE0) as u8);
    }
    // Mathematical alphanumeric symbols: 13 alphabets of 52 letters, then 5 sets of 10 digits.
    if (0x1D400..=0x1D6A3).contains(&cp) {
        let i = ((cp - 0x1D400) % 52) as u8;
        return Some(if i < 26 { b'A' + i } else { b'a' + i - 26 });
    }
    if (0x1D7CE..=0x1D7FF).contains(&cp) {
        return Some(b'0' + ((cp - 0x1D7CE) % 10) as u8);
    }
    let c = char::from_u32(cp)?;
    let a = match c {
        // Cyrillic capitals
        'А' => b'A', 'В' => b'B', 'Е' => b'E', 'З' => b'3', 'К' => b'K', 'М' => b'M', 'Н' => b'H',
        'О' => b'O', 'Р' => b'P', 'С' => b'C', 'Т' => b'T', 'У' => b'Y', 'Х' => b'X', 'Ѕ' => b'S',
        'І' => b'I', 'Ј' => b'J', 'Ү' => b'Y', 'Ԁ' => b'D', 'Ԛ' => b'Q', 'Ԝ' => b'W', 'Ӏ' => b'I',
        // Cyrillic small
        'а' => b'a', 'в' => b'B', 'е' => b'e', 'к' => b'k', 'м' => b'M', 'н' => b'H', 'о' => b'o',
        'р' => b'p', 'с' => b'c', 'т' => b'T', 'у' => b'y', 'х' => b'x', 'ѕ' => b's', 'і' => b'i',
        'ј' => b'j', 'ԁ' => b'd', 'ԛ' => b'q', 'ԝ' => b'w', 'һ' => b'h', 'ӏ' => b'l', 'ү' => b'y',
        'ь' => b'b', 'б' => b'6', 'ɡ' => b'g',
        // Greek capitals
        'Α' => b'A', 'Β' => b'B', 'Ε' => b'E', 'Ζ' => b'Z', 'Η' => b'H', 'Ι' => b'I', 'Κ' => b'K',
        'Μ' => b'M', 'Ν' => b'N', 'Ο' => b'O', 'Ρ' => b'P', 'Τ' => b'T', 'Υ' => b'Y', 'Χ' => b'X',
        // Greek small
        'α' => b'a', 'ι' => b'i', 'κ' => b'k', 'ν' => b'v', 'ο' => b'o', 'ρ' => b'p', 'υ' => b'u',
        'χ' => b'x', 'ϲ' => b'c', 'ϳ' => b'j',
        // Other common look-alikes
        'ı' => b'i', 'ȷ' => b'j', 'ℓ' => b'l', '‐' | '‑' | '‒' | '–' | '−' => b'-',
        _ => return None,
    };
    Some(a)
}

/// The normalized form of a pattern (no map needed).
pub fn normalize_str(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        match classify(c) {
            Norm::Drop => {}
            Norm::Ascii(a) => out.push(a),
            Norm::Keep => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    out
}

/// The normalized byte of each ASCII byte; 0 where it is dropped.
const ASCII_MAP: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = match b as u8 {
            b'0' => b'O',
            b'1' | b'I' => b'l',
            x => x,
        };
        b += 1;
    }
    t
};

/// A normalized copy of a text with, for every normalized byte, the original byte offset of the
/// character it came from.
pub struct Normalized<'a> {
    /// The normalized bytes.
    pub bytes: Vec<u8>,
    starts: Vec<usize>,
    text: &'a str,
}

impl<'a> Normalized<'a> {
    /// Normalizes `text`.
    pub fn new(text: &'a str) -> Self {
        let src = text.as_bytes();
        let mut bytes = Vec::with_capacity(src.len());
        let mut starts = Vec::with_capacity(src.len());
        let mut buf = [0u8; 4];
        let mut i = 0;
        while i < src.len() {
            let b = src[i];
            if b < 0x80 {
                let m = ASCII_MAP[b as usize];
                if m != 0 {
                    bytes.push(m);
                    starts.push(i);
                }
                i += 1;
                continue;
            }
            let c = text[i..].chars().next().unwrap_or('\0');
            let out: &[u8] = match classify(c) {
                Norm::Drop => &[],
                Norm::Ascii(a) => {
                    buf[0] = a;
                    &buf[..1]
                }
                Norm::Keep => c.encode_utf8(&mut buf).as_bytes(),
            };
            bytes.extend_from_slice(out);
            starts.extend(std::iter::repeat_n(i, out.len()));
            i += c.len_utf8();
        }
        Normalized { bytes, starts, text }
    }

    /// The original byte range covering normalized bytes `[start, end)` (`end > start`).
    pub fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        let last = self.starts[end - 1];
        let len = self.text[last..].chars().next().map_or(1, char::len_utf8);
        (self.starts[start], last + len)
    }
}

/// Bit `j` set when byte `j` of the 64-byte block is a separator for the cheap trigger (ASCII
/// whitespace or control: `<= 0x20` or `0x7f`). SWAR over 8-byte words; exact
/// (non-ASCII bytes are never separators).
fn sep_mask(block: &[u8]) -> u64 {
    const H: u64 = 0x8080_8080_8080_8080;
    const L21: u64 = 0x2121_2121_2121_2121;
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut m = 0u64;
    for (w, c8) in block.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(c8.try_into().unwrap_or([0; 8]));
        // High bit of each byte: byte >= 0x21 after the subtraction; negate for <= 0x20.
        // Non-ASCII bytes (high bit set) are never separators.
        let le = !((v | H).wrapping_sub(L21)) & !v & H;
        let x = v ^ LO7; // zero where the byte is 0x7f
        let del = !(((x & LO7).wrapping_add(LO7)) | x) & H;
        // Gather the 8 high bits into the low byte (no carries: the products are distinct bits).
        let packed = ((le | del) >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        m |= packed << (8 * w);
    }
    m
}

/// Bit `j` of word `k` set when byte `64k + j` is ASCII whitespace or control (past the end
/// counts as one). Shared with the decoding passes' scanner, which reads the same masks.
pub(crate) fn sep_words(bytes: &[u8]) -> Vec<u64> {
    let mut words: Vec<u64> = bytes.chunks_exact(64).map(sep_mask).collect();
    let rem = bytes.chunks_exact(64).remainder();
    if !rem.is_empty() {
        // Past the end counts as a separator (a text boundary).
        let mut block = [b' '; 64];
        block[..rem.len()].copy_from_slice(rem);
        words.push(sep_mask(&block));
    }
    words
}

/// The minimum run of single-character tokens that makes ASCII text suspicious.
const SPACED_RUN: u32 = 4;

/// True when the normalisation pass is needed: the text has a run of at least four
/// single-character tokens separated only by whitespace or control characters (`a b c d`,
/// `a\tb\nc d`, however long the separating runs), or a non-ASCII character that normalisation
/// removes or folds (invisible, format, whitespace, homoglyph, fullwidth). Other non-ASCII text
/// (accents, CJK) normalizes to itself apart from ASCII separators, so it takes the fast path
/// like plain ASCII.
pub fn needs_normalization(text: &str) -> bool {
    needs_normalization_with(text, &sep_words(text.as_bytes()))
}

/// [`needs_normalization`] with the separator masks of `text` already computed.
pub(crate) fn needs_normalization_with(text: &str, words: &[u64]) -> bool {
    if has_spaced_run_with(words) {
        return true;
    }
    has_foldable_non_ascii(text)
}

fn has_foldable_non_ascii(text: &str) -> bool {
    const H: u64 = 0x8080_8080_8080_8080;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Skip ASCII eight bytes at a time.
        while let Some(w) = b.get(i..i + 8) {
            if u64::from_le_bytes(w.try_into().unwrap_or([0x80; 8])) & H != 0 {
                break;
            }
            i += 8;
        }
        let Some(&first) = b.get(i) else { break };
        if first < 0x80 {
            i += 1;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or('\0');
        if !matches!(classify(c), Norm::Keep) {
            return true;
        }
        i += c.len_utf8();
    }
    false
}

#[cfg(test)]
fn has_spaced_run(bytes: &[u8]) -> bool {
    has_spaced_run_with(&sep_words(bytes))
}

fn has_spaced_run_with(words: &[u64]) -> bool {
    let mut run = 0u32;
    for (w, &cur) in words.iter().enumerate() {
        let prev_hi = if w == 0 { 1 } else { words[w - 1] >> 63 };
        let next_lo = words.get(w + 1).map_or(1, |n| n & 1);
        let left = (cur << 1) | prev_hi; // bit i: byte i-1 is a separator
        let right = (cur >> 1) | (next_lo << 63); // bit i: byte i+1 is a separator
        let mut single = !cur & left & right;
        let long = !cur & !single;
        if single == 0 {
            if long != 0 {
                run = 0;
            }
            continue;
        }
        let mut from = 0u32; // first bit not yet accounted for
        while single != 0 {
            let p = single.trailing_zeros();
            if long & range_mask(from, p) != 0 {
                run = 0;
            }
            run += 1;
            if run >= SPACED_RUN {
                return true;
            }
            from = p + 1;
            single &= single - 1;
        }
        if long & range_mask(from, 64) != 0 {
            run = 0;
        }
    }
    false
}

/// Bits `[from, to)` set.
fn range_mask(from: u32, to: u32) -> u64 {
    let hi = if to >= 64 { u64::MAX } else { (1u64 << to) - 1 };
    let lo = if from >= 64 { u64::MAX } else { (1u64 << from) - 1 };
    hi & !lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_homoglyphs_fullwidth_and_drops_invisibles() {
        assert_eq!(normalize_str("s e\tc\nr\u{200B}e\u{E0041}t"), b"secret");
        assert_eq!(normalize_str("раѕѕwоrd"), b"password");
        assert_eq!(normalize_str("ＡＢＣ１２３"), b"ABCl23");
        assert_eq!(normalize_str("𝐀𝐛𝟏"), b"Abl");
        assert_eq!(normalize_str("0O1lI"), b"OOlll");
    }

    #[test]
    fn map_points_back_to_covering_original_span() {
        let text = "xx s\u{200B}e c r e t yy";
        let n = Normalized::new(text);
        let pos = n.bytes.windows(6).position(|w| w == b"secret").unwrap();
        let (a, b) = n.original_span(pos, pos + 6);
        assert_eq!(&text[a..b], "s\u{200B}e c r e t");
    }

    #[test]
    fn trigger_fires_on_spaced_runs_and_non_ascii_only() {
        assert!(needs_normalization("key: a b c d e f g h"));
        assert!(needs_normalization("a\tb\n\nc      d"));
        assert!(needs_normalization("x\u{200B}y"));
        assert!(needs_normalization("\u{0430}bc"));
        assert!(needs_normalization("a\u{3000}b"));
        assert!(!needs_normalization("caf\u{e9} \u{4E2D}\u{6587} na\u{ef}ve"));
        assert!(!needs_normalization("The quick brown fox jumps over a lazy dog. I am here."));
        assert!(!needs_normalization("a b c"));
        assert!(!needs_normalization(""));
        // Runs that straddle the 64-byte word boundaries.
        for pad in 55..70 {
            let t = format!("{}{}", "x".repeat(pad), " q w e r ");
            assert!(needs_normalization(&t), "pad {pad}");
            let t = format!("{} q w e {}", "x".repeat(pad), "long");
            assert!(!needs_normalization(&t), "pad {pad}");
        }
    }

    #[test]
    fn sep_mask_matches_scalar() {
        let bytes: Vec<u8> = (0u8..=255).chain(0u8..=255).collect();
        for start in 0..256 {
            let block = &bytes[start..start + 64];
            let want = block.iter().enumerate().fold(0u64, |m, (j, &b)| m | (((b <= 0x20) | (b == 0x7f)) as u64) << j);
            assert_eq!(sep_mask(block), want, "start {start}");
        }
    }

    #[test]
    fn trigger_matches_a_simple_reference() {
        fn reference(t: &str) -> bool {
            let mut run = 0;
            for tok in t.split(|c: char| c.is_ascii() && (c as u8 <= 0x20 || c as u8 == 0x7f)) {
                match tok.len() {
                    0 => {}
                    1 => {
                        run += 1;
                        if run >= 4 {
                            return true;
                        }
                    }
                    _ => run = 0,
                }
            }
            false
        }
        let mut x = 0x2545F4914F6CDD1Du64;
        for _ in 0..3000 {
            let len = (x % 200) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    [' ', 'a', 'b', '\n', 'c', ' '][(x % 6) as usize]
                })
                .collect();
            assert_eq!(has_spaced_run(s.as_bytes()), reference(&s), "{s:?}");
        }
    }
}
