//! Who is calling and what they may do: bearer tokens to agents, and the policy decision for an
//! agent (or a sub-agent, bounded by its chain) on a tool and a handle.

use super::{Broker, Caller};
use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, Tool};

impl Broker {
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
}
