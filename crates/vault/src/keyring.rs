//! Key versions of the local vault, and their online rotation (`airlock key rotate`).
//!
//! The **root key** is the master key as it is kept at rest (`master.key`, wrapped as
//! `[store.master_key]` says). A store that never rotated seals every data key under the root
//! key directly: the original format, tag `01` (see the crate documentation), here **version
//! 0**. A rotation adds **version n**: a random 256-bit key, sealed under the root key and
//! stored in `master_keys` (`airlock_store::keyring`); from then on data keys are sealed under
//! it:
//!
//! ```text
//! 0x02 | version (u32 BE) | dek_nonce (12) | wrapped_dek (32 + 16 tag) | nonce (12) | ciphertext (n + 16 tag)
//! ```
//!
//! and every value under an older version is **re-wrapped**: its data key is opened with the old
//! version and sealed again under the new one with a fresh nonce; the value's own ciphertext is
//! not touched. Re-wrapping goes page by page (one transaction each, compare-and-swap on the old
//! bytes, so a value put meanwhile is left alone), while calls go on: every version stays
//! readable until nothing is sealed under it, and then it is deleted
//! (`Store::retire_master_keys`; the store's triggers refuse a value sealed under a deleted
//! version, and [`crate::Vault`] re-reads the keyring and seals again when that happens).
//!
//! The state of a rotation is the data itself: a keyring with more than one version is a
//! rotation under way, and running it again resumes it. Killed at any point, the store holds
//! every value under a version it still has: the broker is fully on the old key, fully on the
//! new, or between with both readable.
//!
//! A deleted version's key is gone from the store; a copy of the data directory taken after a
//! finished rotation does not open with a key version stolen before it. The root key itself is
//! re-protected with `airlock key wrap`.

use crate::{open_under, rewrap_under, seal, seal_under, MasterKey, VaultError};
use airlock_core::Secret;
use airlock_store::keyring::StoredKey;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The first byte of a value sealed under a key version (not the root).
const VERSIONED: u8 = 0x02;

/// The tag (first bytes) of every value sealed under `version`.
pub fn tag(version: u32) -> Vec<u8> {
    if version == 0 {
        vec![crate::VERSION]
    } else {
        let mut t = vec![VERSIONED];
        t.extend_from_slice(&version.to_be_bytes());
        t
    }
}

/// The key version a sealed value is under and the length of its tag.
pub fn version_of(sealed: &[u8]) -> Option<(u32, usize)> {
    match *sealed.first()? {
        crate::VERSION => Some((0, 1)),
        VERSIONED if sealed.len() >= 5 => Some((u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]), 5)),
        _ => None,
    }
}

/// The name a key version is sealed for under the root key.
fn version_name(version: u32) -> String {
    format!("airlock-keyring\u{0}{version}")
}

#[derive(Default)]
struct Versions {
    /// The version new values are sealed under.
    active: u32,
    /// Versions 1.. (version 0 is the root key).
    keys: BTreeMap<u32, Arc<MasterKey>>,
}

/// The root key and the key versions read from the store.
pub struct Keyring {
    root: MasterKey,
    versions: RwLock<Arc<Versions>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.current();
        f.debug_struct("Keyring").field("active", &v.active).field("versions", &v.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why a value did not open.
pub(crate) enum OpenError {
    /// It is sealed under a version this keyring has not read (re-read the store).
    UnknownVersion,
    /// It does not open.
    Decrypt,
}

impl Keyring {
    /// A keyring holding only the root key (a store that never rotated, or one not read yet).
    pub fn new(root: MasterKey) -> Keyring {
        Keyring { root, versions: RwLock::new(Arc::default()) }
    }

    /// The root key.
    pub fn root(&self) -> &MasterKey {
        &self.root
    }

    fn current(&self) -> Arc<Versions> {
        Arc::clone(&self.versions.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The version new values are sealed under.
    pub fn active(&self) -> u32 {
        self.current().active
    }

    /// Replaces the versions with the store's (`Store::master_keys`); each is opened with the
    /// root key. An error leaves the keyring as it was.
    pub fn load(&self, stored: &[StoredKey]) -> Result<(), VaultError> {
        let mut v = Versions::default();
        for k in stored {
            let version = u32::try_from(k.version).map_err(|_| VaultError::Keyring(format!("version {} out of range", k.version)))?;
            if k.tag != tag(version) {
                return Err(VaultError::Keyring(format!("version {version} has a tag that is not its own")));
            }
            if version > 0 {
                let wrapped = k.wrapped.as_deref().ok_or_else(|| VaultError::Keyring(format!("version {version} has no key")))?;
                let key = crate::open(&self.root, &version_name(version), wrapped)
                    .map_err(|_| VaultError::Keyring(format!("version {version} does not open with this master key")))?;
                let bytes: [u8; 32] = key
                    .expose_secret()
                    .try_into()
                    .map_err(|_| VaultError::Keyring(format!("version {version} is not a 256-bit key")))?;
                v.keys.insert(version, Arc::new(MasterKey::from_bytes(bytes)));
            }
            v.active = v.active.max(version);
        }
        *self.versions.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
        Ok(())
    }

    /// A new version after the newest in `stored`, as the store keeps it: a random key sealed
    /// under the root key.
    pub fn new_version(&self, stored: &[StoredKey]) -> Result<StoredKey, VaultError> {
        let newest = stored.iter().map(|k| k.version).max().unwrap_or(0);
        let version = u32::try_from(newest + 1).map_err(|_| VaultError::Keyring("no version number left".into()))?;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
            .map_err(|_| VaultError::Keyring("no randomness".into()))?;
        let wrapped = seal(&self.root, &version_name(version), &Secret::new(bytes.to_vec()));
        Ok(StoredKey { version: version.into(), tag: tag(version), wrapped: Some(wrapped), created_at: airlock_store::keyring::created_now() })
    }

    /// Version 0 as the store records it when the first version is added.
    pub fn root_entry() -> StoredKey {
        StoredKey { version: 0, tag: tag(0), wrapped: None, created_at: airlock_store::keyring::created_now() }
    }

    fn key(&self, v: &Versions, version: u32) -> Option<Arc<MasterKey>> {
        if version == 0 {
            return None;
        }
        v.keys.get(&version).cloned()
    }

    /// Seals `secret` for `name` under the active version.
    pub fn seal(&self, name: &str, secret: &Secret) -> Vec<u8> {
        let v = self.current();
        match self.key(&v, v.active) {
            Some(k) => seal_under(&k, &tag(v.active), name, secret),
            None => seal(&self.root, name, secret),
        }
    }

    /// Opens a value sealed for `name` under any version this keyring holds.
    pub(crate) fn open(&self, name: &str, sealed: &[u8]) -> Result<Secret, OpenError> {
        let (version, header) = version_of(sealed).ok_or(OpenError::Decrypt)?;
        if version == 0 {
            return open_under(&self.root, header, name, sealed).map_err(|_| OpenError::Decrypt);
        }
        let v = self.current();
        let k = self.key(&v, version).ok_or(OpenError::UnknownVersion)?;
        open_under(&k, header, name, sealed).map_err(|_| OpenError::Decrypt)
    }

    /// `sealed` (for `name`) re-wrapped under the active version; `None` when it is under it
    /// already.
    pub(crate) fn rewrap(&self, name: &str, sealed: &[u8]) -> Result<Option<Vec<u8>>, OpenError> {
        let (version, header) = version_of(sealed).ok_or(OpenError::Decrypt)?;
        let v = self.current();
        if version == v.active {
            return Ok(None);
        }
        let old = if version == 0 { None } else { Some(self.key(&v, version).ok_or(OpenError::UnknownVersion)?) };
        let new = self.key(&v, v.active).ok_or(OpenError::UnknownVersion)?;
        let old: &MasterKey = old.as_deref().unwrap_or(&self.root);
        rewrap_under(old, header, &new, &tag(v.active), name, sealed).map(Some).map_err(|_| OpenError::Decrypt)
    }
}

/// Where a rotation stands, for progress and `key status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RotationStatus {
    /// The versions the store holds, oldest first (empty: only the root key, never rotated).
    pub versions: Vec<u32>,
    /// The version new values are sealed under.
    pub active: u32,
    /// Values still sealed under an older version.
    pub remaining: u64,
}

impl RotationStatus {
    /// True while older versions are still in the store.
    pub fn in_progress(&self) -> bool {
        self.versions.len() > 1
    }
}

/// What a finished rotation did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// The version every value is now sealed under.
    pub version: u32,
    /// Values re-wrapped by this run.
    pub rewrapped: u64,
    /// Versions deleted.
    pub retired: u64,
    /// Passes over the store (more than one when values were written under an old version
    /// while it ran).
    pub passes: u32,
}
