//! T24: part of a secret returned at a cut. A size cap or a chunk boundary that falls inside a
//! secret (or one of its encodings) must not hand back the part before the cut: after
//! `scrub_result`, no suffix of a cut text that reaches the form's floor (`min_cut_fragment`: 4 bytes, 6 hex digits) is the
//! beginning of the secret's form in that text.

use airlock_core::{HandleName, Secret};
use airlock_scrub::{min_cut_fragment, ScrubberBuilder, MIN_CUT_FRAGMENT};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;
use serde_json::json;

fn hex(b: &[u8], upper: bool) -> String {
    b.iter().map(|x| if upper { format!("{x:02X}") } else { format!("{x:02x}") }).collect()
}

/// The forms an upstream or a stored row hands back without any key, encoded here independently
/// of the scrubber's own variant list.
fn encode(form: usize, s: &str) -> String {
    match form {
        0 => s.to_owned(),
        1 => STANDARD.encode(s),
        2 => STANDARD_NO_PAD.encode(s),
        3 => URL_SAFE.encode(s),
        4 => URL_SAFE_NO_PAD.encode(s),
        5 => hex(s.as_bytes(), false),
        6 => hex(s.as_bytes(), true),
        _ => s.chars().rev().collect(),
    }
}

/// The longest suffix of `out` (at least the form's floor long: 4 bytes, 6 hex digits) that
/// begins `form`, if any.
fn leaked_prefix(out: &str, form: &str) -> Option<usize> {
    (min_cut_fragment(form.as_bytes())..=form.len().min(out.len())).rev().find(|&k| out.ends_with(&form[..k]))
}

fn secret_strategy() -> impl Strategy<Value = String> {
    // Printable ASCII without space: tokens, passwords, keys.
    proptest::collection::vec(0x21u8..0x7f, 8..48).prop_map(|v| String::from_utf8(v).unwrap())
}

fn text_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["[a-z]{1,8}", Just(" ".to_owned()), Just("\n".to_owned()), Just(": ".to_owned())], 0..40)
        .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// For every form, every text before it and every cut position inside it, the scrubbed,
    /// cut result keeps less of the form than its floor (`min_cut_fragment`).
    #[test]
    fn t24_no_prefix_of_a_secret_survives_a_cut(
        secret in secret_strategy(),
        form in 0usize..8,
        before in text_strategy(),
        cut in 0.0f64..1.0,
    ) {
        let mut b = ScrubberBuilder::new();
        b.add_secret(&HandleName::parse("API").unwrap(), &Secret::from_str_value(&secret));
        let scrubber = b.build();
        let enc = encode(form, &secret);
        let full = format!("{before}{enc}");
        // A cap somewhere inside the encoded secret: what an executor keeps.
        let keep = before.len() + ((enc.len() as f64 * cut) as usize).min(enc.len());
        let mut v = json!({"body": &full[..keep], "truncated": true});
        scrubber.scrub_result(&mut v);
        let out = v["body"].as_str().unwrap();
        prop_assert!(leaked_prefix(out, &enc).is_none(), "form {form}: {out:?} ends with a prefix of {enc:?}");
        // Nothing before the secret was eaten: the text up to the cut's redaction is intact.
        prop_assert!(out.starts_with(&before[..before.len().min(out.len())]) || out.contains("[REDACTED:"), "{out:?}");
    }

    /// `scrub_bounded`, the bound on short agent text (a tool's name, an argument's name): for
    /// every form, multi-byte text before it and every bound, what is kept is at most the bound
    /// long (plus a marker) and keeps less of the form than its floor; a text within the bound
    /// comes back scrubbed whole.
    #[test]
    fn t24_no_prefix_of_a_secret_survives_a_bound(
        secret in secret_strategy(),
        form in 0usize..8,
        before in proptest::collection::vec(prop_oneof![Just('é'), Just('日'), Just(' '), Just('.')], 0..40),
        max in 1usize..120,
    ) {
        let mut b = ScrubberBuilder::new();
        b.add_secret(&HandleName::parse("API").unwrap(), &Secret::from_str_value(&secret));
        let scrubber = b.build();
        let before: String = before.into_iter().collect();
        let enc = encode(form, &secret);
        let full = format!("{before}{enc}");
        let out = scrubber.scrub_bounded(&full, max);
        prop_assert!(leaked_prefix(&out, &enc).is_none(), "form {form}, bound {max}: {out:?} ends with a prefix of {enc:?}");
        prop_assert!(!out.contains(enc.as_str()), "{out:?}");
        let kept = out.split("[REDACTED:").next().unwrap();
        prop_assert!(kept.chars().count() <= max, "{out:?} over {max}");
        if full.chars().count() <= max {
            prop_assert_eq!(out, scrubber.scrub_str(&full).0.into_owned());
        }
    }

    /// Text that holds no part of any secret comes back unchanged at a cut: the tail redaction
    /// is not a blanket trim.
    #[test]
    fn t24_ordinary_text_survives_a_cut(text in "[a-z ]{0,200}", cut in 0usize..200) {
        let mut b = ScrubberBuilder::new();
        // Secrets from another alphabet than the text: no prefix of theirs can end it.
        b.add_secret(&HandleName::parse("API").unwrap(), &Secret::from_str_value("ZX9-QW7_PL3#MN5!"));
        b.add_secret(&HandleName::parse("DB").unwrap(), &Secret::from_str_value("7713-0042-9981-5530"));
        let scrubber = b.build();
        let t = &text[..cut.min(text.len())];
        let mut v = json!({"stdout": t, "truncated": true});
        let n = scrubber.scrub_result(&mut v);
        prop_assert_eq!(n, 0);
        prop_assert_eq!(v["stdout"].as_str().unwrap(), t);
    }
}

#[test]
fn t24_only_truncated_results_have_their_tails_redacted() {
    let secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("STRIPE").unwrap(), &Secret::from_str_value(secret));
    let scrubber = b.build();
    let cut = &secret[..12];
    let mut whole = json!({"stdout": format!("key: {cut}"), "truncated": false});
    scrubber.scrub_result(&mut whole);
    assert_eq!(whole["stdout"], format!("key: {cut}"), "an uncut text keeps its ending");
    let mut v = json!({"stdout": format!("key: {cut}"), "stderr": "fine", "truncated": true});
    assert_eq!(scrubber.scrub_result(&mut v), 1);
    assert_eq!(v["stdout"], "key: [REDACTED:STRIPE]");
    assert_eq!(v["stderr"], "fine");
    // Shorter than the floor: kept (documented).
    let mut v = json!({"body": format!("x {}", &secret[..MIN_CUT_FRAGMENT - 1]), "truncated": true});
    assert_eq!(scrubber.scrub_result(&mut v), 0);
}

#[test]
fn t24_hex_forms_are_cut_from_six_digits_and_hex_endings_survive() {
    let secret = "X4AA00AAaAAa00aA";
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("API").unwrap(), &Secret::from_str_value(secret));
    let scrubber = b.build();
    let h = hex(secret.as_bytes(), false);
    assert_eq!(min_cut_fragment(h.as_bytes()), 6);
    assert_eq!(min_cut_fragment(secret.as_bytes()), MIN_CUT_FRAGMENT);
    // A UUID whose last 4 digits begin the hex form ("X4" is 58 34): 2 bytes, not a cut secret.
    let uuid = "00000000-0000-0000-0000-000000005834";
    assert!(h.starts_with("5834"));
    let mut v = json!({"rows": [[uuid]], "truncated": true});
    assert_eq!(scrubber.scrub_result(&mut v), 0);
    assert_eq!(v["rows"][0][0], uuid);
    // Five digits are kept, six are redacted, in either case.
    for (k, n) in [(5, 0), (6, 1), (11, 1)] {
        for form in [h.clone(), h.to_ascii_uppercase()] {
            let mut v = json!({"body": format!("id {}", &form[..k]), "truncated": true});
            assert_eq!(scrubber.scrub_result(&mut v), n, "{k} digits of {form}");
            if n == 1 {
                assert_eq!(v["body"], "id [REDACTED:API]");
            }
        }
    }
    // A raw secret that begins with hex digits is still cut from 4 bytes.
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("RAW").unwrap(), &Secret::from_str_value("beef-Kq9_zzT8mW2"));
    let scrubber = b.build();
    let mut v = json!({"body": "x beef", "truncated": true});
    assert_eq!(scrubber.scrub_result(&mut v), 1);
    assert_eq!(v["body"], "x [REDACTED:RAW]");
}
