//! Human approval bound to the exact call (README, "Approvals").
//!
//! A handle's `[approval]` rule marks some calls as needing a person's approval. Such a call is
//! held: nothing runs, the agent gets `approval-required` with an approval id and the page where
//! an approver decides. The approval binds a hash of the agent (id, name, parent chain), the
//! tool, the handle, the canonical arguments and the policy version, plus its own id and expiry.
//! When the agent repeats the call, an approved approval whose binding matches is used (once,
//! by a conditional UPDATE) and the call runs; any other call, another agent, or the same call
//! under another policy version matches nothing and needs a new approval.
//!
//! Approvers authenticate with their own `apr_` tokens; an agent token is refused on every
//! approval endpoint. The request (the `approval-required` refusal), the decision and the
//! execution are three audit records carrying the same approval id.

use super::{Broker, Caller};
use airlock_core::config::ApprovalRule;
use airlock_core::{CallError, CallFacts, ErrorCode, HandleName, Tool};
use airlock_store::approvals::{Approval, ApprovalStatus, Approver, DecideOutcome, NewApproval};
use airlock_store::audit::{AuditRecord, Decision};
use ring::digest;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Why a call needs approval under `rule`, or None when it does not.
pub(crate) fn reason(rule: &ApprovalRule, tool: Tool, facts: &CallFacts) -> Option<String> {
    if rule.always {
        return Some("every call on this handle needs approval".into());
    }
    if rule.writes && facts.writes && matches!(tool, Tool::QueryDb | Tool::HttpRequest) {
        return Some("this call changes data".into());
    }
    if tool == Tool::SendEmail && rule.recipients_outside.is_some() {
        if let Some(r) = facts.recipients.iter().find(|r| rule.recipient_outside(r)) {
            return Some(format!("recipient {r} is outside the approved domains"));
        }
    }
    if let (Tool::RequestLease, Some(limit), Some(ttl)) = (tool, rule.lease_ttl_over_seconds, facts.lease_ttl) {
        if ttl > limit {
            return Some(format!("a lease of {ttl} s is longer than {limit} s"));
        }
    }
    None
}

/// Canonical JSON: object keys sorted (by their UTF-8 bytes) at every depth, no whitespace, so
/// that the same arguments always hash alike whatever their order on the wire.
pub fn canonical_json(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("JSON string"));
                    out.push(':');
                    walk(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&serde_json::to_string(other).expect("JSON scalar")),
        }
    }
    let mut s = String::new();
    walk(v, &mut s);
    s
}

fn field(ctx: &mut digest::Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

/// One exact call, as an approval binds it.
#[derive(Debug, Clone, Copy)]
pub struct CallKey<'a> {
    /// The agent's id.
    pub agent_id: &'a str,
    /// The agent's name.
    pub agent_name: &'a str,
    /// Its parent chain, nearest first.
    pub parents: &'a [String],
    /// The tool.
    pub tool: &'a str,
    /// The handle.
    pub handle: &'a str,
    /// The arguments (hashed in canonical form).
    pub args: &'a Value,
}

/// The hash of one exact call: agent, parent chain, tool, handle, canonical arguments, policy
/// version. Every field is length-prefixed, so no two different calls encode alike.
pub fn call_hash(k: &CallKey<'_>, policy_version: &str) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"airlock-approval-call-v1");
    field(&mut ctx, k.agent_id.as_bytes());
    field(&mut ctx, k.agent_name.as_bytes());
    field(&mut ctx, (k.parents.len() as u64).to_be_bytes().as_slice());
    for p in k.parents {
        field(&mut ctx, p.as_bytes());
    }
    field(&mut ctx, k.tool.as_bytes());
    field(&mut ctx, k.handle.as_bytes());
    field(&mut ctx, canonical_json(k.args).as_bytes());
    field(&mut ctx, policy_version.as_bytes());
    ctx.finish().as_ref().to_vec()
}

/// The binding stored with an approval: its id, the call's hash and its expiry.
pub fn binding(id: &str, call_hash: &[u8], expires_at_ms: i64) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"airlock-approval-binding-v1");
    field(&mut ctx, id.as_bytes());
    field(&mut ctx, call_hash);
    ctx.update(&expires_at_ms.to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// The policy version approvals are bound to: the Cedar policy set's version and the parts of
/// the configuration that decide what a call may do (handles, agents, leases, approval rules).
pub(crate) fn policy_version(policy: &str, cfg: &airlock_core::config::Config) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"airlock-approval-policy-v1");
    field(&mut ctx, policy.as_bytes());
    field(&mut ctx, format!("{:?}", cfg.handles).as_bytes());
    field(&mut ctx, format!("{:?}", cfg.agents).as_bytes());
    field(&mut ctx, format!("{:?}", cfg.leases).as_bytes());
    field(&mut ctx, format!("{:?}", cfg.approvals).as_bytes());
    hex::encode(ctx.finish().as_ref())
}

fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The broker's approval state: the version approvals are bound to, the wake-up of calls
/// waiting for a decision, and the locks that make create-or-join of a pending approval atomic.
#[derive(Debug, Default)]
pub(crate) struct ApprovalState {
    /// Wakes calls waiting for an approval decision.
    pub(crate) wake: tokio::sync::Notify,
    /// One lock per call hash at the gate right now (an entry lives only while a call holds or
    /// waits for it), so that identical concurrent first calls create one pending approval.
    gates: std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

impl ApprovalState {
    /// Waits for, and holds, the gate of the call with hash `hash`.
    async fn gate_lock(&self, hash: &[u8]) -> GateLock<'_> {
        let lock = {
            let mut m = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(hash.to_vec()).or_default().clone()
        };
        GateLock { state: self, hash: hash.to_vec(), guard: Some(lock.lock_owned().await) }
    }
}

/// The held gate of one call hash; dropping it lets the next identical call in and forgets the
/// lock when no call waits for it.
struct GateLock<'a> {
    state: &'a ApprovalState,
    hash: Vec<u8>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for GateLock<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut m = self.state.gates.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&self.hash).is_some_and(|l| Arc::strong_count(l) == 1) {
            m.remove(&self.hash);
        }
    }
}

/// A call at the approval gate: who, which tool on which handle, with what, under which rule.
#[derive(Clone, Copy)]
pub(crate) struct GateCall<'a> {
    pub caller: &'a Caller,
    pub tool: Tool,
    pub handle: &'a HandleName,
    pub args: &'a Value,
    pub rule: &'a ApprovalRule,
    /// The policy version the call was checked under (a reload may have moved it since).
    pub policy_version: &'a str,
}

/// A refusal of the gate: the error, and the approval it is about.
pub(crate) struct Held {
    pub error: CallError,
    pub approval_id: String,
    pub ticket: Value,
}

impl Broker {
    /// The version approvals are bound to: a hash of the Cedar policy set and of the handles,
    /// agents, lease policies and approval rules. A change invalidates every approval.
    pub fn policy_version(&self) -> String {
        self.live().approval_version.clone()
    }

    /// The page where an approver decides approval `id`.
    pub fn approval_url(&self, id: &str) -> String {
        format!("{}/approve/{id}", self.share_base_url())
    }

    fn ticket(&self, id: &str, status: ApprovalStatus, expires_at: i64) -> Value {
        json!({"id": id, "url": self.approval_url(id), "status": status.as_str(), "expires_at": rfc3339_ms(expires_at),
               "expires_in_seconds": ((expires_at - now_ms()).max(0) + 999) / 1000})
    }

    /// The gate of a call that needs approval: uses a matching approved approval (then returns
    /// its id and the call runs), or holds the call (creating or reusing a pending approval and,
    /// when the rule says so, waiting for the decision).
    pub(crate) async fn approval_gate(&self, call: &GateCall<'_>, why: String) -> Result<String, Box<Held>> {
        let GateCall { caller, tool, handle, args, rule, policy_version } = *call;
        let internal = |e: airlock_store::StoreError| {
            Box::new(Held { error: CallError::new(ErrorCode::Internal).detail(e.to_string()), approval_id: String::new(), ticket: Value::Null })
        };
        let a = &caller.agent;
        let key = CallKey { agent_id: &a.id, agent_name: &a.name, parents: &caller.parents, tool: tool.name(), handle: handle.as_str(), args };
        // The version the call was checked under, even if a reload swapped the policies since.
        let version = policy_version;
        let hash = call_hash(&key, version);
        // Read and create under the call's lock: of identical concurrent first calls, one
        // creates the pending approval and the others find it (T29).
        let gate = self.approvals.gate_lock(&hash).await;
        let now = now_ms();
        let rows = self.store().approvals_for_call(&hash, now).await.map_err(internal)?;
        for r in rows.iter().filter(|r| r.status == ApprovalStatus::Approved) {
            if let Some(id) = self.try_consume(r, &hash, now).await.map_err(internal)? {
                return Ok(id);
            }
        }
        if let Some(r) = rows.iter().find(|r| r.status == ApprovalStatus::Denied) {
            return Err(Box::new(Held {
                error: CallError::new(ErrorCode::ApprovalDenied),
                approval_id: r.id.clone(),
                ticket: self.ticket(&r.id, ApprovalStatus::Denied, r.expires_at),
            }));
        }
        let (id, expires_at) = match rows.iter().find(|r| r.status == ApprovalStatus::Pending) {
            Some(r) => (r.id.clone(), r.expires_at),
            None => {
                let id = new_id();
                let expires_at = now + rule.expires_in_seconds as i64 * 1000;
                let mut shown = args.clone();
                self.scrubber().scrub_json(&mut shown);
                let b = binding(&id, &hash, expires_at);
                let rec = NewApproval {
                    id: &id,
                    call_hash: &hash,
                    binding: &b,
                    agent_id: &a.id,
                    agent_name: &a.name,
                    parent_chain: &caller.parents,
                    tool: tool.name(),
                    handle: handle.as_str(),
                    arguments: &shown,
                    reason: &why,
                    policy_version: version,
                    created_at: now,
                    expires_at,
                };
                self.store().create_approval(&rec).await.map_err(internal)?;
                if let Some(url) = &rule.webhook {
                    let payload = json!({
                        "approval_id": id,
                        "url": self.approval_url(&id),
                        "agent": a.name,
                        "parent_chain": caller.parents,
                        "tool": tool.name(),
                        "handle": handle.as_str(),
                        "reason": why,
                        "expires_at": rfc3339_ms(expires_at),
                    });
                    notify_webhook(url.clone(), id.clone(), payload);
                }
                (id, expires_at)
            }
        };
        drop(gate);
        if rule.wait_seconds > 0 {
            let deadline = Instant::now() + Duration::from_secs(rule.wait_seconds);
            loop {
                let notified = self.approvals.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let now = now_ms();
                let Some(r) = self.store().approval(&id, now).await.map_err(internal)? else { break };
                match r.status {
                    ApprovalStatus::Approved => {
                        if let Some(id) = self.try_consume(&r, &hash, now).await.map_err(internal)? {
                            return Ok(id);
                        }
                        break;
                    }
                    ApprovalStatus::Denied => {
                        return Err(Box::new(Held {
                            error: CallError::new(ErrorCode::ApprovalDenied),
                            approval_id: id.clone(),
                            ticket: self.ticket(&id, ApprovalStatus::Denied, r.expires_at),
                        }))
                    }
                    ApprovalStatus::Pending => {}
                    ApprovalStatus::Used | ApprovalStatus::Expired => break,
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Decisions made by another process are seen by polling.
                let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
            }
        }
        Err(Box::new(Held {
            error: CallError::new(ErrorCode::ApprovalRequired),
            ticket: self.ticket(&id, ApprovalStatus::Pending, expires_at),
            approval_id: id,
        }))
    }

    /// Uses `r` if its stored binding is the one this call computes.
    async fn try_consume(&self, r: &Approval, hash: &[u8], now: i64) -> Result<Option<String>, airlock_store::StoreError> {
        let expected = binding(&r.id, hash, r.expires_at);
        if expected != r.binding {
            tracing::warn!(approval = %r.id, "approval binding does not match its call; not used");
            return Ok(None);
        }
        Ok(self.store().consume_approval(&r.id, &expected, now).await?.then(|| r.id.clone()))
    }

    /// Authenticates an approver token (never an agent token).
    pub async fn authenticate_approver(&self, token: Option<&str>) -> Result<Approver, CallError> {
        let token = token.ok_or_else(|| CallError::new(ErrorCode::Unauthenticated))?;
        self.store()
            .authenticate_approver(token)
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?
            .ok_or_else(|| CallError::new(ErrorCode::Unauthenticated))
    }

    /// An approval as an approver sees it.
    pub async fn approval_view(&self, id: &str) -> Result<Value, CallError> {
        if !valid_id(id) {
            return Err(CallError::new(ErrorCode::NotFound));
        }
        let a = self
            .store()
            .approval(id, now_ms())
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?
            .ok_or_else(|| CallError::new(ErrorCode::NotFound))?;
        let mut v = json!({
            "id": a.id,
            "status": a.status.as_str(),
            "agent": a.agent,
            "parent_chain": a.parent_chain,
            "tool": a.tool,
            "handle": a.handle,
            "arguments": a.arguments,
            "reason": a.reason,
            "created_at": rfc3339_ms(a.created_at),
            "expires_at": rfc3339_ms(a.expires_at),
            "decided_at": a.decided_at.map(rfc3339_ms),
            "approver": a.approver,
            "used_at": a.used_at.map(rfc3339_ms),
            "current_policy": a.policy_version == self.policy_version(),
        });
        // Scrubbed again with the secrets known now.
        self.scrubber().scrub_json(&mut v);
        Ok(v)
    }

    /// Records `approver`'s decision on pending approval `id`, and audits it.
    ///
    /// Its record is written before the decision lands, as a call's intent record before the
    /// call runs (outcome `started`), then its result under the same request id: a broker killed
    /// between the two leaves a record of a decision that may not have landed, never an approved
    /// call with no record of who approved it.
    pub async fn decide_approval(&self, approver: &Approver, id: &str, approve: bool) -> Result<Value, CallError> {
        if !valid_id(id) {
            return Err(CallError::new(ErrorCode::NotFound));
        }
        let ie = |e: airlock_store::StoreError| CallError::new(ErrorCode::Internal).detail(e.to_string());
        let not_pending = || {
            CallError::with_message(
                ErrorCode::Conflict,
                "this approval was already decided, used, has expired, or was made under another policy version",
            )
        };
        let now = now_ms();
        let a = self.store().approval(id, now).await.map_err(ie)?.ok_or_else(|| CallError::new(ErrorCode::NotFound))?;
        if a.status != ApprovalStatus::Pending || a.policy_version != self.policy_version() {
            return Err(not_pending());
        }
        let mut rec = AuditRecord {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: uuid::Uuid::now_v7().to_string(),
            agent: format!("approver:{}", approver.name),
            parent_chain: vec![],
            tool: if approve { "approve_call" } else { "deny_call" }.into(),
            handle: Some(a.handle.clone()),
            arguments: json!({"approval_id": id, "for_agent": a.agent, "for_parent_chain": a.parent_chain, "for_tool": a.tool}),
            decision: Decision::Allow,
            code: None,
            outcome: "started".into(),
            result_bytes: 0,
            redactions: 0,
            duration_us: 0,
            policies: vec![],
            approval: Some(id.to_owned()),
            peer: None,
            sandbox: None,
            identity: None,
            key_handover: None,
        };
        if let Err(e) = self.audit.append(rec.clone()).await {
            tracing::error!(approval = %id, error = %e, "decision not audited; not made");
            return Err(CallError::new(ErrorCode::AuditUnavailable));
        }
        let outcome = self.store().decide_approval(id, approve, &approver.name, now, &self.policy_version()).await;
        rec.ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let refused = match outcome {
            Ok(DecideOutcome::Decided) => None,
            Ok(DecideOutcome::NotFound) => Some(CallError::new(ErrorCode::NotFound)),
            // Decided by someone else, or expired, since it was read.
            Ok(DecideOutcome::NotPending) => Some(not_pending()),
            Err(e) => Some(ie(e)),
        };
        if let Some(err) = refused {
            rec.code = Some(err.code.as_str().to_owned());
            rec.outcome = "error".into();
            if let Err(e) = self.audit.append(rec).await {
                tracing::warn!(approval = %id, error = %e, "refused decision not audited");
            }
            return Err(err);
        }
        rec.outcome = "ok".into();
        if let Err(e) = self.audit.append(rec).await {
            // A decision whose result cannot be recorded does not stand.
            tracing::error!(approval = %id, error = %e, "decision not audited; reverting it");
            let _ = self.store().revert_decision(id).await;
            return Err(CallError::new(ErrorCode::AuditUnavailable));
        }
        self.approvals.wake.notify_waiters();
        self.approval_view(id).await
    }

    /// The approvals waiting for a decision, as an approver lists them (scrubbed).
    pub async fn pending_approvals(&self) -> Result<Value, CallError> {
        let list = self
            .store()
            .pending_approvals(now_ms())
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        let items: Vec<Value> = list
            .iter()
            .map(|a| json!({"id": a.id, "agent": a.agent, "tool": a.tool, "handle": a.handle, "reason": a.reason,
                            "expires_at": rfc3339_ms(a.expires_at), "url": self.approval_url(&a.id)}))
            .collect();
        let mut v = Value::Array(items);
        self.scrubber().scrub_json(&mut v);
        Ok(v)
    }
}

/// Posts `payload` (it names the call; the arguments stay behind the authenticated page) to an
/// approval rule's webhook, in the background.
fn notify_webhook(url: String, id: String, payload: Value) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => return tracing::warn!(approval = %id, error = %e, "approval webhook client"),
        };
        match client.post(&url).json(&payload).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(approval = %id, status = %r.status(), "approval webhook refused the notice"),
            Err(e) => tracing::warn!(approval = %id, error = %e.without_url(), "approval webhook failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":"s"}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[{"c":2,"d":1}]},"b":1}"#);
    }

    fn rule() -> ApprovalRule {
        ApprovalRule {
            always: false,
            writes: false,
            recipients_outside: None,
            lease_ttl_over_seconds: None,
            expires_in_seconds: 60,
            wait_seconds: 0,
            webhook: None,
        }
    }

    #[test]
    fn each_condition_holds_only_the_calls_it_names() {
        let writes = ApprovalRule { writes: true, ..rule() };
        let w = CallFacts { writes: true, ..Default::default() };
        let r = CallFacts::default();
        assert!(reason(&writes, Tool::QueryDb, &w).is_some());
        assert!(reason(&writes, Tool::HttpRequest, &w).is_some());
        assert!(reason(&writes, Tool::QueryDb, &r).is_none());
        let mail = ApprovalRule { recipients_outside: Some(vec!["@example.com".into(), "ceo@partner.org".into()]), ..rule() };
        let inside = CallFacts { recipients: vec!["a@example.com".into(), "CEO@partner.org".into()], ..Default::default() };
        let outside = CallFacts { recipients: vec!["a@example.com".into(), "x@evil.example".into()], ..Default::default() };
        assert!(reason(&mail, Tool::SendEmail, &inside).is_none());
        assert!(reason(&mail, Tool::SendEmail, &outside).unwrap().contains("x@evil.example"));
        let lease = ApprovalRule { lease_ttl_over_seconds: Some(600), ..rule() };
        assert!(reason(&lease, Tool::RequestLease, &CallFacts { lease_ttl: Some(600), ..Default::default() }).is_none());
        assert!(reason(&lease, Tool::RequestLease, &CallFacts { lease_ttl: Some(601), ..Default::default() }).is_some());
        assert!(reason(&ApprovalRule { always: true, ..rule() }, Tool::RunCommand, &r).is_some());
    }

    #[test]
    fn a_call_hash_changes_with_every_bound_field() {
        fn h<'a>(agent_id: &'a str, agent_name: &'a str, parents: &'a [String], tool: &'a str, handle: &'a str, args: &'a Value) -> CallKey<'a> {
            CallKey { agent_id, agent_name, parents, tool, handle, args }
        }
        let args = json!({"query": "DELETE FROM t WHERE id = ?", "params": [1]});
        let base = call_hash(&h("a1", "bot", &[], "query_db", "DB", &args), "v1");
        let reordered: Value = serde_json::from_str(r#"{"params":[1],"query":"DELETE FROM t WHERE id = ?"}"#).unwrap();
        assert_eq!(base, call_hash(&h("a1", "bot", &[], "query_db", "DB", &reordered), "v1"));
        let others = [
            call_hash(&h("a2", "bot", &[], "query_db", "DB", &args), "v1"),
            call_hash(&h("a1", "bot2", &[], "query_db", "DB", &args), "v1"),
            call_hash(&h("a1", "bot", &["root".into()], "query_db", "DB", &args), "v1"),
            call_hash(&h("a1", "bot", &[], "http_request", "DB", &args), "v1"),
            call_hash(&h("a1", "bot", &[], "query_db", "DB2", &args), "v1"),
            call_hash(&h("a1", "bot", &[], "query_db", "DB", &json!({"query": "DELETE FROM t WHERE id = ?", "params": [2]})), "v1"),
            call_hash(&h("a1", "bot", &[], "query_db", "DB", &args), "v2"),
        ];
        for o in &others {
            assert_ne!(&base, o);
        }
        assert_ne!(binding("x", &base, 1), binding("x", &base, 2));
        assert_ne!(binding("x", &base, 1), binding("y", &base, 1));
    }
}
