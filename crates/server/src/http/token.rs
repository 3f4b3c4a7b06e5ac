//! `POST /v1/token`: OAuth 2.0 Token Exchange (RFC 8693) for sub-agents.
//!
//! A parent agent presents its own token as the `subject_token` (airlock's own token, or a JWT
//! of a trusted issuer) and receives a token for a new sub-agent: grants no wider than its own
//! (checked against the parent's effective permissions, its token's scopes included, exactly as
//! `POST /v1/agents/self/children` does), a life of at most [`MAX_LIFE_SECONDS`], and valid only
//! at this airlock (an opaque airlock token: no other service accepts it). The child's calls
//! carry the parent in their audit records' `parent_chain`; the exchange itself is audited with
//! the parent's identity (for a JWT, its issuer and subject), never a token.
//!
//! Request (`application/x-www-form-urlencoded`, each parameter at most once):
//! - `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`
//! - `subject_token`, `subject_token_type` (`urn:ietf:params:oauth:token-type:access_token` or
//!   `...:jwt`)
//! - `scope`: the child's grants, space-separated `airlock:TOOL:HANDLE` (`airlock:query_db:DB_PROD`)
//! - optional `resource` or `audience`: airlock's own MCP URI when one is configured (anything
//!   else is `invalid_target`), `requested_token_type` (`...:access_token` only), `expires_in`
//!   (seconds, default [`DEFAULT_LIFE_SECONDS`], cut to what the parent has left), and
//!   `child_name`.
//!
//! `actor_token` is refused: the parent is the actor, and it proves so with its own token.
//! Errors are RFC 6749 §5.2 JSON (`invalid_request`, `invalid_scope`, `invalid_target`,
//! `unsupported_grant_type`), with airlock's stable code alongside in `airlock_code`.

use super::auth::source;
use super::response::json;
use crate::broker::children::ChildGrant;
use crate::broker::{Broker, ChildRequest};
use airlock_core::{CallError, ErrorCode};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json as j, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The grant type of RFC 8693.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type issued, and the subject token type of an opaque airlock token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The subject token type of a JWT of a trusted issuer.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// A child's life when `expires_in` is not given.
pub const DEFAULT_LIFE_SECONDS: u64 = 900;
/// The longest life a child gets through an exchange.
pub const MAX_LIFE_SECONDS: u64 = 3600;

const KNOWN: &[&str] = &[
    "grant_type",
    "subject_token",
    "subject_token_type",
    "scope",
    "resource",
    "audience",
    "requested_token_type",
    "expires_in",
    "child_name",
    "actor_token",
    "actor_token_type",
];

fn oauth_error(status: u16, error: &str, description: &str, code: Option<ErrorCode>) -> Response {
    let mut body = j!({"error": error, "error_description": description});
    if let Some(c) = code {
        body["airlock_code"] = j!(c.as_str());
    }
    json(status, &body)
}

fn invalid_request(description: &str) -> Response {
    oauth_error(400, "invalid_request", description, None)
}

/// The form's parameters; `Err` (why) for a repeated or unknown parameter.
fn params(body: &[u8]) -> Result<BTreeMap<String, String>, &'static str> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if !KNOWN.contains(&k.as_ref()) {
            return Err("unknown parameter");
        }
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err("a parameter is given more than once");
        }
    }
    Ok(out)
}

/// `airlock:TOOL:HANDLE ...` → the child's grants, one per handle.
fn grants(scope: &str) -> Option<Vec<ChildGrant>> {
    let mut by_handle: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for word in scope.split_ascii_whitespace() {
        let rest = word.strip_prefix(crate::broker::SCOPE_PREFIX)?;
        let (tool, handle) = rest.split_once(':')?;
        if tool.is_empty() || handle.is_empty() {
            return None;
        }
        let tools = by_handle.entry(handle.to_owned()).or_default();
        if !tools.iter().any(|t| t == tool) {
            tools.push(tool.to_owned());
        }
    }
    (!by_handle.is_empty()).then(|| by_handle.into_iter().map(|(handle, tools)| ChildGrant { handle, tools }).collect())
}

async fn exchange(State(b): State<Arc<Broker>>, parts: http::request::Parts, body: Result<Bytes, BytesRejection>) -> Response {
    // An OAuth error, not axum's plain text, for a body over `limits.max_request_bytes`.
    let Ok(body) = body else {
        return invalid_request("the request body is over limits.max_request_bytes or did not arrive whole");
    };
    let p = match params(&body) {
        Ok(p) => p,
        Err(why) => return invalid_request(why),
    };
    let get = |k: &str| p.get(k).map(String::as_str);
    if get("grant_type") != Some(TOKEN_EXCHANGE) {
        return oauth_error(400, "unsupported_grant_type", "only token exchange (RFC 8693) is served here", None);
    }
    if get("actor_token").is_some() || get("actor_token_type").is_some() {
        return invalid_request("actor_token is not accepted: the subject (the parent) is the actor");
    }
    let Some(subject) = get("subject_token").filter(|t| !t.is_empty()) else {
        return invalid_request("subject_token is required");
    };
    if !matches!(get("subject_token_type"), Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE)) {
        return invalid_request("subject_token_type is urn:ietf:params:oauth:token-type:access_token or :jwt");
    }
    if get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return invalid_request("requested_token_type can only be urn:ietf:params:oauth:token-type:access_token");
    }
    // The child's token is valid only here: a target other than airlock itself is refused.
    let own = b.protected_resource().map(|p| p.resource);
    for target in [get("resource"), get("audience")].into_iter().flatten() {
        if own.as_deref() != Some(target) {
            return oauth_error(400, "invalid_target", "the token is valid only at this airlock", None);
        }
    }
    let Some(grants) = get("scope").and_then(grants) else {
        return oauth_error(400, "invalid_scope", "scope lists the child's grants as airlock:TOOL:HANDLE", None);
    };
    let life = match get("expires_in").map(str::parse::<u64>) {
        None => DEFAULT_LIFE_SECONDS,
        Some(Ok(s)) if (1..=MAX_LIFE_SECONDS).contains(&s) => s,
        Some(_) => return invalid_request("expires_in is 1 to 3600 seconds"),
    };
    let name = match get("child_name") {
        Some(n) => n.to_owned(),
        None => format!("child-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    let started = Instant::now();
    let parent = match b.authenticate(Some(subject)).await {
        Ok(mut c) => {
            c.peer = super::auth::socket_peer(&parts.extensions);
            c
        }
        Err(e) => {
            // Audited once per source per minute, like every refused token (T29).
            b.refuse_from(&source(&parts.extensions), "token_exchange", e).await;
            return oauth_error(400, "invalid_request", "the subject token is not valid here", Some(ErrorCode::Unauthenticated));
        }
    };
    // Never past the parent's own expiry: the child's life is cut to what the parent has left.
    let left = parent.agent.expires_at.as_deref().and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok()).map(|e| {
        (e.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
    });
    let life = match left {
        Some(l) if l < 1 => return invalid_request("the parent expires now"),
        Some(l) => life.min(l as u64),
        None => life,
    };
    let req = ChildRequest { name, grants, ttl_seconds: Some(life) };
    let audit_args = j!({
        "name": req.name,
        "grants": req.grants.iter().map(|g| j!({"handle": g.handle, "tools": g.tools})).collect::<Vec<_>>(),
        "subject_token_type": get("subject_token_type"),
        "expires_in": life,
    });
    let created = b.create_child(&parent, &req).await;
    let inv = b.audited(&parent, "token_exchange", &audit_args, created, started).await;
    match inv.result {
        Ok(v) => issued(&v, life),
        Err(e) => refused(&e),
    }
}

fn issued(v: &Value, life: u64) -> Response {
    let scope: Vec<String> = v["grants"]
        .as_array()
        .map(|a| a.iter().map(|g| format!("{}{}:{}", crate::broker::SCOPE_PREFIX, g["tool"].as_str().unwrap_or(""), g["handle"].as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    json(
        200,
        &j!({
            "access_token": v["token"],
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": life,
            "scope": scope.join(" "),
            "agent": v["name"],
            "parent_chain": v["parent_chain"],
        }),
    )
}

fn refused(e: &CallError) -> Response {
    let (status, error) = match e.code {
        ErrorCode::GrantNotAllowed | ErrorCode::InsufficientScope => (400, "invalid_scope"),
        ErrorCode::RateLimited => (429, "invalid_request"),
        ErrorCode::Internal | ErrorCode::AuditUnavailable => (500, "server_error"),
        _ => (400, "invalid_request"),
    };
    oauth_error(status, error, &e.message, Some(e.code))
}

/// The token endpoint, on the TCP listener and the Unix socket alike.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/v1/token", post(exchange))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_become_grants_per_handle() {
        let g = grants("airlock:query_db:DB airlock:http_request:API airlock:query_db:DB airlock:request_lease:DB").unwrap();
        let got: Vec<(String, Vec<String>)> = g.into_iter().map(|g| (g.handle, g.tools)).collect();
        assert_eq!(
            got,
            vec![("API".into(), vec!["http_request".into()]), ("DB".into(), vec!["query_db".into(), "request_lease".into()])]
        );
        for bad in ["", " ", "query_db:DB", "airlock:query_db", "airlock::DB", "airlock:query_db:", "openid airlock:query_db:DB"] {
            assert!(grants(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_repeated_or_unknown_parameter_is_refused() {
        assert!(params(b"grant_type=a&grant_type=b").is_err());
        assert!(params(b"grant_type=a&client_secret=x").is_err());
        assert_eq!(params(b"scope=a%20b").unwrap()["scope"], "a b");
    }
}
