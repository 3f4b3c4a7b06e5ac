//! Who revoked something and why, and what a revocation record says: the values revocations
//! pass to the audit ([`Broker::audit_revocation`](super::Broker)). Types only, so that any
//! component that revokes (leases, agents, shares) can name them without importing the audit.

use serde_json::Value;

/// Who revoked something (an agent, a lease, a share) and why, for the revocation's audit record.
#[derive(Debug, Clone, Copy)]
pub struct Revoker<'a> {
    /// The revoking agent's name, or `operator` (the CLI), `reaper` (expiry), `broker` (a
    /// check that failed).
    pub by: &'a str,
    /// The revoking agent's parent chain, nearest first (empty for the others).
    pub chain: &'a [String],
    /// Why, in a few words (never anything secret).
    pub reason: &'a str,
}

impl Revoker<'static> {
    /// The operator, through the CLI.
    pub const OPERATOR: Revoker<'static> = Revoker { by: "operator", chain: &[], reason: "revoked by the operator" };
    /// The reaper, at a lease's expiry.
    pub const REAPER: Revoker<'static> = Revoker { by: "reaper", chain: &[], reason: "expired" };
}

/// What a revocation record says about its outcome.
pub(crate) struct Revoked<'a> {
    /// `agent_revoked`, `lease_revoked` or `share_revoked`.
    pub event: &'a str,
    /// The lease's handle, for a lease.
    pub handle: Option<&'a str>,
    /// What was revoked (ids and names; `reason` and `revoked_by` are added).
    pub target: Value,
    /// The error code when the revocation is not complete yet (it is retried).
    pub code: Option<&'a str>,
}
