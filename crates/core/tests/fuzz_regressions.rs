//! The `config_load` fuzz target's property (`fuzz/props/config_load.rs`) on every input of
//! `fuzz/corpus/config_load/` and `fuzz/regressions/config_load/`, with stable Rust, so the
//! corpus runs in CI without nightly.

#[allow(dead_code)]
#[path = "../../../fuzz/props/config_load.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "config_load", prop::check);
    println!("{n} inputs");
}

/// The property is asserted, not only run: an error with no problem, or one shown on two
/// lines, fails it.
#[test]
fn the_property_can_fail() {
    use airlock_core::config::{ConfigError, Problem, ProblemCode};
    let none = ConfigError::Invalid { file: prop::FILE.into(), problems: vec![] };
    assert!(prop::error_is_well_formed("", &none).is_err());
    let two_lines = ConfigError::Invalid {
        file: prop::FILE.into(),
        problems: vec![Problem::new(ProblemCode::UnknownKey, "handles.A\nB", "unknown key", None)],
    };
    let e = prop::error_is_well_formed("x = 1", &two_lines).unwrap_err();
    assert!(e.contains("more than one line"), "{e}");
    let one = ConfigError::Invalid {
        file: prop::FILE.into(),
        problems: vec![Problem::new(ProblemCode::UnknownKey, "x", "unknown key", None)],
    };
    assert!(prop::error_is_well_formed("x = 1", &one).is_ok());
}
