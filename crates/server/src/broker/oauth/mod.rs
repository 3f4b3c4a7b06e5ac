//! Connected OAuth accounts (T31): an `oauth` handle's account is connected by a person through
//! a one-time link, its tokens are kept sealed in the store, refreshed by exactly one caller in
//! any number of replicas, and put only into outgoing requests.
//!
//! - **Connect**: `connect_account` makes a link (10 minutes) bound to the handle, the agent and
//!   an owner the handle allows; the owner gets a code through their channel. The page asks for
//!   it; the right code binds the link to that browser (a cookie), seals a PKCE verifier and
//!   sends the browser to the provider with `state`. The callback finishes a link only for its
//!   `state` *and* its browser, once ([`Store::claim_callback`]).
//! - **Use**: `http_request` on the handle gets the current access token
//!   ([`Broker::oauth_token`]). One due for refresh is refreshed under a per-handle lock in
//!   this process and a claim on the account's version in the store, re-read after the lock:
//!   whoever finds it fresh uses it. The new tokens are saved in the statement that drops the
//!   claim. An upstream 401 forces one refresh and one retry.
//! - **Failure**: `invalid_grant`, or an answer lost after the refresh token may have been sent,
//!   marks the account `needs-reauth` (a rotating refresh token is never sent twice); a provider
//!   that is down or answers 5xx backs off and the tokens stay.

mod connect;

pub use connect::{cookie_name, CallbackOutcome, ConnectArgs, ConnectStatusArgs, NewLink, Requester, Verified, CONNECT_TTL_SECONDS, MAX_CODE_ATTEMPTS};

use super::revocation::{Revoked, Revoker};
use super::Broker;
use airlock_core::config::{Handle, OauthConstraints};
use airlock_core::{CallError, ErrorCode, HandleName, Secret};
use airlock_exec_oauth::{Client, Endpoints, OauthError, TokenSet};
use airlock_store::oauth::{status, Account, Refreshed};
use ring::digest;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a token set read from the store is used before the store is read again (another
/// process may have refreshed, reconnected or revoked the account).
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long nobody refreshes after the provider was unavailable.
const BACK_OFF_MS: i64 = 5_000;

/// An account's tokens as last read, by handle.
struct Cached {
    version: i64,
    set: TokenSet,
    read: Instant,
}

/// The broker's connected-account state: per-handle refresh locks, the token sets last read,
/// discovered endpoints, and the client for token endpoints.
pub(crate) struct OauthState {
    flights: Mutex<HashMap<HandleName, Arc<tokio::sync::Mutex<()>>>>,
    cache: Mutex<HashMap<HandleName, Cached>>,
    endpoints: tokio::sync::Mutex<HashMap<HandleName, Endpoints>>,
    /// A client per handle (each may trust its own `ca_file`).
    clients: Mutex<HashMap<HandleName, reqwest::Client>>,
    /// This broker's name in refresh claims.
    replica: String,
}

impl Default for OauthState {
    fn default() -> Self {
        OauthState {
            flights: Mutex::default(),
            cache: Mutex::default(),
            endpoints: tokio::sync::Mutex::default(),
            clients: Mutex::default(),
            replica: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl OauthState {
    /// The handle's HTTP client for its provider, built once. Each request is bounded by the
    /// handle's `token_timeout_ms` (tokio::time::timeout); the client's own timeout is a backstop.
    fn http(&self, handle: &Handle, c: &OauthConstraints) -> Result<reqwest::Client, CallError> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = m.get(&handle.name) {
            return Ok(h.clone());
        }
        let pem = match &c.provider.ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|e| internal(format!("ca_file {}: {e}", f.display())))?),
            None => None,
        };
        let h = airlock_exec_oauth::http_client(Duration::from_secs(300), pem.as_deref()).map_err(internal)?;
        m.insert(handle.name.clone(), h.clone());
        Ok(h)
    }

    fn flight(&self, h: &HandleName) -> Arc<tokio::sync::Mutex<()>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).entry(h.clone()).or_default().clone()
    }

    fn cached(&self, h: &HandleName) -> Option<(i64, TokenSet)> {
        let m = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        m.get(h).filter(|c| c.read.elapsed() < RECHECK).map(|c| (c.version, c.set.clone()))
    }

    fn keep(&self, h: &HandleName, version: i64, set: &TokenSet) {
        let c = Cached { version, set: set.clone(), read: Instant::now() };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(h.clone(), c);
    }

    pub(in crate::broker) fn forget(&self, h: &HandleName) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(h);
    }
}

/// The vault name an account's token set is sealed under: its handle and owner are the
/// associated data, so a row copied to another handle or owner does not open.
pub(crate) fn seal_name(handle: &str, owner: &str) -> String {
    airlock_store::keyring::account_seal_name(handle, owner)
}

pub(super) fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    ctx.finish().as_ref().to_vec()
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn internal(e: impl std::fmt::Display) -> CallError {
    CallError::new(ErrorCode::Internal).detail(e.to_string())
}

pub(super) fn constraints(handle: &Handle) -> Result<&OauthConstraints, CallError> {
    handle.oauth().ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable).detail("not an oauth handle"))
}

/// The parts of a provider client that are resolved per request.
struct ClientParts {
    secret: Secret,
    endpoints: Endpoints,
    redirect: String,
    timeout_ms: u64,
    http: reqwest::Client,
}

impl ClientParts {
    /// `f` bounded by the handle's token timeout; a timeout is a lost answer.
    async fn bounded<T>(&self, f: impl std::future::Future<Output = Result<T, OauthError>>) -> Result<T, OauthError> {
        match tokio::time::timeout(Duration::from_millis(self.timeout_ms), f).await {
            Ok(r) => r,
            Err(_) => Err(OauthError::Lost(format!("no answer within {} ms", self.timeout_ms))),
        }
    }
}

impl Broker {
    /// The redirect URI registered at every provider: `{base}/oauth/callback`.
    pub fn oauth_redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.share_base_url())
    }

    async fn oauth_endpoints(&self, handle: &Handle) -> Result<Endpoints, CallError> {
        let c = constraints(handle)?;
        let mut m = self.oauth.endpoints.lock().await;
        if let Some(e) = m.get(&handle.name) {
            return Ok(e.clone());
        }
        let timeout = Duration::from_millis(c.provider.token_timeout_ms);
        let http = self.oauth.http(handle, c)?;
        let e = match tokio::time::timeout(timeout, airlock_exec_oauth::endpoints(&c.provider, &http)).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => return Err(CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("handle {}: {e}", handle.name))),
            Err(_) => return Err(CallError::new(ErrorCode::UpstreamTimeout).detail("provider discovery timed out")),
        };
        m.insert(handle.name.clone(), e.clone());
        Ok(e)
    }

    /// What a client of the handle's provider is made of: the client secret (resolved), the
    /// endpoints (configured or discovered) and the redirect URI.
    async fn client_parts(&self, handle: &Handle) -> Result<ClientParts, CallError> {
        let c = constraints(handle)?;
        Ok(ClientParts {
            secret: self.resolve(handle).await?,
            endpoints: self.oauth_endpoints(handle).await?,
            redirect: self.oauth_redirect_uri(),
            timeout_ms: c.provider.token_timeout_ms,
            http: self.oauth.http(handle, c)?,
        })
    }

    fn client<'a>(&'a self, c: &'a OauthConstraints, parts: &'a ClientParts) -> Client<'a> {
        Client::new(&c.provider, &parts.endpoints, &parts.secret, &parts.redirect, &parts.http)
    }

    /// Writes an account event's audit record (never a token or a code).
    async fn audit_account(&self, by: &str, reason: &str, event: &str, handle: &str, code: Option<&str>, target: Value) {
        let who = Revoker { by, chain: &[], reason };
        self.audit_revocation(&who, Revoked { event, handle: Some(handle), target, code }).await;
    }

    async fn open_account(&self, a: &Account) -> Result<TokenSet, CallError> {
        let plain = self.vault().open_value(&seal_name(&a.handle, &a.owner), &a.sealed).await.map_err(internal)?;
        TokenSet::from_secret(&plain).ok_or_else(|| internal("a stored token set does not parse"))
    }

    /// Reads the handle's account from the store (and keeps it): its version and tokens.
    async fn load_account(&self, name: &HandleName) -> Result<(Account, TokenSet), CallError> {
        let Some(a) = self.store().account(name.as_str()).await.map_err(internal)? else {
            self.oauth.forget(name);
            return Err(CallError::new(ErrorCode::AccountNotConnected));
        };
        if a.status != status::CONNECTED {
            self.oauth.forget(name);
            return Err(CallError::new(ErrorCode::NeedsReauth));
        }
        let set = self.open_account(&a).await?;
        self.oauth.keep(name, a.version, &set);
        Ok((a, set))
    }

    /// The handle's current access token set and its version. One due for refresh (or, with
    /// `refused`, the version the upstream refused with 401) is refreshed first by exactly one
    /// caller; the others wait for it and use its result.
    pub(crate) async fn oauth_token(&self, handle: &Handle, refused: Option<i64>) -> Result<(i64, TokenSet), CallError> {
        let margin = constraints(handle)?.provider.refresh_margin_seconds;
        let (version, set) = match self.oauth.cached(&handle.name) {
            Some(c) => c,
            None => {
                let (a, set) = self.load_account(&handle.name).await?;
                (a.version, set)
            }
        };
        let fresh = match refused {
            Some(v) => version > v,
            None => !set.due(now(), margin),
        };
        if fresh {
            self.know_tokens(&handle.name, &set).await?;
            return Ok((version, set));
        }
        self.refresh_account(handle, refused).await
    }

    /// Adds an account's tokens to the scrubber if it does not know them yet (they were
    /// refreshed by another process).
    async fn know_tokens(&self, name: &HandleName, set: &TokenSet) -> Result<(), CallError> {
        if !self.scrubber().knows(name, set.access()) {
            self.rebuild_scrubber().await.map_err(internal)?;
        }
        Ok(())
    }

    async fn refresh_account(&self, handle: &Handle, refused: Option<i64>) -> Result<(i64, TokenSet), CallError> {
        let c = constraints(handle)?;
        let name = &handle.name;
        let flight = self.oauth.flight(name);
        let _one = flight.lock().await;
        let deadline = Instant::now() + Duration::from_millis(c.provider.token_timeout_ms) + Duration::from_secs(5);
        loop {
            // Re-read after taking the lock: whoever held it may have refreshed already.
            let (a, set) = self.load_account(name).await?;
            let fresh = match refused {
                Some(v) => a.version > v,
                None => !set.due(now(), c.provider.refresh_margin_seconds),
            };
            if fresh {
                self.know_tokens(name, &set).await?;
                return Ok((a.version, set));
            }
            if !set.can_refresh() {
                if set.due(now(), 0) || refused.is_some() {
                    return Err(self.needs_reauth(name, a.version, "no refresh token").await);
                }
                return Ok((a.version, set));
            }
            let until = chrono::Utc::now().timestamp_millis() + c.provider.token_timeout_ms as i64 + 5_000;
            if self.store().claim_refresh(name.as_str(), a.version, until, &self.oauth.replica).await.map_err(internal)? {
                return self.refresh_claimed(handle, a.version, set, refused.is_some()).await;
            }
            // Another replica refreshes, or the provider was unavailable a moment ago.
            let usable = refused.is_none() && !set.due(now(), 0);
            if usable {
                return Ok((a.version, set));
            }
            let backing_off = a.claimed_by.is_none() && a.claim_until.is_some_and(|u| u > chrono::Utc::now().timestamp_millis());
            if backing_off || Instant::now() > deadline {
                return Err(CallError::new(ErrorCode::UpstreamUnavailable).detail("the provider's token endpoint is backing off"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The refresh this caller claimed for `version`.
    async fn refresh_claimed(&self, handle: &Handle, version: i64, set: TokenSet, forced: bool) -> Result<(i64, TokenSet), CallError> {
        let name = &handle.name;
        let c = constraints(handle)?;
        let outcome = match self.client_parts(handle).await {
            Ok(parts) => parts.bounded(self.client(c, &parts).refresh(&set)).await,
            Err(e) => {
                // Nothing was sent: give the claim back as a back-off.
                let _ = self.store().back_off_refresh(name.as_str(), version, chrono::Utc::now().timestamp_millis() + BACK_OFF_MS).await;
                return Err(e);
            }
        };
        match outcome {
            Ok(new) => {
                let a = self.store().account(name.as_str()).await.map_err(internal)?.ok_or_else(|| CallError::new(ErrorCode::AccountNotConnected))?;
                let access_expires_at = new.expires_at();
                let saved = self
                    .vault()
                    .seal_into(&seal_name(name.as_str(), &a.owner), &new.to_secret(), |sealed| async move {
                        self.store().save_refresh(name.as_str(), version, &Refreshed { sealed: &sealed, access_expires_at }).await
                    })
                    .await
                    .map_err(internal)?;
                if !saved {
                    // The account was connected again meanwhile; its new tokens stand.
                    let (a, set) = self.load_account(name).await?;
                    return Ok((a.version, set));
                }
                self.oauth.keep(name, version + 1, &new);
                tracing::debug!(handle = %name, version = version + 1, forced, "account tokens refreshed");
                self.rebuild_scrubber().await.map_err(internal)?;
                let target = json!({"handle": name.as_str(), "version": version + 1, "forced": forced, "expires_at": new.expires_at()});
                self.audit_account("broker", "access token refreshed", "account_refreshed", name.as_str(), None, target).await;
                self.metrics().oauth_refresh("ok");
                Ok((version + 1, new))
            }
            Err(OauthError::InvalidGrant) => Err(self.needs_reauth(name, version, "the provider refused the refresh token").await),
            Err(OauthError::Lost(d)) => {
                tracing::warn!(handle = %name, detail = %d, "refresh answer lost; the refresh token may be spent");
                Err(self.needs_reauth(name, version, "the refresh's answer was lost; its refresh token may be spent").await)
            }
            Err(e) => {
                let _ = self.store().back_off_refresh(name.as_str(), version, chrono::Utc::now().timestamp_millis() + BACK_OFF_MS).await;
                let code = ErrorCode::UpstreamUnavailable;
                let target = json!({"handle": name.as_str(), "version": version});
                self.audit_account("broker", "token endpoint unavailable; backing off", "account_refresh_failed", name.as_str(), Some(code.as_str()), target)
                    .await;
                self.metrics().oauth_refresh("unavailable");
                if !forced && !set.due(now(), 0) {
                    return Ok((version, set));
                }
                Err(CallError::new(code).detail(format!("refresh of {name}: {e}")))
            }
        }
    }

    async fn needs_reauth(&self, name: &HandleName, version: i64, why: &str) -> CallError {
        if let Err(e) = self.store().account_needs_reauth(name.as_str(), version).await {
            return internal(e);
        }
        self.oauth.forget(name);
        let code = ErrorCode::NeedsReauth;
        self.audit_account("broker", why, "account_needs_reauth", name.as_str(), Some(code.as_str()), json!({"handle": name.as_str(), "version": version}))
            .await;
        self.metrics().oauth_refresh("needs-reauth");
        CallError::new(code).detail(format!("{name}: {why}"))
    }

    /// `http_request` on an oauth handle: the access token goes into the request; an upstream
    /// 401 forces one refresh and one retry.
    pub(crate) async fn oauth_http(&self, handle: &Handle, p: &<airlock_exec_http::HttpExecutor as airlock_core::Executor>::Prepared) -> Result<airlock_core::Unscrubbed, CallError> {
        use airlock_core::Executor;
        let http = &self.executors.http;
        let (version, set) = self.oauth_token(handle, None).await?;
        let out = Executor::execute(http, handle, p, set.access()).await?;
        if out.http_status() != Some(401) {
            return Ok(out);
        }
        let (_, fresh) = self.oauth_token(handle, Some(version)).await?;
        Executor::execute(http, handle, p, fresh.access()).await
    }

    /// Revokes the handle's account: the grant at the provider (RFC 7009) where it has a
    /// revocation endpoint, then the token set here. `Ok(None)` when no account is connected;
    /// otherwise whether the provider confirmed.
    pub async fn revoke_account(&self, handle: &Handle, who: &Revoker<'_>) -> Result<Option<bool>, CallError> {
        let Some(a) = self.store().account(handle.name.as_str()).await.map_err(internal)? else { return Ok(None) };
        let set = self.open_account(&a).await?;
        let revoked = match self.client_parts(handle).await {
            Ok(parts) => Ok(parts.bounded(self.client(constraints(handle)?, &parts).revoke(&set)).await),
            Err(e) => Err(e),
        };
        let at_provider = match revoked {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                tracing::warn!(handle = %handle.name, error = %e, "the provider did not confirm the revocation");
                false
            }
            Err(e) => {
                tracing::warn!(handle = %handle.name, code = e.code.as_str(), "the provider could not be asked to revoke");
                false
            }
        };
        self.store().delete_account(handle.name.as_str()).await.map_err(internal)?;
        self.oauth.forget(&handle.name);
        let target = json!({"handle": handle.name.as_str(), "owner": a.owner, "revoked_at_provider": at_provider});
        self.audit_revocation(who, Revoked { event: "account_revoked", handle: Some(handle.name.as_str()), target, code: None }).await;
        Ok(Some(at_provider))
    }

    /// The token sets of every connected account, for the scrubber.
    pub(crate) async fn account_tokens(&self) -> Vec<(HandleName, Secret)> {
        let mut out = Vec::new();
        let Ok(accounts) = self.store().accounts().await else { return out };
        for a in accounts {
            let Ok(name) = HandleName::parse(&a.handle) else { continue };
            match self.open_account(&a).await {
                Ok(set) => out.extend(set.secrets().into_iter().map(|s| (name.clone(), s))),
                Err(_) => tracing::warn!(handle = %a.handle, "a connected account's tokens do not open; not in the scrubber"),
            }
        }
        out
    }

    /// Refreshes the accounts of handles with `keep_alive` whose access token is due, so that
    /// idle accounts stay connected. Called by the serving loop.
    pub async fn keep_accounts_alive(&self) {
        let handles: Vec<Handle> = self.config().handles.values().filter(|h| h.oauth().is_some_and(|o| o.provider.keep_alive)).cloned().collect();
        for h in handles {
            match self.oauth_token(&h, None).await {
                Ok(_) | Err(CallError { code: ErrorCode::AccountNotConnected | ErrorCode::NeedsReauth, .. }) => {}
                Err(e) => tracing::warn!(handle = %h.name, code = e.code.as_str(), "keep-alive refresh failed"),
            }
        }
    }
}
