//! `[store]`: where the broker keeps its state.

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[store]`
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (SQLite store, master key, audit signing key). Relative to the config.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:5432/db`) holding the state instead of
    /// `store.db`, shared by every replica; the key files stay in `data_dir`. Keep the password
    /// out of the URL (`PGPASSWORD` or `~/.pgpass`).
    #[serde(default)]
    pub url: Option<String>,
    /// When a commit counts as done: `full` (default) fsyncs every commit group, so audit
    /// records survive a power loss; `normal` leaves the fsync to checkpoints, so they survive
    /// a process crash or kill -9 but not an OS crash.
    #[serde(default)]
    pub sync: SyncMode,
    /// How the master key is kept at rest (`[store.master_key]`).
    #[serde(default)]
    pub master_key: MasterKeyConfig,
}

/// How the master key file (`data_dir/master.key`) is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterKeyWrap {
    /// The raw key in a 0600 file: whoever reads the data directory has every secret.
    #[default]
    File,
    /// Wrapped under a key derived from a passphrase (Argon2id).
    Passphrase,
    /// Wrapped by an OpenBao/Vault transit key: unwrapping needs that server and its policy.
    Transit,
    /// Wrapped by an AWS KMS key: unwrapping needs `kms:Decrypt` on it.
    AwsKms,
    /// Wrapped by `systemd-creds` (the machine's TPM2 when it has one, else the host key in
    /// /var/lib/systemd): unwrapping needs this machine.
    SystemdCreds,
}

/// `[store.master_key]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterKeyConfig {
    /// The protection.
    #[serde(default)]
    pub wrap: MasterKeyWrap,
    /// `passphrase`: read it from this file (0600; a systemd credential, say). Absolute once
    /// checked.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// `passphrase`: read it from this open file descriptor (a pipe from a secrets manager).
    /// With neither, it is asked for on the terminal.
    #[serde(default)]
    pub passphrase_fd: Option<u32>,
    /// `transit`: the `[vaults.NAME]` whose transit engine wraps the key.
    #[serde(default)]
    pub vault: Option<String>,
    /// `transit`: the mount and key name, `transit/keys/NAME` → `transit/NAME` (default
    /// `transit/airlock-master`).
    #[serde(default)]
    pub transit_key: Option<String>,
    /// `aws_kms`: the key's id, ARN or alias (`alias/airlock-master`).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// `aws_kms`: its region.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// `aws_kms`: the endpoint, for a VPC endpoint or an emulator (default
    /// `https://kms.{region}.amazonaws.com`; plain http only on loopback).
    #[serde(default)]
    pub aws_endpoint: Option<String>,
    /// `aws_kms`: where the credentials are, `env:NAME` or `file:/path`, holding
    /// `{"access_key_id": ..., "secret_access_key": ...[, "session_token": ...]}`.
    #[serde(default)]
    pub aws_credentials: Option<String>,
}

impl MasterKeyConfig {
    /// The transit key as `(mount, name)`.
    pub fn transit_key(&self) -> (String, String) {
        let k = self.transit_key.as_deref().unwrap_or("transit/airlock-master");
        match k.rsplit_once('/') {
            Some((m, n)) => (m.to_owned(), n.to_owned()),
            None => ("transit".to_owned(), k.to_owned()),
        }
    }
}

/// Store durability, see [`StoreConfig::sync`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// fsync on every commit.
    #[default]
    Full,
    /// fsync at WAL checkpoints only.
    Normal,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { data_dir: default_data_dir(), url: None, sync: SyncMode::Full, master_key: MasterKeyConfig::default() }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show its host and database only.
        let url = self.url.as_deref().map(|u| match url::Url::parse(u) {
            Ok(p) => format!("{}://{}{}", p.scheme(), p.host_str().unwrap_or(""), p.path()),
            Err(_) => "[invalid]".into(),
        });
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("url", &url)
            .field("sync", &self.sync)
            .field("master_key", &self.master_key)
            .finish()
    }
}

impl StoreConfig {
    /// Checks the URL and the master key's protection (`vaults`: the `[vaults]` names), and
    /// makes the paths absolute.
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path, vaults: &[&str]) -> StoreConfig {
        if let Some(Err(m)) = self.url.as_deref().map(validate_store_url) {
            r.problem(&at.join("url"), ProblemCode::BadUrl, m);
        }
        let mut mk = self.master_key;
        let at_mk = at.key("master_key");
        let passphrase = mk.passphrase_file.is_some() || mk.passphrase_fd.is_some();
        let transit = mk.vault.is_some() || mk.transit_key.is_some();
        let kms = mk.kms_key_id.is_some() || mk.aws_region.is_some() || mk.aws_endpoint.is_some() || mk.aws_credentials.is_some();
        let wrap = mk.wrap;
        let misplaced = |on: bool, kind: MasterKeyWrap, what: &str, r: &mut Report<'_, '_>| {
            if on && wrap != kind {
                r.problem(&at_mk, ProblemCode::BadValue, what);
            }
        };
        misplaced(transit, MasterKeyWrap::Transit, "vault and transit_key are for wrap = \"transit\"", r);
        misplaced(passphrase, MasterKeyWrap::Passphrase, "passphrase_file and passphrase_fd are for wrap = \"passphrase\"", r);
        misplaced(kms, MasterKeyWrap::AwsKms, "kms_key_id, aws_region, aws_endpoint and aws_credentials are for wrap = \"aws_kms\"", r);
        match wrap {
            MasterKeyWrap::Passphrase if mk.passphrase_file.is_some() && mk.passphrase_fd.is_some() => {
                r.problem(&at_mk, ProblemCode::BadValue, "give passphrase_file or passphrase_fd, not both")
            }
            MasterKeyWrap::Transit => match mk.vault.as_deref() {
                None => r.problem(&at_mk.join("vault"), ProblemCode::MissingKey, "wrap = \"transit\" names the [vaults] entry that wraps the key"),
                Some(v) if !vaults.contains(&v) => {
                    r.problem(&at_mk.join("vault"), ProblemCode::UnknownVault, format!("'{v}' is not a [vaults] entry"))
                }
                Some(_) => {}
            },
            MasterKeyWrap::AwsKms => {
                for (name, v) in [("kms_key_id", &mk.kms_key_id), ("aws_region", &mk.aws_region), ("aws_credentials", &mk.aws_credentials)] {
                    if v.as_deref().is_none_or(str::is_empty) {
                        r.problem(&at_mk.join(name), ProblemCode::MissingKey, "wrap = \"aws_kms\" needs kms_key_id, aws_region and aws_credentials");
                    }
                }
                if let Some(c) = mk.aws_credentials.as_deref() {
                    if !(c.starts_with("env:") || c.starts_with("file:")) {
                        r.problem(&at_mk.join("aws_credentials"), ProblemCode::BadSecretRef, "env:NAME or file:/path (never the keys themselves)");
                    }
                }
                if let Some(e) = mk.aws_endpoint.as_deref() {
                    match url::Url::parse(e) {
                        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
                        Ok(u) if u.scheme() == "http" && super::shares::loopback(&u) => {}
                        _ => r.problem(&at_mk.join("aws_endpoint"), ProblemCode::InsecureTransport, "an https URL (plain http only on loopback)"),
                    }
                }
            }
            _ => {}
        }
        mk.passphrase_file = mk.passphrase_file.map(|p| base.join(p));
        StoreConfig { data_dir: base.join(self.data_dir), master_key: mk, ..self }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("airlock-data")
}

/// Checks `store.url`: a `postgres://` or `postgresql://` URL naming a host and a database.
pub fn validate_store_url(u: &str) -> Result<(), String> {
    let p = url::Url::parse(u).map_err(|_| "is not a URL (postgres://user@host:5432/database)".to_owned())?;
    if !matches!(p.scheme(), "postgres" | "postgresql") {
        return Err(format!("scheme {:?} is not supported: only postgres:// (the default store is the SQLite file in data_dir)", p.scheme()));
    }
    if p.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if p.path().trim_start_matches('/').is_empty() {
        return Err("names no database".into());
    }
    Ok(())
}
