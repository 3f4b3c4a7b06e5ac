//! What a client hears about its own calls while they happen: MCP logging (`logging/setLevel`,
//! `notifications/message`) and progress (`notifications/progress` for a call that carried a
//! `progressToken`).
//!
//! A message names only a tool, a configured handle, a request id, an error code or a count:
//! never an argument value, a result, a secret, a link or a token. A tool or handle name the
//! client sent that airlock does not know is not repeated (it is the client's text, and could be
//! anything). Every message still goes through the broker's scrubber before it is sent.
//!
//! The level: the session's, once the client set it with `logging/setLevel` (stdio and the thin
//! client's stream keep it for the session), or the request's own
//! `_meta["io.modelcontextprotocol/logLevel"]` (SEP-2575; the stateless HTTP endpoint has no
//! session to keep a level in, so only this one applies there). Until a level is set, nothing
//! is sent.
// rmcp marks logging deprecated (SEP-2577, a draft); the 2025-11-25 specification has it.
#![allow(deprecated)]

use airlock_core::{ErrorCode, HandleName, Tool};
use airlock_server::{Broker, Invocation};
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The logger name on every message.
pub(crate) const LOGGER: &str = "airlock";

/// A session's level: `None` until the client sets one.
pub(crate) type SessionLevel = Arc<Mutex<Option<LoggingLevel>>>;

/// RFC 5424 severity order, least severe first.
fn rank(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The level in force for one request: its own `_meta` level, else the session's.
pub(crate) fn level_for(session: &SessionLevel, ctx: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
    ctx.meta.log_level().or_else(|| *session.lock().unwrap_or_else(|p| p.into_inner()))
}

/// One message about a call: its level, a fixed sentence, and the fields it names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub level: LoggingLevel,
    pub data: Value,
}

fn event(level: LoggingLevel, message: String, fields: &Map<String, Value>) -> Event {
    let mut data = fields.clone();
    data.insert("message".into(), Value::String(message));
    Event { level, data: Value::Object(data) }
}

/// The tool's name if airlock has such a tool, and the handle's if it is configured.
fn names(broker: &Broker, tool: &str, args: &Value) -> (Option<&'static str>, Option<String>) {
    let tool = Tool::parse(tool).map(Tool::name);
    let handle = args
        .get("credential_handle")
        .and_then(Value::as_str)
        .and_then(|h| HandleName::parse(h).ok())
        .filter(|h| broker.config().handles.contains_key(h))
        .map(|h| h.as_str().to_owned());
    (tool, handle)
}

/// What the client hears about one call of its own (see the module docs for what may appear).
pub(crate) fn call_events(broker: &Broker, tool: &str, args: &Value, inv: &Invocation) -> Vec<Event> {
    let (tool, handle) = names(broker, tool, args);
    let mut fields = Map::new();
    fields.insert("request_id".into(), json!(inv.request_id));
    if let Some(t) = tool {
        fields.insert("tool".into(), json!(t));
    }
    if let Some(h) = &handle {
        fields.insert("handle".into(), json!(h));
    }
    let what = match (tool, &handle) {
        (Some(t), Some(h)) => format!("{t} on {h}"),
        (Some(t), None) => t.to_owned(),
        (None, _) => "a call of an unknown tool".to_owned(),
    };
    let mut out = Vec::new();
    match &inv.result {
        Err(e) if e.code == ErrorCode::ApprovalRequired => {
            fields.insert("code".into(), json!(e.code.as_str()));
            out.push(event(LoggingLevel::Notice, format!("{what} is held until a person approves it ({})", e.code), &fields));
        }
        Err(e) => {
            fields.insert("code".into(), json!(e.code.as_str()));
            out.push(event(LoggingLevel::Warning, format!("{what} was refused: {}", e.code), &fields));
        }
        Ok(_) => {
            if tool == Some(Tool::RequestLease.name()) {
                out.push(event(LoggingLevel::Info, format!("{what}: lease issued"), &fields));
            }
            if inv.redactions > 0 {
                let mut f = fields.clone();
                f.insert("redactions".into(), json!(inv.redactions));
                let n = inv.redactions;
                let values = if n == 1 { "value" } else { "values" };
                out.push(event(LoggingLevel::Notice, format!("{what}: {n} {values} redacted from the result"), &f));
            }
            out.push(event(LoggingLevel::Debug, format!("{what} done"), &fields));
        }
    }
    out
}

/// The message sent when the agent's tool list changed under a session (a lease of its was
/// issued, revoked or ended, or its grants changed).
pub(crate) fn tools_changed() -> Event {
    event(LoggingLevel::Info, "tool list changed: a lease was issued, revoked or ended, or grants changed".into(), &Map::new())
}

/// Sends `events` at or above `level` (none when no level is set), each scrubbed first.
pub(crate) async fn send(broker: &Broker, peer: &Peer<RoleServer>, level: Option<LoggingLevel>, events: Vec<Event>) {
    let Some(min) = level else { return };
    let scrubber = broker.scrubber();
    for mut e in events.into_iter().filter(|e| rank(e.level) >= rank(min)) {
        // Built from names and codes only; scrubbed anyway.
        scrubber.scrub_json(&mut e.data);
        let msg = LoggingMessageNotificationParam::new(e.level, e.data).with_logger(LOGGER);
        if let Err(err) = peer.notify_logging_message(msg).await {
            tracing::debug!(error = %err, "a log message could not be sent to the client");
            return;
        }
    }
}

/// Progress of one call whose request carried a `progressToken`: each step is one notification,
/// its `progress` one more than the last (the total is not known in advance).
#[derive(Clone)]
pub(crate) struct Progress {
    inner: Option<Arc<(ProgressToken, Peer<RoleServer>, AtomicU64)>>,
}

impl Progress {
    pub(crate) fn of(ctx: &RequestContext<RoleServer>) -> Progress {
        Progress { inner: ctx.meta.get_progress_token().map(|t| Arc::new((t, ctx.peer.clone(), AtomicU64::new(0)))) }
    }

    /// One step, with a fixed message.
    pub(crate) async fn step(&self, message: &'static str) {
        let Some(inner) = &self.inner else { return };
        let (token, peer, n) = &**inner;
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        let p = ProgressNotificationParam::new(token.clone(), n as f64).with_message(message);
        if let Err(e) = peer.notify_progress(p).await {
            tracing::debug!(error = %e, "a progress notification could not be sent to the client");
        }
    }

    /// Whether the client asked for progress.
    pub(crate) fn wanted(&self) -> bool {
        self.inner.is_some()
    }
}

/// How often a call waiting on a person (an approval elicitation) says it is still waiting.
pub(crate) const WAITING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rank_as_rfc_5424() {
        let all = [
            LoggingLevel::Debug,
            LoggingLevel::Info,
            LoggingLevel::Notice,
            LoggingLevel::Warning,
            LoggingLevel::Error,
            LoggingLevel::Critical,
            LoggingLevel::Alert,
            LoggingLevel::Emergency,
        ];
        for w in all.windows(2) {
            assert!(rank(w[0]) < rank(w[1]), "{:?} < {:?}", w[0], w[1]);
        }
    }
}
