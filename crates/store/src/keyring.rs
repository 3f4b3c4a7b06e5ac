//! Key versions of the local vault as stored (`master_keys`), and the columns that hold values
//! sealed under them, for rotation (`airlock_vault::keyring`).
//!
//! The store sees only ciphertext: a version's key is sealed under the root master key, and a
//! sealed value is known by its first bytes, the `tag` of the version it is sealed under. What
//! the store guarantees is the invariant rotation relies on: **no value is ever left under a
//! version that is gone.** A trigger refuses a value whose tag is not in `master_keys` (once the
//! table holds any row: a store that never rotated has only the root key and an empty table),
//! and [`Store::retire_master_keys`] deletes versions only after counting that nothing is sealed
//! under them, inside a transaction that keeps every writer of sealed values out (SQLite: the
//! write lock; PostgreSQL: `SHARE` locks on the tables, which wait for writes in progress and
//! hold new ones until the deletion commits, when their trigger sees it).

use crate::db::{bind, now, with_pool, Arg};
use crate::{Result, Store, StoreError};

/// What a trigger says when a value is sealed under a version that is not in `master_keys`.
pub const KEY_RETIRED: &str = "airlock-key-retired";

/// A key version as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// 0 for the root key itself, then 1, 2, ...
    pub version: i64,
    /// The first bytes of every value sealed under this version.
    pub tag: Vec<u8>,
    /// The version's key sealed under the root key; `None` for version 0.
    pub wrapped: Option<Vec<u8>>,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

type KeyRow = (i64, Vec<u8>, Option<Vec<u8>>, String);

impl From<KeyRow> for StoredKey {
    fn from((version, tag, wrapped, created_at): KeyRow) -> StoredKey {
        StoredKey { version, tag, wrapped, created_at }
    }
}

const SELECT_KEYS: &str = "SELECT version, tag, wrapped, created_at FROM master_keys ORDER BY version";

/// A column that holds sealed values: its table, the expression that names a row (unique,
/// ordered), the column, and how the name a value is sealed for (its associated data) is made.
#[derive(Clone, Copy, Debug)]
pub struct SealedColumn {
    /// The table.
    pub table: &'static str,
    /// An expression naming a row uniquely, in an order pages can follow.
    pub key: &'static str,
    /// The column of sealed bytes (may be NULL where the table allows it).
    pub column: &'static str,
    /// The two text expressions the sealing name is made of.
    pub name_parts: [&'static str; 2],
    /// The sealing name from the two parts.
    pub name: fn(&str, &str) -> String,
}

/// The name a connected account's token set is sealed for.
pub fn account_seal_name(handle: &str, owner: &str) -> String {
    format!("oauth-account\u{0}{handle}\u{0}{owner}")
}

/// The name a connect flow's PKCE verifier is sealed for.
pub fn connect_seal_name(connect_id: &str) -> String {
    format!("oauth-connect\u{0}{connect_id}")
}

/// Every column of sealed values in the store. A new table of sealed values must be added here
/// and to the triggers of the `keys` migration.
pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn { table: "secrets", key: "name", column: "sealed", name_parts: ["name", "''"], name: |n, _| n.to_owned() },
    SealedColumn {
        table: "retired_secrets",
        key: "name || '/' || CAST(version AS TEXT)",
        column: "sealed",
        name_parts: ["name", "''"],
        name: |n, _| n.to_owned(),
    },
    SealedColumn { table: "oauth_accounts", key: "handle", column: "sealed", name_parts: ["handle", "owner"], name: account_seal_name },
    SealedColumn { table: "oauth_connects", key: "id", column: "verifier", name_parts: ["id", "''"], name: |id, _| connect_seal_name(id) },
    SealedColumn {
        table: "secret_requests",
        key: "id",
        column: "intake_key",
        name_parts: ["id", "''"],
        name: |id, _| crate::requests::intake_seal_name(id),
    },
];

/// One sealed value of a [`SealedColumn`].
#[derive(Clone, Debug)]
pub struct SealedRow {
    /// The row's key ([`SealedColumn::key`]).
    pub key: String,
    /// The name it is sealed for.
    pub name: String,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

/// The outcome of [`Store::retire_master_keys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retire {
    /// Every other version was deleted (how many).
    Retired(u64),
    /// Values are still sealed under other versions (how many): nothing was deleted.
    Remaining(u64),
}

impl StoreError {
    /// True when a write was refused because its value is sealed under a key version that a
    /// rotation has retired (the writer re-reads the keyring and seals again).
    pub fn is_key_retired(&self) -> bool {
        match self {
            StoreError::Db(e) => e.as_database_error().is_some_and(|d| d.message().contains(KEY_RETIRED)),
            _ => false,
        }
    }
}

impl Store {
    /// The key versions, oldest first (empty for a store that never rotated).
    pub async fn master_keys(&self) -> Result<Vec<StoredKey>> {
        let rows: Vec<KeyRow> = self.fetch_all(SELECT_KEYS, &[]).await?;
        Ok(rows.into_iter().map(StoredKey::from).collect())
    }

    /// Adds key version `new`, the one new values are sealed under from now on, to a keyring
    /// that holds exactly `current` (the versions the caller read, oldest first; empty when the
    /// store never rotated, and then `root`, version 0, is recorded with it). `Conflict` when the
    /// keyring changed since (another rotation started) or a rotation is unfinished (more than
    /// one version): nothing is written.
    pub async fn add_master_key(&self, current: &[StoredKey], root: Option<&StoredKey>, new: &StoredKey) -> Result<()> {
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            if self.is_postgres() {
                sqlx::query("LOCK TABLE master_keys IN EXCLUSIVE MODE").execute(&mut *tx).await?;
            }
            let rows: Vec<KeyRow> = sqlx::query_as(SELECT_KEYS).fetch_all(&mut *tx).await?;
            let now_keys: Vec<StoredKey> = rows.into_iter().map(StoredKey::from).collect();
            if now_keys != current {
                return Err(StoreError::Conflict("the keyring changed while the rotation started; run it again".into()));
            }
            if now_keys.len() > 1 {
                return Err(StoreError::Conflict("a rotation is unfinished; finish it first".into()));
            }
            let insert = d.sql("INSERT INTO master_keys (version, tag, wrapped, created_at) VALUES (?, ?, ?, ?)");
            for k in root.filter(|_| now_keys.is_empty()).into_iter().chain([new]) {
                sqlx::query(&insert).bind(k.version).bind(&k.tag).bind(&k.wrapped).bind(&k.created_at).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Up to `limit` sealed values of `col` whose row key sorts after `after`, in key order.
    /// NULLs are skipped.
    pub async fn sealed_page(&self, col: SealedColumn, after: &str, limit: i64) -> Result<Vec<SealedRow>> {
        let sql = format!(
            "SELECT {k} AS k, {a}, {b}, {c} FROM {t} WHERE {c} IS NOT NULL AND {k} > ? ORDER BY k LIMIT ?",
            k = col.key,
            a = col.name_parts[0],
            b = col.name_parts[1],
            c = col.column,
            t = col.table
        );
        let rows: Vec<(String, String, String, Vec<u8>)> = self.fetch_all(&sql, &[after.into(), limit.into()]).await?;
        Ok(rows.into_iter().map(|(key, a, b, sealed)| SealedRow { name: (col.name)(&a, &b), key, sealed }).collect())
    }

    /// Replaces sealed values of `col` in one transaction, each `(key, old, new)` only where the
    /// row still holds `old` (a value put since is left alone: it is sealed under the current
    /// version already). The number replaced.
    pub async fn replace_sealed(&self, col: SealedColumn, rows: &[(String, Vec<u8>, Vec<u8>)]) -> Result<u64> {
        let sql = format!("UPDATE {t} SET {c} = ? WHERE {k} = ? AND {c} = ?", t = col.table, c = col.column, k = col.key);
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let q = d.sql(&sql);
            let mut n = 0;
            for (key, old, new) in rows {
                n += bind(sqlx::query(&q), &[Arg::Bytes(new), key.into(), Arg::Bytes(old)]).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(n)
        })
    }

    /// How many sealed values, over every column, are not sealed under the version whose tag is
    /// `tag`.
    pub async fn count_sealed_outside(&self, tag: &[u8]) -> Result<u64> {
        let mut n = 0;
        for col in SEALED_COLUMNS {
            let (c,): (i64,) = self.fetch_one(&outside_sql(col, "COUNT(*)", self.is_postgres()), &[tag.into()]).await?;
            n += c as u64;
        }
        Ok(n)
    }

    /// Deletes every key version but `keep`, if no value is sealed under any of them; see the
    /// module documentation for why no writer can slip a value under a deleted version.
    pub async fn retire_master_keys(&self, keep: &StoredKey) -> Result<Retire> {
        let pg = self.is_postgres();
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            if pg {
                let tables: Vec<&str> = SEALED_COLUMNS.iter().map(|c| c.table).collect();
                sqlx::query(&format!("LOCK TABLE master_keys, {} IN SHARE ROW EXCLUSIVE MODE", tables.join(", ")))
                    .execute(&mut *tx)
                    .await?;
            }
            let mut left = 0i64;
            for col in SEALED_COLUMNS {
                let (c,): (i64,) = sqlx::query_as(&d.sql(&outside_sql(col, "COUNT(*)", pg))).bind(&keep.tag).fetch_one(&mut *tx).await?;
                left += c;
            }
            if left > 0 {
                return Ok(Retire::Remaining(left as u64));
            }
            let n = sqlx::query(&d.sql("DELETE FROM master_keys WHERE version <> ?")).bind(keep.version).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(Retire::Retired(n))
        })
    }

    /// True on PostgreSQL.
    fn is_postgres(&self) -> bool {
        matches!(self.backend, crate::db::Backend::Postgres(_))
    }
}

/// `SELECT what FROM col's table WHERE` the value is not under the tag bound to the one
/// placeholder (numbered, so it is used twice).
fn outside_sql(col: &SealedColumn, what: &str, pg: bool) -> String {
    let c = col.column;
    let (tag, prefix) =
        if pg { ("$1", format!("substring({c} FROM 1 FOR length($1))")) } else { ("?1", format!("substr({c}, 1, length(?1))")) };
    format!("SELECT {what} FROM {t} WHERE {c} IS NOT NULL AND {prefix} <> {tag}", t = col.table)
}

/// A fresh timestamp for a new key version.
pub fn created_now() -> String {
    now()
}
