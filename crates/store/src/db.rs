//! Opening the SQLite store and its schema.

use crate::Result;
use airlock_core::config::SyncMode;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The schema, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL,
    parent      TEXT REFERENCES agents(id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE UNIQUE INDEX agents_live_name ON agents(name) WHERE revoked_at IS NULL;
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    sealed      BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    version     INTEGER NOT NULL
);
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    ts          TEXT NOT NULL,
    agent       TEXT NOT NULL,
    tool        TEXT NOT NULL,
    decision    TEXT NOT NULL,
    body        TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    hash        BLOB NOT NULL,
    signature   BLOB NOT NULL,
    ts          TEXT NOT NULL
);
"#, r#"
CREATE TABLE shares (
    id          TEXT PRIMARY KEY,
    ciphertext  BLOB NOT NULL,
    proof_hash  BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    max_views   INTEGER NOT NULL,
    views_left  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX shares_expiry ON shares(expires_at);
CREATE TABLE share_receipts (
    share_id        TEXT PRIMARY KEY,
    creator         TEXT NOT NULL,
    recipient       TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    max_views       INTEGER NOT NULL,
    views_used      INTEGER NOT NULL DEFAULT 0,
    first_opened_at INTEGER,
    last_opened_at  INTEGER
);
"#, r#"
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    created_at  TEXT NOT NULL,
    closed_at   TEXT
);
CREATE TABLE leases (
    id              TEXT PRIMARY KEY,
    handle          TEXT NOT NULL UNIQUE,
    base            TEXT NOT NULL,
    agent_id        TEXT NOT NULL REFERENCES agents(id),
    scope           TEXT NOT NULL,
    tables          TEXT,
    dynamic         INTEGER NOT NULL,
    role_name       TEXT,
    task_id         TEXT REFERENCES tasks(id),
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT
);
CREATE INDEX leases_status ON leases(status, expires_at);
CREATE INDEX leases_agent ON leases(agent_id);
CREATE TABLE agent_grants (
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    handle      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    PRIMARY KEY (agent_id, handle, tool)
);
"#, r#"
ALTER TABLE leases ADD COLUMN buckets TEXT;
"#];

/// A handle on the store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    dir: PathBuf,
    sync: SyncMode,
}

impl Store {
    /// Opens (creating if needed) `store.db` in `data_dir` and brings its schema up to date,
    /// with every commit fsynced.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        Store::open_with(data_dir, SyncMode::Full).await
    }

    /// As [`Store::open`], with the given durability.
    pub async fn open_with(data_dir: &Path, sync: SyncMode) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| crate::StoreError::Io {
            path: data_dir.display().to_string(),
            source: e,
        })?;
        let path = data_dir.join("store.db");
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed audit record survives a power loss; NORMAL (WAL): it survives a
            // process crash or kill -9 (invariant 7), and the fsync happens at checkpoints.
            .synchronous(match sync {
                SyncMode::Full => SqliteSynchronous::Full,
                SyncMode::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // A local file does not go stale: skip the ping round trip on every acquire.
            .test_before_acquire(false)
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts)
            .await?;
        let store = Store { pool, dir: data_dir.to_path_buf(), sync };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let run = async {
            let (version,): (i64,) = sqlx::query_as("PRAGMA user_version").fetch_one(&mut *conn).await?;
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                sqlx::raw_sql(m).execute(&mut *conn).await?;
                sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1)).execute(&mut *conn).await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        match run {
            Ok(()) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(())
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e.into())
            }
        }
    }

    /// The durability the store was opened with.
    pub fn sync(&self) -> SyncMode {
        self.sync
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlying pool (for the audit writer's dedicated connection).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Now, as RFC 3339 with microseconds, UTC.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
