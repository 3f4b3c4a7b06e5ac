//! `[handles.X.approval]`: which calls on a handle wait for a person's approval.

use super::problem::ProblemCode;
use super::smtp::plausible_address;
use super::source::{FieldPath, Report};
use crate::kind::HandleKind;
use serde::Deserialize;

/// `[handles.X.approval]`: which calls on the handle wait for a person's approval, and for how
/// long an approval stays valid. A call matching any condition is held (`approval-required`)
/// until an approver approves that exact call (README, "Approvals").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Every call on the handle.
    #[serde(default)]
    pub always: bool,
    /// Calls that change data: a `query_db` statement that is not read-only (INSERT, UPDATE,
    /// DELETE, MERGE), an `http_request` whose method is not GET, HEAD or OPTIONS. Database and
    /// http handles only.
    #[serde(default)]
    pub writes: bool,
    /// `send_email` to any recipient (to or cc) outside this list: exact addresses or
    /// `@domain`. Smtp handles only.
    #[serde(default)]
    pub recipients_outside: Option<Vec<String>>,
    /// `request_lease` asking for more than this many seconds. Leasable database handles only.
    #[serde(default)]
    pub lease_ttl_over_seconds: Option<u64>,
    /// How long a request, and then an approval, stays valid (default 900 s; 2 s to 1 day).
    #[serde(default = "default_approval_expiry")]
    pub expires_in_seconds: u64,
    /// Hold the call up to this many seconds for the decision instead of answering
    /// `approval-required` at once (default 0; at most 300 and at most the expiry).
    #[serde(default)]
    pub wait_seconds: u64,
    /// POST a notice (approval id, page link, agent, tool, handle, expiry; never the arguments)
    /// to this http(s) URL when a request is made.
    #[serde(default)]
    pub webhook: Option<String>,
}

impl ApprovalRule {
    /// Whether `addr` is outside `recipients_outside` (case-insensitive; `@domain` entries
    /// match the whole domain).
    pub fn recipient_outside(&self, addr: &str) -> bool {
        let Some(list) = &self.recipients_outside else { return false };
        let addr = addr.to_ascii_lowercase();
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        !list.iter().any(|a| match a.strip_prefix('@') {
            Some(d) => d.eq_ignore_ascii_case(domain),
            None => a.eq_ignore_ascii_case(&addr),
        })
    }

    /// Checks the rule against the handle's kind and whether it has a lease policy.
    pub(super) fn check(&self, r: &mut Report<'_, '_>, at: &FieldPath, kind: HandleKind, leasable: bool) {
        if !self.always && !self.writes && self.recipients_outside.is_none() && self.lease_ttl_over_seconds.is_none() {
            r.problem(
                at,
                ProblemCode::MissingCondition,
                "name at least one condition: always, writes, recipients_outside or lease_ttl_over_seconds",
            );
        }
        if self.writes && !(kind.is_database() || kind == HandleKind::Http) {
            r.problem(&at.join("writes"), ProblemCode::NotApplicable, "applies to database and http handles only");
        }
        if let Some(list) = &self.recipients_outside {
            let at = at.join("recipients_outside");
            if kind != HandleKind::Smtp {
                r.problem(&at, ProblemCode::NotApplicable, "applies to smtp handles only");
            }
            let bad = list.iter().filter(|a| match a.strip_prefix('@') {
                Some(d) => d.is_empty() || d.contains('@') || d.chars().any(char::is_whitespace),
                None => !plausible_address(a),
            });
            for a in bad {
                r.problem(&at, ProblemCode::BadAddress, format!("'{a}' is neither an address nor @domain"));
            }
        }
        if self.lease_ttl_over_seconds.is_some() && !leasable {
            r.problem(&at.join("lease_ttl_over_seconds"), ProblemCode::NotApplicable, "the handle has no [lease] policy");
        }
        if !(2..=86_400).contains(&self.expires_in_seconds) {
            r.problem(&at.join("expires_in_seconds"), ProblemCode::OutOfRange, "is 2 to 86400");
        }
        if self.wait_seconds > 300 || self.wait_seconds > self.expires_in_seconds {
            r.problem(&at.join("wait_seconds"), ProblemCode::OutOfRange, "is at most 300 and at most expires_in_seconds");
        }
        if let Some(w) = &self.webhook {
            match url::Url::parse(w) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => r.problem(&at.join("webhook"), ProblemCode::BadUrl, "must be an http or https URL"),
            }
        }
    }
}

fn default_approval_expiry() -> u64 {
    900
}
