//! The argument half of the `mcp_request` fuzz target (`fuzz/props/mcp_request_args.rs`) on
//! every input of `fuzz/corpus/mcp_request/` and `fuzz/regressions/mcp_request/`, with stable
//! Rust, so the corpus runs in CI without nightly. The JSON-RPC half is replayed by
//! `crates/mcp/tests/fuzz_regressions.rs`.

#[allow(dead_code)]
#[path = "../../../fuzz/props/mcp_request_args.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "mcp_request", prop::check);
    println!("{n} inputs");
}

/// The property is asserted, not only run: an argument error of another code, or with an
/// unbounded message, fails it.
#[test]
fn the_property_can_fail() {
    use airlock_core::{CallError, ErrorCode};
    let long = CallError::with_message(ErrorCode::InvalidArguments, "x".repeat(300));
    assert!(prop::argument_error(&long).is_err());
    let other = CallError::with_message(ErrorCode::Internal, "invalid arguments: x");
    assert!(prop::argument_error(&other).is_err());
    let e = airlock_core::executor::parse_args::<airlock_exec_sql::QueryArgs>(&serde_json::json!({"query": 1})).unwrap_err();
    assert!(prop::argument_error(&e).is_ok(), "{}", e.message);
}
