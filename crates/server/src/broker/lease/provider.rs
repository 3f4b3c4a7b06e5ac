//! What a lease stands for, created and dropped: a real database role (dynamic leases), an
//! OpenBao database credential, or an STS session; and revocation, which drops it.

use crate::broker::revocation::{Revoked, Revoker};
use crate::broker::{Broker, Caller};
use super::reaper::backoff_secs;
use super::request::LeaseRequest;
use super::*;
use airlock_core::config::{Handle, LeaseProvider, LeasePolicy, SecretRef};
use airlock_core::Secret;
use airlock_core::{CallError, ErrorCode, HandleName};
use airlock_exec_sql::lease as dynamic;
use airlock_store::leases::{stamp, status, Lease, NewLease};
use rand::RngCore;
use serde_json::{json, Value};

impl Broker {
    /// Issues a lease: the record is committed as `pending`, the role (if any) is created, its
    /// password sealed in the vault, and only then is the lease `active`. Any failure on the way
    /// drops what was created.
    pub(crate) async fn issue_lease(&self, caller: &Caller, base: &Handle, req: &LeaseRequest) -> Result<Value, CallError> {
        let cfg = self.cfg();
        let policy = cfg.leases.get(&base.name);
        if policy.is_none() && base.aws().is_none() {
            return Err(CallError::new(ErrorCode::LeaseNotAllowed));
        }
        let dynamic = policy.is_some_and(|p| p.dynamic);
        if let Some(t) = &req.task_id {
            match self.store.task(t).await.map_err(internal)? {
                Some(task) if task.agent_id == caller.agent.id && task.closed_at.is_none() => {}
                Some(task) if task.agent_id == caller.agent.id => return Err(CallError::with_message(ErrorCode::Conflict, "the task is closed")),
                _ => return Err(CallError::with_message(ErrorCode::NotFound, "no such task")),
            }
        }
        if let Some(policy) = policy.filter(|p| p.provider == LeaseProvider::Openbao) {
            return self.issue_openbao_lease(caller, base, policy, req).await;
        }
        let expires = chrono::Utc::now() + chrono::Duration::seconds(req.ttl as i64);
        let expires_at = stamp(expires);
        let id = uuid::Uuid::now_v7().to_string();
        // An aws lease's STS session is named after the agent and the lease (CloudTrail).
        let session = base.aws().map(|_| airlock_exec_aws::session_name(&caller.agent.name, &id));
        let mut attempt = 0;
        let (name, suffix) = loop {
            let suffix = lease_suffix();
            let name = dynamic::lease_handle_name(&base.name, &suffix).ok_or_else(|| internal("lease handle name"))?;
            let role = if dynamic { Some(dynamic::role_name(&self.leases.installation, &suffix)) } else { session.clone() };
            let rec = NewLease { dynamic, role_name: role.as_deref(), ..req.record(&id, name.as_str(), base, &caller.agent.id, &expires_at) };
            match self.store.insert_lease(&rec).await {
                Ok(()) => break (name, suffix),
                Err(airlock_store::StoreError::Conflict(_)) if attempt < 5 => attempt += 1,
                Err(e) => return Err(internal(e)),
            }
        };
        let fail = || async {
            let _ = self.store.transition_lease(&id, &[status::PENDING], status::FAILED).await;
        };
        if let (Some(aws), Some(session), Some(buckets)) = (base.aws(), &session, &req.buckets) {
            let key = match self.resolve(base).await {
                Ok(k) => k,
                Err(e) => {
                    fail().await;
                    return Err(e);
                }
            };
            let partition = aws.role_arn.split(':').nth(1).unwrap_or("aws");
            let doc = airlock_exec_aws::session_policy(partition, req.scope, buckets);
            let temp = match self.executors.aws.assume_role(aws, &key, session, &doc, req.ttl).await {
                Ok(t) => t,
                Err(e) => {
                    fail().await;
                    return Err(e.detail(format!("lease of {}: AssumeRole failed", base.name)));
                }
            };
            let saved = match self.secrets.vault.put(name.as_str(), &temp).await {
                Ok(_) => self.store.transition_lease(&id, &[status::PENDING], status::ACTIVE).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if !matches!(saved, Ok(true)) {
                // The session cannot be revoked at STS; the broker forgets it and it expires.
                let _ = self.store.remove_secret(name.as_str()).await;
                fail().await;
                return Err(internal(format!("lease {id} not saved: {saved:?}")));
            }
        } else if let (true, Some(policy)) = (dynamic, policy) {
            let role = dynamic::role_name(&self.leases.installation, &suffix);
            let admin = match self.resolve(base).await {
                Ok(a) => a,
                Err(e) => {
                    fail().await;
                    return Err(e);
                }
            };
            let spec = dynamic::RoleSpec { name: &role, scope: req.scope, tables: req.tables.as_deref(), expires_at: expires };
            let secret = match dynamic::create_role(&self.leases.admin_sessions, base, policy, &admin, &spec).await {
                Ok(s) => s,
                Err(e) => {
                    fail().await;
                    return Err(CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("lease role for {}: {e}", base.name)));
                }
            };
            let saved = match self.secrets.vault.put(name.as_str(), &secret).await {
                Ok(_) => self.store.transition_lease(&id, &[status::PENDING], status::ACTIVE).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if !matches!(saved, Ok(true)) {
                // Roll back: the role must not outlive a lease that was never recorded as active.
                let _ = dynamic::drop_role(&self.leases.admin_sessions, base, policy, &admin, &role).await;
                let _ = self.store.remove_secret(name.as_str()).await;
                fail().await;
                return Err(internal(format!("lease {id} not saved: {saved:?}")));
            }
        } else if !self.store.transition_lease(&id, &[status::PENDING], status::ACTIVE).await.map_err(internal)? {
            return Err(internal(format!("lease {id} was revoked while being issued")));
        }
        self.notify_tools(&caller.agent.id);
        self.leases.reaper_wake.notify_one();
        let mut out = json!({
            "lease_id": id,
            "lease_handle": name.as_str(),
            "expires_at": expires_at,
            "scope": scope_str(req.scope),
            "tables": req.tables,
        });
        if let Some(b) = &req.buckets {
            out["buckets"] = json!(b);
            out["session_name"] = json!(session);
        }
        Ok(out)
    }

    /// A lease whose credential comes from OpenBao's database secrets engine: the credential is
    /// issued first (OpenBao's own lease bounds it if airlock crashes), then the lease is recorded
    /// with OpenBao's user name as its role, the password sealed under the lease handle and the
    /// OpenBao lease id under [`openbao_lease_key`]. Any failure revokes the OpenBao lease.
    ///
    /// OpenBao's role TTL governs the credential (the engine takes no TTL per request): the
    /// airlock lease ends at the earlier of the requested TTL and OpenBao's lease duration.
    async fn issue_openbao_lease(&self, caller: &Caller, base: &Handle, policy: &LeasePolicy, req: &LeaseRequest) -> Result<Value, CallError> {
        let unavailable = |m: String| CallError::new(ErrorCode::SecretUnavailable).detail(m);
        let remote = self.secrets.vault.remote(policy.vault.as_deref().unwrap_or_default()).map_err(|e| unavailable(e.to_string()))?.clone();
        let mount = policy.mount.as_deref().unwrap_or("database");
        let role = policy.role.as_deref().unwrap_or_default();
        let cred = remote
            .db_credential(mount, role)
            .await
            .map_err(|e| unavailable(format!("lease of {}: {e}", base.name)))?;
        let ttl = if cred.lease_duration > 0 { req.ttl.min(cred.lease_duration) } else { req.ttl };
        let expires_at = stamp(chrono::Utc::now() + chrono::Duration::seconds(ttl as i64));
        let id = uuid::Uuid::now_v7().to_string();
        let give_back = |why: String| {
            let remote = remote.clone();
            let lease_id = cred.lease_id.clone();
            async move {
                if let Err(e) = remote.revoke_lease(&lease_id).await {
                    tracing::warn!(error = %e, "OpenBao lease of a failed issue not revoked; its TTL ends it");
                }
                internal(why)
            }
        };
        let mut attempt = 0;
        let name = loop {
            let suffix = lease_suffix();
            let Some(name) = dynamic::lease_handle_name(&base.name, &suffix) else {
                return Err(give_back("lease handle name".into()).await);
            };
            let rec = NewLease {
                dynamic: true,
                role_name: Some(&cred.username),
                buckets: None,
                ..req.record(&id, name.as_str(), base, &caller.agent.id, &expires_at)
            };
            match self.store.insert_lease(&rec).await {
                Ok(()) => break name,
                Err(airlock_store::StoreError::Conflict(_)) if attempt < 5 => attempt += 1,
                Err(e) => return Err(give_back(e.to_string()).await),
            }
        };
        let saved = async {
            self.secrets.vault.put(name.as_str(), &cred.password).await.map_err(|e| e.to_string())?;
            self.secrets.vault.put(&openbao_lease_key(name.as_str()), &Secret::from_str_value(&cred.lease_id)).await.map_err(|e| e.to_string())?;
            self.store.transition_lease(&id, &[status::PENDING], status::ACTIVE).await.map_err(|e| e.to_string())
        }
        .await;
        if !matches!(saved, Ok(true)) {
            let _ = self.store.remove_secret(name.as_str()).await;
            let _ = self.store.remove_secret(&openbao_lease_key(name.as_str())).await;
            let _ = self.store.transition_lease(&id, &[status::PENDING], status::FAILED).await;
            return Err(give_back(format!("lease {id} not saved: {saved:?}")).await);
        }
        self.notify_tools(&caller.agent.id);
        self.leases.reaper_wake.notify_one();
        Ok(json!({
            "lease_id": id,
            "lease_handle": name.as_str(),
            "expires_at": expires_at,
            "scope": scope_str(req.scope),
            "tables": req.tables,
        }))
    }

    /// Revokes an OpenBao-issued lease credential through OpenBao, then checks that the
    /// credential no longer logs in.
    async fn revoke_openbao_credential(&self, base: &Handle, policy: &LeasePolicy, handle: &str, user: &str) -> Result<(), CallError> {
        let unavailable = |m: String| CallError::new(ErrorCode::UpstreamUnavailable).detail(m);
        // An id already gone was revoked by an earlier attempt that failed later on.
        let vault = policy.vault.as_deref().unwrap_or_default();
        let key = openbao_lease_key(handle);
        self.secrets
            .vault
            .revoke_sealed_lease(vault, &key)
            .await
            .map_err(|e| unavailable(format!("lease role on {}: {e}", base.name)))?;
        if let Ok(password) = self.secrets.vault.resolve(&SecretRef::Local(handle.to_owned())).await {
            dynamic::check_login_refused(base, user, &password)
                .await
                .map_err(|e| unavailable(format!("OpenBao credential of {}: {e}", base.name)))?;
        }
        match self.store.remove_secret(&key).await {
            Ok(()) | Err(airlock_store::StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// Revokes a lease as the operator (`airlock lease revoke`); see [`Broker::revoke_lease_by`].
    pub async fn revoke_lease(&self, id: &str) -> Result<bool, CallError> {
        self.revoke_lease_by(id, &Revoker::OPERATOR).await
    }

    /// Revokes a lease once: the caller that moves it to `revoking` does the work; any other gets
    /// `Ok(false)`. A failed revocation is recorded as `revoke-pending` and retried by the reaper.
    /// The first attempt is audited with who revoked and why (a retry is not audited again).
    pub async fn revoke_lease_by(&self, id: &str, who: &Revoker<'_>) -> Result<bool, CallError> {
        let l = self.store.lease(id).await.map_err(internal)?.ok_or_else(|| CallError::new(ErrorCode::NotFound))?;
        let result = self.revoke_claimed(&l).await;
        if matches!(result, Ok(true) | Err(_)) && l.status != status::REVOKE_PENDING {
            let code = result.as_ref().err().map(|e| e.code.as_str());
            let target = json!({"lease_id": l.id, "lease_handle": l.handle, "base": l.base, "owner_agent_id": l.agent_id});
            self.audit_revocation(who, Revoked { event: "lease_revoked", handle: Some(&l.handle), target, code }).await;
        }
        result
    }

    /// [`Broker::revoke_lease_by`] without the audit.
    async fn revoke_claimed(&self, l: &Lease) -> Result<bool, CallError> {
        let id = l.id.as_str();
        let claimed = self
            .store
            .transition_lease(id, &[status::ACTIVE, status::REVOKE_PENDING, status::PENDING], status::REVOKING)
            .await
            .map_err(internal)?;
        if !claimed {
            return Ok(false);
        }
        if let Ok(name) = HandleName::parse(&l.handle) {
            self.secrets.vault.forget(&SecretRef::Local(name.to_string()));
            // Close airlock's own connections as the role first, so they are not what is killed.
            self.executors.sql.forget(&name).await;
        }
        if let (true, Some(role)) = (l.dynamic, &l.role_name) {
            if let Err(e) = self.drop_lease_role(&l.base, &l.handle, role).await {
                let backoff = backoff_secs(l.attempts);
                let next = stamp(chrono::Utc::now() + chrono::Duration::seconds(backoff));
                let _ = self.store.lease_revoke_failed(id, &next).await;
                tracing::warn!(lease = %id, error = %self.loggable_detail(e.detail.as_deref().unwrap_or("")), "lease revocation failed; retried");
                return Err(e);
            }
            if let Err(e) = self.store.remove_secret(&l.handle).await {
                if !matches!(e, airlock_store::StoreError::NotFound(_)) {
                    tracing::warn!(lease = %id, error = %e, "lease password not removed from the vault");
                }
            }
        }
        // An aws lease: STS cannot end the session early, so the broker forgets its credentials
        // (and retries until it has); they expire at STS at the lease's end.
        if l.buckets.is_some() {
            match self.store.remove_secret(&l.handle).await {
                Ok(_) | Err(airlock_store::StoreError::NotFound(_)) => {}
                Err(e) => {
                    let next = stamp(chrono::Utc::now() + chrono::Duration::seconds(backoff_secs(l.attempts)));
                    let _ = self.store.lease_revoke_failed(id, &next).await;
                    tracing::warn!(lease = %id, error = %e, "lease credentials not removed from the vault; retried");
                    return Err(internal(e));
                }
            }
        }
        self.store.transition_lease(id, &[status::REVOKING], status::REVOKED).await.map_err(internal)?;
        if let Ok(name) = HandleName::parse(&l.handle) {
            self.uncover(&name).await;
        }
        tracing::info!(lease = %id, handle = %l.handle, "lease revoked");
        self.metrics.event(super::super::metrics::Event::LeaseRevoked);
        self.notify_tools(&l.agent_id);
        Ok(true)
    }

    async fn drop_lease_role(&self, base: &str, handle: &str, role: &str) -> Result<(), CallError> {
        let unavailable = |m: String| CallError::new(ErrorCode::UpstreamUnavailable).detail(m);
        let name = HandleName::parse(base).map_err(|_| unavailable(format!("base handle {base}")))?;
        let cfg = self.cfg();
        let h = cfg.handles.get(&name).ok_or_else(|| unavailable(format!("base handle {base} is not configured")))?;
        let policy = self.cfg().leases.get(&name).cloned().unwrap_or_else(default_policy);
        if policy.provider == LeaseProvider::Openbao {
            return self.revoke_openbao_credential(h, &policy, handle, role).await;
        }
        let admin = self.resolve(h).await?;
        dynamic::drop_role(&self.leases.admin_sessions, h, &policy, &admin, role).await.map_err(|e| unavailable(format!("lease role on {base}: {e}")))
    }
}

/// A lease handle's random suffix: six uppercase hex digits.
fn lease_suffix() -> String {
    let mut b = [0u8; 3];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02X}")).collect()
}
