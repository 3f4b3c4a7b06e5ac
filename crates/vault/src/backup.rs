//! Backups of a SQLite store that restore: `airlock backup FILE` and `airlock restore FILE`.
//!
//! A backup file is one line of text, one line of JSON and the sealed payload:
//!
//! ```text
//! airlock-backup/1\n
//! {"format": "airlock-backup/1", "created_at_unix": ..., "audit": {"last_seq", "records",
//!  "checkpoints"}, "master_key": <the wrapped key document, or null for wrap = "file">}\n
//! <payload: seal(master, "airlock-backup/1\0" + hex(SHA-256(header line)), body)>
//! ```
//!
//! The body is `u64 BE len || store.db snapshot || u64 BE len || audit-signing.key`, sealed like
//! any secret (a fresh data key under the master key, AES-256-GCM) with the header's hash in the
//! associated data, so an edited header (a different audit head, another wrapped key) does not
//! open. The snapshot is taken online (`VACUUM INTO`: one read transaction). A passphrase- or
//! transit-wrapped master key travels in the header, still wrapped: restoring needs the
//! passphrase or the transit key, as starting the broker does. A raw key (`wrap = "file"`) is
//! never written into a backup: keep `master.key` elsewhere and give it to `restore`. Without
//! that key, or the means to unwrap it, a backup cannot be opened by anyone: that is the point,
//! and there is no other way back.
//!
//! Restoring writes a new data directory (never over an existing, non-empty one), opens the
//! store there and verifies its audit chain with the restored signing key; the restore is
//! refused, and the new directory removed, unless the chain verifies and ends at the recorded
//! head.

use crate::{open, seal, wrap, MasterKey, VaultError};
use airlock_core::config::{MasterKeyConfig, MasterKeyWrap, RemoteVaultConfig};
use airlock_core::Secret;
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// The first line of a backup file.
pub const MAGIC: &str = "airlock-backup/1";
const AUDIT_KEY_FILE: &str = "audit-signing.key";

/// What a backup recorded of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The last audit record's sequence number.
    pub last_seq: i64,
    /// Audit records.
    pub records: u64,
    /// The payload's size in bytes.
    pub bytes: u64,
}

fn bad(m: impl Into<String>) -> VaultError {
    VaultError::Backup(m.into())
}

fn sealing_name(header_line: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, header_line);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{MAGIC}\0{hex}")
}

/// Writes a backup of the SQLite store `store` (data directory `dir`) to `dest`, which must not
/// exist. The master key is `master`; `cfg` says how it is kept at rest.
pub async fn write(store: &Store, dir: &Path, master: &MasterKey, cfg: &MasterKeyConfig, dest: &Path) -> Result<BackupSummary, VaultError> {
    if dest.exists() {
        return Err(bad(format!("{} exists; a backup never replaces a file", dest.display())));
    }
    let key = AuditKey::load(dir)?;
    let report = store.verify_audit(&key.public_key()).await?;
    if !report.ok() {
        return Err(bad("the audit chain does not verify; run `airlock audit verify` (a backup of a broken chain would not restore)"));
    }
    let scratch = Scratch(tempfile_in(dest)?);
    let snap = scratch.0.join("store.db");
    store.snapshot(&snap).await?;
    let db = Zeroizing::new(std::fs::read(&snap).map_err(|e| bad(format!("reading the snapshot: {e}")))?);
    drop(scratch);
    let audit_key = Zeroizing::new(std::fs::read(dir.join(AUDIT_KEY_FILE)).map_err(|e| bad(format!("reading the audit key: {e}")))?);
    let wrapped = match cfg.wrap {
        MasterKeyWrap::File => Value::Null,
        _ => serde_json::from_slice::<Value>(&std::fs::read(dir.join("master.key")).map_err(|e| bad(e.to_string()))?)
            .map_err(|_| bad("master.key is not a wrapped key document"))?,
    };
    let header = json!({
        "format": MAGIC,
        "created_at_unix": unix_now(),
        "audit": {"last_seq": report.last_seq, "records": report.records, "checkpoints": report.checkpoints},
        "master_key": wrapped,
    });
    let header_line = serde_json::to_vec(&header).expect("JSON");
    let mut body = Zeroizing::new(Vec::with_capacity(db.len() + audit_key.len() + 16));
    body.extend_from_slice(&(db.len() as u64).to_be_bytes());
    body.extend_from_slice(&db);
    body.extend_from_slice(&(audit_key.len() as u64).to_be_bytes());
    body.extend_from_slice(&audit_key);
    let sealed = seal(master, &sealing_name(&header_line), &Secret::new(body.to_vec()));
    let mut out = Vec::with_capacity(MAGIC.len() + header_line.len() + sealed.len() + 2);
    out.extend_from_slice(MAGIC.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&header_line);
    out.push(b'\n');
    out.extend_from_slice(&sealed);
    airlock_store::write_private_file(dest, &out)?;
    Ok(BackupSummary { last_seq: report.last_seq, records: report.records, bytes: sealed.len() as u64 })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A scratch directory, removed when dropped (the plain snapshot never outlives the backup,
/// whether it succeeds or fails).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private scratch directory next to `dest`.
fn tempfile_in(dest: &Path) -> Result<std::path::PathBuf, VaultError> {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = format!(".airlock-backup-{}", std::process::id());
    let p = parent.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir(&p).map_err(|e| bad(format!("{}: {e}", p.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).map_err(|e| bad(e.to_string()))?;
    }
    Ok(p)
}

/// Restores the backup `file` into the new data directory `to`. The master key comes from the
/// backup's wrapped key, opened with the means of `cfg` (its passphrase source, its transit
/// vault), or, for a backup of a raw key, from `raw_key` (a 32-byte key file).
pub async fn restore(
    file: &Path,
    to: &Path,
    cfg: &MasterKeyConfig,
    vaults: &BTreeMap<String, RemoteVaultConfig>,
    raw_key: Option<&Path>,
) -> Result<BackupSummary, VaultError> {
    if to.exists() && std::fs::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(bad(format!("{} exists and is not empty; restore goes to a new data directory", to.display())));
    }
    let bytes = std::fs::read(file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
    let rest = bytes.strip_prefix(format!("{MAGIC}\n").as_bytes()).ok_or_else(|| bad("not an airlock backup (or another format version)"))?;
    let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(|| bad("the backup is truncated (no header)"))?;
    let (header_line, sealed) = (&rest[..nl], &rest[nl + 1..]);
    let header: Value = serde_json::from_slice(header_line).map_err(|_| bad("the backup's header is not JSON"))?;
    let last_seq = header["audit"]["last_seq"].as_i64().ok_or_else(|| bad("the header has no audit head"))?;
    let records = header["audit"]["records"].as_u64().unwrap_or(0);

    std::fs::create_dir_all(to).map_err(|e| bad(format!("{}: {e}", to.display())))?;
    let backup = Parsed { header_line, header: &header, sealed, last_seq };
    let keys = KeyMeans { cfg, vaults, raw_key };
    let result = restore_into(to, &backup, &keys).await;
    if result.is_err() {
        // Nothing half-restored is left to be mistaken for a data directory.
        let _ = std::fs::remove_dir_all(to);
    }
    result.map(|()| BackupSummary { last_seq, records, bytes: sealed.len() as u64 })
}

/// A backup file, read and split.
struct Parsed<'a> {
    header_line: &'a [u8],
    header: &'a Value,
    sealed: &'a [u8],
    last_seq: i64,
}

/// What opens the master key of a backup: the configured means, or a raw key file.
struct KeyMeans<'a> {
    cfg: &'a MasterKeyConfig,
    vaults: &'a BTreeMap<String, RemoteVaultConfig>,
    raw_key: Option<&'a Path>,
}

async fn restore_into(to: &Path, backup: &Parsed<'_>, keys: &KeyMeans<'_>) -> Result<(), VaultError> {
    let Parsed { header_line, header, sealed, last_seq } = *backup;
    let KeyMeans { cfg, vaults, raw_key } = *keys;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).map_err(|e| bad(e.to_string()))?;
    }
    let key_path = to.join("master.key");
    let master = match (&header["master_key"], raw_key) {
        (Value::Null, Some(raw)) => {
            let k = MasterKey::load(raw)?;
            airlock_store::write_private_file(&key_path, k.0.as_ref())?;
            k
        }
        (Value::Null, None) => return Err(bad("this backup holds no master key (wrap = \"file\"): give the key file with --master-key-file")),
        (doc, _) => {
            airlock_store::write_private_file(&key_path, &serde_json::to_vec_pretty(doc).expect("JSON"))?;
            let kind = wrap::current_wrap(&key_path)?;
            wrap::open_as(kind, cfg, vaults, &key_path).await?
        }
    };
    let body = open(&master, &sealing_name(header_line), sealed)
        .map_err(|_| bad("the backup does not open: altered, truncated, or another master key"))?;
    let b = body.expose_secret();
    let take = |at: usize| -> Result<(&[u8], usize), VaultError> {
        let len = b.get(at..at + 8).ok_or_else(|| bad("the backup body is cut"))?;
        let n = u64::from_be_bytes(len.try_into().expect("8 bytes")) as usize;
        let end = (at + 8).checked_add(n).filter(|e| *e <= b.len()).ok_or_else(|| bad("the backup body is cut"))?;
        Ok((&b[at + 8..end], end))
    };
    let (db, next) = take(0)?;
    let (audit_key, end) = take(next)?;
    if end != b.len() {
        return Err(bad("the backup body has trailing bytes"));
    }
    airlock_store::write_private_file(&to.join("store.db"), db)?;
    airlock_store::write_private_file(&to.join(AUDIT_KEY_FILE), audit_key)?;
    let store = Store::open(to).await?;
    let key = AuditKey::load(to)?;
    key.write_public(to)?;
    let report = store.verify_audit(&key.public_key()).await?;
    if !report.ok() {
        return Err(bad(format!("the restored audit chain does not verify: {:?}", report.first_bad)));
    }
    if report.last_seq != last_seq {
        return Err(bad(format!("the restored audit log ends at {} but the backup recorded {last_seq}", report.last_seq)));
    }
    Ok(())
}
