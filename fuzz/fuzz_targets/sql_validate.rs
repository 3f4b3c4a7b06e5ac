//! Fuzz target `sql_validate`: the property is in `fuzz/props/sql_validate.rs` (see its documentation), shared
//! with the stable-Rust replay of the corpus in the crate's `tests/fuzz_regressions.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../props/sql_validate.rs"]
mod prop;

libfuzzer_sys::fuzz_target!(|data: &[u8]| prop::check(data));
