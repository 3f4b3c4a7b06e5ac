//! What airlock's benchmark binaries share: a closed-loop load generator and its latency figures
//! ([`load`]), child processes and the `airlock` binary driven as an operator drives it
//! ([`served`]), a broker in this process on a throw-away data directory ([`scratch`]), and an
//! OpenBao dev server to compare against or read from ([`bao`]), and the release binary's code order
//! ([`code_order`]).
//!
//! None of this is installed: the package is `publish = false` and the binaries run with
//! `cargo run --release -p airlock-bench --bin NAME`.
#![forbid(unsafe_code)]

pub mod bao;
pub mod code_order;
pub mod load;
pub mod scratch;
pub mod served;
