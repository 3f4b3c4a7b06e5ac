//! T04: encodings, spacing, invisible characters and homoglyphs that dodge exact-match redaction.

use airlock_core::{HandleName, Secret};
use airlock_scrub::{Scrubber, ScrubberBuilder};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::engine::GeneralPurpose;
use base64::Engine;

/// Contains `+`, `/` in its base64 forms, a quote, a backslash, `<`, `&` and a space.
const SECRET: &str = "Sup3r\"S3cr\\et/V<al>ue&+42 xyz~ok";
const ALNUM: &str = "pQ7zK2mX9vR4tL8wB3nH6jF1";

fn scrubber_for(secret: &str) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("DB_PROD").unwrap(), &Secret::from_str_value(secret));
    b.build()
}

/// True when any 6-byte window of `secret` can be read back from `out`: directly, or by
/// base64-decoding any run of base64 characters at any of the four character offsets.
fn leaks(out: &str, secret: &[u8]) -> bool {
    let windows: Vec<&[u8]> = secret.windows(6).collect();
    let has = |hay: &[u8]| windows.iter().any(|w| hay.windows(6).any(|h| h == *w));
    if has(out.as_bytes()) {
        return true;
    }
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_');
    for run in out.as_bytes().split(|c| !is_b64(*c)) {
        for skip in 0..4 {
            if run.len() <= skip {
                continue;
            }
            // URL-safe and standard alphabets decode alike once mapped onto one.
            let mut r: Vec<u8> = run[skip..]
                .iter()
                .map(|&c| match c {
                    b'-' => b'+',
                    b'_' => b'/',
                    c => c,
                })
                .collect();
            r.truncate(r.len() / 4 * 4);
            if let Ok(d) = STANDARD_NO_PAD.decode(&r) {
                if has(&d) {
                    return true;
                }
            }
        }
    }
    false
}

/// Scrubs, returning an owned result.
fn sc(s: &Scrubber, text: &str) -> (String, usize) {
    let (out, n) = s.scrub_str(text);
    (out.into_owned(), n)
}

fn assert_redacted(s: &Scrubber, text: &str, secret: &str) {
    let (out, n) = sc(s, text);
    assert!(n >= 1, "nothing redacted in {text:?}");
    assert!(out.contains("[REDACTED:DB_PROD]"), "{out}");
    assert!(!leaks(&out, secret.as_bytes()), "leak in {out:?} (from {text:?})");
    assert!(s.contains_known_secret(text), "outbound check missed {text:?}");
}

fn blob_test(engine: GeneralPurpose) {
    let s = scrubber_for(SECRET);
    for lead in 0..7usize {
        for trail in [0usize, 1, 2, 5] {
            for filler in [0u8, 0xff, b'a'] {
                let mut blob = vec![filler; lead];
                blob.extend_from_slice(SECRET.as_bytes());
                blob.extend(std::iter::repeat_n(filler.wrapping_add(17), trail));
                let text = format!("payload={} (end)", engine.encode(&blob));
                assert_redacted(&s, &text, SECRET);
            }
        }
    }
}

#[test]
fn t04_base64_standard_padded_in_three_alignments() {
    blob_test(STANDARD);
}

#[test]
fn t04_base64_standard_unpadded_in_three_alignments() {
    blob_test(STANDARD_NO_PAD);
}

#[test]
fn t04_base64_url_safe_padded_in_three_alignments() {
    blob_test(URL_SAFE);
}

#[test]
fn t04_base64_url_safe_unpadded_in_three_alignments() {
    blob_test(URL_SAFE_NO_PAD);
}

#[test]
fn t04_base64_standalone_value_is_redacted_with_its_padding() {
    let secret = "abcdefgh-1234567"; // 16 bytes: one '=' of padding
    let s = scrubber_for(secret);
    let text = format!("token {} here", STANDARD.encode(secret));
    let (out, _) = sc(&s, &text);
    assert_eq!(out, "token [REDACTED:DB_PROD] here");
}

#[test]
fn t04_hex_lower_and_upper() {
    let s = scrubber_for(SECRET);
    let lower: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let upper: String = SECRET.bytes().map(|b| format!("{b:02X}")).collect();
    for h in [lower, upper] {
        let (out, n) = sc(&s, &format!("0x{h}!"));
        assert_eq!((out.as_str(), n), ("0x[REDACTED:DB_PROD]!", 1));
    }
}

#[test]
fn t04_percent_every_byte_upper_and_lower() {
    let s = scrubber_for(SECRET);
    for upper in [true, false] {
        let enc: String =
            SECRET.bytes().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect();
        assert_redacted(&s, &format!("GET /?q={enc}&x=1"), SECRET);
    }
}

#[test]
fn t04_percent_unreserved_kept() {
    let s = scrubber_for(SECRET);
    // The usual form (RFC 3986 unreserved characters kept), written independently here.
    let enc: String = SECRET
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    assert!(enc.contains("%22") && enc.contains("~ok"));
    assert_redacted(&s, &format!("https://h/?k={enc}"), SECRET);
}

#[test]
fn t04_json_string_escapes() {
    let s = scrubber_for(SECRET);
    let doc = serde_json::json!({ "note": format!("value is {SECRET}.") }).to_string();
    assert!(doc.contains("\\\"") && doc.contains("\\\\"));
    assert_redacted(&s, &doc, SECRET);
    let slash = doc.replace('/', "\\/");
    assert_redacted(&s, &slash, SECRET);
}

#[test]
fn t04_json_all_unicode_escapes() {
    let s = scrubber_for(SECRET);
    for upper in [false, true] {
        let enc: String = SECRET
            .chars()
            .map(|c| if upper { format!("\\u{:04X}", c as u32) } else { format!("\\u{:04x}", c as u32) })
            .collect();
        assert_redacted(&s, &format!("{{\"k\":\"{enc}\"}}"), SECRET);
    }
}

#[test]
fn t04_html_entity_escapes() {
    let s = scrubber_for(SECRET);
    let dec: String = SECRET.chars().map(|c| format!("&#{};", c as u32)).collect();
    let hex: String = SECRET.chars().map(|c| format!("&#x{:x};", c as u32)).collect();
    let named = SECRET.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    for t in [dec, hex, named] {
        assert_redacted(&s, &format!("<p>{t}</p>"), SECRET);
    }
}

#[test]
fn t04_reversed() {
    let s = scrubber_for(ALNUM);
    let rev: String = ALNUM.chars().rev().collect();
    let (out, n) = sc(&s, &format!("x {rev} y"));
    assert_eq!((out.as_str(), n), ("x [REDACTED:DB_PROD] y", 1));
}

#[test]
fn t04_spaced_out_with_spaces_tabs_and_newlines() {
    let s = scrubber_for(ALNUM);
    for sep in [" ", "\t", "\n", "  ", " \r\n "] {
        let spaced: Vec<String> = ALNUM.chars().map(String::from).collect();
        let text = format!("the key is {} ok", spaced.join(sep));
        let (out, n) = sc(&s, &text);
        assert_eq!(n, 1, "{text:?}");
        assert_eq!(out, "the key is [REDACTED:DB_PROD] ok");
    }
    // Plain ASCII "a b c d e f g h" style with a short secret.
    let s = scrubber_for("abcdefgh");
    assert_eq!(sc(&s, "say a b c d e f g h now").0, "say [REDACTED:DB_PROD] now");
}

#[test]
fn t04_zero_width_and_format_characters_interleaved() {
    let s = scrubber_for(ALNUM);
    for inv in ["\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{00AD}", "\u{200B}\u{2060}"] {
        let text: String = ALNUM.chars().flat_map(|c| [c.to_string(), inv.to_owned()]).collect();
        let (out, n) = sc(&s, &format!("[{text}]"));
        assert_eq!(n, 1);
        assert!(!out.contains('p') || !out.contains('Q'), "{out:?}");
        assert!(out.starts_with("[[REDACTED:DB_PROD]"), "{out:?}");
    }
}

#[test]
fn t04_unicode_tag_characters_interleaved() {
    let s = scrubber_for(ALNUM);
    // Each character followed by its TAG twin (U+E0000 + ASCII), an invisible copy.
    let text: String =
        ALNUM.chars().flat_map(|c| [c, char::from_u32(0xE0000 + c as u32).unwrap()]).collect();
    let (out, n) = sc(&s, &text);
    assert_eq!(n, 1);
    // The trailing invisible tag may stay; no visible secret character does.
    assert!(out.starts_with("[REDACTED:DB_PROD]"));
    assert!(out.trim_start_matches("[REDACTED:DB_PROD]").chars().all(|c| c as u32 >= 0xE0000));
}

#[test]
fn t04_homoglyph_cyrillic_greek_and_fullwidth() {
    let secret = "paxcope-OPEN-secret-9";
    let s = scrubber_for(secret);
    // Cyrillic а/е/о/р/с/х, Greek Ο/Ρ/Ε/Ν, fullwidth digits and letters.
    for t in ["\u{0440}\u{0430}\u{0445}\u{0441}\u{043E}\u{0440}\u{0435}-OPEN-secret-9",
        "paxcope-\u{039F}\u{03A1}\u{0395}\u{039D}-secret-9",
        "paxcope-OPEN-\u{FF53}\u{FF45}\u{FF43}\u{FF52}\u{FF45}\u{FF54}-\u{FF19}",
        "p\u{0430}xc\u{043E}pe-\u{041E}PEN-s\u{0435}cr\u{0435}t-9"]
    {
        let (out, n) = sc(&s, &format!("<{t}>"));
        assert_eq!((out.as_str(), n), ("<[REDACTED:DB_PROD]>", 1), "{t}");
    }
    // Digits written as look-alike letters (0 as Cyrillic О, 1 as l) collapse too.
    let s = scrubber_for("key-2010-value");
    assert_eq!(sc(&s, "key-2\u{041E}l\u{041E}-value").1, 1);
}

#[test]
fn t04_nested_base64_and_hex() {
    let s = scrubber_for(SECRET);
    let b = STANDARD.encode(SECRET);
    let bb = STANDARD.encode(&b);
    let hex_of_b64: String = b.bytes().map(|x| format!("{x:02x}")).collect();
    let hex: String = SECRET.bytes().map(|x| format!("{x:02x}")).collect();
    let b64_of_hex = STANDARD.encode(&hex);
    for t in [&bb, &hex_of_b64, &b64_of_hex] {
        let (out, n) = sc(&s, &format!("v={t};"));
        assert!(n >= 1 && out.contains("[REDACTED:DB_PROD]"), "{t}");
        assert!(!out.contains(&t[4..t.len() - 4]), "{out}");
    }
    // base64 of base64, embedded at an odd offset in a larger blob.
    let mut blob = b"x".to_vec();
    blob.extend_from_slice(b.as_bytes());
    blob.extend_from_slice(b"yz");
    let (out, n) = sc(&s, &URL_SAFE_NO_PAD.encode(&blob));
    assert!(n >= 1 && out.contains("[REDACTED:DB_PROD]"), "{out}");
}

#[test]
fn t04_encodings_at_very_start_and_end_of_text() {
    let s = scrubber_for(SECRET);
    let enc = STANDARD.encode(SECRET);
    assert_eq!(sc(&s, &enc).0, "[REDACTED:DB_PROD]");
    let hex: String = SECRET.bytes().map(|x| format!("{x:02X}")).collect();
    assert_eq!(sc(&s, &format!("{hex}\n{enc}")).0, "[REDACTED:DB_PROD]\n[REDACTED:DB_PROD]");
}

#[test]
fn t04_long_text_with_encodings_goes_through_the_prefilter() {
    let s = scrubber_for(SECRET);
    let filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(200);
    let hex: String = SECRET.bytes().map(|x| format!("{x:02x}")).collect();
    let text = format!("{filler}{}{filler}{hex}{filler}", STANDARD.encode(SECRET));
    let (out, n) = sc(&s, &text);
    assert_eq!(n, 2);
    assert!(!leaks(&out, SECRET.as_bytes()));
}
