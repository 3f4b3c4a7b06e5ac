//! What the audit log keeps of a call: one record per call (and an intent record before a side
//! effect), with the arguments scrubbed and, for tools whose arguments are long or personal,
//! reduced to their shape.

use super::call::CallCtx;
use super::Broker;
use airlock_core::Tool;
use airlock_store::audit::AuditRecord;
use serde_json::{json, Value};

impl Broker {
    /// The audit record of `ctx` as it stands; [`Broker::finish`](super::Broker) adds the outcome.
    pub(crate) fn record(&self, ctx: &CallCtx<'_>) -> AuditRecord {
        let scrubber = self.scrubber();
        let mut arguments = audit_arguments(ctx.tool, &ctx.args);
        scrubber.scrub_json(&mut arguments);
        // The tool name is agent text: bounded (on a character boundary) and scrubbed.
        let tool_s: String = ctx.tool.chars().take(64).collect();
        let (tool_s, _) = scrubber.scrub_str(&tool_s);
        AuditRecord {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: ctx.request_id.clone(),
            agent: ctx.caller.map(|c| c.agent.name.clone()).unwrap_or_else(|| "-".into()),
            parent_chain: ctx.caller.map(|c| c.parents.clone()).unwrap_or_default(),
            tool: tool_s.into_owned(),
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

