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
        StoreConfig { data_dir: default_data_dir(), url: None, sync: SyncMode::Full }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show its host and database only.
        let url = self.url.as_deref().map(|u| match url::Url::parse(u) {
            Ok(p) => format!("{}://{}{}", p.scheme(), p.host_str().unwrap_or(""), p.path()),
            Err(_) => "[invalid]".into(),
        });
        f.debug_struct("StoreConfig").field("data_dir", &self.data_dir).field("url", &url).field("sync", &self.sync).finish()
    }
}

impl StoreConfig {
    /// Checks the URL and makes `data_dir` absolute.
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path) -> StoreConfig {
        if let Some(Err(m)) = self.url.as_deref().map(validate_store_url) {
            r.problem(&at.join("url"), ProblemCode::BadUrl, m);
        }
        StoreConfig { data_dir: base.join(self.data_dir), ..self }
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
