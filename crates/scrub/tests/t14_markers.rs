//! T14: the scrubber's own output: markers, idempotence, JSON, boundaries and overlaps.

use airlock_core::{HandleName, Secret};
use airlock_scrub::{bench_fixture_with, Scrubber, ScrubberBuilder};
use serde_json::json;

fn scrubber(pairs: &[(&str, &str)]) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    for (h, s) in pairs {
        b.add_secret(&HandleName::parse(h).unwrap(), &Secret::from_str_value(s));
    }
    b.build()
}

#[test]
fn t14_scrubbing_the_marker_is_idempotent() {
    let s = scrubber(&[("DB_PROD", "hunter2-canary-9f8e"), ("API", "ghp-like-but-not-Z81")]);
    let text = "a hunter2-canary-9f8e b ghp-like-but-not-Z81 c ghp_0123456789abcdefghijABCDEFGHIJ012345 d";
    let (once, n1) = s.scrub_str(text);
    assert_eq!(n1, 3);
    let (twice, n2) = s.scrub_str(&once);
    assert_eq!(n2, 0);
    assert_eq!(once, twice);
    assert_eq!(once, "a [REDACTED:DB_PROD] b [REDACTED:API] c [REDACTED:github-pat] d");
}

#[test]
fn t14_marker_never_contains_the_secret() {
    // Even a secret that looks like a handle name or a marker piece never reappears.
    for secret in ["DB_PROD_SECRET", "REDACTED:DB", "[REDACTED:X]y", "hunter2-canary"] {
        let s = scrubber(&[("DB_PROD", secret)]);
        let text = format!("x {secret} y");
        let (out, _) = s.scrub_str(&text);
        let (again, n) = s.scrub_str(&out);
        assert_eq!(out, again, "{secret}");
        assert_eq!(n, 0);
        if !"[REDACTED:DB_PROD]".contains(secret) {
            assert!(!out.contains(secret), "{secret} -> {out}");
        }
    }
}

#[test]
fn t14_json_keys_and_nested_values_are_scrubbed() {
    let s = scrubber(&[("DB_PROD", "hunter2-canary-9f8e")]);
    let mut v = json!({
        "rows": [["id", 1], ["pw", "hunter2-canary-9f8e"], {"deep": {"deeper": ["x hunter2-canary-9f8e y"]}}],
        "hunter2-canary-9f8e": "as a key",
        "n": 3, "b": true, "z": null,
    });
    let n = s.scrub_json(&mut v);
    assert_eq!(n, 3);
    let text = v.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(v["rows"][1][1], "[REDACTED:DB_PROD]");
    assert_eq!(v["rows"][2]["deep"]["deeper"][0], "x [REDACTED:DB_PROD] y");
    assert_eq!(v["[REDACTED:DB_PROD]"], "as a key");
    assert_eq!(v["n"], 3);
    assert_eq!(s.scrub_json(&mut v), 0);
}

#[test]
fn t14_json_keys_that_collide_after_scrubbing_are_kept_apart() {
    let s = scrubber(&[("A", "secret-one-111"), ("B", "secret-two-222")]);
    let mut v = json!({"secret-one-111": 1, "[REDACTED:A]": 2});
    assert_eq!(s.scrub_json(&mut v), 1);
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2);
    let mut vals: Vec<i64> = obj.values().map(|x| x.as_i64().unwrap()).collect();
    vals.sort();
    assert_eq!(vals, vec![1, 2]);
    assert!(obj.keys().all(|k| k.starts_with("[REDACTED:A]")));
}

#[test]
fn t14_secret_at_the_very_start_and_very_end() {
    let s = scrubber(&[("K", "abcdef123456")]);
    assert_eq!(s.scrub_str("abcdef123456").0, "[REDACTED:K]");
    assert_eq!(s.scrub_str("abcdef123456 mid abcdef123456").0, "[REDACTED:K] mid [REDACTED:K]");
    let long = format!("abcdef123456{}abcdef123456", " filler text".repeat(500));
    let (out, n) = s.scrub_str(&long);
    assert_eq!(n, 2);
    assert!(out.starts_with("[REDACTED:K] filler") && out.ends_with("text[REDACTED:K]"));
}

#[test]
fn t14_overlapping_secrets_merge_into_one_redaction() {
    // The tail of A is the head of B; both must go, as one marker.
    let s = scrubber(&[("A", "alpha-beta-gamma"), ("B", "gamma-delta-omega")]);
    let (out, n) = s.scrub_str("x alpha-beta-gamma-delta-omega y");
    assert_eq!((out.as_ref(), n), ("x [REDACTED:A] y", 1));
    // One secret inside another.
    let s = scrubber(&[("OUTER", "0000-inner-secret-0000"), ("INNER", "inner-secret")]);
    assert_eq!(s.scrub_str("(0000-inner-secret-0000)").0, "([REDACTED:OUTER])");
    assert_eq!(s.scrub_str("(inner-secret)").0, "([REDACTED:INNER])");
}

#[test]
fn t14_adjacent_secrets_are_separate_redactions() {
    let s = scrubber(&[("A", "first-secret"), ("B", "second-secret")]);
    let (out, n) = s.scrub_str("first-secretsecond-secret");
    assert_eq!((out.as_ref(), n), ("[REDACTED:A][REDACTED:B]", 2));
}

#[test]
fn t14_same_secret_under_two_handles_gets_one_label() {
    let s = scrubber(&[("A", "shared-value-1"), ("B", "shared-value-1")]);
    assert_eq!(s.known_secret_count(), 1);
    assert_eq!(s.scrub_str("shared-value-1").0, "[REDACTED:A]");
}

#[test]
fn t14_planted_secrets_in_large_text_are_all_redacted() {
    let (s, text) = bench_fixture_with(1000, 256 * 1024, 7, true, 100);
    assert_eq!(s.known_secret_count(), 1000);
    let (out, n) = s.scrub_str(&text);
    assert_eq!(n, 100);
    assert_eq!(out.matches("[REDACTED:K").count(), 100);
    let (_, again) = s.scrub_str(&out);
    assert_eq!(again, 0);
}

#[test]
fn t14_multibyte_text_around_secrets_stays_valid() {
    let s = scrubber(&[("K", "sëcrét-välue")]);
    let (out, n) = s.scrub_str("ünïcödé sëcrét-välue ✓");
    assert_eq!((out.as_ref(), n), ("ünïcödé [REDACTED:K] ✓", 1));
}

#[test]
fn t14_match_straddling_an_inserted_marker_is_caught_by_the_rescan() {
    // Contrived: B's value begins with the tail of A's marker, so it only appears after A is
    // redacted. The output must still be a fixed point.
    let s = scrubber(&[("A", "first-secret-1"), ("B", "D:A]tail-data")]);
    let filler = "lorem ipsum ".repeat(100);
    let text = format!("{filler}first-secret-1tail-data{filler}");
    let (out, n) = s.scrub_str(&text);
    assert_eq!(n, 2);
    assert!(!out.contains("tail-data") && !out.contains("first-secret"));
    assert_eq!(s.scrub_str(&out).1, 0);
}
