//! The JSON-RPC half of the `mcp_request` fuzz target (`fuzz/props/mcp_request_jsonrpc.rs`) on
//! every input of `fuzz/corpus/mcp_request/` and `fuzz/regressions/mcp_request/`, with stable
//! Rust, so the corpus runs in CI without nightly (T16). The argument half is replayed by
//! `crates/server/tests/fuzz_regressions.rs`.

#[allow(dead_code)]
#[path = "../../../fuzz/props/mcp_request_jsonrpc.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "mcp_request", prop::check);
    println!("{n} inputs");
}

/// The property is asserted, not only run: a handle parser that folds case fails it (T16).
#[test]
fn the_property_can_fail() {
    let folding = |s: &str| airlock_core::HandleName::parse(&s.to_uppercase()).is_ok();
    let e = prop::parser_agrees("folding", &folding, &prop::handle_grammar, "db_prod").unwrap_err();
    assert!(e.contains("accepts"), "{e}");
    assert!(prop::names("DB_PROD").is_ok());
    assert!(prop::names("DB_PR\u{041E}D").is_ok(), "refused by both");
}
