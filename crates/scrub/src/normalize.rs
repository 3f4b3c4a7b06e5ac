//! Normalisation before matching (T04), in two strengths, each with a map back to the original
//! text:
//!
//! - the **skeleton** ([`Normalized`], [`normalize_str`]): separators and invisible characters
//!   removed and look-alike characters folded, deliberately lossy (`0`/`O`, `1`/`l`/`I` collapse,
//!   as in a confusables skeleton) so that an obfuscated secret collapses onto the same skeleton as
//!   the real one. The same function is applied to the known patterns, so a pattern found in the
//!   skeleton maps back to the original span that covers it.
//! - the **canonical form** ([`canonical`]): invisible and format characters removed, full-width
//!   forms and homoglyphs mapped to the ASCII character they imitate, other whitespace mapped to
//!   a space, and every ASCII byte kept as it is. It is lossless for ASCII, so the decoding passes
//!   ([`crate::decode`]) can decode what it spells (base64 written in full-width letters, hex with
//!   zero-width spaces between the digits).
//!
//! Both are built only for text that needs them ([`needs_normalization`]); plain ASCII prose
//! takes neither.
//!
//! **Invisible characters** are every character of general category `Cf` (format) and every
//! `Default_Ignorable_Code_Point`, taken from the Unicode tables of `regex-syntax` (Unicode 16),
//! plus combining marks that only decorate the previous character (see [`is_invisible`]).
//!
//! **Look-alikes** come from a small table ([`fold_non_ascii`]): the full-width forms
//! U+FF01–U+FF5E (exact, by offset), the mathematical alphanumeric symbols (U+1D400–U+1D7FF, by
//! offset), and the Cyrillic, Greek and Latin letters that Unicode's `confusables.txt` (UTS #39)
//! lists as confusable with an ASCII letter or digit and that render alike in common fonts. It is
//! deliberately not a full confusables database: a look-alike outside it is a miss.

use std::sync::OnceLock;

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

/// Sorted code point ranges of every `Cf` and `Default_Ignorable_Code_Point` character, from the
/// Unicode tables `regex-syntax` ships (built once).
fn format_ranges() -> &'static [(u32, u32)] {
    static RANGES: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    RANGES.get_or_init(|| {
        let hir = regex_syntax::ParserBuilder::new()
            .build()
            .parse(r"[\p{Cf}\p{Default_Ignorable_Code_Point}]")
            .expect("Unicode property classes compile (checked by tests)");
        match hir.kind() {
            regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(c)) => {
                c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
            }
            _ => Vec::new(),
        }
    })
}

/// True for characters that render as nothing, or only decorate the previous character, so they
/// can be interleaved with a secret (or used as its separators) without changing how it reads:
/// every format (`Cf`) and default-ignorable character (zero-width space, non-joiner and joiner,
/// word joiner, BOM, soft hyphen, bidi controls, invisible operators, Unicode TAG characters,
/// variation selectors, Hangul fillers...), and combining marks.
pub fn is_invisible(cp: u32) -> bool {
    if matches!(cp,
        0x0300..=0x036F   // combining diacritical marks
        | 0x1AB0..=0x1AFF // combining diacritical marks extended
        | 0x1DC0..=0x1DFF // combining diacritical marks supplement
        | 0x20D0..=0x20FF // combining marks for symbols
        | 0xFE20..=0xFE2F // combining half marks
    ) {
        return true;
    }
    let r = format_ranges();
    let i = r.partition_point(|&(_, hi)| hi < cp);
    r.get(i).is_some_and(|&(lo, _)| lo <= cp)
}

/// Maps look-alikes of ASCII letters and digits to them: the full-width forms U+FF01–U+FF5E, the
/// mathematical alphanumeric symbols, and a table of Cyrillic, Greek and Latin homoglyphs from
/// Unicode's `confusables.txt` (UTS #39) that render like an ASCII letter or digit. The table is
/// the documented extent of homoglyph folding: a look-alike outside it is not folded.
pub fn fold_non_ascii(cp: u32) -> Option<u8> {
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

/// The canonical form of a text (see the module docs) and a sparse map back to it.
pub struct Canonical {
    /// The canonical bytes.
    pub bytes: Vec<u8>,
    /// Segments `(canonical start, original start, unit)`, sorted by canonical start: with
    /// `unit == 0` canonical byte `c` of the segment comes from original byte `o + (c - start)`
    /// (copied bytes); otherwise the segment is one byte folded from the `unit`-byte original
    /// character at `o`. Removed characters simply lie between two segments.
    segs: Vec<(usize, usize, usize)>,
}

impl Canonical {
    /// The original byte range of canonical byte `c`.
    fn origin(&self, c: usize) -> (usize, usize) {
        let i = self.segs.partition_point(|&(start, _, _)| start <= c).saturating_sub(1);
        match self.segs.get(i) {
            Some(&(start, o, 0)) => (o + c - start, o + c - start + 1),
            Some(&(_, o, unit)) => (o, o + unit),
            None => (c, c + 1),
        }
    }

    /// The original byte range covering canonical bytes `[start, end)` (`end > start`), with
    /// every removed character between them.
    pub fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        (self.origin(start).0, self.origin(end - 1).1)
    }
}

/// What the canonical form does with one non-ASCII character: `None` keeps it, `Some(None)`
/// removes it, `Some(Some(b))` writes ASCII byte `b` instead.
fn canonical_char(c: char) -> Option<Option<u8>> {
    let cp = c as u32;
    if c.is_whitespace() {
        return Some(Some(b' '));
    }
    if c.is_control() || is_invisible(cp) {
        return Some(None);
    }
    fold_non_ascii(cp).map(Some)
}

/// The canonical form of `text` (see the module docs): ASCII kept byte for byte, invisible and
/// format characters removed, look-alikes and full-width forms mapped to ASCII, other
/// whitespace mapped to a space. Bytes that are not UTF-8 (a decoded layer is often text with
/// binary around it) are kept as they are. Linear in the text.
pub fn canonical(text: &[u8]) -> Canonical {
    let mut bytes = Vec::with_capacity(text.len());
    let mut segs: Vec<(usize, usize, usize)> = Vec::new();
    // Whether the last segment is a copy that the next copied byte extends.
    let mut copying = false;
    let copy = |bytes: &mut Vec<u8>, segs: &mut Vec<(usize, usize, usize)>, at: usize, b: &[u8], copying: &mut bool| {
        if !*copying {
            segs.push((bytes.len(), at, 0));
            *copying = true;
        }
        bytes.extend_from_slice(b);
    };
    let mut at = 0;
    for chunk in text.utf8_chunks() {
        let valid = chunk.valid();
        let src = valid.as_bytes();
        let mut i = 0;
        while i < src.len() {
            if src[i] < 0x80 {
                // Copy ASCII runs in one go.
                let run = src[i..].iter().position(|&b| b >= 0x80).unwrap_or(src.len() - i);
                copy(&mut bytes, &mut segs, at + i, &src[i..i + run], &mut copying);
                i += run;
                continue;
            }
            let c = valid[i..].chars().next().unwrap_or('\0');
            let n = c.len_utf8();
            match canonical_char(c) {
                None => copy(&mut bytes, &mut segs, at + i, &src[i..i + n], &mut copying),
                Some(None) => copying = false,
                Some(Some(a)) => {
                    segs.push((bytes.len(), at + i, n));
                    bytes.push(a);
                    copying = false;
                }
            }
            i += n;
        }
        at += src.len();
        let invalid = chunk.invalid();
        if !invalid.is_empty() {
            copy(&mut bytes, &mut segs, at, invalid, &mut copying);
            at += invalid.len();
        }
    }
    Canonical { bytes, segs }
}

/// True when [`canonical`] changes the non-ASCII character `c` (removes it, folds it or maps it
/// to a space).
pub fn changes_char(c: char) -> bool {
    canonical_char(c).is_some()
}

/// True when [`canonical`] would change `text`: it holds a non-ASCII character that is removed,
/// folded or mapped to a space. ASCII text answers at the speed of `is_ascii`.
pub fn canonical_changes(text: &[u8]) -> bool {
    !text.is_ascii()
        && text
            .utf8_chunks()
            .any(|c| c.valid().chars().any(|c| !c.is_ascii() && canonical_char(c).is_some()))
}

/// Bit `j` set when byte `j` of the 64-byte block is a separator for the cheap trigger (ASCII
/// whitespace or control: `<= 0x20` or `0x7f`). SWAR over 8-byte words; exact
/// (non-ASCII bytes are never separators).
fn sep_mask(block: &[u8]) -> u64 {
    const H: u64 = 0x8080_8080_8080_8080;
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TO80: u64 = 0x5e5e_5e5e_5e5e_5e5e;
    let mut m = 0u64;
    for (w, c8) in block.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(c8.try_into().unwrap_or([0; 8]));
        // An ASCII byte b is a separator exactly when (b + 1) & 0x7f <= 0x21 (b <= 0x20, or
        // 0x7f wrapping to 0). Per byte, without carries: (b & 0x7f) + 1 <= 0x80, and that
        // (masked) plus 0x5e reaches the high bit exactly when it is at least 0x22.
        let t = ((v & LO7) + ONES) & LO7;
        // Non-ASCII bytes (high bit set) are never separators.
        let sep = !(t + TO80) & !v & H;
        // Gather the 8 high bits into the low byte (no carries: the products are distinct bits).
        let packed = (sep >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        m |= packed << (8 * w);
    }
    m
}

/// Texts of up to this many 64-byte blocks keep their separator masks inline: most leaves of a
/// result (header values, short fields) are such texts, and their masks cost no allocation.
const INLINE_WORDS: usize = 4;

/// The separator masks of a text ([`sep_words`]), read as a slice.
pub(crate) enum SepWords {
    /// At most [`INLINE_WORDS`] masks: the array and how many of it are used.
    Inline([u64; INLINE_WORDS], usize),
    /// More.
    Heap(Vec<u64>),
}

impl std::ops::Deref for SepWords {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        match self {
            SepWords::Inline(w, n) => &w[..*n],
            SepWords::Heap(v) => v,
        }
    }
}

/// Bit `j` of word `k` set when byte `64k + j` is ASCII whitespace or control (past the end
/// counts as one). Shared with the decoding passes' scanner, which reads the same masks.
pub(crate) fn sep_words(bytes: &[u8]) -> SepWords {
    let rem = bytes.chunks_exact(64).remainder();
    // Past the end counts as a separator (a text boundary).
    let last = (!rem.is_empty()).then(|| {
        let mut block = [b' '; 64];
        block[..rem.len()].copy_from_slice(rem);
        sep_mask(&block)
    });
    let words = bytes.chunks_exact(64).map(sep_mask).chain(last);
    let n = bytes.len().div_ceil(64);
    if n <= INLINE_WORDS {
        let mut w = [0u64; INLINE_WORDS];
        for (slot, m) in w.iter_mut().zip(words) {
            *slot = m;
        }
        SepWords::Inline(w, n)
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend(words);
        SepWords::Heap(v)
    }
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
    // Normalisation and the canonical form change the same non-ASCII characters.
    canonical_changes(text.as_bytes())
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

    /// Bit `j` of word `k` is byte `64k + j` of `text` (past the end set), inline or on the
    /// heap as the length says.
    fn assert_sep_words(text: &[u8]) {
        let len = text.len();
        let words = sep_words(text);
        assert_eq!(words.len(), len.div_ceil(64), "length {len}");
        assert_eq!(matches!(words, SepWords::Inline(..)), len <= 64 * INLINE_WORDS, "length {len}");
        for (k, &w) in words.iter().enumerate() {
            for j in 0..64 {
                let sep = text.get(64 * k + j).is_none_or(|&b| b <= 0x20 || b == 0x7f);
                assert_eq!(w >> j & 1 == 1, sep, "length {len}, byte {}", 64 * k + j);
            }
        }
    }

    /// The masks are the same inline and on the heap: every length from 0 to five blocks and
    /// a byte, so every cut of a block on both sides of the inline bound.
    #[test]
    fn sep_words_match_each_byte_at_every_length() {
        let bytes: Vec<u8> = (0..64 * 5 + 1).map(|i| [b'a', b' ', 0x7f, b'\n', 0xc3, b'x', 0x00][i * 7 % 11 % 7]).collect();
        for len in 0..=bytes.len() {
            assert_sep_words(&bytes[..len]);
        }
    }

    proptest::proptest! {
        /// Any bytes, any length up to ten blocks: the masks are each byte's.
        #[test]
        fn sep_words_match_each_byte_of_any_text(text in proptest::collection::vec(proptest::num::u8::ANY, 0..640)) {
            assert_sep_words(&text);
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
