//! Fuzz target `http_destination`: the property is in `fuzz/props/http_destination.rs` (see its
//! documentation), shared with the stable-Rust replay of the corpus in the crate's
//! `tests/fuzz_regressions.rs`.
#![no_main]

/// The URI type reqwest hands to hyper (the property compares its reading with `url`'s).
use http::Uri;

#[allow(dead_code)]
#[path = "../props/http_destination.rs"]
mod prop;

libfuzzer_sys::fuzz_target!(|data: &[u8]| prop::check(data));
