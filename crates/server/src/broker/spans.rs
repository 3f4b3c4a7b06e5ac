//! The spans of a call: one `airlock.call` span per call, carrying its request id, agent, tool,
//! handle, decision and outcome, and one child per stage of [`Stage`] (`airlock.authenticate`,
//! `airlock.check`, `airlock.prepare`, `airlock.approval`, `airlock.execute` with
//! `airlock.resolve` inside it, `airlock.scrub`, `airlock.audit`). A stage's span opens and
//! closes at the same points as its time for the stage histogram ([`super::call`]), so traces and
//! `/metrics` measure one thing.
//!
//! Every span is at debug level under the target [`TARGET`]: `airlock serve` sends them over OTLP
//! when an endpoint is configured, or logs them with `RUST_LOG=airlock::trace=debug`. No span
//! field is ever an argument value, a result, a token or a secret: the fields are the ones named
//! here, and the tool is recorded only as a tool the broker knows (an agent's made-up name is
//! `unknown`, as on `/metrics`).

use super::metrics::Stage;
use tracing::field::Empty;
use tracing::Span;

/// The target of every span of a call: the one an exporter or a log filter selects.
pub const TARGET: &str = "airlock::trace";

/// The name of a call's span.
pub const CALL: &str = "airlock.call";

/// A new call span, its fields empty until they are known. A front end opens it around the
/// authentication and the call (so that `airlock.authenticate` is one of its stages); a call
/// that reaches the broker without one gets its own.
pub fn call_span() -> Span {
    tracing::debug_span!(
        target: TARGET,
        "airlock.call",
        request_id = Empty,
        agent = Empty,
        tool = Empty,
        handle = Empty,
        decision = Empty,
        outcome = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
    )
}

/// The call span the current span is, if it is one (the front end's); else a new one.
pub(crate) fn current_or_new_call() -> Span {
    let current = Span::current();
    if current.metadata().is_some_and(|m| m.name() == CALL && m.target() == TARGET) {
        current
    } else {
        call_span()
    }
}

/// The span of `stage` under `parent` (a call span, or for `resolve` the `execute` span it runs
/// in).
pub(crate) fn stage_span(parent: &Span, stage: Stage) -> Span {
    match stage {
        Stage::Authenticate => tracing::debug_span!(target: TARGET, parent: parent, "airlock.authenticate"),
        Stage::Check => tracing::debug_span!(target: TARGET, parent: parent, "airlock.check"),
        Stage::Prepare => tracing::debug_span!(target: TARGET, parent: parent, "airlock.prepare"),
        Stage::Approval => tracing::debug_span!(target: TARGET, parent: parent, "airlock.approval"),
        Stage::Resolve => tracing::debug_span!(target: TARGET, parent: parent, "airlock.resolve"),
        Stage::Execute => tracing::debug_span!(target: TARGET, parent: parent, "airlock.execute"),
        Stage::Scrub => tracing::debug_span!(target: TARGET, parent: parent, "airlock.scrub"),
        Stage::Audit => tracing::debug_span!(target: TARGET, parent: parent, "airlock.audit"),
    }
}

/// The span of `stage` under the current span (authentication in a front end's call span,
/// secret resolution inside `execute`); none when the current span is not one of a call (a token
/// checked to list tools, or by the MCP over HTTP front end before it reads the request), so that
/// no trace holds a stage alone.
pub(crate) fn stage_here(stage: Stage) -> Span {
    let current = Span::current();
    if current.metadata().is_some_and(|m| m.target() == TARGET) {
        stage_span(&current, stage)
    } else {
        Span::none()
    }
}
