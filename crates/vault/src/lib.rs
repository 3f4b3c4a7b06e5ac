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
//! That is version 0 of the keyring: after a rotation ([`keyring`]) data keys are sealed under a
//! key version instead, whose own key is sealed under the master key.
//!
//! Remote vaults (OpenBao, HashiCorp Vault) are in [`remote`].
//!
//! This crate and the executors are the only places that handle plaintext.
#![forbid(unsafe_code)]

pub mod remote;
pub mod wrap;
pub mod backup;
pub mod keyring;

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
    /// The keyring (key versions) cannot be read or changed: a version that does not open with
    /// this master key, a rotation already under way, a value that opens under no version.
    #[error("keyring: {0}")]
    Keyring(String),
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

/// Seals `secret` under `master` for the name `name` (version 0, the original format).
pub fn seal(master: &MasterKey, name: &str, secret: &Secret) -> Vec<u8> {
    seal_under(master, &[VERSION], name, secret)
}

/// Opens a value sealed by [`seal`] for `name`.
pub fn open(master: &MasterKey, name: &str, sealed: &[u8]) -> Result<Secret, VaultError> {
    if sealed.first() != Some(&VERSION) {
        return Err(VaultError::Decrypt(name.to_owned()));
    }
    open_under(master, 1, name, sealed)
}

/// Seals `secret` for `name` with a fresh data key sealed under `kek`; the result begins with
/// `tag`.
fn seal_under(kek: &MasterKey, tag: &[u8], name: &str, secret: &Secret) -> Vec<u8> {
    let dek = Zeroizing::new(random::<32>());
    let nonce = random::<NONCE_LEN>();
    let mut ct = secret.expose_secret().to_vec();
    aead_key(dek.as_ref())
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad("secret", name)), &mut ct)
        .expect("seal secret");
    let mut out = Vec::with_capacity(tag.len() + 12 + 32 + TAG + 12 + ct.len());
    out.extend_from_slice(tag);
    push_wrapped_dek(&mut out, kek, name, dek.as_ref());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Appends `dek_nonce | wrapped_dek`: `dek` sealed under `kek` for `name`, with a fresh nonce.
fn push_wrapped_dek(out: &mut Vec<u8>, kek: &MasterKey, name: &str, dek: &[u8]) {
    let dek_nonce = random::<NONCE_LEN>();
    let mut wrapped = dek.to_vec();
    aead_key(kek.0.as_ref())
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(dek_nonce), Aad::from(aad("dek", name)), &mut wrapped)
        .expect("seal dek");
    out.extend_from_slice(&dek_nonce);
    out.extend_from_slice(&wrapped);
}

/// The parts of a sealed value after its tag: (dek_nonce, wrapped_dek, nonce, ciphertext).
type SealedParts<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

/// The parts after a tag of `tag_len` bytes.
fn split_sealed(sealed: &[u8], tag_len: usize) -> Option<SealedParts<'_>> {
    let wrapped_len = 32 + TAG;
    if sealed.len() < tag_len + NONCE_LEN + wrapped_len + NONCE_LEN + TAG {
        return None;
    }
    let (dek_nonce, rest) = sealed[tag_len..].split_at(NONCE_LEN);
    let (wrapped, rest) = rest.split_at(wrapped_len);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    Some((dek_nonce, wrapped, nonce, ct))
}

/// The data key of a sealed value, opened with `kek`.
fn open_dek(kek: &MasterKey, name: &str, dek_nonce: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut dek = Zeroizing::new(wrapped.to_vec());
    let n = aead_key(kek.0.as_ref())
        .open_in_place(Nonce::try_assume_unique_for_key(dek_nonce).ok()?, Aad::from(aad("dek", name)), &mut dek)
        .ok()?
        .len();
    dek.truncate(n);
    Some(dek)
}

/// Opens a value for `name` whose data key is sealed under `kek`, after a tag of `tag_len`
/// bytes.
fn open_under(kek: &MasterKey, tag_len: usize, name: &str, sealed: &[u8]) -> Result<Secret, VaultError> {
    let bad = || VaultError::Decrypt(name.to_owned());
    let (dek_nonce, wrapped, nonce, ct) = split_sealed(sealed, tag_len).ok_or_else(bad)?;
    let dek = open_dek(kek, name, dek_nonce, wrapped).ok_or_else(bad)?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain = aead_key(&dek)
        .open_in_place(Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?, Aad::from(aad("secret", name)), &mut buf)
        .map_err(|_| bad())?;
    Ok(Secret::new(plain.to_vec()))
}

/// The value sealed for `name` with its data key under `old` (after a tag of `old_tag_len`
/// bytes), with the data key sealed under `new` instead and the tag `new_tag`. The value's own
/// nonce and ciphertext are kept; the data key is checked to open the value before it is
/// re-wrapped, so a damaged value is never carried over as if it were sound.
fn rewrap_under(old: &MasterKey, old_tag_len: usize, new: &MasterKey, new_tag: &[u8], name: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let bad = || VaultError::Decrypt(name.to_owned());
    let (dek_nonce, wrapped, nonce, ct) = split_sealed(sealed, old_tag_len).ok_or_else(bad)?;
    let dek = open_dek(old, name, dek_nonce, wrapped).ok_or_else(bad)?;
    let mut check = Zeroizing::new(ct.to_vec());
    aead_key(&dek)
        .open_in_place(Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?, Aad::from(aad("secret", name)), &mut check)
        .map_err(|_| bad())?;
    let mut out = Vec::with_capacity(new_tag.len() + sealed.len());
    out.extend_from_slice(new_tag);
    push_wrapped_dek(&mut out, new, name, &dek);
    out.extend_from_slice(nonce);
    out.extend_from_slice(ct);
    Ok(out)
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
    keys: keyring::Keyring,
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
        Vault { keys: keyring::Keyring::new(master), store, remotes: BTreeMap::new(), recent: Recent::default() }
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
        Ok(Vault { keys: keyring::Keyring::new(master), store, remotes: m, recent: Recent::default() })
    }

    /// The master key, the keyring's root (to wrap it again: [`wrap::write_wrapped`]).
    pub fn master(&self) -> &MasterKey {
        self.keys.root()
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

    /// Seals `secret` for `name` and hands the sealed bytes to `write` (a store operation that
    /// keeps them): if the store refuses them because a rotation retired the key version they
    /// are under (another process rotated), the keyring is read again and `write` runs once more
    /// with the value sealed under the current version.
    pub async fn seal_into<T, F, Fut>(&self, name: &str, secret: &Secret, write: F) -> Result<T, VaultError>
    where
        F: Fn(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<T, airlock_store::StoreError>>,
    {
        match write(self.keys.seal(name, secret)).await {
            Err(e) if e.is_key_retired() => {
                self.reload_keyring().await?;
                Ok(write(self.keys.seal(name, secret)).await?)
            }
            r => Ok(r?),
        }
    }

    /// Opens a value sealed for `name` (by [`Vault::seal_into`], [`Vault::put`] or
    /// [`Vault::rotate`]) under any key version the store holds; a version this process has not
    /// read yet (another process rotated) makes it read the keyring again.
    pub async fn open_value(&self, name: &str, sealed: &[u8]) -> Result<Secret, VaultError> {
        match self.keys.open(name, sealed) {
            Ok(s) => Ok(s),
            Err(keyring::OpenError::Decrypt) => Err(VaultError::Decrypt(name.to_owned())),
            Err(keyring::OpenError::UnknownVersion) => {
                self.reload_keyring().await?;
                self.keys.open(name, sealed).map_err(|_| VaultError::Decrypt(name.to_owned()))
            }
        }
    }

    /// Reads the key versions from the store again.
    pub async fn reload_keyring(&self) -> Result<(), VaultError> {
        let stored = self.store.master_keys().await?;
        self.keys.load(&stored)
    }

    /// Seals and stores a secret under `name`. Returns the new version.
    pub async fn put(&self, name: &str, secret: &Secret) -> Result<i64, VaultError> {
        if secret.is_empty() {
            return Err(VaultError::Empty);
        }
        let version = self.seal_into(name, secret, |sealed| async move { self.store.put_sealed(name, &sealed).await }).await?;
        self.recent.clear();
        Ok(version)
    }

    /// Replaces the local secret `name` with `secret`; the value it replaces stays known to the
    /// scrubber for `overlap` (retired, never used again). Returns the new version.
    pub async fn rotate(&self, name: &str, secret: &Secret, overlap: std::time::Duration) -> Result<i64, VaultError> {
        if secret.is_empty() {
            return Err(VaultError::Empty);
        }
        let until = std::time::SystemTime::now() + overlap;
        let until = airlock_store::leases::stamp(until.into());
        let version =
            self.seal_into(name, secret, |sealed| { let until = &until; async move { self.store.rotate_sealed(name, &sealed, until).await } }).await?;
        self.recent.clear();
        Ok(version)
    }

    /// The retired values still in their overlap, `(name, value)`, for the scrubber; a value
    /// that does not open is left out (and logged by the caller's count).
    pub async fn retired(&self) -> Result<Vec<(String, Secret)>, VaultError> {
        let mut out = Vec::new();
        for (name, sealed) in self.store.retired_sealed().await? {
            if let Ok(s) = self.open_value(&name, &sealed).await {
                out.push((name, s));
            }
        }
        Ok(out)
    }

    /// Where the key rotation stands: the versions, the active one, and how many values are
    /// still under older ones.
    pub async fn rotation_status(&self) -> Result<keyring::RotationStatus, VaultError> {
        let stored = self.store.master_keys().await?;
        self.keys.load(&stored)?;
        let active = self.keys.active();
        let remaining = if stored.len() > 1 { self.store.count_sealed_outside(&keyring::tag(active)).await? } else { 0 };
        Ok(keyring::RotationStatus { versions: stored.iter().map(|k| k.version as u32).collect(), active, remaining })
    }

    /// Starts a rotation: a new key version, sealed under the master key, becomes the one new
    /// values are sealed under; the older ones stay readable. Returns it. Refused while a
    /// rotation is unfinished ([`Vault::finish_rotation`] resumes it).
    pub async fn begin_rotation(&self) -> Result<u32, VaultError> {
        let stored = self.store.master_keys().await?;
        self.keys.load(&stored)?;
        if stored.len() > 1 {
            return Err(VaultError::Keyring("a rotation is under way; finish it first (airlock key rotate resumes it)".into()));
        }
        let new = self.keys.new_version(&stored)?;
        let root = keyring::Keyring::root_entry();
        self.store.add_master_key(&stored, Some(&root), &new).await.map_err(|e| match e {
            airlock_store::StoreError::Conflict(m) => VaultError::Keyring(m),
            e => e.into(),
        })?;
        self.reload_keyring().await?;
        Ok(self.keys.active())
    }

    /// Re-wraps every value not under the active version, page by page, then deletes the older
    /// versions; repeats while values were written under an older version meanwhile (another
    /// process that had not read the new version yet). Safe to stop at any point and run again.
    /// `progress` is told after every page: (re-wrapped so far, still under older versions at
    /// the start).
    pub async fn finish_rotation(&self, progress: &mut (dyn FnMut(u64, u64) + Send)) -> Result<keyring::RotationReport, VaultError> {
        use airlock_store::keyring::{Retire, SEALED_COLUMNS};
        const PAGE: i64 = 512;
        let stored = self.store.master_keys().await?;
        self.keys.load(&stored)?;
        let active = self.keys.active();
        let mut report = keyring::RotationReport { version: active, rewrapped: 0, retired: 0, passes: 0 };
        let Some(keep) = stored.iter().find(|k| k.version == i64::from(active)).cloned() else {
            return Ok(report);
        };
        if stored.len() == 1 {
            return Ok(report);
        }
        let total = self.store.count_sealed_outside(&keep.tag).await?;
        loop {
            report.passes += 1;
            for col in SEALED_COLUMNS {
                let mut after = String::new();
                loop {
                    let page = self.store.sealed_page(*col, &after, PAGE).await?;
                    let Some(last) = page.last() else { break };
                    after = last.key.clone();
                    let mut rows = Vec::new();
                    for r in page {
                        match self.keys.rewrap(&r.name, &r.sealed) {
                            Ok(Some(new)) => rows.push((r.key, r.sealed, new)),
                            Ok(None) => {}
                            Err(_) => {
                                return Err(VaultError::Keyring(format!(
                                    "{} {:?} opens under no key version this master key holds; the rotation stops here, nothing is lost",
                                    col.table, r.key
                                )))
                            }
                        }
                    }
                    if !rows.is_empty() {
                        report.rewrapped += self.store.replace_sealed(*col, &rows).await?;
                        progress(report.rewrapped, total);
                    }
                }
            }
            match self.store.retire_master_keys(&keep).await? {
                Retire::Retired(n) => {
                    report.retired = n;
                    break;
                }
                Retire::Remaining(_) => continue,
            }
        }
        self.reload_keyring().await?;
        Ok(report)
    }

    /// [`Vault::resolve`], reusing a value resolved less than [`RECENT_TTL`] ago (the hot path of
    /// calls: one backend read per reference every few seconds, not one per call).
    pub async fn resolve_recent(&self, r: &SecretRef) -> Result<Secret, VaultError> {
        if let Some(s) = self.recent.get(r) {
            return Ok(s);
        }
        // Boxed: a backend's read (a store query, an OpenBao round trip) is a large future, run
        // only after a miss, and this one is awaited on every call that resolves a secret.
        let s = Box::pin(self.resolve(r)).await?;
        self.recent.put(r, &s);
        Ok(s)
    }

    /// Resolves a reference to its plaintext.
    pub async fn resolve(&self, r: &SecretRef) -> Result<Secret, VaultError> {
        let s = match r {
            SecretRef::Local(name) => {
                let (sealed, _) = self.store.get_sealed(name).await?.ok_or_else(|| VaultError::NotFound(name.clone()))?;
                self.open_value(name, &sealed).await?
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
