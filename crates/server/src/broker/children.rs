//! Sub-agents: a parent creates a child identity with its own token and grants no wider than
//! its own (checked against the parent's effective permissions, not trusted). Nothing of the
//! parent's (token, leases, resolved secrets) reaches the child: leases are bound to the agent
//! that asked for them, so a child naming its parent's lease gets `handle-unavailable`.

use super::{Broker, Caller};
use airlock_core::{CallError, ErrorCode, HandleName, Tool};
use serde::Deserialize;
use serde_json::{json, Value};

/// Deepest chain of sub-agents below an agent of the configuration.
const MAX_DEPTH: usize = 8;

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
        if self.cfg.agents.contains_key(&req.name) {
            return Err(CallError::with_message(ErrorCode::Conflict, "that name belongs to a configured agent"));
        }
        if parent.parents.len() + 1 > MAX_DEPTH {
            return Err(refused("the chain of sub-agents is too deep"));
        }
        let mut grants: Vec<(String, String)> = Vec::new();
        for g in &req.grants {
            // Unknown handles, unknown tools and grants the parent lacks: one answer.
            let handle = HandleName::parse(&g.handle)
                .ok()
                .and_then(|n| self.cfg.handles.get(&n))
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
