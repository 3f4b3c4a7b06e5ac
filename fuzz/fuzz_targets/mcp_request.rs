//! Fuzz target `mcp_request`: the properties are in `fuzz/props/mcp_request_jsonrpc.rs` (MCP
//! messages and names; replayed by `crates/mcp/tests/fuzz_regressions.rs`) and
//! `fuzz/props/mcp_request_args.rs` (tool arguments through the broker's validation; replayed by
//! `crates/server/tests/fuzz_regressions.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../props/mcp_request_jsonrpc.rs"]
mod jsonrpc;

#[allow(dead_code)]
#[path = "../props/mcp_request_args.rs"]
mod args;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    jsonrpc::check(data);
    args::check(data);
});
