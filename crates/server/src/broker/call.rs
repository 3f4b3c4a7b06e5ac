//! The path of one call, as named stages over one [`CallCtx`]:
//!
//! ```text
//! authenticate (front end) → check (tool, handle, policy, rate) → prepare (validate arguments)
//!   → approval gate → send limits → intent record → resolve secret → execute
//!   → scrub → markup → audit → Invocation
//! ```
//!
//! Ordering matters for what an agent can learn: the handle and the policy are checked before
//! the arguments, so an unknown handle and a forbidden one give the same answer
//! (`handle-unavailable`, T13/T16); arguments are validated and limits applied before the secret
//! is resolved or any connection is made (invariant 6); and the audit record is durable before the
//! result is returned; for calls with side effects, an intent record is durable before the
//! action is taken (the call is refused if it cannot be written).
//!
//! Every ending goes through [`Broker::finish`], the one place a result is scrubbed, audited and
//! counted.
//!
//! Small futures: a call's future is moved by value several times before it first runs (a web
//! framework's handler layers, `instrument`), and a move copies all of it, whatever state it is
//! in. So a front end whose framework moves it (REST's axum handler, the MCP handler under rmcp)
//! boxes it once, and every await on a cold path (a store read after a cache miss, an approval, a
//! lease or requested handle, a refusal before authentication, any tool but `query_db` and
//! `http_request`) is boxed where it is awaited, so that the hot path's future is the size of
//! what the hot path runs (`a_calls_future_stays_small`, crates/server/tests/api.rs).

use super::approval::{reason, GateCall, Held};
use super::metrics::{Event, Metrics, Stage};
use super::registry::Prepared;
use super::spans;
use super::{Broker, Caller, Invocation};
use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, HandleName, Tool, Unscrubbed};
use airlock_store::audit::Decision;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::time::Instant;
use tracing::{Instrument, Span};

/// One call on its way through the broker: who asked, for what, and what has been decided so
/// far. Every stage reads it; [`Broker::finish`] turns it into the audit record.
#[derive(Debug)]
pub(crate) struct CallCtx<'a> {
    /// The authenticated agent; `None` for a request refused before authentication.
    pub caller: Option<&'a Caller>,
    /// The tool (or operation) name as the agent sent it.
    pub tool: &'a str,
    /// The handle named in the arguments, if it parses.
    pub handle: Option<HandleName>,
    /// The arguments, without `credential_handle`.
    pub args: Value,
    /// The request id (also in the audit record).
    pub request_id: String,
    /// When the call arrived.
    pub started: Instant,
    /// The policy decision so far.
    pub decision: Decision,
    /// The policies that decided.
    pub policies: Vec<String>,
    /// The approval the call runs under, if any.
    pub approval: Option<String>,
    /// The call's span ([`spans`]): the front end's, or its own.
    pub span: Span,
    /// The stage running now and its span, from [`CallCtx::start`] to [`CallCtx::lap`].
    stage: Option<(Stage, Span)>,
    /// When the running stage started.
    lap_from: Instant,
}

impl<'a> CallCtx<'a> {
    /// A call of `tool` with `args` by `caller`, arriving now. Denied until checked. Its span
    /// names the tool only if the broker knows it (`unknown` otherwise, as on `/metrics`).
    pub fn new(caller: Option<&'a Caller>, tool: &'a str, args: Value) -> CallCtx<'a> {
        let request_id = uuid::Uuid::now_v7().to_string();
        let span = spans::current_or_new_call();
        span.record("request_id", request_id.as_str());
        span.record("tool", Tool::parse(tool).map_or("unknown", |t| t.name()));
        if let Some(c) = caller {
            span.record("agent", c.agent.name.as_str());
        }
        CallCtx {
            caller,
            tool,
            handle: None,
            args,
            request_id,
            started: Instant::now(),
            decision: Decision::Deny,
            policies: Vec::new(),
            approval: None,
            span,
            stage: None,
            lap_from: Instant::now(),
        }
    }

    /// Starts `stage` now: its span opens under the call's. Returns the span for the stage's
    /// work to run in.
    fn start(&mut self, stage: Stage) -> Span {
        let span = spans::stage_span(&self.span, stage);
        self.stage = Some((stage, span.clone()));
        self.lap_from = Instant::now();
        span
    }

    /// Ends the running stage, whether it passed or refused: its time goes to the stage
    /// histogram and its span closes.
    fn lap(&mut self, metrics: &Metrics) {
        if let Some((stage, span)) = self.stage.take() {
            metrics.stage(stage, self.lap_from.elapsed().as_secs_f64());
            drop(span);
        }
    }

    /// Records how the call ended on its span: the handle, the decision and the outcome (`ok`
    /// or the error code).
    fn record_end(&self, outcome: &str) {
        if let Some(h) = &self.handle {
            self.span.record("handle", h.as_str());
        }
        self.span.record("decision", if self.decision == Decision::Allow { "allow" } else { "deny" });
        self.span.record("outcome", outcome);
        self.span.record("otel.status_code", if outcome == "ok" { "ok" } else { "error" });
    }
}

/// A call that passed its checks: the tool and the handle it runs on.
struct Checked<'h> {
    tool: Tool,
    handle: Cow<'h, Handle>,
    /// The configuration the call was checked under; its approval rule comes from it too.
    live: &'h super::live::Live,
}

impl Broker {
    /// Records a call refused before it reached the broker's checks (no or a bad token, a body
    /// that is not JSON). Returns the invocation to render.
    pub async fn refuse(&self, tool: &str, err: CallError) -> Invocation {
        self.finish(CallCtx::new(None, tool, Value::Null), Err(err)).await
    }

    /// Audits and renders the outcome of an operation that is not a tool call (a lease revoked,
    /// a task opened or closed, a sub-agent created), like a call: one record, allowed or denied.
    pub async fn audited(&self, caller: &Caller, action: &str, args: &Value, result: Result<Value, CallError>, started: Instant) -> Invocation {
        let mut ctx = CallCtx::new(Some(caller), action, args.clone());
        // An operation's name is the broker's own, never an agent's.
        ctx.span.record("tool", action);
        ctx.started = started;
        ctx.decision = if result.is_ok() { Decision::Allow } else { Decision::Deny };
        self.finish(ctx, result.map(Unscrubbed::new)).await
    }

    /// Runs one call for `caller`.
    pub async fn invoke(&self, caller: &Caller, tool_name: &str, args: Value) -> Invocation {
        if let Some(tool @ (Tool::RequestSecret | Tool::RequestStatus)) = Tool::parse(tool_name) {
            return Box::pin(self.invoke_request(caller, tool, args)).await;
        }
        let mut ctx = CallCtx::new(Some(caller), tool_name, args);
        let handle_text = ctx.args.get("credential_handle").and_then(Value::as_str).map(str::to_owned);
        ctx.handle = handle_text.as_deref().and_then(|h| HandleName::parse(h).ok());
        if let Some(obj) = ctx.args.as_object_mut() {
            obj.remove("credential_handle");
        }
        // Each stage is timed (and its span closed) whether it passes or refuses, so that a
        // refusal's time is not counted as the next stage's. One configuration and one policy
        // set for the whole call, whatever a reload does meanwhile.
        let live = self.live();
        let span = ctx.start(Stage::Check);
        let checked = self.check(&live, caller, &mut ctx).instrument(span).await;
        ctx.lap(&self.metrics);
        let checked = match checked {
            Ok(c) => c,
            Err(e) => return self.finish(ctx, Err(e)).await,
        };
        ctx.start(Stage::Prepare);
        let prepared = self.prepare(caller, &checked, &ctx.args);
        ctx.lap(&self.metrics);
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, Err(e)).await,
        };
        let span = ctx.start(Stage::Approval);
        let gate = self.gate(caller, &checked, &prepared, &mut ctx).instrument(span).await;
        ctx.lap(&self.metrics);
        if let Err(held) = gate {
            return Box::pin(self.hold(ctx, *held)).await;
        }
        if let Err(e) = self.check_sends(caller, &checked.handle, &prepared) {
            Box::pin(self.give_back(ctx.approval.as_deref())).await;
            return self.finish(ctx, Err(e)).await;
        }
        // From here the call is allowed: what follows is its outcome.
        ctx.decision = Decision::Allow;
        // While the audit log is failing (disk full, store down) every call writes its intent
        // record first: a call whose record cannot be kept is refused before it runs.
        if prepared.facts(self, &checked.handle).side_effects || self.audit.failing() {
            if let Err(inv) = self.write_intent(&ctx).await {
                return *inv;
            }
        }
        // The secret is resolved inside: `airlock.resolve` is a child of `airlock.execute`.
        let span = ctx.start(Stage::Execute);
        let result = prepared.run(self, caller, &checked.handle).instrument(span).await;
        ctx.lap(&self.metrics);
        self.finish(ctx, result).await
    }

    /// `request_secret` and `request_status`, which name no configured handle: the proposed
    /// handle (or none) is decided by the request module; the rate, the intent record (a link
    /// goes to a person) and the ending are a call's.
    async fn invoke_request(&self, caller: &Caller, tool: Tool, args: Value) -> Invocation {
        let mut ctx = CallCtx::new(Some(caller), tool.name(), args);
        if tool == Tool::RequestSecret {
            ctx.handle = ctx.args.get("handle").and_then(Value::as_str).and_then(|h| HandleName::parse(h).ok());
        }
        if !caller.scope_allows(tool) {
            return self.finish(ctx, Err(CallError::new(ErrorCode::InsufficientScope))).await;
        }
        if !ctx.args.is_object() {
            return self.finish(ctx, Err(CallError::new(ErrorCode::InvalidArguments))).await;
        }
        if !self.take_call(caller) {
            return self.finish(ctx, Err(CallError::new(ErrorCode::RateLimited))).await;
        }
        let (result, elicit) = match tool {
            Tool::RequestSecret => {
                // Checked (arguments, recipient, policy) before the intent record is written.
                match self.check_request(caller, &ctx.args) {
                    Ok(policies) => {
                        ctx.policies = policies;
                        ctx.decision = Decision::Allow;
                        if let Err(inv) = self.write_intent(&ctx).await {
                            return *inv;
                        }
                        match self.request_secret(caller, &ctx.args).await {
                            Ok((v, elicit)) => (Ok(v), elicit),
                            Err(e) => (Err(e), None),
                        }
                    }
                    Err(e) => (Err(e), None),
                }
            }
            _ => {
                ctx.decision = Decision::Allow;
                (self.request_status(caller, &ctx.args).await, None)
            }
        };
        let mut inv = self.finish(ctx, result.map(Unscrubbed::new)).await;
        if inv.result.is_ok() {
            inv.elicit = elicit;
        }
        inv
    }

    /// Tool, handle, policy and rate checks. Every refusal about the handle is the same error;
    /// a policy refusal leaves its policies in `ctx`.
    async fn check<'h>(&self, live: &'h super::live::Live, caller: &Caller, ctx: &mut CallCtx<'_>) -> Result<Checked<'h>, CallError> {
        let tool = Tool::parse(ctx.tool).ok_or(CallError::new(ErrorCode::UnknownTool))?;
        // The token's scopes first: an MCP client may step up (ask for the scope) on this code.
        if !caller.scope_allows(tool) {
            return Err(CallError::new(ErrorCode::InsufficientScope));
        }
        if !ctx.args.is_object() {
            return Err(CallError::new(ErrorCode::InvalidArguments));
        }
        let unavailable = || CallError::new(ErrorCode::HandleUnavailable);
        let name = ctx.handle.as_ref().ok_or_else(unavailable)?;
        let (handle, d) = match live.cfg.handles.get(name) {
            Some(h) => {
                // s3_object never runs on an aws handle's own key pair, only on a lease.
                if !tool.applies_to(h.kind) || tool == Tool::S3Object {
                    return Err(unavailable());
                }
                (Cow::Borrowed(h), self.decide_in(&live.policy, caller, tool, h))
            }
            None if !name.as_str().contains("__L") => {
                // A handle a person's secret landed as: only the agent that asked, only with
                // the tool its request granted, only once approved (by policy or an approver).
                let (h, d) = Box::pin(self.requested_for(caller, name, tool)).await.ok_or_else(unavailable)?;
                (Cow::Owned(h), d)
            }
            None => {
                // A lease handle: only its owner, only before expiry, only with query_db (a
                // database lease) or s3_object (an aws lease) (T15).
                let (lease, h) = Box::pin(self.lease_for(caller, name)).await.ok_or_else(unavailable)?;
                // The grant that allowed it must still stand (T27).
                Box::pin(self.recheck_lease(caller, &lease)).await?;
                if !matches!(tool, Tool::QueryDb | Tool::S3Object) || !tool.applies_to(h.kind) {
                    return Err(unavailable());
                }
                let d = airlock_policy::Decision { allowed: true, policies: vec![format!("lease:{}", lease.id)], errors: vec![] };
                (Cow::Owned(h), d)
            }
        };
        ctx.policies = d.policies;
        if !d.allowed {
            if !d.errors.is_empty() {
                tracing::warn!(agent = %caller.agent.name, errors = ?d.errors, "policy evaluation errors (denied)");
            }
            return Err(unavailable());
        }
        // A sub-agent's call counts against its own budget and every ancestor's (T27).
        if !self.take_call(caller) {
            return Err(CallError::new(ErrorCode::RateLimited));
        }
        Ok(Checked { tool, handle, live })
    }

    /// Validates the arguments with the tool's executor; nothing secret exists yet.
    fn prepare(&self, caller: &Caller, c: &Checked<'_>, args: &Value) -> Result<Prepared, CallError> {
        Prepared::validate(self, caller, c.tool, &c.handle, args)
    }

    /// A call the handle's approval rule marks is held unless an approval of this exact call is
    /// used now (after validation, so that nothing invalid is put before a person). The approval
    /// used is recorded in `ctx`.
    async fn gate(&self, caller: &Caller, c: &Checked<'_>, p: &Prepared, ctx: &mut CallCtx<'_>) -> Result<(), Box<Held>> {
        let Some(rule) = c.live.cfg.approvals.get(&c.handle.name) else { return Ok(()) };
        let Some(why) = reason(rule, c.tool, &p.facts(self, &c.handle)) else { return Ok(()) };
        let call = GateCall { caller, tool: c.tool, handle: &c.handle.name, args: &ctx.args, rule, policy_version: &c.live.approval_version };
        ctx.approval = Some(Box::pin(self.approval_gate(&call, why)).await?);
        Ok(())
    }

    /// Ends a call the approval gate held: `approval-required` or `approval-denied` carry the
    /// approval's ticket.
    async fn hold(&self, mut ctx: CallCtx<'_>, held: Held) -> Invocation {
        ctx.approval = (!held.approval_id.is_empty()).then_some(held.approval_id);
        let mut inv = self.finish(ctx, Err(held.error)).await;
        if inv.result.as_ref().err().is_some_and(|e| matches!(e.code, ErrorCode::ApprovalRequired | ErrorCode::ApprovalDenied)) {
            inv.approval = Some(held.ticket);
        }
        inv
    }

    /// A side effect must not happen unless its record can be kept: the intent record is
    /// written before the action, and the call is refused (its approval given back) if it cannot
    /// be.
    async fn write_intent(&self, ctx: &CallCtx<'_>) -> Result<(), Box<Invocation>> {
        let mut intent = self.record(ctx);
        intent.outcome = "started".into();
        if let Err(e) = self.audit.append(intent).await {
            tracing::error!(request_id = %ctx.request_id, error = %e, "audit intent record not written; call refused");
            Box::pin(self.give_back(ctx.approval.as_deref())).await;
            let err = CallError::new(ErrorCode::AuditUnavailable);
            ctx.record_end(err.code.as_str());
            self.metrics.record(ctx.tool, err.code.as_str(), ctx.started.elapsed().as_secs_f64());
            return Err(Box::new(Invocation { request_id: ctx.request_id.clone(), result: Err(err), redactions: 0, approval: None, elicit: None }));
        }
        Ok(())
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
    fn check_sends(&self, caller: &Caller, handle: &Handle, p: &Prepared) -> Result<(), CallError> {
        if let (Prepared::Email(_), Some(smtp)) = (p, handle.smtp()) {
            let per_agent = self
                .cfg()
                .agents
                .get(&caller.agent.name)
                .and_then(|a| a.sends_per_minute)
                .unwrap_or(self.cfg().limits.sends_per_minute);
            if !self.limits.sends.check(&format!("agent:{}", caller.agent.id), per_agent)
                || !self.limits.sends.check(&format!("handle:{}", handle.name), smtp.sends_per_minute)
            {
                return Err(CallError::with_message(ErrorCode::RateLimited, "too many e-mails; retry later"));
            }
        }
        Ok(())
    }

    /// T11: defangs (or flags) active markup in a result that points anywhere but the handle's
    /// own destinations, per `[handles.X.results] markup`, and says so in the result.
    fn sanitize_markup(&self, handle: Option<&HandleName>, v: &mut Value) {
        let cfg = self.cfg();
        let policy = handle.and_then(|h| cfg.results.get(h)).map(|r| r.markup).unwrap_or_default();
        let own: Vec<String> = handle
            .and_then(|h| cfg.handles.get(h))
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

    /// The end of every call: the result scrubbed (the one door from executor output to a
    /// result) and defanged, the error's message scrubbed and its detail logged, the audit
    /// record written (no record, no result), the metrics counted.
    pub(crate) async fn finish(&self, mut ctx: CallCtx<'_>, result: Result<Unscrubbed, CallError>) -> Invocation {
        ctx.start(Stage::Scrub);
        let scrubber = self.scrubber();
        let mut redactions = 0usize;
        let result = match result {
            Ok(out) => {
                let mut out = scrubber.scrub_output(out);
                redactions = out.redactions();
                self.sanitize_markup(ctx.handle.as_ref(), out.value_mut());
                // The audit names the share a link was made for (never the link).
                if let (Some(id), Some(args)) = (out.value().get("share_id").filter(|_| ctx.tool == Tool::ShareSecret.name()), ctx.args.as_object_mut()) {
                    args.insert("share_id".into(), id.clone());
                }
                Ok(out.into_value())
            }
            Err(mut e) => {
                let (m, n) = scrubber.scrub_str(&e.message);
                redactions += n;
                e.message = m.into_owned();
                if let Some(d) = e.detail.take() {
                    let d = self.loggable_detail(&d);
                    tracing::warn!(request_id = %ctx.request_id, code = e.code.as_str(), detail = %d, "call failed");
                } else {
                    tracing::info!(request_id = %ctx.request_id, code = e.code.as_str(), "call refused");
                }
                Err(e)
            }
        };
        ctx.lap(&self.metrics);
        let span = ctx.start(Stage::Audit);
        let mut rec = self.record(&ctx);
        rec.redactions = redactions as u64;
        rec.sandbox = result.as_ref().ok().and_then(|v| v.get("sandbox")).cloned();
        rec.duration_us = ctx.started.elapsed().as_micros() as u64;
        match &result {
            Ok(v) => rec.result_bytes = json_len(v),
            Err(e) => {
                rec.code = Some(e.code.as_str().to_owned());
                rec.outcome = "error".into();
            }
        }
        let result = match self.audit.append(rec).instrument(span).await {
            Ok(_) => result,
            Err(e) => {
                tracing::error!(request_id = %ctx.request_id, error = %e, "audit record not written; result withheld");
                Err(CallError::new(ErrorCode::AuditUnavailable))
            }
        };
        ctx.lap(&self.metrics);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        ctx.record_end(outcome);
        let tool = Tool::parse(ctx.tool);
        let tool_label = tool.map(|t| t.name()).unwrap_or("unknown");
        self.metrics.record(tool_label, outcome, ctx.started.elapsed().as_secs_f64());
        self.count(&ctx, tool, &result, redactions);
        Invocation { request_id: ctx.request_id, result, redactions, approval: None, elicit: None }
    }

    /// The metrics of one ended call beyond its count and time: its decision, its redactions
    /// by handle, the component that failed it, and the lease or link it made.
    fn count(&self, ctx: &CallCtx<'_>, tool: Option<Tool>, result: &Result<Value, CallError>, redactions: usize) {
        let allowed = ctx.decision == Decision::Allow;
        let code = result.as_ref().err().map(|e| e.code.as_str());
        self.metrics.decision(allowed, if allowed { None } else { code });
        if let Some(code) = code {
            self.metrics.failed(code);
        }
        // A label is a configured handle's name, never a name an agent made up.
        let handle = match &ctx.handle {
            Some(h) if self.cfg().handles.contains_key(h) => h.as_str(),
            Some(h) if h.as_str().contains("__L") => "lease",
            Some(_) => "requested",
            None => "-",
        };
        self.metrics.redacted(handle, redactions as u64);
        match (tool, result.is_ok()) {
            (Some(Tool::RequestLease), true) => self.metrics.event(Event::LeaseIssued),
            (Some(Tool::ShareSecret), true) => self.metrics.event(Event::ShareCreated),
            _ => {}
        }
    }
}

/// The length of `v` written as JSON, counted as it is written: the text itself is not kept.
fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, v).map(|()| n.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::json_len;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value: strings with escapes, control characters and multi-byte text; numbers of
    /// every kind; nested arrays and objects.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The audit's `result_bytes` is the length of the result's JSON text.
        #[test]
        fn json_len_is_the_length_of_the_text(v in value()) {
            prop_assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len() as u64);
        }
    }
}
