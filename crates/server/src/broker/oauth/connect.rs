//! Connecting an account (T31): `connect_account` makes a link bound to the handle, the agent
//! and an owner the handle allows, and sends the owner a code; the page's right code binds the
//! link to that browser and sends it to the provider; the callback finishes a link only for its
//! `state` and that browser, once, and stores the sealed token set.

use super::{constraints, internal, now, seal_name, sha256};
use crate::broker::delivery::{self, Delivery, Purpose};
use crate::broker::Broker;
use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, HandleName};
use airlock_store::oauth::{status, NewConnect};
use serde::Deserialize;
use serde_json::{json, Value};

/// How long a connect link stays valid.
pub const CONNECT_TTL_SECONDS: i64 = 600;

/// Wrong owner codes after which a link fails for good.
pub const MAX_CODE_ATTEMPTS: i64 = 5;

/// The owner's code: 8 characters without look-alikes (40 bits; 5 tries).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Arguments of `connect_account` (the handle is checked before these are parsed).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectArgs {
    /// Who connects the account: one of the handle's owners. They receive, through their own
    /// channel, the code the link's page asks for; give them the link.
    pub owner: String,
}

/// Arguments of `connect_status`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectStatusArgs {
    /// The `connect_id` connect_account returned. Without it, the status of the handle's
    /// account (`connected`, `needs-reauth` or `not-connected`).
    #[serde(default)]
    pub connect_id: Option<String>,
}

fn verifier_name(connect_id: &str) -> String {
    airlock_store::keyring::connect_seal_name(connect_id)
}

fn owner_code() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8).map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char).collect()
}

/// A new connect link as its creator sees it: the link, and the owner's code (delivered to the
/// owner by `connect_account`, printed by `airlock connect` for the operator).
pub struct NewLink {
    /// The link id.
    pub id: String,
    /// `{base}/connect/{id}`.
    pub link: String,
    /// The owner's code.
    pub code: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Who asks for a connect link.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// Agent id (`operator` for the CLI).
    pub id: &'a str,
    /// Agent name.
    pub name: &'a str,
}

/// A connect page's request to verify its owner.
pub struct Verified {
    /// Where the browser goes next (the provider's authorization endpoint).
    pub authorize_url: String,
    /// The browser binding, set as a cookie for the callback.
    pub browser: String,
    /// The cookie's name.
    pub cookie: String,
}

/// The cookie that binds a connect link to the browser that passed the owner check.
pub fn cookie_name(connect_id: &str) -> String {
    format!("airlock_connect_{connect_id}")
}

/// How a callback ended, for the page the browser lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The account is connected.
    Connected,
    /// The owner refused at the provider.
    Denied,
    /// The code exchange failed.
    Failed,
    /// No live link matches the state and this browser.
    Unavailable,
}

impl Broker {
    /// Whether the connect pages may answer `ip`: under `[shares] failed_consumes_per_minute`
    /// requests that found nothing to continue (an unknown, finished or expired link, a wrong
    /// code, a callback that finishes nothing) in the last minute (T29).
    pub fn connect_allowed(&self, ip: &str) -> bool {
        self.limits.connect_failed.available(ip, self.config().shares.failed_consumes_per_minute)
    }

    /// Counts one connect-page request from `ip` that found nothing to continue.
    pub fn connect_failed(&self, ip: &str) {
        self.limits.connect_failed.check(ip, self.config().shares.failed_consumes_per_minute);
    }

    /// Makes a connect link for `owner` (one the handle allows) on behalf of `by`.
    pub async fn create_connect(&self, handle: &Handle, owner: &str, by: Requester<'_>) -> Result<NewLink, CallError> {
        let c = constraints(handle)?;
        if !c.provider.owners.iter().any(|o| o == owner) {
            return Err(CallError::new(ErrorCode::OwnerNotAllowed));
        }
        let id = airlock_exec_oauth::random_token(16).to_string();
        let code = owner_code();
        let expires_at = now() + CONNECT_TTL_SECONDS;
        let code_hash = sha256(&[id.as_bytes(), code.as_bytes()]);
        let rec = NewConnect { id: &id, handle: handle.name.as_str(), agent_id: by.id, agent_name: by.name, owner, code_hash: &code_hash, expires_at };
        self.store().insert_connect(&rec).await.map_err(internal)?;
        let link = format!("{}/connect/{id}", self.share_base_url());
        Ok(NewLink { id, link, code, expires_at })
    }

    /// `connect_account`: a link for the owner, whose code goes to the owner's channel
    /// ([`Broker::deliver`]); the agent gets the link, never the code.
    pub(crate) async fn connect_account(&self, handle: &Handle, a: &ConnectArgs, by: Requester<'_>) -> Result<Value, CallError> {
        if delivery::channel_of(&self.config().shares, &a.owner).is_none() {
            return Err(CallError::new(ErrorCode::OwnerNotAllowed));
        }
        let l = self.create_connect(handle, &a.owner, by).await?;
        let scopes = constraints(handle)?.provider.scopes.join(" ");
        let expires = crate::broker::share::rfc3339(l.expires_at);
        let payload = json!({
            "recipient": a.owner,
            "handle": handle.name.as_str(),
            "from_agent": by.name,
            "link": l.link,
            "code": l.code,
            "scopes": scopes,
            "expires_at": expires,
        });
        let subject = format!("Your code to connect an account for {}", handle.name);
        let body = delivery::mail_body(
            &format!(
                "{} (an agent using airlock) asks you to connect your account for {} (scopes: {scopes}).\n\n\
                 Your code: {}\n\n\
                 The agent gives you this link; its page asks for the code above:",
                by.name, handle.name, l.code
            ),
            &l.link,
            &format!("The link and the code work until {expires}. If you did not expect this, do not use them."),
        );
        let message = Delivery { purpose: Purpose::Connect, json: &payload, subject: &subject, body: &body };
        if let Err(e) = self.deliver(&a.owner, &message).await {
            let _ = self.store().finish_connect(&l.id, &[status::PENDING], status::FAILED).await;
            return Err(CallError::with_message(ErrorCode::UpstreamUnavailable, "the owner's code could not be delivered").detail(e));
        }
        Ok(json!({
            "connect_id": l.id,
            "link": l.link,
            "owner": a.owner,
            "status": "pending",
            "expires_at": crate::broker::share::rfc3339(l.expires_at),
        }))
    }

    /// `connect_status`: a link's status for the agent that asked for it, or the account's.
    pub(crate) async fn connect_status(&self, handle: &Handle, a: &ConnectStatusArgs, agent_id: &str) -> Result<Value, CallError> {
        let Some(id) = &a.connect_id else {
            let account = self.store().account(handle.name.as_str()).await.map_err(internal)?;
            return Ok(match account {
                None => json!({"status": "not-connected"}),
                Some(acc) => json!({"status": acc.status, "owner": acc.owner, "connected_at": acc.connected_at}),
            });
        };
        let unavailable = || CallError::new(ErrorCode::ConnectUnavailable);
        let c = self.store().connect_link(id).await.map_err(internal)?.ok_or_else(unavailable)?;
        if c.handle != handle.name.as_str() || c.agent_id != agent_id {
            return Err(unavailable());
        }
        let live = c.expires_at > now();
        let s = match c.status.as_str() {
            status::CONNECTED => "connected",
            status::DENIED => "denied",
            status::FAILED => "failed",
            _ if !live => "expired",
            _ => "pending",
        };
        Ok(json!({"connect_id": c.id, "status": s, "owner": c.owner, "expires_at": crate::broker::share::rfc3339(c.expires_at)}))
    }

    /// What the connect page shows: who asks for which account and scopes, and at which
    /// provider. Unknown, finished and expired links are alike.
    pub async fn connect_view(&self, id: &str) -> Result<Value, CallError> {
        let unavailable = || CallError::new(ErrorCode::ConnectUnavailable);
        let c = self.store().connect_link(id).await.map_err(internal)?.ok_or_else(unavailable)?;
        if !matches!(c.status.as_str(), status::PENDING | status::AUTHORIZING) || c.expires_at <= now() {
            return Err(unavailable());
        }
        let cfg = self.config();
        let handle = HandleName::parse(&c.handle).ok().and_then(|h| cfg.handles.get(&h)).ok_or_else(unavailable)?;
        let o = constraints(handle)?;
        let provider = match &o.provider.endpoints {
            airlock_core::config::OauthEndpoints::Explicit { authorization_url, .. } => authorization_url.clone(),
            airlock_core::config::OauthEndpoints::Discover { issuer } => issuer.clone(),
        };
        let host = reqwest::Url::parse(&provider).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        Ok(json!({
            "handle": c.handle,
            "description": handle.description,
            "agent": c.agent_name,
            "owner": c.owner,
            "scopes": o.provider.scopes,
            "provider": host,
            "destinations": o.http.destinations.iter().map(|d| format!("{}://{}:{}{}", d.scheme, d.host, d.port, d.path_prefix)).collect::<Vec<_>>(),
            "expires_at": crate::broker::share::rfc3339(c.expires_at),
        }))
    }

    /// The connect page's owner check: the right code binds the link to this browser and
    /// returns where to send it. A wrong code counts; after [`MAX_CODE_ATTEMPTS`] the link fails.
    pub async fn connect_verify(&self, id: &str, code: &str) -> Result<Verified, CallError> {
        let unavailable = || CallError::new(ErrorCode::ConnectUnavailable);
        let c = self.store().connect_link(id).await.map_err(internal)?.ok_or_else(unavailable)?;
        if !matches!(c.status.as_str(), status::PENDING | status::AUTHORIZING) || c.expires_at <= now() {
            return Err(unavailable());
        }
        let given = sha256(&[id.as_bytes(), code.trim().to_ascii_uppercase().as_bytes()]);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_slice(), c.code_hash.as_slice())) {
            let live = self.store().connect_code_failed(id, MAX_CODE_ATTEMPTS).await.map_err(internal)?;
            self.audit_account(&c.owner, "wrong owner code", "connect_code_refused", &c.handle, Some(ErrorCode::OwnerNotAllowed.as_str()), json!({"connect_id": id, "link_usable": live}))
                .await;
            return Err(if live { CallError::with_message(ErrorCode::OwnerNotAllowed, "the code is not right") } else { unavailable() });
        }
        let cfg = self.config();
        let handle = HandleName::parse(&c.handle).ok().and_then(|h| cfg.handles.get(&h)).ok_or_else(unavailable)?;
        let parts = self.client_parts(handle).await?;
        let auth = self.client(constraints(handle)?, &parts).authorize().map_err(|e| CallError::new(ErrorCode::UpstreamUnavailable).detail(e.to_string()))?;
        let browser = airlock_exec_oauth::random_token(32).to_string();
        let browser_hash = sha256(&[browser.as_bytes()]);
        let ok = self
            .vault()
            .seal_into(&verifier_name(id), &auth.verifier, |verifier| {
                let (state_hash, browser_hash) = (&auth.state_hash, &browser_hash);
                async move { self.store().connect_authorize(id, state_hash, browser_hash, &verifier).await }
            })
            .await
            .map_err(internal)?;
        if !ok {
            return Err(unavailable());
        }
        self.audit_account(&c.owner, "owner code accepted", "connect_verified", &c.handle, None, json!({"connect_id": id})).await;
        Ok(Verified { authorize_url: auth.url, browser, cookie: cookie_name(id) })
    }

    /// The provider's redirect back: finishes the link whose `state` this is, if `cookies`
    /// (name, value) hold its browser binding. A code is exchanged once; the token set is
    /// sealed and stored; the agent only ever sees the status.
    pub async fn connect_callback(&self, state: &str, code: Option<&str>, error: Option<&str>, cookies: &[(String, String)]) -> CallbackOutcome {
        let state_hash = airlock_exec_oauth::state_hash(state);
        let mut claimed = None;
        for (name, value) in cookies.iter().filter(|(n, _)| n.starts_with("airlock_connect_")) {
            match self.store().claim_callback(&state_hash, &sha256(&[value.as_bytes()])).await {
                Ok(Some(c)) if cookie_name(&c.id) == *name => {
                    claimed = Some(c);
                    break;
                }
                Ok(Some(c)) => {
                    // The binding matched under another cookie's name: not this browser's link.
                    let _ = self.store().finish_connect(&c.id, &[status::EXCHANGING], status::FAILED).await;
                    return CallbackOutcome::Unavailable;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "connect callback: store error");
                    return CallbackOutcome::Unavailable;
                }
            }
        }
        let Some(c) = claimed else {
            tracing::info!("connect callback without a live link for its state and browser");
            return CallbackOutcome::Unavailable;
        };
        let handle = HandleName::parse(&c.handle).ok().and_then(|h| self.config().handles.get(&h).cloned());
        let (Some(handle), Some(code), None) = (handle, code, error) else {
            let _ = self.store().finish_connect(&c.id, &[status::EXCHANGING], status::DENIED).await;
            self.audit_account(&c.owner, "the owner or the provider refused", "connect_denied", &c.handle, Some("denied"), json!({"connect_id": c.id}))
                .await;
            return CallbackOutcome::Denied;
        };
        match self.finish_exchange(&handle, &c, code).await {
            Ok(()) => CallbackOutcome::Connected,
            Err(e) => {
                let _ = self.store().finish_connect(&c.id, &[status::EXCHANGING], status::FAILED).await;
                tracing::warn!(handle = %handle.name, code = e.code.as_str(), detail = %self.loggable_detail(e.detail.as_deref().unwrap_or("")), "connect: code exchange failed");
                self.audit_account(&c.owner, "code exchange failed", "connect_failed", &c.handle, Some(e.code.as_str()), json!({"connect_id": c.id}))
                    .await;
                CallbackOutcome::Failed
            }
        }
    }

    async fn finish_exchange(&self, handle: &Handle, c: &airlock_store::oauth::Connect, code: &str) -> Result<(), CallError> {
        let sealed = c.verifier.as_deref().ok_or_else(|| internal("no verifier"))?;
        let verifier = self.vault().open_value(&verifier_name(&c.id), sealed).await.map_err(internal)?;
        let parts = self.client_parts(handle).await?;
        let set = parts
            .bounded(self.client(constraints(handle)?, &parts).exchange(code, &verifier))
            .await
            .map_err(|e| CallError::new(ErrorCode::UpstreamUnavailable).detail(e.to_string()))?;
        let expires_at = set.expires_at();
        let version = self
            .vault()
            .seal_into(&seal_name(&c.handle, &c.owner), &set.to_secret(), |sealed| async move {
                self.store().put_account(&c.handle, &c.owner, &sealed, expires_at).await
            })
            .await
            .map_err(internal)?;
        self.store().finish_connect(&c.id, &[status::EXCHANGING], status::CONNECTED).await.map_err(internal)?;
        self.oauth.keep(&handle.name, version, &set);
        self.rebuild_scrubber().await.map_err(internal)?;
        tracing::info!(handle = %c.handle, owner = %c.owner, version, "account connected");
        let target = json!({"connect_id": c.id, "requested_by": c.agent_name, "scope": set.scope(), "version": version});
        self.audit_account(&c.owner, "account connected", "account_connected", &c.handle, None, target).await;
        Ok(())
    }
}
