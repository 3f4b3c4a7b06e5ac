//! The path of one call (DESIGN.md, "Trust boundary"): authenticate → validate → policy →
//! resolve → execute → scrub → audit → sanitized response.
//!
//! Ordering matters for what an agent can learn: the handle and the policy are checked before
//! the arguments, so an unknown handle and a forbidden one give the same answer
//! (`handle-unavailable`, T13/T16); arguments are validated and limits applied before the secret
//! is resolved or any connection is made (invariant 6); and the audit record is durable before the
//! result is returned; for calls with side effects, an intent record is durable before the
//! action is taken (the call is refused if it cannot be written).

pub mod approval;
pub mod audit;
mod audit_agg;
pub mod audit_sink;
pub mod call;
pub mod children;
mod delivery;
mod identity;
mod live;
pub mod issuers;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod oauth;
pub mod rate;
mod registry;
pub mod reload;
pub mod request;
pub mod revocation;
mod secrets;
pub mod share;
pub mod spans;
pub mod tools;

pub use revocation::Revoker;
pub use children::ChildRequest;
pub use identity::RECHECK as IDENTITY_RECHECK;
pub use tools::{Format, ToolDef};

use airlock_core::config::Config;
use airlock_core::CallError;
use airlock_policy::PolicyEngine;
use airlock_store::agents::Agent;
use airlock_store::audit::{AuditKey, AuditLog};
use airlock_store::Store;
use airlock_vault::Vault;
use metrics::Metrics;
use serde_json::Value;
use std::sync::Arc;

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
    /// Set when the agent signed in with a token of a trusted issuer: who vouched for it, and
    /// the tools its token's scopes allow (recorded in the audit).
    pub signed_in: Option<std::sync::Arc<SignedIn>>,
    /// Set by a front end whose client declared URL-mode elicitation (MCP over stdio): a link
    /// for the person at that client can be handed to it (`Invocation::elicit`).
    pub elicit_url: bool,
}

/// What a trusted issuer's token said about a caller (T30).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The issuer's name (`[issuers.NAME]`).
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The tools the token's `airlock:TOOL` scopes allow, when its issuer has `tool_scopes`;
    /// `None`: the token does not limit the tools.
    pub tools: Option<Vec<airlock_core::Tool>>,
}

impl Caller {
    /// Whether the caller's token allows `tool` at all (its scopes, if its issuer limits tools
    /// by scope). Grants and policy decide the rest.
    pub fn scope_allows(&self, tool: airlock_core::Tool) -> bool {
        self.signed_in.as_ref().and_then(|s| s.tools.as_ref()).is_none_or(|t| t.contains(&tool))
    }

    /// The `airlock:TOOL` scopes the caller's token holds, when its scopes limit the tools.
    pub fn scopes(&self) -> Option<Vec<String>> {
        let tools = self.signed_in.as_ref()?.tools.as_ref()?;
        Some(tools.iter().map(|t| format!("{}{}", SCOPE_PREFIX, t.name())).collect())
    }
}

/// The prefix of the scopes that name tools: `airlock:query_db`.
pub const SCOPE_PREFIX: &str = "airlock:";

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
    /// A link for the person at the caller's client, which the front end sends as a URL-mode
    /// elicitation and never puts in the result (the intake link of a `request_secret` whose
    /// recipient is reached that way).
    pub elicit: Option<Elicit>,
}

/// A URL-mode elicitation to send: the link holds a proof, so it has no `Debug` that shows it.
pub struct Elicit {
    /// The URL (a secret: never logged, never in a result).
    pub url: String,
    /// The elicitation id (the request id).
    pub id: String,
    /// What the client shows the person.
    pub message: String,
}

impl std::fmt::Debug for Elicit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elicit").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The REST/JSON envelope of the contract, borrowed from an [`Invocation`]:
/// `{"ok": true, "request_id", "result"}` or `{"ok": false, "request_id", "error": {"code",
/// "message", "approval"?}}`, in that order.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    ok: bool,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<EnvelopeError<'a>>,
}

#[derive(serde::Serialize)]
struct EnvelopeError<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a Value>,
}

impl Invocation {
    /// The REST/JSON envelope of the contract.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.envelope()).expect("an envelope is JSON")
    }

    /// [`Invocation::to_json`] as text, written straight from the invocation (a front end's
    /// answer: no copy of the result as a second JSON value).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope()).expect("an envelope is JSON")
    }

    fn envelope(&self) -> Envelope<'_> {
        match &self.result {
            Ok(v) => Envelope { ok: true, request_id: &self.request_id, result: Some(v), error: None },
            Err(e) => Envelope {
                ok: false,
                request_id: &self.request_id,
                result: None,
                error: Some(EnvelopeError { code: e.code.as_str(), message: &e.message, approval: self.approval.as_ref() }),
            },
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

/// Per-agent and per-address limiters.
#[derive(Debug, Default)]
struct Limits {
    /// Calls per agent.
    calls: rate::RateLimiter,
    /// E-mail send buckets: `agent:<id>` per agent, `handle:<name>` per smtp handle.
    sends: rate::RateLimiter,
    /// Sub-agent creations per agent (by name), counted against every agent of the chain.
    children: rate::RateLimiter,
    /// The share endpoints' per-address limiters.
    shares: share::ShareRates,
    /// Sources of refused tokens, for one audit record per source per minute (T29).
    bad_tokens: audit_agg::BadTokens,
    /// Connect-page requests that found nothing to continue, per client address (T29, T31).
    connect_failed: rate::RateLimiter,
    /// `request_secret` calls per agent.
    requests: rate::RateLimiter,
    /// Failed opens and submits of intake links, per request id and per client address.
    request_failed: rate::RateLimiter,
}

/// The broker. One per process; share it as `Arc<Broker>`.
///
/// It is a handful of components, each owned by one module: the configuration and policy in
/// force, swapped whole by a reload (`reload`), and who may do what under them (`identity`), the secrets and the scrubber built from them (`secrets`), the executors
/// (`registry`), the audit log (`audit`), approvals (`approval`), leases and their reaper
/// (`lease`), limiters and metrics. The path of one call is `call`.
pub struct Broker {
    /// The configuration and the policies compiled from it, swapped whole by a reload.
    live: std::sync::RwLock<Arc<live::Live>>,
    /// Serializes reloads.
    reloading: tokio::sync::Mutex<()>,
    store: Store,
    audit: AuditLog,
    secrets: secrets::Secrets,
    executors: registry::Executors,
    limits: Limits,
    leases: lease::LeaseState,
    approvals: approval::ApprovalState,
    metrics: Metrics,
    children: children::ChildState,
    identities: identity::Identities,
    oauth: oauth::OauthState,
    issuers: issuers::Issuers,
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
        // Unwrapped as [store.master_key] says; only in memory from here.
        let master = airlock_vault::wrap::open(&cfg.store.master_key, &cfg.vaults, &dir.join("master.key")).await?;
        let store = Store::connect(&cfg.store).await?;
        let key = AuditKey::load(&dir)?;
        let policy = PolicyEngine::from_config(&cfg)?;
        let audit = AuditLog::start(store.clone(), key);
        let vault = Vault::with_remotes(master, store.clone(), cfg.vaults.values())?;
        // A key version that does not open with this master key fails the start here.
        vault.reload_keyring().await?;
        let leases = lease::LeaseState::new(lease::installation_id(&dir)?);
        let approvals = approval::ApprovalState::default();
        let executors = registry::Executors::new(&cfg, store.clone());
        let cfg_issuers: Vec<_> = cfg.issuers.values().cloned().collect();
        let limits = Limits {
            shares: share::ShareRates::new(&cfg.shares),
            connect_failed: rate::RateLimiter::with_capacity(cfg.shares.max_tracked_clients),
            request_failed: rate::RateLimiter::with_capacity(cfg.shares.max_tracked_clients),
            ..Limits::default()
        };
        let mut metrics = Metrics::default();
        metrics.register_limiter("calls", &limits.calls);
        metrics.register_limiter("sends", &limits.sends);
        metrics.register_limiter("children", &limits.children);
        metrics.register_limiter("share_create", &limits.shares.create);
        metrics.register_limiter("share_failed_pair", &limits.shares.failed_pair);
        metrics.register_limiter("share_failed_share", &limits.shares.failed_share);
        metrics.register_limiter("connect_failed", &limits.connect_failed);
        metrics.register_limiter("requests", &limits.requests);
        metrics.register_limiter("request_failed", &limits.request_failed);
        if cfg.audit.export.is_some() {
            metrics.register_audit_export();
        }
        let broker = Broker {
            live: std::sync::RwLock::new(Arc::new(live::Live::new(Arc::new(cfg), policy))),
            reloading: tokio::sync::Mutex::new(()),
            store,
            audit,
            secrets: secrets::Secrets::new(vault),
            executors,
            limits,
            leases,
            approvals,
            metrics,
            children: children::ChildState::default(),
            identities: identity::Identities::default(),
            oauth: oauth::OauthState::default(),
            issuers: issuers::Issuers::new(&cfg_issuers),
        };
        broker.move_legacy_request_values().await?;
        broker.rebuild_scrubber().await?;
        Ok(broker)
    }

    /// The configuration in force (a reload replaces it; a caller keeps the one it was given).
    pub fn config(&self) -> Arc<Config> {
        self.live().cfg.clone()
    }

    /// The configuration in force, for the broker's own modules.
    fn cfg(&self) -> Arc<Config> {
        self.live().cfg.clone()
    }

    /// The configuration and policies in force, together.
    fn live(&self) -> Arc<live::Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy engine in force.
    pub fn policy(&self) -> Arc<PolicyEngine> {
        self.live().policy.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The per-address limiters of the share endpoints.
    pub fn share_rates(&self) -> &share::ShareRates {
        &self.limits.shares
    }

    /// The secret backends.
    pub fn vault(&self) -> &Vault {
        &self.secrets.vault
    }
}
