//! The broker and its HTTP front end, as two modules with arrows one way:
//!
//! - [`broker`]: the path of one call (authenticate, check, validate, approve, resolve, execute,
//!   scrub, audit) and the state it needs: policy, secrets, executors, audit, approvals, shares,
//!   sub-agents, leases.
//! - [`http`]: axum only (routing, extractors, one response type), calling into the broker.
//!
//! Plaintext secrets pass through here only from the vault to an executor and to the scrubber's
//! builder; nothing in this crate reads one, and nothing it returns or logs is built from one.
#![forbid(unsafe_code)]

pub mod broker;
pub mod http;

pub use broker::{Broker, BrokerError, Caller, Elicit, Format, Invocation, SignedIn, SCOPE_PREFIX};
