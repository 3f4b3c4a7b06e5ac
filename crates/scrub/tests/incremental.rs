//! A scrubber extended with `with_added` redacts exactly what a scrubber built from all the
//! same secrets redacts: for generated secrets (some under a handle of the first set, as a
//! rotation adds them), texts holding them in any form the scrubber knows (raw, base64, hex,
//! reversed, spaced out, in other case, cut at the end, split across cells), and additions made
//! in one step or several.

use airlock_core::{HandleName, Secret};
use airlock_scrub::{BuildError, Scrubber, ScrubberBuilder};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::json;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Printable tokens without spaces, as keys and passwords are.
fn secret_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(0x21u8..0x7f, 8..40).prop_map(|v| String::from_utf8(v).unwrap())
}

/// The form a secret takes in the text.
fn form(secret: &str, which: u8) -> String {
    match which % 7 {
        0 => secret.to_owned(),
        1 => STANDARD.encode(secret),
        2 => hex(secret.as_bytes()).to_ascii_uppercase(),
        3 => secret.chars().rev().collect(),
        4 => secret.chars().map(|c| c.to_string()).collect::<Vec<_>>().join("-"),
        5 => secret.to_ascii_lowercase(),
        _ => STANDARD.encode(hex(secret.as_bytes())),
    }
}

fn label(i: usize) -> HandleName {
    HandleName::parse(&format!("H{i}")).unwrap()
}

fn build(secrets: &[(HandleName, Secret)]) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    for (l, s) in secrets {
        b.add_secret(l, s);
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn added_secrets_are_redacted_as_if_built_together(
        base in proptest::collection::vec(secret_strategy(), 1..6),
        added in proptest::collection::vec((secret_strategy(), any::<bool>()), 1..6),
        steps in 1usize..4,
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        words in proptest::collection::vec("[a-z]{1,8}", 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let base: Vec<(HandleName, Secret)> = base.iter().enumerate().map(|(i, s)| (label(i), Secret::from_str_value(s))).collect();
        // An added secret takes a new handle, or an existing one (a rotated value).
        let added: Vec<(HandleName, Secret)> = added
            .iter()
            .enumerate()
            .map(|(i, (s, rotated))| (if *rotated { label(i % base.len()) } else { label(100 + i) }, Secret::from_str_value(s)))
            .collect();
        let all: Vec<(HandleName, Secret)> = base.iter().chain(&added).cloned().collect();
        let full = build(&all);
        let mut layered = build(&base);
        for chunk in added.chunks(added.len().div_ceil(steps)) {
            layered = layered.with_added(chunk).unwrap();
        }
        prop_assert_eq!(layered.added_count(), added.len());
        for (l, s) in &all {
            prop_assert!(layered.knows(l, s));
        }
        // A text holding the picked secrets in the picked forms, among words.
        let values: Vec<&str> = all.iter().map(|(_, s)| std::str::from_utf8(s.expose_secret()).unwrap()).collect();
        let mut text = String::new();
        for (k, (which, f)) in picks.iter().enumerate() {
            text.push_str(&words[k % words.len()]);
            text.push(' ');
            text.push_str(&form(values[which.index(values.len())], *f));
            text.push(' ');
        }
        prop_assert_eq!(layered.scrub_str(&text), full.scrub_str(&text));
        prop_assert_eq!(layered.contains_known_secret(&text), full.contains_known_secret(&text));
        // Cut anywhere, as a size cap does, and split across cells.
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut a = json!({"body": &text[..at], "truncated": true});
        let mut b = a.clone();
        prop_assert_eq!(layered.scrub_result(&mut a), full.scrub_result(&mut b));
        prop_assert_eq!(&a, &b);
        let cells: Vec<String> = text.as_bytes().chunks(7).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let mut a = json!({"rows": [cells]});
        let mut b = a.clone();
        prop_assert_eq!(layered.scrub_result(&mut a), full.scrub_result(&mut b));
        prop_assert_eq!(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Taking out what was added under one handle (a revoked lease) leaves a scrubber that
    /// redacts exactly what one built without it redacts, and no longer knows its values.
    #[test]
    fn taking_out_an_added_handle_is_as_if_it_was_never_added(
        base in proptest::collection::vec(secret_strategy(), 1..4),
        added in proptest::collection::vec(secret_strategy(), 2..6),
        gone in any::<prop::sample::Index>(),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let base: Vec<(HandleName, Secret)> = base.iter().enumerate().map(|(i, s)| (label(i), Secret::from_str_value(s))).collect();
        // Two values per handle, as a lease's credential and its parts.
        let added: Vec<(HandleName, Secret)> = added.iter().enumerate().map(|(i, s)| (label(100 + i / 2), Secret::from_str_value(s))).collect();
        let out = added[gone.index(added.len())].0.clone();
        let kept: Vec<(HandleName, Secret)> = added.iter().filter(|(l, _)| *l != out).cloned().collect();
        let expected = if kept.is_empty() { build(&base) } else { build(&base).with_added(&kept).unwrap() };
        let together = build(&base).with_added(&added).unwrap();
        // One layer for all: taking one handle out compiles it again when others share it.
        prop_assert_eq!(together.without_added_compiles(&out), added.iter().any(|(l, _)| *l != out));
        let taken = together.without_added(&out).unwrap().expect("it was added");
        prop_assert_eq!(taken.added_count(), kept.len());
        for (l, s) in &added {
            prop_assert_eq!(taken.knows(l, s), *l != out);
        }
        let values: Vec<&str> = base.iter().chain(&added).map(|(_, s)| std::str::from_utf8(s.expose_secret()).unwrap()).collect();
        let text: String = picks.iter().map(|(w, f)| format!("x {} y", form(values[w.index(values.len())], *f))).collect();
        prop_assert_eq!(taken.scrub_str(&text), expected.scrub_str(&text));
        prop_assert!(taken.without_added(&out).unwrap().is_none(), "taken out twice");
        // Each handle added on its own (a lease's first use): its layer is dropped whole.
        let mut each = build(&base);
        for pair in added.chunk_by(|a, b| a.0 == b.0) {
            each = each.with_added(pair).unwrap();
        }
        prop_assert!(!each.without_added_compiles(&out), "a layer of its own is dropped whole");
        prop_assert!(!each.without_added_compiles(&label(0)), "a handle the scrubber was built with");
        let taken = each.without_added(&out).unwrap().expect("it was added");
        prop_assert_eq!(taken.added_count(), kept.len());
        for (l, s) in &added {
            prop_assert_eq!(taken.knows(l, s), *l != out);
        }
        prop_assert_eq!(taken.scrub_str(&text), expected.scrub_str(&text));
    }
}

#[test]
fn the_first_scrubber_is_unchanged_and_counts_add_up() {
    let base = build(&[(label(1), Secret::from_str_value("first-secret-value-1"))]);
    let more = base.with_added(&[(label(2), Secret::from_str_value("second-secret-value-2"))]).unwrap();
    let text = "a first-secret-value-1 b second-secret-value-2";
    assert_eq!(base.scrub_str(text).0, "a [REDACTED:H1] b second-secret-value-2");
    assert_eq!(more.scrub_str(text).0, "a [REDACTED:H1] b [REDACTED:H2]");
    assert_eq!((base.known_secret_count(), more.known_secret_count()), (1, 2));
    assert_eq!((base.added_count(), more.added_count()), (0, 1));
    assert!(more.pattern_count() > base.pattern_count());
    assert!(!base.knows(&label(2), &Secret::from_str_value("second-secret-value-2")));
}

#[test]
fn a_new_marker_holding_a_known_pattern_asks_for_a_full_build() {
    // The marker `[REDACTED:NEWHANDLE]` would hold the first secret: scrubbing it again would
    // redact the marker.
    let base = build(&[(label(1), Secret::from_str_value("ACTED:NEWHAND"))]);
    let err = base.with_added(&[(HandleName::parse("NEWHANDLE").unwrap(), Secret::from_str_value("another-value-77"))]);
    assert!(matches!(err, Err(BuildError::MarkerConflict)));
    // Under an existing handle there is no new marker: fine.
    assert!(base.with_added(&[(label(1), Secret::from_str_value("another-value-77"))]).is_ok());
}
