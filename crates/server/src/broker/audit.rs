//! What the audit log keeps of a call: one record per call (and an intent record before a side
//! effect), with the arguments scrubbed and, for tools whose arguments are long or personal,
//! reduced to their shape.

use super::call::CallCtx;
use super::revocation::{Revoked, Revoker};
use super::Broker;
use airlock_core::Tool;
use airlock_store::audit::{AuditRecord, Decision};
use serde_json::{json, Value};

impl Broker {
    /// The audit record of `ctx` as it stands; [`Broker::finish`](super::Broker) adds the outcome.
    pub(crate) fn record(&self, ctx: &CallCtx<'_>) -> AuditRecord {
        let scrubber = self.scrubber();
        let mut arguments = audit_arguments(ctx.tool, &ctx.args, &scrubber);
        scrubber.scrub_json(&mut arguments);
        // A tool airlock has is named by airlock, and kept as its name. Any other name is agent
        // text: bounded and scrubbed, a secret the bound cut through included.
        let tool = match Tool::parse(ctx.tool) {
            Some(t) => t.name().to_owned(),
            None => scrubber.scrub_bounded(ctx.tool, 64),
        };
        AuditRecord {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: ctx.request_id.clone(),
            agent: ctx.caller.map(|c| c.agent.name.clone()).unwrap_or_else(|| "-".into()),
            parent_chain: ctx.caller.map(|c| c.parents.clone()).unwrap_or_default(),
            tool,
            handle: ctx.handle.as_ref().map(|h| h.to_string()),
            arguments,
            decision: ctx.decision,
            code: None,
            outcome: "ok".into(),
            result_bytes: 0,
            redactions: 0,
            duration_us: 0,
            policies: ctx.policies.clone(),
            approval: ctx.approval.clone(),
            peer: ctx.caller.and_then(|c| c.peer),
            sandbox: None,
            identity: ctx.caller.and_then(|c| c.signed_in.as_ref()).map(|s| airlock_store::audit::AuditIdentity {
                issuer: s.issuer.clone(),
                subject: s.subject.clone(),
            }),
            key_handover: None,
        }
    }
}

impl Broker {
    /// Writes the audit record of a revocation: who, why, what. A revocation stands even when its
    /// record cannot be written (it only takes rights away); the failure is logged.
    pub(crate) async fn audit_revocation(&self, who: &Revoker<'_>, what: Revoked<'_>) {
        let event = what.event;
        let mut rec = operator_record(who, what);
        self.scrubber().scrub_json(&mut rec.arguments);
        if let Err(e) = self.audit.append(rec).await {
            tracing::error!(event, error = %e, "revocation not audited");
        }
    }
}

/// The record of something done by `who` outside a call (a revocation, a rotation): the event as
/// its tool, what it acted on as its arguments, with `reason` and `revoked_by` added. The caller
/// scrubs the arguments when they may hold anything but names and numbers.
pub(crate) fn operator_record(who: &Revoker<'_>, what: Revoked<'_>) -> AuditRecord {
    let mut arguments = what.target;
    if let Some(m) = arguments.as_object_mut() {
        m.insert("reason".into(), json!(who.reason));
        m.insert("revoked_by".into(), json!(who.by));
    }
    AuditRecord {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request_id: uuid::Uuid::now_v7().to_string(),
        agent: who.by.to_owned(),
        parent_chain: who.chain.to_vec(),
        tool: what.event.to_owned(),
        handle: what.handle.map(str::to_owned),
        arguments,
        decision: Decision::Allow,
        code: what.code.map(str::to_owned),
        outcome: if what.code.is_some() { "error" } else { "ok" }.into(),
        result_bytes: 0,
        redactions: 0,
        duration_us: 0,
        policies: vec![],
        approval: None,
        peer: None,
        sandbox: None,
        identity: None,
        key_handover: None,
    }
}

/// What the audit keeps of a call's arguments. An e-mail's text and a command's argument values
/// are not kept whole (they may be long, personal, or carry material the scrubber does not know):
/// the audit records recipients, sizes and placeholder names (bounded and scrubbed) instead.
fn audit_arguments(tool: &str, args: &Value, scrubber: &airlock_scrub::Scrubber) -> Value {
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
            let names: Vec<String> = a.map(|m| m.keys().take(32).map(|k| scrubber.scrub_bounded(k, 64)).collect()).unwrap_or_default();
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

