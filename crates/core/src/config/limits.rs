//! `[limits]`: per-agent call and e-mail rates, and the largest request.

use super::defaults;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// `[limits]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls per minute per agent (token bucket; bursts up to this many).
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    /// Largest `/v1/invoke` body.
    #[serde(default = "defaults::max_request_bytes")]
    pub max_request_bytes: usize,
    /// E-mails per minute per agent (`send_email`), over all smtp handles.
    #[serde(default = "defaults::sends_per_minute")]
    pub sends_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_minute: default_rate(),
            max_request_bytes: defaults::max_request_bytes(),
            sends_per_minute: defaults::sends_per_minute(),
        }
    }
}

impl LimitsConfig {
    /// Checks that both rates let something through.
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath) -> LimitsConfig {
        for (field, value) in [("rate_per_minute", self.rate_per_minute), ("sends_per_minute", self.sends_per_minute)] {
            if value == 0 {
                r.problem(&at.join(field), ProblemCode::OutOfRange, "must be at least 1");
            }
        }
        self
    }
}

fn default_rate() -> u32 {
    600
}
