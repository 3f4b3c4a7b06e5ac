//! `[requests]`: limits of requests for a secret (`request_secret`). Who may ask is decided by
//! Cedar (`Airlock::Action::"request_secret"` on the proposed handle, `resource.requested`);
//! recipients and their channels are `[shares.recipients]`.

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// `[requests]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsConfig {
    /// Requests one agent may have waiting for a person at once (default 10).
    #[serde(default = "default_max_open")]
    pub max_open_per_agent: u32,
    /// Requests one agent may make per minute (token bucket; default 10).
    #[serde(default = "default_create_rate")]
    pub create_per_minute: u32,
    /// Longest expiry of an intake link, in seconds (default 1 day; the default expiry is 1 hour).
    #[serde(default = "default_max_expiry")]
    pub max_expiry_seconds: u64,
    /// Largest value a person may send, in bytes (default 8192).
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// Failed opens and submits (wrong proof, a value that does not open or match its format)
    /// per minute per request (default 10); past it only the right proof gets an answer.
    #[serde(default = "default_failed_rate")]
    pub failed_per_minute: u32,
    /// How long an approver has to decide a received request's grant, in seconds (default 1 day).
    #[serde(default = "default_approval_expiry")]
    pub approval_expires_in_seconds: u64,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        RequestsConfig {
            max_open_per_agent: default_max_open(),
            create_per_minute: default_create_rate(),
            max_expiry_seconds: default_max_expiry(),
            max_value_bytes: default_max_value(),
            failed_per_minute: default_failed_rate(),
            approval_expires_in_seconds: default_approval_expiry(),
        }
    }
}

impl RequestsConfig {
    /// Checks the limits.
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath) -> RequestsConfig {
        let ranges = [
            ("max_open_per_agent", u64::from(self.max_open_per_agent), 1, 10_000),
            ("create_per_minute", u64::from(self.create_per_minute), 1, 100_000),
            ("max_expiry_seconds", self.max_expiry_seconds, 60, 30 * 86_400),
            ("max_value_bytes", self.max_value_bytes as u64, 16, 1 << 20),
            ("failed_per_minute", u64::from(self.failed_per_minute), 1, 100_000),
            ("approval_expires_in_seconds", self.approval_expires_in_seconds, 60, 30 * 86_400),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                r.problem(&at.join(field), ProblemCode::OutOfRange, format!("must be between {min} and {max}"));
            }
        }
        self
    }
}

fn default_max_open() -> u32 {
    10
}
fn default_create_rate() -> u32 {
    10
}
fn default_max_expiry() -> u64 {
    86_400
}
fn default_max_value() -> usize {
    8192
}
fn default_failed_rate() -> u32 {
    10
}
fn default_approval_expiry() -> u64 {
    86_400
}
