//! Approvals over HTTP: `GET /v1/approvals`, `GET /v1/approvals/{id}`,
//! `POST /v1/approvals/{id}/approve`, `POST /v1/approvals/{id}/deny`. Approvers authenticate
//! with their own `apr_` tokens; an agent token is refused on every one of them.

use super::auth::{bearer, source};
use super::response::{json, ApiError};
use crate::broker::Broker;
use airlock_core::CallError;
use airlock_store::approvals::Approver;
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json as j;
use std::sync::Arc;

fn answer(r: Result<serde_json::Value, CallError>, key: &str) -> Response {
    match r {
        Ok(v) => json(200, &j!({"ok": true, key: v})),
        Err(e) => ApiError(e).into_response(),
    }
}

/// True for a character a person reading the approval page would not see, or that changes how
/// the text around it reads (T16, T29): format characters (Cf: zero-width characters, the
/// bidirectional embeddings, overrides and isolates, the byte order mark, tag characters, ...),
/// controls, line and paragraph separators, variation selectors, fillers that render as nothing,
/// and spaces other than U+0020 (they pass for one).
pub fn hidden_char(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || matches!(
            u,
            0x00A0 | 0x00AD | 0x034F | 0x061C | 0x06DD | 0x070F | 0x08E2 | 0x115F | 0x1160 | 0x1680 | 0x17B4 | 0x17B5
                | 0x180B..=0x180F | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x206F | 0x3000 | 0x3164
                | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF
        )
        || (0x0600..=0x0605).contains(&u)
        || (0x0890..=0x0891).contains(&u)
}

/// `s` with every [`hidden_char`] written as `\u{…}` (lowercase hex), so the person approving
/// sees every character that will run. Backslashes are doubled unless `s` is JSON text (where
/// they are escaped already), so a literal `\u{202e}` in an argument cannot pass for an escape.
pub fn shown(s: &str, json_text: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if json_text && (c == '\n' || c == '\t') {
            out.push(c);
        } else if hidden_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\\' && !json_text {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds `shown` to an approval's view: every agent-controlled text (agent, parent chain, tool,
/// handle, reason, and the arguments as indented JSON) with hidden characters escaped, for the
/// approval page to display instead of the raw values.
fn with_shown(mut v: serde_json::Value) -> serde_json::Value {
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(|s| shown(s, false));
    let parents: Vec<String> = v
        .get("parent_chain")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().map(|p| shown(p.as_str().unwrap_or_default(), false)).collect())
        .unwrap_or_default();
    let arguments = v.get("arguments").map(|a| shown(&serde_json::to_string_pretty(a).unwrap_or_default(), true));
    let s = j!({
        "agent": text("agent"),
        "parent_chain": parents,
        "tool": text("tool"),
        "handle": text("handle"),
        "reason": text("reason"),
        "arguments": arguments,
    });
    if let Some(o) = v.as_object_mut() {
        o.insert("shown".into(), s);
    }
    v
}

async fn approver_or_refuse(b: &Broker, headers: &HeaderMap, source: &str, action: &str) -> Result<Approver, Response> {
    match b.authenticate_approver(bearer(headers)).await {
        Ok(a) => Ok(a),
        // Audited like any refused call: someone tried to decide without an approver token
        // (once per source per minute when it repeats, T29).
        Err(e) => Err(b.refuse_from(source, action, e).await.into_response()),
    }
}

async fn show(State(b): State<Arc<Broker>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = b.authenticate_approver(bearer(&headers)).await {
        return ApiError(e).into_response();
    }
    answer(b.approval_view(&id).await.map(with_shown), "approval")
}

async fn decide(b: Arc<Broker>, headers: HeaderMap, ext: Extensions, id: String, approve: bool) -> Response {
    let action = if approve { "approve_call" } else { "deny_call" };
    match approver_or_refuse(&b, &headers, &source(&ext), action).await {
        Ok(approver) => answer(b.decide_approval(&approver, &id, approve).await.map(with_shown), "approval"),
        Err(r) => r,
    }
}

async fn approve(State(b): State<Arc<Broker>>, headers: HeaderMap, ext: Extensions, Path(id): Path<String>) -> Response {
    decide(b, headers, ext, id, true).await
}

async fn deny(State(b): State<Arc<Broker>>, headers: HeaderMap, ext: Extensions, Path(id): Path<String>) -> Response {
    decide(b, headers, ext, id, false).await
}

async fn pending(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    if let Err(e) = b.authenticate_approver(bearer(&headers)).await {
        return ApiError(e).into_response();
    }
    answer(
        b.pending_approvals().await.map(|list| match list {
            serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(with_shown).collect()),
            other => other,
        }),
        "approvals",
    )
}

/// The approval API.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/approvals", get(pending))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t16_hidden_and_bidirectional_characters_are_shown_escaped() {
        let s = "rm -rf /tmp/x\u{202e}txt.exe\u{200b}\u{2066}a\u{2069}\u{feff}\u{00ad}\u{e0041}\u{061c}";
        assert_eq!(shown(s, false), "rm -rf /tmp/x\\u{202e}txt.exe\\u{200b}\\u{2066}a\\u{2069}\\u{feff}\\u{ad}\\u{e0041}\\u{61c}");
        for c in ['\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{feff}', '\u{2060}', '\u{1d173}'] {
            assert!(hidden_char(c), "{:x}", c as u32);
        }
        for c in ['a', ' ', 'é', 'Ж', '中', '😀', '-', '/'] {
            assert!(!hidden_char(c), "{c}");
        }
        // A literal backslash-u in plain text cannot pass for an escape; JSON text keeps its own.
        assert_eq!(shown("a\\u{202e}", false), "a\\\\u{202e}");
        assert_eq!(shown("{\n  \"a\": \"x\\\\y\"\n}", true), "{\n  \"a\": \"x\\\\y\"\n}");
    }
}
