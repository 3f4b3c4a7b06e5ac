//! The MCP server handler: the tool list of one caller and its calls, both through the broker.
//!
//! Nothing here decides anything: the list is [`Broker::tools_json`] (built from handle names and
//! scrubbed, T21) and a call is [`Broker::invoke`], which authenticates the handle, applies policy
//! and limits, executes, scrubs and audits. Unknown tool names go to the broker too, so they are
//! audited like any other refusal.

use airlock_core::{CallError, ErrorCode};
use airlock_server::Format;
use airlock_server::broker::spans;
use airlock_server::{Broker, Caller, Invocation};
#[allow(deprecated)] // logging: see crate::notify
use rmcp::model::SetLevelRequestParams;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use crate::notify;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::Instrument;

const INSTRUCTIONS: &str = "Tools run through airlock. Name a credential by its handle \
(`credential_handle`); airlock performs the call and returns sanitized data. Credentials are never shown.";

/// Where the calling agent comes from.
#[derive(Clone)]
enum Auth {
    /// A stream session (stdio, or the thin client's upgraded connection): the token given at
    /// start, checked again on every request so that revocation takes effect mid-session, and
    /// the socket peer the session came from, if any. Shared with the thin client's stream,
    /// which swaps in a rotated token of the same agent (`notifications/airlock/token`).
    Token(SessionToken, Option<airlock_core::Peer>),
    /// streamable HTTP: the [`Caller`] the router's middleware authenticated for this request,
    /// carried in the request's `http::request::Parts` extensions.
    FromRequest,
}

/// A stream session's token, shared between its handler and whatever may rotate it.
pub(crate) type SessionToken = Arc<std::sync::RwLock<zeroize::Zeroizing<String>>>;

/// The `rmcp` server handler for airlock. One per stdio session or per HTTP request.
#[derive(Clone)]
pub struct AirlockMcp {
    broker: Arc<Broker>,
    auth: Auth,
    /// The level the client set with `logging/setLevel` (kept for a stream session; a stateless
    /// HTTP request's handler lives for that request only).
    level: crate::notify::SessionLevel,
}

impl std::fmt::Debug for AirlockMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AirlockMcp")
    }
}

impl AirlockMcp {
    /// A handler for the agent holding `token` (stdio). The token is re-checked per request.
    pub fn for_token(broker: Arc<Broker>, token: String) -> AirlockMcp {
        AirlockMcp::for_session(broker, token, None)
    }

    /// As [`AirlockMcp::for_token`], recording `peer` (the socket peer) with every call.
    pub fn for_session(broker: Arc<Broker>, token: String, peer: Option<airlock_core::Peer>) -> AirlockMcp {
        let token = Arc::new(std::sync::RwLock::new(zeroize::Zeroizing::new(token)));
        AirlockMcp { broker, auth: Auth::Token(token, peer), level: Default::default() }
    }

    /// A stream session's token (`None` for the per-request HTTP handler), to rotate it.
    pub(crate) fn session_token(&self) -> Option<SessionToken> {
        match &self.auth {
            Auth::Token(t, _) => Some(t.clone()),
            Auth::FromRequest => None,
        }
    }

    /// The broker this handler calls.
    pub(crate) fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// The session's logging level, shared with whatever sends it messages outside a request.
    pub(crate) fn session_level(&self) -> crate::notify::SessionLevel {
        self.level.clone()
    }

    /// A handler that takes the caller from the HTTP request (set by [`crate::http_router`]).
    pub(crate) fn per_request(broker: Arc<Broker>) -> AirlockMcp {
        AirlockMcp { broker, auth: Auth::FromRequest, level: Default::default() }
    }

    async fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, CallError> {
        match &self.auth {
            // The token is used here for its purpose: authenticating the agent.
            Auth::Token(t, peer) => {
                // A copy (zeroized on drop): no lock is held across the await.
                let t = t.read().unwrap_or_else(|p| p.into_inner()).clone();
                let mut c = self.broker.authenticate(Some(t.as_str())).await?;
                c.peer = *peer;
                Ok(c)
            }
            Auth::FromRequest => ctx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.extensions.get::<Caller>())
                .cloned()
                .ok_or_else(|| CallError::new(ErrorCode::Unauthenticated)),
        }
    }
}

/// The `_meta` key on a tool result saying that its content is untrusted data (T11).
pub const UNTRUSTED_META: &str = "dev.airlock/untrusted-content";

/// Longest an `approval-required` call waits on a URL-mode elicitation.
const ELICIT_MAX: std::time::Duration = std::time::Duration::from_secs(600);

impl AirlockMcp {
    /// Whether this session can send the client a URL-mode elicitation: a session with a server
    /// side (stdio; the streamable HTTP endpoint is stateless) whose client declared it.
    fn can_elicit_url(&self, ctx: &RequestContext<RoleServer>) -> bool {
        matches!(self.auth, Auth::Token(..))
            && ctx.peer.peer_info().is_some_and(|i| i.capabilities.elicitation.as_ref().is_some_and(|e| e.url.is_some()))
    }

    /// Sends the person at the client to a link made for them (`Invocation::elicit`: the intake
    /// link of a request for a secret). The link goes to the client only, never into the tool's
    /// result; the answer (the person accepted to open it, or not) changes nothing of the call.
    async fn elicit_link(&self, e: &airlock_server::broker::Elicit, ctx: &RequestContext<RoleServer>) {
        let Ok(url) = url::Url::parse(&e.url) else { return };
        match ctx.peer.elicit_url_with_timeout(e.message.clone(), url, e.id.clone(), Some(ELICIT_MAX)).await {
            Ok(action) => tracing::info!(request = %e.id, ?action, "request link elicited"),
            Err(err) => tracing::info!(request = %e.id, error = %err, "request link elicitation not completed"),
        }
    }

    /// For `approval-required`, on a session whose client declared URL-mode elicitation (stdio:
    /// the streamable HTTP endpoint is stateless and cannot send requests to the client), asks
    /// the client to send the person to the approval page. `Some(true)` when the person says
    /// they are done; `None` when no elicitation was made.
    async fn elicit_approval(&self, inv: &Invocation, ctx: &RequestContext<RoleServer>) -> Option<bool> {
        let code = inv.result.as_ref().err()?.code;
        let ticket = inv.approval.as_ref()?;
        if code != ErrorCode::ApprovalRequired || !self.can_elicit_url(ctx) {
            return None;
        }
        let url = url::Url::parse(ticket["url"].as_str()?).ok()?;
        let id = ticket["id"].as_str()?.to_owned();
        let left = ticket["expires_in_seconds"].as_u64().map(std::time::Duration::from_secs).unwrap_or(ELICIT_MAX).min(ELICIT_MAX);
        let msg = "An approver must approve this exact call on airlock's approval page before it runs.";
        match ctx.peer.elicit_url_with_timeout(msg, url, id, Some(left)).await {
            Ok(rmcp::model::ElicitationAction::Accept) => Some(true),
            Ok(_) => Some(false),
            Err(e) => {
                tracing::info!(error = %e, "approval elicitation not completed");
                Some(false)
            }
        }
    }
}

/// The MCP tools of `caller`: the broker's MCP rendering (already scrubbed, with its live
/// leases), typed.
pub(crate) async fn mcp_tools(broker: &Broker, caller: &Caller) -> Vec<Tool> {
    tools_from_json(&broker.tools_json_for(caller, Format::Mcp).await)
}

fn tools_from_json(v: &Value) -> Vec<Tool> {
    v["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| match serde_json::from_value::<Tool>(t.clone()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::error!(error = %e, "a tool definition does not fit MCP's Tool; left out");
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The MCP rendering of one invocation: structured content plus its JSON text; a refusal is a
/// tool error (`isError: true`) carrying the stable code, the fixed message and the request id.
pub(crate) fn call_result(inv: &Invocation) -> CallToolResult {
    match &inv.result {
        Ok(v) => {
            // MCP's structuredContent is an object; every built-in tool returns one already.
            let v = if v.is_object() { v.clone() } else { json!({ "result": v }) };
            let mut r = CallToolResult::structured(v);
            // The content came from an upstream or a stored row, not from airlock: a client should
            // treat it as data, never as instructions (T11). Active markup in it was already
            // defanged or flagged (`untrusted_markup`).
            let mut meta = serde_json::Map::new();
            meta.insert(UNTRUSTED_META.into(), json!(true));
            r.meta = Some(rmcp::model::MetaObject(meta));
            r
        }
        Err(e) => {
            let mut v = error_json(e, &inv.request_id);
            // approval-required / approval-denied: the approval's id and the page where a person
            // decides (never anything secret).
            if let Some(a) = &inv.approval {
                v["approval"] = a.clone();
            }
            CallToolResult::structured_error(v)
        }
    }
}

/// A call's arguments as the broker takes them: the object given, or an empty one.
pub(crate) fn arguments(given: Option<serde_json::Map<String, Value>>) -> Value {
    given.map(Value::Object).unwrap_or_else(|| json!({}))
}

fn error_json(e: &CallError, request_id: &str) -> Value {
    json!({"code": e.code.as_str(), "message": e.message, "request_id": request_id})
}

/// A JSON-RPC error for a request without a valid caller (only `tools/list` on stdio can meet
/// it: HTTP refuses such requests with 401 before they reach the handler).
fn unauthenticated(e: &CallError) -> McpError {
    McpError::invalid_request(e.code.default_message(), Some(json!({"code": e.code.as_str()})))
}

// Logging is marked deprecated in rmcp (SEP-2577, a draft); the 2025-11-25 specification has it.
#[allow(deprecated)]
impl ServerHandler for AirlockMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_logging().enable_tools().enable_tool_list_changed().build())
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&ctx).await.map_err(|e| unauthenticated(&e))?;
        // The list is per agent: no shared cache may keep it, and grants can change at any time.
        Ok(ListToolsResult::with_all_items(mcp_tools(&self.broker, &caller).await)
            .with_ttl_ms(0)
            .with_cache_scope(CacheScope::Private))
    }

    async fn set_level(&self, request: SetLevelRequestParams, _ctx: RequestContext<RoleServer>) -> Result<(), McpError> {
        *self.level.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.level);
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let progress = notify::Progress::of(&ctx);
        progress.step("call received").await;
        let args = arguments(request.arguments);
        // The call's span, around the token check and the call (airlock_server::broker::spans).
        let span = spans::call_span();
        let inv = match self.caller(&ctx).instrument(span.clone()).await {
            Ok(mut caller) => {
                caller.elicit_url = self.can_elicit_url(&ctx);
                // Boxed once (airlock_server::broker::call, "Small futures"); so is the rare
                // path of a call held for approval below.
                let inv = Box::pin(self.broker.invoke(&caller, &request.name, args.clone())).instrument(span.clone()).await;
                if let Some(e) = &inv.elicit {
                    self.elicit_link(e, &ctx).await;
                }
                let held = inv.result.as_ref().err().is_some_and(|e| e.code == ErrorCode::ApprovalRequired)
                    && inv.approval.is_some()
                    && self.can_elicit_url(&ctx);
                if !held {
                    inv
                } else {
                    // A held call the person is sent to approve: say so now, not when the wait is over.
                    let level = notify::level_for(&self.level, &ctx);
                    Box::pin(notify::send(&self.broker, &ctx.peer, level, notify::call_events(&self.broker, &request.name, &args, &inv))).await;
                    match Box::pin(self.wait_for_approval(&inv, &ctx, &progress)).await {
                        // The person went to the page: the same call once more (it runs if approved).
                        // A call of its own, with its own span.
                        Some(true) => Box::pin(async {
                            match self.caller(&ctx).await {
                                Ok(caller) => self.broker.invoke(&caller, &request.name, args.clone()).await,
                                Err(e) => self.broker.refuse(&request.name, e).await,
                            }
                        })
                        .instrument(spans::call_span())
                        .await,
                        // Still held: its message was sent above.
                        _ => return Ok(self.finish(inv, None, &ctx, &progress).await),
                    }
                }
            }
            Err(e) => Box::pin(self.broker.refuse(&request.name, e)).instrument(span.clone()).await,
        };
        drop(span);
        Ok(self.finish(inv, Some((&request.name, &args)), &ctx, &progress).await)
    }
}

impl AirlockMcp {
    /// [`AirlockMcp::elicit_approval`], with a progress step when the wait starts and another
    /// every [`notify::WAITING_EVERY`] while the person has not answered.
    async fn wait_for_approval(&self, inv: &Invocation, ctx: &RequestContext<RoleServer>, progress: &notify::Progress) -> Option<bool> {
        if !progress.wanted() {
            return self.elicit_approval(inv, ctx).await;
        }
        progress.step("waiting for a person to approve the call").await;
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(notify::WAITING_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    progress.step("still waiting for a person to approve the call").await;
                }
            })
        };
        let r = self.elicit_approval(inv, ctx).await;
        ticker.abort();
        r
    }

    /// The end of a call: its log messages (`call` is the call they are about; `None` when they
    /// were sent already), the last progress step, and the MCP result.
    async fn finish(
        &self,
        inv: Invocation,
        call: Option<(&str, &Value)>,
        ctx: &RequestContext<RoleServer>,
        progress: &notify::Progress,
    ) -> CallToolResponse {
        if let Some((tool, args)) = call {
            let level = notify::level_for(&self.level, ctx);
            notify::send(&self.broker, &ctx.peer, level, notify::call_events(&self.broker, tool, args, &inv)).await;
        }
        progress.step("call finished").await;
        call_result(&inv).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_a_tool_error_with_the_stable_code_and_request_id() {
        let inv = Invocation {
            request_id: "r-1".into(),
            result: Err(CallError::new(ErrorCode::HandleUnavailable)),
            redactions: 0,
            approval: None,
            elicit: None,
        };
        let r = serde_json::to_value(call_result(&inv)).unwrap();
        assert_eq!(r["isError"], true);
        assert_eq!(r["structuredContent"]["code"], "handle-unavailable");
        assert_eq!(r["structuredContent"]["request_id"], "r-1");
        assert_eq!(r["structuredContent"]["message"], ErrorCode::HandleUnavailable.default_message());
        let text: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, r["structuredContent"]);
    }

    #[test]
    fn a_result_is_structured_content_with_its_json_text() {
        let inv = Invocation { request_id: "r-2".into(), result: Ok(json!({"row_count": 2})), redactions: 0, approval: None, elicit: None };
        let r = serde_json::to_value(call_result(&inv)).unwrap();
        assert_eq!(r["isError"], false);
        assert_eq!(r["structuredContent"], json!({"row_count": 2}));
        assert_eq!(r["_meta"][UNTRUSTED_META], true, "t11: the result is marked as untrusted content");
        let text: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, json!({"row_count": 2}));
        let inv = Invocation { request_id: "r-3".into(), result: Ok(json!([1])), redactions: 0, approval: None, elicit: None };
        assert_eq!(call_result(&inv).structured_content, Some(json!({"result": [1]})));
    }

    #[test]
    fn rendered_definitions_become_mcp_tools_with_their_annotations() {
        let v = json!({"tools": [{
            "name": "query_db", "description": "d",
            "inputSchema": {"type": "object", "properties": {"credential_handle": {"type": "string", "enum": ["A"]}}},
            "annotations": {"readOnlyHint": true, "destructiveHint": false, "openWorldHint": false}
        }]});
        let tools = tools_from_json(&v);
        assert_eq!(tools.len(), 1);
        let back = serde_json::to_value(&tools[0]).unwrap();
        assert_eq!(back["inputSchema"]["properties"]["credential_handle"]["enum"], json!(["A"]));
        assert_eq!(back["annotations"]["readOnlyHint"], true);
        assert_eq!(back["annotations"]["destructiveHint"], false);
        assert_eq!(back["annotations"]["openWorldHint"], false);
    }
}
