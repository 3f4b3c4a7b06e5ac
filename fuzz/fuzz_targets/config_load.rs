//! Fuzz target `config_load`: the property is in `fuzz/props/config_load.rs` (see its documentation), shared
//! with the stable-Rust replay of the corpus in the crate's `tests/fuzz_regressions.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../props/config_load.rs"]
mod prop;

libfuzzer_sys::fuzz_target!(|data: &[u8]| prop::check(data));
