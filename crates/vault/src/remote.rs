//! OpenBao and HashiCorp Vault as secret backends, over their HTTP API.
//!
//! * KV v2 reads `GET /v1/{mount}/data/{path}[?version=N]` and check-and-set writes
//!   `POST /v1/{mount}/data/{path}`.
//! * Token auth (the token from an `env:` or `file:` reference) or AppRole
//!   (`POST /v1/auth/{mount}/login`). The token is renewed with `POST /v1/auth/token/renew-self`
//!   once half its TTL has passed; when renewal fails an AppRole login is made again.
//! * A per-reference cache with a short TTL (`cache_ttl_seconds`), dropped by
//!   [`RemoteVault::invalidate`].
//! * The database secrets engine: `GET /v1/{mount}/creds/{role}` issues a dynamic credential
//!   under a lease, `PUT /v1/sys/leases/revoke` revokes it.
//!
//! Errors name the vault, the reference and what went wrong (sealed, unreachable, permission
//! denied, missing path or field), never a value or a token. A transient network failure of an
//! idempotent request is retried once.

use crate::VaultError;
use airlock_core::config::{RemoteAuth, RemoteRef, RemoteVaultConfig, SecretRef};
use airlock_core::Secret;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// What went wrong talking to a remote vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteFailure {
    /// The server answered that it is sealed.
    Sealed,
    /// No answer: connection refused, TLS failure, timeout.
    Unreachable,
    /// 403: a wrong, expired or revoked token, or a policy that does not allow the path.
    PermissionDenied,
    /// 404: no secret at the path, or the version asked for does not exist or is deleted.
    NotFound,
    /// The secret exists but has no such field.
    FieldMissing,
    /// A check-and-set write lost: the secret changed since it was read.
    Conflict,
    /// Any other answer (a 4xx/5xx, or a body that is not what the API documents).
    Protocol,
    /// The credential to log in with (token, role id, secret id) could not be read.
    Credential,
}

impl RemoteFailure {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteFailure::Sealed => "sealed",
            RemoteFailure::Unreachable => "unreachable",
            RemoteFailure::PermissionDenied => "permission-denied",
            RemoteFailure::NotFound => "not-found",
            RemoteFailure::FieldMissing => "field-missing",
            RemoteFailure::Conflict => "conflict",
            RemoteFailure::Protocol => "protocol",
            RemoteFailure::Credential => "credential",
        }
    }
}

/// A value read from KV v2, with the version it came from.
pub struct KvValue {
    /// The field's value.
    pub value: Secret,
    /// The secret's version.
    pub version: u64,
}

/// A dynamic database credential issued by the database secrets engine.
pub struct DbCredential {
    /// The role's user name (not secret).
    pub username: String,
    /// The password.
    pub password: Secret,
    /// The lease id, to revoke it (not secret in itself, but it allows revocation only).
    pub lease_id: String,
    /// The lease's duration in seconds.
    pub lease_duration: u64,
}

struct TokenState {
    token: Secret,
    /// When the token was obtained or last renewed, and its TTL then (`None`: no expiry).
    since: Instant,
    ttl: Option<Duration>,
    renewable: bool,
}

/// One `[vaults.NAME]` server.
pub struct RemoteVault {
    cfg: RemoteVaultConfig,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<TokenState>>,
    cache: Mutex<HashMap<RemoteRef, (Instant, Secret, u64)>>,
    renewals: std::sync::atomic::AtomicU64,
    logins: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RemoteVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteVault({})", self.cfg.name)
    }
}

fn status_failure(status: u16, body: &[u8]) -> (RemoteFailure, String) {
    // The API's errors are messages about the request, never values.
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(Value::as_array).cloned())
        .map(|a| a.iter().filter_map(Value::as_str).map(|s| s.chars().take(200).collect::<String>()).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    let kind = match status {
        503 if msg.to_ascii_lowercase().contains("sealed") => RemoteFailure::Sealed,
        403 => RemoteFailure::PermissionDenied,
        404 => RemoteFailure::NotFound,
        400 if msg.contains("check-and-set") => RemoteFailure::Conflict,
        _ => RemoteFailure::Protocol,
    };
    (kind, format!("HTTP {status}{}{msg}", if msg.is_empty() { "" } else { ": " }))
}

fn encode_path(p: &str) -> String {
    p.split('/').map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()).collect::<Vec<_>>().join("/")
}

impl RemoteVault {
    /// A client for `cfg`. Nothing is contacted until the first request.
    pub fn new(cfg: RemoteVaultConfig) -> Result<RemoteVault, VaultError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5000)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| VaultError::Remote {
                vault: cfg.name.clone(),
                failure: RemoteFailure::Credential,
                message: format!("cannot read ca_cert {}: {e}", ca.display()),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| VaultError::Remote {
                vault: cfg.name.clone(),
                failure: RemoteFailure::Credential,
                message: format!("ca_cert {} is not a PEM certificate: {e}", ca.display()),
            })?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| VaultError::Remote {
            vault: cfg.name.clone(),
            failure: RemoteFailure::Protocol,
            message: format!("HTTP client: {e}"),
        })?;
        Ok(RemoteVault {
            cfg,
            http,
            token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            renewals: Default::default(),
            logins: Default::default(),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &RemoteVaultConfig {
        &self.cfg
    }

    /// How many times the token was renewed and how many logins were made (for tests and
    /// metrics).
    pub fn token_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.renewals.load(Relaxed), self.logins.load(Relaxed))
    }

    fn err(&self, failure: RemoteFailure, message: impl Into<String>) -> VaultError {
        VaultError::Remote { vault: self.cfg.name.clone(), failure, message: message.into() }
    }

    /// Drops every cached value of this vault.
    pub fn invalidate(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Drops the cached value of one reference.
    pub fn invalidate_ref(&self, r: &RemoteRef) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(r);
    }

    async fn read_credential(&self, r: &SecretRef) -> Result<Secret, VaultError> {
        let s = match r {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Secret::from_str_value(v.trim()),
                _ => return Err(self.err(RemoteFailure::Credential, format!("environment variable {var} is not set"))),
            },
            SecretRef::File(p) => {
                let bytes = Zeroizing::new(
                    std::fs::read(p).map_err(|e| self.err(RemoteFailure::Credential, format!("cannot read {}: {e}", p.display())))?,
                );
                let t = std::str::from_utf8(&bytes).map_err(|_| self.err(RemoteFailure::Credential, format!("{} is not UTF-8", p.display())))?;
                Secret::from_str_value(t.trim())
            }
            _ => return Err(self.err(RemoteFailure::Credential, "a credential is an env: or file: reference")),
        };
        if s.is_empty() {
            return Err(self.err(RemoteFailure::Credential, "the credential is empty"));
        }
        Ok(s)
    }

    /// Sends one request; transient network failures of idempotent requests are retried once.
    /// Returns the status and the body (kept in a zeroizing buffer: it may hold a value).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&Zeroizing<Vec<u8>>>,
        idempotent: bool,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), VaultError> {
        let url = format!("{}/v1/{}", self.cfg.addr, path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = token {
                let mut hv = reqwest::header::HeaderValue::from_bytes(t.expose_secret())
                    .map_err(|_| self.err(RemoteFailure::Credential, "the token is not a valid header value"))?;
                hv.set_sensitive(true);
                req = req.header("X-Vault-Token", hv);
            }
            if let Some(ns) = &self.cfg.namespace {
                req = req.header("X-Vault-Namespace", ns);
            }
            if let Some(b) = body {
                req = req.header("Content-Type", "application/json").body(b.to_vec());
            }
            let res = req.send().await;
            match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let bytes = resp.bytes().await.map_err(|e| self.err(RemoteFailure::Unreachable, format!("reading the answer: {e}")))?;
                    return Ok((status, Zeroizing::new(bytes.to_vec())));
                }
                Err(e) => {
                    let transient = e.is_connect() || e.is_timeout() || e.is_request();
                    if transient && idempotent && attempt < 2 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    // reqwest's message names the URL (no credential is in it) and the cause.
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(": ");
                        msg.push_str(&s.to_string());
                        src = s.source();
                    }
                    return Err(self.err(RemoteFailure::Unreachable, msg));
                }
            }
        }
    }

    async fn login(&self) -> Result<TokenState, VaultError> {
        use std::sync::atomic::Ordering::Relaxed;
        match &self.cfg.auth {
            RemoteAuth::Token { token } => {
                let token = self.read_credential(token).await?;
                // Learn the token's TTL so it can be renewed in time.
                let (st, body) = self.send(reqwest::Method::GET, "auth/token/lookup-self", Some(&token), None, true).await?;
                if st != 200 {
                    let (f, m) = status_failure(st, &body);
                    return Err(self.err(f, format!("token lookup: {m}")));
                }
                let v: Value = serde_json::from_slice(&body).map_err(|_| self.err(RemoteFailure::Protocol, "token lookup: not JSON"))?;
                let ttl = v["data"]["ttl"].as_u64().unwrap_or(0);
                let renewable = v["data"]["renewable"].as_bool().unwrap_or(false);
                self.logins.fetch_add(1, Relaxed);
                Ok(TokenState { token, since: Instant::now(), ttl: (ttl > 0).then(|| Duration::from_secs(ttl)), renewable })
            }
            RemoteAuth::AppRole { role_id, secret_id, mount } => {
                let role_id = self.read_credential(role_id).await?;
                let secret_id = self.read_credential(secret_id).await?;
                let body = Zeroizing::new(
                    serde_json::to_vec(&json!({
                        "role_id": role_id.expose_str().unwrap_or_default(),
                        "secret_id": secret_id.expose_str().unwrap_or_default(),
                    }))
                    .expect("JSON"),
                );
                let (st, resp) =
                    self.send(reqwest::Method::POST, &format!("auth/{}/login", encode_path(mount)), None, Some(&body), true).await?;
                if st != 200 {
                    let (f, m) = status_failure(st, &resp);
                    // A wrong role or secret id is a 400 ("invalid role or secret ID").
                    let f = if st == 400 { RemoteFailure::PermissionDenied } else { f };
                    return Err(self.err(f, format!("AppRole login: {m}")));
                }
                let st = self.token_from_auth(&resp, "AppRole login")?;
                self.logins.fetch_add(1, Relaxed);
                Ok(st)
            }
        }
    }

    fn token_from_auth(&self, resp: &[u8], what: &str) -> Result<TokenState, VaultError> {
        let v: Zeroizing<String> = Zeroizing::new(String::from_utf8_lossy(resp).into_owned());
        let v: Value = serde_json::from_str(&v).map_err(|_| self.err(RemoteFailure::Protocol, format!("{what}: not JSON")))?;
        let auth = &v["auth"];
        let token = auth["client_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| self.err(RemoteFailure::Protocol, format!("{what}: no client_token")))?;
        let ttl = auth["lease_duration"].as_u64().unwrap_or(0);
        Ok(TokenState {
            token: Secret::from_str_value(token),
            since: Instant::now(),
            ttl: (ttl > 0).then(|| Duration::from_secs(ttl)),
            renewable: auth["renewable"].as_bool().unwrap_or(false),
        })
    }

    /// A valid token: logs in the first time, renews past half its TTL, logs in again (AppRole)
    /// when renewal fails or the token ran out.
    async fn token(&self) -> Result<Secret, VaultError> {
        let mut guard = self.token.lock().await;
        if let Some(st) = guard.as_ref() {
            let Some(ttl) = st.ttl else { return Ok(st.token.clone()) };
            let age = st.since.elapsed();
            if age < ttl / 2 {
                return Ok(st.token.clone());
            }
            if st.renewable && age < ttl {
                let (code, body) = self.send(reqwest::Method::POST, "auth/token/renew-self", Some(&st.token), None, true).await?;
                if code == 200 {
                    if let Ok(mut renewed) = self.token_from_auth(&body, "token renewal") {
                        // renew-self answers with the same token.
                        renewed.token = st.token.clone();
                        self.renewals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let t = renewed.token.clone();
                        *guard = Some(renewed);
                        return Ok(t);
                    }
                }
                tracing::warn!(vault = %self.cfg.name, status = code, "token renewal failed; logging in again");
            }
            *guard = None;
        }
        let st = self.login().await?;
        let t = st.token.clone();
        *guard = Some(st);
        Ok(t)
    }

    /// A request with the current token; on 403 with AppRole, one fresh login and a retry (the
    /// token may have been revoked or have run out between renewals).
    async fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Zeroizing<Vec<u8>>>,
        idempotent: bool,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), VaultError> {
        let token = self.token().await?;
        let (st, resp) = self.send(method.clone(), path, Some(&token), body, idempotent).await?;
        if st == 403 && matches!(self.cfg.auth, RemoteAuth::AppRole { .. }) {
            *self.token.lock().await = None;
            let token = self.token().await?;
            return self.send(method, path, Some(&token), body, idempotent).await;
        }
        Ok((st, resp))
    }

    /// Encrypts `plaintext` with the transit key `mount/encrypt/key`; returns the ciphertext
    /// (`vault:vN:...`). For the master key's wrapping.
    pub async fn transit_encrypt(&self, mount: &str, key: &str, plaintext: &Secret) -> Result<String, VaultError> {
        use base64::Engine as _;
        let path = format!("{}/encrypt/{}", encode_path(mount), encode_path(key));
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(plaintext.expose_secret()));
        let body = Zeroizing::new(serde_json::to_vec(&json!({"plaintext": b64.as_str()})).expect("JSON"));
        let (st, resp) = self.authed(reqwest::Method::POST, &path, Some(&body), false).await?;
        if st != 200 {
            let (f, m) = status_failure(st, &resp);
            return Err(self.err(f, format!("transit encrypt with {mount}/{key}: {m}")));
        }
        let v: Value = serde_json::from_slice(&resp).map_err(|_| self.err(RemoteFailure::Protocol, "transit encrypt: not JSON"))?;
        v["data"]["ciphertext"].as_str().map(str::to_owned).ok_or_else(|| self.err(RemoteFailure::Protocol, "transit encrypt: no ciphertext"))
    }

    /// Decrypts `ciphertext` with the transit key `mount/decrypt/key`.
    pub async fn transit_decrypt(&self, mount: &str, key: &str, ciphertext: &str) -> Result<Secret, VaultError> {
        use base64::Engine as _;
        let path = format!("{}/decrypt/{}", encode_path(mount), encode_path(key));
        let body = Zeroizing::new(serde_json::to_vec(&json!({"ciphertext": ciphertext})).expect("JSON"));
        let (st, resp) = self.authed(reqwest::Method::POST, &path, Some(&body), true).await?;
        if st != 200 {
            let (f, m) = status_failure(st, &resp);
            return Err(self.err(f, format!("transit decrypt with {mount}/{key}: {m}")));
        }
        let v: Value = serde_json::from_slice(&resp).map_err(|_| self.err(RemoteFailure::Protocol, "transit decrypt: not JSON"))?;
        let b64 = v["data"]["plaintext"].as_str().ok_or_else(|| self.err(RemoteFailure::Protocol, "transit decrypt: no plaintext"))?;
        let plain = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| self.err(RemoteFailure::Protocol, "transit decrypt: plaintext not base64"))?;
        Ok(Secret::new(plain))
    }

    /// Reads the whole KV v2 secret at `r` (its field ignored): the fields and the version.
    pub async fn read_kv(&self, r: &RemoteRef) -> Result<(Vec<(String, Secret)>, u64), VaultError> {
        let mut path = format!("{}/data/{}", encode_path(&r.mount), encode_path(&r.path));
        if let Some(v) = r.version {
            path.push_str(&format!("?version={v}"));
        }
        let (st, body) = self.authed(reqwest::Method::GET, &path, None, true).await?;
        let at = || format!("{}/{}/{}", r.vault, r.mount, r.path);
        if st != 200 {
            let (f, m) = status_failure(st, &body);
            let m = if f == RemoteFailure::NotFound {
                match r.version {
                    Some(v) => format!("no version {v} of {} (or it is deleted)", at()),
                    None => format!("no secret at {}", at()),
                }
            } else {
                format!("reading {}: {m}", at())
            };
            return Err(self.err(f, m));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| self.err(RemoteFailure::Protocol, format!("reading {}: not JSON", at())))?;
        let version = v["data"]["metadata"]["version"].as_u64().unwrap_or(0);
        let Some(data) = v["data"]["data"].as_object() else {
            return Err(self.err(RemoteFailure::NotFound, format!("version {version} of {} is deleted or destroyed", at())));
        };
        let mut out = Vec::with_capacity(data.len());
        for (k, val) in data {
            let s = match val {
                Value::String(s) => Secret::from_str_value(s),
                other => Secret::new(other.to_string().into_bytes()),
            };
            out.push((k.clone(), s));
        }
        Ok((out, version))
    }

    /// Reads the field of `r`, from the cache while it is fresh.
    pub async fn read(&self, r: &RemoteRef) -> Result<KvValue, VaultError> {
        let ttl = Duration::from_secs(self.cfg.cache_ttl_seconds);
        if !ttl.is_zero() {
            if let Some((at, s, v)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(r) {
                if at.elapsed() < ttl {
                    return Ok(KvValue { value: s.clone(), version: *v });
                }
            }
        }
        let field = r.field.as_deref().ok_or_else(|| self.err(RemoteFailure::FieldMissing, format!("{r} names no field")))?;
        let (fields, version) = self.read_kv(r).await?;
        let value = fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| self.err(RemoteFailure::FieldMissing, format!("{r}: version {version} has no field '{field}'")))?;
        if !ttl.is_zero() {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(r.clone(), (Instant::now(), value.clone(), version));
        }
        Ok(KvValue { value, version })
    }

    /// Writes `value` into the field of `r` with check-and-set: the other fields of the secret
    /// are kept, and the write fails with [`RemoteFailure::Conflict`] if the secret changed
    /// since it was read. Unless `force`, a field that already holds a different value is not
    /// replaced (also a conflict). Returns the new version.
    pub async fn write_field(&self, r: &RemoteRef, value: &Secret, force: bool) -> Result<u64, VaultError> {
        let field = r.field.as_deref().ok_or_else(|| self.err(RemoteFailure::FieldMissing, format!("{r} names no field")))?;
        let latest = RemoteRef { version: None, ..r.clone() };
        let (fields, cas) = match self.read_kv(&latest).await {
            Ok(x) => x,
            Err(VaultError::Remote { failure: RemoteFailure::NotFound, .. }) => (Vec::new(), 0),
            Err(e) => return Err(e),
        };
        if let Some(pinned) = r.version {
            if pinned != cas && !force {
                return Err(self.err(
                    RemoteFailure::Conflict,
                    format!("{r}: the latest version is {cas}, not {pinned}; give --force to write over it"),
                ));
            }
        }
        if let Some((_, old)) = fields.iter().find(|(k, _)| k == field) {
            if old.expose_secret() == value.expose_secret() {
                return Ok(cas);
            }
            if !force && r.version.is_none() {
                return Err(self.err(
                    RemoteFailure::Conflict,
                    format!("{latest}: version {cas} already holds a different value; give --force to replace it"),
                ));
            }
        }
        let text = value.expose_str().ok_or_else(|| self.err(RemoteFailure::Protocol, "KV values are text; this secret is not UTF-8"))?;
        let mut data = serde_json::Map::new();
        for (k, s) in fields.iter() {
            if k != field {
                data.insert(k.clone(), Value::String(s.expose_str().unwrap_or_default().to_owned()));
            }
        }
        data.insert(field.to_owned(), Value::String(text.to_owned()));
        let body = Zeroizing::new(serde_json::to_vec(&json!({"options": {"cas": cas}, "data": data})).expect("JSON"));
        drop(data);
        let path = format!("{}/data/{}", encode_path(&r.mount), encode_path(&r.path));
        let (st, resp) = self.authed(reqwest::Method::POST, &path, Some(&body), false).await?;
        if st != 200 && st != 204 {
            let (f, m) = status_failure(st, &resp);
            return Err(self.err(f, format!("writing {latest}: {m}")));
        }
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        self.invalidate();
        Ok(v["data"]["version"].as_u64().unwrap_or(cas + 1))
    }

    /// Issues a dynamic database credential from the database secrets engine at `mount`.
    pub async fn db_credential(&self, mount: &str, role: &str) -> Result<DbCredential, VaultError> {
        let path = format!("{}/creds/{}", encode_path(mount), encode_path(role));
        // Not retried: each call creates a role.
        let (st, body) = self.authed(reqwest::Method::GET, &path, None, false).await?;
        if st != 200 {
            let (f, m) = status_failure(st, &body);
            return Err(self.err(f, format!("database credential {mount}/{role}: {m}")));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| self.err(RemoteFailure::Protocol, "database credential: not JSON"))?;
        let username = v["data"]["username"].as_str().unwrap_or_default().to_owned();
        let password = v["data"]["password"].as_str().unwrap_or_default();
        let lease_id = v["lease_id"].as_str().unwrap_or_default().to_owned();
        if username.is_empty() || password.is_empty() || lease_id.is_empty() {
            return Err(self.err(RemoteFailure::Protocol, "database credential: no username, password or lease_id"));
        }
        Ok(DbCredential {
            username,
            password: Secret::from_str_value(password),
            lease_id,
            lease_duration: v["lease_duration"].as_u64().unwrap_or(0),
        })
    }

    /// Revokes a lease (`PUT /v1/sys/leases/revoke`). Revoking a lease that is already gone
    /// succeeds.
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), VaultError> {
        let body = Zeroizing::new(serde_json::to_vec(&json!({"lease_id": lease_id})).expect("JSON"));
        let (st, resp) = self.authed(reqwest::Method::PUT, "sys/leases/revoke", Some(&body), true).await?;
        if st == 200 || st == 204 {
            return Ok(());
        }
        let (f, m) = status_failure(st, &resp);
        Err(self.err(f, format!("revoking lease: {m}")))
    }
}
