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
//! [`AuditRecord`] has no field that can hold a [`airlock_core::Secret`]; the broker scrubs the
//! arguments before it builds one.

use crate::db::{locks, with_pool, Backend};
use crate::{Result, Store, StoreError};
use ring::digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use crate::writer::{AtEnd, Op, Writer};
use std::path::Path;
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

/// The Ed25519 key that signs checkpoints, kept in the data directory (mode 0600).
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey(public={})", hex::encode(self.pair.public_key().as_ref()))
    }
}

const KEY_FILE: &str = "audit-signing.key";
const PUB_FILE: &str = "audit-signing.pub";

impl AuditKey {
    /// Creates a new key pair in `dir`; refuses to overwrite.
    pub fn create(dir: &Path) -> Result<AuditKey> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| StoreError::BadKey("new audit key".into()))?;
        crate::write_private_file(&dir.join(KEY_FILE), pkcs8.as_ref())?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| StoreError::BadKey(KEY_FILE.into()))?;
        let pub_hex = hex::encode(pair.public_key().as_ref());
        std::fs::write(dir.join(PUB_FILE), format!("{pub_hex}\n"))
            .map_err(|e| StoreError::Io { path: dir.join(PUB_FILE).display().to_string(), source: e })?;
        Ok(AuditKey { pair })
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
        let p = dir.join(KEY_FILE);
        let bytes = std::fs::read(&p).map_err(|e| StoreError::Io { path: p.display().to_string(), source: e })?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| StoreError::BadKey(p.display().to_string()))?;
        Ok(AuditKey { pair })
    }

    /// The public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
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

/// The audit writer: append returns once the record is committed (with the store's sync mode:
/// fsynced for `full`), in a group with whatever else was being committed at the time (one
/// transaction, one fsync and one signed checkpoint per group).
///
/// On SQLite a record is an operation of the store's writer ([`crate::writer`]): written on the
/// caller's own thread when nothing else is being written, grouped with others when it is. On
/// PostgreSQL a task on the current Tokio runtime groups the records.
#[derive(Clone, Debug)]
pub struct AuditLog {
    to: Appender,
}

#[derive(Clone, Debug)]
enum Appender {
    Sqlite { writer: Arc<Writer>, key: Arc<AuditKey> },
    Postgres(mpsc::Sender<Pending>),
}

impl AuditLog {
    /// Starts the audit log of `store`, signing its checkpoints with `key`: on PostgreSQL a
    /// group-commit task on the current Tokio runtime.
    pub fn start(store: Store, key: AuditKey) -> AuditLog {
        if let Backend::Postgres(pool) = &store.backend {
            let (tx, rx) = mpsc::channel::<Pending>(8192);
            tokio::spawn(pg_writer(pool.clone(), key, rx));
            return AuditLog { to: Appender::Postgres(tx) };
        }
        let writer = Arc::clone(store.writer().expect("a SQLite store has a writer"));
        AuditLog { to: Appender::Sqlite { writer, key: Arc::new(key) } }
    }

    /// Appends a record; resolves to its sequence number once it is committed.
    pub async fn append(&self, record: AuditRecord) -> Result<i64> {
        let (done, wait) = oneshot::channel();
        match &self.to {
            Appender::Sqlite { writer, key } => {
                // The row's columns but its place in the chain, built before the write turn.
                let row = AuditRow::new(0, &record, Vec::new());
                writer.submit(Box::new(Append { row, key: Arc::clone(key), seq: 0, done }));
            }
            Appender::Postgres(tx) => tx.send((record, done)).await.map_err(|_| StoreError::AuditWriterGone)?,
        }
        wait.await.map_err(|_| StoreError::AuditWriterGone)?
    }
}

/// One record for the SQLite writer: linked to the chain's head, inserted, and the group's
/// checkpoint left to sign the last record of the group.
struct Append {
    row: AuditRow,
    key: Arc<AuditKey>,
    seq: i64,
    done: oneshot::Sender<Result<i64>>,
}

impl Op for Append {
    fn apply(&mut self, c: &rusqlite::Connection, at_end: &mut Option<AtEnd>) -> Result<()> {
        let head: Option<(i64, Vec<u8>)> = c
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        let (seq, prev) = head.map(|(s, h)| (s + 1, h)).unwrap_or((1, GENESIS.to_vec()));
        let r = &mut self.row;
        r.seq = seq;
        r.prev_hash = prev;
        let hash = r.expected_hash().expect("the current format is known");
        c.prepare_cached(
            "INSERT INTO audit (seq, format, ts, agent, tool, decision, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(rusqlite::params![r.seq, r.format, r.ts, r.agent, r.tool, r.decision, r.body, r.prev_hash, hash])?;
        self.seq = seq;
        let key = Arc::clone(&self.key);
        *at_end = Some(Box::new(move |c| {
            let (ts, sig) = key.sign_checkpoint(seq, &hash);
            c.prepare_cached("INSERT OR REPLACE INTO audit_checkpoints (seq, hash, signature, ts, format) VALUES (?, ?, ?, ?, ?)")?
                .execute(rusqlite::params![seq, hash, sig, ts, FORMAT_CURRENT])?;
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

async fn pg_writer(pool: sqlx::PgPool, key: AuditKey, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = pg_write_batch(&pool, &key, &batch).await;
        answer(&mut batch, result);
    }
}

async fn pg_write_batch(pool: &sqlx::PgPool, key: &AuditKey, batch: &[Pending]) -> std::result::Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One appender at a time over every replica: the head read below is the head this group
    // extends, so seq stays gap-free and the chain cannot fork.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::AUDIT).execute(&mut *tx).await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let head = head.unwrap_or((0, GENESIS.to_vec()));
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

/// Verifies an exported checkpoint file (JSON lines of [`ExportedCheckpoint`], blank lines
/// ignored) with `public_key` alone: every line parses, its signature verifies, and `seq`
/// increases from line to line. No store is needed: this is what a party outside the host runs.
pub fn verify_checkpoint_file(text: &str, public_key: &[u8]) -> CheckpointFileReport {
    let pk = signature::UnparsedPublicKey::new(&signature::ED25519, public_key);
    let mut report = CheckpointFileReport { checkpoints: 0, legacy_checkpoints: 0, last: None, first_bad: None, anchors: Vec::new() };
    let mut after = 0i64;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let cp: ExportedCheckpoint = match serde_json::from_str(line) {
            Ok(cp) => cp,
            Err(e) => {
                report.first_bad = Some(Finding::new(0, Failure::ExportMalformed, format!("line {n}: not a checkpoint: {e}")));
                return report;
            }
        };
        let (Ok(hash), Ok(sig)) = (hex::decode(&cp.hash), hex::decode(&cp.signature)) else {
            report.first_bad = Some(Finding::new(cp.seq, Failure::ExportMalformed, format!("line {n}: hash or signature is not hex")));
            return report;
        };
        if cp.seq <= after {
            report.first_bad = Some(Finding::new(cp.seq, Failure::ExportOutOfOrder, format!("line {n}: seq {} does not follow {after}", cp.seq)));
            return report;
        }
        let Some(msg) = checkpoint_message(cp.format, cp.seq, &hash, &cp.time) else {
            report.first_bad = Some(Finding::new(cp.seq, Failure::FormatUnknown, format!("line {n}: unknown checkpoint format {}", cp.format)));
            return report;
        };
        if pk.verify(&msg, &sig).is_err() {
            report.first_bad = Some(Finding::new(
                cp.seq,
                Failure::ExportBadSignature,
                format!("line {n}: the signature does not verify with this public key (forged or edited)"),
            ));
            return report;
        }
        report.checkpoints += 1;
        report.legacy_checkpoints += u64::from(cp.format == FORMAT_LEGACY);
        report.anchors.push(Anchor { seq: cp.seq, hash });
        after = cp.seq;
        report.last = Some(cp);
    }
    report
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
    pk: signature::UnparsedPublicKey<&'a [u8]>,
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
        self.checkpoints(seq, &hash)?;
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

    /// The stored checkpoints up to record `seq`, whose hash is `hash`.
    fn checkpoints(&mut self, seq: i64, hash: &[u8]) -> std::result::Result<(), Finding> {
        while let Some(cp) = self.stored.next_if(|c| c.seq <= seq) {
            if cp.seq < seq {
                return Err(Finding::new(cp.seq, Failure::CheckpointOrphaned, "a signed checkpoint for a record that is gone"));
            }
            let Some(msg) = checkpoint_message(cp.format, cp.seq, &cp.hash, &cp.ts) else {
                return Err(Finding::new(seq, Failure::FormatUnknown, format!("unknown checkpoint format {}", cp.format)));
            };
            if cp.hash != hash || self.pk.verify(&msg, &cp.signature).is_err() {
                return Err(Finding::new(seq, Failure::CheckpointInvalid, "the signed checkpoint does not match (chain rewritten or checkpoint forged)"));
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
        Ok(())
    }
}

const SELECT_ROWS: &str = "SELECT seq, format, ts, agent, tool, decision, body, prev_hash, hash FROM audit ORDER BY seq";
const SELECT_CHECKPOINTS: &str = "SELECT seq, hash, signature, ts, format FROM audit_checkpoints ORDER BY seq";

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
    pub async fn verify_audit_anchored(&self, public_key: &[u8], anchors: &[Anchor]) -> Result<VerifyReport> {
        use futures_lite::StreamExt;
        let empty = VerifyReport { records: 0, legacy_records: 0, checkpoints: 0, legacy_checkpoints: 0, anchors: 0, last_seq: 0, first_bad: None };
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
            pk: signature::UnparsedPublicKey::new(&signature::ED25519, public_key),
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

    #[tokio::test]
    async fn a_failed_write_is_reported_not_swallowed() {
        let (_d, s, _pk) = filled(1).await;
        let key = AuditKey::load(s.dir()).unwrap();
        let log = AuditLog::start(s.clone(), key);
        sqlx::query("DROP TABLE audit_checkpoints").execute(s.pool().unwrap()).await.unwrap();
        assert!(log.append(rec(1)).await.is_err());
    }
}
