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

use super::{strip_serde_detail, Broker, BrokerError, Caller};
use airlock_core::config::{table_in, Constraints, Handle, HandleKind, LeaseProvider, LeasePolicy, Scope, SecretRef, AWS_MIN_TTL_SECONDS};
use airlock_core::Secret;
use airlock_core::{CallError, ErrorCode, HandleName};
use airlock_exec_sql::lease as dynamic;
use airlock_store::leases::{stamp, status, Lease, NewLease};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest the reaper sleeps between two looks at the store.
const REAPER_MAX_SLEEP: Duration = Duration::from_secs(1);
/// A lease still `pending` this long after its creation was left by a crash mid-issue (an
/// issue takes milliseconds): it is revoked, dropping any role it got.
const STALE_PENDING_SECS: i64 = 60;
/// The longest wait between two attempts at a failed revocation.
const MAX_BACKOFF_SECS: i64 = 60;

/// A database lease's lifetime when the request names none (`airlock lease issue` without
/// `--ttl`), within every handle's `max_ttl_seconds` by default.
fn default_lease_ttl() -> u64 {
    300
}

/// `request_lease` arguments, as the agent sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeaseArgs {
    scope: Scope,
    #[serde(default = "default_lease_ttl")]
    ttl_seconds: u64,
    #[serde(default)]
    tables: Option<Vec<String>>,
    #[serde(default)]
    task_id: Option<String>,
}

impl LeaseRequest {
    /// The TTL asked for, in seconds.
    pub(crate) fn ttl(&self) -> u64 {
        self.ttl
    }
}

/// `request_lease` arguments on an aws handle.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAwsLeaseArgs {
    scope: Scope,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    buckets: Option<Vec<String>>,
    #[serde(default)]
    task_id: Option<String>,
}

/// A checked lease request: every value is within the handle's lease policy, and the tables
/// are in the configuration's spelling.
#[derive(Debug)]
pub(crate) struct LeaseRequest {
    scope: Scope,
    ttl: u64,
    tables: Option<Vec<String>>,
    /// The buckets of an aws lease (sorted, each one of the handle's).
    buckets: Option<Vec<String>>,
    task_id: Option<String>,
}

/// Reads (or creates) the installation id in the data directory.
pub(super) fn installation_id(dir: &Path) -> Result<String, BrokerError> {
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

/// Table names an agent may write when neither the handle nor its lease policy lists tables:
/// plain identifiers (`name` or `schema.name`), lower-cased, so that they can go into a GRANT.
fn identifier(t: &str) -> Option<String> {
    let ok = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty() && b.len() <= 63 && (b[0].is_ascii_alphabetic() || b[0] == b'_') && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    let parts: Vec<&str> = t.split('.').collect();
    (parts.len() <= 2 && parts.iter().all(|p| ok(p))).then(|| t.to_ascii_lowercase())
}

impl Broker {
    /// This installation's id (part of dynamic role names).
    pub fn installation(&self) -> &str {
        &self.installation
    }

    fn notify_tools(&self, agent_id: &str) {
        let _ = self.tool_changes.send(agent_id.to_owned());
    }

    /// Checks a `request_lease` call against the base handle's lease policy. Nothing is created
    /// here; a refusal leaves no trace but its audit record.
    pub(crate) fn validate_lease(&self, caller: &Caller, base: &Handle, args: &Value) -> Result<LeaseRequest, CallError> {
        if base.kind == HandleKind::Aws {
            return self.validate_aws_lease(caller, base, args);
        }
        let a: RawLeaseArgs = serde_json::from_value(args.clone()).map_err(|e| {
            CallError::with_message(ErrorCode::InvalidArguments, format!("invalid arguments: {}", strip_serde_detail(&e)))
        })?;
        let policy = self.cfg.leases.get(&base.name).ok_or_else(|| CallError::new(ErrorCode::LeaseNotAllowed))?;
        let db = base.database().ok_or_else(|| CallError::new(ErrorCode::LeaseNotAllowed))?;
        // The per-agent limit of the agent and of every ancestor: a child never outlives what
        // its parents could lease.
        let max = std::iter::once(caller.agent.name.as_str())
            .chain(caller.parents.iter().map(String::as_str))
            .map(|n| policy.max_ttl_for(n))
            .min()
            .unwrap_or(policy.max_ttl_seconds);
        if a.ttl_seconds == 0 || a.ttl_seconds > max {
            return Err(CallError::with_message(
                ErrorCode::LeaseNotAllowed,
                format!("ttl_seconds must be between 1 and {max} for this handle"),
            ));
        }
        if let Some(exp) = &caller.agent.expires_at {
            let until = chrono::Utc::now() + chrono::Duration::seconds(a.ttl_seconds as i64);
            if stamp(until).as_str() > exp.as_str() {
                return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "the lease would outlive the agent"));
            }
        }
        if !policy.scopes.contains(&a.scope) || (db.scope == Scope::ReadOnly && a.scope == Scope::ReadWrite) {
            return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "this scope is not allowed for leases of this handle"));
        }
        let allowed = policy.tables.as_ref().or(db.tables.as_ref());
        let tables = match (&a.tables, allowed) {
            (None, allowed) => allowed.cloned(),
            (Some(ts), _) if ts.is_empty() => {
                return Err(CallError::with_message(ErrorCode::InvalidArguments, "tables, when given, names at least one table"))
            }
            (Some(ts), Some(allowed)) => {
                let mut out = Vec::new();
                for t in ts {
                    match table_in(t, allowed) {
                        Some(c) => out.push(c),
                        None => return Err(CallError::new(ErrorCode::TableNotAllowed)),
                    }
                }
                Some(out)
            }
            (Some(ts), None) => {
                let mut out = Vec::new();
                for t in ts {
                    out.push(identifier(t).ok_or_else(|| CallError::new(ErrorCode::TableNotAllowed))?);
                }
                Some(out)
            }
        };
        let tables = tables.map(|mut t| {
            t.sort();
            t.dedup();
            t
        });
        Ok(LeaseRequest { scope: a.scope, ttl: a.ttl_seconds, tables, buckets: None, task_id: a.task_id })
    }

    /// [`Broker::validate_lease`] for an aws handle: a duration from 900 seconds (STS's
    /// minimum, the default) to the handle's `max_ttl_seconds`, a scope and buckets the handle
    /// allows. Nothing is asked of STS here.
    fn validate_aws_lease(&self, caller: &Caller, base: &Handle, args: &Value) -> Result<LeaseRequest, CallError> {
        let a: RawAwsLeaseArgs = serde_json::from_value(args.clone()).map_err(|e| {
            CallError::with_message(ErrorCode::InvalidArguments, format!("invalid arguments: {}", strip_serde_detail(&e)))
        })?;
        let aws = base.aws().ok_or_else(|| CallError::new(ErrorCode::LeaseNotAllowed))?;
        let ttl = a.ttl_seconds.unwrap_or(AWS_MIN_TTL_SECONDS);
        if ttl < AWS_MIN_TTL_SECONDS || ttl > aws.max_ttl_seconds {
            return Err(CallError::with_message(
                ErrorCode::LeaseNotAllowed,
                format!("ttl_seconds must be between {AWS_MIN_TTL_SECONDS} (STS's minimum) and {} for this handle", aws.max_ttl_seconds),
            ));
        }
        if let Some(exp) = &caller.agent.expires_at {
            let until = chrono::Utc::now() + chrono::Duration::seconds(ttl as i64);
            if stamp(until).as_str() > exp.as_str() {
                return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "the lease would outlive the agent"));
            }
        }
        if !aws.scopes.contains(&a.scope) {
            return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "this scope is not allowed for leases of this handle"));
        }
        let mut buckets = match a.buckets {
            None => aws.buckets.clone(),
            Some(b) if b.is_empty() => {
                return Err(CallError::with_message(ErrorCode::InvalidArguments, "buckets, when given, names at least one bucket"))
            }
            Some(b) => {
                if let Some(x) = b.iter().find(|x| !aws.buckets.contains(x)) {
                    let shown: String = x.chars().take(63).collect();
                    return Err(CallError::with_message(ErrorCode::BucketNotAllowed, format!("bucket '{}' is not one of this handle's", shown.escape_debug())));
                }
                b
            }
        };
        buckets.sort();
        buckets.dedup();
        Ok(LeaseRequest { scope: a.scope, ttl, tables: None, buckets: Some(buckets), task_id: a.task_id })
    }

    /// Issues a lease: the record is committed as `pending`, the role (if any) is created, its
    /// password sealed in the vault, and only then is the lease `active`. Any failure on the way
    /// drops what was created.
    pub(crate) async fn issue_lease(&self, caller: &Caller, base: &Handle, req: &LeaseRequest) -> Result<Value, CallError> {
        let policy = self.cfg.leases.get(&base.name);
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
            let mut b = [0u8; 3];
            rand::rng().fill_bytes(&mut b);
            let suffix: String = b.iter().map(|x| format!("{x:02X}")).collect();
            let name = dynamic::lease_handle_name(&base.name, &suffix).ok_or_else(|| internal("lease handle name"))?;
            let role = if dynamic { Some(dynamic::role_name(&self.installation, &suffix)) } else { session.clone() };
            let rec = NewLease {
                id: &id,
                handle: name.as_str(),
                base: base.name.as_str(),
                agent_id: &caller.agent.id,
                scope: scope_str(req.scope),
                tables: req.tables.as_deref(),
                dynamic,
                role_name: role.as_deref(),
                buckets: req.buckets.as_deref(),
                task_id: req.task_id.as_deref(),
                expires_at: &expires_at,
            };
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
            let temp = match self.aws.assume_role(aws, &key, session, &doc, req.ttl).await {
                Ok(t) => t,
                Err(e) => {
                    fail().await;
                    return Err(e.detail(format!("lease of {}: AssumeRole failed", base.name)));
                }
            };
            let saved = match self.vault.put(name.as_str(), &temp).await {
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
            let role = dynamic::role_name(&self.installation, &suffix);
            let admin = match self.resolve(base).await {
                Ok(a) => a,
                Err(e) => {
                    fail().await;
                    return Err(e);
                }
            };
            let spec = dynamic::RoleSpec { name: &role, scope: req.scope, tables: req.tables.as_deref(), expires_at: expires };
            let secret = match dynamic::create_role(base, policy, &admin, &spec).await {
                Ok(s) => s,
                Err(e) => {
                    fail().await;
                    return Err(CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("lease role for {}: {e}", base.name)));
                }
            };
            let saved = match self.vault.put(name.as_str(), &secret).await {
                Ok(_) => self.store.transition_lease(&id, &[status::PENDING], status::ACTIVE).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if !matches!(saved, Ok(true)) {
                // Roll back: the role must not outlive a lease that was never recorded as active.
                let _ = dynamic::drop_role(base, policy, &admin, &role).await;
                let _ = self.store.remove_secret(name.as_str()).await;
                fail().await;
                return Err(internal(format!("lease {id} not saved: {saved:?}")));
            }
        } else if !self.store.transition_lease(&id, &[status::PENDING], status::ACTIVE).await.map_err(internal)? {
            return Err(internal(format!("lease {id} was revoked while being issued")));
        }
        self.notify_tools(&caller.agent.id);
        self.reaper_wake.notify_one();
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
        let remote = self.vault.remote(policy.vault.as_deref().unwrap_or_default()).map_err(|e| unavailable(e.to_string()))?.clone();
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
            let mut b = [0u8; 3];
            rand::rng().fill_bytes(&mut b);
            let suffix: String = b.iter().map(|x| format!("{x:02X}")).collect();
            let Some(name) = dynamic::lease_handle_name(&base.name, &suffix) else {
                return Err(give_back("lease handle name".into()).await);
            };
            let rec = NewLease {
                id: &id,
                handle: name.as_str(),
                base: base.name.as_str(),
                agent_id: &caller.agent.id,
                scope: scope_str(req.scope),
                tables: req.tables.as_deref(),
                dynamic: true,
                role_name: Some(&cred.username),
                buckets: None,
                task_id: req.task_id.as_deref(),
                expires_at: &expires_at,
            };
            match self.store.insert_lease(&rec).await {
                Ok(()) => break name,
                Err(airlock_store::StoreError::Conflict(_)) if attempt < 5 => attempt += 1,
                Err(e) => return Err(give_back(e.to_string()).await),
            }
        };
        let saved = async {
            self.vault.put(name.as_str(), &cred.password).await.map_err(|e| e.to_string())?;
            self.vault.put(&openbao_lease_key(name.as_str()), &Secret::from_str_value(&cred.lease_id)).await.map_err(|e| e.to_string())?;
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
        self.reaper_wake.notify_one();
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
        let remote = self.vault.remote(policy.vault.as_deref().unwrap_or_default()).map_err(|e| unavailable(e.to_string()))?;
        let key = openbao_lease_key(handle);
        match self.vault.resolve(&SecretRef::Local(key.clone())).await {
            Ok(lease_id) => {
                let lease_id = lease_id.expose_str().unwrap_or_default().to_owned();
                remote.revoke_lease(&lease_id).await.map_err(|e| unavailable(format!("lease role on {}: {e}", base.name)))?;
            }
            // Already revoked by an earlier attempt that failed later on.
            Err(airlock_vault::VaultError::NotFound(_)) => {}
            Err(e) => return Err(unavailable(e.to_string())),
        }
        if let Ok(password) = self.vault.resolve(&SecretRef::Local(handle.to_owned())).await {
            dynamic::check_login_refused(base, user, &password)
                .await
                .map_err(|e| unavailable(format!("OpenBao credential of {}: {e}", base.name)))?;
        }
        match self.store.remove_secret(&key).await {
            Ok(()) | Err(airlock_store::StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// The handle a lease record stands for, built from its base handle's configuration.
    fn lease_handle(&self, l: &Lease) -> Option<Handle> {
        let base = self.cfg.handles.get(&HandleName::parse(&l.base).ok()?)?;
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

    /// Revokes a lease once: the caller that moves it to `revoking` does the work; any other gets
    /// `Ok(false)`. A failed revocation is recorded as `revoke-pending` and retried by the reaper.
    pub async fn revoke_lease(&self, id: &str) -> Result<bool, CallError> {
        let l = self.store.lease(id).await.map_err(internal)?.ok_or_else(|| CallError::new(ErrorCode::NotFound))?;
        let claimed = self
            .store
            .transition_lease(id, &[status::ACTIVE, status::REVOKE_PENDING, status::PENDING], status::REVOKING)
            .await
            .map_err(internal)?;
        if !claimed {
            return Ok(false);
        }
        if let Ok(name) = HandleName::parse(&l.handle) {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            // Close airlock's own connections as the role first, so they are not what is killed.
            self.sql.forget(&name).await;
        }
        if let (true, Some(role)) = (l.dynamic, &l.role_name) {
            if let Err(e) = self.drop_lease_role(&l.base, &l.handle, role).await {
                let backoff = backoff_secs(l.attempts);
                let next = stamp(chrono::Utc::now() + chrono::Duration::seconds(backoff));
                let _ = self.store.lease_revoke_failed(id, &next).await;
                tracing::warn!(lease = %id, error = %e.detail.as_deref().unwrap_or(""), "lease revocation failed; retried");
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
        tracing::info!(lease = %id, handle = %l.handle, "lease revoked");
        self.notify_tools(&l.agent_id);
        Ok(true)
    }

    async fn drop_lease_role(&self, base: &str, handle: &str, role: &str) -> Result<(), CallError> {
        let unavailable = |m: String| CallError::new(ErrorCode::UpstreamUnavailable).detail(m);
        let name = HandleName::parse(base).map_err(|_| unavailable(format!("base handle {base}")))?;
        let h = self.cfg.handles.get(&name).ok_or_else(|| unavailable(format!("base handle {base} is not configured")))?;
        let policy = self.cfg.leases.get(&name).cloned().unwrap_or_else(default_policy);
        if policy.provider == LeaseProvider::Openbao {
            return self.revoke_openbao_credential(h, &policy, handle, role).await;
        }
        let admin = self.resolve(h).await?;
        dynamic::drop_role(h, &policy, &admin, role).await.map_err(|e| unavailable(format!("lease role on {base}: {e}")))
    }

    /// Revokes every lease that is due (expired, or a failed revocation whose retry time came).
    /// Returns how many were revoked now.
    pub async fn reap_once(&self) -> usize {
        // One reaper at a time over every replica of a shared store; the others skip this
        // round (each revocation is a conditional transition anyway, so none runs twice).
        let _turn = match self.store.reaper_turn().await {
            Ok(Some(t)) => t,
            Ok(None) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "reaper cannot reach the store");
                return 0;
            }
        };
        let now = chrono::Utc::now();
        let stale = stamp(now - chrono::Duration::seconds(STALE_PENDING_SECS));
        let due = match self.store.leases_due(&stamp(now), &stale).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reaper cannot read leases");
                return 0;
            }
        };
        let mut n = 0;
        for l in due {
            if let Ok(true) = self.revoke_lease(&l.id).await {
                n += 1;
            }
        }
        n
    }

    /// Start-up reconciliation: revocations cut short by a crash are queued for a retry, and
    /// roles of this installation's naming that no lease record accounts for are dropped.
    /// Leases left `pending` by a crash are the reaper's (see `STALE_PENDING_SECS`), as a
    /// pending lease may also be one being issued right now.
    pub async fn reconcile_leases(&self) -> Result<(), BrokerError> {
        for l in self.store.leases_in(status::REVOKING).await? {
            self.store.transition_lease(&l.id, &[status::REVOKING], status::REVOKE_PENDING).await?;
        }
        let prefix = dynamic::role_name(&self.installation, "");
        for (name, policy) in &self.cfg.leases {
            if !policy.dynamic {
                continue;
            }
            let Some(h) = self.cfg.handles.get(name) else { continue };
            let Ok(admin) = self.resolve(h).await else {
                tracing::warn!(handle = %name, "admin credential unavailable; roles not reconciled");
                continue;
            };
            match dynamic::list_roles(h, &admin, &prefix).await {
                Ok(roles) => {
                    // Read after listing: a lease record is committed (pending) before its role
                    // is created, so a role being created now is either not listed or kept.
                    let mut keep = std::collections::HashSet::new();
                    for st in [status::PENDING, status::ACTIVE, status::REVOKING, status::REVOKE_PENDING] {
                        for l in self.store.leases_in(st).await? {
                            keep.extend(l.role_name);
                        }
                    }
                    for r in roles.into_iter().filter(|r| !keep.contains(r)) {
                        match dynamic::drop_role(h, policy, &admin, &r).await {
                            Ok(()) => tracing::info!(handle = %name, role = %r, "dropped a role with no live lease"),
                            Err(e) => tracing::warn!(handle = %name, role = %r, error = %e, "orphan role not dropped"),
                        }
                    }
                }
                Err(e) => tracing::warn!(handle = %name, error = %e, "roles not reconciled"),
            }
        }
        Ok(())
    }

    /// Runs reconciliation, then the reaper, until the task is aborted.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let b = self.clone();
        tokio::spawn(async move {
            if let Err(e) = b.reconcile_leases().await {
                tracing::warn!(error = %e, "lease reconciliation failed");
            }
            loop {
                b.reap_once().await;
                let until = match b.store.next_lease_deadline().await {
                    Ok(Some(t)) => Some(
                        chrono::DateTime::parse_from_rfc3339(&t)
                            .ok()
                            .and_then(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok())
                            .unwrap_or(Duration::ZERO),
                    ),
                    _ => None,
                };
                wait_for_next(until, &b.reaper_wake).await;
            }
        })
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
        let revoked = self.revoke_lease(&l.id).await;
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
        for l in &ids {
            match self.revoke_lease(l).await {
                Ok(_) => revoked += 1,
                Err(_) => pending += 1,
            }
        }
        self.reaper_wake.notify_one();
        Ok(json!({"task_id": id, "revoked": revoked, "revoke_pending": pending}))
    }

    /// Revokes an agent and its descendants (by name or id) and then their leases.
    pub async fn revoke_agent(&self, name_or_id: &str) -> Result<u64, airlock_store::StoreError> {
        let n = self.store.revoke_agent(name_or_id).await?;
        self.reap_once().await;
        self.reaper_wake.notify_one();
        Ok(n)
    }
}

/// Where the OpenBao lease id of an OpenBao-issued lease credential is sealed in the local vault
/// (not a handle name, so the scrubber skips it: the id is not a credential).
pub fn openbao_lease_key(lease_handle: &str) -> String {
    format!("openbao-lease:{lease_handle}")
}

/// The reaper's wait: until the next deadline (`until` from now), at most
/// [`REAPER_MAX_SLEEP`] (so a lease issued by another process is seen soon), at least 5 ms, or
/// until woken.
async fn wait_for_next(until: Option<Duration>, wake: &tokio::sync::Notify) {
    let sleep = until.unwrap_or(REAPER_MAX_SLEEP).clamp(Duration::from_millis(5), REAPER_MAX_SLEEP);
    tokio::select! {
        _ = tokio::time::sleep(sleep) => {}
        _ = wake.notified() => {}
    }
}

/// Seconds before the next attempt at a revocation that failed `attempts` times.
fn backoff_secs(attempts: i64) -> i64 {
    (1i64 << attempts.clamp(0, 6)).min(MAX_BACKOFF_SECS)
}

fn default_policy() -> LeasePolicy {
    LeasePolicy {
        dynamic: true,
        max_ttl_seconds: 1,
        agent_max_ttl_seconds: Default::default(),
        scopes: vec![Scope::ReadOnly],
        tables: None,
        creation_statements: None,
        revocation_statements: None,
        provider: Default::default(),
        vault: None,
        mount: None,
        role: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn the_reaper_wakes_at_the_deadline_at_most_a_second_apart_or_when_woken() {
        let wake = tokio::sync::Notify::new();
        let t = Instant::now();
        wait_for_next(Some(Duration::from_millis(250)), &wake).await;
        assert_eq!(t.elapsed(), Duration::from_millis(250));
        // A lease expiring in an hour: look again within a second anyway.
        let t = Instant::now();
        wait_for_next(Some(Duration::from_secs(3600)), &wake).await;
        assert_eq!(t.elapsed(), REAPER_MAX_SLEEP);
        let t = Instant::now();
        wait_for_next(None, &wake).await;
        assert_eq!(t.elapsed(), REAPER_MAX_SLEEP);
        // Past due: a short pause, never a busy loop.
        let t = Instant::now();
        wait_for_next(Some(Duration::ZERO), &wake).await;
        assert_eq!(t.elapsed(), Duration::from_millis(5));
        // Woken (a lease issued, an agent revoked): at once.
        wake.notify_one();
        let t = Instant::now();
        wait_for_next(Some(Duration::from_secs(3600)), &wake).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[test]
    fn failed_revocations_back_off_to_a_minute() {
        let s: Vec<i64> = (0..9).map(backoff_secs).collect();
        assert_eq!(s, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_secs(-3), 1);
    }

    #[test]
    fn agent_written_table_names_are_plain_identifiers() {
        assert_eq!(identifier("Orders").as_deref(), Some("orders"));
        assert_eq!(identifier("sales.items").as_deref(), Some("sales.items"));
        for bad in ["", "a;b", "a.b.c", "1x", "a b", "x\"y", "t'--", "\u{0430}"] {
            assert_eq!(identifier(bad), None, "{bad}");
        }
    }
}
