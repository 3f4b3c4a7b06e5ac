//! `[limits]`: per-agent call and e-mail rates, the largest request, and the sub-agent limits
//! (live children, depth, creations per minute; T27).

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
    /// Live sub-agents one agent may have at a time (its direct children); `[agents.NAME]
    /// max_children` overrides it for the agents of that root. 0: no sub-agents.
    #[serde(default = "default_max_children")]
    pub max_children: u32,
    /// Deepest chain of sub-agents below an agent of the configuration (1: children, no
    /// grandchildren; 0: no sub-agents), at most [`MAX_CHILD_DEPTH`].
    #[serde(default = "default_max_child_depth")]
    pub max_child_depth: u32,
    /// Sub-agents an agent and its descendants may create per minute, counted against every
    /// agent of the chain.
    #[serde(default = "default_children_per_minute")]
    pub children_per_minute: u32,
}

/// The deepest chain of sub-agents any configuration may allow.
pub const MAX_CHILD_DEPTH: u32 = 8;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_minute: default_rate(),
            max_request_bytes: defaults::max_request_bytes(),
            sends_per_minute: defaults::sends_per_minute(),
            max_children: default_max_children(),
            max_child_depth: default_max_child_depth(),
            children_per_minute: default_children_per_minute(),
        }
    }
}

impl LimitsConfig {
    /// Checks that every rate lets something through and that the depth is within
    /// [`MAX_CHILD_DEPTH`].
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath) -> LimitsConfig {
        for (field, value) in [
            ("rate_per_minute", self.rate_per_minute),
            ("sends_per_minute", self.sends_per_minute),
            ("children_per_minute", self.children_per_minute),
        ] {
            if value == 0 {
                r.problem(&at.join(field), ProblemCode::OutOfRange, "must be at least 1");
            }
        }
        if self.max_child_depth > MAX_CHILD_DEPTH {
            r.problem(&at.join("max_child_depth"), ProblemCode::OutOfRange, format!("must be at most {MAX_CHILD_DEPTH}"));
        }
        self
    }
}

fn default_rate() -> u32 {
    600
}

fn default_max_children() -> u32 {
    16
}

fn default_max_child_depth() -> u32 {
    4
}

fn default_children_per_minute() -> u32 {
    10
}
