//! Who is calling and what they may do: bearer tokens to agents, and the policy decision for an
//! agent (or a sub-agent, bounded by its chain) on a tool and a handle.
//!
//! Authenticated agents are kept in memory ([`Identities`]): a call with a known token reads no
//! store. What makes that safe is the store's identity generation, which triggers bump on every
//! change to an agent or a grant, by this broker, the CLI or another replica. The broker reads it
//! at most once per [`RECHECK`] (a single caller at a time does, the others use what is kept);
//! when it moved, everything kept is dropped. A revocation made through this broker drops
//! everything at once. So a revocation takes effect here at once when made here, and within
//! [`RECHECK`] plus one store read when made elsewhere; an expiry is checked on every call.

use super::{Broker, Caller};
use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, Tool};
use airlock_store::agents::agent_token_key;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How stale the kept identities may be, at most, for a change made by another process.
pub const RECHECK: Duration = Duration::from_millis(100);
/// Most agents kept; past it, everything kept is dropped and filled again from the store.
pub const MAX_KEPT: usize = 10_000;

struct Kept {
    token_hash: [u8; 32],
    caller: Caller,
}

/// Authenticated agents by agent id, valid for one identity generation.
pub(crate) struct Identities {
    kept: Mutex<HashMap<String, Kept>>,
    /// The generation the kept entries belong to; `i64::MIN` before the first read.
    generation: AtomicI64,
    /// When the generation was last read, in ms since `epoch`.
    checked_ms: AtomicU64,
    checking: AtomicBool,
    epoch: Instant,
}

impl Default for Identities {
    fn default() -> Self {
        Identities {
            kept: Mutex::new(HashMap::new()),
            generation: AtomicI64::new(i64::MIN),
            checked_ms: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

impl Identities {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops everything kept (after a change made through this broker).
    pub(crate) fn forget_all(&self) {
        self.lock().clear();
        // The next call reads the generation again before trusting anything.
        self.generation.store(i64::MIN, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// True when the generation is due for a read and this caller is the one to do it.
    fn claim_check(&self) -> bool {
        let due = self.generation.load(Ordering::Acquire) == i64::MIN
            || self.now_ms().saturating_sub(self.checked_ms.load(Ordering::Acquire)) >= RECHECK.as_millis() as u64;
        due && self.checking.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Records the generation just read; drops everything kept when it moved.
    fn checked(&self, generation: i64) {
        if self.generation.swap(generation, Ordering::AcqRel) != generation {
            self.lock().clear();
        }
        self.checked_ms.store(self.now_ms(), Ordering::Release);
        self.checking.store(false, Ordering::Release);
    }

    fn get(&self, id: &str, token_hash: &[u8; 32]) -> Option<Caller> {
        let kept = self.lock();
        let k = kept.get(id)?;
        bool::from(k.token_hash.ct_eq(token_hash)).then(|| k.caller.clone())
    }

    /// Keeps `caller`, read from the store under generation `read_under`, unless the
    /// generation has moved since (what was read may be stale).
    fn keep(&self, read_under: i64, token_hash: [u8; 32], caller: &Caller) {
        let mut kept = self.lock();
        if read_under == i64::MIN || self.generation.load(Ordering::Acquire) != read_under {
            return;
        }
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(caller.agent.id.clone(), Kept { token_hash, caller: caller.clone() });
    }

    /// Agents kept now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn internal(e: airlock_store::StoreError) -> CallError {
    CallError::new(ErrorCode::Internal).detail(e.to_string())
}

impl Broker {
    /// The store's identity generation, read again when the last read is older than
    /// [`RECHECK`] (one reader at a time; the others use the last one read).
    pub(crate) async fn current_identity_generation(&self) -> Result<i64, CallError> {
        let ids = &self.identities;
        if ids.claim_check() {
            // Boxed, as every store read on a call's cold path: see `broker::call` ("Small
            // futures").
            match Box::pin(self.store.identity_generation()).await {
                Ok(g) => ids.checked(g),
                Err(e) => {
                    ids.forget_all();
                    ids.checking.store(false, Ordering::Release);
                    return Err(internal(e));
                }
            }
        }
        Ok(ids.generation.load(Ordering::Acquire))
    }

    /// Authenticates a bearer token: from the agents kept in memory when the token is known and
    /// nothing changed, else from the store; a JWT of a trusted issuer through `issuers.rs`.
    /// Timed as the `authenticate` stage of a call.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, CallError> {
        let started = std::time::Instant::now();
        // Under the front end's call span, when it opened one ([`super::spans`]).
        let span = super::spans::stage_here(super::metrics::Stage::Authenticate);
        let r = tracing::Instrument::instrument(self.authenticate_token(token), span).await;
        self.metrics.stage(super::metrics::Stage::Authenticate, started.elapsed().as_secs_f64());
        r
    }

    async fn authenticate_token(&self, token: Option<&str>) -> Result<Caller, CallError> {
        let token = token.ok_or_else(|| CallError::new(ErrorCode::Unauthenticated))?;
        let Some((id, hash)) = agent_token_key(token) else {
            // Not an airlock token: a token of a trusted issuer, if any is configured (T30).
            if self.issuers.any() && super::issuers::looks_like_jwt(token) {
                return Box::pin(self.authenticate_jwt(token)).await;
            }
            return Err(CallError::new(ErrorCode::Unauthenticated));
        };
        let ids = &self.identities;
        self.current_identity_generation().await?;
        if let Some(c) = ids.get(&id, &hash) {
            // The store's rule: expired once `expires_at <= now`, both RFC 3339 UTC with µs.
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            if c.agent.expires_at.as_deref().is_none_or(|exp| exp > now.as_str()) {
                return Ok(c);
            }
            // Expired: forgotten here, and ended for good by the store's check below, so that a
            // clock set back does not revive it.
            ids.forget_all();
        }
        let read_under = ids.generation.load(Ordering::Acquire);
        let (caller, previous) = Box::pin(self.authenticate_in_store(token)).await?;
        // A token replaced by a rotation works until its overlap ends: never kept, so that its
        // end is read from the store on every call.
        if !previous {
            ids.keep(read_under, hash, &caller);
        }
        Ok(caller)
    }

    /// [`Broker::authenticate`] with no memory: the agent, its parent chain and a sub-agent's
    /// grants, read from the store; and whether the token is the agent's previous one.
    async fn authenticate_in_store(&self, token: &str) -> Result<(Caller, bool), CallError> {
        let (agent, previous) =
            self.store.authenticate_token(token).await.map_err(internal)?.ok_or_else(|| CallError::new(ErrorCode::Unauthenticated))?;
        let parents = self.store.parent_chain(&agent).await.map_err(internal)?;
        let grants = match agent.parent {
            None => None,
            Some(_) => Some(self.store.agent_grants(&agent.id).await.map_err(internal)?),
        };
        Ok((Caller { agent, parents, grants, peer: None, signed_in: None, elicit_url: false }, previous))
    }

    /// Agents authenticated and kept in memory now (for tests and metrics).
    pub fn identities_kept(&self) -> usize {
        self.identities.len()
    }

    /// [`Broker::decide`] on a handle a request for a secret proposes: only an agent of the
    /// configuration (a sub-agent's grants name configured handles only), by its own policies.
    pub fn decide_requested(&self, caller: &Caller, tool: Tool, handle: &Handle) -> airlock_policy::Decision {
        if !caller.scope_allows(tool) || caller.grants.is_some() {
            return airlock_policy::Decision { allowed: false, policies: vec![], errors: vec![] };
        }
        self.policy().decide_requested(&caller.agent.name, tool, handle)
    }

    /// The policy decision for `caller`. An agent of the configuration is decided by Cedar under
    /// its name; a sub-agent needs the grant in its own list *and* Cedar's permit for the root of
    /// its chain, so it can never be wider than its ancestors (T16).
    pub fn decide(&self, caller: &Caller, tool: Tool, handle: &Handle) -> airlock_policy::Decision {
        self.decide_in(&self.policy(), caller, tool, handle)
    }

    /// [`Broker::decide`] under `policy` (a call decides under the policies it started with).
    pub(crate) fn decide_in(&self, policy: &airlock_policy::PolicyEngine, caller: &Caller, tool: Tool, handle: &Handle) -> airlock_policy::Decision {
        // A token whose scopes do not name the tool: nothing else can allow it.
        if !caller.scope_allows(tool) {
            return airlock_policy::Decision { allowed: false, policies: vec![], errors: vec![] };
        }
        match &caller.grants {
            None => policy.decide(&caller.agent.name, tool, handle),
            Some(g) => {
                let granted = g.iter().any(|(h, t)| h == handle.name.as_str() && t == tool.name());
                match (granted, caller.parents.last()) {
                    (true, Some(root)) => policy.decide(root, tool, handle),
                    _ => airlock_policy::Decision { allowed: false, policies: vec![], errors: vec![] },
                }
            }
        }
    }
}
