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

use crate::broker::{Broker, Caller};
use crate::shares::{harden, PAGE_CSP};
use airlock_core::config::ApprovalRule;
use airlock_core::{CallError, ErrorCode, HandleName, Tool};
use airlock_store::approvals::{Approval, ApprovalStatus, Approver, DecideOutcome, NewApproval};
use airlock_store::audit::{AuditRecord, Decision};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use ring::digest;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APPROVE_HTML: &str = include_str!("../web/approve.html");

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
pub(crate) fn reason(rule: &ApprovalRule, tool: Tool, facts: &CallFacts<'_>) -> Option<String> {
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

/// What an approval rule looks at, taken from the validated call.
#[derive(Debug, Default)]
pub(crate) struct CallFacts<'a> {
    /// The call changes data.
    pub writes: bool,
    /// E-mail recipients (to and cc).
    pub recipients: Vec<&'a str>,
    /// A lease's TTL in seconds.
    pub lease_ttl: Option<u64>,
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

/// The hash of one exact call: agent, parent chain, tool, handle, canonical arguments, policy
/// version. Every field is length-prefixed, so no two different calls encode alike.
pub fn call_hash(agent_id: &str, agent_name: &str, parents: &[String], tool: &str, handle: &str, args: &Value, policy_version: &str) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"airlock-approval-call-v1");
    field(&mut ctx, agent_id.as_bytes());
    field(&mut ctx, agent_name.as_bytes());
    field(&mut ctx, (parents.len() as u64).to_be_bytes().as_slice());
    for p in parents {
        field(&mut ctx, p.as_bytes());
    }
    field(&mut ctx, tool.as_bytes());
    field(&mut ctx, handle.as_bytes());
    field(&mut ctx, canonical_json(args).as_bytes());
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

/// A refusal of the gate: the error, and the approval it is about.
pub(crate) struct Held {
    pub error: CallError,
    pub approval_id: String,
    pub ticket: Value,
}

impl Broker {
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
    pub(crate) async fn approval_gate(
        &self,
        caller: &Caller,
        tool: Tool,
        handle: &HandleName,
        args: &Value,
        rule: &ApprovalRule,
        why: String,
    ) -> Result<String, Box<Held>> {
        let internal = |e: airlock_store::StoreError| {
            Box::new(Held { error: CallError::new(ErrorCode::Internal).detail(e.to_string()), approval_id: String::new(), ticket: Value::Null })
        };
        let a = &caller.agent;
        let hash = call_hash(&a.id, &a.name, &caller.parents, tool.name(), handle.as_str(), args, self.policy_version());
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
                    policy_version: self.policy_version(),
                    created_at: now,
                    expires_at,
                };
                self.store().create_approval(&rec).await.map_err(internal)?;
                if let Some(url) = &rule.webhook {
                    self.notify_webhook(url.clone(), &id, caller, tool, handle, &why, expires_at);
                }
                (id, expires_at)
            }
        };
        if rule.wait_seconds > 0 {
            let deadline = Instant::now() + Duration::from_secs(rule.wait_seconds);
            loop {
                let notified = self.approval_wake().notified();
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

    #[allow(clippy::too_many_arguments)]
    fn notify_webhook(&self, url: String, id: &str, caller: &Caller, tool: Tool, handle: &HandleName, why: &str, expires_at: i64) {
        // The notice names the call; the arguments stay behind the authenticated page.
        let payload = json!({
            "approval_id": id,
            "url": self.approval_url(id),
            "agent": caller.agent.name,
            "parent_chain": caller.parents,
            "tool": tool.name(),
            "handle": handle.as_str(),
            "reason": why,
            "expires_at": rfc3339_ms(expires_at),
        });
        let id = id.to_owned();
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
    pub async fn decide_approval(&self, approver: &Approver, id: &str, approve: bool) -> Result<Value, CallError> {
        if !valid_id(id) {
            return Err(CallError::new(ErrorCode::NotFound));
        }
        let ie = |e: airlock_store::StoreError| CallError::new(ErrorCode::Internal).detail(e.to_string());
        let now = now_ms();
        let a = self.store().approval(id, now).await.map_err(ie)?.ok_or_else(|| CallError::new(ErrorCode::NotFound))?;
        match self.store().decide_approval(id, approve, &approver.name, now, self.policy_version()).await.map_err(ie)? {
            DecideOutcome::Decided => {}
            DecideOutcome::NotFound => return Err(CallError::new(ErrorCode::NotFound)),
            DecideOutcome::NotPending => {
                return Err(CallError::with_message(
                    ErrorCode::Conflict,
                    "this approval was already decided, used, has expired, or was made under another policy version",
                ))
            }
        }
        let rec = AuditRecord {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: uuid::Uuid::now_v7().to_string(),
            agent: format!("approver:{}", approver.name),
            parent_chain: vec![],
            tool: if approve { "approve_call" } else { "deny_call" }.into(),
            handle: Some(a.handle.clone()),
            arguments: json!({"approval_id": id, "for_agent": a.agent, "for_parent_chain": a.parent_chain, "for_tool": a.tool}),
            decision: Decision::Allow,
            code: None,
            outcome: "ok".into(),
            result_bytes: 0,
            redactions: 0,
            duration_us: 0,
            policies: vec![],
            approval: Some(id.to_owned()),
            peer: None,
            sandbox: None,
        };
        if let Err(e) = self.audit_append(rec).await {
            // A decision without its record must not stand.
            tracing::error!(approval = %id, error = %e, "decision not audited; reverting it");
            let _ = self.store().revert_decision(id).await;
            return Err(CallError::new(ErrorCode::AuditUnavailable));
        }
        self.approval_wake().notify_waiters();
        self.approval_view(id).await
    }
}

// ---- HTTP ----

fn json_resp(status: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).expect("JSON")));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    harden(&mut r);
    r
}

fn err_resp(e: &CallError) -> Response {
    json_resp(e.code.http_status(), &json!({"ok": false, "error": {"code": e.code.as_str(), "message": e.message}}))
}

async fn approver_or_refuse(b: &Broker, headers: &HeaderMap, action: &str) -> Result<Approver, Response> {
    match b.authenticate_approver(crate::rest::bearer(headers)).await {
        Ok(a) => Ok(a),
        Err(e) => {
            // Audited like any refused call: someone tried to decide without an approver token.
            let inv = b.refuse(action, e).await;
            Err(json_resp(inv.status(), &inv.to_json()))
        }
    }
}

async fn show(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = b.authenticate_approver(crate::rest::bearer(&headers)).await {
        return err_resp(&e);
    }
    match b.approval_view(&id).await {
        Ok(v) => json_resp(200, &json!({"ok": true, "approval": v})),
        Err(e) => err_resp(&e),
    }
}

async fn decide_route(b: Arc<Broker>, headers: HeaderMap, id: String, approve: bool) -> Response {
    let action = if approve { "approve_call" } else { "deny_call" };
    let approver = match approver_or_refuse(&b, &headers, action).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match b.decide_approval(&approver, &id, approve).await {
        Ok(v) => json_resp(200, &json!({"ok": true, "approval": v})),
        Err(e) => err_resp(&e),
    }
}

async fn approve(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    decide_route(b, headers, id, true).await
}

async fn deny(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    decide_route(b, headers, id, false).await
}

async fn pending(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    if let Err(e) = b.authenticate_approver(crate::rest::bearer(&headers)).await {
        return err_resp(&e);
    }
    match b.store().pending_approvals(now_ms()).await {
        Ok(list) => {
            let items: Vec<Value> = list
                .iter()
                .map(|a| json!({"id": a.id, "agent": a.agent, "tool": a.tool, "handle": a.handle, "reason": a.reason,
                                "expires_at": rfc3339_ms(a.expires_at), "url": b.approval_url(&a.id)}))
                .collect();
            let mut v = json!({"ok": true, "approvals": items});
            b.scrubber().scrub_json(&mut v);
            json_resp(200, &v)
        }
        Err(e) => err_resp(&CallError::new(ErrorCode::Internal).detail(e.to_string())),
    }
}

/// The same bytes for every id: the page fetches the call only with an approver's token.
async fn page() -> Response {
    let mut r = Response::new(Body::from(APPROVE_HTML));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    harden(&mut r);
    debug_assert!(PAGE_CSP.contains("script-src 'self'"));
    r
}

/// The approval routes and page, merged into the REST router.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/approve/{id}", get(page))
        .route("/v1/approvals", get(pending))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
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
        let inside = CallFacts { recipients: vec!["a@example.com", "CEO@partner.org"], ..Default::default() };
        let outside = CallFacts { recipients: vec!["a@example.com", "x@evil.example"], ..Default::default() };
        assert!(reason(&mail, Tool::SendEmail, &inside).is_none());
        assert!(reason(&mail, Tool::SendEmail, &outside).unwrap().contains("x@evil.example"));
        let lease = ApprovalRule { lease_ttl_over_seconds: Some(600), ..rule() };
        assert!(reason(&lease, Tool::RequestLease, &CallFacts { lease_ttl: Some(600), ..Default::default() }).is_none());
        assert!(reason(&lease, Tool::RequestLease, &CallFacts { lease_ttl: Some(601), ..Default::default() }).is_some());
        assert!(reason(&ApprovalRule { always: true, ..rule() }, Tool::RunCommand, &r).is_some());
    }

    #[test]
    fn a_call_hash_changes_with_every_bound_field() {
        let args = json!({"query": "DELETE FROM t WHERE id = ?", "params": [1]});
        let base = call_hash("a1", "bot", &[], "query_db", "DB", &args, "v1");
        let reordered: Value = serde_json::from_str(r#"{"params":[1],"query":"DELETE FROM t WHERE id = ?"}"#).unwrap();
        assert_eq!(base, call_hash("a1", "bot", &[], "query_db", "DB", &reordered, "v1"));
        let others = [
            call_hash("a2", "bot", &[], "query_db", "DB", &args, "v1"),
            call_hash("a1", "bot2", &[], "query_db", "DB", &args, "v1"),
            call_hash("a1", "bot", &["root".into()], "query_db", "DB", &args, "v1"),
            call_hash("a1", "bot", &[], "http_request", "DB", &args, "v1"),
            call_hash("a1", "bot", &[], "query_db", "DB2", &args, "v1"),
            call_hash("a1", "bot", &[], "query_db", "DB", &json!({"query": "DELETE FROM t WHERE id = ?", "params": [2]}), "v1"),
            call_hash("a1", "bot", &[], "query_db", "DB", &args, "v2"),
        ];
        for o in &others {
            assert_ne!(&base, o);
        }
        assert_ne!(binding("x", &base, 1), binding("x", &base, 2));
        assert_ne!(binding("x", &base, 1), binding("y", &base, 1));
    }
}
