//! One-time links over HTTP (DESIGN.md, "One-time links"; T17): `POST /v1/shares`,
//! `POST /v1/shares/{id}/consume`, `GET /v1/shares/{id}` (the creator's receipt) and
//! `DELETE /v1/shares/{id}` (the creator's revocation).
//!
//! The server stores ciphertext and a hash of the consume proof; the key exists only in the link's
//! fragment, which browsers never send. Unknown, used and expired shares answer alike
//! (`share-unavailable`). Wrong proofs are limited per (share, client address) and per share, in
//! maps of bounded size; past a limit a wrong proof answers `rate-limited`, but a correct proof
//! always goes through (T29: a third party cannot lock the key's holder out).

use super::agent::{audited_op, path_id};
use super::auth::{bearer, AgentAuth};
use super::response::{json, ApiError};
use crate::broker::Revoker;
use crate::broker::share::{rfc3339, ConsumeGate, ShareOwner, ShareUpload};
use crate::broker::Broker;
use airlock_core::config::SharesConfig;
use airlock_core::ErrorCode;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json as j;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

fn err(code: ErrorCode) -> Response {
    ApiError::from(code).into_response()
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The largest create body: the base64url of the largest blob plus the JSON around it.
fn create_body_limit(s: &SharesConfig) -> usize {
    airlock_share::max_blob_len(s.max_plaintext_bytes).div_ceil(3) * 4 + 4096
}

async fn create(State(b): State<Arc<Broker>>, req: Request) -> Response {
    let ip = client_ip(&req);
    let s = &b.config().shares;
    if !b.share_create_allowed(&ip.to_string()) {
        return err(ErrorCode::RateLimited);
    }
    let token = bearer(req.headers()).map(str::to_owned);
    let creator = match token {
        Some(t) => match b.authenticate(Some(&t)).await {
            Ok(c) => Some(c),
            Err(e) => return err(e.code),
        },
        None => None,
    };
    // The body limit is checked before the body is read in full (invariant 6).
    let bytes = match axum::body::to_bytes(req.into_body(), create_body_limit(s)).await {
        Ok(b) => b,
        Err(_) => return err(ErrorCode::LimitExceeded),
    };
    let body: ShareUpload = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return err(ErrorCode::InvalidShare),
    };
    let owner = ShareOwner { creator: creator.as_ref().map(|c| c.agent.id.as_str()), recipient: None };
    match b.store_share(&body, owner).await {
        Ok(()) => json(201, &j!({"ok": true, "id": body.id, "expires_at": body.expires_at, "views": body.views})),
        Err(e) => err(e.code),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    proof: String,
    /// A random value (base64url, 16 to 64 characters) the client made for this consume and
    /// sends again when it retries after a lost answer.
    #[serde(default)]
    attempt: Option<String>,
}

async fn consume(State(b): State<Arc<Broker>>, Path(id): Path<String>, req: Request) -> Response {
    let ip = client_ip(&req).to_string();
    // Malformed requests cost nothing and are no guess at a proof: refused without counting.
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), 4096).await else {
        return err(ErrorCode::InvalidShare);
    };
    let Ok(body) = serde_json::from_slice::<ConsumeBody>(&bytes) else {
        return err(ErrorCode::InvalidShare);
    };
    let Some(proof) = airlock_share::parse_proof(&body.proof) else {
        return err(ErrorCode::InvalidShare);
    };
    if !airlock_share::valid_id(&id) {
        return err(ErrorCode::InvalidShare);
    }
    let hash = airlock_share::proof_hash(&proof);
    let attempt = match body.attempt.as_deref() {
        None => None,
        Some(a) if (16..=64).contains(&a.len()) && a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') => {
            Some(airlock_share::proof_hash(a.as_bytes()))
        }
        Some(_) => return err(ErrorCode::InvalidShare),
    };
    if b.share_rates().consume_gate(&b.config().shares, &id, &ip) == ConsumeGate::ProofFirst {
        // Past a limit, a guess costs a read, never the write lock; the right proof goes on.
        match b.store().share_proof_matches(&id, &hash).await {
            Ok(true) => {}
            Ok(false) => {
                b.share_consume_failed(&id, &ip);
                return err(ErrorCode::RateLimited);
            }
            Err(e) => {
                tracing::error!(error = %e, "share proof check failed in the store");
                return err(ErrorCode::Internal);
            }
        }
    }
    let fail = |code: ErrorCode| {
        b.share_consume_failed(&id, &ip);
        err(code)
    };
    match b.store().consume_share(&id, &hash, attempt.as_ref()).await {
        Ok(Some(c)) => {
            if !c.redelivered {
                b.metrics().event(crate::broker::metrics::Event::ShareOpened);
            }
            json(
                200,
                &j!({
                    "ok": true,
                    "ciphertext": airlock_share::encode_blob(&c.ciphertext),
                    "expires_at": c.expires_at,
                    "views": c.views,
                    "views_left": c.views_left,
                    "redelivered": c.redelivered,
                }),
            )
        }
        Ok(None) => fail(ErrorCode::ShareUnavailable),
        Err(e) => {
            tracing::error!(error = %e, "share consume failed in the store");
            err(ErrorCode::Internal)
        }
    }
}

/// `GET /v1/shares/{id}`: the read receipt, for the agent that created the share only.
async fn receipt(State(b): State<Arc<Broker>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let caller = match b.authenticate(bearer(&headers)).await {
        Ok(c) => c,
        Err(e) => return err(e.code),
    };
    if !airlock_share::valid_id(&id) {
        return err(ErrorCode::InvalidShare);
    }
    match b.store().share_receipt(&id, &caller.agent.id).await {
        Ok(Some(r)) => json(
            200,
            &j!({
                "ok": true,
                "share_id": r.share_id,
                "recipient": r.recipient,
                "opened": r.views_used > 0,
                "views": r.views,
                "views_used": r.views_used,
                "first_opened_at": r.first_opened_at.map(rfc3339),
                "last_opened_at": r.last_opened_at.map(rfc3339),
                "expires_at": rfc3339(r.expires_at),
            }),
        ),
        Ok(None) => err(ErrorCode::ShareUnavailable),
        Err(e) => {
            tracing::error!(error = %e, "share receipt lookup failed");
            err(ErrorCode::Internal)
        }
    }
}

/// `DELETE /v1/shares/{id}`: the agent that created a share revokes it before it is opened (or
/// used up). Another agent's share, or one already used, expired or revoked, is
/// `share-unavailable`. The call is audited as `revoke_share`, the revocation as `share_revoked`.
async fn revoke(State(b): State<Arc<Broker>>, auth: AgentAuth, Path(id): Path<String>) -> Response {
    let (id, shown) = path_id(&b, &id);
    let (b2, args) = (b.clone(), j!({"share_id": shown}));
    audited_op(&b, &auth, "revoke_share", args, move |c| async move {
        let who = Revoker { by: &c.agent.name, chain: &c.parents, reason: "revoked by the agent that created it" };
        b2.revoke_share_by(&id, Some(&c.agent.id), &who).await
    })
    .await
}

/// The share API.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/shares", post(create))
        .route("/v1/shares/{id}/consume", post(consume))
        .route("/v1/shares/{id}", get(receipt).delete(revoke))
}
