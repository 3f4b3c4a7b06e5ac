//! Secret backends: the code that turns a [`SecretRef`] into a [`Secret`].
//!
//! The local vault uses envelope encryption with AES-256-GCM (ring): every secret gets a fresh
//! random 256-bit data key; the value is sealed under the data key and the data key is sealed under
//! the master key, both with the secret's name as associated data, so a ciphertext moved to another
//! name does not open. The sealed form is:
//!
//! ```text
//! 0x01 | dek_nonce (12) | wrapped_dek (32 + 16 tag) | nonce (12) | ciphertext (n + 16 tag)
//! ```
//!
//! Remote vaults (OpenBao, HashiCorp Vault) are in [`remote`].
//!
//! This crate and the executors are the only places that handle plaintext.
#![forbid(unsafe_code)]

pub mod remote;
pub mod wrap;
pub mod backup;

use airlock_core::config::{RemoteRef, RemoteVaultConfig, SecretRef};
pub use remote::{RemoteFailure, RemoteVault};
use std::collections::BTreeMap;
use std::sync::Arc;
use airlock_core::Secret;
use airlock_store::Store;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;
use zeroize::Zeroizing;

/// Failures resolving or storing a secret. Messages name references, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No secret is stored under this name.
    #[error("no secret named {0} in the local vault")]
    NotFound(String),
    /// The sealed value does not open: tampered, moved to another name, or another master key.
    #[error("the sealed secret {0} does not decrypt (tampered, renamed or another master key)")]
    Decrypt(String),
    /// The environment variable is unset or not UTF-8.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The master key file is missing, unreadable, the wrong size or too widely readable.
    #[error("master key {path}: {message}")]
    MasterKey {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A backup could not be written or restored; the message says why (never a value).
    #[error("backup: {0}")]
    Backup(String),
    /// An empty value was given.
    #[error("a secret cannot be empty")]
    Empty,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] airlock_store::StoreError),
    /// A remote vault (OpenBao, HashiCorp Vault) failed: sealed, unreachable, permission denied,
    /// no such path, version or field. The message names the reference, never a value.
    #[error("vault {vault}: {}: {message}", .failure.as_str())]
    Remote {
        /// The `[vaults.NAME]` name.
        vault: String,
        /// What kind of failure.
        failure: RemoteFailure,
        /// Operator detail.
        message: String,
    },
    /// A reference names a vault that is not configured.
    #[error("no vault named {0} is configured")]
    UnknownVault(String),
}

impl VaultError {
    /// The kind of a remote vault failure, if this is one.
    pub fn remote_failure(&self) -> Option<RemoteFailure> {
        match self {
            VaultError::Remote { failure, .. } => Some(*failure),
            _ => None,
        }
    }
}

/// The 256-bit master key. Zeroized on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([hidden])")
    }
}

impl MasterKey {
    /// Creates a random key file with mode 0600; refuses to overwrite.
    pub fn create(path: &Path) -> Result<MasterKey, VaultError> {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(k.as_mut()).map_err(|_| VaultError::MasterKey {
            path: path.display().to_string(),
            message: "no randomness".into(),
        })?;
        airlock_store::write_private_file(path, k.as_ref()).map_err(|e| VaultError::MasterKey {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(MasterKey(k))
    }

    /// Loads a key file, refusing one readable by group or others.
    pub fn load(path: &Path) -> Result<MasterKey, VaultError> {
        let err = |m: String| VaultError::MasterKey { path: path.display().to_string(), message: m };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(err("readable by group or others; chmod 600 it".into()));
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
        if bytes.len() != 32 {
            return Err(err(format!("expected 32 bytes, found {}", bytes.len())));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&bytes);
        Ok(MasterKey(k))
    }

    /// A key from raw bytes (for tests and the demo's throw-away directory).
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }
}

const VERSION: u8 = 1;
const TAG: usize = 16;

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"))
}

fn aad(kind: &str, name: &str) -> Vec<u8> {
    let mut a = format!("airlock-{kind}-v1").into_bytes();
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("system randomness");
    b
}

/// Seals `secret` under `master` for the name `name`.
pub fn seal(master: &MasterKey, name: &str, secret: &Secret) -> Vec<u8> {
    let dek = Zeroizing::new(random::<32>());
    let dek_nonce = random::<NONCE_LEN>();
    let nonce = random::<NONCE_LEN>();
    let mut wrapped = dek.to_vec();
    aead_key(master.0.as_ref())
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(dek_nonce), Aad::from(aad("dek", name)), &mut wrapped)
        .expect("seal dek");
    let mut ct = secret.expose_secret().to_vec();
    aead_key(dek.as_ref())
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad("secret", name)), &mut ct)
        .expect("seal secret");
    let mut out = Vec::with_capacity(1 + 12 + wrapped.len() + 12 + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&dek_nonce);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens a sealed value for `name`.
pub fn open(master: &MasterKey, name: &str, sealed: &[u8]) -> Result<Secret, VaultError> {
    let bad = || VaultError::Decrypt(name.to_owned());
    let wrapped_len = 32 + TAG;
    if sealed.len() < 1 + NONCE_LEN + wrapped_len + NONCE_LEN + TAG || sealed[0] != VERSION {
        return Err(bad());
    }
    let (dek_nonce, rest) = sealed[1..].split_at(NONCE_LEN);
    let (wrapped, rest) = rest.split_at(wrapped_len);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let mut dek = Zeroizing::new(wrapped.to_vec());
    let dek_plain = aead_key(master.0.as_ref())
        .open_in_place(
            Nonce::try_assume_unique_for_key(dek_nonce).map_err(|_| bad())?,
            Aad::from(aad("dek", name)),
            &mut dek,
        )
        .map_err(|_| bad())?;
    let key = aead_key(dek_plain);
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain = key
        .open_in_place(Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?, Aad::from(aad("secret", name)), &mut buf)
        .map_err(|_| bad())?;
    Ok(Secret::new(plain.to_vec()))
}

/// How long a resolved value is reused before it is read from its backend again.
pub const RECENT_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Values resolved in the last [`RECENT_TTL`], by reference. Entries are [`Secret`]s, zeroized
/// when evicted, replaced or cleared.
#[derive(Default)]
struct Recent(std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Secret)>>);

impl Recent {
    /// The key of a reference: its names and paths, never a value.
    fn key(r: &SecretRef) -> String {
        format!("{r:?}")
    }

    fn get(&self, r: &SecretRef) -> Option<Secret> {
        let k = Recent::key(r);
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&k) {
            Some((at, s)) if at.elapsed() < RECENT_TTL => Some(s.clone()),
            Some(_) => {
                m.remove(&k);
                None
            }
            None => None,
        }
    }

    fn put(&self, r: &SecretRef, s: &Secret) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (at, _)| at.elapsed() < RECENT_TTL);
        m.insert(Recent::key(r), (std::time::Instant::now(), s.clone()));
    }

    fn remove(&self, r: &SecretRef) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&Recent::key(r));
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Resolves secret references against the local vault, the environment and files.
pub struct Vault {
    master: MasterKey,
    store: Store,
    remotes: BTreeMap<String, Arc<RemoteVault>>,
    recent: Recent,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault")
    }
}

impl Vault {
    /// A vault over `store` with `master`.
    pub fn new(master: MasterKey, store: Store) -> Vault {
        Vault { master, store, remotes: BTreeMap::new(), recent: Recent::default() }
    }

    /// A vault that also resolves `openbao:` references against `remotes` (`[vaults.NAME]`).
    pub fn with_remotes<'a>(
        master: MasterKey,
        store: Store,
        remotes: impl IntoIterator<Item = &'a RemoteVaultConfig>,
    ) -> Result<Vault, VaultError> {
        let mut m = BTreeMap::new();
        for c in remotes {
            m.insert(c.name.clone(), Arc::new(RemoteVault::new(c.clone())?));
        }
        Ok(Vault { master, store, remotes: m, recent: Recent::default() })
    }

    /// The master key (to wrap it again: [`wrap::write_wrapped`]).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Checks that the master key opens the stored secrets: the first one stored, if any. A
    /// wrong key fails with [`VaultError::Decrypt`].
    pub async fn check_key(&self) -> Result<(), VaultError> {
        let names = self.store.list_secrets().await?;
        if let Some(m) = names.first() {
            self.resolve(&SecretRef::Local(m.name.clone())).await?;
        }
        Ok(())
    }

    /// The remote vault `name`.
    pub fn remote(&self, name: &str) -> Result<&Arc<RemoteVault>, VaultError> {
        self.remotes.get(name).ok_or_else(|| VaultError::UnknownVault(name.to_owned()))
    }

    /// Drops every cached value (recent resolutions and remote caches), so the next resolution
    /// reads every backend again.
    pub fn invalidate(&self) {
        self.recent.clear();
        for r in self.remotes.values() {
            r.invalidate();
        }
    }

    /// Revokes, at remote vault `remote`, the lease whose id is sealed locally under `key`.
    /// `Ok(false)` when no id is sealed there (an earlier attempt revoked it already).
    pub async fn revoke_sealed_lease(&self, remote: &str, key: &str) -> Result<bool, VaultError> {
        let remote = self.remote(remote)?;
        let lease_id = match self.resolve(&SecretRef::Local(key.to_owned())).await {
            Ok(s) => s,
            Err(VaultError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        remote.revoke_lease(lease_id.expose_str().unwrap_or_default()).await?;
        Ok(true)
    }

    /// Forgets the recently resolved value of `r` (a lease revoked, a secret deleted).
    pub fn forget(&self, r: &SecretRef) {
        self.recent.remove(r);
    }

    /// Drops the cached value of one remote reference.
    pub fn invalidate_ref(&self, r: &RemoteRef) {
        self.recent.clear();
        if let Some(v) = self.remotes.get(&r.vault) {
            v.invalidate_ref(r);
        }
    }

    /// Seals `secret` for `name` without storing it (a connected account's token set, a PKCE
    /// verifier): the caller keeps the ciphertext, and only [`Vault::open_value`] with the same
    /// name opens it.
    pub fn seal_value(&self, name: &str, secret: &Secret) -> Vec<u8> {
        seal(&self.master, name, secret)
    }

    /// Opens what [`Vault::seal_value`] sealed for `name`.
    pub fn open_value(&self, name: &str, sealed: &[u8]) -> Result<Secret, VaultError> {
        open(&self.master, name, sealed)
    }

    /// Seals and stores a secret under `name`. Returns the new version.
    pub async fn put(&self, name: &str, secret: &Secret) -> Result<i64, VaultError> {
        if secret.is_empty() {
            return Err(VaultError::Empty);
        }
        let sealed = seal(&self.master, name, secret);
        let version = self.store.put_sealed(name, &sealed).await?;
        self.recent.clear();
        Ok(version)
    }

    /// Replaces the local secret `name` with `secret`; the value it replaces stays known to the
    /// scrubber for `overlap` (retired, never used again). Returns the new version.
    pub async fn rotate(&self, name: &str, secret: &Secret, overlap: std::time::Duration) -> Result<i64, VaultError> {
        if secret.is_empty() {
            return Err(VaultError::Empty);
        }
        let sealed = seal(&self.master, name, secret);
        let until = std::time::SystemTime::now() + overlap;
        let until = airlock_store::leases::stamp(until.into());
        let version = self.store.rotate_sealed(name, &sealed, &until).await?;
        self.recent.clear();
        Ok(version)
    }

    /// The retired values still in their overlap, `(name, value)`, for the scrubber; a value
    /// that does not open is left out (and logged by the caller's count).
    pub async fn retired(&self) -> Result<Vec<(String, Secret)>, VaultError> {
        let mut out = Vec::new();
        for (name, sealed) in self.store.retired_sealed().await? {
            if let Ok(s) = open(&self.master, &name, &sealed) {
                out.push((name, s));
            }
        }
        Ok(out)
    }

    /// [`Vault::resolve`], reusing a value resolved less than [`RECENT_TTL`] ago (the hot path of
    /// calls: one backend read per reference every few seconds, not one per call).
    pub async fn resolve_recent(&self, r: &SecretRef) -> Result<Secret, VaultError> {
        if let Some(s) = self.recent.get(r) {
            return Ok(s);
        }
        let s = self.resolve(r).await?;
        self.recent.put(r, &s);
        Ok(s)
    }

    /// Resolves a reference to its plaintext.
    pub async fn resolve(&self, r: &SecretRef) -> Result<Secret, VaultError> {
        let s = match r {
            SecretRef::Local(name) => {
                let (sealed, _) = self.store.get_sealed(name).await?.ok_or_else(|| VaultError::NotFound(name.clone()))?;
                open(&self.master, name, &sealed)?
            }
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Secret::new(v.into_bytes()),
                _ => return Err(VaultError::EnvMissing(var.clone())),
            },
            SecretRef::File(path) => {
                let p = path.clone();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(&p))
                    .await
                    .map_err(|e| VaultError::File { path: path.display().to_string(), message: e.to_string() })?
                    .map_err(|e| VaultError::File { path: path.display().to_string(), message: e.to_string() })?;
                let mut bytes = Zeroizing::new(bytes);
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                Secret::new(std::mem::take(&mut *bytes))
            }
            SecretRef::Remote(r) => self.remote(&r.vault)?.read(r).await?.value,
        };
        if s.is_empty() {
            return Err(VaultError::Empty);
        }
        Ok(s)
    }

    /// The store behind the vault.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding_to_name() {
        let mk = MasterKey::from_bytes([7u8; 32]);
        let s = Secret::from_str_value("pg-password-canary-123");
        let sealed = seal(&mk, "DB_PROD", &s);
        assert!(!sealed.windows(10).any(|w| w == b"pg-passwor"));
        assert_eq!(open(&mk, "DB_PROD", &sealed).unwrap().expose_secret(), s.expose_secret());
        // Moved to another name: refuses.
        assert!(matches!(open(&mk, "DB_OTHER", &sealed), Err(VaultError::Decrypt(_))));
        // Another master key: refuses.
        assert!(open(&MasterKey::from_bytes([8u8; 32]), "DB_PROD", &sealed).is_err());
        // Any flipped byte: refuses.
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(open(&mk, "DB_PROD", &t).is_err(), "byte {i}");
        }
        assert!(open(&mk, "DB_PROD", &sealed[..20]).is_err());
        // Fresh data key and nonces each time.
        assert_ne!(seal(&mk, "DB_PROD", &s), sealed);
    }

    #[tokio::test]
    async fn put_resolve_env_file_and_key_files() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).await.unwrap();
        let mk_path = d.path().join("master.key");
        MasterKey::create(&mk_path).unwrap();
        assert!(MasterKey::create(&mk_path).is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&mk_path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&mk_path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(MasterKey::load(&mk_path).is_err());
            std::fs::set_permissions(&mk_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let v = Vault::new(MasterKey::load(&mk_path).unwrap(), store.clone());
        assert_eq!(v.put("API", &Secret::from_str_value("tok-1")).await.unwrap(), 1);
        assert_eq!(v.put("API", &Secret::from_str_value("tok-2")).await.unwrap(), 2);
        let got = v.resolve(&SecretRef::Local("API".into())).await.unwrap();
        assert_eq!(got.expose_str(), Some("tok-2"));
        assert!(matches!(v.resolve(&SecretRef::Local("NOPE".into())).await, Err(VaultError::NotFound(_))));
        assert!(matches!(v.put("X", &Secret::new(vec![])).await, Err(VaultError::Empty)));

        let f = d.path().join("s.txt");
        std::fs::write(&f, "file-secret\n").unwrap();
        assert_eq!(v.resolve(&SecretRef::File(f)).await.unwrap().expose_str(), Some("file-secret"));
        assert!(v.resolve(&SecretRef::Env("AIRLOCK_TEST_SURELY_UNSET_VAR".into())).await.is_err());
        let e = v.resolve(&SecretRef::File(d.path().join("missing"))).await.unwrap_err();
        assert!(e.to_string().contains("missing"));

        // The store holds no plaintext.
        let db = std::fs::read(d.path().join("store.db")).unwrap();
        let wal = std::fs::read(d.path().join("store.db-wal")).unwrap_or_default();
        for hay in [db, wal] {
            assert!(!hay.windows(5).any(|w| w == b"tok-2"));
        }
    }
}
