//! The configuration in force: what a call reads of it, as one value that a reload
//! ([`super::reload`]) swaps whole.

use airlock_core::config::Config;
use airlock_policy::PolicyEngine;
use std::sync::Arc;

/// What a call reads of the configuration, swapped whole by a reload.
pub(crate) struct Live {
    pub(crate) cfg: Arc<Config>,
    pub(crate) policy: Arc<PolicyEngine>,
    /// The version approvals are bound to ([`super::approval::policy_version`]).
    pub(crate) approval_version: String,
}

impl Live {
    pub(crate) fn new(cfg: Arc<Config>, policy: PolicyEngine) -> Live {
        let approval_version = super::approval::policy_version(policy.version(), &cfg);
        Live { cfg, policy: Arc::new(policy), approval_version }
    }
}
