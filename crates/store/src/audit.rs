//! The audit log: one record per call, hash-chained, with signed checkpoints.
//!
//! # What a record's hash covers
//!
//! An `audit` row has the columns `seq`, `format`, `ts`, `agent`, `tool`, `decision`, `body`
//! (canonical JSON of [`AuditRecord`]: request id, handle, arguments, peer, code, ...),
//! `prev_hash` and `hash`. Its `hash` is SHA-256 over a length-prefixed encoding of *every other
//! column* in that fixed order ([`HASHED_COLUMNS`]; the encoding is written down in
//! `docs/audit-format.md`), and `prev_hash` is the hash of record `seq - 1` (32 zero
//! bytes before record 1). So an edit to any column of any row, a deleted, reordered or inserted
//! row shows up in [`Store::verify_audit`] at the first record it breaks, with a stable code
//! ([`Failure`]).
//!
//! # Old rows: versioned, not re-hashed
//!
//! Rows written before this format existed are **format 1** and are never re-hashed (re-hashing
//! them now would launder any tampering done before): they keep verifying under format 1's rule,
//! `SHA-256("airlock-audit-v1" || seq as u64 BE || prev_hash || body)`, and the columns that rule
//! left out (`ts`, `agent`, `tool`, `decision`) are checked against the same fields of the hashed
//! `body`, which the old writer copied them from. The migration that added the `format` column
//! gave every existing row format 1 (its default); the writer writes **format 2**
//! ([`FORMAT_CURRENT`]), the rule above. [`VerifyReport::legacy_records`] counts format-1 rows.
//! Changing a row's `format` changes the rule its hash is checked under, so it fails like any
//! other edit.
//!
//! # Checkpoints
//!
//! The writer commits records in groups (one fsync per group, invariant 7) and signs the last
//! hash of every group with Ed25519 in the same transaction, so the newest record is always
//! covered by a signed checkpoint. A format-2 checkpoint signs its `seq`, `hash` and `ts`
//! ([`checkpoint_message`]); format-1 checkpoints (older stores) signed `seq` and `hash` only.
//! `verify` detects a recomputed chain (its checkpoints no longer verify) and a truncated tail (a
//! checkpoint points past the end). A truncation back to an earlier checkpoint with the later
//! checkpoints deleted too needs an outside anchor: [`Store::audit_checkpoints`] exports the
//! signed checkpoints as JSON lines ([`ExportedCheckpoint`]) that anyone holding only the public
//! key can check ([`verify_checkpoint_file`]), and [`Store::verify_audit_anchored`] checks the
//! chain still holds every exported checkpoint.
//!
//! With several replicas on one PostgreSQL database there is still one chain: each replica
//! groups its records as above, and appends a group in one transaction that first takes an
//! advisory transaction lock (`pg_advisory_xact_lock`), then reads the head (the highest seq and
//! its hash) and inserts `seq+1..` linked to it, and a checkpoint signed with the audit key that
//! every replica shares. The lock serializes appends, so seq has no gap and no two records share
//! a predecessor (no fork); a group whose transaction fails is not written at all, and its calls
//! are refused (`audit-unavailable`), never answered as done.
//!
//! # Signing-key rotation
//!
//! [`AuditLog::rotate_key`] replaces the signing key with a hand-over record of its own group
//! ([`TOOL_KEY_ROTATED`], [`KeyHandover`]): the new key signs [`handover_message`] (the record's
//! seq and prev_hash and both keys), the old key signs the group's checkpoint, and every later
//! checkpoint is the new key's. The chain's current key is also kept in a one-row table
//! (`audit_signing_key`) that every appender reads in each group's transaction, so a process
//! that still holds the old key reloads the new one from the data directory or refuses the
//! group; it never signs with a retired key. Verification ([`Store::verify_audit`],
//! [`verify_checkpoint_file`]) follows the hand-overs from the original key, and accepts as the
//! trusted key any key of the sequence; an export carries the hand-overs as lines of
//! their own ([`ExportLine`]), so a file spans keys too.
//!
//! [`AuditRecord`] has no field that can hold a [`airlock_core::Secret`]; the broker scrubs the
//! arguments before it builds one.

use crate::db::{locks, with_pool, Backend, Dialect};
use crate::{Result, Store, StoreError};
// aws-lc, not ring, for the chain's signatures: its Ed25519 signs in a third of ring's time (the
// workspace manifest has the figures). Its SHA-256 is as fast as ring's (about 860 ns for a
// 1.4 KB record here); the chain's hashes come from it too, so that one library does its crypto.
use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use crate::writer::{Carry, Op, Writer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The allow/deny decision of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Policy allowed the call.
    Allow,
    /// The call was refused before execution.
    Deny,
}

/// One audit record. Never holds a secret: arguments are scrubbed before they get here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the call arrived (RFC 3339, UTC).
    pub ts: String,
    /// The request id returned to the caller.
    pub request_id: String,
    /// The calling agent's name (`-` when unauthenticated).
    pub agent: String,
    /// Parent names, nearest first.
    pub parent_chain: Vec<String>,
    /// The tool called.
    pub tool: String,
    /// The handle named, if it was a valid handle name.
    pub handle: Option<String>,
    /// The arguments, scrubbed; `query`/`path_or_url` and friends as the agent wrote them.
    pub arguments: serde_json::Value,
    /// Allow or deny.
    pub decision: Decision,
    /// The error code, when the call failed or was refused.
    pub code: Option<String>,
    /// `ok` or `error`.
    pub outcome: String,
    /// Size of the JSON result returned.
    pub result_bytes: u64,
    /// Number of redactions the scrubber made in the result.
    pub redactions: u64,
    /// Wall time of the call in microseconds.
    pub duration_us: u64,
    /// Ids of the policies that decided.
    pub policies: Vec<String>,
    /// The approval this record belongs to: the request (`approval-required`), the decision and
    /// the execution of an approved call carry the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The OS process that made the call over the broker's Unix socket (`SO_PEERCRED`): who ran
    /// the thin client, next to the agent its token names. Absent for HTTP callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<airlock_core::Peer>,
    /// How the executor confined the call, as it declared it in the result (run_command's
    /// `sandbox`: the namespaces, the limits that applied, landlock and seccomp, or
    /// `insecure_no_sandbox`). Never argument or result data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<serde_json::Value>,
    /// Who vouched for the agent, when it signed in with a token of a trusted issuer (T30):
    /// the issuer's name and the token's subject. Absent for airlock's own tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AuditIdentity>,
    /// Only on the record [`AuditLog::rotate_key`] writes (tool [`TOOL_KEY_ROTATED`]): the
    /// signing key it retires, the key that signs from the next group on, and the new key's
    /// signature binding the two to this place in the chain ([`handover_message`]). Absent on
    /// every other record, so older records hash as before; never set from a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_handover: Option<KeyHandover>,
}

/// The tool name of the hand-over record that [`AuditLog::rotate_key`] appends.
pub const TOOL_KEY_ROTATED: &str = "audit_key_rotated";

/// A signing-key hand-over, as a hand-over record's body holds it (`key_handover`): all hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyHandover {
    /// The public key that signed checkpoints up to and including this record's (32 bytes).
    pub previous: String,
    /// The public key that signs every checkpoint after this record (32 bytes).
    pub next: String,
    /// `next`'s Ed25519 signature over [`handover_message`] of this record's `seq` and
    /// `prev_hash` and the two keys (64 bytes).
    pub signature: String,
}

/// A hand-over, decoded and checked for shape (not yet for its signature).
struct Handover {
    previous: Vec<u8>,
    next: Vec<u8>,
    signature: Vec<u8>,
}

impl KeyHandover {
    /// The keys and the signature as bytes; `None` unless they are 32, 32 and 64 bytes of hex.
    fn decode(&self) -> Option<Handover> {
        let previous = hex::decode(&self.previous).ok().filter(|k| k.len() == 32)?;
        let next = hex::decode(&self.next).ok().filter(|k| k.len() == 32)?;
        let signature = hex::decode(&self.signature).ok().filter(|s| s.len() == 64)?;
        Some(Handover { previous, next, signature })
    }
}

/// The message the new key signs in a hand-over: the canonical encoding (see [`Field`]) of the
/// hand-over record's `seq`, the `prev_hash` it links to, and the previous and next public keys
/// under `airlock-audit-key-handover-v1`. Binding `seq` and `prev_hash` fixes the signature to
/// one place in one chain (it cannot be replayed elsewhere) and makes the new key vouch for
/// every record before the hand-over.
pub fn handover_message(seq: i64, prev_hash: &[u8], previous: &[u8], next: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(192);
    encode(
        &mut m,
        "airlock-audit-key-handover-v1",
        &[("seq", Field::Int(seq)), ("prev_hash", Field::Bytes(prev_hash)), ("previous", Field::Bytes(previous)), ("next", Field::Bytes(next))],
    );
    m
}

/// The issuer and subject of the token an agent signed in with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditIdentity {
    /// The issuer's name (`[issuers.NAME]`).
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
}

const GENESIS: [u8; 32] = [0u8; 32];
const MAX_BATCH: usize = 512;

/// Format 1: rows and checkpoints written before the record format was versioned. A row's hash
/// covers `seq`, `prev_hash` and `body`; a checkpoint signs `seq` and `hash`.
pub const FORMAT_LEGACY: i64 = 1;
/// Format 2, what the writer writes: a row's hash covers every stored column
/// ([`HASHED_COLUMNS`]); a checkpoint signs `seq`, `hash` and `ts`.
pub const FORMAT_CURRENT: i64 = 2;

/// The columns of the `audit` table a format-2 hash covers, in the order they are encoded: every
/// stored column but `hash` itself. A migration that adds a column to `audit` must add it here
/// and to [`AuditRow::fields`] (a test compares this list with the table's schema).
pub const HASHED_COLUMNS: [&str; 8] = ["seq", "format", "ts", "agent", "tool", "decision", "body", "prev_hash"];

/// One value in the canonical encoding of named fields under a domain string:
/// `u32 BE len(domain) || domain || u32 BE count || fields`, each field
/// `u32 BE len(name) || name || type byte || u64 BE len(value) || value` (docs/audit-format.md).
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// A 64-bit integer: type byte 1, 8 bytes big-endian two's complement.
    Int(i64),
    /// UTF-8 text: type byte 2, its bytes.
    Text(&'a str),
    /// Raw bytes: type byte 3.
    Bytes(&'a [u8]),
}

/// Where [`encode`] writes: a hash context or a message buffer.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for digest::Context {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// The canonical, unambiguous encoding of named fields under a domain string:
/// `u32 BE len(domain) || domain || u32 BE count || fields`, each field
/// `u32 BE len(name) || name || type byte || u64 BE len(value) || value` (see [`Field`]).
/// Every length is explicit, so no two different field lists encode to the same bytes.
fn encode(out: &mut impl Sink, domain: &str, fields: &[(&str, Field<'_>)]) {
    out.put(&(domain.len() as u32).to_be_bytes());
    out.put(domain.as_bytes());
    out.put(&(fields.len() as u32).to_be_bytes());
    for (name, value) in fields {
        out.put(&(name.len() as u32).to_be_bytes());
        out.put(name.as_bytes());
        let int;
        let (tag, bytes): (u8, &[u8]) = match value {
            Field::Int(n) => {
                int = n.to_be_bytes();
                (1, &int)
            }
            Field::Text(t) => (2, t.as_bytes()),
            Field::Bytes(b) => (3, b),
        };
        out.put(&[tag]);
        out.put(&(bytes.len() as u64).to_be_bytes());
        out.put(bytes);
    }
}

/// The stored columns of one `audit` row, all but its `hash`: what a format-2 hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The sequence number, 1, 2, ... with no gap.
    pub seq: i64,
    /// [`FORMAT_LEGACY`] or [`FORMAT_CURRENT`].
    pub format: i64,
    /// When the call arrived (the record's `ts`).
    pub ts: String,
    /// The calling agent's name.
    pub agent: String,
    /// The tool called.
    pub tool: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// The canonical JSON of the [`AuditRecord`].
    pub body: String,
    /// The hash of the record before (32 zero bytes before record 1).
    pub prev_hash: Vec<u8>,
}

impl AuditRow {
    /// The row of `rec` at `seq` after `prev_hash`, in the current format.
    fn new(seq: i64, rec: &AuditRecord, prev_hash: Vec<u8>) -> AuditRow {
        AuditRow {
            seq,
            format: FORMAT_CURRENT,
            ts: rec.ts.clone(),
            agent: rec.agent.clone(),
            tool: rec.tool.clone(),
            decision: if rec.decision == Decision::Allow { "allow" } else { "deny" }.to_owned(),
            body: serde_json::to_string(rec).expect("audit record serializes"),
            prev_hash,
        }
    }

    /// The hashed columns, named, in [`HASHED_COLUMNS`] order.
    pub fn fields(&self) -> [(&'static str, Field<'_>); 8] {
        [
            ("seq", Field::Int(self.seq)),
            ("format", Field::Int(self.format)),
            ("ts", Field::Text(&self.ts)),
            ("agent", Field::Text(&self.agent)),
            ("tool", Field::Text(&self.tool)),
            ("decision", Field::Text(&self.decision)),
            ("body", Field::Text(&self.body)),
            ("prev_hash", Field::Bytes(&self.prev_hash)),
        ]
    }

    /// The hash this row must carry under the rule of its `format`; `None` for a format this
    /// build does not know.
    pub fn expected_hash(&self) -> Option<Vec<u8>> {
        match self.format {
            FORMAT_LEGACY => {
                let mut ctx = digest::Context::new(&digest::SHA256);
                ctx.update(b"airlock-audit-v1");
                ctx.update(&(self.seq as u64).to_be_bytes());
                ctx.update(&self.prev_hash);
                ctx.update(self.body.as_bytes());
                Some(ctx.finish().as_ref().to_vec())
            }
            FORMAT_CURRENT => {
                let mut ctx = digest::Context::new(&digest::SHA256);
                encode(&mut ctx, "airlock-audit-v2", &self.fields());
                Some(ctx.finish().as_ref().to_vec())
            }
            _ => None,
        }
    }

    /// For a format-1 row: the first of the columns its hash does not cover (`ts`, `agent`,
    /// `tool`, `decision`) that differs from the same field of its (hashed) body.
    fn legacy_mismatch(&self) -> Option<&'static str> {
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&self.body) else {
            return Some("body");
        };
        [("ts", &self.ts), ("agent", &self.agent), ("tool", &self.tool), ("decision", &self.decision)]
            .into_iter()
            .find(|(name, column)| body.get(name).and_then(serde_json::Value::as_str) != Some(column.as_str()))
            .map(|(name, _)| name)
    }
}

/// The message a checkpoint of `format` signs: for format 2 the canonical encoding (see
/// [`Field`]) of `seq`, `hash` and `ts` under `airlock-audit-checkpoint-v2`; for format 1
/// `"airlock-audit-checkpoint-v1" || seq as u64 BE || hash` (its `ts` is not signed). `None` for
/// an unknown format.
pub fn checkpoint_message(format: i64, seq: i64, hash: &[u8], ts: &str) -> Option<Vec<u8>> {
    match format {
        FORMAT_LEGACY => {
            let mut m = b"airlock-audit-checkpoint-v1".to_vec();
            m.extend_from_slice(&(seq as u64).to_be_bytes());
            m.extend_from_slice(hash);
            Some(m)
        }
        FORMAT_CURRENT => {
            let mut m = Vec::with_capacity(128);
            encode(&mut m, "airlock-audit-checkpoint-v2", &[("seq", Field::Int(seq)), ("hash", Field::Bytes(hash)), ("ts", Field::Text(ts))]);
            Some(m)
        }
        _ => None,
    }
}

/// The Ed25519 key that signs checkpoints, kept in the data directory (mode 0600). It remembers
/// the directory it came from, so that an appender that finds the chain signed by another key
/// (rotated by another process, [`AuditLog::rotate_key`]) reloads it from there.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    dir: PathBuf,
    /// For a key made by [`AuditKey::stage`]: the file it waits in until its hand-over commits.
    staged: Option<PathBuf>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey(public={})", hex::encode(self.pair.public_key().as_ref()))
    }
}

const KEY_FILE: &str = "audit-signing.key";
const PUB_FILE: &str = "audit-signing.pub";
/// A staged key's file is `audit-signing.key.next-` followed by its public key in hex: named by
/// its key, so that two rotations started at once never take each other's file.
const STAGED_PREFIX: &str = "audit-signing.key.next-";

impl AuditKey {
    /// Creates a new key pair in `dir`; refuses to overwrite.
    pub fn create(dir: &Path) -> Result<AuditKey> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| StoreError::BadKey("new audit key".into()))?;
        crate::write_private_file(&dir.join(KEY_FILE), pkcs8.as_ref())?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| StoreError::BadKey(KEY_FILE.into()))?;
        let pub_hex = hex::encode(pair.public_key().as_ref());
        std::fs::write(dir.join(PUB_FILE), format!("{pub_hex}\n"))
            .map_err(|e| StoreError::Io { path: dir.join(PUB_FILE).display().to_string(), source: e })?;
        Ok(AuditKey { pair, dir: dir.to_path_buf(), staged: None })
    }

    /// A new key pair for [`AuditLog::rotate_key`], written (mode 0600, fsynced) to
    /// `audit-signing.key.next-<public key hex>` in `dir`, where it waits until its hand-over
    /// is committed; only then does it become `audit-signing.key`. Writing it first means that
    /// the chain never names a key that exists nowhere on disk.
    pub fn stage(dir: &Path) -> Result<AuditKey> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| StoreError::BadKey("new audit key".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| StoreError::BadKey("new audit key".into()))?;
        let file = dir.join(format!("{STAGED_PREFIX}{}", hex::encode(pair.public_key().as_ref())));
        crate::write_private_file(&file, pkcs8.as_ref())?;
        sync_dir(dir)?;
        Ok(AuditKey { pair, dir: dir.to_path_buf(), staged: Some(file) })
    }

    /// Writes the public key file (`audit-signing.pub`, hex) into `dir`, as [`AuditKey::create`]
    /// does (a restored data directory gets it from the restored key).
    pub fn write_public(&self, dir: &Path) -> Result<()> {
        let pub_hex = hex::encode(self.pair.public_key().as_ref());
        std::fs::write(dir.join(PUB_FILE), format!("{pub_hex}\n"))
            .map_err(|e| StoreError::Io { path: dir.join(PUB_FILE).display().to_string(), source: e })
    }

    /// Loads the key pair from `dir`.
    pub fn load(dir: &Path) -> Result<AuditKey> {
        AuditKey::load_file(dir, &dir.join(KEY_FILE))
    }

    fn load_file(dir: &Path, p: &Path) -> Result<AuditKey> {
        let bytes = std::fs::read(p).map_err(|e| StoreError::Io { path: p.display().to_string(), source: e })?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| StoreError::BadKey(p.display().to_string()))?;
        Ok(AuditKey { pair, dir: dir.to_path_buf(), staged: None })
    }

    /// Makes `audit-signing.key` (and `audit-signing.pub`) in `dir` hold the key whose public
    /// half is `public`, the chain's current signing key, and loads it: as it is when it already
    /// does; else from the staged file of that key ([`AuditKey::stage`]), left there by a
    /// rotation whose hand-over committed but which did not get to rename it (killed, or another
    /// process of this data directory got here first). The public file is replaced first, the
    /// key second, each atomically (a temporary file renamed over it); see
    /// [`AuditLog::rotate_key`] for why that order. [`StoreError::BadKey`] when neither file
    /// holds that key: this data directory has no key the chain accepts now.
    pub fn settle(dir: &Path, public: &[u8]) -> Result<AuditKey> {
        let key_file = dir.join(KEY_FILE);
        let staged = dir.join(format!("{STAGED_PREFIX}{}", hex::encode(public)));
        // Twice: a rename lost to another process that was settling at the same moment finds
        // the key in place on the second look.
        for _ in 0..2 {
            if let Ok(k) = AuditKey::load(dir) {
                if k.public() == public {
                    if AuditKey::load_public(dir).ok().as_deref() != Some(public) {
                        replace_file(&dir.join(PUB_FILE), format!("{}\n", hex::encode(public)).as_bytes())?;
                        sync_dir(dir)?;
                    }
                    return Ok(k);
                }
            }
            let Ok(k) = AuditKey::load_file(dir, &staged) else { continue };
            if k.public() != public {
                return Err(StoreError::BadKey(format!("{} does not hold the key its name says", staged.display())));
            }
            replace_file(&dir.join(PUB_FILE), format!("{}\n", hex::encode(public)).as_bytes())?;
            match std::fs::rename(&staged, &key_file) {
                Ok(()) => {
                    sync_dir(dir)?;
                    return Ok(k);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io { path: staged.display().to_string(), source: e }),
            }
        }
        Err(StoreError::BadKey(format!(
            "{}: not the audit chain's current signing key {} (the key was rotated, and neither this file nor {} holds the new one)",
            key_file.display(),
            hex::encode(public),
            staged.display()
        )))
    }

    /// The public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.public().to_vec()
    }

    fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The data directory the key was loaded from (or created or staged in).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the public key file of `dir` (`audit-signing.pub`, hex).
    pub fn load_public(dir: &Path) -> Result<Vec<u8>> {
        AuditKey::load_public_file(&dir.join(PUB_FILE))
    }

    /// Reads a public key file: 64 hex digits (as `audit-signing.pub` and `airlock audit
    /// public-key` write it), surrounding whitespace ignored.
    pub fn load_public_file(path: &Path) -> Result<Vec<u8>> {
        let text = std::fs::read_to_string(path).map_err(|e| StoreError::Io { path: path.display().to_string(), source: e })?;
        AuditKey::parse_public(&text).ok_or_else(|| StoreError::BadKey(path.display().to_string()))
    }

    /// A public key from its hex text; `None` unless it is 32 bytes of hex.
    pub fn parse_public(text: &str) -> Option<Vec<u8>> {
        hex::decode(text.trim()).ok().filter(|k| k.len() == 32)
    }

    /// A current-format checkpoint of record `seq` with hash `hash`: (its time, its signature).
    fn sign_checkpoint(&self, seq: i64, hash: &[u8]) -> (String, Vec<u8>) {
        let ts = crate::db::now();
        let msg = checkpoint_message(FORMAT_CURRENT, seq, hash, &ts).expect("the current format is known");
        (ts, self.pair.sign(&msg).as_ref().to_vec())
    }
}

/// Writes `bytes` to the (public) file `path` atomically: a temporary file in the same
/// directory (named at random, so two processes replacing one file never share it), fsynced,
/// renamed over `path`. A kill before the rename leaves `path` as it was (and a stray temporary
/// file).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    let io = |e| StoreError::Io { path: tmp.display().to_string(), source: e };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::Io { path: path.display().to_string(), source: e }
    })
}

/// Fsyncs the directory `dir`, so that a file created or renamed in it survives a power loss.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::Io { path: dir.display().to_string(), source: e })
}

/// The key an [`AuditLog`] signs with, shared by its appenders and replaced when the chain's
/// current key (the `audit_signing_key` row) says it was rotated.
struct Signer {
    key: std::sync::RwLock<Arc<AuditKey>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?})", self.current())
    }
}

impl Signer {
    fn new(key: AuditKey) -> Arc<Signer> {
        Arc::new(Signer { key: std::sync::RwLock::new(Arc::new(key)) })
    }

    fn current(&self) -> Arc<AuditKey> {
        Arc::clone(&self.key.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, key: AuditKey) -> Arc<AuditKey> {
        let key = Arc::new(key);
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&key);
        key
    }

    /// The key to sign a group's checkpoint with, given the chain's current key as read in the
    /// group's transaction (`None` before the first rotation: any key signs, as before
    /// rotations existed). When the chain names another key than ours, the key was rotated
    /// (by another process, or our own rotation is being finished): reload it from the data
    /// directory ([`AuditKey::settle`]); an error when that does not give the chain's key either,
    /// and the group is refused rather than signed with a retired key.
    fn for_group(&self, chain: Option<&[u8]>) -> Result<Arc<AuditKey>> {
        let key = self.current();
        match chain {
            Some(public) if public != key.public() => {
                let fresh = AuditKey::settle(key.dir(), public)?;
                tracing::info!(public = %hex::encode(public), "the audit signing key was rotated; signing with the new key");
                Ok(self.set(fresh))
            }
            _ => Ok(key),
        }
    }
}

/// The rows of `batch` appended after the head `(seq, hash)`, each with its hash.
fn chain_rows(head: (i64, Vec<u8>), batch: &[Pending]) -> Vec<(AuditRow, Vec<u8>)> {
    let (mut seq, mut prev) = head;
    let mut rows = Vec::with_capacity(batch.len());
    for (rec, _) in batch {
        seq += 1;
        let row = AuditRow::new(seq, rec, prev);
        let hash = row.expected_hash().expect("the current format is known");
        prev = hash.clone();
        rows.push((row, hash));
    }
    rows
}

type Pending = (AuditRecord, oneshot::Sender<Result<i64>>);

/// The head of the chain (its last seq and hash; NULL when it is empty) and the chain's current
/// signing key (NULL before the first rotation), in one statement: what an appender reads, under
/// the append lock, before it writes a group.
const HEAD_AND_KEY: &str = "SELECT (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1), (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), \
     (SELECT public FROM audit_signing_key WHERE id = 1)";
/// The chain's current signing key, on its own (SQLite's appender reads the head apart, once a group).
const CURRENT_KEY: &str = "SELECT public FROM audit_signing_key WHERE id = 1";
const INSERT_ROW: &str = "INSERT INTO audit (seq, format, ts, agent, tool, decision, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
const UPSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints (seq, hash, signature, ts, format) VALUES (?, ?, ?, ?, ?) \
     ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, signature = excluded.signature, ts = excluded.ts, format = excluded.format";
const SET_CURRENT_KEY: &str = "INSERT INTO audit_signing_key (id, public, since_seq) VALUES (1, ?, ?) \
     ON CONFLICT (id) DO UPDATE SET public = excluded.public, since_seq = excluded.since_seq";

/// The audit writer: append returns once the record is committed (with the store's sync mode:
/// fsynced for `full`), in a group with whatever else was being committed at the time (one
/// transaction, one fsync and one signed checkpoint per group).
///
/// On SQLite a record is an operation of the store's writer ([`crate::writer`]): written on the
/// caller's own thread when nothing else is being written, grouped with others when it is. On
/// PostgreSQL a task on the current Tokio runtime groups the records.
///
/// Each group reads the chain's current signing key (the one-row table `audit_signing_key`,
/// written by [`AuditLog::rotate_key`]) in its transaction, next to the head, and signs its
/// checkpoint only with that key: a log whose key was rotated by another process reloads it
/// from the data directory ([`AuditKey::settle`]), or refuses the group.
#[derive(Clone, Debug)]
pub struct AuditLog {
    to: Appender,
    store: Store,
    signer: Arc<Signer>,
    /// Whether the last append failed (cleared by the next one that succeeds).
    failing: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone, Debug)]
enum Appender {
    Sqlite(Arc<Writer>),
    Postgres(mpsc::Sender<Pending>),
}

/// What [`AuditLog::rotate_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The hand-over record: its checkpoint is signed by the previous key, every later one by
    /// the next.
    pub seq: i64,
    /// The retired public key.
    pub previous: Vec<u8>,
    /// The public key that signs from now on.
    pub next: Vec<u8>,
}

impl AuditLog {
    /// Starts the audit log of `store`, signing its checkpoints with `key`: on PostgreSQL a
    /// group-commit task on the current Tokio runtime.
    pub fn start(store: Store, key: AuditKey) -> AuditLog {
        let signer = Signer::new(key);
        if let Backend::Postgres(pool) = &store.backend {
            let (tx, rx) = mpsc::channel::<Pending>(8192);
            tokio::spawn(pg_writer(pool.clone(), Arc::clone(&signer), rx, store.group_stats_arc()));
            return AuditLog { to: Appender::Postgres(tx), store, signer, failing: Arc::default() };
        }
        let writer = Arc::clone(store.writer().expect("a SQLite store has a writer"));
        AuditLog { to: Appender::Sqlite(writer), store, signer, failing: Arc::default() }
    }

    /// True when the last append failed (a full disk, the store unreachable) and none has
    /// succeeded since: the broker then writes an intent record before every call, so that a
    /// call whose record cannot be kept is refused before it runs, not after.
    pub fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends a record; resolves to its sequence number once it is committed.
    pub async fn append(&self, record: AuditRecord) -> Result<i64> {
        let (done, wait) = oneshot::channel();
        match &self.to {
            Appender::Sqlite(writer) => {
                // The row's columns but its place in the chain, built before the write turn.
                let row = AuditRow::new(0, &record, Vec::new());
                writer.submit(Box::new(Append { row, signer: Arc::clone(&self.signer), seq: 0, done })).await;
            }
            Appender::Postgres(tx) => {
                // Boxed: the send holds a whole record, which would otherwise make every
                // append's future (SQLite's too) that much larger.
                if Box::pin(tx.send((record, done))).await.is_err() {
                    self.failing.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(StoreError::AuditWriterGone);
                }
            }
        }
        let r = wait.await.map_err(|_| StoreError::AuditWriterGone).and_then(|r| r);
        self.failing.store(r.is_err(), std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// The public key this log signs with now.
    pub fn public_key(&self) -> Vec<u8> {
        self.signer.current().public_key()
    }

    /// Rotates the signing key to `next`, a key made by [`AuditKey::stage`] in this log's data
    /// directory, with a signed hand-over, and returns where it is in the chain.
    ///
    /// One transaction, under the append lock (SQLite's write lock, PostgreSQL's advisory lock),
    /// so it is a group of its own: it appends the hand-over record ([`TOOL_KEY_ROTATED`], with
    /// [`KeyHandover`]: the previous and the next public key and `next`'s signature over
    /// [`handover_message`]), its checkpoint signed by the *previous* key, and sets the chain's
    /// current key (`audit_signing_key`) to `next`. So the old key vouches for the new one (its
    /// checkpoint covers the record naming it) and the new key vouches for the old one and for
    /// the chain up to here (its signature binds `seq` and `prev_hash`). Every group after it,
    /// in any process, reads the new current key in its own transaction and signs with it, or
    /// is refused.
    ///
    /// The files: the new key waits in `audit-signing.key.next-<hex>` (written and fsynced by
    /// [`AuditKey::stage`], before anything else); after the commit, `audit-signing.pub` is
    /// replaced, then the staged file is renamed over `audit-signing.key` ([`AuditKey::settle`]).
    /// What a `kill -9` at each point leaves:
    ///
    /// - before the staged file is durable: nothing changed;
    /// - after it, before the commit: the chain still names the old key, which keeps signing;
    ///   the staged file names a key the chain never will, and is left behind, unused (remove
    ///   it by hand; nothing reads it);
    /// - after the commit, before the public file is replaced: the chain names the new key,
    ///   whose only copy is the staged file. No checkpoint is signed with the old key: the next
    ///   group of any process of this data directory (the broker after a restart, another
    ///   `rotate-key`) finds the chain's key differs from its own, and [`AuditKey::settle`]
    ///   finishes the renames before it signs. `audit verify` meanwhile trusts the old
    ///   `audit-signing.pub`, which verifies across the hand-over (the original key is in the
    ///   chain);
    /// - after the public file, before the key is renamed: as above, and `audit verify` already
    ///   trusts the new key;
    /// - after the rename: done.
    ///
    /// A rotation whose transaction fails leaves the staged file too (the commit might have
    /// happened without its answer reaching here: removing the file could lose the key the
    /// chain names). Replicas in other data directories (PostgreSQL) need the new
    /// `audit-signing.key` copied in: until then their groups are refused, never signed with the
    /// retired key.
    pub async fn rotate_key(&self, next: AuditKey) -> Result<KeyRotation> {
        let Some(staged) = next.staged.clone() else {
            return Err(StoreError::Invalid("a new audit key is staged (AuditKey::stage) before it is rotated in".into()));
        };
        if next.dir != self.signer.current().dir {
            return Err(StoreError::Invalid("the new audit key is staged in another data directory than the log's key".into()));
        }
        let rotation = handover(&self.store, &self.signer, &next).await?;
        // Committed. The files follow, under the append lock again: every rename of a staged
        // key over audit-signing.key happens under it (here, or in an appender's group), to the
        // key the chain names at that moment, so two rotations at once cannot leave the file
        // holding a key the chain has already moved past.
        if let Err(e) = settle_locked(&self.store, &self.signer).await {
            // The next group of any process finishes the renames.
            tracing::error!(seq = rotation.seq, staged = %staged.display(), error = %e, "the audit key hand-over is committed but the key files were not replaced");
            return Err(e);
        }
        Ok(rotation)
    }
}

/// Opens a transaction holding the append lock (SQLite's write lock, PostgreSQL's advisory
/// lock) on `$p` of dialect `$d`.
macro_rules! begin_append {
    ($p:expr, $d:expr) => {{
        let mut tx = if $d == Dialect::Postgres { $p.begin().await? } else { $p.begin_with("BEGIN IMMEDIATE").await? };
        if $d == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::AUDIT).execute(&mut *tx).await?;
        }
        tx
    }};
}

/// Under the append lock and without writing anything: brings `signer` (and the key files of its
/// data directory, [`AuditKey::settle`]) to the chain's current key.
async fn settle_locked(store: &Store, signer: &Signer) -> Result<()> {
    with_pool!(store, |p, d| {
        let mut tx = begin_append!(p, d);
        let chain: Option<Vec<u8>> = sqlx::query_scalar(CURRENT_KEY).fetch_optional(&mut *tx).await?;
        let settled = signer.for_group(chain.as_deref());
        tx.rollback().await?;
        settled.map(drop)
    })
}

/// The hand-over record at `seq` after `prev_hash`, retiring `old` for `next`.
fn handover_record(seq: i64, prev_hash: &[u8], old: &AuditKey, next: &AuditKey) -> AuditRecord {
    let signature = next.pair.sign(&handover_message(seq, prev_hash, old.public(), next.public()));
    AuditRecord {
        ts: crate::db::now(),
        request_id: format!("audit-key-{}", hex::encode(rand::random::<[u8; 8]>())),
        agent: "operator".into(),
        parent_chain: vec![],
        tool: TOOL_KEY_ROTATED.into(),
        handle: None,
        arguments: serde_json::Value::Object(serde_json::Map::new()),
        decision: Decision::Allow,
        code: None,
        outcome: "ok".into(),
        result_bytes: 0,
        redactions: 0,
        duration_us: 0,
        policies: vec![],
        approval: None,
        peer: None,
        sandbox: None,
        identity: None,
        key_handover: Some(KeyHandover {
            previous: hex::encode(old.public()),
            next: hex::encode(next.public()),
            signature: hex::encode(signature.as_ref()),
        }),
    }
}

/// The hand-over transaction of [`AuditLog::rotate_key`], on either engine: from the chain's
/// current key (the signer's, reloaded under the lock when another process rotated it) to
/// `next`.
async fn handover(store: &Store, signer: &Signer, next: &AuditKey) -> Result<KeyRotation> {
    with_pool!(store, |p, d| {
        let mut tx = begin_append!(p, d);
        let (head, head_hash, chain): (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>) =
            sqlx::query_as(HEAD_AND_KEY).fetch_one(&mut *tx).await?;
        let old = signer.for_group(chain.as_deref())?;
        if old.public() == next.public() {
            return Err(StoreError::Invalid("the new audit key is the current one".into()));
        }
        let seq = head.unwrap_or(0) + 1;
        let prev = head_hash.unwrap_or_else(|| GENESIS.to_vec());
        let row = AuditRow::new(seq, &handover_record(seq, &prev, &old, next), prev);
        let hash = row.expected_hash().expect("the current format is known");
        sqlx::query(&d.sql(INSERT_ROW))
            .bind(row.seq)
            .bind(row.format)
            .bind(&row.ts)
            .bind(&row.agent)
            .bind(&row.tool)
            .bind(&row.decision)
            .bind(&row.body)
            .bind(&row.prev_hash)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        // Signed by the key it retires.
        let (ts, sig) = old.sign_checkpoint(seq, &hash);
        sqlx::query(&d.sql(UPSERT_CHECKPOINT)).bind(seq).bind(&hash).bind(&sig).bind(&ts).bind(FORMAT_CURRENT).execute(&mut *tx).await?;
        sqlx::query(&d.sql(SET_CURRENT_KEY)).bind(next.public()).bind(seq).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(KeyRotation { seq, previous: old.public_key(), next: next.public_key() })
    })
}

/// One record for the SQLite writer: linked to the chain's head (read from the store by the
/// group's first record, carried from one record to the next after it), inserted, and the
/// group's checkpoint left to sign the last record of the group.
struct Append {
    row: AuditRow,
    signer: Arc<Signer>,
    seq: i64,
    done: oneshot::Sender<Result<i64>>,
}

impl Op for Append {
    fn apply(&mut self, c: &rusqlite::Connection, carry: &mut Carry) -> Result<()> {
        let head = match carry.chain_head.take() {
            Some(head) => Some(head),
            None => c.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional()?,
        };
        let (seq, prev) = head.map(|(s, h)| (s + 1, h)).unwrap_or((1, GENESIS.to_vec()));
        let r = &mut self.row;
        r.seq = seq;
        r.prev_hash = prev;
        let hash = r.expected_hash().expect("the current format is known");
        c.prepare_cached(INSERT_ROW)?
            .execute(rusqlite::params![r.seq, r.format, r.ts, r.agent, r.tool, r.decision, r.body, r.prev_hash, hash])?;
        self.seq = seq;
        carry.chain_head = Some((seq, hash.clone()));
        let signer = Arc::clone(&self.signer);
        carry.at_end = Some(Box::new(move |c| {
            // Once per group, in its transaction: the key the chain accepts now.
            let chain: Option<Vec<u8>> = c.prepare_cached(CURRENT_KEY)?.query_row([], |r| r.get(0)).optional()?;
            // (A rusqlite error that carries ours: the group fails with its message.)
            let key = signer.for_group(chain.as_deref()).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let (ts, sig) = key.sign_checkpoint(seq, &hash);
            c.prepare_cached(UPSERT_CHECKPOINT)?.execute(rusqlite::params![seq, hash, sig, ts, FORMAT_CURRENT])?;
            Ok(())
        }));
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<()>) {
        let _ = self.done.send(outcome.map(|()| self.seq));
    }
}

/// Answers (and empties) a group: each record its sequence number from `first_seq` on, or, when
/// the group could not be written, every call refused.
fn answer<E: std::fmt::Display>(batch: &mut Vec<Pending>, result: std::result::Result<i64, E>) {
    match result {
        Ok(first_seq) => {
            for (i, (_, done)) in batch.drain(..).enumerate() {
                let _ = done.send(Ok(first_seq + i as i64));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "audit batch could not be written; refusing its calls");
            for (_, done) in batch.drain(..) {
                let _ = done.send(Err(StoreError::AuditWriterGone));
            }
        }
    }
}

async fn pg_writer(pool: sqlx::PgPool, signer: Arc<Signer>, mut rx: mpsc::Receiver<Pending>, stats: Arc<crate::stats::GroupStats>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = pg_write_batch(&pool, &signer, &batch).await;
        if result.is_ok() {
            stats.committed(batch.len());
        }
        answer(&mut batch, result);
    }
}

async fn pg_write_batch(pool: &sqlx::PgPool, signer: &Signer, batch: &[Pending]) -> Result<i64> {
    let mut tx = pool.begin().await?;
    // One appender at a time over every replica: the head read below is the head this group
    // extends, so seq stays gap-free and the chain cannot fork.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::AUDIT).execute(&mut *tx).await?;
    // The head and the chain's current key in one round trip.
    let (head, head_hash, chain): (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>) = sqlx::query_as(HEAD_AND_KEY).fetch_one(&mut *tx).await?;
    let key = signer.for_group(chain.as_deref())?;
    let head = (head.unwrap_or(0), head_hash.unwrap_or_else(|| GENESIS.to_vec()));
    let first = head.0 + 1;
    let rows = chain_rows(head, batch);
    let mut seqs = Vec::with_capacity(rows.len());
    let mut formats = Vec::with_capacity(rows.len());
    let mut ts = Vec::with_capacity(rows.len());
    let mut agents = Vec::with_capacity(rows.len());
    let mut tools = Vec::with_capacity(rows.len());
    let mut decisions = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    let mut prevs = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    for (r, hash) in rows {
        seqs.push(r.seq);
        formats.push(r.format);
        ts.push(r.ts);
        agents.push(r.agent);
        tools.push(r.tool);
        decisions.push(r.decision);
        bodies.push(r.body);
        prevs.push(r.prev_hash);
        hashes.push(hash);
    }
    // One statement for the whole group.
    sqlx::query(
        "INSERT INTO audit (seq, format, ts, agent, tool, decision, body, prev_hash, hash)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BYTEA[], $9::BYTEA[])",
    )
    .bind(&seqs)
    .bind(&formats)
    .bind(&ts)
    .bind(&agents)
    .bind(&tools)
    .bind(&decisions)
    .bind(&bodies)
    .bind(&prevs)
    .bind(&hashes)
    .execute(&mut *tx)
    .await?;
    let (last, last_hash) = (*seqs.last().expect("a batch is never empty"), hashes.last().expect("a batch is never empty"));
    let (cts, sig) = key.sign_checkpoint(last, last_hash);
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signature, ts, format) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, signature = excluded.signature, ts = excluded.ts, format = excluded.format",
    )
    .bind(last)
    .bind(last_hash)
    .bind(&sig)
    .bind(&cts)
    .bind(FORMAT_CURRENT)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(first)
}

/// What verification found wrong, each with a stable kebab-case code ([`Failure::code`]) that
/// `airlock audit verify` prints and documentation and scripts may rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// `audit-record-missing`: a sequence number has no row (a record was deleted, or moved
    /// away by a reorder). Names the missing number.
    RecordMissing,
    /// `audit-record-inserted`: a row with a sequence number the writer never issues (zero or
    /// below, before record 1).
    RecordInserted,
    /// `audit-link-broken`: the row's `prev_hash` is not the previous row's hash (a row before it
    /// was changed, removed or swapped, or this row was moved).
    LinkBroken,
    /// `audit-hash-mismatch`: the row's columns do not hash to its stored `hash` (a column of the
    /// row, or its hash, was edited).
    HashMismatch,
    /// `audit-column-mismatch`: a format-1 row's `ts`, `agent`, `tool` or `decision` differs
    /// from its hashed body (the column was edited).
    ColumnMismatch,
    /// `audit-column-malformed`: a column holds a value of the wrong type.
    ColumnMalformed,
    /// `audit-format-unknown`: a row or checkpoint names a format this build does not know.
    FormatUnknown,
    /// `audit-checkpoint-orphaned`: a stored checkpoint names a record the chain does not reach.
    CheckpointOrphaned,
    /// `audit-checkpoint-invalid`: a stored checkpoint's hash or signature does not verify (the
    /// chain was recomputed, or the checkpoint forged or edited).
    CheckpointInvalid,
    /// `audit-checkpoint-past-end`: a stored checkpoint signs a record past the last one (the
    /// tail was deleted).
    CheckpointPastEnd,
    /// `audit-unsigned-tail`: records after the last signed checkpoint (appended without the
    /// key).
    UnsignedTail,
    /// `audit-export-malformed`: a line of an exported checkpoint file is not a checkpoint.
    ExportMalformed,
    /// `audit-export-bad-signature`: an exported checkpoint's signature does not verify with the
    /// public key (forged or edited).
    ExportBadSignature,
    /// `audit-export-out-of-order`: exported checkpoints not in increasing `seq` order.
    ExportOutOfOrder,
    /// `audit-export-mismatch`: the chain's record at an exported checkpoint's `seq` does not
    /// have the hash it signs (the chain was rewritten after the export).
    ExportMismatch,
    /// `audit-truncated`: the chain ends before an exported checkpoint's `seq`.
    Truncated,
    /// `audit-handover-invalid`: a signing-key hand-over record (or an exported hand-over line)
    /// does not hold: its `next` key's signature does not verify, it names a `previous` key
    /// that is not the key in use at that point, it is not signed by a checkpoint of the key it
    /// retires, or it is malformed. A hand-over re-made with another key, or a forged one.
    HandoverInvalid,
    /// `audit-key-unknown`: the trusted public key is none of the keys the chain's hand-overs
    /// name (the original key and each later one): a chain re-made without the key that was
    /// pinned, or the wrong key given. (A chain with no hand-over names no key; a wrong key
    /// shows there as `audit-checkpoint-invalid`.)
    UnknownKey,
    /// `audit-checkpoint-retired-key`: a checkpoint after a hand-over is signed by a key that
    /// hand-over retired: something kept signing with the old key after the rotation.
    CheckpointRetiredKey,
}

impl Failure {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Failure::RecordMissing => "audit-record-missing",
            Failure::RecordInserted => "audit-record-inserted",
            Failure::LinkBroken => "audit-link-broken",
            Failure::HashMismatch => "audit-hash-mismatch",
            Failure::ColumnMismatch => "audit-column-mismatch",
            Failure::ColumnMalformed => "audit-column-malformed",
            Failure::FormatUnknown => "audit-format-unknown",
            Failure::CheckpointOrphaned => "audit-checkpoint-orphaned",
            Failure::CheckpointInvalid => "audit-checkpoint-invalid",
            Failure::CheckpointPastEnd => "audit-checkpoint-past-end",
            Failure::UnsignedTail => "audit-unsigned-tail",
            Failure::ExportMalformed => "audit-export-malformed",
            Failure::ExportBadSignature => "audit-export-bad-signature",
            Failure::ExportOutOfOrder => "audit-export-out-of-order",
            Failure::ExportMismatch => "audit-export-mismatch",
            Failure::Truncated => "audit-truncated",
            Failure::HandoverInvalid => "audit-handover-invalid",
            Failure::UnknownKey => "audit-key-unknown",
            Failure::CheckpointRetiredKey => "audit-checkpoint-retired-key",
        }
    }
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// The first problem verification found: the record (or checkpoint) it names, what failed, and
/// a sentence saying which column or link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The sequence number of the first bad record (for a checkpoint, the record it signs).
    pub seq: i64,
    /// What failed.
    pub code: Failure,
    /// Which column, link or line, in words.
    pub detail: String,
}

impl Finding {
    fn new(seq: i64, code: Failure, detail: impl Into<String>) -> Finding {
        Finding { seq, code, detail: detail.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {}: {}: {}", self.seq, self.code.code(), self.detail)
    }
}

/// The outcome of [`Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// Of those, records in the legacy format 1 ([`FORMAT_LEGACY`]).
    pub legacy_records: u64,
    /// Stored checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Of those, checkpoints in format 1 (their time is not signed).
    pub legacy_checkpoints: u64,
    /// Exported checkpoints ([`Store::verify_audit_anchored`]) the chain still holds.
    pub anchors: u64,
    /// Signing-key hand-overs ([`AuditLog::rotate_key`]) that verified.
    pub handovers: u64,
    /// Signing keys the chain is signed with: the original one and one more per hand-over (0
    /// for an empty chain).
    pub keys: u64,
    /// The last record's sequence number.
    pub last_seq: i64,
    /// The first problem found.
    pub first_bad: Option<Finding>,
}

impl VerifyReport {
    /// True when the chain is intact.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// One signed checkpoint as `airlock audit checkpoints export` writes it, one JSON object a line:
/// everything needed to check its signature with the public key alone
/// ([`checkpoint_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedCheckpoint {
    /// The record it signs.
    pub seq: i64,
    /// That record's hash, hex.
    pub hash: String,
    /// When it was signed (RFC 3339, UTC); signed too in format 2.
    pub time: String,
    /// The Ed25519 signature, hex.
    pub signature: String,
    /// [`FORMAT_CURRENT`], or [`FORMAT_LEGACY`] for a checkpoint of an older store.
    pub format: i64,
}

impl ExportedCheckpoint {
    fn from_stored(seq: i64, hash: &[u8], signature: &[u8], time: String, format: i64) -> ExportedCheckpoint {
        ExportedCheckpoint { seq, hash: hex::encode(hash), time, signature: hex::encode(signature), format }
    }
}

/// The `kind` of an exported hand-over line.
pub const EXPORT_KIND_HANDOVER: &str = "key_handover";

/// A signing-key hand-over record as the export writes it, on the line before the checkpoint of
/// the same `seq`: every column of the row, so that a verifier holding one public key can
/// recompute the record's hash (the previous key's checkpoint signs it) and check the new key's
/// signature ([`handover_message`]), and so follow the signing key across the rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedHandover {
    /// Always [`EXPORT_KIND_HANDOVER`]: what tells this line from a checkpoint (which has no
    /// `kind`).
    pub kind: String,
    /// The record's sequence number.
    pub seq: i64,
    /// Its format ([`FORMAT_CURRENT`]).
    pub format: i64,
    /// Its `ts` column.
    pub ts: String,
    /// Its `agent` column.
    pub agent: String,
    /// Its `tool` column ([`TOOL_KEY_ROTATED`]).
    pub tool: String,
    /// Its `decision` column.
    pub decision: String,
    /// Its `body` column: the record's JSON, with its `key_handover`.
    pub body: String,
    /// Its `prev_hash`, hex.
    pub prev_hash: String,
    /// Its `hash`, hex.
    pub hash: String,
}

impl ExportedHandover {
    fn from_row(row: AuditRow, hash: &[u8]) -> ExportedHandover {
        ExportedHandover {
            kind: EXPORT_KIND_HANDOVER.into(),
            seq: row.seq,
            format: row.format,
            ts: row.ts,
            agent: row.agent,
            tool: row.tool,
            decision: row.decision,
            body: row.body,
            prev_hash: hex::encode(row.prev_hash),
            hash: hex::encode(hash),
        }
    }

    /// The row and its stated hash; `None` when a hash is not hex.
    fn row(&self) -> Option<(AuditRow, Vec<u8>)> {
        let row = AuditRow {
            seq: self.seq,
            format: self.format,
            ts: self.ts.clone(),
            agent: self.agent.clone(),
            tool: self.tool.clone(),
            decision: self.decision.clone(),
            body: self.body.clone(),
            prev_hash: hex::decode(&self.prev_hash).ok()?,
        };
        Some((row, hex::decode(&self.hash).ok()?))
    }
}

/// One line of an export: a checkpoint, or a hand-over (which has a `kind`). Serializes as the
/// bare line object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// A signed checkpoint.
    Checkpoint(ExportedCheckpoint),
    /// A signing-key hand-over record, before the checkpoint that signs it.
    Handover(ExportedHandover),
}

impl ExportLine {
    /// Parses one line of an export; what is wrong with it, in words, when it is neither kind.
    pub fn parse(line: &str) -> std::result::Result<ExportLine, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not a checkpoint: {e}"))?;
        if v.get("kind").is_none() {
            return serde_json::from_value(v).map(ExportLine::Checkpoint).map_err(|e| format!("not a checkpoint: {e}"));
        }
        let h: ExportedHandover = serde_json::from_value(v).map_err(|e| format!("not a key hand-over: {e}"))?;
        if h.kind != EXPORT_KIND_HANDOVER {
            return Err(format!("unknown line kind {:?}", h.kind));
        }
        Ok(ExportLine::Handover(h))
    }
}

/// A record hash an exported checkpoint vouches for, after its signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The record.
    pub seq: i64,
    /// Its hash.
    pub hash: Vec<u8>,
}

/// The outcome of [`verify_checkpoint_file`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointFileReport {
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Of those, format-1 checkpoints (their time is not signed).
    pub legacy_checkpoints: u64,
    /// Hand-over lines that verified.
    pub handovers: u64,
    /// Signing keys the file's checkpoints are signed with (0 for a file with no checkpoint).
    pub keys: u64,
    /// The last verified checkpoint.
    pub last: Option<ExportedCheckpoint>,
    /// The first problem found; `seq` is the checkpoint's (0 when the line has none) and the
    /// detail names the line.
    pub first_bad: Option<Finding>,
    /// The verified (seq, hash) pairs, for [`Store::verify_audit_anchored`].
    #[serde(skip)]
    pub anchors: Vec<Anchor>,
}

impl CheckpointFileReport {
    /// True when every line verified.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// The key hand-over a record's body holds: `Ok(None)` for every record but a hand-over (most
/// bodies are not even parsed), `Err` (what is wrong) for a body whose `key_handover` is
/// malformed.
fn body_handover(body: &str) -> std::result::Result<Option<KeyHandover>, String> {
    if !body.contains("\"key_handover\"") {
        return Ok(None);
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { return Ok(None) };
    match v.get("key_handover") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(h) => serde_json::from_value(h.clone()).map(Some).map_err(|e| format!("its key_handover is malformed: {e}")),
    }
}

/// (seq, previous, next) of the hand-overs among `rows` (seq, body), in order, for
/// [`Keys::start`]; a malformed one is left out (the walk reports it where it is).
fn handover_keys<'a>(rows: impl Iterator<Item = (i64, &'a str)>) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    rows.filter_map(|(seq, body)| {
        let h = body_handover(body).ok()??.decode()?;
        Some((seq, h.previous, h.next))
    })
    .collect()
}

/// How a checkpoint's signature failed under [`Keys`].
enum SigFault {
    /// Not by the key in force, nor by any key retired before.
    Bad,
    /// By a key a hand-over before retired.
    Retired,
}

/// The signing keys along a chain (or an export) as its hand-overs pass them on: the key in
/// force where the walk has got to, the ones retired before, and the key the verifier trusts.
///
/// Trusting any one key of the sequence trusts them all, in both directions: each hand-over is
/// signed by its `next` key (over the chain up to there, through `prev_hash`) and its record
/// is signed by a checkpoint of its `previous` key. So the walk starts at the original key,
/// checks both signatures of every hand-over, and the trusted key must be among the keys it
/// passes.
struct Keys {
    current: Vec<u8>,
    retired: Vec<Vec<u8>>,
    trusted: Vec<u8>,
    /// True once the walk is where `trusted` is (or was) in force.
    trusted_seen: bool,
    handovers: u64,
}

impl Keys {
    /// The keys of a chain whose hand-overs (read ahead) are `handovers` (seq, previous, next),
    /// trusting `trusted`: the walk starts at the original key (the first hand-over's previous),
    /// or at `trusted` when the chain has no hand-over (it names no key then, as before
    /// rotations existed). A finding ([`Failure::UnknownKey`]) when there are hand-overs and
    /// `trusted` is none of their keys.
    fn start(trusted: &[u8], handovers: &[(i64, Vec<u8>, Vec<u8>)]) -> std::result::Result<Keys, Finding> {
        let Some((first_seq, original, _)) = handovers.first() else {
            return Ok(Keys { current: trusted.to_vec(), retired: Vec::new(), trusted: trusted.to_vec(), trusted_seen: true, handovers: 0 });
        };
        if !handovers.iter().any(|(_, p, n)| p == trusted || n == trusted) {
            let last = &handovers[handovers.len() - 1].2;
            return Err(Finding::new(
                *first_seq,
                Failure::UnknownKey,
                format!(
                    "the trusted public key {} is none of the {} keys the chain's hand-overs name (original {}, current {})",
                    hex::encode(trusted),
                    handovers.len() + 1,
                    hex::encode(original),
                    hex::encode(last)
                ),
            ));
        }
        Ok(Keys { current: original.clone(), retired: Vec::new(), trusted: trusted.to_vec(), trusted_seen: original == trusted, handovers: 0 })
    }

    /// Checks a checkpoint's signature `sig` over `msg` with the key in force.
    fn verify(&self, msg: &[u8], sig: &[u8]) -> std::result::Result<(), SigFault> {
        let by = |k: &[u8]| signature::UnparsedPublicKey::new(&signature::ED25519, k).verify(msg, sig).is_ok();
        if by(&self.current) {
            Ok(())
        } else if self.retired.iter().any(|k| by(k)) {
            Err(SigFault::Retired)
        } else {
            Err(SigFault::Bad)
        }
    }

    /// Checks the hand-over `h` held by `row` against the key in force: a format-2 record of
    /// [`TOOL_KEY_ROTATED`] retiring the key in force, for another key, whose signature over
    /// [`handover_message`] of the row's `seq` and `prev_hash` verifies. (That a checkpoint of
    /// the retired key signs the record is the caller's to check.) What fails, in words.
    fn check(&self, row: &AuditRow, h: &KeyHandover) -> std::result::Result<Handover, String> {
        if row.format != FORMAT_CURRENT {
            return Err(format!("a key hand-over in a record of format {}", row.format));
        }
        if row.tool != TOOL_KEY_ROTATED {
            return Err(format!("a key hand-over in a record whose tool is not {TOOL_KEY_ROTATED}"));
        }
        let Some(d) = h.decode() else {
            return Err("the hand-over's keys or signature are not hex of the right length".into());
        };
        if d.previous != self.current {
            return Err(format!(
                "the hand-over retires key {}, but key {} signs at this point",
                hex::encode(&d.previous),
                hex::encode(&self.current)
            ));
        }
        if d.next == d.previous {
            return Err("the hand-over hands over to the key it retires".into());
        }
        let msg = handover_message(row.seq, &row.prev_hash, &d.previous, &d.next);
        if signature::UnparsedPublicKey::new(&signature::ED25519, &d.next).verify(&msg, &d.signature).is_err() {
            return Err("the next key's signature over the hand-over does not verify (re-made or forged)".into());
        }
        Ok(d)
    }

    /// Passes a checked hand-over: its next key signs from here.
    fn pass(&mut self, h: Handover) {
        self.retired.push(std::mem::replace(&mut self.current, h.next));
        self.trusted_seen |= self.current == self.trusted;
        self.handovers += 1;
    }

    /// After the walk: a finding when it never got to the trusted key.
    fn end(&self, seq: i64) -> std::result::Result<(), Finding> {
        if self.trusted_seen {
            return Ok(());
        }
        Err(Finding::new(seq, Failure::UnknownKey, format!("the trusted public key {} signs no part of the chain", hex::encode(&self.trusted))))
    }
}

/// Verifies an exported checkpoint file (JSON lines, [`ExportLine`]: checkpoints, and the
/// hand-overs of signing-key rotations; blank lines ignored) with `public_key` alone: every line
/// parses, every checkpoint's signature verifies with the key in force at its `seq`, and `seq`
/// increases from line to line. `public_key` may be any key of the file's hand-over sequence
/// (the original one, or any later): each hand-over is signed by both its keys, so trusting one
/// key of the sequence trusts them all. A hand-over line must be followed by the
/// checkpoint of its record, signed by the key it retires. No store is needed: this is what a
/// party outside the host runs.
pub fn verify_checkpoint_file(text: &str, public_key: &[u8]) -> CheckpointFileReport {
    let mut report =
        CheckpointFileReport { checkpoints: 0, legacy_checkpoints: 0, handovers: 0, keys: 0, last: None, first_bad: None, anchors: Vec::new() };
    let lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
    // The hand-overs first: they say which key signs where. A line that does not parse leaves
    // the set of keys unknown: it is the finding then, rather than the key.
    let mut handovers = Vec::new();
    let mut malformed = None;
    for &(n, l) in &lines {
        match ExportLine::parse(l) {
            Ok(ExportLine::Handover(h)) => handovers.push(h),
            Ok(ExportLine::Checkpoint(_)) => {}
            Err(e) => {
                malformed = Some(Finding::new(0, Failure::ExportMalformed, format!("line {n}: {e}")));
                break;
            }
        }
    }
    let mut keys = match Keys::start(public_key, &handover_keys(handovers.iter().map(|h| (h.seq, h.body.as_str())))) {
        Ok(k) => k,
        Err(f) => {
            report.first_bad = Some(malformed.unwrap_or(f));
            return report;
        }
    };
    match walk_file(&lines, &mut keys, &mut report) {
        Err(f) => report.first_bad = Some(f),
        Ok(()) => report.first_bad = keys.end(report.last.as_ref().map_or(0, |c| c.seq)).err(),
    }
    report.handovers = keys.handovers;
    report.keys = if report.checkpoints > 0 { keys.handovers + 1 } else { 0 };
    report
}

/// The lines of an export in order, for [`verify_checkpoint_file`].
fn walk_file(lines: &[(usize, &str)], keys: &mut Keys, report: &mut CheckpointFileReport) -> std::result::Result<(), Finding> {
    let mut after = 0i64;
    // A hand-over line waiting for the checkpoint of its record: (line, seq, hash, hand-over).
    let mut pending: Option<(usize, i64, Vec<u8>, Handover)> = None;
    for &(n, line) in lines {
        let h = match ExportLine::parse(line) {
            Ok(ExportLine::Handover(h)) => h,
            Ok(ExportLine::Checkpoint(cp)) => {
                let (Ok(hash), Ok(sig)) = (hex::decode(&cp.hash), hex::decode(&cp.signature)) else {
                    return Err(Finding::new(cp.seq, Failure::ExportMalformed, format!("line {n}: hash or signature is not hex")));
                };
                if let Some((hn, hseq, hhash, _)) = &pending {
                    if cp.seq != *hseq || hash != *hhash {
                        return Err(Finding::new(
                            *hseq,
                            Failure::HandoverInvalid,
                            format!("line {hn}: the hand-over is not followed by the checkpoint of its record"),
                        ));
                    }
                }
                if cp.seq <= after {
                    return Err(Finding::new(cp.seq, Failure::ExportOutOfOrder, format!("line {n}: seq {} does not follow {after}", cp.seq)));
                }
                let Some(msg) = checkpoint_message(cp.format, cp.seq, &hash, &cp.time) else {
                    return Err(Finding::new(cp.seq, Failure::FormatUnknown, format!("line {n}: unknown checkpoint format {}", cp.format)));
                };
                match keys.verify(&msg, &sig) {
                    Ok(()) => {}
                    Err(SigFault::Retired) => {
                        return Err(Finding::new(
                            cp.seq,
                            Failure::CheckpointRetiredKey,
                            format!("line {n}: signed by a key retired by an earlier hand-over"),
                        ))
                    }
                    Err(SigFault::Bad) => {
                        return Err(Finding::new(
                            cp.seq,
                            Failure::ExportBadSignature,
                            format!("line {n}: the signature does not verify with this public key (forged or edited)"),
                        ))
                    }
                }
                report.checkpoints += 1;
                report.legacy_checkpoints += u64::from(cp.format == FORMAT_LEGACY);
                report.anchors.push(Anchor { seq: cp.seq, hash });
                after = cp.seq;
                report.last = Some(cp);
                if let Some((_, _, _, h)) = pending.take() {
                    keys.pass(h);
                }
                continue;
            }
            Err(e) => return Err(Finding::new(0, Failure::ExportMalformed, format!("line {n}: {e}"))),
        };
        if let Some((hn, hseq, _, _)) = &pending {
            return Err(Finding::new(*hseq, Failure::HandoverInvalid, format!("line {hn}: the hand-over is not followed by the checkpoint of its record")));
        }
        if h.seq <= after {
            return Err(Finding::new(h.seq, Failure::ExportOutOfOrder, format!("line {n}: seq {} does not follow {after}", h.seq)));
        }
        let Some((row, hash)) = h.row() else {
            return Err(Finding::new(h.seq, Failure::ExportMalformed, format!("line {n}: prev_hash or hash is not hex")));
        };
        if row.expected_hash().as_deref() != Some(hash.as_slice()) {
            return Err(Finding::new(h.seq, Failure::HandoverInvalid, format!("line {n}: the hand-over record's columns do not match its hash (edited)")));
        }
        let checked = match body_handover(&row.body) {
            Ok(Some(kh)) => keys.check(&row, &kh),
            Ok(None) => Err("the record holds no key hand-over".into()),
            Err(e) => Err(e),
        };
        let d = checked.map_err(|e| Finding::new(h.seq, Failure::HandoverInvalid, format!("line {n}: {e}")))?;
        pending = Some((n, h.seq, hash, d));
    }
    if let Some((hn, hseq, _, _)) = pending {
        return Err(Finding::new(hseq, Failure::HandoverInvalid, format!("line {hn}: the hand-over is not followed by the checkpoint of its record")));
    }
    Ok(())
}

/// A stored checkpoint as read back.
struct StoredCheckpoint {
    seq: i64,
    hash: Vec<u8>,
    signature: Vec<u8>,
    ts: String,
    format: i64,
}

/// The walk along the chain: the state [`Store::verify_audit_anchored`] carries from row to
/// row, the same for both engines.
struct Walk<'a> {
    keys: Keys,
    stored: std::iter::Peekable<std::vec::IntoIter<StoredCheckpoint>>,
    anchors: std::iter::Peekable<std::slice::Iter<'a, Anchor>>,
    prev: Vec<u8>,
    expected: i64,
    /// The record the last verified stored checkpoint signs.
    last_checkpoint: i64,
    report: VerifyReport,
}

impl Walk<'_> {
    /// Checks the next row (in `seq` order) and the checkpoints that sign it.
    fn row(&mut self, row: AuditRow, hash: Vec<u8>) -> std::result::Result<(), Finding> {
        let seq = row.seq;
        self.report.records += 1;
        self.report.last_seq = seq;
        if seq < self.expected {
            return Err(Finding::new(seq, Failure::RecordInserted, "a record numbered before record 1 (inserted)"));
        }
        if seq > self.expected {
            return Err(Finding::new(self.expected, Failure::RecordMissing, format!("no record {} before record {seq} (deleted or reordered)", self.expected)));
        }
        if row.prev_hash != self.prev {
            return Err(Finding::new(seq, Failure::LinkBroken, "prev_hash is not the previous record's hash (a record before it was changed, removed or swapped)"));
        }
        let Some(expected_hash) = row.expected_hash() else {
            return Err(Finding::new(seq, Failure::FormatUnknown, format!("unknown record format {}", row.format)));
        };
        if expected_hash != hash {
            return Err(Finding::new(seq, Failure::HashMismatch, "the record's columns do not match its hash (a column or the hash was edited)"));
        }
        if row.format == FORMAT_LEGACY {
            if let Some(col) = row.legacy_mismatch() {
                return Err(Finding::new(seq, Failure::ColumnMismatch, format!("column {col} differs from the record's hashed body (edited)")));
            }
            self.report.legacy_records += 1;
        }
        let handover = match body_handover(&row.body) {
            Ok(Some(h)) => Some(self.keys.check(&row, &h)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
        .transpose()
        .map_err(|e| Finding::new(seq, Failure::HandoverInvalid, e))?;
        // A hand-over record's own checkpoint is still the retiring key's.
        self.checkpoints(seq, &hash, handover.is_some())?;
        if let Some(h) = handover {
            if self.last_checkpoint != seq {
                return Err(Finding::new(seq, Failure::HandoverInvalid, "the hand-over has no checkpoint signed by the key it retires"));
            }
            self.keys.pass(h);
        }
        while let Some(a) = self.anchors.next_if(|a| a.seq <= seq) {
            if a.seq != seq || a.hash != hash {
                return Err(Finding::new(a.seq, Failure::ExportMismatch, "the record's hash differs from the exported checkpoint's (the chain was rewritten)"));
            }
            self.report.anchors += 1;
        }
        self.prev = hash;
        self.expected += 1;
        Ok(())
    }

    /// The stored checkpoints up to record `seq`, whose hash is `hash`. For a hand-over record
    /// (`handover`), a checkpoint that does not sign it with the key in force (the key it
    /// retires) is reported as the hand-over's failure: the hand-over was re-made by someone
    /// without that key.
    fn checkpoints(&mut self, seq: i64, hash: &[u8], handover: bool) -> std::result::Result<(), Finding> {
        while let Some(cp) = self.stored.next_if(|c| c.seq <= seq) {
            if cp.seq < seq {
                return Err(Finding::new(cp.seq, Failure::CheckpointOrphaned, "a signed checkpoint for a record that is gone"));
            }
            let Some(msg) = checkpoint_message(cp.format, cp.seq, &cp.hash, &cp.ts) else {
                return Err(Finding::new(seq, Failure::FormatUnknown, format!("unknown checkpoint format {}", cp.format)));
            };
            let invalid = || {
                if handover {
                    Finding::new(seq, Failure::HandoverInvalid, "the hand-over is not signed by a checkpoint of the key it retires (re-made without that key)")
                } else {
                    Finding::new(seq, Failure::CheckpointInvalid, "the signed checkpoint does not match (chain rewritten or checkpoint forged)")
                }
            };
            if cp.hash != hash {
                return Err(invalid());
            }
            match self.keys.verify(&msg, &cp.signature) {
                Ok(()) => {}
                Err(SigFault::Bad) => return Err(invalid()),
                Err(SigFault::Retired) => {
                    return Err(Finding::new(
                        seq,
                        Failure::CheckpointRetiredKey,
                        "the checkpoint is signed by a key an earlier hand-over retired (something kept signing with the old key)",
                    ))
                }
            }
            self.report.checkpoints += 1;
            self.report.legacy_checkpoints += u64::from(cp.format == FORMAT_LEGACY);
            self.last_checkpoint = seq;
        }
        Ok(())
    }

    /// After the last row: what must not be left over.
    fn end(&mut self) -> std::result::Result<(), Finding> {
        if let Some(cp) = self.stored.next() {
            return Err(Finding::new(cp.seq, Failure::CheckpointPastEnd, "a signed checkpoint past the last record (tail deleted)"));
        }
        if let Some(a) = self.anchors.next() {
            return Err(Finding::new(
                self.report.last_seq + 1,
                Failure::Truncated,
                format!("the chain ends at record {} but an exported checkpoint signs record {} (truncated)", self.report.last_seq, a.seq),
            ));
        }
        self.keys.end(self.report.last_seq)
    }
}

const SELECT_ROWS: &str = "SELECT seq, format, ts, agent, tool, decision, body, prev_hash, hash FROM audit ORDER BY seq";
const SELECT_CHECKPOINTS: &str = "SELECT seq, hash, signature, ts, format FROM audit_checkpoints ORDER BY seq";
/// The candidates for hand-over records, read ahead of the walk: their keys say which key signs
/// where. (Any call may name a tool `audit_key_rotated`; only a body with a `key_handover`,
/// which no call can put there, is a hand-over.)
const SELECT_HANDOVERS: &str = "SELECT seq, body FROM audit WHERE tool = ? ORDER BY seq";

/// Reads one row of [`SELECT_ROWS`] (`$row`, either engine): `Ok((row, hash))`, or a
/// [`Failure::ColumnMalformed`] finding when a column holds a value of the wrong type.
macro_rules! read_row {
    ($row:expr) => {{
        use sqlx::Row;
        let r = &$row;
        let seq: i64 = r.try_get(0)?;
        let read = || -> std::result::Result<(AuditRow, Vec<u8>), sqlx::Error> {
            Ok((
                AuditRow {
                    seq,
                    format: r.try_get(1)?,
                    ts: r.try_get(2)?,
                    agent: r.try_get(3)?,
                    tool: r.try_get(4)?,
                    decision: r.try_get(5)?,
                    body: r.try_get(6)?,
                    prev_hash: r.try_get(7)?,
                },
                r.try_get(8)?,
            ))
        };
        read().map_err(|e| Finding::new(seq, Failure::ColumnMalformed, format!("a column cannot be read: {e}")))
    }};
}

/// Reads one row of [`SELECT_CHECKPOINTS`], as [`read_row`] does.
macro_rules! read_checkpoint {
    ($row:expr) => {{
        use sqlx::Row;
        let r = &$row;
        let seq: i64 = r.try_get(0)?;
        let read = || -> std::result::Result<StoredCheckpoint, sqlx::Error> {
            Ok(StoredCheckpoint { seq, hash: r.try_get(1)?, signature: r.try_get(2)?, ts: r.try_get(3)?, format: r.try_get(4)? })
        };
        read().map_err(|e| Finding::new(seq, Failure::CheckpointInvalid, format!("a checkpoint column cannot be read: {e}")))
    }};
}

impl Store {
    /// The chain's current signing key as the last rotation recorded it (`None` before the first
    /// rotation: the data directory's key is the chain's). For `doctor`: a data directory whose
    /// key differs cannot append.
    pub async fn audit_signing_key(&self) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = self.fetch_optional(CURRENT_KEY, &[]).await?;
        Ok(row.map(|(k,)| k))
    }

    /// Verifies the whole chain and every stored checkpoint against `public_key`.
    pub async fn verify_audit(&self, public_key: &[u8]) -> Result<VerifyReport> {
        self.verify_audit_anchored(public_key, &[]).await
    }

    /// As [`Store::verify_audit`], and the chain must still hold every one of `anchors` (the
    /// verified checkpoints of an exported file, [`verify_checkpoint_file`]): the record at each
    /// anchor's `seq` exists and has its hash (`anchors` in increasing `seq` order, as
    /// [`verify_checkpoint_file`] returns them). This catches a truncation back to an earlier
    /// checkpoint with the later checkpoints deleted, and a chain rewritten and re-signed with a
    /// substituted key.
    ///
    /// Across signing-key rotations ([`AuditLog::rotate_key`]), `public_key` may be the
    /// original key or any later one the chain's hand-overs name (the one the operator pinned):
    /// checkpoints up to and including each hand-over record verify under its previous key,
    /// later ones under its next, and each hand-over must be signed both ways.
    pub async fn verify_audit_anchored(&self, public_key: &[u8], anchors: &[Anchor]) -> Result<VerifyReport> {
        use futures_lite::StreamExt;
        let empty = VerifyReport {
            records: 0,
            legacy_records: 0,
            checkpoints: 0,
            legacy_checkpoints: 0,
            anchors: 0,
            handovers: 0,
            keys: 0,
            last_seq: 0,
            first_bad: None,
        };
        // The hand-overs, read ahead: the walk starts at the original key. A row that cannot be
        // read here is left to the walk, which names it.
        let candidates: Vec<(i64, String)> = with_pool!(self, |p, d| {
            use sqlx::Row;
            sqlx::query(&d.sql(SELECT_HANDOVERS))
                .bind(TOOL_KEY_ROTATED)
                .fetch_all(p)
                .await?
                .iter()
                .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                .collect()
        });
        let keys = match Keys::start(public_key, &handover_keys(candidates.iter().map(|(s, b)| (*s, b.as_str())))) {
            Ok(k) => k,
            Err(f) => return Ok(VerifyReport { first_bad: Some(f), ..empty }),
        };
        let stored: std::result::Result<Vec<StoredCheckpoint>, Finding> = with_pool!(self, |p, d| {
            let mut out = Vec::new();
            let mut bad = None;
            for r in sqlx::query(SELECT_CHECKPOINTS).fetch_all(p).await? {
                match read_checkpoint!(r) {
                    Ok(cp) => out.push(cp),
                    Err(f) => {
                        bad = Some(f);
                        break;
                    }
                }
            }
            bad.map_or(Ok(out), Err)
        });
        let stored = match stored {
            Ok(s) => s,
            Err(f) => return Ok(VerifyReport { first_bad: Some(f), ..empty }),
        };
        let mut walk = Walk {
            keys,
            stored: stored.into_iter().peekable(),
            anchors: anchors.iter().peekable(),
            prev: GENESIS.to_vec(),
            expected: 1,
            last_checkpoint: 0,
            report: empty,
        };
        let walked: std::result::Result<(), Finding> = with_pool!(self, |p, d| {
            let mut rows = sqlx::query(SELECT_ROWS).fetch(p);
            let mut result = Ok(());
            while let Some(r) = rows.next().await {
                let r = r?;
                result = read_row!(r).and_then(|(row, hash)| walk.row(row, hash));
                if result.is_err() {
                    break;
                }
            }
            result
        });
        walk.report.handovers = walk.keys.handovers;
        walk.report.keys = if walk.report.records > 0 { walk.keys.handovers + 1 } else { 0 };
        if let Err(f) = walked.and_then(|()| walk.end()) {
            walk.report.first_bad = Some(f);
            return Ok(walk.report);
        }
        let last_cp = walk.last_checkpoint;
        if walk.report.last_seq > last_cp {
            walk.report.first_bad = Some(Finding::new(
                last_cp + 1,
                Failure::UnsignedTail,
                "records after the last signed checkpoint (appended without the key)",
            ));
        }
        Ok(walk.report)
    }

    /// Signed checkpoints after record `after`, oldest first, at most `limit`: what `airlock audit
    /// checkpoints export` writes.
    pub async fn audit_checkpoints(&self, after: i64, limit: i64) -> Result<Vec<ExportedCheckpoint>> {
        type Row = (i64, Vec<u8>, Vec<u8>, String, i64);
        let rows: Vec<Row> = self
            .fetch_all(
                "SELECT seq, hash, signature, ts, format FROM audit_checkpoints WHERE seq > ? ORDER BY seq LIMIT ?",
                &[after.into(), limit.into()],
            )
            .await?;
        Ok(rows.into_iter().map(|(seq, hash, sig, ts, format)| ExportedCheckpoint::from_stored(seq, &hash, &sig, ts, format)).collect())
    }

    /// The lines of a checkpoint export after record `after`, oldest first, at most `limit`
    /// checkpoints: each signed checkpoint, preceded by the hand-over record it signs when it
    /// signs one ([`ExportLine`]). What `airlock audit checkpoints export` writes; a page never
    /// separates a hand-over from its checkpoint.
    pub async fn audit_export(&self, after: i64, limit: i64) -> Result<Vec<ExportLine>> {
        type Row = (i64, i64, String, String, String, String, String, Vec<u8>, Vec<u8>);
        let checkpoints = self.audit_checkpoints(after, limit).await?;
        let Some(last) = checkpoints.last().map(|c| c.seq) else { return Ok(Vec::new()) };
        let rows: Vec<Row> = self
            .fetch_all(
                "SELECT seq, format, ts, agent, tool, decision, body, prev_hash, hash FROM audit WHERE tool = ? AND seq > ? AND seq <= ? ORDER BY seq",
                &[TOOL_KEY_ROTATED.into(), after.into(), last.into()],
            )
            .await?;
        let mut handovers = rows
            .into_iter()
            .filter(|r| matches!(body_handover(&r.6), Ok(Some(_))))
            .map(|(seq, format, ts, agent, tool, decision, body, prev_hash, hash)| {
                ExportedHandover::from_row(AuditRow { seq, format, ts, agent, tool, decision, body, prev_hash }, &hash)
            })
            .peekable();
        let mut out = Vec::with_capacity(checkpoints.len());
        for cp in checkpoints {
            while let Some(h) = handovers.next_if(|h| h.seq <= cp.seq) {
                out.push(ExportLine::Handover(h));
            }
            out.push(ExportLine::Checkpoint(cp));
        }
        Ok(out)
    }

    /// The last `n` records, oldest first, as (seq, record).
    pub async fn audit_tail(&self, n: i64) -> Result<Vec<(i64, AuditRecord)>> {
        let rows: Vec<(i64, String)> = self
            .fetch_all("SELECT seq, body FROM (SELECT seq, body FROM audit ORDER BY seq DESC LIMIT ?) AS tail ORDER BY seq", &[n.into()])
            .await?;
        rows.into_iter()
            .map(|(s, b)| {
                serde_json::from_str(&b)
                    .map(|r| (s, r))
                    .map_err(|e| StoreError::Invalid(format!("audit record {s} is not valid JSON: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> AuditRecord {
        AuditRecord {
            ts: crate::db::now(),
            request_id: format!("req-{i}"),
            agent: "bot".into(),
            parent_chain: vec![],
            tool: "query_db".into(),
            handle: Some("DB".into()),
            arguments: serde_json::json!({"query": format!("SELECT {i}")}),
            decision: Decision::Allow,
            code: None,
            outcome: "ok".into(),
            result_bytes: 10,
            redactions: 0,
            duration_us: 5,
            policies: vec!["grant:bot:DB".into()],
            approval: None,
            peer: None,
            sandbox: None,
            identity: None,
            key_handover: None,
        }
    }

    async fn filled(n: usize) -> (tempfile::TempDir, Store, Vec<u8>) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        let key = AuditKey::create(d.path()).unwrap();
        let log = AuditLog::start(s.clone(), key);
        let mut handles = Vec::new();
        for i in 0..n {
            let log = log.clone();
            handles.push(tokio::spawn(async move { log.append(rec(i)).await.unwrap() }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.push(h.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=n as i64).collect::<Vec<_>>());
        let pk = AuditKey::load_public(d.path()).unwrap();
        (d, s, pk)
    }

    #[tokio::test]
    async fn intact_chain_verifies_and_tail_reads() {
        let (_d, s, pk) = filled(50).await;
        let r = s.verify_audit(&pk).await.unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.records, 50);
        assert!(r.checkpoints >= 1);
        let tail = s.audit_tail(3).await.unwrap();
        assert_eq!(tail.iter().map(|t| t.0).collect::<Vec<_>>(), vec![48, 49, 50]);
    }

    #[tokio::test]
    async fn edit_is_detected_at_the_record() {
        let (_d, s, pk) = filled(20).await;
        sqlx::query("UPDATE audit SET body = replace(body, 'SELECT 7', 'SELECT 8') WHERE seq = 8")
            .execute(s.pool().unwrap())
            .await
            .unwrap();
        let r = s.verify_audit(&pk).await.unwrap();
        assert_eq!(r.first_bad.unwrap().seq, 8);
    }

    #[tokio::test]
    async fn deletion_and_reordering_are_detected() {
        let (_d, s, pk) = filled(20).await;
        sqlx::query("DELETE FROM audit WHERE seq = 5").execute(s.pool().unwrap()).await.unwrap();
        assert_eq!(s.verify_audit(&pk).await.unwrap().first_bad.unwrap().seq, 5);

        let (_d2, s2, pk2) = filled(20).await;
        // Swap the bodies of two records.
        sqlx::query(
            "UPDATE audit SET body = CASE seq WHEN 3 THEN (SELECT body FROM audit WHERE seq = 4) ELSE (SELECT body FROM audit WHERE seq = 3) END WHERE seq IN (3, 4)",
        )
        .execute(s2.pool().unwrap())
        .await
        .unwrap();
        assert_eq!(s2.verify_audit(&pk2).await.unwrap().first_bad.unwrap().seq, 3);
    }

    #[tokio::test]
    async fn tail_truncation_and_rewrite_are_detected() {
        let (_d, s, pk) = filled(20).await;
        sqlx::query("DELETE FROM audit WHERE seq > 15").execute(s.pool().unwrap()).await.unwrap();
        assert!(!s.verify_audit(&pk).await.unwrap().ok());

        // A full rewrite with recomputed hashes (every column under the hash) but no signing key.
        let (_d2, s2, pk2) = filled(10).await;
        let rows: Vec<(i64, String, String, String, String, String)> =
            sqlx::query_as("SELECT seq, ts, agent, tool, decision, body FROM audit ORDER BY seq").fetch_all(s2.pool().unwrap()).await.unwrap();
        let mut prev = GENESIS.to_vec();
        for (seq, ts, _agent, tool, decision, body) in rows {
            let body = body.replace("\"bot\"", "\"innocent\"");
            let row = AuditRow { seq, format: FORMAT_CURRENT, ts, agent: "innocent".into(), tool, decision, body, prev_hash: prev.clone() };
            let h = row.expected_hash().unwrap();
            sqlx::query("UPDATE audit SET agent = ?, body = ?, prev_hash = ?, hash = ? WHERE seq = ?")
                .bind(&row.agent)
                .bind(&row.body)
                .bind(&prev)
                .bind(&h)
                .bind(seq)
                .execute(s2.pool().unwrap())
                .await
                .unwrap();
            prev = h;
        }
        let bad = s2.verify_audit(&pk2).await.unwrap().first_bad.unwrap();
        assert_eq!(bad.code, Failure::CheckpointInvalid, "{bad}");

        // Records appended without the key after the last checkpoint.
        let (_d3, s3, pk3) = filled(5).await;
        let (h,): (Vec<u8>,) = sqlx::query_as("SELECT hash FROM audit WHERE seq = 5").fetch_one(s3.pool().unwrap()).await.unwrap();
        let row = AuditRow::new(6, &rec(99), h);
        sqlx::query("INSERT INTO audit (seq, format, ts, agent, tool, decision, body, prev_hash, hash) VALUES (6, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(row.format)
            .bind(&row.ts)
            .bind(&row.agent)
            .bind(&row.tool)
            .bind(&row.decision)
            .bind(&row.body)
            .bind(&row.prev_hash)
            .bind(row.expected_hash().unwrap())
            .execute(s3.pool().unwrap())
            .await
            .unwrap();
        let bad = s3.verify_audit(&pk3).await.unwrap().first_bad.unwrap();
        assert_eq!((bad.seq, bad.code), (6, Failure::UnsignedTail), "{bad}");
    }

    #[tokio::test]
    async fn the_hashed_columns_are_every_column_of_the_audit_table_but_the_hash() {
        let (_d, s, _pk) = filled(1).await;
        let cols: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info('audit') ORDER BY cid").fetch_all(s.pool().unwrap()).await.unwrap();
        let mut cols: Vec<String> = cols.into_iter().map(|c| c.0).filter(|c| c != "hash").collect();
        let mut hashed: Vec<String> = HASHED_COLUMNS.iter().map(|c| c.to_string()).collect();
        cols.sort();
        hashed.sort();
        assert_eq!(cols, hashed, "a column of `audit` is not under the hash (or the list names one that does not exist)");
        let row = AuditRow::new(1, &rec(1), GENESIS.to_vec());
        assert_eq!(row.fields().map(|f| f.0), HASHED_COLUMNS);
    }

    #[test]
    fn the_encoding_is_unambiguous() {
        let enc = |fields: &[(&str, Field<'_>)]| {
            let mut v = Vec::new();
            encode(&mut v, "d", fields);
            v
        };
        // Moving bytes between adjacent fields, or between a name and its value, changes the bytes.
        assert_ne!(enc(&[("a", Field::Text("bc")), ("d", Field::Text(""))]), enc(&[("a", Field::Text("b")), ("d", Field::Text("c"))]));
        assert_ne!(enc(&[("ab", Field::Text("c"))]), enc(&[("a", Field::Text("bc"))]));
        // The same bytes as text and as bytes differ; so does an integer and its 8 bytes.
        assert_ne!(enc(&[("a", Field::Text("x"))]), enc(&[("a", Field::Bytes(b"x"))]));
        assert_ne!(enc(&[("a", Field::Int(1))]), enc(&[("a", Field::Bytes(&1i64.to_be_bytes()))]));
        // A fixed vector: the documented layout (docs/audit-format.md).
        assert_eq!(
            hex::encode(enc(&[("n", Field::Int(1)), ("t", Field::Text("hi"))])),
            concat!("0000000164", "00000002", "000000016e", "01", "0000000000000008", "0000000000000001", "0000000174", "02", "0000000000000002", "6869")
        );
    }

    #[test]
    fn the_handover_message_is_the_documented_vector() {
        // docs/audit-format.md, "Signing-key rotation": keys from fixed seeds, so the signature
        // (Ed25519 is deterministic) is fixed too.
        let previous = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).unwrap();
        let next = Ed25519KeyPair::from_seed_unchecked(&[2u8; 32]).unwrap();
        let (p, n) = (previous.public_key().as_ref(), next.public_key().as_ref());
        assert_eq!(hex::encode(p), "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
        assert_eq!(hex::encode(n), "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394");
        let msg = handover_message(5, &[0x11; 32], p, n);
        assert_eq!(
            hex::encode(&msg),
            concat!(
                "0000001d", "6169726c6f636b2d61756469742d6b65792d68616e646f7665722d7631", "00000004",
                "00000003", "736571", "01", "0000000000000008", "0000000000000005",
                "00000009", "707265765f68617368", "03", "0000000000000020", "1111111111111111111111111111111111111111111111111111111111111111",
                "00000008", "70726576696f7573", "03", "0000000000000020", "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
                "00000004", "6e657874", "03", "0000000000000020", "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
            )
        );
        assert_eq!(
            hex::encode(next.sign(&msg).as_ref()),
            "95e27dc083421fc0b2f95faeec2bccb14632ef6086739204678953d055213b65c88d53b70599ae7bfc43c6466d262963fca928079500f027aa14b66d057aad03"
        );
    }

    #[test]
    fn a_key_file_written_by_ring_loads_and_signs_as_ring_does() {
        // Data directories made before the signatures moved to aws-lc hold keys that ring
        // generated (PKCS#8 v2, with the public key). Each must load, keep its public key, and
        // sign every checkpoint exactly as ring would (Ed25519 is deterministic), so that a chain
        // goes on under the same key and verifies with either library.
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        for i in 0..32u8 {
            let d = tempfile::tempdir().unwrap();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            crate::write_private_file(&d.path().join(KEY_FILE), pkcs8.as_ref()).unwrap();
            let theirs = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let ours = AuditKey::load(d.path()).unwrap();
            assert_eq!(ours.public(), theirs.public_key().as_ref());
            let hash: Vec<u8> = (0..32).map(|j| j ^ i.wrapping_mul(37)).collect();
            let (ts, sig) = ours.sign_checkpoint(i64::from(i) + 1, &hash);
            let msg = checkpoint_message(FORMAT_CURRENT, i64::from(i) + 1, &hash, &ts).unwrap();
            assert_eq!(sig, theirs.sign(&msg).as_ref());
            let by_ring = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, theirs.public_key().as_ref());
            assert!(by_ring.verify(&msg, &sig).is_ok());
        }
        // And a key aws-lc generates is one ring reads, with the same public key.
        let d = tempfile::tempdir().unwrap();
        let made = AuditKey::create(d.path()).unwrap();
        let bytes = std::fs::read(d.path().join(KEY_FILE)).unwrap();
        let read = ring::signature::Ed25519KeyPair::from_pkcs8(&bytes).unwrap();
        assert_eq!(read.public_key().as_ref(), made.public());
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_not_swallowed() {
        let (_d, s, _pk) = filled(1).await;
        let key = AuditKey::load(s.dir()).unwrap();
        let log = AuditLog::start(s.clone(), key);
        sqlx::query("DROP TABLE audit_checkpoints").execute(s.pool().unwrap()).await.unwrap();
        assert!(log.append(rec(1)).await.is_err());
    }
}
