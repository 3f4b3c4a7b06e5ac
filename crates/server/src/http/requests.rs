//! Intake links of requests for a secret (README "Requests for a secret";
//! docs/request-format.md): `POST /v1/requests/{id}/open` gives the page the request's context
//! and public key, `POST /v1/requests/{id}/submit` takes the value encrypted to that key. Both
//! need the proof from the link's fragment (never sent in a URL); without it, and for unknown,
//! used and expired links alike, the answer is `request-unavailable`.

use super::response::{json, ApiError};
use crate::broker::Broker;
use airlock_core::ErrorCode;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

fn err(code: ErrorCode) -> Response {
    ApiError::from(code).into_response()
}

fn client(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    proof: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    proof: String,
    /// The HPKE encapsulated key, base64url.
    enc: String,
    /// The HPKE ciphertext, base64url.
    ciphertext: String,
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

async fn open(State(b): State<Arc<Broker>>, Path(id): Path<String>, req: Request) -> Response {
    let ip = client(&req);
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), 1024).await else { return err(ErrorCode::BadRequest) };
    let Ok(body) = serde_json::from_slice::<OpenBody>(&bytes) else { return err(ErrorCode::BadRequest) };
    match b.open_request(&id, &body.proof, &ip).await {
        Ok(v) => json(200, &v),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn submit(State(b): State<Arc<Broker>>, Path(id): Path<String>, req: Request) -> Response {
    let ip = client(&req);
    // The largest padded value, in base64url, with the JSON around it.
    let limit = (b.config().requests.max_value_bytes * 2 + 1024).div_ceil(3) * 4 + 1024;
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), limit).await else { return err(ErrorCode::LimitExceeded) };
    let Ok(body) = serde_json::from_slice::<SubmitBody>(&bytes) else { return err(ErrorCode::BadRequest) };
    let (Some(enc), Some(ct)) = (unb64(&body.enc), unb64(&body.ciphertext)) else { return err(ErrorCode::InvalidSubmission) };
    match b.submit_request(&id, &body.proof, &enc, &ct, &ip).await {
        Ok(v) => json(200, &v),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The intake API.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/v1/requests/{id}/open", post(open)).route("/v1/requests/{id}/submit", post(submit))
}
