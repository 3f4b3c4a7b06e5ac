//! Live reload (`SIGHUP`, `airlock reload`): a new configuration and the policies compiled from
//! it replace the running ones at once, or nothing changes.
//!
//! A reload may change handles (with their lease, approval and result rules), agents, policies,
//! limits and the limits of requests. The sections read once at start ([`RESTART_ONLY`]) may not
//! change: a reload that changes one is refused whole, naming them.
//!
//! The order is what makes it safe:
//! 1. everything is checked first: the file (every problem at once, by the caller), every policy,
//!    the sections that need a restart; any problem refuses the reload and changes nothing;
//! 2. the scrubber learns the secrets of the new configuration's handles, kept with the old
//!    one's, before any call can use a new handle;
//! 3. one swap of the configuration, the policies and the approvals' policy version together: a
//!    call takes them once, at its check, for its handle, policy decision and approval rule, so
//!    it never mixes one file's handle with the other's policies;
//! 4. what was kept per handle or per agent is dropped (database pools of changed handles,
//!    connected accounts' tokens, authenticated agents), sessions are told to look again at their
//!    tool list, and the reload is audited (`config_reloaded` or `config_reload_refused`).
//!
//! Approvals are bound to the policy version: a reload that changes what decides calls leaves
//! every pending or granted approval unusable, as a restart with the new file would.

use super::live::Live;
use super::revocation::{Revoked, Revoker};
use super::Broker;
use airlock_core::config::{Config, ConfigError, Handle, SecretRef};
use airlock_core::{HandleName, Secret};
use airlock_policy::PolicyEngine;
use serde_json::json;
use std::sync::Arc;

/// The sections a running broker reads once, at start: changing one needs a restart.
pub const RESTART_ONLY: &[&str] = &["server", "store", "sandbox", "shares", "vaults", "issuers", "audit", "telemetry"];

/// The tool-change broadcast's value for "every session: look again" (agent ids are never empty).
pub const EVERY_AGENT: &str = "";

/// What a reload changed, by name (no value).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    /// The approvals' policy version now in force.
    pub policy_version: String,
    /// Whether the policy version moved (pending and granted approvals no longer apply).
    pub policy_changed: bool,
    /// Handles new in the file.
    pub handles_added: Vec<String>,
    /// Handles gone from the file.
    pub handles_removed: Vec<String>,
    /// Handles whose definition changed (kind, secret reference, constraints or rules).
    pub handles_changed: Vec<String>,
    /// Agents added, removed or changed in the file.
    pub agents_changed: Vec<String>,
}

/// Why a reload was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file does not load: every problem, as [`Config::load`] lists them.
    #[error("the reload is refused, nothing changed: {0}")]
    Config(#[from] ConfigError),
    /// The file loads but cannot be put in force: every problem found.
    #[error("the reload is refused, nothing changed:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Refused {
        /// One line each: a policy that does not compile, a section that needs a restart.
        problems: Vec<String>,
        /// The sections of [`RESTART_ONLY`] that the file changes.
        restart_only: Vec<&'static str>,
    },
}

impl ReloadError {
    /// The stable code of the refusal, as audited.
    pub fn code(&self) -> &'static str {
        match self {
            ReloadError::Config(_) => "config-invalid",
            ReloadError::Refused { .. } => "reload-refused",
        }
    }

    /// How many problems it lists.
    pub fn problem_count(&self) -> usize {
        match self {
            ReloadError::Config(e) => e.problems().len().max(1),
            ReloadError::Refused { problems, .. } => problems.len(),
        }
    }
}

/// The sections of [`RESTART_ONLY`] that differ between `old` and `new`.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let same = |s: &str| match s {
        "server" => old.server == new.server,
        "store" => old.store == new.store,
        "sandbox" => old.sandbox == new.sandbox,
        "shares" => old.shares == new.shares,
        "vaults" => old.vaults == new.vaults,
        "issuers" => old.issuers == new.issuers,
        "audit" => old.audit == new.audit,
        "telemetry" => old.telemetry == new.telemetry,
        _ => true,
    };
    RESTART_ONLY.iter().copied().filter(|s| !same(s)).collect()
}

/// Names in `old` or `new` whose entries differ, split into added, removed and changed.
fn diff<K: Ord + ToString, V: PartialEq>(old: &std::collections::BTreeMap<K, V>, new: &std::collections::BTreeMap<K, V>) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new.keys().filter(|k| !old.contains_key(k)).map(ToString::to_string).collect();
    let removed = old.keys().filter(|k| !new.contains_key(k)).map(ToString::to_string).collect();
    let changed = new.iter().filter(|(k, v)| old.get(k).is_some_and(|o| o != *v)).map(|(k, _)| k.to_string()).collect();
    (added, removed, changed)
}

/// Handles whose definition, or one of whose rules, differs between `old` and `new`.
fn changed_handles(old: &Config, new: &Config) -> Reloaded {
    let (handles_added, handles_removed, mut handles_changed) = diff(&old.handles, &new.handles);
    for name in new.handles.keys().filter(|h| old.handles.contains_key(*h)) {
        let rules_moved = old.leases.get(name) != new.leases.get(name)
            || old.approvals.get(name) != new.approvals.get(name)
            || old.results.get(name) != new.results.get(name);
        if rules_moved && !handles_changed.contains(&name.to_string()) {
            handles_changed.push(name.to_string());
        }
    }
    handles_changed.sort();
    let (a, r, c) = diff(&old.agents, &new.agents);
    let mut agents_changed: Vec<String> = a.into_iter().chain(r).chain(c).collect();
    agents_changed.sort();
    Reloaded { handles_added, handles_removed, handles_changed, agents_changed, ..Reloaded::default() }
}

impl Broker {
    /// Puts `new` in force in place of the running configuration, or changes nothing and says
    /// why (module docs). `by` names who asked, for the audit (`sighup`, an operator).
    pub async fn reload(&self, new: Result<Config, ConfigError>, by: &str) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let r = self.reload_locked(new).await;
        self.audit_reload(by, &r).await;
        r
    }

    async fn reload_locked(&self, new: Result<Config, ConfigError>) -> Result<Reloaded, ReloadError> {
        let new = new?;
        let old = self.live();
        let restart_only = restart_only_changes(&old.cfg, &new);
        let mut problems: Vec<String> =
            restart_only.iter().map(|s| format!("[{s}] changed: it is read once at start; restart the broker to change it")).collect();
        let policy = match PolicyEngine::from_config(&new) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("policy: {e}"));
                None
            }
        };
        let Some(policy) = policy.filter(|_| problems.is_empty()) else {
            return Err(ReloadError::Refused { problems, restart_only });
        };
        let mut what = changed_handles(&old.cfg, &new);
        let live = Live::new(Arc::new(new), policy);
        what.policy_changed = live.approval_version != old.approval_version;
        what.policy_version = live.approval_version.clone();
        // The scrubber first: the secrets of handles the new file brings (kept with the old
        // ones' until the next full build) are covered before a call can use them.
        for (name, secret) in self.secrets_of_new_handles(&old.cfg, &live.cfg).await {
            let scrubber = |e: super::BrokerError| ReloadError::Refused { problems: vec![format!("scrubber: {e}")], restart_only: vec![] };
            self.cover(name.as_str(), name.clone(), secret).await.map_err(scrubber)?;
        }
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        for h in what.handles_changed.iter().chain(&what.handles_removed) {
            if let Ok(name) = HandleName::parse(h) {
                self.executors.sql.forget(&name).await;
                self.oauth.forget(&name);
            }
        }
        self.identities.forget_all();
        let _ = self.leases.tool_changes.send(EVERY_AGENT.to_owned());
        // Calls waiting for an approval look again: theirs may no longer apply.
        self.approvals.wake.notify_waiters();
        Ok(what)
    }

    /// The remote secrets of handles that are new in `new`, or whose reference changed.
    async fn secrets_of_new_handles(&self, old: &Config, new: &Config) -> Vec<(HandleName, Secret)> {
        let fresh = |h: &&Handle| !matches!(h.secret, SecretRef::Local(_)) && old.handles.get(&h.name).is_none_or(|o| o.secret != h.secret);
        let mut out = Vec::new();
        for h in new.handles.values().filter(fresh) {
            match self.vault().resolve(&h.secret).await {
                Ok(s) => out.push((h.name.clone(), s)),
                // As at start: the call that resolves it teaches the scrubber first.
                Err(e) => tracing::warn!(handle = %h.name, error = %e, "secret unavailable; not in the scrubber yet"),
            }
        }
        out
    }

    async fn audit_reload(&self, by: &str, r: &Result<Reloaded, ReloadError>) {
        let (target, code) = match r {
            Ok(w) => (serde_json::to_value(w).unwrap_or_default(), None),
            Err(e) => {
                let sections = match e {
                    ReloadError::Refused { restart_only, .. } => restart_only.clone(),
                    ReloadError::Config(_) => vec![],
                };
                (json!({"problems": e.problem_count(), "restart_only": sections}), Some(e.code()))
            }
        };
        let event = if r.is_ok() { "config_reloaded" } else { "config_reload_refused" };
        let who = Revoker { by, chain: &[], reason: "" };
        let mut rec = super::audit::operator_record(&who, Revoked { event, handle: None, target, code });
        if let Some(m) = rec.arguments.as_object_mut() {
            m.remove("reason");
            m.remove("revoked_by");
        }
        self.scrubber().scrub_json(&mut rec.arguments);
        if let Err(e) = self.audit.append(rec).await {
            tracing::error!(event, error = %e, "reload not audited");
        }
    }
}
