//! The command line's static behaviour as data: the cases in `tests/cmd/*.toml`, run by trycmd.
//! Help texts, usage errors (exit 2), an agent command with no broker to answer (exit 3) and a
//! configuration error with its file and line: everything that needs no running broker.
//!
//! Each case builds its environment from nothing (`[env] inherit = false`), so no variable of the
//! machine running the tests (AIRLOCK_CONFIG, AIRLOCK_TOKEN, HOME's client config) reaches it.
//! After a deliberate change to the output, `TRYCMD=overwrite cargo test -p airlock --test
//! cli_cases` rewrites the `.stdout` and `.stderr` files; review the diff.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .register_bin("airlock", std::path::Path::new(env!("CARGO_BIN_EXE_airlock")))
        .case("tests/cmd/*.toml");
}
