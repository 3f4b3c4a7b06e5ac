//! `[agents.NAME]`: each agent's grants and rate limits.

use super::limits::MAX_CHILD_DEPTH;
use super::problem::ProblemCode;
use super::source::{get, FieldPath, Report};
use crate::handle::HandleName;
use crate::kind::HandleKind;
use crate::tool::Tool;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::de::DeValue;
use toml::Spanned;

/// One grant: these tools on this handle.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The handle.
    pub handle: HandleName,
    /// The tools; each must apply to the handle's kind.
    pub tools: Vec<Tool>,
}

/// An agent's grants and limits, keyed by agent name in the config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// What the agent is for.
    #[serde(default)]
    pub description: String,
    /// Grants compiled to Cedar `permit` policies.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Calls per minute; overrides `limits.rate_per_minute`.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// E-mails per minute, over all smtp handles; overrides `limits.sends_per_minute`.
    #[serde(default)]
    pub sends_per_minute: Option<u32>,
    /// Live sub-agents each agent of this root's tree may have; overrides `limits.max_children`.
    #[serde(default)]
    pub max_children: Option<u32>,
    /// Deepest chain of sub-agents below this agent; overrides `limits.max_child_depth`.
    #[serde(default)]
    pub max_child_depth: Option<u32>,
    /// Calls per minute of each of this agent's sub-agents (which also count against this
    /// agent's own budget); never more than this agent's own rate, which it is clamped to.
    #[serde(default)]
    pub child_rate_per_minute: Option<u32>,
}

/// `[agents.NAME]` as written, its grants read one by one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    #[serde(default)]
    description: String,
    #[serde(default)]
    grants: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    rate_per_minute: Option<u32>,
    #[serde(default)]
    sends_per_minute: Option<u32>,
    #[serde(default)]
    max_children: Option<u32>,
    #[serde(default)]
    max_child_depth: Option<u32>,
    #[serde(default)]
    child_rate_per_minute: Option<u32>,
}

/// Agent names: `[a-z][a-z0-9_-]{0,63}`.
pub fn valid_agent_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// Checks every `[agents.NAME]` table. `handles` holds every handle the file declares, with
/// its kind when that is known.
pub(super) fn check_all<'s, 't>(
    r: &mut Report<'s, 't>,
    section: Option<&'s Spanned<DeValue<'t>>>,
    handles: &BTreeMap<String, Option<HandleKind>>,
) -> BTreeMap<String, AgentConfig> {
    let at = FieldPath::root().key("agents");
    let mut agents = BTreeMap::new();
    for (name, value) in r.entries(&at, section) {
        let at = at.key(name);
        let before = r.count();
        if !valid_agent_name(name) {
            r.problem(&at, ProblemCode::BadAgentName, "an agent name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter");
        }
        let Some(raw) = r.de_lenient::<RawAgent>(&at, value) else { continue };
        let mut grants = Vec::new();
        if raw.grants.is_some() {
            if let Some(DeValue::Array(list)) = get(value.get_ref(), "grants").map(Spanned::get_ref) {
                for (i, g) in list.iter().enumerate() {
                    let at = at.key("grants").index(i);
                    if let Some(g) = r.de::<Grant>(&at, g) {
                        check_grant(r, &at, &g, handles);
                        grants.push(g);
                    }
                }
            }
        }
        if raw.max_child_depth.is_some_and(|d| d > MAX_CHILD_DEPTH) {
            r.problem(&at.key("max_child_depth"), ProblemCode::OutOfRange, format!("must be at most {MAX_CHILD_DEPTH}"));
        }
        if raw.child_rate_per_minute == Some(0) {
            r.problem(&at.key("child_rate_per_minute"), ProblemCode::OutOfRange, "must be at least 1");
        }
        if r.count() == before {
            let agent = AgentConfig {
                description: raw.description,
                grants,
                rate_per_minute: raw.rate_per_minute,
                sends_per_minute: raw.sends_per_minute,
                max_children: raw.max_children,
                max_child_depth: raw.max_child_depth,
                child_rate_per_minute: raw.child_rate_per_minute,
            };
            agents.insert(name.to_owned(), agent);
        }
    }
    agents
}

/// A grant names a declared handle and at least one tool, each applying to the handle's kind.
fn check_grant(r: &mut Report<'_, '_>, at: &FieldPath, g: &Grant, handles: &BTreeMap<String, Option<HandleKind>>) {
    let Some(kind) = handles.get(g.handle.as_str()) else {
        r.problem(at, ProblemCode::UnknownHandle, format!("unknown handle {}", g.handle));
        return;
    };
    if g.tools.is_empty() {
        r.problem(at, ProblemCode::EmptyList, "a grant names at least one tool");
    }
    for t in &g.tools {
        if *t == Tool::S3Object {
            r.problem(
                at,
                ProblemCode::ToolNotApplicable,
                format!("s3_object is used on leases of an aws handle, never on the handle itself: grant request_lease on {}", g.handle),
            );
        } else if matches!(t, Tool::RequestSecret | Tool::RequestStatus) {
            r.problem(
                at,
                ProblemCode::ToolNotApplicable,
                format!(
                    "{} names no configured handle: allow it with a Cedar policy on Airlock::Action::\"request_secret\" (see README, \"Requests for a secret\")",
                    t.name()
                ),
            );
        } else if let Some(kind) = kind.filter(|k| !t.applies_to(*k)) {
            r.problem(
                at,
                ProblemCode::ToolNotApplicable,
                format!("tool {} does not apply to {} handle {}", t.name(), kind.as_str(), g.handle),
            );
        }
    }
}
