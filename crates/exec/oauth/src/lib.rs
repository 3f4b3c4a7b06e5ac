//! The client side of a connected OAuth account, on the `oauth2` crate: the authorization URL
//! (code flow with PKCE S256, `state`, RFC 8707 `resource`), the code exchange, refresh and
//! RFC 7009 revocation, and the account's [`TokenSet`].
//!
//! This crate is one of the few that read a secret (the client secret, the PKCE verifier, the
//! tokens): the broker holds a [`TokenSet`] and hands its access token to the `http_request`
//! executor, and never reads any of it. What fails is told apart by what the broker must do
//! about it ([`OauthError`]): a refused grant needs the owner again, a request that never left
//! can be retried, and a request that may have reached the provider must not be repeated with
//! the same refresh token (with rotation on, a second use revokes the whole grant).
#![forbid(unsafe_code)]

use airlock_core::config::{OauthEndpoints, OauthProvider};
use airlock_core::Secret;
use oauth2::basic::{BasicErrorResponseType, BasicRevocationErrorResponse, BasicTokenResponse};
use oauth2::{
    AsyncHttpClient, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpClientError, HttpRequest, HttpResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl, Scope, StandardErrorResponse,
    StandardRevocableToken, TokenResponse, TokenUrl,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use zeroize::Zeroizing;

/// Why a request to the provider failed, by what the broker does next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OauthError {
    /// The provider refused the grant (`invalid_grant`): the refresh token is revoked, expired
    /// or was used twice, or the code is wrong, used or expired. The owner must connect again.
    #[error("the provider refused the grant (invalid_grant)")]
    InvalidGrant,
    /// The provider answered with another OAuth error (`invalid_client`, `invalid_scope`,
    /// `unauthorized_client`, ...): a configuration matter. The code names it; no token was
    /// issued and nothing was spent.
    #[error("the provider refused the request: {0}")]
    Refused(String),
    /// The request did not reach the provider (connection refused, DNS), or the provider
    /// answered 5xx or 429: nothing was spent; back off and keep the tokens.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The request may have reached the provider but no usable answer came back (a timeout, a
    /// connection reset, a 200 whose body does not parse): a rotating refresh token may be spent.
    /// It must not be used again.
    #[error("the provider's answer was lost: {0}")]
    Lost(String),
    /// A 4xx answer that is not an OAuth error document (HTML, empty, not JSON).
    #[error("the provider answered {status} without an OAuth error document")]
    Protocol {
        /// The HTTP status.
        status: u16,
    },
    /// The endpoints could not be discovered or do not parse.
    #[error("provider configuration: {0}")]
    Config(String),
}

/// An account's tokens. No `Debug` output beyond a placeholder and no `Serialize`: it is sealed
/// as a [`Secret`] ([`TokenSet::to_secret`]).
#[derive(Clone)]
pub struct TokenSet {
    access: Secret,
    refresh: Option<Secret>,
    expires_at: Option<i64>,
    scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet").field("expires_at", &self.expires_at).field("scope", &self.scope).finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    a: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    r: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    e: Option<i64>,
    #[serde(default)]
    s: Option<String>,
}

impl TokenSet {
    /// The access token, for the `http_request` executor to inject.
    pub fn access(&self) -> &Secret {
        &self.access
    }

    /// Every token of the set, for the scrubber's list of known values.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut v = vec![self.access.clone()];
        v.extend(self.refresh.clone());
        v
    }

    /// When the access token expires (Unix seconds), if the provider said.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// The scope the provider granted, if it said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// True when a refresh token is held.
    pub fn can_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    /// True when the access token expires within `margin` seconds of `now`. A token without an
    /// expiry is taken as fresh until the upstream refuses it (401 forces a refresh).
    pub fn due(&self, now: i64, margin: u64) -> bool {
        self.expires_at.is_some_and(|e| e - margin as i64 <= now)
    }

    /// The set as one secret, to be sealed by the vault.
    pub fn to_secret(&self) -> Secret {
        fn text(s: &Secret) -> std::borrow::Cow<'_, str> {
            std::borrow::Cow::Borrowed(s.expose_str().unwrap_or_default())
        }
        let stored = Stored { a: text(&self.access), r: self.refresh.as_ref().map(text), e: self.expires_at, s: self.scope.clone() };
        Secret::new(serde_json::to_vec(&stored).expect("strings and numbers serialize"))
    }

    /// The set [`TokenSet::to_secret`] made.
    pub fn from_secret(s: &Secret) -> Option<TokenSet> {
        let stored: Stored<'_> = serde_json::from_slice(s.expose_secret()).ok()?;
        Some(TokenSet {
            access: Secret::from_str_value(&stored.a),
            refresh: stored.r.map(|r| Secret::from_str_value(&r)),
            expires_at: stored.e,
            scope: stored.s,
        })
    }

    fn from_response(r: &BasicTokenResponse, previous_refresh: Option<&Secret>) -> TokenSet {
        let now = chrono::Utc::now().timestamp();
        TokenSet {
            access: Secret::from_str_value(r.access_token().secret()),
            // A provider that does not rotate sends no new refresh token: the old one stays.
            refresh: r.refresh_token().map(|t| Secret::from_str_value(t.secret())).or_else(|| previous_refresh.cloned()),
            expires_at: r.expires_in().map(|d| now + d.as_secs() as i64),
            scope: r.scopes().map(|s| s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")),
        }
    }
}

/// The provider's endpoints, configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Authorization endpoint.
    pub authorization: String,
    /// Token endpoint.
    pub token: String,
    /// Revocation endpoint, if any.
    pub revocation: Option<String>,
}

/// A PKCE verifier and the `state` of one authorization request, and the URL the owner's browser
/// goes to.
pub struct Authorization {
    /// The URL at the provider.
    pub url: String,
    /// The PKCE verifier, kept (sealed) until the callback.
    pub verifier: Secret,
    /// The hash of the `state` value ([`state_hash`]), matched at the callback.
    pub state_hash: Vec<u8>,
}

/// What a `state` value is stored and looked up as: a bearer value in a URL, so only its
/// SHA-256 is kept.
pub fn state_hash(state: &str) -> Vec<u8> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"airlock-oauth-state\0");
    h.update(state.as_bytes());
    h.finalize().to_vec()
}

/// One provider, as the broker talks to it.
pub struct Client<'a> {
    provider: &'a OauthProvider,
    endpoints: &'a Endpoints,
    client_secret: &'a Secret,
    redirect_uri: &'a str,
    http: &'a reqwest::Client,
}

/// The HTTP client for a provider's endpoints: no redirects (a token endpoint that redirects is
/// refused, so a code or a refresh token never follows one), no proxy, a bounded timeout, and
/// the authorities of `ca_pem` trusted besides the public roots.
pub fn http_client(timeout: Duration, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, OauthError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| OauthError::Config(format!("ca_file: {e}")))?;
        if certs.is_empty() {
            return Err(OauthError::Config("ca_file holds no certificate".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| OauthError::Config(format!("the HTTP client could not be built: {e}")))
}

/// Reads the endpoints: as configured, or from the issuer's metadata (RFC 8414, then OpenID
/// Connect discovery). The metadata's `issuer` must equal the configured one (RFC 8414 §3.3).
pub async fn endpoints(p: &OauthProvider, http: &reqwest::Client) -> Result<Endpoints, OauthError> {
    let issuer = match &p.endpoints {
        OauthEndpoints::Explicit { authorization_url, token_url, revocation_url } => {
            return Ok(Endpoints { authorization: authorization_url.clone(), token: token_url.clone(), revocation: revocation_url.clone() })
        }
        OauthEndpoints::Discover { issuer } => issuer.trim_end_matches('/'),
    };
    #[derive(serde::Deserialize)]
    struct Meta {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
        #[serde(default)]
        revocation_endpoint: Option<String>,
    }
    let mut last = String::new();
    for well_known in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let resp = match http.get(format!("{issuer}{well_known}")).send().await {
            Ok(r) => r,
            Err(e) => return Err(OauthError::Unavailable(format!("discovery: {}", e.without_url()))),
        };
        if !resp.status().is_success() {
            last = format!("{well_known} answered {}", resp.status().as_u16());
            continue;
        }
        let meta: Meta = resp.json().await.map_err(|e| OauthError::Config(format!("discovery {well_known}: {}", e.without_url())))?;
        if meta.issuer.trim_end_matches('/') != issuer {
            return Err(OauthError::Config(format!("discovery {well_known}: the metadata names another issuer")));
        }
        return Ok(Endpoints { authorization: meta.authorization_endpoint, token: meta.token_endpoint, revocation: meta.revocation_endpoint });
    }
    Err(OauthError::Config(format!("discovery found no metadata ({last})")))
}

/// A reqwest client that remembers the status of the answer it got, so that a non-JSON error
/// can be told apart by status (5xx: unavailable; 4xx: protocol error).
struct Recording<'a> {
    http: &'a reqwest::Client,
    status: AtomicU16,
}

impl<'c> AsyncHttpClient<'c> for Recording<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let r = self.http.call(request).await?;
            self.status.store(r.status().as_u16(), Ordering::Relaxed);
            Ok(r)
        })
    }
}

type TokenError = RequestTokenError<HttpClientError<reqwest::Error>, StandardErrorResponse<BasicErrorResponseType>>;

fn classify(e: TokenError, status: u16) -> OauthError {
    match e {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => OauthError::InvalidGrant,
            other => OauthError::Refused(other.as_ref().to_owned()),
        },
        RequestTokenError::Request(HttpClientError::Reqwest(e)) if e.is_connect() || e.is_builder() => {
            OauthError::Unavailable(e.without_url().to_string())
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => OauthError::Lost(e.without_url().to_string()),
        RequestTokenError::Request(e) => OauthError::Lost(e.to_string()),
        _ if status >= 500 || status == 429 => OauthError::Unavailable(format!("the token endpoint answered {status}")),
        // A 200 the client cannot read may have spent a rotating refresh token.
        _ if status == 200 || status == 0 => OauthError::Lost(format!("the token endpoint's answer ({status}) does not parse")),
        _ => OauthError::Protocol { status },
    }
}

impl<'a> Client<'a> {
    /// A client of `provider` at `endpoints`, authenticating with `client_secret` (HTTP Basic)
    /// and redirecting to `redirect_uri`.
    pub fn new(provider: &'a OauthProvider, endpoints: &'a Endpoints, client_secret: &'a Secret, redirect_uri: &'a str, http: &'a reqwest::Client) -> Client<'a> {
        Client { provider, endpoints, client_secret, redirect_uri, http }
    }

    fn oauth(
        &self,
    ) -> Result<
        oauth2::basic::BasicClient<oauth2::EndpointSet, oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointMaybeSet, oauth2::EndpointSet>,
        OauthError,
    > {
        let bad = |what: &str| OauthError::Config(format!("the {what} URL does not parse"));
        let secret = self.client_secret.expose_str().ok_or_else(|| OauthError::Config("the client secret is not UTF-8".into()))?;
        let revocation = match &self.endpoints.revocation {
            Some(u) => Some(RevocationUrl::new(u.clone()).map_err(|_| bad("revocation"))?),
            None => None,
        };
        Ok(oauth2::basic::BasicClient::new(ClientId::new(self.provider.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.to_owned()))
            .set_auth_uri(AuthUrl::new(self.endpoints.authorization.clone()).map_err(|_| bad("authorization"))?)
            .set_token_uri(TokenUrl::new(self.endpoints.token.clone()).map_err(|_| bad("token"))?)
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri.to_owned()).map_err(|_| bad("redirect"))?)
            .set_revocation_url_option(revocation))
    }

    /// A new authorization request: the URL to send the owner to, with a fresh PKCE (S256)
    /// verifier and `state`.
    pub fn authorize(&self) -> Result<Authorization, OauthError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.oauth()?;
        let mut req = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.provider.scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge);
        if let Some(r) = &self.provider.resource {
            req = req.add_extra_param("resource", r.clone());
        }
        for (k, v) in &self.provider.authorize_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let (url, state) = req.url();
        Ok(Authorization {
            url: url.to_string(),
            verifier: Secret::from_str_value(verifier.secret()),
            state_hash: state_hash(state.secret()),
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier) for the account's tokens.
    pub async fn exchange(&self, code: &str, verifier: &Secret) -> Result<TokenSet, OauthError> {
        let client = self.oauth()?;
        let verifier = PkceCodeVerifier::new(verifier.expose_str().unwrap_or_default().to_owned());
        let mut req = client.exchange_code(AuthorizationCode::new(code.to_owned())).set_pkce_verifier(verifier);
        if let Some(r) = &self.provider.resource {
            req = req.add_extra_param("resource", r.clone());
        }
        let http = Recording { http: self.http, status: AtomicU16::new(0) };
        match req.request_async(&http).await {
            Ok(r) => Ok(TokenSet::from_response(&r, None)),
            Err(e) => Err(classify(e, http.status.load(Ordering::Relaxed))),
        }
    }

    /// Refreshes `current`, keeping its refresh token when the provider sends none. Called at
    /// most once per refresh token: see [`OauthError::Lost`].
    pub async fn refresh(&self, current: &TokenSet) -> Result<TokenSet, OauthError> {
        let Some(rt) = &current.refresh else { return Err(OauthError::InvalidGrant) };
        let client = self.oauth()?;
        let rt = RefreshToken::new(rt.expose_str().unwrap_or_default().to_owned());
        let mut req = client.exchange_refresh_token(&rt);
        if let Some(r) = &self.provider.resource {
            req = req.add_extra_param("resource", r.clone());
        }
        let http = Recording { http: self.http, status: AtomicU16::new(0) };
        match req.request_async(&http).await {
            Ok(r) => Ok(TokenSet::from_response(&r, current.refresh.as_ref())),
            Err(e) => Err(classify(e, http.status.load(Ordering::Relaxed))),
        }
    }

    /// Revokes the grant at the provider (RFC 7009): the refresh token, which ends the grant,
    /// or the access token when there is none. `Ok(false)` when the provider has no
    /// revocation endpoint.
    pub async fn revoke(&self, set: &TokenSet) -> Result<bool, OauthError> {
        if self.endpoints.revocation.is_none() {
            return Ok(false);
        }
        let client = self.oauth()?;
        let token = match &set.refresh {
            Some(r) => StandardRevocableToken::RefreshToken(RefreshToken::new(r.expose_str().unwrap_or_default().to_owned())),
            None => StandardRevocableToken::AccessToken(oauth2::AccessToken::new(set.access.expose_str().unwrap_or_default().to_owned())),
        };
        let req = client.revoke_token(token).map_err(|e| OauthError::Config(e.to_string()))?;
        let http = Recording { http: self.http, status: AtomicU16::new(0) };
        let r: Result<(), RequestTokenError<_, BasicRevocationErrorResponse>> = req.request_async(&http).await;
        match r {
            Ok(()) => Ok(true),
            Err(RequestTokenError::ServerResponse(e)) => Err(OauthError::Refused(e.error().as_ref().to_owned())),
            Err(RequestTokenError::Request(e)) => Err(OauthError::Unavailable(e.to_string())),
            Err(_) => Err(OauthError::Protocol { status: http.status.load(Ordering::Relaxed) }),
        }
    }
}

/// A random value for links and codes (base64url of `n` random bytes), kept zeroized.
pub fn random_token(n: usize) -> Zeroizing<String> {
    use oauth2::CsrfToken;
    // CsrfToken::new_random_len draws from the OS generator and encodes base64url.
    Zeroizing::new(CsrfToken::new_random_len(n as u32).secret().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_set_round_trips_through_its_sealed_form_and_hides_its_tokens() {
        let s = TokenSet {
            access: Secret::from_str_value("canaryAccess_1"),
            refresh: Some(Secret::from_str_value("canaryRefresh_2")),
            expires_at: Some(1_900_000_000),
            scope: Some("api:read".into()),
        };
        let back = TokenSet::from_secret(&s.to_secret()).unwrap();
        assert_eq!(back.access.expose_str(), Some("canaryAccess_1"));
        assert_eq!(back.refresh.unwrap().expose_str(), Some("canaryRefresh_2"));
        assert_eq!(back.expires_at, Some(1_900_000_000));
        let shown = format!("{s:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(s.due(1_900_000_000 - 30, 60) && !s.due(1_900_000_000 - 61, 60));
        let no_expiry = TokenSet { expires_at: None, ..s };
        assert!(!no_expiry.due(i64::MAX - 1, 60));
    }
}
