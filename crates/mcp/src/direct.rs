//! The one-message `tools/call`: a stateless streamable HTTP request whose only possible answer
//! is one JSON-RPC response, answered in the connection's task.
//!
//! `rmcp` serves every stateless request as a session of its own: it builds a peer, spawns the
//! session's loop and the handler as two tasks, and passes the request and the answer through
//! three channels. Under load that machinery cost the broker more CPU per call than the call
//! itself, outside the executor and the audit (a profile of `tools/call` at concurrency 32:
//! context switches, allocator lock hand-offs and copies of the moved futures, about 50 µs of
//! CPU per call over `POST /v1/invoke`).
//!
//! A `tools/call` needs none of it when nothing can make the handler talk to the client before it
//! answers: no `_meta` (no progress token, no log level, no per-request protocol version), no
//! multi-round-trip fields, and a protocol version (or none) below the one that brought the
//! standard request headers. The handler then does exactly [`Broker::invoke`] and renders the
//! result with [`crate::handler::call_result`]: what this module does, with `rmcp`'s own types
//! reading the request's members and writing the response. Any other request, and any request
//! this module is not sure of (an `Accept` entry with parameters, several protocol version
//! headers, an empty `_meta`), goes to `rmcp` unchanged. `tests/http.rs` sends both routes the
//! same generated requests and compares the answers byte for byte.

use crate::handler::{arguments, call_result};
use airlock_server::broker::spans;
use airlock_server::{Broker, Caller};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, CallToolResponse, JsonRpcVersion2_0, ProtocolVersion, RequestId, ServerJsonRpcMessage,
    ServerResult,
};
use rmcp::transport::common::http_header::{EVENT_STREAM_MIME_TYPE, HEADER_MCP_PROTOCOL_VERSION, JSON_MIME_TYPE};
use tracing::Instrument;

/// A `tools/call` this module answers.
pub(crate) struct Call {
    id: RequestId,
    params: CallToolRequestParams,
}

/// The call in `body`, when the request is one this module answers; `None` sends it to `rmcp`.
pub(crate) fn eligible(headers: &HeaderMap, body: &[u8]) -> Option<Call> {
    if !accepts_both(headers) || !is_json(headers) || !version_without_standard_headers(headers) {
        return None;
    }
    // An object: a JSON array could fill the envelope's fields by position.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let Envelope { id, params, .. } = serde_json::from_slice::<Envelope>(body).ok()?;
    // `_meta` (a progress token, a log level, a protocol version, trace context) and the
    // multi-round-trip fields are rmcp's to handle.
    let plain = params.meta.is_none() && params.input_responses.is_none() && params.request_state.is_none();
    plain.then_some(Call { id, params })
}

/// A JSON-RPC `tools/call` request, read with rmcp's types for each member, and nothing else:
/// another member, a member twice, another method or version is not one (rmcp's own reading of
/// the whole message goes through an untagged union, about 4 % of the broker's time under load).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[allow(dead_code)] // Read to check it is "2.0".
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[allow(dead_code)] // Read to check it is "tools/call".
    method: CallToolRequestMethod,
    params: CallToolRequestParams,
}

/// Runs the call as the agent `caller` and answers as `rmcp` would: HTTP 200, `application/json`,
/// the JSON-RPC response. An error only if the response cannot be serialized (the caller answers
/// 500 `internal`).
pub(crate) async fn answer(broker: &Broker, caller: &Caller, call: Call) -> serde_json::Result<Response> {
    let Call { id, params } = call;
    // The call's span, as the rmcp handler opens it (airlock_server::broker::spans).
    let inv = broker.invoke(caller, &params.name, arguments(params.arguments)).instrument(spans::call_span()).await;
    let mut result = ServerResult::from(CallToolResponse::from(call_result(&inv)));
    // Every version answered here predates 2026-07-28: the wire shape rmcp's handler gives such a
    // peer (no `resultType: "complete"`, object-only structured content).
    result.strip_result_type_for_legacy_peer();
    result.strip_non_object_output_for_legacy_peer();
    let body = serde_json::to_vec(&ServerJsonRpcMessage::response(result, id))?;
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_MIME_TYPE));
    Ok(r)
}

/// `Accept` lists both `application/json` and `text/event-stream`, as `rmcp` requires, each
/// without parameters (a weight is `rmcp`'s to read).
fn accepts_both(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { return false };
        if value.contains('"') {
            return false;
        }
        for entry in value.split(',').map(str::trim) {
            json |= entry.eq_ignore_ascii_case(JSON_MIME_TYPE);
            sse |= entry.eq_ignore_ascii_case(EVENT_STREAM_MIME_TYPE);
        }
    }
    json && sse
}

/// One `Content-Type`, `application/json` with or without parameters, as `rmcp` requires.
fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return false };
    value.to_str().is_ok_and(|v| v.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case(JSON_MIME_TYPE)))
}

/// No `MCP-Protocol-Version`, or one known version older than the one that brought the standard
/// request headers (from which `rmcp` checks headers and `_meta` against the body).
fn version_without_standard_headers(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(HEADER_MCP_PROTOCOL_VERSION).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v.to_str().is_ok_and(|v| {
            v < ProtocolVersion::STANDARD_HEADERS.as_str() && ProtocolVersion::KNOWN_VERSIONS.iter().any(|k| k.as_str() == v)
        }),
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query_db","arguments":{"a":1}}}"#;
    const PLAIN: &[(&str, &str)] = &[("accept", "application/json, text/event-stream"), ("content-type", "application/json")];

    #[test]
    fn a_plain_tools_call_is_answered_here() {
        let call = eligible(&headers(PLAIN), CALL).expect("eligible");
        assert_eq!(call.params.name, "query_db");
        assert_eq!(call.id, RequestId::Number(7));
        let mut with = PLAIN.to_vec();
        with.push(("mcp-protocol-version", "2025-06-18"));
        assert!(eligible(&headers(&with), CALL).is_some());
    }

    #[test]
    fn anything_else_goes_to_rmcp() {
        let plain = headers(PLAIN);
        for body in [
            &br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":1}}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/logLevel":"debug"}}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","requestState":"s"}}"#,
            br#"[{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}]"#,
            br#"["2.0",7,"tools/call",{"name":"x"}]"#,
            br#"{"jsonrpc":"1.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{}}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"},"extra":1}"#,
            br#"{"jsonrpc":"2.0","id":7,"id":8,"method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#,
            b"not json",
        ] {
            assert!(eligible(&plain, body).is_none(), "{}", String::from_utf8_lossy(body));
        }
        for h in [
            &[("accept", "application/json"), ("content-type", "application/json")][..],
            &[("accept", "application/json;q=0, text/event-stream"), ("content-type", "application/json")],
            &[("accept", "application/json, text/event-stream"), ("content-type", "text/plain")],
            &[("accept", "application/json, text/event-stream")],
            &[("accept", "application/json, text/event-stream"), ("content-type", "application/json"), ("mcp-protocol-version", "2026-07-28")],
            &[("accept", "application/json, text/event-stream"), ("content-type", "application/json"), ("mcp-protocol-version", "2099-01-01")],
            &[
                ("accept", "application/json, text/event-stream"),
                ("content-type", "application/json"),
                ("mcp-protocol-version", "2025-06-18"),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        ] {
            assert!(eligible(&headers(h), CALL).is_none(), "{h:?}");
        }
    }
}
