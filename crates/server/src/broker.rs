//! The path of one call (DESIGN.md, "Trust boundary"): authenticate → validate → policy →
//! resolve → execute → scrub → audit → sanitized response.
//!
//! Ordering matters for what an agent can learn: the handle and the policy are checked before
//! the arguments, so an unknown handle and a forbidden one give the same answer
//! (`handle-unavailable`, T13/T16); arguments are validated and limits applied before the secret
//! is resolved or any connection is made (invariant 6); and the audit record is durable before the
//! result is returned; for calls with side effects, an intent record is durable before the
//! action is taken (the call is refused if it cannot be written).

use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::tools::{self, Format, ToolDef};
use airlock_core::config::{Config, Handle, HandleKind, Scope, SecretRef};
use airlock_core::{CallError, ErrorCode, HandleName, Secret, Tool};
use airlock_exec_aws::{AwsExecutor, S3Args};
use airlock_exec_command::{CommandArgs, CommandExecutor};
use airlock_exec_email::{EmailArgs, EmailExecutor};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use airlock_exec_sql::{QueryArgs, SqlExecutor};
use airlock_policy::PolicyEngine;
use airlock_scrub::{Scrubber, ScrubberBuilder};
use airlock_store::agents::Agent;
use airlock_store::audit::{AuditKey, AuditLog, AuditRecord, Decision};
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a resolved secret is reused before it is read from its backend again.
const SECRET_TTL: Duration = Duration::from_secs(5);

/// Failures opening the broker (operator-facing, at start-up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] airlock_store::StoreError),
    /// The master key or a secret backend failed.
    #[error(transparent)]
    Vault(#[from] airlock_vault::VaultError),
    /// The policies do not load or validate.
    #[error(transparent)]
    Policy(#[from] airlock_policy::PolicyError),
    /// The process could not be made non-dumpable (`PR_SET_DUMPABLE`), so a child could read
    /// the broker's memory or environment; the broker does not start.
    #[error("cannot make the broker non-dumpable: {0}")]
    Harden(std::io::Error),
}

#[path = "leases.rs"]
mod leases;
#[path = "children.rs"]
mod children;
pub use children::ChildRequest;

/// An authenticated agent and its parent chain.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The agent.
    pub agent: Agent,
    /// Parent names, nearest first.
    pub parents: Vec<String>,
    /// A sub-agent's own grants, `(handle, tool)`; `None` for an agent of the configuration,
    /// whose grants are the config's Cedar policies.
    pub grants: Option<Vec<(String, String)>>,
    /// The OS process behind the call when it came over the Unix socket (set by the front end
    /// that accepted the connection; recorded in the audit).
    pub peer: Option<airlock_core::Peer>,
}

/// The outcome of one call, ready to be rendered by any front end.
#[derive(Debug)]
pub struct Invocation {
    /// The request id (also in the audit record).
    pub request_id: String,
    /// The scrubbed result or the error.
    pub result: Result<Value, CallError>,
    /// Redactions made in the result.
    pub redactions: usize,
    /// For `approval-required` and `approval-denied`: the approval's id, page URL, status and
    /// expiry (never anything secret).
    pub approval: Option<Value>,
}

impl Invocation {
    /// The REST/JSON envelope of the contract.
    pub fn to_json(&self) -> Value {
        match &self.result {
            Ok(v) => json!({"ok": true, "request_id": self.request_id, "result": v}),
            Err(e) => {
                let mut v = json!({"ok": false, "request_id": self.request_id,
                                   "error": {"code": e.code.as_str(), "message": e.message}});
                if let Some(a) = &self.approval {
                    v["error"]["approval"] = a.clone();
                }
                v
            }
        }
    }

    /// The HTTP status for the envelope.
    pub fn status(&self) -> u16 {
        match &self.result {
            Ok(_) => 200,
            Err(e) => e.code.http_status(),
        }
    }
}

struct KnownSecrets {
    scrubber: Arc<Scrubber>,
    generation: String,
}

/// The broker. One per process; share it as `Arc<Broker>`.
pub struct Broker {
    cfg: Arc<Config>,
    policy: PolicyEngine,
    store: Store,
    vault: Vault,
    audit: AuditLog,
    sql: SqlExecutor,
    http: HttpExecutor,
    email: EmailExecutor,
    command: CommandExecutor,
    aws: AwsExecutor,
    rates: RateLimiter,
    /// E-mail send buckets: `agent:<id>` per agent, `handle:<name>` per smtp handle.
    sends: RateLimiter,
    known: RwLock<Arc<KnownSecrets>>,
    rebuild: tokio::sync::Mutex<()>,
    cache: Mutex<HashMap<HandleName, (Instant, Secret)>>,
    metrics: Metrics,
    share_rates: crate::shares::ShareRates,
    /// This installation's id, part of every dynamic role's name, so that reconciliation never
    /// touches another installation's roles on a shared database server.
    installation: String,
    /// Agent ids whose tool list changed (a lease issued or revoked).
    tool_changes: tokio::sync::broadcast::Sender<String>,
    /// Wakes the reaper early (a lease issued with a short TTL, an agent revoked).
    reaper_wake: tokio::sync::Notify,
    /// The version approvals are bound to (policies and the configuration that decides calls).
    policy_version: String,
    /// Wakes calls waiting for an approval decision.
    approval_wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broker")
    }
}

impl Broker {
    /// Opens the store, vault and audit log of `cfg.store.data_dir` and loads the policies.
    /// `master.key` and `audit-signing.key` must exist there (`airlock init` creates them).
    pub async fn open(cfg: Config) -> Result<Broker, BrokerError> {
        // Before any secret is read: children (run_command) must not be able to read this
        // process's memory or /proc/PID/environ (T08).
        airlock_exec_command::make_non_dumpable().map_err(BrokerError::Harden)?;
        let dir = cfg.store.data_dir.clone();
        let master = MasterKey::load(&dir.join("master.key"))?;
        let store = Store::connect(&cfg.store).await?;
        let key = AuditKey::load(&dir)?;
        let policy = PolicyEngine::from_config(&cfg)?;
        let audit = AuditLog::start(store.clone(), key);
        let vault = Vault::with_remotes(master, store.clone(), cfg.vaults.values())?;
        let installation = leases::installation_id(&dir)?;
        let policy_version = crate::approvals::policy_version(policy.version(), &cfg);
        let command = CommandExecutor::new(airlock_exec_command::SandboxSettings::from_config(&cfg));
        let broker = Broker {
            cfg: Arc::new(cfg),
            policy,
            store,
            vault,
            audit,
            sql: SqlExecutor::new(),
            http: HttpExecutor::new(),
            email: EmailExecutor::new(),
            command,
            aws: AwsExecutor::new(),
            rates: RateLimiter::default(),
            sends: RateLimiter::default(),
            known: RwLock::new(Arc::new(KnownSecrets {
                scrubber: Arc::new(Scrubber::empty()),
                generation: String::new(),
            })),
            rebuild: tokio::sync::Mutex::new(()),
            cache: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            share_rates: crate::shares::ShareRates::default(),
            installation,
            tool_changes: tokio::sync::broadcast::channel(64).0,
            reaper_wake: tokio::sync::Notify::new(),
            policy_version,
            approval_wake: tokio::sync::Notify::new(),
        };
        broker.rebuild_scrubber().await?;
        Ok(broker)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy engine.
    pub fn policy(&self) -> &PolicyEngine {
        &self.policy
    }

    /// The version approvals are bound to: a hash of the Cedar policy set and of the handles,
    /// agents, lease policies and approval rules. A change invalidates every approval.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    pub(crate) fn approval_wake(&self) -> &tokio::sync::Notify {
        &self.approval_wake
    }

    pub(crate) async fn audit_append(&self, rec: AuditRecord) -> Result<i64, airlock_store::StoreError> {
        self.audit.append(rec).await
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The per-address limiters of the share endpoints.
    pub fn share_rates(&self) -> &crate::shares::ShareRates {
        &self.share_rates
    }

    /// The current scrubber (for front ends that scrub their own output, such as log lines).
    pub fn scrubber(&self) -> Arc<Scrubber> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).scrubber.clone()
    }

    /// Rebuilds the known-value scrubber from every secret the broker holds: every sealed secret in
    /// the local vault and every handle's resolvable reference. Runs off the hot path; the new
    /// matcher is swapped in when ready.
    pub async fn rebuild_scrubber(&self) -> Result<(), BrokerError> {
        self.rebuild_scrubber_with(None).await
    }

    /// As [`Broker::rebuild_scrubber`], also covering `extra` (a value just resolved from a
    /// backend that may have changed since the last rebuild).
    async fn rebuild_scrubber_with(&self, extra: Option<(HandleName, Secret)>) -> Result<(), BrokerError> {
        let _guard = self.rebuild.lock().await;
        let generation = self.store.secrets_generation().await?;
        let mut labelled: Vec<(HandleName, Secret)> = Vec::new();
        for (name, _) in self.store.all_sealed().await? {
            let Ok(label) = HandleName::parse(&name) else { continue };
            match self.vault.resolve(&airlock_core::config::SecretRef::Local(name.clone())).await {
                Ok(s) => self.push_known(&name, label, s, &mut labelled),
                Err(e) => tracing::warn!(secret = %name, error = %e, "stored secret does not open; not in the scrubber"),
            }
        }
        for h in self.cfg.handles.values() {
            if matches!(h.secret, airlock_core::config::SecretRef::Local(_)) {
                continue;
            }
            match self.vault.resolve(&h.secret).await {
                Ok(s) => self.push_known(h.name.as_str(), h.name.clone(), s, &mut labelled),
                Err(e) => tracing::warn!(handle = %h.name, error = %e, "secret unavailable; not in the scrubber"),
            }
        }
        if let Some((label, s)) = extra {
            self.push_known(&label.to_string(), label, s, &mut labelled);
        }
        let scrubber = tokio::task::spawn_blocking(move || {
            let mut b = ScrubberBuilder::new();
            for (l, s) in &labelled {
                b.add_secret(l, s);
            }
            b.build()
        })
        .await
        .expect("scrubber build does not panic");
        *self.known.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(KnownSecrets { scrubber: Arc::new(scrubber), generation });
        Ok(())
    }

    /// Adds a secret to the scrubber's list. An aws secret (the handle's key pair or a lease's
    /// STS credentials, found by its vault name or handle name) is a JSON object: each of its
    /// values is added too, as they are what a response would carry.
    fn push_known(&self, name: &str, label: HandleName, s: Secret, out: &mut Vec<(HandleName, Secret)>) {
        if self.is_aws_secret(name) {
            for p in airlock_exec_aws::secret_parts(&s) {
                out.push((label.clone(), p));
            }
        }
        out.push((label, s));
    }

    /// True when `name` is an aws handle, the local vault name of an aws handle's secret, or a
    /// lease of an aws handle (`BASE__Lxxxxxx`).
    fn is_aws_secret(&self, name: &str) -> bool {
        let base = match name.rsplit_once("__L") {
            Some((b, suffix)) if suffix.len() == 6 => b,
            _ => name,
        };
        self.cfg.handles.values().filter(|h| h.kind == HandleKind::Aws).any(|h| {
            h.name.as_str() == base || h.name.as_str() == name || matches!(&h.secret, SecretRef::Local(k) if k == name)
        })
    }

    /// Checks whether secrets changed in the store (another process ran `secret put`) and rebuilds
    /// the scrubber and drops cached secrets if so. Call it periodically.
    pub async fn refresh(&self) -> Result<bool, BrokerError> {
        let generation = self.store.secrets_generation().await?;
        let current = self.known.read().unwrap_or_else(|p| p.into_inner()).generation.clone();
        if generation == current {
            return Ok(false);
        }
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.vault.invalidate();
        self.rebuild_scrubber().await?;
        Ok(true)
    }

    /// Drops every cached secret, including values read from remote vaults (OpenBao, Vault), so
    /// the next call reads them again, and rebuilds the scrubber from fresh values. `airlock
    /// serve` calls it on SIGHUP; call it after rotating a secret in a remote vault.
    pub async fn invalidate_secrets(&self) -> Result<(), BrokerError> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.vault.invalidate();
        self.rebuild_scrubber().await
    }

    /// The secret backends.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Authenticates a bearer token.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, CallError> {
        let token = token.ok_or_else(|| CallError::new(ErrorCode::Unauthenticated))?;
        let agent = self
            .store
            .authenticate(token)
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?
            .ok_or_else(|| CallError::new(ErrorCode::Unauthenticated))?;
        let parents = self
            .store
            .parent_chain(&agent)
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        let grants = match agent.parent {
            None => None,
            Some(_) => Some(
                self.store
                    .agent_grants(&agent.id)
                    .await
                    .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?,
            ),
        };
        Ok(Caller { agent, parents, grants, peer: None })
    }

    /// The policy decision for `caller`. An agent of the configuration is decided by Cedar under
    /// its name; a sub-agent needs the grant in its own list *and* Cedar's permit for the root of
    /// its chain, so it can never be wider than its ancestors (T16).
    pub fn decide(&self, caller: &Caller, tool: Tool, handle: &Handle) -> airlock_policy::Decision {
        match &caller.grants {
            None => self.policy.decide(&caller.agent.name, tool, handle),
            Some(g) => {
                let granted = g.iter().any(|(h, t)| h == handle.name.as_str() && t == tool.name());
                match (granted, caller.parents.last()) {
                    (true, Some(root)) => self.policy.decide(root, tool, handle),
                    _ => airlock_policy::Decision { allowed: false, policies: vec![], errors: vec![] },
                }
            }
        }
    }

    /// The tools `agent` (an agent of the configuration) may call.
    pub fn tool_defs(&self, agent: &str) -> Vec<ToolDef> {
        // s3_object is only ever on a lease, never on a configured handle.
        tools::tool_defs(&self.cfg.handles, &self.cfg.shares, |t| {
            if t == Tool::S3Object {
                Vec::new()
            } else {
                self.policy.allowed_handles(agent, t, &self.cfg)
            }
        })
    }

    /// The tools `caller` may call: its grants, `query_db` on its live database leases and
    /// `s3_object` on its live aws leases.
    pub async fn tool_defs_for(&self, caller: &Caller) -> Vec<ToolDef> {
        let leases = self.live_lease_handles(&caller.agent.id).await;
        let mut handles = Cow::Borrowed(&self.cfg.handles);
        if !leases.is_empty() {
            let h = handles.to_mut();
            for l in &leases {
                h.insert(l.name.clone(), l.clone());
            }
        }
        tools::tool_defs(&handles, &self.cfg.shares, |t| {
            let mut v: Vec<HandleName> = self
                .cfg
                .handles
                .values()
                .filter(|h| t != Tool::S3Object && t.applies_to(h.kind) && self.decide(caller, t, h).allowed)
                .map(|h| h.name.clone())
                .collect();
            // Lease handles: query_db on database leases, s3_object on aws leases.
            if matches!(t, Tool::QueryDb | Tool::S3Object) {
                v.extend(leases.iter().filter(|l| t.applies_to(l.kind)).map(|l| l.name.clone()));
            }
            v
        })
    }

    /// [`Broker::tool_defs_for`], rendered and scrubbed (T21).
    pub async fn tools_json_for(&self, caller: &Caller, format: Format) -> Value {
        let mut v = tools::render(&self.tool_defs_for(caller).await, format);
        self.scrubber().scrub_json(&mut v);
        v
    }

    /// Agent ids whose tool list changed, as they change (for MCP `list_changed`).
    pub fn subscribe_tool_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.tool_changes.subscribe()
    }

    /// The tools `agent` may call, rendered and scrubbed (T21).
    pub fn tools_json(&self, agent: &str, format: Format) -> Value {
        let mut v = tools::render(&self.tool_defs(agent), format);
        self.scrubber().scrub_json(&mut v);
        v
    }

    /// Records a call refused before it reached the broker's checks (no or a bad token, a body
    /// that is not JSON). Returns the invocation to render.
    pub async fn refuse(&self, tool: &str, err: CallError) -> Invocation {
        let request_id = uuid::Uuid::now_v7().to_string();
        let started = Instant::now();
        self.finish(None, tool, None, &Value::Null, Decision::Deny, vec![], request_id, Err(err), started)
            .await
    }

    /// Audits and renders the outcome of an operation that is not a tool call (a lease revoked,
    /// a task opened or closed, a sub-agent created), like a call: one record, allowed or denied.
    pub async fn audited(&self, caller: &Caller, action: &str, args: &Value, result: Result<Value, CallError>, started: Instant) -> Invocation {
        let request_id = uuid::Uuid::now_v7().to_string();
        let decision = if result.is_ok() { Decision::Allow } else { Decision::Deny };
        self.finish(Some(caller), action, None, args, decision, vec![], request_id, result, started).await
    }

    /// Runs one call for `caller`.
    pub async fn invoke(&self, caller: &Caller, tool_name: &str, args: Value) -> Invocation {
        let started = Instant::now();
        let request_id = uuid::Uuid::now_v7().to_string();
        let mut args = args;
        let handle_text = args.get("credential_handle").and_then(Value::as_str).map(str::to_owned);
        let handle_name = handle_text.as_deref().and_then(|h| HandleName::parse(h).ok());
        if let Some(obj) = args.as_object_mut() {
            obj.remove("credential_handle");
        }
        let checked = self.check(caller, tool_name, handle_name.as_ref(), &args).await;
        let (tool, handle, policies) = match checked {
            Ok(v) => v,
            Err((e, policies)) => {
                return self
                    .finish(Some(caller), tool_name, handle_name.as_ref(), &args, Decision::Deny, policies, request_id, Err(e), started)
                    .await
            }
        };
        let prepared = match Prepared::validate(self, caller, tool, &handle, &args) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .finish(Some(caller), tool_name, handle_name.as_ref(), &args, Decision::Deny, policies, request_id, Err(e), started)
                    .await
            }
        };
        // A call the handle's approval rule marks is held unless an approval of this exact call
        // is used now (after validation, so that nothing invalid is put before a person).
        let mut approval: Option<String> = None;
        if let Some(rule) = self.cfg.approvals.get(&handle.name) {
            if let Some(why) = crate::approvals::reason(rule, tool, &prepared.facts()) {
                match self.approval_gate(caller, tool, &handle.name, &args, rule, why).await {
                    Ok(id) => approval = Some(id),
                    Err(held) => {
                        let held = *held;
                        let id = (!held.approval_id.is_empty()).then_some(held.approval_id.as_str());
                        let mut inv = self
                            .finish_with(Some(caller), tool_name, handle_name.as_ref(), &args, Decision::Deny, policies,
                                         request_id, Err(held.error), started, id)
                            .await;
                        if inv.result.as_ref().err().is_some_and(|e| matches!(e.code, ErrorCode::ApprovalRequired | ErrorCode::ApprovalDenied)) {
                            inv.approval = Some(held.ticket);
                        }
                        return inv;
                    }
                }
            }
        }
        let prepared = match self.check_sends(caller, &handle, prepared) {
            Ok(p) => p,
            Err(e) => {
                self.give_back(approval.as_deref()).await;
                return self
                    .finish_with(Some(caller), tool_name, handle_name.as_ref(), &args, Decision::Deny, policies, request_id,
                                 Err(e), started, approval.as_deref())
                    .await
            }
        };
        // A side effect must not happen unless its record can be kept.
        if prepared.has_side_effects() {
            let intent = self.record(Some(caller), tool_name, handle_name.as_ref(), &args, Decision::Allow, policies.clone(), &request_id);
            let mut intent = intent;
            intent.approval = approval.clone();
            intent.outcome = "started".into();
            if let Err(e) = self.audit.append(intent).await {
                tracing::error!(request_id = %request_id, error = %e, "audit intent record not written; call refused");
                self.give_back(approval.as_deref()).await;
                let err = CallError::new(ErrorCode::AuditUnavailable);
                self.metrics.record(tool_name, err.code.as_str(), started.elapsed().as_secs_f64());
                return Invocation { request_id, result: Err(err), redactions: 0, approval: None };
            }
        }
        let result = match &prepared {
            // A lease resolves its base's secret only if it creates a role (in `issue_lease`).
            Prepared::Lease(req) => self.issue_lease(caller, &handle, req).await,
            _ => match self.resolve(&handle).await {
                Ok(secret) => prepared.execute(self, caller, &handle, &secret).await,
                Err(e) => Err(e),
            },
        };
        // The audit names the share a link was made for (never the link).
        if let (Ok(v), Some(obj)) = (&result, args.as_object_mut()) {
            if let Some(id) = v.get("share_id").filter(|_| tool == Tool::ShareSecret) {
                obj.insert("share_id".into(), id.clone());
            }
        }
        self.finish_with(Some(caller), tool_name, handle_name.as_ref(), &args, Decision::Allow, policies, request_id, result, started,
                         approval.as_deref())
            .await
    }

    /// Returns a used approval when its call was refused before it ran.
    async fn give_back(&self, approval: Option<&str>) {
        if let Some(id) = approval {
            if let Err(e) = self.store.unuse_approval(id).await {
                tracing::warn!(approval = %id, error = %e, "could not give back an unused approval");
            }
        }
    }

    /// Send limits for e-mail (per agent over all smtp handles, and per handle), taken only once
    /// the message is admitted, before anything is sent (invariant 6).
    fn check_sends(&self, caller: &Caller, handle: &Handle, p: Prepared) -> Result<Prepared, CallError> {
        if let (Prepared::Email(_), Some(smtp)) = (&p, handle.smtp()) {
            let per_agent = self
                .cfg
                .agents
                .get(&caller.agent.name)
                .and_then(|a| a.sends_per_minute)
                .unwrap_or(self.cfg.limits.sends_per_minute);
            if !self.sends.check(&format!("agent:{}", caller.agent.id), per_agent)
                || !self.sends.check(&format!("handle:{}", handle.name), smtp.sends_per_minute)
            {
                return Err(CallError::with_message(ErrorCode::RateLimited, "too many e-mails; retry later"));
            }
        }
        Ok(p)
    }

    /// Tool, handle, policy and rate checks. Every refusal about the handle is the same error.
    #[allow(clippy::type_complexity)]
    async fn check<'a>(
        &'a self,
        caller: &Caller,
        tool_name: &str,
        handle: Option<&HandleName>,
        args: &Value,
    ) -> Result<(Tool, Cow<'a, Handle>, Vec<String>), (CallError, Vec<String>)> {
        let tool = Tool::parse(tool_name).ok_or((CallError::new(ErrorCode::UnknownTool), vec![]))?;
        if !args.is_object() {
            return Err((CallError::new(ErrorCode::InvalidArguments), vec![]));
        }
        let unavailable = || (CallError::new(ErrorCode::HandleUnavailable), vec![]);
        let name = handle.ok_or_else(unavailable)?;
        let (h, d) = match self.cfg.handles.get(name) {
            Some(h) => {
                // s3_object never runs on an aws handle's own key pair, only on a lease.
                if !tool.applies_to(h.kind) || tool == Tool::S3Object {
                    return Err(unavailable());
                }
                (Cow::Borrowed(h), self.decide(caller, tool, h))
            }
            None => {
                // A lease handle: only its owner, only before expiry, only with query_db (a
                // database lease) or s3_object (an aws lease) (T15).
                let (lease, h) = self.lease_for(caller, name).await.ok_or_else(unavailable)?;
                if !matches!(tool, Tool::QueryDb | Tool::S3Object) || !tool.applies_to(h.kind) {
                    return Err(unavailable());
                }
                let d = airlock_policy::Decision { allowed: true, policies: vec![format!("lease:{}", lease.id)], errors: vec![] };
                (Cow::Owned(h), d)
            }
        };
        if !d.allowed {
            if !d.errors.is_empty() {
                tracing::warn!(agent = %caller.agent.name, errors = ?d.errors, "policy evaluation errors (denied)");
            }
            return Err((CallError::new(ErrorCode::HandleUnavailable), d.policies));
        }
        let rate = self
            .cfg
            .agents
            .get(&caller.agent.name)
            .and_then(|a| a.rate_per_minute)
            .unwrap_or(self.cfg.limits.rate_per_minute);
        if !self.rates.check(&caller.agent.id, rate) {
            return Err((CallError::new(ErrorCode::RateLimited), d.policies));
        }
        Ok((tool, h, d.policies))
    }

    async fn resolve(&self, handle: &Handle) -> Result<Secret, CallError> {
        if let Some((at, s)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&handle.name) {
            if at.elapsed() < SECRET_TTL {
                return Ok(s.clone());
            }
        }
        let secret = self.vault.resolve(&handle.secret).await.map_err(|e| {
            CallError::new(ErrorCode::SecretUnavailable).detail(format!("handle {}: {e}", handle.name))
        })?;
        // A secret the scrubber does not know yet (rotated, or new in its backend) is added
        // before any output of this call is scrubbed.
        if !self.scrubber().knows(&handle.name, &secret) {
            self.rebuild_scrubber_with(Some((handle.name.clone(), secret.clone())))
                .await
                .map_err(|e| CallError::new(ErrorCode::SecretUnavailable).detail(e.to_string()))?;
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.name.clone(), (Instant::now(), secret.clone()));
        Ok(secret)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        caller: Option<&Caller>,
        tool: &str,
        handle: Option<&HandleName>,
        args: &Value,
        decision: Decision,
        policies: Vec<String>,
        request_id: &str,
    ) -> AuditRecord {
        let scrubber = self.scrubber();
        let mut arguments = audit_arguments(tool, args);
        scrubber.scrub_json(&mut arguments);
        // The tool name is agent text: bounded (on a character boundary) and scrubbed.
        let tool_s: String = tool.chars().take(64).collect();
        let (tool_s, _) = scrubber.scrub_str(&tool_s);
        AuditRecord {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: request_id.to_owned(),
            agent: caller.map(|c| c.agent.name.clone()).unwrap_or_else(|| "-".into()),
            parent_chain: caller.map(|c| c.parents.clone()).unwrap_or_default(),
            tool: tool_s.into_owned(),
            handle: handle.map(|h| h.to_string()),
            arguments,
            decision,
            code: None,
            outcome: "ok".into(),
            result_bytes: 0,
            redactions: 0,
            duration_us: 0,
            policies,
            approval: None,
            peer: caller.and_then(|c| c.peer),
            sandbox: None,
        }
    }

    /// T11: defangs (or flags) active markup in a result that points anywhere but the handle's
    /// own destinations, per `[handles.X.results] markup`, and says so in the result.
    fn sanitize_markup(&self, handle: Option<&HandleName>, v: &mut Value) {
        let policy = handle.and_then(|h| self.cfg.results.get(h)).map(|r| r.markup).unwrap_or_default();
        let own: Vec<String> = handle
            .and_then(|h| self.cfg.handles.get(h))
            .and_then(|h| h.http())
            .map(|c| c.destinations.iter().map(|d| d.host.clone()).collect())
            .unwrap_or_default();
        let n = airlock_scrub::markup::apply(v, policy, &own);
        if n > 0 {
            if let Some(map) = v.as_object_mut() {
                let action = if policy == airlock_core::config::MarkupPolicy::Flag { "flagged" } else { "neutralized" };
                map.insert("untrusted_markup".into(), json!({"action": action, "count": n}));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        caller: Option<&Caller>,
        tool: &str,
        handle: Option<&HandleName>,
        args: &Value,
        decision: Decision,
        policies: Vec<String>,
        request_id: String,
        result: Result<Value, CallError>,
        started: Instant,
    ) -> Invocation {
        self.finish_with(caller, tool, handle, args, decision, policies, request_id, result, started, None).await
    }

    /// [`Broker::finish`], the record carrying the approval the call belongs to.
    #[allow(clippy::too_many_arguments)]
    async fn finish_with(
        &self,
        caller: Option<&Caller>,
        tool: &str,
        handle: Option<&HandleName>,
        args: &Value,
        decision: Decision,
        policies: Vec<String>,
        request_id: String,
        result: Result<Value, CallError>,
        started: Instant,
        approval: Option<&str>,
    ) -> Invocation {
        let scrubber = self.scrubber();
        let mut redactions = 0usize;
        let result = match result {
            Ok(mut v) => {
                redactions = scrubber.scrub_result(&mut v);
                self.sanitize_markup(handle, &mut v);
                Ok(v)
            }
            Err(mut e) => {
                let (m, n) = scrubber.scrub_str(&e.message);
                redactions += n;
                e.message = m.into_owned();
                if let Some(d) = e.detail.take() {
                    let (d, _) = scrubber.scrub_str(&d);
                    tracing::warn!(request_id = %request_id, code = e.code.as_str(), detail = %d, "call failed");
                } else {
                    tracing::info!(request_id = %request_id, code = e.code.as_str(), "call refused");
                }
                Err(e)
            }
        };
        let mut rec = self.record(caller, tool, handle, args, decision, policies, &request_id);
        rec.redactions = redactions as u64;
        rec.sandbox = result.as_ref().ok().and_then(|v| v.get("sandbox")).cloned();
        rec.approval = approval.map(str::to_owned);
        rec.duration_us = started.elapsed().as_micros() as u64;
        match &result {
            Ok(v) => rec.result_bytes = serde_json::to_vec(v).map(|b| b.len() as u64).unwrap_or(0),
            Err(e) => {
                rec.code = Some(e.code.as_str().to_owned());
                rec.outcome = "error".into();
            }
        }
        let result = match self.audit.append(rec).await {
            Ok(_) => result,
            Err(e) => {
                tracing::error!(request_id = %request_id, error = %e, "audit record not written; result withheld");
                Err(CallError::new(ErrorCode::AuditUnavailable))
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        let tool_label = Tool::parse(tool).map(|t| t.name()).unwrap_or("unknown");
        self.metrics.record(tool_label, outcome, started.elapsed().as_secs_f64());
        Invocation { request_id, result, redactions, approval: None }
    }
}

/// A validated call, ready to run once its secret is resolved.
enum Prepared {
    Sql(airlock_exec_sql::ValidatedQuery, Scope),
    Http(airlock_exec_http::ValidatedRequest, bool),
    Email(airlock_exec_email::ValidatedEmail),
    Command(airlock_exec_command::ValidatedCommand),
    Share(crate::shares::ValidatedShare),
    Lease(leases::LeaseRequest),
    S3(airlock_exec_aws::ValidatedS3),
}

impl Prepared {
    fn validate(broker: &Broker, caller: &Caller, tool: Tool, handle: &Handle, args: &Value) -> Result<Prepared, CallError> {
        let bad_args = |e: serde_json::Error| {
            CallError::with_message(ErrorCode::InvalidArguments, format!("invalid arguments: {}", strip_serde_detail(&e)))
        };
        match tool {
            Tool::QueryDb => {
                let a: QueryArgs = serde_json::from_value(args.clone()).map_err(bad_args)?;
                let scope = handle.database().map(|d| d.scope).unwrap_or(Scope::ReadOnly);
                Ok(Prepared::Sql(SqlExecutor::validate(handle, &a)?, scope))
            }
            Tool::HttpRequest => {
                let a: HttpArgs = serde_json::from_value(args.clone()).map_err(bad_args)?;
                let writes = !matches!(a.method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "OPTIONS");
                Ok(Prepared::Http(HttpExecutor::validate(handle, &a)?, writes))
            }
            Tool::SendEmail => {
                let a: EmailArgs = serde_json::from_value(args.clone()).map_err(bad_args)?;
                // An e-mail cannot be redacted once sent: a known secret or an encoding of one
                // anywhere in the agent's text blocks the send (T10).
                let scrubber = broker.scrubber();
                Ok(Prepared::Email(EmailExecutor::validate(handle, a, |t| scrubber.contains_known_secret(t))?))
            }
            Tool::RunCommand => {
                let a: CommandArgs = serde_json::from_value(args.clone()).map_err(bad_args)?;
                Ok(Prepared::Command(broker.command.validate(handle, &a)?))
            }
            Tool::ShareSecret => {
                let a: crate::shares::ShareArgs = serde_json::from_value(args.clone()).map_err(bad_args)?;
                Ok(Prepared::Share(crate::shares::ValidatedShare::validate(&broker.cfg.shares, &a)?))
            }
            Tool::RequestLease => Ok(Prepared::Lease(broker.validate_lease(caller, handle, args)?)),
            Tool::S3Object => {
                let a: S3Args = serde_json::from_value(args.clone()).map_err(bad_args)?;
                Ok(Prepared::S3(AwsExecutor::validate(handle, &a)?))
            }
        }
    }

    /// What approval rules look at.
    fn facts(&self) -> crate::approvals::CallFacts<'_> {
        let mut f = crate::approvals::CallFacts::default();
        match self {
            Prepared::Sql(q, _) => f.writes = q.is_write(),
            Prepared::Http(_, writes) => f.writes = *writes,
            Prepared::Email(m) => f.recipients = m.recipients().collect(),
            Prepared::Lease(l) => f.lease_ttl = Some(l.ttl()),
            Prepared::S3(v) => f.writes = v.writes(),
            Prepared::Command(_) | Prepared::Share(_) => {}
        }
        f
    }

    fn has_side_effects(&self) -> bool {
        match self {
            Prepared::Sql(_, scope) => *scope == Scope::ReadWrite,
            Prepared::Http(_, writes) => *writes,
            // Sending mail and running a program act on the world.
            Prepared::Email(_) | Prepared::Command(_) => true,
            Prepared::Share(_) => true,
            // A lease may create a database role or an STS session.
            Prepared::Lease(_) => true,
            Prepared::S3(v) => v.writes(),
        }
    }

    async fn execute(&self, broker: &Broker, caller: &Caller, handle: &Handle, secret: &Secret) -> Result<Value, CallError> {
        match self {
            Prepared::Sql(q, _) => broker.sql.execute(handle, q, secret).await,
            Prepared::Http(r, _) => broker.http.execute(handle, r, secret).await,
            Prepared::Email(m) => broker.email.execute(handle, m, secret).await,
            Prepared::Command(c) => broker.command.execute(handle, c, secret).await,
            Prepared::Share(s) => s.execute(broker, caller, secret).await,
            Prepared::Lease(_) => Err(CallError::new(ErrorCode::Internal).detail("a lease is issued, not executed")),
            Prepared::S3(v) => broker.aws.execute(handle, v, secret).await,
        }
    }
}

/// What the audit keeps of a call's arguments. An e-mail's text and a command's argument values
/// are not kept whole (they may be long, personal, or carry material the scrubber does not know):
/// the audit records recipients, sizes and placeholder names instead.
fn audit_arguments(tool: &str, args: &Value) -> Value {
    let size = |v: Option<&Value>| v.and_then(Value::as_str).map(str::len);
    match Tool::parse(tool) {
        Some(Tool::SendEmail) => json!({
            "to": args.get("to"),
            "cc": args.get("cc"),
            "reply_to": args.get("reply_to"),
            "subject_bytes": size(args.get("subject")),
            "body_bytes": size(args.get("body")),
        }),
        Some(Tool::RunCommand) => {
            let a = args.get("args").and_then(Value::as_object);
            let names: Vec<String> = a.map(|m| m.keys().take(32).map(|k| k.chars().take(64).collect()).collect()).unwrap_or_default();
            let bytes: usize = a.map(|m| m.values().filter_map(Value::as_str).map(str::len).sum()).unwrap_or(0);
            json!({"arg_names": names, "arg_bytes": bytes})
        }
        // An object's content is not kept; its size is.
        Some(Tool::S3Object) => json!({
            "operation": args.get("operation"),
            "bucket": args.get("bucket"),
            "key": args.get("key"),
            "body_bytes": size(args.get("body")),
        }),
        _ => args.clone(),
    }
}

/// serde's messages name fields and types, never values, except for unknown variants; keep only
/// the part before any quoted value.
fn strip_serde_detail(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let s = s.split(" at line ").next().unwrap_or(&s);
    s.chars().take(200).collect()
}

