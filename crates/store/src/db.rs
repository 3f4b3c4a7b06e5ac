//! Opening the store (a SQLite file in the data directory, or a PostgreSQL database shared by
//! several replicas) and bringing its schema up to date.
//!
//! Every query is written once in SQLite's spelling with `?` placeholders; [`Dialect::sql`]
//! numbers the placeholders for PostgreSQL (`$1`, `$2`, ...), and the few statements whose
//! spelling differs pick per dialect.

use crate::{Result, StoreError};
use airlock_core::config::SyncMode;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, SqlitePool};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite schema, applied in order; `PRAGMA user_version` records how many have run.
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
CREATE TABLE approvers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE UNIQUE INDEX approvers_live_name ON approvers(name) WHERE revoked_at IS NULL;
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    call_hash       BLOB NOT NULL,
    binding         BLOB NOT NULL,
    status          TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    parent_chain    TEXT NOT NULL,
    tool            TEXT NOT NULL,
    handle          TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    policy_version  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    decided_at      INTEGER,
    approver        TEXT,
    used_at         INTEGER
);
CREATE INDEX approvals_call ON approvals(call_hash, status);
"#, r#"
ALTER TABLE leases ADD COLUMN buckets TEXT;
"#];


/// The PostgreSQL schema, applied in order under an advisory lock; `airlock_schema` records how
/// many have run. Times are RFC 3339 text as in SQLite, compared byte-wise (`COLLATE "C"`); the
/// foreign keys are deferrable so `airlock migrate` can copy rows in any order.
const PG_MIGRATIONS: &[&str] = &[r#"
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  BYTEA NOT NULL,
    parent      TEXT REFERENCES agents(id) DEFERRABLE INITIALLY IMMEDIATE,
    created_at  TEXT COLLATE "C" NOT NULL,
    expires_at  TEXT COLLATE "C",
    revoked_at  TEXT COLLATE "C"
);
CREATE UNIQUE INDEX agents_live_name ON agents(name) WHERE revoked_at IS NULL;
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    sealed      BYTEA NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL
);
CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY,
    ts          TEXT COLLATE "C" NOT NULL,
    agent       TEXT NOT NULL,
    tool        TEXT NOT NULL,
    decision    TEXT NOT NULL,
    body        TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    hash        BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    ts          TEXT COLLATE "C" NOT NULL
);
CREATE TABLE shares (
    id          TEXT PRIMARY KEY,
    ciphertext  BYTEA NOT NULL,
    proof_hash  BYTEA NOT NULL,
    expires_at  BIGINT NOT NULL,
    max_views   BIGINT NOT NULL,
    views_left  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX shares_expiry ON shares(expires_at);
CREATE TABLE share_receipts (
    share_id        TEXT PRIMARY KEY,
    creator         TEXT NOT NULL,
    recipient       TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    max_views       BIGINT NOT NULL,
    views_used      BIGINT NOT NULL DEFAULT 0,
    first_opened_at BIGINT,
    last_opened_at  BIGINT
);
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents(id) DEFERRABLE INITIALLY IMMEDIATE,
    created_at  TEXT COLLATE "C" NOT NULL,
    closed_at   TEXT COLLATE "C"
);
CREATE TABLE leases (
    id              TEXT PRIMARY KEY,
    handle          TEXT NOT NULL UNIQUE,
    base            TEXT NOT NULL,
    agent_id        TEXT NOT NULL REFERENCES agents(id) DEFERRABLE INITIALLY IMMEDIATE,
    scope           TEXT NOT NULL,
    tables          TEXT,
    dynamic         BOOLEAN NOT NULL,
    role_name       TEXT,
    task_id         TEXT REFERENCES tasks(id) DEFERRABLE INITIALLY IMMEDIATE,
    status          TEXT NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    expires_at      TEXT COLLATE "C" NOT NULL,
    revoked_at      TEXT COLLATE "C",
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C"
);
CREATE INDEX leases_status ON leases(status, expires_at);
CREATE INDEX leases_agent ON leases(agent_id);
CREATE TABLE agent_grants (
    agent_id    TEXT NOT NULL REFERENCES agents(id) DEFERRABLE INITIALLY IMMEDIATE,
    handle      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    PRIMARY KEY (agent_id, handle, tool)
);
"#, r#"
CREATE TABLE approvers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  BYTEA NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    revoked_at  TEXT COLLATE "C"
);
CREATE UNIQUE INDEX approvers_live_name ON approvers(name) WHERE revoked_at IS NULL;
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    call_hash       BYTEA NOT NULL,
    binding         BYTEA NOT NULL,
    status          TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    parent_chain    TEXT NOT NULL,
    tool            TEXT NOT NULL,
    handle          TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    policy_version  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    approver        TEXT,
    used_at         BIGINT
);
CREATE INDEX approvals_call ON approvals(call_hash, status);
"#, r#"
ALTER TABLE leases ADD COLUMN buckets TEXT;
"#];

/// The PostgreSQL schema version this build brings a database to.
pub const PG_SCHEMA_VERSION: i64 = PG_MIGRATIONS.len() as i64;

/// Advisory lock keys (`pg_advisory_*lock`), one per kind of work that must not run twice at
/// once across replicas. The high bits spell "airlock" so they do not collide with an
/// application's own keys on a shared server.
pub(crate) mod locks {
    /// Schema migrations.
    pub const MIGRATE: i64 = 0x6169_726c_6f63_0001;
    /// Appending to the audit chain.
    pub const AUDIT: i64 = 0x6169_726c_6f63_0002;
    /// The lease reaper.
    pub const REAPER: i64 = 0x6169_726c_6f63_0003;
    /// `airlock migrate` into this database.
    pub const IMPORT: i64 = 0x6169_726c_6f63_0004;
}

/// The engine behind a [`Store`].
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// `store.db` in the data directory.
    Sqlite(SqlitePool),
    /// A PostgreSQL database (`store.url`).
    Postgres(PgPool),
}

/// SQL spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sql` (SQLite spelling, `?` or `?N` placeholders) in this dialect's spelling.
    pub(crate) fn sql(self, sql: &str) -> Cow<'_, str> {
        match self {
            Dialect::Sqlite => Cow::Borrowed(sql),
            Dialect::Postgres => Cow::Owned(number_placeholders(sql)),
        }
    }

    /// `sqlite` or `postgres`, whichever is this dialect's.
    pub(crate) fn pick<'a>(self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

/// `?` → `$n` (counting), `?N` → `$N`; quoted text is left alone. Only ever applied to the
/// constant statements of this crate.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        out.push(d);
                        chars.next();
                    }
                } else {
                    n += 1;
                    out.push_str(&n.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Runs `$body` with `$p` bound to the pool and `$d` to the [`Dialect`] of `$store`. The body is
/// compiled once per engine.
macro_rules! with_pool {
    ($store:expr, |$p:ident, $d:ident| $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Sqlite($p) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Sqlite;
                $body
            }
            $crate::db::Backend::Postgres($p) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Postgres;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

/// Holds the reaper's turn until dropped (see [`Store::reaper_turn`]).
#[derive(Debug)]
pub struct ReaperTurn {
    _tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

/// A handle on the store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    dir: PathBuf,
    sync: SyncMode,
}

impl Store {
    /// Opens the store `cfg` names: the PostgreSQL database of `store.url`, or else `store.db`
    /// in the data directory.
    pub async fn connect(cfg: &airlock_core::config::StoreConfig) -> Result<Store> {
        match &cfg.url {
            Some(url) => Store::open_postgres(url, &cfg.data_dir).await,
            None => Store::open_with(&cfg.data_dir, cfg.sync).await,
        }
    }

    /// Opens the PostgreSQL database at `url` (`postgres://...`) and brings its schema up to
    /// date. `data_dir` still holds the key files. Several replicas may open one database at
    /// once: migrations run one at a time under an advisory lock.
    pub async fn open_postgres(url: &str, data_dir: &Path) -> Result<Store> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Invalid("store.url is not a valid postgres:// URL".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        let store = Store { backend: Backend::Postgres(pool), dir: data_dir.to_path_buf(), sync: SyncMode::Full };
        store.migrate_postgres().await?;
        Ok(store)
    }

    async fn migrate_postgres(&self) -> Result<()> {
        let Backend::Postgres(pool) = &self.backend else { unreachable!("a PostgreSQL store") };
        let mut conn = pool.acquire().await?;
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        let run = async {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::MIGRATE).execute(&mut *conn).await?;
            sqlx::query("CREATE TABLE IF NOT EXISTS airlock_schema (version BIGINT NOT NULL)").execute(&mut *conn).await?;
            let v: Option<(i64,)> = sqlx::query_as("SELECT version FROM airlock_schema").fetch_optional(&mut *conn).await?;
            let version = match v {
                Some((v,)) => v,
                None => {
                    sqlx::query("INSERT INTO airlock_schema (version) VALUES (0)").execute(&mut *conn).await?;
                    0
                }
            };
            if version as usize > PG_MIGRATIONS.len() {
                return Ok(Some(version));
            }
            for i in version as usize..PG_MIGRATIONS.len() {
                let m: &'static str = PG_MIGRATIONS[i];
                sqlx::raw_sql(m).execute(&mut *conn).await?;
                sqlx::query("UPDATE airlock_schema SET version = $1").bind(i as i64 + 1).execute(&mut *conn).await?;
            }
            Ok::<_, sqlx::Error>(None)
        }
        .await;
        match run {
            Ok(None) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(())
            }
            Ok(Some(version)) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(StoreError::Invalid(format!(
                    "the database schema is version {version}, newer than this airlock ({})",
                    PG_MIGRATIONS.len()
                )))
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e.into())
            }
        }
    }

    /// Which engine holds the state: `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The reaper's turn: `Some` while no other replica's reaper is running (on PostgreSQL a
    /// transaction-level advisory lock, released when the turn is dropped or the process
    /// dies), `None` when another one is. On SQLite the store has one process, and the turn is
    /// always granted.
    pub async fn reaper_turn(&self) -> Result<Option<ReaperTurn>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(ReaperTurn { _tx: None })),
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(locks::REAPER).fetch_one(&mut *tx).await?;
                Ok(got.then_some(ReaperTurn { _tx: Some(tx) }))
            }
        }
    }
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
        let store = Store { backend: Backend::Sqlite(pool), dir: data_dir.to_path_buf(), sync };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let Backend::Sqlite(pool) = &self.backend else { unreachable!("a SQLite store") };
        let mut conn = pool.acquire().await?;
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

    /// The SQLite pool, when the store is the SQLite file (tests reach into it).
    pub fn pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite(p) => Some(p),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when the store is a PostgreSQL database.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p),
        }
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        with_pool!(self, |p, d| p.close().await)
    }
}

/// Now, as RFC 3339 with microseconds, UTC.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
