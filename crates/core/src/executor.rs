//! The one shape every tool's executor has.
//!
//! A call reaches an executor in two steps, with the secret resolved only between them:
//!
//! 1. [`Executor::validate`] checks the agent's arguments against the handle's configuration and
//!    returns a prepared call. No secret exists yet, no connection is made (invariant 6).
//! 2. [`Executor::execute`] runs the prepared call with the plaintext secret and returns
//!    [`Unscrubbed`] output: a value the broker cannot hand to an agent until the scrubber has
//!    turned it into a result.
//!
//! [`Executor::facts`] tells the broker what approval rules and the intent record need to know
//! about a prepared call (does it write, to whom does it send, does it act on the world).
//!
//! Executors live in their own crates (`crates/exec/*`) and are the only code besides vault
//! backends that may read a secret's plaintext.

use crate::config::Handle;
use crate::{CallError, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;

/// What the broker's approval rules and intent records look at in a prepared call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFacts {
    /// The call changes data upstream (an SQL write, a non-safe HTTP method, an S3 put/delete).
    pub writes: bool,
    /// The call acts on the world: an intent record must be durable before it runs.
    pub side_effects: bool,
    /// Addresses a message goes to.
    pub recipients: Vec<String>,
    /// A lease's requested lifetime, in seconds.
    pub lease_ttl: Option<u64>,
}

/// What validation may know of the call and ask of the broker without seeing a secret.
pub struct ValidateCtx<'a> {
    /// The calling agent's id.
    pub agent_id: &'a str,
    /// The calling agent's name.
    pub agent_name: &'a str,
    /// True when `text` holds a known secret or an encoding of one (outbound checks: an e-mail
    /// cannot be redacted once sent).
    pub contains_known_secret: &'a (dyn Fn(&str) -> bool + Sync),
}

/// An executor's output before the scrubber has seen it.
///
/// It has no accessor but [`Unscrubbed::into_raw`], which only the scrubber calls (a test of the
/// tree keeps it so); the broker turns it into a result only through the scrubber.
#[derive(Debug)]
#[must_use = "an executor's output reaches the agent only through the scrubber"]
pub struct Unscrubbed(Value);

impl Unscrubbed {
    /// Wraps an executor's output.
    pub fn new(v: Value) -> Unscrubbed {
        Unscrubbed(v)
    }

    /// The raw value. Only the scrubber calls this: everything else hands the output on.
    pub fn into_raw(self) -> Value {
        self.0
    }

    /// The HTTP status of an `http_request` result (its top-level `status` number), and nothing
    /// else of it: the broker refreshes an oauth handle's token once and retries when the
    /// upstream answers 401.
    pub fn http_status(&self) -> Option<u16> {
        self.0.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok())
    }
}

/// One tool's executor.
pub trait Executor: Send + Sync {
    /// The tool's arguments as the agent sends them (without `credential_handle`).
    type Args: DeserializeOwned;
    /// A validated call, ready to run once its secret is resolved.
    type Prepared: Send + Sync;

    /// Checks `args` against `handle` before any secret is resolved.
    fn validate(&self, handle: &Handle, args: Self::Args, ctx: &ValidateCtx<'_>) -> Result<Self::Prepared, CallError>;

    /// What approval rules and the intent record need to know about `prepared` on `handle`.
    fn facts(&self, handle: &Handle, prepared: &Self::Prepared) -> CallFacts;

    /// Runs `prepared` with the handle's secret.
    fn execute(
        &self,
        handle: &Handle,
        prepared: &Self::Prepared,
        secret: &Secret,
    ) -> impl Future<Output = Result<Unscrubbed, CallError>> + Send;
}

/// Parses a tool's arguments; the message names fields and types, never an agent's value.
pub fn parse_args<A: DeserializeOwned>(args: &Value) -> Result<A, CallError> {
    // Read from the borrowed value: no copy of the whole arguments object per call.
    A::deserialize(args).map_err(|e| {
        CallError::with_message(crate::ErrorCode::InvalidArguments, format!("invalid arguments: {}", strip_serde_detail(&e)))
    })
}

/// serde's message without its position, bounded to 200 characters (it may quote an agent's
/// value; the broker scrubs every message before it leaves).
pub fn strip_serde_detail(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let s = s.split(" at line ").next().unwrap_or(&s);
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct A {
        n: u32,
    }

    #[test]
    fn argument_errors_name_the_field_and_are_bounded() {
        let e = parse_args::<A>(&serde_json::json!({"n": "x".repeat(10_000)})).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidArguments);
        assert!(e.message.chars().count() <= 220, "{}", e.message);
        let e = parse_args::<A>(&serde_json::json!({"n": 1, "extra": true})).unwrap_err();
        assert!(e.message.contains("extra"), "{}", e.message);
    }
}
