//! The encodings of one known secret that the matcher looks for (T04).
//!
//! Every function here returns byte strings that a secret may appear as in text: raw, base64
//! (standard and URL-safe, padded and unpadded, in the three byte alignments), base32 (RFC 4648,
//! the five byte alignments), hex, percent, JSON and HTML escapes, reversed, and base64/hex of
//! those encodings to depth 2. Only variants that differ from the raw value are kept (the caller
//! de-duplicates), and encoded forms shorter than [`MIN_ENCODED_LEN`] are dropped.
//!
//! Every encoded form is matched ASCII-case-insensitively ([`classified_variants`]), and short
//! ones (or ones with blanks) are listed written backwards too (longer reversed forms are read
//! backwards by the decoding passes): hex, base32 and percent are
//! case-insensitive encodings anyway, and a re-cased base64 form cannot be decoded, so matching
//! the listed forms in any case is the only way to find it. The raw value (and the raw value
//! reversed) is matched exactly, or in any case when it is at least [`CASE_FOLD_MIN_LEN`] bytes
//! long. Forms this list does not hold (nesting, line wrapping, separators, partial escaping,
//! reversed or re-spelled encodings of encodings) are found by decoding candidate spans
//! ([`crate::decode`]).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// Secrets shorter than this are not matched at all: a 4- or 5-byte value occurs by chance in
/// ordinary output so often that redacting it would shred results without protecting much.
pub const MIN_SECRET_LEN: usize = 6;

/// Encoded forms (and base64 stable cores) shorter than this are skipped, for the same reason.
pub const MIN_ENCODED_LEN: usize = 8;

/// A secret this long or longer is also matched with its ASCII case folded (an upstream that
/// upper-cases a token). Shorter values are not: a case-folded 8-character value collides with
/// ordinary words and identifiers far more often (16 characters of a random token carry well over
/// 64 bits even case-folded; a 16-character English phrase folded is still rare verbatim).
pub const CASE_FOLD_MIN_LEN: usize = 16;

/// How a variant is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Case {
    /// Byte for byte.
    Exact,
    /// ASCII letters in any case (the encoding is case-insensitive, or the secret is long).
    Fold,
}

/// All variants of `secret`, raw first. May contain duplicates; never contains an encoded form
/// shorter than [`MIN_ENCODED_LEN`]. Empty when the secret is shorter than [`MIN_SECRET_LEN`].
/// Case-insensitive forms appear in one case only (see [`classified_variants`]).
pub fn all_variants(secret: &[u8]) -> Vec<Vec<u8>> {
    classified_variants(secret).into_iter().map(|(v, _)| v).collect()
}

/// All variants of `secret` with how each is matched, raw first.
pub fn classified_variants(secret: &[u8]) -> Vec<(Vec<u8>, Case)> {
    if secret.len() < MIN_SECRET_LEN {
        return Vec::new();
    }
    let mut fold: Vec<Vec<u8>> = Vec::new();
    fold.push(hex_lower(secret).into_bytes());
    base32_variants(secret, &mut fold);
    // Every byte percent-encoded: only the hex digits vary in case.
    fold.push(secret.iter().map(|&b| format!("%{b:02x}")).collect::<String>().into_bytes());
    let mut enc: Vec<Vec<u8>> = Vec::new();
    base64_variants(secret, &mut enc);
    percent_variants(secret, &mut enc);
    if let Ok(s) = std::str::from_utf8(secret) {
        json_variants(s, &mut enc);
        html_variants(s, &mut enc);
    }
    // Depth 2: base64/hex of the common standalone encodings (base64 of base64, hex of base64,
    // base64 of hex, hex of hex).
    let inner = [
        STANDARD.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        hex_lower(secret).into_bytes(),
    ];
    for t in &inner {
        base64_cores(t, &mut enc);
        enc.push(STANDARD.encode(t).into_bytes());
        fold.push(hex_lower(t).into_bytes());
    }
    // Encodings of the reversed value: a reversed secret that is then encoded is too short for
    // the decoding passes when the secret is short.
    let rev = reversed(secret);
    // Stable base64 cores and the standalone base32 only (the tails and other alignments would
    // cost many patterns for a rare case; a longer reversed-then-encoded value is found by the
    // decoding passes).
    base64_cores(&rev, &mut enc);
    fold.push(hex_lower(&rev).into_bytes());
    fold.push(base32_encode(&rev));
    let raw_case = if secret.len() >= CASE_FOLD_MIN_LEN { Case::Fold } else { Case::Exact };
    // The reversed raw value is matched like the raw one; it is listed with the encodings
    // (`enc`) above, so pull it out before they are all made case-insensitive.
    let rev_raw = rev.clone();
    let mut out = Vec::with_capacity(2 * (enc.len() + fold.len()) + 2);
    out.push((secret.to_vec(), raw_case));
    if rev_raw.as_slice() != secret {
        out.push((rev_raw.clone(), raw_case));
    }
    // Every encoded form in any ASCII case: an encoding is matched however an upstream re-cased
    // it (a case change of base64 is only found this way, since it cannot be decoded), and case
    // folding a form of at least MIN_ENCODED_LEN random-looking characters costs nothing in
    // false positives. Written backwards too, where the decoding passes would not find the
    // reversed form (see `listed_reversed`).
    let keep = |v: &Vec<u8>| v.len() >= MIN_ENCODED_LEN && v.as_slice() != secret && *v != rev_raw;
    for v in enc.into_iter().chain(fold).filter(keep) {
        let r = reversed(&v);
        out.push((v, Case::Fold));
        if listed_reversed(&r) && keep(&r) {
            out.push((r, Case::Fold));
        }
    }
    out
}

/// The decoding passes read every encoded-looking run of at least [`REVERSED_RUN_FOUND`]
/// characters backwards too, and every blank-free token around an escape that decodes read
/// backwards ([`crate::decode`]); a reversed encoding is listed as a pattern only where they do
/// not reach it: shorter than that, or holding a blank (a partially escaped secret with spaces).
/// Listing every reversed form would double the automaton, and its prefilter's memory, for
/// nothing the passes do not already find.
fn listed_reversed(r: &[u8]) -> bool {
    r.len() < REVERSED_RUN_FOUND || r.iter().any(|&b| b <= b' ')
}

/// Reversed encodings at least this long that hold no blank are not listed as patterns: the
/// decoding passes read them backwards ([`crate::decode`]), since a run this long holds a whole
/// aligned 8-byte word of encoded characters (what the decoding scan starts from) and is long
/// enough for each block decoding.
pub const REVERSED_RUN_FOUND: usize = 16;

/// `b` written backwards: by character when it is UTF-8 (as a person or a `reverse()` function
/// writes it), by byte otherwise.
pub fn reversed(b: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(b) {
        Ok(t) => t.chars().rev().collect::<String>().into_bytes(),
        Err(_) => b.iter().rev().copied().collect(),
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub(crate) fn base32_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &x in b {
        acc = (acc << 8) | x as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize]);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize]);
    }
    out
}

/// Base32 forms of `secret` at byte offset 0..5 (mod 5) of a larger blob: the stable core (groups
/// made of secret bits only), and the whole standalone encoding padded and unpadded (so the
/// last, partial group goes too). Matched case-insensitively (lower-case base32 is common in
/// TOTP seeds and DNS labels). Tails of a secret that ends a longer blob at another alignment
/// are not listed: a blob that long is a decoding-pass candidate.
fn base32_variants(secret: &[u8], out: &mut Vec<Vec<u8>>) {
    for k in 0..5usize {
        let mut buf = vec![0u8; k];
        buf.extend_from_slice(secret);
        let enc = base32_encode(&buf);
        let first = (8 * k).div_ceil(5);
        let last = ((8 * (k + secret.len())) / 5).max(first);
        out.push(enc[first..last].to_vec());
        if k == 0 {
            let mut padded = enc.clone();
            padded.extend(std::iter::repeat_n(b'=', (8 - enc.len() % 8) % 8));
            out.push(enc);
            out.push(padded);
        }
    }
}

/// Base64 forms of `secret` embedded at byte offset 0, 1 or 2 (mod 3) of a larger blob: for each
/// alignment the stable core (characters that depend on secret bits only), and the tail forms for a
/// secret that ends the blob, padded and unpadded; standard and URL-safe alphabets.
fn base64_variants(secret: &[u8], out: &mut Vec<Vec<u8>>) {
    base64_aligned(secret, true, out);
    out.push(STANDARD.encode(secret).into_bytes());
    out.push(URL_SAFE.encode(secret).into_bytes());
}

/// Only the stable middle cores (both alphabets, three alignments): used at depth 2.
fn base64_cores(secret: &[u8], out: &mut Vec<Vec<u8>>) {
    base64_aligned(secret, false, out);
}

/// For each alphabet and alignment `k` (the secret at byte offset `k` mod 3 of a larger blob),
/// the stable core; with `tails`, also the forms of a secret that ends the blob, whose last
/// partial character is padded with zero bits and is stable too (unpadded and padded).
fn base64_aligned(secret: &[u8], tails: bool, out: &mut Vec<Vec<u8>>) {
    for plain in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for k in 0..3usize {
            let mut buf = vec![0u8; k];
            buf.extend_from_slice(secret);
            let enc = plain.encode(&buf).into_bytes();
            let (first, last) = stable_range(k, secret.len());
            out.push(enc[first..last].to_vec());
            if tails {
                let tail = enc[first..].to_vec();
                let pad = (3 - (k + secret.len()) % 3) % 3;
                let mut padded = tail.clone();
                padded.extend(std::iter::repeat_n(b'=', pad));
                out.push(tail);
                out.push(padded);
            }
        }
    }
}

/// Character range `[first, last)` of the base64 encoding of `k` filler bytes followed by `n`
/// secret bytes whose 6-bit groups lie wholly inside the secret's bits.
fn stable_range(k: usize, n: usize) -> (usize, usize) {
    let first = (8 * k).div_ceil(6);
    let last = (8 * (k + n)) / 6;
    (first, last.max(first))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn percent_variants(secret: &[u8], out: &mut Vec<Vec<u8>>) {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    for upper in [true, false] {
        let hex = |b: u8| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") };
        // (Every byte encoded is a case-insensitive form, listed by the caller.)
        out.push(
            secret
                .iter()
                .map(|&b| if unreserved(b) { (b as char).to_string() } else { hex(b) })
                .collect::<String>()
                .into_bytes(),
        );
        // application/x-www-form-urlencoded writes a space as '+'.
        if secret.contains(&b' ') {
            out.push(
                secret
                    .iter()
                    .map(|&b| match b {
                        b' ' => "+".to_owned(),
                        b if unreserved(b) => (b as char).to_string(),
                        b => hex(b),
                    })
                    .collect::<String>()
                    .into_bytes(),
            );
        }
    }
}

/// How the value looks inside a JSON string literal: serde_json's form, the same with `/` escaped,
/// with every non-ASCII character as `\uXXXX`, and every character as `\uXXXX` (lower and upper
/// hex digits).
fn json_variants(s: &str, out: &mut Vec<Vec<u8>>) {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default().to_owned();
    out.push(inner.replace('/', "\\/").into_bytes());
    let ascii_only: String = inner
        .chars()
        .map(|c| if c.is_ascii() { c.to_string() } else { utf16_escape(c, false) })
        .collect();
    out.push(ascii_only.into_bytes());
    out.push(inner.into_bytes());
    for upper in [false, true] {
        out.push(s.chars().map(|c| utf16_escape(c, upper)).collect::<String>().into_bytes());
    }
}

fn utf16_escape(c: char, upper: bool) -> String {
    let mut units = [0u16; 2];
    c.encode_utf16(&mut units)
        .iter()
        .map(|u| if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") })
        .collect()
}

/// HTML character references: every character as `&#NN;`, as `&#xNN;` (lower and upper hex), and
/// the minimal form that escapes only `<>&"'` by name.
fn html_variants(s: &str, out: &mut Vec<Vec<u8>>) {
    out.push(s.chars().map(|c| format!("&#{};", c as u32)).collect::<String>().into_bytes());
    out.push(s.chars().map(|c| format!("&#x{:x};", c as u32)).collect::<String>().into_bytes());
    out.push(s.chars().map(|c| format!("&#x{:X};", c as u32)).collect::<String>().into_bytes());
    for apos in ["&#39;", "&#x27;", "&apos;"] {
        let named: String = s
            .chars()
            .map(|c| match c {
                '<' => "&lt;".to_owned(),
                '>' => "&gt;".to_owned(),
                '&' => "&amp;".to_owned(),
                '"' => "&quot;".to_owned(),
                '\'' => apos.to_owned(),
                c => c.to_string(),
            })
            .collect();
        out.push(named.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn short_secrets_have_no_variants() {
        assert!(all_variants(b"abcde").is_empty());
        assert!(!all_variants(b"abcdef").is_empty());
    }

    #[test]
    fn stable_cores_are_found_in_blobs_for_every_alignment_and_neighbour() {
        let secret = b"s3cr3t-Value/with+bits";
        let vars = all_variants(secret);
        for k in 0..6usize {
            for filler in [0u8, 0xff, b'A'] {
                for after in 0..4usize {
                    let mut blob = vec![filler; k];
                    blob.extend_from_slice(secret);
                    blob.extend(std::iter::repeat_n(filler ^ 0x55, after));
                    for engine in [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                        let enc = engine.encode(&blob).into_bytes();
                        assert!(
                            vars.iter().any(|v| contains(&enc, v)),
                            "k={k} filler={filler} after={after}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn variants_never_shorter_than_minimum_and_raw_first() {
        let v = all_variants(b"abcdefg");
        assert_eq!(v[0], b"abcdefg");
        assert_eq!(v[1], b"gfedcba", "then the raw value reversed");
        assert!(v[2..].iter().all(|x| x.len() >= MIN_ENCODED_LEN && x != b"abcdefg" && x != b"gfedcba"));
    }

    #[test]
    fn encodings_are_case_insensitive_and_short_ones_listed_reversed() {
        let secret = b"s3cr3t-Value/with+bits";
        let vars = classified_variants(secret);
        assert_eq!(vars[0], (secret.to_vec(), Case::Fold), "22 bytes: raw in any case");
        let hex: Vec<u8> = hex_lower(secret).into_bytes();
        let b64 = STANDARD.encode(secret).into_bytes();
        for form in [hex, b64] {
            let back: Vec<u8> = form.iter().rev().copied().collect();
            assert!(vars.contains(&(form, Case::Fold)));
            // Long: read backwards by the decoding passes, not listed.
            assert!(!vars.contains(&(back, Case::Fold)));
        }
        let short = b"k3y!x9";
        let vars = classified_variants(short);
        let back: Vec<u8> = STANDARD.encode(short).into_bytes().into_iter().rev().collect();
        assert!(vars.contains(&(back, Case::Fold)), "short reversed forms are listed");
        let short = classified_variants(b"abcdefgh");
        assert_eq!(short[0].1, Case::Exact, "a short raw value is matched exactly");
        assert_eq!(short[1], (b"hgfedcba".to_vec(), Case::Exact));
        assert!(short[2..].iter().all(|(_, c)| *c == Case::Fold));
    }
}
