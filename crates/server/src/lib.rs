//! The broker (the path of one call: authenticate, check, resolve, execute, scrub, audit) and the
//! REST server in front of it.
//!
//! Plaintext secrets appear here only in transit from the vault to an executor and to the
//! scrubber's builder; nothing this crate returns or logs is built from one.
#![forbid(unsafe_code)]

pub mod approvals;
pub mod broker;
pub mod metrics;
pub mod rate;
pub mod rest;
pub mod shares;
pub mod tools;

pub use broker::{Broker, BrokerError, Caller, Invocation};
