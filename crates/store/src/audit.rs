//! The audit log: one record per call, hash-chained, with signed checkpoints.
//!
//! Record `n` stores its body (canonical JSON of [`AuditRecord`]), the hash of record `n-1`, and
//! its own hash `SHA-256("airlock-audit-v1" || n as u64 BE || prev_hash || body)`. The writer
//! commits records in groups (one fsync per group, invariant 7) and signs the last hash of every
//! group with Ed25519 in the same transaction, so the newest record is always covered by a
//! signed checkpoint. `verify` detects an edited body, a deleted or reordered record, a
//! recomputed chain (its checkpoints no longer verify) and a truncated tail (a checkpoint points
//! past the end). What it cannot detect without an outside anchor is a truncation back to an
//! earlier checkpoint with the later checkpoints deleted too: export `audit verify`'s last
//! checkpoint elsewhere to pin it.
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
use std::path::Path;
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
}

const GENESIS: [u8; 32] = [0u8; 32];
const MAX_BATCH: usize = 512;

fn record_hash(seq: i64, prev: &[u8], body: &str) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"airlock-audit-v1");
    ctx.update(&(seq as u64).to_be_bytes());
    ctx.update(prev);
    ctx.update(body.as_bytes());
    ctx.finish().as_ref().to_vec()
}

fn checkpoint_message(seq: i64, hash: &[u8]) -> Vec<u8> {
    let mut m = b"airlock-audit-checkpoint-v1".to_vec();
    m.extend_from_slice(&(seq as u64).to_be_bytes());
    m.extend_from_slice(hash);
    m
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

    /// Reads the public key file of `dir` (hex).
    pub fn load_public(dir: &Path) -> Result<Vec<u8>> {
        let p = dir.join(PUB_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| StoreError::Io { path: p.display().to_string(), source: e })?;
        let key = hex::decode(text.trim()).map_err(|_| StoreError::BadKey(p.display().to_string()))?;
        if key.len() != 32 {
            return Err(StoreError::BadKey(p.display().to_string()));
        }
        Ok(key)
    }
}

type Pending = (AuditRecord, oneshot::Sender<Result<i64>>);

/// The audit writer: append returns once the record is committed (with the store's sync mode:
/// fsynced for `full`).
///
/// The writer owns one SQLite connection on a dedicated thread. Records queue up while a group
/// commits, and the next group takes all of them: one transaction, one fsync and one signature
/// per group, and no thread hand-off per statement.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the group-commit writer: a thread with its own SQLite connection, or on
    /// PostgreSQL a task on the current Tokio runtime.
    pub fn start(store: Store, key: AuditKey) -> AuditLog {
        let (tx, rx) = mpsc::channel::<Pending>(8192);
        if let Backend::Postgres(pool) = &store.backend {
            tokio::spawn(pg_writer(pool.clone(), key, rx));
            return AuditLog { tx };
        }
        let path = store.dir().join("store.db");
        let sync = store.sync();
        std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || writer(path, sync, key, rx))
            .expect("spawning the audit writer thread");
        AuditLog { tx }
    }

    /// Appends a record; resolves to its sequence number once it is committed.
    pub async fn append(&self, record: AuditRecord) -> Result<i64> {
        let (done, wait) = oneshot::channel();
        self.tx.send((record, done)).await.map_err(|_| StoreError::AuditWriterGone)?;
        wait.await.map_err(|_| StoreError::AuditWriterGone)?
    }
}

fn open_writer(path: &Path, sync: airlock_core::config::SyncMode) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            airlock_core::config::SyncMode::Full => "FULL",
            airlock_core::config::SyncMode::Normal => "NORMAL",
        },
    )?;
    Ok(conn)
}

fn writer(path: std::path::PathBuf, sync: airlock_core::config::SyncMode, key: AuditKey, mut rx: mpsc::Receiver<Pending>) {
    let conn = match open_writer(&path, sync) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "audit writer cannot open the store; every call will be refused");
            None
        }
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = match &conn {
            Some(c) => write_batch(c, &key, &batch),
            None => Err(rusqlite::Error::InvalidQuery),
        };
        answer(&mut batch, result);
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

fn write_batch(conn: &rusqlite::Connection, key: &AuditKey, batch: &[Pending]) -> rusqlite::Result<i64> {
    // IMMEDIATE takes the write lock before reading the chain head, so two processes writing to
    // one store cannot fork the chain.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let run = || -> rusqlite::Result<i64> {
        let head: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_vec()));
        let first = seq + 1;
        let mut insert = conn.prepare_cached(
            "INSERT INTO audit (seq, ts, agent, tool, decision, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for (rec, _) in batch {
            seq += 1;
            let body = serde_json::to_string(rec).expect("audit record serializes");
            let hash = record_hash(seq, &prev, &body);
            let decision = if rec.decision == Decision::Allow { "allow" } else { "deny" };
            insert.execute(rusqlite::params![seq, rec.ts, rec.agent, rec.tool, decision, body, prev, hash])?;
            prev = hash;
        }
        let sig = key.pair.sign(&checkpoint_message(seq, &prev));
        conn.prepare_cached("INSERT OR REPLACE INTO audit_checkpoints (seq, hash, signature, ts) VALUES (?, ?, ?, ?)")?
            .execute(rusqlite::params![seq, prev, sig.as_ref(), crate::db::now()])?;
        Ok(first)
    };
    match run() {
        Ok(first) => {
            conn.execute_batch("COMMIT")?;
            Ok(first)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
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
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_vec()));
    let first = seq + 1;
    let mut seqs = Vec::with_capacity(batch.len());
    let mut ts = Vec::with_capacity(batch.len());
    let mut agents = Vec::with_capacity(batch.len());
    let mut tools = Vec::with_capacity(batch.len());
    let mut decisions = Vec::with_capacity(batch.len());
    let mut bodies = Vec::with_capacity(batch.len());
    let mut prevs = Vec::with_capacity(batch.len());
    let mut hashes = Vec::with_capacity(batch.len());
    for (rec, _) in batch {
        seq += 1;
        let body = serde_json::to_string(rec).expect("audit record serializes");
        let hash = record_hash(seq, &prev, &body);
        seqs.push(seq);
        ts.push(rec.ts.clone());
        agents.push(rec.agent.clone());
        tools.push(rec.tool.clone());
        decisions.push(if rec.decision == Decision::Allow { "allow" } else { "deny" });
        bodies.push(body);
        prevs.push(std::mem::replace(&mut prev, hash.clone()));
        hashes.push(hash);
    }
    // One statement for the whole group.
    sqlx::query(
        "INSERT INTO audit (seq, ts, agent, tool, decision, body, prev_hash, hash)
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BYTEA[], $8::BYTEA[])",
    )
    .bind(&seqs)
    .bind(&ts)
    .bind(&agents)
    .bind(&tools)
    .bind(&decisions)
    .bind(&bodies)
    .bind(&prevs)
    .bind(&hashes)
    .execute(&mut *tx)
    .await?;
    let sig = key.pair.sign(&checkpoint_message(seq, &prev));
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signature, ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, signature = excluded.signature, ts = excluded.ts",
    )
    .bind(seq)
    .bind(&prev)
    .bind(sig.as_ref())
    .bind(crate::db::now())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(first)
}

/// The outcome of [`Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// The last record's sequence number.
    pub last_seq: i64,
    /// The first problem found: the record's sequence number and what is wrong.
    pub first_bad: Option<(i64, String)>,
}

impl VerifyReport {
    /// True when the chain is intact.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl Store {
    /// Verifies the whole chain and every checkpoint against `public_key`.
    pub async fn verify_audit(&self, public_key: &[u8]) -> Result<VerifyReport> {
        use futures_lite::StreamExt;
        let pk = signature::UnparsedPublicKey::new(&signature::ED25519, public_key);
        let cps: Vec<(i64, Vec<u8>, Vec<u8>)> =
            self.fetch_all("SELECT seq, hash, signature FROM audit_checkpoints ORDER BY seq", &[]).await?;
        let mut cps_iter = cps.iter().peekable();
        let mut report = VerifyReport { records: 0, checkpoints: 0, last_seq: 0, first_bad: None };
        let mut prev = GENESIS.to_vec();
        let mut expected = 1i64;
        let bad = |seq: i64, why: &str| Some((seq, why.to_owned()));
        let stop = with_pool!(self, |p, d| {
        let mut rows = sqlx::query_as::<_, (i64, String, Vec<u8>, Vec<u8>)>(
            "SELECT seq, body, prev_hash, hash FROM audit ORDER BY seq",
        )
        .fetch(p);
        'rows: loop {
            let Some(row) = rows.next().await else { break 'rows false };
            let (seq, body, prev_hash, hash) = row?;
            report.records += 1;
            report.last_seq = seq;
            if seq != expected {
                report.first_bad = bad(expected, "missing record (deleted or reordered)");
                break 'rows true;
            }
            if prev_hash != prev {
                report.first_bad = bad(seq, "previous-hash link broken (a record before it was changed or removed)");
                break 'rows true;
            }
            if record_hash(seq, &prev, &body) != hash {
                report.first_bad = bad(seq, "content does not match its hash (edited)");
                break 'rows true;
            }
            while let Some((cseq, chash, csig)) = cps_iter.peek() {
                if *cseq > seq {
                    break;
                }
                if *cseq < seq {
                    report.first_bad = bad(*cseq, "checkpoint for a record that is gone");
                    break 'rows true;
                }
                if *chash != hash || pk.verify(&checkpoint_message(seq, &hash), csig).is_err() {
                    report.first_bad = bad(seq, "signed checkpoint does not match (chain rewritten)");
                    break 'rows true;
                }
                report.checkpoints += 1;
                cps_iter.next();
            }
            prev = hash;
            expected += 1;
        }
        });
        if stop {
            return Ok(report);
        }
        if let Some((cseq, _, _)) = cps_iter.next() {
            report.first_bad = bad(*cseq, "checkpoint past the last record (tail deleted)");
            return Ok(report);
        }
        let last_cp = cps.last().map(|c| c.0).unwrap_or(0);
        if report.last_seq > last_cp {
            report.first_bad = bad(last_cp + 1, "records after the last signed checkpoint (appended without the key)");
        }
        Ok(report)
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
        assert_eq!(r.first_bad.unwrap().0, 8);
    }

    #[tokio::test]
    async fn deletion_and_reordering_are_detected() {
        let (_d, s, pk) = filled(20).await;
        sqlx::query("DELETE FROM audit WHERE seq = 5").execute(s.pool().unwrap()).await.unwrap();
        assert_eq!(s.verify_audit(&pk).await.unwrap().first_bad.unwrap().0, 5);

        let (_d2, s2, pk2) = filled(20).await;
        // Swap the bodies of two records.
        sqlx::query(
            "UPDATE audit SET body = CASE seq WHEN 3 THEN (SELECT body FROM audit WHERE seq = 4) ELSE (SELECT body FROM audit WHERE seq = 3) END WHERE seq IN (3, 4)",
        )
        .execute(s2.pool().unwrap())
        .await
        .unwrap();
        assert_eq!(s2.verify_audit(&pk2).await.unwrap().first_bad.unwrap().0, 3);
    }

    #[tokio::test]
    async fn tail_truncation_and_rewrite_are_detected() {
        let (_d, s, pk) = filled(20).await;
        sqlx::query("DELETE FROM audit WHERE seq > 15").execute(s.pool().unwrap()).await.unwrap();
        assert!(!s.verify_audit(&pk).await.unwrap().ok());

        // A full rewrite with recomputed hashes but no signing key.
        let (_d2, s2, pk2) = filled(10).await;
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT seq, body FROM audit ORDER BY seq").fetch_all(s2.pool().unwrap()).await.unwrap();
        let mut prev = GENESIS.to_vec();
        for (seq, body) in rows {
            let body = body.replace("\"bot\"", "\"innocent\"");
            let h = record_hash(seq, &prev, &body);
            sqlx::query("UPDATE audit SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?")
                .bind(&body)
                .bind(&prev)
                .bind(&h)
                .bind(seq)
                .execute(s2.pool().unwrap())
                .await
                .unwrap();
            prev = h;
        }
        let r = s2.verify_audit(&pk2).await.unwrap();
        assert!(r.first_bad.unwrap().1.contains("rewritten"));

        // Records appended without the key after the last checkpoint.
        let (_d3, s3, pk3) = filled(5).await;
        let (h,): (Vec<u8>,) = sqlx::query_as("SELECT hash FROM audit WHERE seq = 5").fetch_one(s3.pool().unwrap()).await.unwrap();
        let body = serde_json::to_string(&rec(99)).unwrap();
        let nh = record_hash(6, &h, &body);
        sqlx::query("INSERT INTO audit (seq, ts, agent, tool, decision, body, prev_hash, hash) VALUES (6, '', '', '', '', ?, ?, ?)")
            .bind(&body)
            .bind(&h)
            .bind(&nh)
            .execute(s3.pool().unwrap())
            .await
            .unwrap();
        assert_eq!(s3.verify_audit(&pk3).await.unwrap().first_bad.unwrap().0, 6);
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
