//! `airlock migrate`: copying a SQLite store into a PostgreSQL database.
//!
//! Every table is copied as it is: token hashes (agents' and approvers'), approvals, sealed ciphertext, lease states and the audit
//! log with its sequence numbers, record formats, hashes and signed checkpoints, so `audit verify` gives the same
//! answer before and after, and the PostgreSQL chain continues from the copied head. The copy
//! is one transaction under an advisory lock: it happens entirely or not at all. A target that
//! already holds exactly the source's rows is left alone (running the command twice changes
//! nothing); a target holding anything else is refused, as merging two stores could fork the
//! audit chain and mix identities.

use crate::db::{locks, Backend};
use crate::{Result, Store, StoreError};
use sqlx::Row;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Bytes,
    Int,
    Bool,
}

/// One column value, whatever the engine.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Val {
    Null,
    Text(String),
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
}

use Kind::{Bool, Bytes, Int, Text};

/// The tables in an order that satisfies their foreign keys.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "agents",
        &[("id", Text), ("name", Text), ("token_hash", Bytes), ("parent", Text), ("created_at", Text), ("expires_at", Text), ("revoked_at", Text)],
    ),
    // Before every table of sealed values: their triggers check the key versions.
    ("master_keys", &[("version", Int), ("tag", Bytes), ("wrapped", Bytes), ("created_at", Text)]),
    ("secrets", &[("name", Text), ("sealed", Bytes), ("created_at", Text), ("updated_at", Text), ("version", Int)]),
    ("tasks", &[("id", Text), ("agent_id", Text), ("created_at", Text), ("closed_at", Text)]),
    (
        "leases",
        &[
            ("id", Text),
            ("handle", Text),
            ("base", Text),
            ("agent_id", Text),
            ("scope", Text),
            ("tables", Text),
            ("dynamic", Bool),
            ("role_name", Text),
            ("task_id", Text),
            ("status", Text),
            ("created_at", Text),
            ("expires_at", Text),
            ("revoked_at", Text),
            ("attempts", Int),
            ("next_attempt_at", Text),
            ("buckets", Text),
        ],
    ),
    ("agent_grants", &[("agent_id", Text), ("handle", Text), ("tool", Text)]),
    (
        "shares",
        &[
            ("id", Text),
            ("ciphertext", Bytes),
            ("proof_hash", Bytes),
            ("expires_at", Int),
            ("max_views", Int),
            ("views_left", Int),
            ("created_at", Int),
        ],
    ),
    (
        "share_deliveries",
        &[
            ("share_id", Text),
            ("proof_hash", Bytes),
            ("attempt_hash", Bytes),
            ("ciphertext", Bytes),
            ("expires_at", Int),
            ("max_views", Int),
            ("views_left", Int),
            ("until", Int),
        ],
    ),
    (
        "share_receipts",
        &[
            ("share_id", Text),
            ("creator", Text),
            ("recipient", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("max_views", Int),
            ("views_used", Int),
            ("first_opened_at", Int),
            ("last_opened_at", Int),
        ],
    ),
    (
        "audit",
        &[
            ("seq", Int),
            ("ts", Text),
            ("agent", Text),
            ("tool", Text),
            ("decision", Text),
            ("body", Text),
            ("prev_hash", Bytes),
            ("hash", Bytes),
            ("format", Int),
        ],
    ),
    ("audit_checkpoints", &[("seq", Int), ("hash", Bytes), ("signature", Bytes), ("ts", Text), ("format", Int)]),
    ("audit_signing_key", &[("id", Int), ("public", Bytes), ("since_seq", Int)]),
    ("agent_previous_tokens", &[("agent_id", Text), ("token_hash", Bytes), ("expires_at", Text)]),
    ("retired_secrets", &[("name", Text), ("version", Int), ("sealed", Bytes), ("until", Text)]),
    ("approvers", &[("id", Text), ("name", Text), ("token_hash", Bytes), ("created_at", Text), ("revoked_at", Text)]),
    (
        "approvals",
        &[
            ("id", Text),
            ("call_hash", Bytes),
            ("binding", Bytes),
            ("status", Text),
            ("agent_id", Text),
            ("agent_name", Text),
            ("parent_chain", Text),
            ("tool", Text),
            ("handle", Text),
            ("arguments", Text),
            ("reason", Text),
            ("policy_version", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("decided_at", Int),
            ("approver", Text),
            ("used_at", Int),
        ],
    ),
    (
        "oauth_connects",
        &[
            ("id", Text),
            ("handle", Text),
            ("agent_id", Text),
            ("agent_name", Text),
            ("owner", Text),
            ("code_hash", Bytes),
            ("attempts", Int),
            ("status", Text),
            ("state_hash", Bytes),
            ("browser_hash", Bytes),
            ("verifier", Bytes),
            ("created_at", Int),
            ("expires_at", Int),
        ],
    ),
    (
        "oauth_accounts",
        &[
            ("handle", Text),
            ("owner", Text),
            ("status", Text),
            ("sealed", Bytes),
            ("version", Int),
            ("access_expires_at", Int),
            ("claim_until", Int),
            ("claimed_by", Text),
            ("connected_at", Text),
            ("refreshed_at", Text),
            ("updated_at", Text),
        ],
    ),
    (
        "secret_requests",
        &[
            ("id", Text),
            ("agent_id", Text),
            ("agent_name", Text),
            ("handle", Text),
            ("kind", Text),
            ("context", Text),
            ("definition", Text),
            ("tools", Text),
            ("recipient", Text),
            ("proof_hash", Bytes),
            ("intake_key", Bytes),
            ("status", Text),
            ("approval_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("received_at", Int),
            ("decided_at", Int),
        ],
    ),
];

/// What [`Store::copy_into`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows in the source.
    pub rows: u64,
    /// Rows written to the target (0 when it already held them all).
    pub copied: u64,
}

macro_rules! decode_row {
    ($row:expr, $cols:expr) => {{
        let mut out = Vec::with_capacity($cols.len());
        for (i, (_, kind)) in $cols.iter().enumerate() {
            out.push(match kind {
                Kind::Text => $row.try_get::<Option<String>, _>(i)?.map_or(Val::Null, Val::Text),
                Kind::Bytes => $row.try_get::<Option<Vec<u8>>, _>(i)?.map_or(Val::Null, Val::Bytes),
                Kind::Int => $row.try_get::<Option<i64>, _>(i)?.map_or(Val::Null, Val::Int),
                Kind::Bool => $row.try_get::<Option<bool>, _>(i)?.map_or(Val::Null, Val::Bool),
            });
        }
        out
    }};
}

fn select(table: &str, cols: &[(&str, Kind)]) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    format!("SELECT {} FROM {table}", names.join(", "))
}

impl Store {
    /// Copies this (SQLite) store into `target` (PostgreSQL), see the module documentation.
    pub async fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        self.copy_into_reporting(target, &|_, _| {}).await
    }

    /// [`Store::copy_into`], calling `progress(rows inserted, rows in all)` as the copy goes
    /// (after each row; nothing is committed before the last).
    pub async fn copy_into_reporting(&self, target: &Store, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<CopyReport> {
        let Backend::Sqlite(src) = &self.backend else {
            return Err(StoreError::Invalid("the source of a migration is a SQLite store".into()));
        };
        let Backend::Postgres(dst) = &target.backend else {
            return Err(StoreError::Invalid("the target of a migration is a PostgreSQL store".into()));
        };
        // Values landed for requests by earlier versions are named with a NUL, which PostgreSQL
        // text cannot hold; a broker opening the store renames them (sealed again for the new
        // name), which this copy cannot do without the master key.
        if !self.legacy_request_values().await?.is_empty() {
            return Err(StoreError::Invalid(
                "the store holds requested values under their old names; start `airlock serve` on it once (it moves them), then migrate".into(),
            ));
        }
        // A consistent snapshot of the source.
        let mut stx = src.begin().await?;
        let mut source = Vec::new();
        for (table, cols) in TABLES {
            let mut rows = Vec::new();
            for r in sqlx::query(&select(table, cols)).fetch_all(&mut *stx).await? {
                rows.push(decode_row!(r, cols));
            }
            rows.sort();
            source.push(rows);
        }
        stx.rollback().await?;
        let total: u64 = source.iter().map(|r| r.len() as u64).sum();

        let mut tx = dst.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::IMPORT).execute(&mut *tx).await?;
        // Appends by running replicas wait until the copy is committed or refused.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::AUDIT).execute(&mut *tx).await?;
        let mut empty = true;
        let mut differs: Option<&str> = None;
        for ((table, cols), want) in TABLES.iter().zip(&source) {
            let mut rows = Vec::new();
            for r in sqlx::query(&select(table, cols)).fetch_all(&mut *tx).await? {
                rows.push(decode_row!(r, cols));
            }
            rows.sort();
            empty &= rows.is_empty();
            if differs.is_none() && &rows != want {
                differs = Some(table);
            }
        }
        let Some(table) = differs else {
            tx.rollback().await?;
            return Ok(CopyReport { rows: total, copied: 0 });
        };
        if !empty {
            return Err(StoreError::Conflict(format!(
                "the target database already holds other airlock data (table {table} differs); refusing to merge two stores"
            )));
        }
        sqlx::query("SET CONSTRAINTS ALL DEFERRED").execute(&mut *tx).await?;
        let mut done = 0;
        for ((table, cols), rows) in TABLES.iter().zip(&source) {
            let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            let sql = format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), marks.join(", "));
            for row in rows {
                let mut q = sqlx::query(&sql);
                for ((_, kind), v) in cols.iter().zip(row) {
                    q = match (kind, v) {
                        (Kind::Text, Val::Text(t)) => q.bind(t.as_str()),
                        (Kind::Text, _) => q.bind(None::<String>),
                        (Kind::Bytes, Val::Bytes(b)) => q.bind(b.as_slice()),
                        (Kind::Bytes, _) => q.bind(None::<Vec<u8>>),
                        (Kind::Int, Val::Int(n)) => q.bind(*n),
                        (Kind::Int, _) => q.bind(None::<i64>),
                        (Kind::Bool, Val::Bool(b)) => q.bind(*b),
                        (Kind::Bool, _) => q.bind(None::<bool>),
                    };
                }
                q.execute(&mut *tx).await?;
                done += 1;
                progress(done, total);
            }
        }
        tx.commit().await?;
        Ok(CopyReport { rows: total, copied: total })
    }
}
