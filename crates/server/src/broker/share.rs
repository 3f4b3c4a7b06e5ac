//! The `share_secret` executor and the broker's side of one-time links (DESIGN.md, "One-time
//! links"; T17): validating and storing uploaded shares, sealing a handle's secret into a new
//! share, and delivering its link to a configured recipient ([`Broker::deliver`]), never to the
//! agent.

use super::delivery::{self, Delivery, Purpose};
use super::revocation::{Revoked, Revoker};
use super::rate::RateLimiter;
use super::Broker;
use airlock_core::config::{Handle, SharesConfig};
use airlock_core::{CallError, CallFacts, ErrorCode, Secret, Unscrubbed, ValidateCtx};
use airlock_share::{Link, NewShare, ShareError};
use airlock_store::shares::NewShareRecord;
use airlock_store::{Store, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

/// A share as a client uploads it (`POST /v1/shares`, or [`ShareExecutor`]): the ciphertext
/// sealed under a key the server never sees.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareUpload {
    /// The share id.
    pub id: String,
    /// The sealed blob, base64url.
    pub ciphertext: String,
    /// SHA-256 of the consume proof, base64url.
    pub proof_hash: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The view limit.
    pub views: u32,
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The limiters of the share endpoints, each a map keyed by client input and capped at
/// `[shares] max_tracked_clients` entries (T29).
///
/// Wrong proofs are limited per (share, client address) and per share over all addresses, never
/// per address alone: a third party behind the same proxy as the person holding the link cannot
/// lock that person out, and a correct proof is never refused by these limits (the consume
/// endpoint checks the proof before it answers `rate-limited`).
#[derive(Debug, Default)]
pub struct ShareRates {
    /// Creations per client address.
    pub create: RateLimiter,
    /// Failed consumes per (share id, client address).
    pub failed_pair: RateLimiter,
    /// Failed consumes per share id, all addresses together.
    pub failed_share: RateLimiter,
}

/// Whether a consume may take the write path for a proof, or must first show it is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeGate {
    /// Under both limits: try the consume.
    Open,
    /// Past a limit: only a correct proof goes on; a wrong one is `rate-limited`.
    ProofFirst,
}

impl ShareRates {
    /// The three limiters, each keeping at most `max_tracked_clients` keys.
    pub fn new(s: &SharesConfig) -> ShareRates {
        let cap = s.max_tracked_clients;
        ShareRates {
            create: RateLimiter::with_capacity(cap),
            failed_pair: RateLimiter::with_capacity(cap),
            failed_share: RateLimiter::with_capacity(cap),
        }
    }

    fn pair_key(id: &str, ip: &str) -> String {
        format!("{id} {ip}")
    }

    /// The gate for a consume of share `id` from `ip`.
    pub fn consume_gate(&self, s: &SharesConfig, id: &str, ip: &str) -> ConsumeGate {
        if self.failed_pair.available(&Self::pair_key(id, ip), s.failed_consumes_per_minute)
            && self.failed_share.available(id, s.failed_consumes_per_share_per_minute)
        {
            ConsumeGate::Open
        } else {
            ConsumeGate::ProofFirst
        }
    }
}

impl Broker {
    /// Counts a failed consume of share `id` from `ip`.
    pub fn share_consume_failed(&self, id: &str, ip: &str) {
        let s = &self.config().shares;
        let rates = self.share_rates();
        rates.failed_pair.check(&ShareRates::pair_key(id, ip), s.failed_consumes_per_minute);
        rates.failed_share.check(id, s.failed_consumes_per_share_per_minute);
    }

    /// Takes a creation token for `ip`; false when it has none left.
    pub fn share_create_allowed(&self, ip: &str) -> bool {
        let s = &self.config().shares;
        self.share_rates().create.check(ip, s.create_per_minute)
    }
}

/// Checks an upload and stores it. Shared by the upload endpoint and the executor. Returns how
/// many shares without a creator were evicted to keep them under `max_anonymous_shares`.
async fn store_upload(store: &Store, s: &SharesConfig, body: &ShareUpload, owner: ShareOwner<'_>) -> Result<u64, CallError> {
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
        creator: owner.creator,
        recipient: owner.recipient,
    };
    match store.create_share_capped(&rec, Some(s.max_anonymous_shares)).await {
        Ok(evicted) => Ok(evicted),
        Err(StoreError::Conflict(_)) => Err(CallError::new(ErrorCode::InvalidShare)),
        Err(e) => Err(CallError::new(ErrorCode::Internal).detail(e.to_string())),
    }
}

/// Who a share belongs to: the agent that made it and the recipient it was delivered to.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShareOwner<'a> {
    /// The creating agent's id.
    pub creator: Option<&'a str>,
    /// The configured recipient.
    pub recipient: Option<&'a str>,
}

impl Broker {
    /// Validates and stores an uploaded share (from the web page or the CLI).
    pub async fn store_share(&self, body: &ShareUpload, owner: ShareOwner<'_>) -> Result<(), CallError> {
        let evicted = store_upload(self.store(), &self.config().shares, body, owner).await?;
        self.metrics().shares_evicted(evicted);
        self.metrics().event(super::metrics::Event::ShareCreated);
        Ok(())
    }

    /// Revokes a live share before it is used up, as `who`; with `creator` (an agent id), only a
    /// share that agent created. The revocation is audited (`share_revoked`) with who and why.
    /// An unknown, used, expired, already revoked or another agent's share is
    /// `share-unavailable`, alike.
    pub async fn revoke_share_by(&self, id: &str, creator: Option<&str>, who: &Revoker<'_>) -> Result<Value, CallError> {
        if !airlock_share::valid_id(id) {
            return Err(CallError::new(ErrorCode::InvalidShare));
        }
        match self.store().revoke_share(id, creator).await {
            Ok(true) => {
                let target = json!({"share_id": id});
                self.audit_revocation(who, Revoked { event: "share_revoked", handle: None, target, code: None }).await;
                Ok(json!({"share_id": id, "revoked": true}))
            }
            Ok(false) => Err(CallError::new(ErrorCode::ShareUnavailable)),
            Err(e) => Err(CallError::new(ErrorCode::Internal).detail(e.to_string())),
        }
    }

    /// The public base of links this broker makes.
    pub fn share_base_url(&self) -> String {
        base_url(&self.config())
    }
}

fn base_url(cfg: &airlock_core::config::Config) -> String {
    match &cfg.shares.base_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => format!("http://{}", cfg.server.listen),
    }
}

/// Arguments of `share_secret` (the handle is checked before these are parsed).
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema (`schemars`);
/// the upper bounds come from `[shares]` (crates/server/src/broker/tools.rs).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareArgs {
    /// Who receives the link: a recipient named in `[shares.recipients]`.
    pub recipient: String,
    /// How many times the link can be opened; default 1.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub views: Option<u32>,
    /// Seconds until the link expires; default 3600.
    #[serde(default)]
    #[schemars(range(min = 60))]
    pub expires_in: Option<u64>,
}

/// A validated `share_secret` call.
#[derive(Debug)]
pub struct ValidatedShare {
    recipient: String,
    agent_id: String,
    agent_name: String,
    views: u32,
    expires_in: u64,
}

impl ValidatedShare {
    /// Checks the arguments against the configuration before any secret is touched.
    pub fn validate(cfg: &SharesConfig, a: &ShareArgs, ctx: &ValidateCtx<'_>) -> Result<ValidatedShare, CallError> {
        if delivery::channel_of(cfg, &a.recipient).is_none() {
            return Err(CallError::new(ErrorCode::RecipientNotAllowed));
        }
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
        Ok(ValidatedShare {
            recipient: a.recipient.clone(),
            agent_id: ctx.agent_id.to_owned(),
            agent_name: ctx.agent_name.to_owned(),
            views,
            expires_in,
        })
    }
}

/// `share_secret`'s executor: validates the call and seals the handle's secret into a stored
/// share. The broker runs it ([`Broker::share_secret`]): it resolves the secret, has the share
/// made, delivers the link and withdraws the share when the link could not be delivered.
pub struct ShareExecutor {
    store: Store,
    cfg: SharesConfig,
    base_url: String,
}

/// A share just stored, and its link (base, id and key): for the recipient only, never for the
/// agent or a log.
pub(crate) struct MadeShare {
    /// The link; `link.id` is the share id.
    pub(crate) link: Link,
    /// Unix seconds.
    pub(crate) expires_at: i64,
}

impl ShareExecutor {
    /// An executor storing into `store` under `cfg`'s `[shares]`.
    pub fn new(store: Store, cfg: &airlock_core::config::Config) -> ShareExecutor {
        ShareExecutor { store, cfg: cfg.shares.clone(), base_url: base_url(cfg) }
    }

    /// Checks a call's arguments (no secret, no I/O).
    pub fn validate(&self, _: &Handle, args: ShareArgs, ctx: &ValidateCtx<'_>) -> Result<ValidatedShare, CallError> {
        ValidatedShare::validate(&self.cfg, &args, ctx)
    }

    /// A link is delivered to a person: it acts on the world.
    pub fn facts(&self, _: &Handle, _: &ValidatedShare) -> CallFacts {
        CallFacts { side_effects: true, ..CallFacts::default() }
    }

    /// Seals `secret` into a new share and stores it. The link it returns is the only way to
    /// open it: deliver it, or the share is as good as gone (and withdraw it anyway).
    pub(crate) async fn make(&self, p: &ValidatedShare, secret: &Secret) -> Result<MadeShare, CallError> {
        let cfg = &self.cfg;
        if secret.len() > cfg.max_plaintext_bytes {
            return Err(CallError::new(ErrorCode::LimitExceeded));
        }
        let expires_at = chrono::Utc::now().timestamp() + p.expires_in as i64;
        let share = NewShare::for_secret(secret, expires_at, p.views, cfg.max_plaintext_bytes)
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        let (ciphertext, proof_hash) = share.request_fields();
        let body = ShareUpload { id: share.id.clone(), ciphertext, proof_hash, expires_at, views: p.views };
        let owner = ShareOwner { creator: Some(&p.agent_id), recipient: Some(&p.recipient) };
        store_upload(&self.store, cfg, &body, owner).await?;
        let link = Link { base: self.base_url.clone(), id: share.id, key: share.key, passphrase: false };
        Ok(MadeShare { link, expires_at })
    }
}

impl Broker {
    /// `share_secret`'s run step: the handle's secret sealed into a share, whose link goes to
    /// the recipient through [`Broker::deliver`]. The agent gets only the id, the expiry and the
    /// recipient. A link that could not be delivered is withdrawn at once: nobody may hold a
    /// redeemable link that its recipient never received.
    pub(crate) async fn share_secret(&self, handle: &Handle, p: &ValidatedShare) -> Result<Unscrubbed, CallError> {
        let made = {
            let secret = self.resolve(handle).await?;
            self.executors.share.make(p, &secret).await?
        };
        let (id, expires) = (made.link.id.as_str(), rfc3339(made.expires_at));
        let link = Link::render(&made.link.base, id, &made.link.key, false);
        let json = json!({
            "recipient": p.recipient,
            "link": link.as_str(),
            "share_id": id,
            "expires_at": expires,
            "views": p.views,
            "from_agent": p.agent_name,
        });
        let views = if p.views == 1 { "once".to_owned() } else { format!("{} times", p.views) };
        let body = delivery::mail_body(
            &format!("{} (an agent using airlock) shared a secret with you as a one-time link:", p.agent_name),
            &link,
            &format!(
                "The link can be opened {views}, until {expires}; then it no longer works.\n\
                 It was delivered to you only: the agent has the share id {id}, not the link.\n\
                 If you did not expect it, do not open it, and tell whoever runs airlock."
            ),
        );
        let subject = format!("{} shared a secret with you (one-time link)", p.agent_name);
        let message = Delivery { purpose: Purpose::Share, json: &json, subject: &subject, body: &body };
        if let Err(e) = self.deliver(&p.recipient, &message).await {
            // A link nobody received must not stay redeemable.
            if let Err(w) = self.store().delete_share(id).await {
                tracing::error!(share_id = %id, error = %w, "an undelivered share could not be withdrawn");
            }
            return Err(CallError::with_message(
                ErrorCode::UpstreamUnavailable,
                format!("the link could not be delivered to the recipient; share {id} was withdrawn"),
            )
            .detail(e));
        }
        Ok(Unscrubbed::new(json!({"share_id": id, "expires_at": expires, "recipient": p.recipient})))
    }
}
