//! T04 as properties: a known secret stays hidden under any chain (depth <= 2) of the cheap,
//! keyless, reversible transforms an upstream or a stored row can apply, embedded anywhere in
//! random text; ordinary data survives; hostile input costs bounded work. Every encoder here is
//! written independently of the scrubber's own variant list and decoders.

use airlock_core::{HandleName, Secret};
use airlock_scrub::decode::{WORK_BASE, WORK_FACTOR};
use airlock_scrub::variants::{MIN_ENCODED_LEN, MIN_SECRET_LEN};
use airlock_scrub::{adversarial_text, Scrubber, ScrubberBuilder};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::TestRng;

const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32(b: &[u8], pad: bool) -> String {
    let mut out = String::new();
    for chunk in b.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(B32[((n >> (35 - 5 * i)) & 31) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn hex(b: &[u8], upper: bool) -> String {
    b.iter().map(|x| if upper { format!("{x:02X}") } else { format!("{x:02x}") }).collect()
}

fn wrap(s: &str, width: usize, nl: &str) -> String {
    s.as_bytes().chunks(width).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(nl)
}

/// The transforms. `r` decides the random details (alignment, case, which characters).
#[derive(Clone, Copy, Debug, PartialEq)]
enum T {
    B64Std,
    B64UrlNoPad,
    B64InBlob,
    B64Mime,
    B64Pem,
    B32Upper,
    B32LowerNoPad,
    B32InBlob,
    HexLower,
    HexMixed,
    HexSep,
    Hex0x,
    PercentAll,
    PercentSome,
    JsonU,
    BackslashX,
    HtmlDec,
    HtmlHex,
    HtmlNamed,
    Qp,
    Separated,
    Reversed,
    CaseFold,
    /// Upper case of an encoding (ASCII letters only).
    Upper,
    /// Lower case of an encoding.
    Lower,
    /// Invisible or format characters inserted between some characters.
    Invisible,
    /// One invisible or format character between every two characters (as separators).
    InvisibleSep,
    /// Some or all printable ASCII characters written as full-width forms.
    FullWidth,
    /// Letters replaced at random by Cyrillic or Greek look-alikes.
    Homoglyph,
}

/// Format (`Cf`) and default-ignorable characters, listed from Unicode's
/// DerivedGeneralCategory.txt and DerivedCoreProperties.txt (independently of the scrubber's
/// table): zero-width space/non-joiner/joiner, LRM/RLM, word joiner, invisible operators, BOM,
/// soft hyphen, Arabic letter mark and number signs, Mongolian vowel separator, bidi embeddings
/// and isolates, interlinear annotation, shorthand format controls, musical symbol formats,
/// Egyptian hieroglyph format controls, TAG characters, variation selectors, Hangul filler.
const INVISIBLE: &[char] = &[
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{2060}', '\u{2061}', '\u{2062}',
    '\u{2063}', '\u{2064}', '\u{FEFF}', '\u{00AD}', '\u{061C}', '\u{0600}', '\u{0605}', '\u{06DD}',
    '\u{070F}', '\u{0890}', '\u{08E2}', '\u{180E}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
    '\u{206A}', '\u{206F}', '\u{FFF9}', '\u{FFFB}', '\u{110BD}', '\u{110CD}', '\u{13430}', '\u{1343F}',
    '\u{1BCA0}', '\u{1BCA3}', '\u{1D173}', '\u{1D17A}', '\u{E0001}', '\u{E0041}', '\u{E007F}', '\u{FE0F}',
    '\u{E0100}', '\u{3164}', '\u{115F}', '\u{034F}', '\u{17B4}',
];

/// Look-alikes of ASCII letters and digits from Unicode's confusables.txt (UTS #39): Cyrillic
/// and Greek letters that render like the Latin letter (or digit) they replace.
const HOMOGLYPHS: &[(char, &[char])] = &[
    ('a', &['\u{0430}', '\u{03B1}']),
    ('c', &['\u{0441}', '\u{03F2}']),
    ('e', &['\u{0435}']),
    ('o', &['\u{043E}', '\u{03BF}']),
    ('p', &['\u{0440}', '\u{03C1}']),
    ('x', &['\u{0445}', '\u{03C7}']),
    ('y', &['\u{0443}']),
    ('s', &['\u{0455}']),
    ('i', &['\u{0456}']),
    ('j', &['\u{0458}']),
    ('d', &['\u{0501}']),
    ('h', &['\u{04BB}']),
    ('w', &['\u{051D}']),
    ('A', &['\u{0410}', '\u{0391}']),
    ('B', &['\u{0412}', '\u{0392}']),
    ('C', &['\u{0421}']),
    ('E', &['\u{0415}', '\u{0395}']),
    ('H', &['\u{041D}', '\u{0397}']),
    ('I', &['\u{0406}', '\u{0399}']),
    ('J', &['\u{0408}']),
    ('K', &['\u{041A}', '\u{039A}']),
    ('M', &['\u{041C}', '\u{039C}']),
    ('N', &['\u{039D}']),
    ('O', &['\u{041E}', '\u{039F}']),
    ('P', &['\u{0420}', '\u{03A1}']),
    ('S', &['\u{0405}']),
    ('T', &['\u{0422}', '\u{03A4}']),
    ('X', &['\u{0425}', '\u{03A7}']),
    ('Y', &['\u{04AE}', '\u{03A5}']),
    ('Z', &['\u{0396}']),
    ('3', &['\u{0417}']),
];

/// Undoes the re-spellings above on an output, as a reader would: drops the invisible
/// characters, maps full-width forms and look-alikes back to ASCII.
fn unrespell(s: &str) -> String {
    s.chars()
        .filter(|c| !INVISIBLE.contains(c))
        .map(|c| {
            if ('\u{FF01}'..='\u{FF5E}').contains(&c) {
                return char::from_u32(c as u32 - 0xFEE0).unwrap();
            }
            HOMOGLYPHS.iter().find(|(_, alts)| alts.contains(&c)).map_or(c, |(a, _)| *a)
        })
        .collect()
}

const OUTER: &[T] = &[
    T::B64Std,
    T::B64UrlNoPad,
    T::B64InBlob,
    T::B64Mime,
    T::B64Pem,
    T::B32Upper,
    T::B32LowerNoPad,
    T::B32InBlob,
    T::HexLower,
    T::HexMixed,
    T::HexSep,
    T::Hex0x,
    T::PercentAll,
    T::PercentSome,
    T::JsonU,
    T::BackslashX,
    T::HtmlDec,
    T::HtmlHex,
    T::HtmlNamed,
    T::Qp,
    T::Separated,
];

fn rnd(r: &mut TestRng, n: usize) -> usize {
    (r.next_u32() as usize) % n
}

/// Applies `t` to `s`; `None` when it does not apply (separators need ASCII without whitespace).
fn apply(t: T, s: &str, r: &mut TestRng) -> Option<String> {
    let b = s.as_bytes();
    Some(match t {
        T::B64Std => STANDARD.encode(b),
        T::B64UrlNoPad => URL_SAFE_NO_PAD.encode(b),
        T::B64InBlob => {
            let mut blob: Vec<u8> = (0..rnd(r, 7)).map(|_| r.next_u32() as u8).collect();
            blob.extend_from_slice(b);
            blob.extend((0..rnd(r, 5)).map(|_| r.next_u32() as u8));
            [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD][rnd(r, 4)].encode(blob)
        }
        T::B64Mime => wrap(&STANDARD.encode(b), 76, "\r\n"),
        T::B64Pem => wrap(&STANDARD.encode(b), 64, "\n"),
        T::B32Upper => base32(b, true),
        T::B32LowerNoPad => base32(b, false).to_lowercase(),
        T::B32InBlob => {
            let mut blob: Vec<u8> = (0..rnd(r, 6)).map(|_| r.next_u32() as u8).collect();
            blob.extend_from_slice(b);
            base32(&blob, rnd(r, 2) == 0)
        }
        T::HexLower => hex(b, false),
        T::HexMixed => hex(b, false).chars().map(|c| if rnd(r, 2) == 0 { c.to_ascii_uppercase() } else { c }).collect(),
        T::HexSep => {
            let sep = [":", " ", "-", "."][rnd(r, 4)];
            let up = rnd(r, 2) == 0;
            b.iter().map(|x| hex(&[*x], up)).collect::<Vec<_>>().join(sep)
        }
        T::Hex0x => {
            let sep = [",", ", ", " "][rnd(r, 3)];
            b.iter().map(|x| format!("0x{x:02x}")).collect::<Vec<_>>().join(sep)
        }
        T::PercentAll => {
            let up = rnd(r, 2) == 0;
            b.iter().map(|x| if up { format!("%{x:02X}") } else { format!("%{x:02x}") }).collect()
        }
        T::PercentSome => b
            .iter()
            .map(|&x| {
                let must = !x.is_ascii_alphanumeric() && !b"-._~".contains(&x);
                if must || rnd(r, 3) == 0 {
                    if rnd(r, 2) == 0 {
                        format!("%{x:02X}")
                    } else {
                        format!("%{x:02x}")
                    }
                } else {
                    (x as char).to_string()
                }
            })
            .collect(),
        T::JsonU => {
            let all = rnd(r, 2) == 0;
            let mut out = String::new();
            for c in s.chars() {
                if all || rnd(r, 2) == 0 || c == '\\' || c == '"' {
                    let mut u = [0u16; 2];
                    for unit in c.encode_utf16(&mut u) {
                        out.push_str(&if rnd(r, 2) == 0 { format!("\\u{unit:04x}") } else { format!("\\u{unit:04X}") });
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        T::BackslashX => b.iter().map(|x| format!("\\x{x:02x}")).collect(),
        T::HtmlDec | T::HtmlHex => {
            let chars: Vec<char> = s.chars().collect();
            let mut out = String::new();
            for (i, c) in chars.iter().enumerate() {
                let zeros = "0".repeat(rnd(r, 3));
                let body = if matches!(t, T::HtmlDec) {
                    format!("&#{zeros}{}", *c as u32)
                } else {
                    format!("&#x{zeros}{:x}", *c as u32)
                };
                out.push_str(&body);
                // The `;` may go only where the next character cannot continue the number.
                let next_is_digitish = chars.get(i + 1).is_none_or(|n| n.is_ascii_alphanumeric());
                if next_is_digitish || rnd(r, 2) == 0 {
                    out.push(';');
                }
            }
            out
        }
        T::HtmlNamed => s
            .chars()
            .map(|c| match c {
                '&' => "&amp;".to_owned(),
                '<' => "&lt;".to_owned(),
                '>' => "&gt;".to_owned(),
                '"' => "&quot;".to_owned(),
                '\'' => "&apos;".to_owned(),
                c => c.to_string(),
            })
            .collect(),
        T::Qp => {
            let mut out = String::new();
            let mut line = 0;
            for &x in b {
                let piece = if x == b'=' || !(0x21..0x7f).contains(&x) || rnd(r, 4) == 0 {
                    format!("={x:02X}")
                } else {
                    (x as char).to_string()
                };
                if line + piece.len() > 75 {
                    out.push_str("=\n");
                    line = 0;
                }
                line += piece.len();
                out.push_str(&piece);
            }
            out
        }
        T::Separated => {
            let seps = [' ', '-', '.', ':', ',', '\n', '_'];
            let sep = seps[rnd(r, seps.len())];
            if !s.is_ascii() || s.bytes().any(|c| c <= b' ' || c == sep as u8) {
                return None;
            }
            s.chars().map(String::from).collect::<Vec<_>>().join(&sep.to_string())
        }
        T::Reversed => s.chars().rev().collect(),
        T::Upper => s.to_ascii_uppercase(),
        T::Lower => s.to_ascii_lowercase(),
        T::Invisible => {
            let mut out = String::new();
            for c in s.chars() {
                out.push(c);
                if rnd(r, 2) == 0 {
                    out.push(INVISIBLE[rnd(r, INVISIBLE.len())]);
                }
            }
            out
        }
        T::InvisibleSep => {
            let sep = INVISIBLE[rnd(r, INVISIBLE.len())].to_string();
            s.chars().map(String::from).collect::<Vec<_>>().join(&sep)
        }
        T::FullWidth => {
            let all = rnd(r, 2) == 0;
            s.chars()
                .map(|c| {
                    if ('!'..='~').contains(&c) && (all || rnd(r, 2) == 0) {
                        char::from_u32(c as u32 + 0xFEE0).unwrap()
                    } else {
                        c
                    }
                })
                .collect()
        }
        T::Homoglyph => s
            .chars()
            .map(|c| match HOMOGLYPHS.iter().find(|(a, _)| *a == c) {
                Some((_, alts)) if rnd(r, 3) != 0 => alts[rnd(r, alts.len())],
                _ => c,
            })
            .collect(),
        T::CaseFold => {
            if s.len() < 16 || !s.is_ascii() {
                return None;
            }
            if rnd(r, 2) == 0 {
                s.to_ascii_uppercase()
            } else {
                s.to_ascii_lowercase()
            }
        }
    })
}

/// Secrets from the documented minimum length (`MIN_SECRET_LEN`, 6 bytes) up: the shortest
/// ones give the shortest encoded runs.
fn secret_strategy() -> impl Strategy<Value = String> {
    let ascii = proptest::collection::vec(0x21u8..0x7f, MIN_SECRET_LEN..48).prop_map(|v| String::from_utf8(v).unwrap());
    let mixed = proptest::collection::vec(
        prop_oneof![4 => (0x21u8..0x7f).prop_map(char::from), 1 => prop::sample::select(vec!['é', 'ß', 'ж', '中', '😀', '€'])],
        MIN_SECRET_LEN..32,
    )
    .prop_map(|v| v.into_iter().collect::<String>());
    prop_oneof![3 => ascii, 1 => mixed]
}

fn text_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof!["[a-z]{1,9}", Just(" ".to_owned()), Just("\n".to_owned()), Just(", ".to_owned()), Just(": ".to_owned())],
        0..60,
    )
    .prop_map(|v| v.concat())
}

fn scrubber_for(secret: &str) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("API").unwrap(), &Secret::from_str_value(secret));
    b.build()
}

/// Decodings an observer could try on the output, to look for 8-byte windows of the secret:
/// the text itself, base64 of every run (4 offsets, line breaks removed), hex of every hex run
/// (2 offsets), and the text percent-decoded.
fn leaks(out: &str, secret: &[u8]) -> bool {
    if secret.len() < 8 {
        return false;
    }
    let windows: Vec<&[u8]> = secret.windows(8).collect();
    let has = |hay: &[u8]| windows.iter().any(|w| hay.windows(8).any(|h| h == *w));
    if has(out.as_bytes()) {
        return true;
    }
    let flat: Vec<u8> = out.bytes().filter(|&c| c != b'\n' && c != b'\r').collect();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_');
    for run in flat.split(|c| !is_b64(*c)) {
        for skip in 0..4 {
            if run.len() <= skip {
                continue;
            }
            let mut r: Vec<u8> = run[skip..].iter().map(|&c| match c { b'-' => b'+', b'_' => b'/', c => c }).collect();
            r.truncate(r.len() / 4 * 4);
            if let Ok(d) = STANDARD_NO_PAD.decode(&r) {
                if has(&d) {
                    return true;
                }
            }
        }
    }
    for run in flat.split(|c| !c.is_ascii_hexdigit()) {
        for skip in 0..2 {
            if run.len() > skip {
                let d: Vec<u8> = run[skip..]
                    .chunks_exact(2)
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
                    .collect();
                if has(&d) {
                    return true;
                }
            }
        }
    }
    let mut pd = Vec::new();
    let ob = out.as_bytes();
    let mut i = 0;
    while i < ob.len() {
        if ob[i] == b'%' && i + 2 < ob.len() && ob[i + 1].is_ascii_hexdigit() && ob[i + 2].is_ascii_hexdigit() {
            pd.push(u8::from_str_radix(&out[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            pd.push(ob[i]);
            i += 1;
        }
    }
    has(&pd)
}

fn embed(text: &str, at: prop::sample::Index, enc: &str) -> String {
    let mut at = at.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{enc}{}", &text[..at], &text[at..])
}

fn check(secret: &str, chain: &[T], text: &str, at: prop::sample::Index, seed: u64) -> Result<(), TestCaseError> {
    let mut r = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s
    });
    let mut enc = secret.to_owned();
    for (i, &t) in chain.iter().enumerate() {
        if matches!(t, T::Upper | T::Lower | T::CaseFold) && !case_change_is_findable(secret, &chain[..i]) {
            return Ok(());
        }
        match apply(t, &enc, &mut r) {
            Some(e) => enc = e,
            None => return Ok(()),
        }
        if enc.len() > 1 << 20 {
            return Ok(());
        }
    }
    let s = scrubber_for(secret);
    let full = embed(text, at, &enc);
    let (out, n) = s.scrub_str(&full);
    prop_assert!(n >= 1, "chain {:?}: nothing redacted in {:?}", chain, full);
    prop_assert!(!out.contains(&enc), "chain {:?}: encoded form survives", chain);
    prop_assert!(!leaks(&out, secret.as_bytes()), "chain {:?}: a window of the secret is recoverable", chain);
    let plain = unrespell(&out);
    prop_assert!(!leaks(&plain, secret.as_bytes()), "chain {:?}: a window survives a re-spelling", chain);
    let back: String = plain.chars().rev().collect();
    prop_assert!(!leaks(&back, secret.as_bytes()), "chain {:?}: a window survives written backwards", chain);
    prop_assert!(s.contains_known_secret(&full), "chain {:?}: outbound check missed", chain);
    // Idempotent.
    prop_assert_eq!(s.scrub_str(&out).1, 0);
    Ok(())
}

/// Where a case change can be found at all (documented in the crate docs). Walking down the
/// chain below it: a case-insensitive encoding (hex, base32, percent of every byte, numeric
/// escapes) decodes to the same text whatever the case, so the change is absorbed there; a
/// transform that keeps literal characters (partial escaping, separators, reversal, invisible
/// characters, full-width, homoglyphs) passes the case change down to what it wraps; base64
/// cannot be decoded after a case change, so it is found only when the re-cased text is one of
/// the listed variants (one base64 layer over the secret or the secret reversed, inside a blob
/// only when its stable cores are long enough to be listed, or base64 over
/// standard or URL-safe base64 or hex of it); the raw secret is matched in any case only when
/// it is at least 16 bytes long. Named HTML references are case-sensitive (`&AMP;` is not
/// decoded).
fn case_change_is_findable(secret: &str, below: &[T]) -> bool {
    let is_b64 = |t: T| matches!(t, T::B64Std | T::B64UrlNoPad | T::B64InBlob | T::B64Mime | T::B64Pem);
    for k in (0..below.len()).rev() {
        match below[k] {
            // A case change under this one: the text below was re-cased already.
            T::Upper | T::Lower | T::CaseFold => {}
            T::B32Upper | T::B32LowerNoPad | T::B32InBlob | T::HexLower | T::HexMixed | T::HexSep | T::Hex0x
            | T::PercentAll | T::BackslashX | T::HtmlDec | T::HtmlHex => return true,
            T::HtmlNamed => return false,
            t if is_b64(t) => {
                return match &below[..k] {
                    // Inside a blob only the stable cores are listed, and only where every
                    // alignment's core is at least `MIN_ENCODED_LEN` characters (7 bytes up).
                    [] | [T::Reversed] if t == T::B64InBlob => (0..3).all(|a| {
                        (8 * (a + secret.len())) / 6 - (8 * a).div_ceil(6) >= MIN_ENCODED_LEN
                    }),
                    [] | [T::Reversed] => true,
                    [inner] => {
                        matches!(inner, T::B64Std | T::B64UrlNoPad | T::HexLower)
                            && matches!(t, T::B64Std | T::B64UrlNoPad | T::B64InBlob)
                    }
                    _ => false,
                };
            }
            _ => {}
        }
    }
    secret.len() >= 16
}

/// Every transform, the re-spellings included.
fn all_transforms() -> Vec<T> {
    OUTER
        .iter()
        .copied()
        .chain([T::Reversed, T::CaseFold, T::Upper, T::Lower, T::Invisible, T::InvisibleSep, T::FullWidth, T::Homoglyph])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    /// One re-spelling (reversal, case change, invisible characters, full-width forms,
    /// homoglyphs) on top of one encoding: the secret is found under it.
    #[test]
    fn t04_prop_respelled_encoding_is_redacted(
        secret in secret_strategy(),
        enc in prop::sample::select(OUTER.to_vec()),
        respell in prop::sample::select(vec![T::Reversed, T::Upper, T::Lower, T::Invisible, T::InvisibleSep, T::FullWidth, T::Homoglyph]),
        text in text_strategy(),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        check(&secret, &[enc, respell], &text, at, seed)?;
    }

    /// Chains of up to four transforms (MAX_DEPTH decoded layers), re-spellings anywhere in
    /// the chain: reversed, re-cased, interleaved with invisible characters, full-width or
    /// homoglyph forms of encodings of encodings.
    #[test]
    fn t04_prop_nested_respelled_chain_is_redacted(
        secret in secret_strategy(),
        chain in proptest::collection::vec(prop::sample::select(all_transforms()), 1..=4),
        text in text_strategy(),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        check(&secret, &chain, &text, at, seed)?;
    }

    /// One transform.
    #[test]
    fn t04_prop_single_transform_is_redacted(
        secret in secret_strategy(),
        t in prop::sample::select(OUTER.iter().copied().chain([T::Reversed, T::CaseFold]).collect::<Vec<_>>()),
        text in text_strategy(),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        check(&secret, &[t], &text, at, seed)?;
    }

    /// Two transforms: the inner one may also be a reversal or a case change of the raw value.
    #[test]
    fn t04_prop_chain_of_two_transforms_is_redacted(
        secret in secret_strategy(),
        inner in prop::sample::select(OUTER.iter().copied().chain([T::Reversed, T::CaseFold]).collect::<Vec<_>>()),
        outer in prop::sample::select(OUTER.to_vec()),
        text in text_strategy(),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        check(&secret, &[inner, outer], &text, at, seed)?;
    }

    /// Ordinary data survives byte for byte: English-like text, UUIDs, SHA-256 digests and
    /// base64 of random bytes, with secrets that are not in it.
    #[test]
    fn t04_prop_ordinary_data_survives(
        secrets in proptest::collection::vec("[A-Za-z0-9]{16,40}", 1..20),
        parts in proptest::collection::vec(prop_oneof![
            3 => "[a-z]{1,10}[ ,.\n]",
            1 => any::<[u8; 16]>().prop_map(|u| { let h = hex(&u, false); format!("{}-{}-{}-{}-{} ", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]) }),
            1 => any::<[u8; 32]>().prop_map(|d| format!("sha256:{} ", hex(&d, rand_bool(&d)))),
            1 => proptest::collection::vec(any::<u8>(), 6..80).prop_map(|b| format!("{} ", STANDARD.encode(b))),
        ], 0..80),
    ) {
        let mut b = ScrubberBuilder::new();
        b.patterns(false);
        for (i, s) in secrets.iter().enumerate() {
            b.add_secret(&HandleName::parse(&format!("S{i}")).unwrap(), &Secret::from_str_value(s));
        }
        let s = b.build();
        let text = parts.concat();
        let (out, n) = s.scrub_str(&text);
        prop_assert_eq!(n, 0);
        prop_assert_eq!(out.as_ref(), text.as_str());
    }
}

fn rand_bool(d: &[u8]) -> bool {
    d[0] & 1 == 1
}

/// False positives on a generated corpus dense with near-misses (base64 of random bytes, hex
/// digests, UUIDs, MACs, escapes, separated words), 1,000 random secrets, rules off: printed, and
/// required to be zero (any redaction here is a false positive).
#[test]
fn t04_false_positive_rate_on_a_near_miss_corpus() {
    let (s, _) = airlock_scrub::bench_fixture_with(1000, 0, 3, false, 0);
    let mut redactions = 0usize;
    let mut bytes = 0usize;
    let docs = 64;
    for seed in 0..docs {
        let text = adversarial_text(64 * 1024, seed);
        bytes += text.len();
        redactions += s.scrub_str(&text).1;
    }
    let rate = redactions as f64 / (bytes as f64 / (1 << 20) as f64);
    println!("false positives: {redactions} redactions in {bytes} bytes over {docs} documents ({rate:.3} per MiB), 1000 secrets");
    assert_eq!(redactions, 0);
}

/// Hostile inputs: deep nesting, a huge run, and inputs built to make each pass work hard.
/// Bounded work (the decoder's counter against the documented cap and a size-scaled bound), no
/// panic, and the depth limit documented.
#[test]
fn t04_hostile_inputs_cost_bounded_work() {
    let secret = "hostile-secret-value-0123";
    let s = scrubber_for(secret);
    let mut nested = secret.to_owned();
    for _ in 0..50 {
        nested = STANDARD.encode(&nested);
        if nested.len() > 4 << 20 {
            break;
        }
    }
    let mut nested_mixed = secret.to_owned();
    for i in 0..50 {
        nested_mixed = match i % 3 {
            0 => STANDARD.encode(&nested_mixed),
            1 => hex(nested_mixed.as_bytes(), false),
            _ => nested_mixed.bytes().map(|x| format!("%{x:02X}")).collect(),
        };
        if nested_mixed.len() > 4 << 20 {
            break;
        }
    }
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let b64_alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let ten_mib_b64: String = (0..10 << 20).map(|_| b64_alphabet[(next() % 64) as usize] as char).collect();
    let cases: Vec<(&str, String)> = vec![
        ("50-deep base64", nested),
        ("50-deep base64/hex/percent", nested_mixed),
        ("10 MiB random base64 characters", ten_mib_b64),
        ("10 MiB of 'A'", "A".repeat(10 << 20)),
        ("percent signs", "%".repeat(1 << 20)),
        ("percent escapes", "%41".repeat(1 << 19)),
        ("backslash u", "\\u0041\\".repeat(1 << 17)),
        ("html refs", "&#65&amp&#x".repeat(1 << 17)),
        ("qp soft breaks", "=\n=41".repeat(1 << 18)),
        ("separators", "a-".repeat(1 << 19)),
        ("spaces", " ".repeat(1 << 20)),
        ("hex pairs", "de:".repeat(1 << 19)),
        ("0x tokens", "0x41,".repeat(1 << 18)),
        ("wrapped lines", format!("{}\n", "QUJD".repeat(16)).repeat(1 << 14)),
    ];
    for (name, text) in cases {
        let (work, exhausted) = s.decode_work(&text);
        let cap = text.len() * WORK_FACTOR + WORK_BASE;
        println!("{name}: {} bytes, decode work {work} ({:.1}x), capped: {exhausted}", text.len(), work as f64 / text.len() as f64);
        assert!(work <= cap, "{name}");
        let (out, _) = s.scrub_str(&text);
        assert!(!out.contains(secret), "{name}");
    }
}

/// Ordinary HTML dense with escapes (entities, percent-escaped URLs, `page=NN` values): every
/// escape family in every URL, so its decodings, nested and reversed, exceed the work cap.
fn ordinary_html(len: usize) -> String {
    let mut html = String::new();
    let mut i = 0u64;
    while html.len() < len {
        i += 1;
        html.push_str(&format!("<p class=\"item\">Tom &amp; Jerry&#39;s order #{i} &lt;shipped&gt; <a href=\"https://shop.example.com/search?q=red%20shoes&amp;page={i}&amp;sort=price%2Basc\">results for 2026-12-05</a></p>\n"));
    }
    html
}

/// The cap stops the deepest chains first: after ordinary HTML whose decodings exceed the work
/// cap, every form one decoding (and any re-spellings) deep is still found at the very end of
/// the text: every single transform of the catalogue, and every encoding re-spelled (reversed,
/// re-cased, with invisible characters, full-width, homoglyphs). Layers are made level by level,
/// so the cap cannot be spent on deep chains of the first lines before the last line's first
/// decoding.
#[test]
fn t04_work_cap_leaves_only_the_deepest_chains_undecoded() {
    let secret = "sk-live-Zq8vN2pL7xW4";
    let s = scrubber_for(secret);
    // The smallest filler whose decodings exceed the cap (the cap is 16 times the text plus
    // 1 MiB; this HTML's decodings are over 40 times it).
    let html = ordinary_html(48 << 10);
    let (work, exhausted) = s.decode_work(&html);
    assert!(exhausted, "the filler must exceed the cap for this test to mean anything (work {work})");
    let respellings = [T::Reversed, T::Upper, T::Lower, T::Invisible, T::InvisibleSep, T::FullWidth, T::Homoglyph];
    let mut chains: Vec<Vec<T>> = all_transforms().into_iter().map(|t| vec![t]).collect();
    for &enc in OUTER {
        chains.extend(respellings.iter().map(|&r| vec![enc, r]));
    }
    let mut rng = TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
    let mut forms = Vec::new();
    for chain in chains {
        if chain.iter().any(|t| matches!(t, T::Upper | T::Lower | T::CaseFold)) && !case_change_is_findable(secret, &chain[..chain.len() - 1]) {
            continue;
        }
        if let Some(enc) = chain.iter().try_fold(secret.to_owned(), |e, &t| apply(t, &e, &mut rng)) {
            forms.push((chain, enc));
        }
    }
    assert!(forms.len() > 100, "{}", forms.len());
    // One text per form: the scrubber rescans around what it redacted with a fresh cap, which
    // would find a form next to another one.
    let mut missed = Vec::new();
    for (chain, enc) in &forms {
        let full = format!("{html}\n{enc}\n");
        let (out, n) = s.scrub_str(&full);
        if n == 0 || out.contains(enc.as_str()) || leaks(&out, secret.as_bytes()) {
            missed.push(chain);
        }
    }
    assert!(missed.is_empty(), "{} of {} forms survive after the cap: {missed:?}", missed.len(), forms.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The same, for generated secrets, any encoding of the catalogue with or without a
    /// re-spelling, at any line of ordinary HTML whose decodings exceed the cap: found.
    #[test]
    fn t04_prop_work_cap_spares_one_decoding_anywhere_in_a_page(
        secret in secret_strategy(),
        enc in prop::sample::select(OUTER.to_vec()),
        respell in prop::option::of(prop::sample::select(vec![T::Reversed, T::Upper, T::Lower, T::Invisible, T::InvisibleSep, T::FullWidth, T::Homoglyph])),
        line in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let chain: Vec<T> = std::iter::once(enc).chain(respell).collect();
        if matches!(respell, Some(T::Upper | T::Lower)) && !case_change_is_findable(&secret, &chain[..1]) {
            return Ok(());
        }
        let mut r = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s
        });
        let Some(form) = chain.iter().try_fold(secret.clone(), |e, &t| apply(t, &e, &mut r)) else {
            return Ok(());
        };
        let s = scrubber_for(&secret);
        let html = ordinary_html(64 << 10);
        let (work, exhausted) = s.decode_work(&html);
        prop_assert!(exhausted, "the filler must exceed the cap (work {})", work);
        let lines: Vec<&str> = html.split_inclusive('\n').collect();
        let k = line.index(lines.len() + 1);
        let full = format!("{}{form}\n{}", lines[..k].concat(), lines[k..].concat());
        let (out, n) = s.scrub_str(&full);
        prop_assert!(n >= 1 && !out.contains(&form), "{:?} at line {}: {:?} survives", chain, k, form);
        prop_assert!(!leaks(&out, secret.as_bytes()), "{:?} at line {}: a window survives", chain, k);
    }
}

#[test]
fn t04_password_inside_a_dsn_in_percent_form() {
    let s = scrubber_for("p@ss:w/rd");
    let (out, n) = s.scrub_str("postgres://u:p%40ss%3Aw%2Frd@h/db");
    assert_eq!((out.as_ref(), n), ("postgres://u:[REDACTED:API]@h/db", 1));
    let (out, _) = s.scrub_str("mysql://admin:p%40ss%3aw%2frd@db.internal:3306/x?ssl=1");
    assert_eq!(out, "mysql://admin:[REDACTED:API]@db.internal:3306/x?ssl=1");
}

#[test]
fn t04_deep_nesting_within_the_documented_depth_is_found() {
    // Four decoded layers (MAX_DEPTH) plus the depth-2 variants in the automaton.
    let secret = "nest-me-please-0042";
    let s = scrubber_for(secret);
    let mut enc = secret.to_owned();
    for _ in 0..5 {
        enc = STANDARD.encode(&enc);
    }
    let text = format!("v={enc};");
    let (out, n) = s.scrub_str(&text);
    assert_eq!((out.as_ref(), n), ("v=[REDACTED:API];", 1), "5-deep base64");
}

/// The shortest forms only decoding finds: a secret of the minimum length and up with one
/// character re-spelled (its homoglyph, its full-width form, an invisible character after it,
/// its quoted-printable escape), which no listed variant covers, under every block encoding
/// (base64 in both alphabets with and without padding, base32 in both cases with and without
/// padding, hex in both cases), after every number of leading bytes: found, and the encoded
/// run is gone. The block scan looks at words at four phases, so no start position lets a run
/// fall across words that each hold a blank.
#[test]
fn t04_shortest_respelled_secrets_under_block_encodings_are_found_at_every_alignment() {
    let secrets = ["a!c!e!", "hunter2", "pa55w0rd", "!!!!!!3H", "scope-0x"];
    assert_eq!(secrets[0].len(), MIN_SECRET_LEN);
    for secret in secrets {
        let s = scrubber_for(secret);
        for (p, c) in secret.char_indices() {
            let (head, tail) = (&secret[..p], &secret[p + c.len_utf8()..]);
            let mut forms = vec![
                format!("{head}{}{tail}", char::from_u32(c as u32 + 0xFEE0).unwrap()),
                format!("{head}{c}\u{200B}{tail}"),
                format!("{head}={:02X}{tail}", c as u32),
            ];
            if let Some((_, alts)) = HOMOGLYPHS.iter().find(|(a, _)| *a == c) {
                forms.push(format!("{head}{}{tail}", alts[0]));
            }
            for form in forms {
                let b = form.as_bytes();
                let encodings = [
                    STANDARD.encode(b),
                    STANDARD_NO_PAD.encode(b),
                    URL_SAFE_NO_PAD.encode(b),
                    base32(b, true),
                    base32(b, false),
                    base32(b, false).to_lowercase(),
                    hex(b, false),
                    hex(b, true),
                ];
                for enc in encodings {
                    for lead in 0..17 {
                        let text = format!("{} {enc} tail", "a".repeat(lead));
                        let (out, n) = s.scrub_str(&text);
                        assert!(n >= 1 && !out.contains(&enc), "{secret:?} as {form:?} as {enc:?} after {lead} bytes: {out:?}");
                    }
                }
            }
        }
    }
}

/// An encoding of an encoding spelled one character per line or per space (many times the
/// secret's length) with homoglyphs inside: the re-spelled characters lie far from the ends of
/// the spaced run, and the run is still found whole. Every seed draws its own separator and
/// look-alikes; found once by the nested-chain property above.
#[test]
fn t04_spaced_nested_encoding_with_homoglyphs_is_redacted() {
    let secrets = ["😀!😀!!!中!!!!!!!é!!!!!!!PP!!!", "pg-password-canary-123", "AKIA3EXAMPLE7KEY90"];
    for secret in secrets {
        for chain in [
            [T::HexLower, T::HtmlDec, T::Separated, T::Homoglyph],
            [T::B64Std, T::HtmlHex, T::Separated, T::Homoglyph],
            [T::HexLower, T::PercentAll, T::Separated, T::FullWidth],
        ] {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            for seed in 0..64u64 {
                use proptest::strategy::ValueTree;
                let at = any::<prop::sample::Index>().new_tree(&mut runner).expect("an index").current();
                if let Err(e) = check(secret, &chain, "before and after", at, seed) {
                    panic!("secret {secret:?}, seed {seed}: {e}");
                }
            }
        }
    }
}
