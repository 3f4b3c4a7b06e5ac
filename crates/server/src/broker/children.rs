//! Sub-agents: a parent creates a child identity with its own token and grants no wider than
//! its own (checked against the parent's effective permissions, not trusted). Nothing of the
//! parent's (token, leases, resolved secrets) reaches the child: leases are bound to the agent
//! that asked for them, so a child naming its parent's lease gets `handle-unavailable`.
//!
//! A child is never wider than its parent in budget either (T27): its calls count against its
//! own bucket and every ancestor's (all or nothing), at a rate clamped to its root's; an agent
//! has at most `max_children` live children, chains are at most `max_child_depth` deep
//! (`child-limit`), and creations are rate-limited over the whole chain (`rate-limited`).

use super::{Broker, Caller};
use airlock_core::config::MAX_CHILD_DEPTH;
use airlock_core::{CallError, ErrorCode, HandleName, Tool};
use serde::Deserialize;
use serde_json::{json, Value};

/// Serializes the count-then-create of sub-agents in this process, so that concurrent requests
/// cannot together pass the live-children limit.
#[derive(Debug, Default)]
pub(crate) struct ChildState {
    create: tokio::sync::Mutex<()>,
}

/// The limits that apply to `caller`'s tree, from its root agent's configuration or `[limits]`.
struct TreeLimits {
    /// The root agent's own calls per minute.
    root_rate: u32,
    /// Calls per minute of every sub-agent of the tree (clamped to `root_rate`).
    child_rate: u32,
    /// Live children per agent.
    max_children: u32,
    /// Deepest chain.
    max_depth: usize,
}

/// One requested grant of a child.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildGrant {
    /// The handle.
    pub handle: String,
    /// Tool names.
    pub tools: Vec<String>,
}

/// `POST /v1/agents/self/children`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildRequest {
    /// The child's name (agent-name grammar; not the name of an agent of the configuration).
    pub name: String,
    /// Its grants: each must be one the parent holds.
    #[serde(default)]
    pub grants: Vec<ChildGrant>,
    /// Lifetime; never past the parent's own expiry.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

impl Broker {
    /// The limits of the tree `caller` belongs to (its root is the last of its parents, or
    /// itself).
    fn tree_limits(&self, caller: &Caller) -> TreeLimits {
        let root = caller.parents.last().unwrap_or(&caller.agent.name);
        let all = self.cfg();
        let cfg = all.agents.get(root);
        let root_rate = cfg.and_then(|a| a.rate_per_minute).unwrap_or(all.limits.rate_per_minute);
        TreeLimits {
            root_rate,
            child_rate: cfg.and_then(|a| a.child_rate_per_minute).unwrap_or(root_rate).min(root_rate),
            max_children: cfg.and_then(|a| a.max_children).unwrap_or(self.cfg().limits.max_children),
            max_depth: cfg.and_then(|a| a.max_child_depth).unwrap_or(self.cfg().limits.max_child_depth).min(MAX_CHILD_DEPTH) as usize,
        }
    }

    /// The call budgets a call by `caller` takes from: its own and each ancestor's, `(agent
    /// name, calls per minute)`, nearest first. An agent of the configuration has only its own.
    pub(crate) fn rate_chain<'c>(&self, caller: &'c Caller) -> Vec<(&'c str, u32)> {
        let t = self.tree_limits(caller);
        let chain = std::iter::once(caller.agent.name.as_str()).chain(caller.parents.iter().map(String::as_str));
        let n = caller.parents.len();
        chain.enumerate().map(|(i, name)| (name, if i == n { t.root_rate } else { t.child_rate })).collect()
    }

    /// Takes one call from `caller`'s budget and every ancestor's; false when any is spent.
    pub(crate) fn take_call(&self, caller: &Caller) -> bool {
        self.limits.calls.check_all(&self.rate_chain(caller))
    }

    /// Live (not revoked, not expired) direct children of agent `id`.
    async fn live_children(&self, id: &str) -> Result<usize, CallError> {
        let now = airlock_store::leases::stamp(chrono::Utc::now());
        let agents = self.store.list_agents().await.map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        Ok(agents
            .iter()
            .filter(|a| a.parent.as_deref() == Some(id) && a.revoked_at.is_none())
            .filter(|a| a.expires_at.as_ref().is_none_or(|e| e.as_str() > now.as_str()))
            .count())
    }

    /// Creates a sub-agent of `parent`. The token is in the result, shown once.
    pub async fn create_child(&self, parent: &Caller, req: &ChildRequest) -> Result<Value, CallError> {
        let refused = |m: &str| CallError::with_message(ErrorCode::GrantNotAllowed, m.to_owned());
        if !airlock_core::config::valid_agent_name(&req.name) {
            return Err(CallError::with_message(
                ErrorCode::InvalidArguments,
                "a name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter",
            ));
        }
        // A child named like an agent of the configuration would be mistaken for it by whoever
        // reads the audit log or writes a policy for that name (T16).
        if self.cfg().agents.contains_key(&req.name) {
            return Err(CallError::with_message(ErrorCode::Conflict, "that name belongs to a configured agent"));
        }
        let limits = self.tree_limits(parent);
        // Every attempt counts, against the parent and each of its ancestors.
        let per_minute = self.cfg().limits.children_per_minute;
        let chain: Vec<(&str, u32)> = self.rate_chain(parent).into_iter().map(|(n, _)| (n, per_minute)).collect();
        if !self.limits.children.check_all(&chain) {
            return Err(CallError::with_message(ErrorCode::RateLimited, "too many sub-agents created; retry later"));
        }
        if parent.parents.len() + 1 > limits.max_depth {
            return Err(CallError::with_message(ErrorCode::ChildLimit, format!("sub-agents are at most {} deep here", limits.max_depth)));
        }
        let mut grants: Vec<(String, String)> = Vec::new();
        let cfg = self.cfg();
        for g in &req.grants {
            // Unknown handles, unknown tools and grants the parent lacks: one answer.
            let handle = HandleName::parse(&g.handle)
                .ok()
                .and_then(|n| cfg.handles.get(&n))
                .ok_or_else(|| CallError::new(ErrorCode::GrantNotAllowed))?;
            if g.tools.is_empty() {
                return Err(CallError::with_message(ErrorCode::InvalidArguments, "a grant names at least one tool"));
            }
            for t in &g.tools {
                let tool = Tool::parse(t).ok_or_else(|| CallError::new(ErrorCode::GrantNotAllowed))?;
                if !self.decide(parent, tool, handle).allowed {
                    return Err(CallError::new(ErrorCode::GrantNotAllowed));
                }
                grants.push((handle.name.to_string(), tool.name().to_owned()));
            }
        }
        let now = chrono::Utc::now();
        let mut expires_at = req
            .ttl_seconds
            .map(|s| airlock_store::leases::stamp(now + chrono::Duration::seconds(s.min(10 * 365 * 86400) as i64)));
        if let Some(pe) = &parent.agent.expires_at {
            match &expires_at {
                Some(e) if e.as_str() > pe.as_str() => return Err(refused("a sub-agent cannot outlive its parent")),
                Some(_) => {}
                None => expires_at = Some(pe.clone()),
            }
        }
        // Count and create under one lock, so that concurrent requests cannot pass the limit.
        let _one_at_a_time = self.children.create.lock().await;
        if self.live_children(&parent.agent.id).await? >= limits.max_children as usize {
            return Err(CallError::with_message(
                ErrorCode::ChildLimit,
                format!("an agent here has at most {} live sub-agents", limits.max_children),
            ));
        }
        let (agent, token) = match self.store.add_agent(&req.name, Some(&parent.agent.id), expires_at.as_deref()).await {
            Ok(v) => v,
            Err(airlock_store::StoreError::Conflict(_)) => {
                return Err(CallError::with_message(ErrorCode::Conflict, "a live agent has that name"))
            }
            Err(e) => return Err(CallError::new(ErrorCode::Internal).detail(e.to_string())),
        };
        if let Err(e) = self.store.set_agent_grants(&agent.id, &grants).await {
            let _ = self.store.revoke_agent(&agent.id).await;
            return Err(CallError::new(ErrorCode::Internal).detail(e.to_string()));
        }
        let mut chain = vec![parent.agent.name.clone()];
        chain.extend(parent.parents.iter().cloned());
        let grants_json: Vec<Value> = grants.iter().map(|(h, t)| json!({"handle": h, "tool": t})).collect();
        Ok(json!({
            "agent_id": agent.id,
            "name": agent.name,
            "token": token.reveal(),
            "parent_chain": chain,
            "expires_at": agent.expires_at,
            "grants": grants_json,
        }))
    }
}
