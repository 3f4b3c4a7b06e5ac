//! One-time links (DESIGN.md, "One-time links"; T17): the REST endpoints, the web pages, and the
//! `share_secret` executor with its delivery channels.
//!
//! The server stores ciphertext and a hash of the consume proof; the key exists only in the link's
//! fragment, which browsers never send. The open page is the same static page for every id and
//! fetches nothing until the person clicks Reveal, so a previewer or a scanner that follows the
//! link burns nothing; burning needs the proof, which only the key yields. Unknown, used and
//! expired shares answer alike (`share-unavailable`), and failed consumes are rate-limited per
//! client address.

use crate::broker::{Broker, Caller};
use airlock_core::config::{ShareChannelConfig, SharesConfig};
use airlock_core::{CallError, ErrorCode, Secret};
use airlock_share::{Link, NewShare, ShareError};
use airlock_store::shares::NewShareRecord;
use airlock_store::StoreError;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The pages' Content-Security-Policy: scripts and styles from this origin only, no inline code,
/// no framing, no form posts, fetches to this origin only.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

const CREATE_HTML: &str = include_str!("../web/create.html");
const OPEN_HTML: &str = include_str!("../web/open.html");
const FORMAT_JS: &str = include_str!("../web/share-format.js");
const CREATE_JS: &str = include_str!("../web/create.js");
const OPEN_JS: &str = include_str!("../web/open.js");
const APPROVE_JS: &str = include_str!("../web/approve.js");
const CSS: &str = include_str!("../web/airlock.css");

pub(crate) fn harden(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex, nofollow"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
}

fn page(content_type: &'static str, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    harden(&mut r);
    r
}

fn json(status: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).expect("JSON")));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    harden(&mut r);
    r
}

fn err(code: ErrorCode) -> Response {
    json(code.http_status(), &json!({"ok": false, "error": {"code": code.as_str(), "message": code.default_message()}}))
}

async fn create_page(State(b): State<Arc<Broker>>) -> Response {
    let s = &b.config().shares;
    let html = CREATE_HTML
        .replace("{{MAX_BYTES}}", &s.max_plaintext_bytes.to_string())
        .replace("{{MAX_VIEWS}}", &s.max_views.to_string());
    page("text/html; charset=utf-8", html)
}

/// The same bytes for every id, without touching the store: the page itself reveals nothing.
async fn open_page() -> Response {
    page("text/html; charset=utf-8", OPEN_HTML.to_owned())
}

async fn asset(Path(name): Path<String>) -> Response {
    let (ct, body) = match name.as_str() {
        "share-format.js" => ("text/javascript; charset=utf-8", FORMAT_JS),
        "create.js" => ("text/javascript; charset=utf-8", CREATE_JS),
        "open.js" => ("text/javascript; charset=utf-8", OPEN_JS),
        "approve.js" => ("text/javascript; charset=utf-8", APPROVE_JS),
        "airlock.css" => ("text/css; charset=utf-8", CSS),
        _ => return err(ErrorCode::NotFound),
    };
    page(ct, body.to_owned())
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: String,
    ciphertext: String,
    proof_hash: String,
    expires_at: i64,
    views: u32,
}

async fn create(State(b): State<Arc<Broker>>, req: Request) -> Response {
    let ip = client_ip(&req);
    let s = &b.config().shares;
    if !b.share_rates().create.check(&ip.to_string(), s.create_per_minute) {
        return err(ErrorCode::RateLimited);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
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
    let body: CreateBody = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return err(ErrorCode::InvalidShare),
    };
    match b.store_share(&body, creator.as_ref().map(|c| c.agent.id.as_str()), None).await {
        Ok(()) => json(201, &json!({"ok": true, "id": body.id, "expires_at": body.expires_at, "views": body.views})),
        Err(e) => err(e.code),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    proof: String,
}

async fn consume(State(b): State<Arc<Broker>>, Path(id): Path<String>, req: Request) -> Response {
    let ip = client_ip(&req).to_string();
    let s = &b.config().shares;
    let rates = b.share_rates();
    if !rates.failed.available(&ip, s.failed_consumes_per_minute) {
        return err(ErrorCode::RateLimited);
    }
    let fail = |code: ErrorCode| {
        rates.failed.check(&ip, s.failed_consumes_per_minute);
        err(code)
    };
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), 4096).await else {
        return fail(ErrorCode::InvalidShare);
    };
    let Ok(body) = serde_json::from_slice::<ConsumeBody>(&bytes) else {
        return fail(ErrorCode::InvalidShare);
    };
    let Some(proof) = airlock_share::parse_proof(&body.proof) else {
        return fail(ErrorCode::InvalidShare);
    };
    if !airlock_share::valid_id(&id) {
        return fail(ErrorCode::InvalidShare);
    }
    match b.store().consume_share(&id, &airlock_share::proof_hash(&proof)).await {
        Ok(Some(c)) => {
            json(
                200,
                &json!({
                    "ok": true,
                    "ciphertext": airlock_share::encode_blob(&c.ciphertext),
                    "expires_at": c.expires_at,
                    "views": c.views,
                    "views_left": c.views_left,
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
async fn receipt(State(b): State<Arc<Broker>>, Path(id): Path<String>, headers: axum::http::HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let caller = match b.authenticate(token.as_deref()).await {
        Ok(c) => c,
        Err(e) => return err(e.code),
    };
    if !airlock_share::valid_id(&id) {
        return err(ErrorCode::InvalidShare);
    }
    match b.store().share_receipt(&id, &caller.agent.id).await {
        Ok(Some(r)) => json(
            200,
            &json!({
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

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The share routes and pages, merged into the REST router.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/share", get(create_page))
        .route("/s/{id}", get(open_page))
        .route("/web/{name}", get(asset))
        .route("/v1/shares", post(create))
        .route("/v1/shares/{id}/consume", post(consume))
        .route("/v1/shares/{id}", get(receipt))
}

/// The two per-address limiters of the share endpoints.
#[derive(Debug, Default)]
pub struct ShareRates {
    /// Creations per client address.
    pub create: crate::rate::RateLimiter,
    /// Failed consumes per client address.
    pub failed: crate::rate::RateLimiter,
}

impl Broker {
    /// Validates and stores a share request (from the web page, the CLI or the tool).
    async fn store_share(&self, body: &CreateBody, creator: Option<&str>, recipient: Option<&str>) -> Result<(), CallError> {
        let s = &self.config().shares;
        let now = chrono::Utc::now().timestamp();
        let proof_hash: Option<[u8; 32]> =
            airlock_share::decode_b64(&body.proof_hash).and_then(|v| v.as_slice().try_into().ok());
        let Some(proof_hash) = proof_hash else {
            return Err(CallError::new(ErrorCode::InvalidShare));
        };
        if !airlock_share::valid_id(&body.id)
            || body.views == 0
            || body.views > s.max_views
            || body.expires_at <= now
            || body.expires_at > now + s.max_expiry_seconds as i64 + 60
        {
            return Err(CallError::new(ErrorCode::InvalidShare));
        }
        let blob = airlock_share::decode_blob(&body.ciphertext).map_err(|_| CallError::new(ErrorCode::InvalidShare))?;
        match airlock_share::check_blob(&blob, s.max_plaintext_bytes) {
            Ok(()) => {}
            Err(ShareError::TooLarge(_)) => return Err(CallError::new(ErrorCode::LimitExceeded)),
            Err(_) => return Err(CallError::new(ErrorCode::InvalidShare)),
        }
        let rec = NewShareRecord {
            id: &body.id,
            ciphertext: &blob,
            proof_hash: &proof_hash,
            expires_at: body.expires_at,
            views: body.views,
            creator,
            recipient,
        };
        match self.store().create_share(&rec).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(CallError::new(ErrorCode::InvalidShare)),
            Err(e) => Err(CallError::new(ErrorCode::Internal).detail(e.to_string())),
        }
    }

    /// The public base of links this broker makes.
    pub fn share_base_url(&self) -> String {
        let cfg = self.config();
        match &cfg.shares.base_url {
            Some(b) => b.trim_end_matches('/').to_owned(),
            None => format!("http://{}", cfg.server.listen),
        }
    }
}

/// Arguments of `share_secret` (the handle is checked before these are parsed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareArgs {
    /// A recipient named in `[shares.recipients]`.
    pub recipient: String,
    /// Views, default 1.
    #[serde(default)]
    pub views: Option<u32>,
    /// Seconds until expiry, default 3600.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A validated `share_secret` call.
#[derive(Debug)]
pub struct ValidatedShare {
    recipient: String,
    channel: ShareChannel,
    views: u32,
    expires_in: u64,
}

/// Where a link goes. New kinds (SMTP through a handle) are new variants.
#[derive(Debug, Clone)]
pub enum ShareChannel {
    /// POST the delivery as JSON.
    Webhook(String),
    /// Append the delivery as a JSON line to a 0600 file.
    Outbox(std::path::PathBuf),
}

impl ShareChannel {
    fn from_config(c: &ShareChannelConfig) -> ShareChannel {
        match c {
            ShareChannelConfig::Webhook { url } => ShareChannel::Webhook(url.clone()),
            ShareChannelConfig::Outbox { path } => ShareChannel::Outbox(path.clone()),
        }
    }

    /// Delivers `payload` (it holds the link: never log it).
    async fn deliver(&self, payload: &Value) -> Result<(), String> {
        match self {
            ShareChannel::Webhook(url) => {
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .map_err(|e| e.to_string())?;
                let r = client.post(url).json(payload).send().await.map_err(|e| format!("webhook: {}", e.without_url()))?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("webhook answered {}", r.status()))
                }
            }
            ShareChannel::Outbox(path) => {
                use std::io::Write;
                let mut line = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
                line.push(b'\n');
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut o = std::fs::OpenOptions::new();
                    o.append(true).create(true);
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::OpenOptionsExt;
                        o.mode(0o600);
                    }
                    let mut f = o.open(&path).map_err(|e| format!("outbox {}: {e}", path.display()))?;
                    f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| format!("outbox {}: {e}", path.display()))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }
}

impl ValidatedShare {
    /// Checks the arguments against the configuration before any secret is touched.
    pub fn validate(cfg: &SharesConfig, a: &ShareArgs) -> Result<ValidatedShare, CallError> {
        let channel = cfg
            .recipients
            .get(&a.recipient)
            .and_then(|name| cfg.channels.get(name))
            .ok_or_else(|| CallError::new(ErrorCode::RecipientNotAllowed))?;
        let views = a.views.unwrap_or(1);
        if views == 0 || views > cfg.max_views {
            return Err(CallError::with_message(ErrorCode::InvalidArguments, format!("views is 1 to {}", cfg.max_views)));
        }
        let expires_in = a.expires_in.unwrap_or(3600);
        if !(60..=cfg.max_expiry_seconds).contains(&expires_in) {
            return Err(CallError::with_message(
                ErrorCode::InvalidArguments,
                format!("expires_in is 60 to {} seconds", cfg.max_expiry_seconds),
            ));
        }
        Ok(ValidatedShare { recipient: a.recipient.clone(), channel: ShareChannel::from_config(channel), views, expires_in })
    }

    /// Seals the secret, stores the share, delivers the link. The agent gets only the id, the
    /// expiry and the recipient.
    pub async fn execute(&self, broker: &Broker, caller: &Caller, secret: &Secret) -> Result<Value, CallError> {
        let cfg = &broker.config().shares;
        if secret.len() > cfg.max_plaintext_bytes {
            return Err(CallError::new(ErrorCode::LimitExceeded));
        }
        let expires_at = chrono::Utc::now().timestamp() + self.expires_in as i64;
        let share = NewShare::create(secret.expose_secret(), None, expires_at, self.views, cfg.max_plaintext_bytes)
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        let (ciphertext, proof_hash) = share.request_fields();
        let body = CreateBody { id: share.id.clone(), ciphertext, proof_hash, expires_at, views: self.views };
        broker.store_share(&body, Some(&caller.agent.id), Some(&self.recipient)).await?;
        let link = Link::render(&broker.share_base_url(), &share.id, &share.key, false);
        let payload = json!({
            "recipient": self.recipient,
            "link": link.as_str(),
            "share_id": share.id,
            "expires_at": rfc3339(expires_at),
            "views": self.views,
            "from_agent": caller.agent.name,
        });
        if let Err(e) = self.channel.deliver(&payload).await {
            // A link nobody received must not stay redeemable.
            let _ = broker.store().delete_share(&share.id).await;
            return Err(CallError::with_message(ErrorCode::UpstreamUnavailable, "the link could not be delivered to the recipient")
                .detail(e));
        }
        Ok(json!({"share_id": share.id, "expires_at": rfc3339(expires_at), "recipient": self.recipient}))
    }
}
