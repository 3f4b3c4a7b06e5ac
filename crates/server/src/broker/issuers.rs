//! Agents that authenticate with a token their platform gave them (T30): a JWT signed by a
//! trusted issuer (`[issuers.NAME]`), verified with `jsonwebtoken` against the issuer's keys and
//! mapped to an agent of the configuration by its subject and claims.
//!
//! What is checked, in order, before any key is fetched: the size (at most 8 KiB), the shape
//! (three base64url parts), the header's algorithm (one the issuer accepts: asymmetric only, so
//! `none` and HMAC never verify), the unverified `iss` naming a configured issuer exactly. Then
//! the key by `kid` from the issuer's key set, which is fetched once and fetched again for an
//! unknown `kid` at most once per `refetch_interval_seconds` (one fetch at a time; the last good
//! set is kept when a fetch fails), so a flood of made-up `kid`s costs at most one fetch per
//! interval. Then the signature, `exp`, `nbf` (with the issuer's leeway), `iss` and `aud`. An
//! ID token is refused by its audience (the client's, not airlock's). Every refusal is the same
//! `unauthenticated`; the token itself is never logged.
//!
//! A verified token is kept (by its SHA-256) until its `exp` or one refetch interval, whichever
//! comes first, and while the store's identity generation stands (a revocation drops it), so a
//! platform token used for many calls is checked once.

use super::{Broker, Caller, SignedIn, SCOPE_PREFIX};
use airlock_core::config::{IssuerConfig, JwksSource};
use airlock_core::{CallError, ErrorCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The largest token read.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// One issuer's keys as last fetched.
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// A trusted issuer and its key cache.
struct Issuer {
    cfg: IssuerConfig,
    keys: RwLock<Option<Arc<Keys>>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Key-set fetches made (for the flood test and the metrics).
    fetches: std::sync::atomic::AtomicU64,
}

/// A verified token, kept so that its next use costs no signature check and no store read.
struct Verified {
    caller: Caller,
    /// Unix seconds: the token's `exp`, or one refetch interval after it was verified, whichever
    /// comes first (so a key removed at the issuer stops its tokens within one interval more).
    until: i64,
    /// The identity generation it was verified under: a revocation drops it.
    generation: i64,
}

/// What a verified token says.
pub(crate) struct Vouched {
    /// The agent (`[agents.NAME]`) it maps to.
    agent: String,
    signed_in: SignedIn,
    /// Until when it may be kept (see [`Verified::until`]).
    until: i64,
}

/// The tools the `airlock:TOOL` scopes of `claims` name: its `scope` (a space-separated string,
/// RFC 9068) or `scp` (a string or an array, as some providers write it).
fn scoped_tools(claims: &Map<String, Value>) -> Vec<airlock_core::Tool> {
    let mut words: Vec<&str> = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Value::String(s)) => words.extend(s.split_ascii_whitespace()),
            Some(Value::Array(a)) => words.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    let mut tools: Vec<airlock_core::Tool> =
        words.iter().filter_map(|w| w.strip_prefix(SCOPE_PREFIX)).filter_map(airlock_core::Tool::parse).collect();
    tools.sort_by_key(|t| t.name());
    tools.dedup();
    tools
}

/// Verified tokens kept at most.
const MAX_VERIFIED: usize = 10_000;

/// The issuers of the configuration, by `iss`.
#[derive(Default)]
pub(crate) struct Issuers {
    by_iss: HashMap<String, Arc<Issuer>>,
    http: Option<reqwest::Client>,
    /// By SHA-256 of the token.
    verified: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

fn unauthenticated(detail: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::Unauthenticated).detail(detail.into())
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A claim by name, or by JSON pointer (RFC 6901) when the name starts with `/`: a nested claim
/// such as a Kubernetes token's `/kubernetes.io/namespace`.
fn claim<'c>(claims: &'c Map<String, Value>, key: &str) -> Option<&'c Value> {
    if !key.starts_with('/') {
        return claims.get(key);
    }
    let mut parts = key[1..].split('/').map(|p| p.replace("~1", "/").replace("~0", "~"));
    let first = parts.next()?;
    parts.try_fold(claims.get(&first)?, |v, p| match v {
        Value::Object(m) => m.get(&p),
        Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The unverified `iss` of a token: only to pick the issuer whose keys then verify everything.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// True for text shaped like a JWS compact serialization (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

impl Issuers {
    /// The issuers of `cfg`.
    pub(crate) fn new(cfg: &[IssuerConfig]) -> Issuers {
        let by_iss = cfg
            .iter()
            .map(|c| {
                let i = Issuer { cfg: c.clone(), keys: RwLock::new(None), fetching: tokio::sync::Mutex::new(()), fetches: Default::default() };
                (c.issuer.clone(), Arc::new(i))
            })
            .collect();
        let http = (!cfg.is_empty()).then(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .expect("the HTTP client (rustls) could not be initialised")
        });
        Issuers { by_iss, http, verified: Default::default() }
    }

    /// Whether any issuer is configured.
    pub(crate) fn any(&self) -> bool {
        !self.by_iss.is_empty()
    }

    /// Key-set fetches made for the issuer `iss` so far.
    pub(crate) fn fetches(&self, iss: &str) -> u64 {
        self.by_iss.get(iss).map_or(0, |i| i.fetches.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn fetch(&self, i: &Issuer) -> Result<JwkSet, String> {
        i.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let http = self.http.as_ref().ok_or("no client")?;
        let url = match &i.cfg.jwks {
            JwksSource::File(f) => {
                let text = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
                return serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", f.display()));
            }
            JwksSource::Url(u) => u.clone(),
            JwksSource::Discover => {
                let meta = format!("{}/.well-known/openid-configuration", i.cfg.issuer.trim_end_matches('/'));
                let v: Value = http.get(&meta).send().await.map_err(|e| e.without_url().to_string())?.json().await.map_err(|e| e.without_url().to_string())?;
                if v.get("issuer").and_then(Value::as_str).map(|s| s.trim_end_matches('/')) != Some(i.cfg.issuer.trim_end_matches('/')) {
                    return Err("the discovery document names another issuer".into());
                }
                v.get("jwks_uri").and_then(Value::as_str).ok_or("the discovery document has no jwks_uri")?.to_owned()
            }
        };
        let r = http.get(&url).send().await.map_err(|e| e.without_url().to_string())?;
        if !r.status().is_success() {
            return Err(format!("the key set answered {}", r.status().as_u16()));
        }
        r.json().await.map_err(|e| e.without_url().to_string())
    }

    /// The issuer's key set. It is fetched when there is none yet; again when it is older than
    /// the interval (a removed key stops verifying within one interval: whoever finds it stale
    /// fetches, while the others go on with the current set); and again when `kid` is not in it
    /// and the last fetch is older than the interval (one fetch at a time, so a flood of made-up
    /// `kid`s costs at most one fetch per interval).
    async fn keys_for(&self, i: &Issuer, kid: Option<&str>) -> Option<Arc<Keys>> {
        let current = i.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let has = |k: &Keys| kid.is_none_or(|kid| k.set.find(kid).is_some());
        let interval = Duration::from_secs(i.cfg.refetch_interval_seconds);
        let fresh = |k: &Keys| k.fetched.elapsed() < interval;
        let _one = match &current {
            Some(k) if fresh(k) => return current,
            // Stale but holding the key: one caller fetches, the others use what there is.
            Some(k) if has(k) => match i.fetching.try_lock() {
                Ok(g) => g,
                Err(_) => return current,
            },
            _ => i.fetching.lock().await,
        };
        // Whoever held the lock may have fetched already.
        let again = i.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(k) = &again {
            if fresh(k) {
                return again;
            }
        }
        match self.fetch(i).await {
            Ok(set) => {
                let k = Arc::new(Keys { set, fetched: Instant::now() });
                *i.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::warn!(issuer = %i.cfg.name, error = %e, "key set fetch failed; the last good set is kept");
                // The failed attempt counts as a fetch for the interval.
                let kept = again.map(|k| Arc::new(Keys { set: k.set.clone(), fetched: Instant::now() }));
                *i.keys.write().unwrap_or_else(|p| p.into_inner()) = kept.clone();
                kept
            }
        }
    }

    /// Verifies `token`: the agent it maps to, and who vouched for it.
    pub(crate) async fn verify(&self, token: &str) -> Result<Vouched, CallError> {
        if token.len() > MAX_TOKEN_BYTES || !looks_like_jwt(token) {
            return Err(unauthenticated("not a token of a trusted issuer"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| unauthenticated(format!("JWT header: {e}")))?;
        let iss = unverified_issuer(token).ok_or_else(|| unauthenticated("JWT without iss"))?;
        let issuer = self.by_iss.get(&iss).ok_or_else(|| unauthenticated("JWT of an issuer that is not trusted"))?;
        let alg_ok = issuer.cfg.algorithms.iter().filter_map(|a| algorithm(a)).any(|a| a == header.alg);
        if !alg_ok {
            return Err(unauthenticated(format!("JWT algorithm {:?} is not accepted for {}", header.alg, issuer.cfg.name)));
        }
        let keys = self.keys_for(issuer, header.kid.as_deref()).await.ok_or_else(|| unauthenticated("no key set"))?;
        let jwk = match &header.kid {
            Some(kid) => keys.set.find(kid),
            // Without a kid, only a set of one key says which key it is.
            None if keys.set.keys.len() == 1 => keys.set.keys.first(),
            None => None,
        }
        .ok_or_else(|| unauthenticated("JWT key id not in the issuer's key set"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| unauthenticated(format!("issuer key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.cfg.issuer]);
        v.set_audience(&[&issuer.cfg.audience]);
        v.leeway = issuer.cfg.leeway_seconds;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| unauthenticated(format!("JWT: {e}")))?;
        let claims = data.claims;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
        let rule = issuer.cfg.subjects.iter().find(|r| {
            r.subject.as_deref().is_none_or(|s| s == sub) && r.claims.iter().all(|(k, want)| claim(&claims, k).and_then(Value::as_str) == Some(want.as_str()))
        });
        let rule = rule.ok_or_else(|| unauthenticated(format!("subject {sub:?} of {} maps to no agent", issuer.cfg.name)))?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let until = exp.min(chrono::Utc::now().timestamp() + issuer.cfg.refetch_interval_seconds as i64);
        let tools = issuer.cfg.tool_scopes.then(|| scoped_tools(&claims));
        Ok(Vouched { agent: rule.agent.clone(), signed_in: SignedIn { issuer: issuer.cfg.name.clone(), subject: sub, tools }, until })
    }
}

impl Broker {
    /// The caller a token of a trusted issuer authenticates: the live agent of that name,
    /// created on first use (it has no token anyone holds: it signs in only through its issuer).
    /// An agent of that name that was revoked or expired stays so: its issuer's tokens are
    /// refused until an operator adds the agent again.
    pub(crate) async fn authenticate_jwt(&self, token: &str) -> Result<Caller, CallError> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().try_into().expect("32 bytes");
        let generation = self.current_identity_generation().await?;
        {
            let mut kept = self.issuers.verified.lock().unwrap_or_else(|p| p.into_inner());
            match kept.get(&key) {
                Some(v) if v.generation == generation && v.until > chrono::Utc::now().timestamp() => return Ok(v.caller.clone()),
                Some(_) => {
                    kept.remove(&key);
                }
                None => {}
            }
        }
        let Vouched { agent, signed_in, until } = self.issuers.verify(token).await?;
        let internal = |e: airlock_store::StoreError| CallError::new(ErrorCode::Internal).detail(e.to_string());
        let found = self.store.live_agent_named(&agent).await.map_err(internal)?;
        let agent = match found {
            Some(a) => a,
            None if self.store.agent_name_used(&agent).await.map_err(internal)? => {
                return Err(unauthenticated(format!("agent {agent} was revoked or has expired")));
            }
            None => match self.store.add_agent(&agent, None, None).await {
                Ok((a, _unused_token)) => a,
                // Another request created it meanwhile.
                Err(airlock_store::StoreError::Conflict(_)) => {
                    self.store.live_agent_named(&agent).await.map_err(internal)?.ok_or_else(|| unauthenticated("agent vanished"))?
                }
                Err(e) => return Err(internal(e)),
            },
        };
        tracing::debug!(agent = %agent.name, issuer = %signed_in.issuer, subject = %signed_in.subject, "authenticated by a trusted issuer");
        let caller = Caller { agent, parents: Vec::new(), grants: None, peer: None, signed_in: Some(Arc::new(signed_in)), elicit_url: false };
        let mut kept = self.issuers.verified.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_VERIFIED {
            kept.clear();
        }
        kept.insert(key, Verified { caller: caller.clone(), until, generation });
        Ok(caller)
    }

    /// Key-set fetches made for the trusted issuer `iss` (tests and metrics).
    pub fn issuer_key_fetches(&self, iss: &str) -> u64 {
        self.issuers.fetches(iss)
    }
}

/// airlock's protected resource metadata (RFC 9728), when an issuer is an MCP authorization
/// server (`mcp = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    /// The MCP endpoint's URI: the audience its tokens must name.
    pub resource: String,
    /// The `iss` of every issuer with `mcp = true`.
    pub authorization_servers: Vec<String>,
    /// `airlock:TOOL` for every tool.
    pub scopes: Vec<String>,
}

impl ProtectedResource {
    /// Where the metadata is served: the well-known path inserted before the resource's path
    /// (RFC 9728 §3.1), `https://host/.well-known/oauth-protected-resource/mcp`.
    pub fn metadata_url(&self) -> String {
        match url::Url::parse(&self.resource) {
            Ok(u) => {
                let path = u.path().trim_end_matches('/');
                format!("{}/.well-known/oauth-protected-resource{}", u.origin().ascii_serialization(), path)
            }
            Err(_) => self.resource.clone(),
        }
    }
}

impl Broker {
    /// The protected resource metadata, when an issuer is an MCP authorization server.
    pub fn protected_resource(&self) -> Option<ProtectedResource> {
        let cfg = self.cfg();
        let mcp: Vec<&IssuerConfig> = cfg.issuers.values().filter(|i| i.mcp).collect();
        let first = mcp.first()?;
        Some(ProtectedResource {
            resource: first.audience.clone(),
            authorization_servers: mcp.iter().map(|i| i.issuer.clone()).collect(),
            scopes: airlock_core::Tool::ALL.iter().map(|t| format!("{SCOPE_PREFIX}{}", t.name())).collect(),
        })
    }
}
