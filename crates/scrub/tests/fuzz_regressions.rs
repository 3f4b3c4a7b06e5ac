//! The `scrub` fuzz target's property (`fuzz/props/scrub.rs`) on every input of
//! `fuzz/corpus/scrub/` and `fuzz/regressions/scrub/`, with stable Rust, so the corpus runs in
//! CI without nightly (T04, T20, T24).

#[allow(dead_code)]
#[path = "../../../fuzz/props/scrub.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "scrub", prop::check);
    println!("{n} inputs");
}

/// The property is asserted, not only run: a scrubber that does not know the secret fails it.
#[test]
fn the_property_can_fail() {
    let secret = "correct-horse-battery-9";
    let text = format!("the key is {secret} here");
    assert!(prop::holds(&prop::scrubber(secret), secret, &text, 11, 6).is_ok());
    let e = prop::holds(&prop::scrubber("another-secret-value"), secret, &text, 11, 6).unwrap_err();
    assert!(e.contains("still holds the secret"), "{e}");
}
