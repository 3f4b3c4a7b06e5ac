//! Leases: issuing, resolving, revoking, the reaper and start-up reconciliation.
//!
//! A lease is a handle of its own (`BASE__L7F3A2C`) bound to one agent, a scope, a table list
//! and an expiry (T15). It is built at each use from its stored record and its base handle's
//! configuration, so a revoked or expired lease stops working on every replica at once. On a
//! dynamic handle the lease is a real database role; its password is sealed in the vault under
//! the lease handle's name and is never returned. On an aws handle the lease is an STS session
//! (`AssumeRole` with a session policy naming only the lease's scope and buckets); its
//! temporary credentials are sealed the same way, forgotten at revocation, and expire at STS on
//! their own: they cannot be revoked early, so the lease's duration bounds the exposure.
//!
//! `request.rs` checks a `request_lease` call against the handle's lease policy, `provider.rs`
//! creates and drops what a lease stands for (a database role, an OpenBao credential, an STS
//! session), `reaper.rs` revokes leases at expiry and reconciles at start-up.

mod provider;
mod reaper;
pub(crate) mod request;

pub use request::{RawAwsLeaseArgs, RawLeaseArgs};

use crate::broker::revocation::Revoked;
use crate::broker::{Broker, BrokerError, Caller, Revoker};
use airlock_core::config::{Constraints, Handle, LeasePolicy, Scope, SecretRef};
use airlock_core::{CallError, ErrorCode, HandleName, Tool};
use airlock_exec_sql::lease as dynamic;
use airlock_store::leases::{stamp, status, Lease};
use rand::RngCore;
use serde_json::{json, Value};
use std::path::Path;

/// Reads (or creates) the installation id in the data directory.
pub(crate) fn installation_id(dir: &Path) -> Result<String, BrokerError> {
    let path = dir.join("installation.id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Ok(s);
        }
    }
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    match airlock_store::write_private_file(&path, id.as_bytes()) {
        Ok(()) => Ok(id),
        // Another process created it first: use theirs.
        Err(_) => {
            let s = std::fs::read_to_string(&path)
                .map_err(|e| airlock_store::StoreError::Io { path: path.display().to_string(), source: e })?;
            Ok(s.trim().to_owned())
        }
    }
}

fn scope_str(s: Scope) -> &'static str {
    match s {
        Scope::ReadOnly => "read_only",
        Scope::ReadWrite => "read_write",
    }
}

fn internal(e: impl std::fmt::Display) -> CallError {
    CallError::new(ErrorCode::Internal).detail(e.to_string())
}

/// The broker's lease state: the installation id in role names, who to tell when an agent's
/// tools change, and the reaper's wake-up.
#[derive(Debug)]
pub(crate) struct LeaseState {
    /// This installation's id, part of every dynamic role's name, so that reconciliation never
    /// touches another installation's roles on a shared database server.
    installation: String,
    /// Agent ids whose tool list changed (a lease issued or revoked).
    pub(crate) tool_changes: tokio::sync::broadcast::Sender<String>,
    /// Wakes the reaper early (a lease issued with a short TTL, an agent revoked).
    reaper_wake: tokio::sync::Notify,
    /// Admin connections kept between lease operations.
    pub(crate) admin_sessions: airlock_exec_sql::lease::AdminSessions,
}

impl LeaseState {
    pub(crate) fn new(installation: String) -> LeaseState {
        LeaseState {
            installation,
            tool_changes: tokio::sync::broadcast::channel(64).0,
            reaper_wake: tokio::sync::Notify::new(),
            admin_sessions: Default::default(),
        }
    }
}

impl Broker {
    /// This installation's id (part of dynamic role names).
    pub fn installation(&self) -> &str {
        &self.leases.installation
    }

    fn notify_tools(&self, agent_id: &str) {
        let _ = self.leases.tool_changes.send(agent_id.to_owned());
    }

    /// The handle a lease record stands for, built from its base handle's configuration.
    fn lease_handle(&self, l: &Lease) -> Option<Handle> {
        let cfg = self.cfg();
        let base = cfg.handles.get(&HandleName::parse(&l.base).ok()?)?;
        if let Some(aws) = base.aws() {
            // Only the lease's scope, only its buckets, only its own temporary credentials.
            let mut aws = aws.clone();
            aws.scopes = vec![if l.scope == "read_write" { Scope::ReadWrite } else { Scope::ReadOnly }];
            aws.buckets = l.buckets.clone()?;
            return Some(Handle {
                name: HandleName::parse(&l.handle).ok()?,
                kind: base.kind,
                secret: SecretRef::Local(l.handle.clone()),
                description: format!("lease of {} until {}", base.name, l.expires_at),
                constraints: Constraints::Aws(aws),
            });
        }
        let mut db = base.database()?.clone();
        db.scope = if l.scope == "read_write" { Scope::ReadWrite } else { Scope::ReadOnly };
        if l.tables.is_some() {
            db.tables = l.tables.clone();
        }
        let secret = if l.dynamic {
            if let Some(role) = &l.role_name {
                if db.url.is_some() {
                    db.url = dynamic::lease_url(&db, role);
                }
            }
            SecretRef::Local(l.handle.clone())
        } else {
            base.secret.clone()
        };
        Some(Handle {
            name: HandleName::parse(&l.handle).ok()?,
            kind: base.kind,
            secret,
            description: format!("lease of {} until {}", base.name, l.expires_at),
            constraints: Constraints::Database(db),
        })
    }

    /// The lease behind `name` when `caller` owns it and it is live; otherwise None (the caller
    /// answers `handle-unavailable`, whatever the reason).
    pub(crate) async fn lease_for(&self, caller: &Caller, name: &HandleName) -> Option<(Lease, Handle)> {
        let l = self.store.lease_by_handle(name.as_str()).await.ok()??;
        let now = stamp(chrono::Utc::now());
        if l.agent_id != caller.agent.id || l.status != status::ACTIVE || l.expires_at.as_str() <= now.as_str() {
            return None;
        }
        let h = self.lease_handle(&l)?;
        Some((l, h))
    }

    /// The handles of `agent_id`'s live leases.
    pub(crate) async fn live_lease_handles(&self, agent_id: &str) -> Vec<Handle> {
        let now = stamp(chrono::Utc::now());
        match self.store.leases_in(status::ACTIVE).await {
            Ok(ls) => ls
                .iter()
                .filter(|l| l.agent_id == agent_id && l.expires_at.as_str() > now.as_str())
                .filter_map(|l| self.lease_handle(l))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "leases unavailable for the tool list");
                Vec::new()
            }
        }
    }

    /// Leases `caller` may see and revoke: its own.
    pub async fn leases_of(&self, caller: &Caller) -> Result<Vec<Lease>, CallError> {
        Ok(self.store.list_leases().await.map_err(internal)?.into_iter().filter(|l| l.agent_id == caller.agent.id).collect())
    }

    /// `DELETE /v1/leases/{id}`: the owner revokes its lease. Another agent's lease is
    /// `not-found`, as if it did not exist.
    pub async fn revoke_own_lease(&self, caller: &Caller, id: &str) -> Result<Value, CallError> {
        let l = self.store.lease(id).await.map_err(internal)?;
        let l = match l {
            Some(l) if l.agent_id == caller.agent.id => l,
            _ => return Err(CallError::new(ErrorCode::NotFound)),
        };
        let who = Revoker { by: &caller.agent.name, chain: &caller.parents, reason: "revoked by its agent" };
        let revoked = self.revoke_lease_by(&l.id, &who).await;
        let after = self.store.lease(id).await.map_err(internal)?.map(|l| l.status).unwrap_or_default();
        match revoked {
            Ok(_) | Err(CallError { code: ErrorCode::UpstreamUnavailable, .. }) => Ok(json!({"lease_id": id, "status": after})),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/tasks`: opens a task for `caller`.
    pub async fn open_task(&self, caller: &Caller) -> Result<Value, CallError> {
        let t = self.store.create_task(&caller.agent.id).await.map_err(internal)?;
        Ok(json!({"task_id": t.id, "created_at": t.created_at}))
    }

    /// `POST /v1/tasks/{id}/close`: closes the task and revokes its leases now.
    pub async fn close_task(&self, caller: &Caller, id: &str) -> Result<Value, CallError> {
        let ids = match self.store.close_task(id, &caller.agent.id).await {
            Ok(ids) => ids,
            Err(airlock_store::StoreError::NotFound(_)) => return Err(CallError::new(ErrorCode::NotFound)),
            Err(airlock_store::StoreError::Conflict(_)) => return Err(CallError::with_message(ErrorCode::Conflict, "the task is closed")),
            Err(e) => return Err(internal(e)),
        };
        let mut revoked = 0;
        let mut pending = 0;
        let who = Revoker { by: &caller.agent.name, chain: &caller.parents, reason: "its task was closed" };
        for l in &ids {
            match self.revoke_lease_by(l, &who).await {
                Ok(_) => revoked += 1,
                Err(_) => pending += 1,
            }
        }
        self.leases.reaper_wake.notify_one();
        Ok(json!({"task_id": id, "revoked": revoked, "revoke_pending": pending}))
    }

    /// Revokes an agent and its descendants (by name or id) and then their leases, as the
    /// operator; see [`Broker::revoke_agent_by`].
    pub async fn revoke_agent(&self, name_or_id: &str) -> Result<u64, airlock_store::StoreError> {
        self.revoke_agent_by(name_or_id, &Revoker::OPERATOR).await
    }

    /// Revokes an agent and its descendants (by name or id) and then their leases. The agents'
    /// revocation and each lease's are audited with who revoked and why.
    pub async fn revoke_agent_by(&self, name_or_id: &str, who: &Revoker<'_>) -> Result<u64, airlock_store::StoreError> {
        // The tree as it is before the revocation, for the audit and the leases.
        let agents = self.store.list_agents().await?;
        let root = agents.iter().find(|a| a.revoked_at.is_none() && (a.name == name_or_id || a.id == name_or_id));
        let mut tree: Vec<&airlock_store::agents::Agent> = root.into_iter().collect();
        let mut i = 0;
        while i < tree.len() && tree.len() <= agents.len() {
            let id = tree[i].id.clone();
            tree.extend(agents.iter().filter(|a| a.parent.as_deref() == Some(id.as_str()) && a.revoked_at.is_none()));
            i += 1;
        }
        let n = self.store.revoke_agent(name_or_id).await?;
        // Not one more call on a kept identity (it would also be dropped at the next check of
        // the identity generation).
        self.identities.forget_all();
        let names: Vec<&str> = tree.iter().map(|a| a.name.as_str()).collect();
        let shown: String = name_or_id.chars().take(64).collect();
        let target = json!({"agent": shown, "agents": names, "revoked": n});
        self.audit_revocation(who, Revoked { event: "agent_revoked", handle: None, target, code: None }).await;
        // Their live leases now, each with the reason; the reaper takes the rest.
        let why = format!("agent {} was revoked ({})", tree.first().map(|a| a.name.as_str()).unwrap_or("?"), who.reason);
        let by_lease = Revoker { reason: &why, ..*who };
        let ids: std::collections::HashSet<&str> = tree.iter().map(|a| a.id.as_str()).collect();
        for l in self.store.leases_in(status::ACTIVE).await? {
            if ids.contains(l.agent_id.as_str()) {
                let _ = self.revoke_lease_by(&l.id, &by_lease).await;
            }
        }
        self.reap_once().await;
        self.leases.reaper_wake.notify_one();
        Ok(n)
    }

    /// Gives an agent a new token; its current one keeps working for `overlap` more. Audited
    /// (`agent_token_rotated`: the agent and the overlap, never a token).
    pub async fn rotate_agent_token(
        &self,
        name_or_id: &str,
        overlap: std::time::Duration,
    ) -> Result<(airlock_store::agents::Agent, airlock_store::agents::NewToken), airlock_store::StoreError> {
        let (agent, token) = self.store.rotate_agent_token(name_or_id, overlap).await?;
        // The old token's kept identity goes now; during the overlap it is checked in the store.
        self.identities.forget_all();
        let target = json!({"agent": agent.name, "agent_id": agent.id, "overlap_seconds": overlap.as_secs()});
        let who = Revoker { by: "operator", chain: &[], reason: "token rotated by the operator" };
        self.audit_revocation(&who, Revoked { event: "agent_token_rotated", handle: None, target, code: None }).await;
        Ok((agent, token))
    }

    /// T27: a lease stands only while the grant that allowed it does. Every use re-checks that
    /// `caller` may still `request_lease` on the lease's base handle under the current grants
    /// and policies; when it may not, the lease is revoked now (its role dropped) and the call
    /// fails with `lease-revoked`.
    ///
    /// A sub-agent's grants are read from the store here, not taken from the identity kept in
    /// memory, so a grant removed by another process ends the lease at its next use.
    pub(crate) async fn recheck_lease(&self, caller: &Caller, lease: &Lease) -> Result<(), CallError> {
        let fresh;
        let caller = match &caller.grants {
            None => caller,
            Some(_) => {
                let grants = self.store.agent_grants(&caller.agent.id).await.map_err(internal)?;
                fresh = Caller { grants: Some(grants), ..caller.clone() };
                &fresh
            }
        };
        let cfg = self.cfg();
        let base = HandleName::parse(&lease.base).ok().and_then(|n| cfg.handles.get(&n));
        if base.is_some_and(|b| self.decide(caller, Tool::RequestLease, b).allowed) {
            return Ok(());
        }
        let who = Revoker { by: "broker", chain: &[], reason: "the grant that allowed the lease was removed" };
        if let Err(e) = self.revoke_lease_by(&lease.id, &who).await {
            tracing::warn!(lease = %lease.id, code = e.code.as_str(), "lease revocation after a lost grant failed; retried");
        }
        self.leases.reaper_wake.notify_one();
        Err(CallError::new(ErrorCode::LeaseRevoked))
    }
}

/// Where the OpenBao lease id of an OpenBao-issued lease credential is sealed in the local vault
/// (not a handle name, so the scrubber skips it: the id is not a credential).
pub fn openbao_lease_key(lease_handle: &str) -> String {
    format!("openbao-lease:{lease_handle}")
}

fn default_policy() -> LeasePolicy {
    LeasePolicy { dynamic: true, max_ttl_seconds: 1, ..LeasePolicy::default() }
}


