//! airlock's state store: agents (token hashes only) and their sub-agent grants, leases and
//! tasks, sealed secrets (ciphertext only), one-time shares (ciphertext and proof hashes only)
//! and the hash-chained, signed audit log, in one SQLite file in the data directory, or in a
//! PostgreSQL database that several replicas share (`store.url`).
//!
//! Nothing in this crate sees a plaintext secret: the vault seals before it stores.
#![forbid(unsafe_code)]

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod audit_export;
mod db;
pub mod keyring;
pub mod migrate;
pub mod leases;
pub mod oauth;
pub mod requests;
pub mod secrets;
pub mod shares;
pub mod stats;
mod writer;

pub use db::{ReaperTurn, Store, PG_SCHEMA_VERSION};

/// Store failures. Messages never contain a secret or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("store database error: {0}")]
    Db(#[from] sqlx::Error),
    /// An I/O error on a file of the data directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The requested record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The record exists already.
    #[error("already exists: {0}")]
    Conflict(String),
    /// Input that cannot be stored (an invalid name).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A key file is malformed.
    #[error("bad key material in {0}")]
    BadKey(String),
    /// The audit writer has stopped.
    #[error("the audit writer is not running")]
    AuditWriterGone,
    /// The store's writer could not open the store or commit a group: nothing of the group was
    /// written.
    #[error("store write failed: {0}")]
    Writer(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Writes `bytes` to `path`, creating it with mode 0600 and refusing to overwrite.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |e| StoreError::Io { path: path.display().to_string(), source: e };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}
