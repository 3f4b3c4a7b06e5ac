//! The one way a handler answers: a JSON body or a page, with the same hardened headers, and the
//! contract's error envelope with a stable code.

use crate::broker::Invocation;
use airlock_core::{CallError, ErrorCode};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The pages' Content-Security-Policy: scripts and styles from this origin only, no inline code,
/// no framing, no form posts, fetches to this origin only.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Headers every answer carries: nothing cached, nothing framed, nothing sniffed, no referrer.
/// Names and values are constants (a name given as text would be parsed on every answer).
static HARDENING: [(HeaderName, HeaderValue); 8] = [
    (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
    (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (HeaderName::from_static("x-robots-tag"), HeaderValue::from_static("noindex, nofollow")),
    (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
    (HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin")),
];

fn harden(r: &mut Response) {
    let h = r.headers_mut();
    h.reserve(HARDENING.len() + 2);
    for (name, value) in &HARDENING {
        // Static bytes: a clone copies a pointer.
        h.insert(name.clone(), value.clone());
    }
}

/// A static page or asset of `content_type`.
pub fn page(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    harden(&mut r);
    r
}

/// A JSON answer with `status`.
pub fn json(status: u16, v: &Value) -> Response {
    with_status(status, page("application/json", serde_json::to_vec(v).expect("a JSON value serializes")))
}

fn with_status(status: u16, mut r: Response) -> Response {
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// A refusal outside a tool call: the contract's envelope (`{"ok": false, "error": {code,
/// message}}`), with the code's HTTP status. The message is the error's own, which never holds
/// agent data; its operator detail is not sent.
#[derive(Debug)]
pub struct ApiError(pub CallError);

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        ApiError(CallError::new(code))
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        json(e.code.http_status(), &json!({"ok": false, "error": {"code": e.code.as_str(), "message": e.message}}))
    }
}

impl IntoResponse for Invocation {
    fn into_response(self) -> Response {
        with_status(self.status(), page("application/json", self.to_json_bytes()))
    }
}

/// A request body read whole, within `limits.max_request_bytes`. A body over the limit is
/// refused with the contract's envelope (`limit-exceeded`, 413) rather than axum's plain text,
/// and one that fails to arrive whole with `bad-request`.
pub struct BodyBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(BodyBytes).map_err(|r| {
            ApiError::from(if r.status() == StatusCode::PAYLOAD_TOO_LARGE { ErrorCode::LimitExceeded } else { ErrorCode::BadRequest })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, nested a few levels, with keys and strings that need escaping.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec((".{0,6}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn invocation() -> impl Strategy<Value = Invocation> {
        let result = prop_oneof![
            value().prop_map(Ok),
            (0..ErrorCode::ALL.len(), ".{0,20}").prop_map(|(i, m)| Err(CallError::with_message(ErrorCode::ALL[i], m))),
        ];
        (".{0,40}", result, proptest::option::of(value()))
            .prop_map(|(request_id, result, approval)| Invocation { request_id, result, redactions: 0, approval, elicit: None })
    }

    proptest! {
        /// The envelope written straight from an invocation is the contract's envelope, as
        /// it was built as a JSON value (fields, order and all), for generated results and
        /// errors.
        #[test]
        fn the_envelope_written_directly_is_the_contracts(inv in invocation()) {
            let built = match &inv.result {
                Ok(v) => json!({"ok": true, "request_id": inv.request_id, "result": v}),
                Err(e) => {
                    let mut v = json!({"ok": false, "request_id": inv.request_id,
                                       "error": {"code": e.code.as_str(), "message": e.message}});
                    if let Some(a) = &inv.approval {
                        v["error"]["approval"] = a.clone();
                    }
                    v
                }
            };
            let bytes = inv.to_json_bytes();
            prop_assert_eq!(&bytes, &serde_json::to_vec(&built).unwrap());
            prop_assert_eq!(inv.to_json(), built);
        }
    }

    #[test]
    fn every_answer_carries_the_hardening_headers() {
        let answers = [
            json(200, &json!({"ok": true})),
            page("text/html; charset=utf-8", "<p>x</p>"),
            ApiError::from(ErrorCode::Unauthenticated).into_response(),
        ];
        for r in answers {
            let h = r.headers();
            for (name, value) in [
                ("content-security-policy", PAGE_CSP),
                ("referrer-policy", "no-referrer"),
                ("cache-control", "no-store"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("x-robots-tag", "noindex, nofollow"),
                ("cross-origin-opener-policy", "same-origin"),
                ("cross-origin-resource-policy", "same-origin"),
            ] {
                assert_eq!(h.get_all(name).iter().collect::<Vec<_>>(), [value], "{name}");
            }
        }
    }
}
