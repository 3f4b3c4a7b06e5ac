//! Execution: connection pools per handle, transactions, timeouts, capped streaming of rows.
//!
//! This is the only place a database secret is exposed: when connect options are built for a
//! new pool, and as input of the pool's cache key (a SHA-256 fingerprint, so a rotated secret
//! gets a new pool and the value itself is never kept outside the driver's options).
//!
//! Every error is mapped to a fixed agent message; the driver's text, which may name the DSN,
//! goes only to `CallError::detail` (T12).
//!
//! # Caps while streaming (T20)
//!
//! Rows are read as they arrive and each is returned whole or not at all: the result ends, with
//! `truncated: true`, at `max_rows` rows or at the first row whose cells would take the total
//! past `max_bytes` (text and base64 by length, other values by their JSON length). Each cell is
//! checked from its raw length before it is decoded (`decode::*_min_bytes`), so the decoder never
//! copies a cell over the budget. A cell larger than `max_bytes` can never be returned: that is
//! the cell cap. (A row is not cut inside a cell: the scrubber redacts the tail of a cut only at
//! the end of a result, T24.)
//!
//! What bounds one call's memory in the broker:
//!
//! | statement | rows | one huge cell |
//! |---|---|---|
//! | PostgreSQL and MySQL/MariaDB reads | the bounded form ([`crate::wrap`]): the server stops at `max_rows + 1` rows | the server sends a row's variable-width cells only when together they hold at most `max_bytes` in text form, else `NULL` and the broker ends the result there: at most `max_bytes` of text-form cell data per row received (PostgreSQL arrays and records of small fixed-width elements: up to about 6 times that in binary form), plus fixed-width columns |
//! | SQLite (not wrapped: see [`crate::wrap`]) | the statement is not stepped past the cap | SQLite builds or reads the value inside the broker, up to `SQLITE_MAX_LENGTH` (10^9 bytes; a computed string up to twice its size while it grows); the executor reads it where SQLite holds it (`crate::lite`), without a copy; measured: 95 MiB for a stored 95 MiB cell, 190 MiB for a computed one |
//! | writes, and reads the server refuses in bounded form | read to the end (the rest discarded) so the statement completes, except reads on a read-only handle, which are left | the driver receives the row whole (PostgreSQL: a field up to 1 GB; MariaDB: a value up to `max_allowed_packet`, 16 MiB by default, and a row may hold several), its buffer about twice the row |
//!
//! On top of the row in flight: at most `max_bytes` of cell data in the rows kept, their JSON
//! structure (about 32 bytes a cell, which counts for nothing against `max_bytes`).
//!
//! A statement left before its end (a cap reached on a read-only handle, other than the row cap
//! of a bounded read, which the server's own LIMIT ends) is cancelled on the server from another
//! session: PostgreSQL `pg_cancel_backend(pid)` and MySQL/MariaDB `KILL QUERY id`, both allowed on
//! a role's or user's own sessions, the id read when the transaction starts; then its connection
//! is closed, never returned to the pool with unread rows nor finished (a `ROLLBACK` would first
//! read the rest of the result). The answer waits for the cancel (one round trip on an idle pooled
//! session, else a new connection; at most [`CANCEL_WAIT`]). SQLite runs in the broker's own
//! thread: a statement left at a cap is reset, and the connection, clean again, goes back to the
//! pool; a SQLite read changes nothing, so it is left at the cap whatever the handle's scope.
//! A read-write PostgreSQL or MySQL handle's statements are never left: a write must complete
//! (`rows_affected` counts all of it, and a data-modifying CTE runs to its end whatever is read),
//! so the rest is read and discarded, within the statement timeout.

use crate::decode::{mysql_cell, mysql_min_bytes, pg_cell, pg_min_bytes, Cell};
use crate::rows::Rows;
use crate::validate::{Param, ValidatedQuery};
use crate::wrap::Col;
use airlock_core::config::{DatabaseConstraints, Handle, HandleKind, Scope};
use airlock_core::{CallError, ErrorCode, HandleName, Secret};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::mysql::MySqlQueryResult;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgQueryResult;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, Postgres};
use sqlx::query::Query;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{
    Column, ConnectOptions, Connection, Database, Either, Encode, Executor, Statement, Type,
    TypeInfo,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// Connections per handle pool.
const MAX_CONNECTIONS: u32 = 4;
/// Longest wait for a connection (capped by the statement timeout).
const MAX_ACQUIRE: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
    Lite(std::sync::Arc<crate::lite::LitePool>),
}

impl Pool {
    async fn close(&self) {
        match self {
            Pool::Pg(p) => p.close().await,
            Pool::My(p) => p.close().await,
            Pool::Lite(p) => p.close(),
        }
    }
}

struct Cached {
    fingerprint: [u8; 32],
    pool: Pool,
}

/// Runs validated statements. `Send + Sync`; keeps one small, lazily connecting pool per handle.
pub struct SqlExecutor {
    pools: Mutex<HashMap<HandleName, Cached>>,
    statements: crate::statements::StatementCache,
}

impl Default for SqlExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl SqlExecutor {
    /// An executor with no pool yet.
    pub fn new() -> Self {
        SqlExecutor {
            pools: Mutex::new(HashMap::new()),
            statements: crate::statements::StatementCache::default(),
        }
    }

    /// Parse and check against the handle's kind and `DatabaseConstraints`. No I/O.
    pub fn validate(handle: &Handle, args: &crate::QueryArgs) -> Result<ValidatedQuery, CallError> {
        crate::validate::validate(handle, args, &crate::validate::check_uncached)
    }

    /// [`validate`](Self::validate), answered from this executor's cache of checked statements
    /// when the same text was checked before under the same constraints (`statements`).
    pub fn validate_cached(&self, handle: &Handle, args: &crate::QueryArgs) -> Result<ValidatedQuery, CallError> {
        crate::validate::validate(handle, args, &|h, db, q| self.statements.get_or_check(h, db, q))
    }

    /// Statements in the cache of checked statements.
    pub fn cached_statements(&self) -> usize {
        self.statements.len()
    }

    /// Run a validated statement with the resolved secret; returns
    /// `{columns, rows, row_count, truncated}` (plus `rows_affected` for writes).
    pub async fn execute(
        &self,
        handle: &Handle,
        q: &ValidatedQuery,
        secret: &Secret,
    ) -> Result<Value, CallError> {
        let db = handle.database().ok_or_else(|| {
            CallError::new(ErrorCode::HandleUnavailable).detail("not a database handle")
        })?;
        if q.kind != handle.kind {
            return Err(CallError::new(ErrorCode::Internal)
                .detail("statement validated for another kind of handle"));
        }
        let pool = self.pool(handle, db, secret)?;
        match pool {
            Pool::Pg(p) => {
                let server = Server {
                    begin: ("BEGIN READ ONLY", "BEGIN"),
                    run: run_pg,
                    cancel: cancel_pg,
                };
                run_in_transaction(&p, q, db, &server).await
            }
            Pool::My(p) => {
                let server = Server {
                    begin: (
                        "START TRANSACTION READ ONLY",
                        "START TRANSACTION READ WRITE",
                    ),
                    run: run_mysql,
                    cancel: cancel_mysql,
                };
                run_in_transaction(&p, q, db, &server).await
            }
            Pool::Lite(p) => run_sqlite(&p, q, db).await,
        }
    }

    /// Drop the cached pool of a handle (secret rotated, handle removed).
    pub async fn forget(&self, handle: &HandleName) {
        let old = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(handle);
        if let Some(c) = old {
            c.pool.close().await;
        }
    }

    /// The handles that have a cached pool.
    pub fn cached_handles(&self) -> Vec<HandleName> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// `query_db` calls on this executor's SQLite handles answered on the async worker, and those
    /// run inside `block_in_place` (for tests and metrics; a handle's counts go with its pool).
    pub fn sqlite_runs(&self) -> (u64, u64) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.values().fold((0, 0), |(a, b), c| match &c.pool {
            Pool::Lite(p) => {
                let (x, y) = p.runs();
                (a + x, b + y)
            }
            _ => (a, b),
        })
    }

    /// Number of cached pools (for tests and metrics).
    pub fn pool_count(&self) -> usize {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn pool(
        &self,
        handle: &Handle,
        db: &DatabaseConstraints,
        secret: &Secret,
    ) -> Result<Pool, CallError> {
        let fp = fingerprint(handle.kind, db, secret);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = pools.get(&handle.name) {
            if c.fingerprint == fp {
                return Ok(c.pool.clone());
            }
        }
        let pool = build_pool(handle.kind, db, secret)?;
        if let Some(old) = pools.insert(
            handle.name.clone(),
            Cached {
                fingerprint: fp,
                pool: pool.clone(),
            },
        ) {
            // Rotated secret or changed handle: the old pool's connections go away.
            tokio::spawn(async move { old.pool.close().await });
        }
        Ok(pool)
    }
}

/// SHA-256 over everything a pool depends on; the secret enters only the hash.
fn fingerprint(kind: HandleKind, db: &DatabaseConstraints, secret: &Secret) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        kind.as_str().as_bytes(),
        db.url.as_deref().unwrap_or("").as_bytes(),
        if db.scope == Scope::ReadOnly {
            b"ro"
        } else {
            b"rw"
        },
        &db.statement_timeout_ms.to_be_bytes(),
        secret.expose_secret(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn secret_error(what: &str) -> CallError {
    CallError::new(ErrorCode::SecretUnavailable).detail(what.to_owned())
}

/// Connect options of one kind of database.
trait Target: FromStr {
    /// The schemes a secret that is the whole connection URL may start with.
    const SCHEMES: &'static [&'static str];
    /// These options with `password`.
    fn with_password(self, password: &str) -> Self;
}

impl Target for PgConnectOptions {
    const SCHEMES: &'static [&'static str] = &["postgres://", "postgresql://"];
    fn with_password(self, password: &str) -> Self {
        self.password(password)
    }
}

impl Target for MySqlConnectOptions {
    const SCHEMES: &'static [&'static str] = &["mysql://", "mariadb://"];
    fn with_password(self, password: &str) -> Self {
        self.password(password)
    }
}

impl Target for SqliteConnectOptions {
    const SCHEMES: &'static [&'static str] = &["sqlite:"];
    /// A SQLite file has no password.
    fn with_password(self, _: &str) -> Self {
        self
    }
}

/// The connection target: the handle's URL with the secret as password, or the secret as URL.
/// Parse errors never carry the driver's text, which may quote the URL.
fn options<O: Target>(db: &DatabaseConstraints, secret: &Secret) -> Result<O, CallError> {
    let value = secret
        .expose_str()
        .ok_or_else(|| secret_error("the secret is not UTF-8"))?;
    match &db.url {
        Some(url) => {
            let o = O::from_str(url).map_err(|_| {
                CallError::new(ErrorCode::UpstreamUnavailable)
                    .detail("the handle's database url does not parse")
            })?;
            Ok(o.with_password(value))
        }
        None => {
            let value = value.trim();
            // The scheme must match the handle's kind (SQLite would take any text as a file name).
            let lower = value.get(..12).unwrap_or(value).to_ascii_lowercase();
            if !O::SCHEMES.iter().any(|s| lower.starts_with(s)) {
                return Err(secret_error(
                    "the secret is not a connection URL of the handle's kind",
                ));
            }
            O::from_str(value).map_err(|_| {
                secret_error("the secret is not a connection URL of the handle's kind")
            })
        }
    }
}

/// Longest wait for one of a handle's connections: the statement timeout, within bounds.
fn acquire_timeout(db: &DatabaseConstraints) -> Duration {
    Duration::from_millis(db.statement_timeout_ms).clamp(Duration::from_secs(1), MAX_ACQUIRE)
}

fn pool_options<DB: Database>(db: &DatabaseConstraints) -> PoolOptions<DB> {
    PoolOptions::<DB>::new()
        .max_connections(MAX_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(acquire_timeout(db))
        .idle_timeout(Some(Duration::from_secs(300)))
        .max_lifetime(Some(Duration::from_secs(1800)))
}

fn build_pool(
    kind: HandleKind,
    db: &DatabaseConstraints,
    secret: &Secret,
) -> Result<Pool, CallError> {
    let read_only = db.scope == Scope::ReadOnly;
    match kind {
        HandleKind::Postgres => {
            let o = options::<PgConnectOptions>(db, secret)?.application_name("airlock");
            let opts: PgPoolOptions = pool_options(db);
            let opts = opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    if read_only {
                        // Belt and braces: every transaction also begins READ ONLY.
                        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                            .await?;
                    }
                    Ok(())
                })
            });
            Ok(Pool::Pg(opts.connect_lazy_with(o)))
        }
        HandleKind::Mysql => {
            let o: MySqlConnectOptions = options(db, secret)?;
            let timeout_ms = db.statement_timeout_ms;
            let opts: MySqlPoolOptions = pool_options(db);
            let opts = opts
                .after_connect(move |conn, _| Box::pin(mysql_session(conn, read_only, timeout_ms)));
            Ok(Pool::My(opts.connect_lazy_with(o)))
        }
        HandleKind::Sqlite => {
            let o: SqliteConnectOptions = match &db.url {
                // A SQLite file has no password: with a url on the handle the secret is unused.
                Some(url) => SqliteConnectOptions::from_str(url).map_err(|_| {
                    CallError::new(ErrorCode::UpstreamUnavailable)
                        .detail("the handle's database url does not parse")
                })?,
                None => options(db, secret)?,
            };
            Ok(Pool::Lite(crate::lite::LitePool::new(lite_target(&o, db), MAX_CONNECTIONS as usize, acquire_timeout(db))))
        }
        _ => Err(CallError::new(ErrorCode::HandleUnavailable).detail("not a database handle")),
    }
}

/// Per-connection MySQL/MariaDB setup: a fixed sql_mode (no ANSI_QUOTES, no
/// NO_BACKSLASH_ESCAPES, so the server lexes literals as the validator did), the statement
/// timeout (MariaDB `max_statement_time` in seconds, else MySQL `max_execution_time` in ms), and
/// read-only transactions for read-only handles.
async fn mysql_session(
    conn: &mut sqlx::MySqlConnection,
    read_only: bool,
    timeout_ms: u64,
) -> Result<(), sqlx::Error> {
    conn.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,PIPES_AS_CONCAT'")
        .await?;
    let mariadb = format!(
        "SET SESSION max_statement_time = {:.3}",
        timeout_ms as f64 / 1000.0
    );
    if conn.execute(mariadb.as_str()).await.is_err() {
        let mysql = format!("SET SESSION max_execution_time = {timeout_ms}");
        if let Err(e) = conn.execute(mysql.as_str()).await {
            tracing::warn!(error = %e, "no server-side statement timeout; relying on the client timeout");
        }
    }
    if read_only {
        conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
    }
    Ok(())
}

fn timeout_error() -> CallError {
    CallError::new(ErrorCode::UpstreamTimeout).detail("statement timeout")
}

fn connect_error(e: sqlx::Error) -> CallError {
    CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("connect: {e}"))
}

/// Maps a driver error during a statement. The server's error code (SQLSTATE or engine code) is
/// an enumeration, safe to show; the message is not.
fn query_error(e: sqlx::Error) -> CallError {
    match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let mysql_number = d
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number());
            // 57014 query_canceled (PostgreSQL), 1969 max_statement_time (MariaDB),
            // 3024 max_execution_time (MySQL). (SQLite's errors are mapped in `lite`.)
            let timed_out = code == "57014"
                || matches!(mysql_number, Some(1969 | 3024));
            if timed_out {
                return CallError::new(ErrorCode::UpstreamTimeout).detail(format!("database: {e}"));
            }
            // The server went away under the statement, which it did not reject: PostgreSQL's
            // class 08 (connection exception) and 57P01..57P03 (admin or crash shutdown, not
            // accepting connections yet: a restart), MariaDB/MySQL 1053 (server shutdown).
            let gone = (d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some()
                && (code.starts_with("08") || matches!(code.as_str(), "57P01" | "57P02" | "57P03")))
                || mysql_number == Some(1053);
            if gone {
                return CallError::new(ErrorCode::UpstreamUnavailable)
                    .detail(format!("database: {e}"));
            }
            let shown = match mysql_number {
                Some(n) => format!("{n}"),
                None => code,
            };
            let message = if !shown.is_empty()
                && shown.len() <= 8
                && shown.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                format!(
                    "{} (code {shown})",
                    ErrorCode::QueryFailed.default_message()
                )
            } else {
                ErrorCode::QueryFailed.default_message().to_owned()
            };
            CallError::with_message(ErrorCode::QueryFailed, message)
                .detail(format!("database: {e}"))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("driver: {e}"))
        }
        _ => CallError::new(ErrorCode::QueryFailed).detail(format!("driver: {e}")),
    }
}

/// What differs between the engines when binding and decoding.
trait Engine: Database {
    /// What a `u64` parameter (one above `i64::MAX`) is bound as.
    type UInt: for<'q> Encode<'q, Self> + Type<Self>;
    /// Converts a `u64` parameter to [`Engine::UInt`].
    const UINT: fn(u64) -> Self::UInt;
    /// Decodes one cell of a row.
    const CELL: fn(&Self::Row, usize) -> Cell;
    /// What a cell counts against the byte cap at least, from its raw value (not copied).
    const MIN_BYTES: fn(&Self::Row, usize) -> usize;
    /// The rows a statement changed.
    const ROWS_AFFECTED: fn(&Self::QueryResult) -> u64;

    /// `q` with `p` bound.
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Query<'q, Self, <Self as Database>::Arguments<'q>>
    where
        Option<String>: Encode<'q, Self> + Type<Self>,
        bool: Encode<'q, Self> + Type<Self>,
        i64: Encode<'q, Self> + Type<Self>,
        f64: Encode<'q, Self> + Type<Self>,
        &'q str: Encode<'q, Self> + Type<Self>,
    {
        match p {
            Param::Null => q.bind(None::<String>),
            Param::Bool(b) => q.bind(*b),
            Param::Int(x) => q.bind(*x),
            Param::UInt(x) => q.bind(Self::UINT(*x)),
            Param::Float(x) => q.bind(*x),
            Param::Text(s) => q.bind(s.as_str()),
        }
    }

    /// The type `p` is declared as when the statement is prepared.
    fn param_type(p: &Param) -> Self::TypeInfo
    where
        String: Type<Self>,
        bool: Type<Self>,
        i64: Type<Self>,
        f64: Type<Self>,
    {
        match p {
            Param::Null | Param::Text(_) => <String as Type<Self>>::type_info(),
            Param::Bool(_) => <bool as Type<Self>>::type_info(),
            Param::Int(_) => <i64 as Type<Self>>::type_info(),
            Param::UInt(_) => <Self::UInt as Type<Self>>::type_info(),
            Param::Float(_) => <f64 as Type<Self>>::type_info(),
        }
    }
}

impl Engine for Postgres {
    // No unsigned type in PostgreSQL: u64 above i64::MAX goes as NUMERIC.
    type UInt = sqlx::types::BigDecimal;
    const UINT: fn(u64) -> Self::UInt = sqlx::types::BigDecimal::from;
    const CELL: fn(&Self::Row, usize) -> Cell = pg_cell;
    const MIN_BYTES: fn(&Self::Row, usize) -> usize = pg_min_bytes;
    const ROWS_AFFECTED: fn(&Self::QueryResult) -> u64 = PgQueryResult::rows_affected;
}

impl Engine for MySql {
    type UInt = u64;
    const UINT: fn(u64) -> Self::UInt = std::convert::identity;
    const CELL: fn(&Self::Row, usize) -> Cell = mysql_cell;
    const MIN_BYTES: fn(&Self::Row, usize) -> usize = mysql_min_bytes;
    const ROWS_AFFECTED: fn(&Self::QueryResult) -> u64 = MySqlQueryResult::rows_affected;
}

/// What running one statement gave.
struct Ran {
    value: Value,
    /// The statement was left before its end (a cap was reached on a read-only handle): the server
    /// may still be running it and the connection holds unread messages. The caller cancels it
    /// and closes the connection instead of finishing the transaction on it.
    abandoned: bool,
    /// The server's id of the session (PostgreSQL backend pid, MySQL/MariaDB connection id), read
    /// when the statement may be abandoned, for the cancel.
    session: Option<u64>,
}

/// The statement actually sent: the bounded form of a read (see [`crate::wrap`]), whose last
/// column is the server's measure of the row's guarded cells, or the validated text as it is.
struct Plan<'a> {
    sql: Cow<'a, str>,
    guarded: bool,
}

impl<'a> Plan<'a> {
    fn plain(q: &'a ValidatedQuery) -> Self {
        Plan {
            sql: Cow::Borrowed(&q.sql),
            guarded: false,
        }
    }
}

/// Prepares `$sql` on `$conn` with the parameters' types and names its result columns (names and
/// type names). Prepared statements are cached per connection, so a second call is free.
// Macros rather than generic `async fn`s: with the generic version's higher-ranked
// `for<'c> &'c mut DB::Connection: Executor<'c>` bound, rustc cannot prove the future `Send`,
// and the broker runs it inside an axum handler that must be `Send`.
macro_rules! describe {
    ($db:ty, $conn:expr, $sql:expr, $q:expr) => {{
        let conn: &mut <$db as Database>::Connection = $conn;
        let sql: &str = $sql;
        let q: &ValidatedQuery = $q;
        async move {
            let types: Vec<<$db as Database>::TypeInfo> =
                q.params.iter().map(<$db as Engine>::param_type).collect();
            let stmt = (&mut *conn).prepare_with(sql, &types).await?;
            Ok::<Vec<Col>, sqlx::Error>(
                stmt.columns()
                    .iter()
                    .map(|c| Col {
                        name: c.name().to_owned(),
                        ty: c.type_info().name().to_owned(),
                    })
                    .collect(),
            )
        }
    }};
}

/// Runs `$plan` on `$conn`, streaming rows and applying the caps as they arrive.
///
/// A row is returned whole or not at all: at the row cap, or at the first row whose cells would
/// pass `max_bytes` (checked cell by cell, each from its raw size before it is decoded, so an
/// over-budget cell is never copied), the result ends with `truncated: true`. Then, with
/// `$abandon` (read-only handles; any SQLite read), the stream is left at once, unless the
/// server's own `LIMIT` already ended it; otherwise the rest is read and discarded, so the
/// statement completes and, for writes, `rows_affected` counts it all.
macro_rules! stream_rows {
    ($db:ty, $conn:expr, $q:expr, $plan:expr, $columns:expr, $dbc:expr, $abandon:expr) => {{
        let conn: &mut <$db as Database>::Connection = $conn;
        let q: &ValidatedQuery = $q;
        let plan: &Plan<'_> = $plan;
        let columns: &[Col] = $columns;
        let db: &DatabaseConstraints = $dbc;
        let abandon: bool = $abandon;
        async move {
            use sqlx::Row as _;
            let width = columns.len();
            let mut query = sqlx::query::<$db>(plan.sql.as_ref());
            for p in &q.params {
                query = <$db as Engine>::bind(query, p);
            }
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let mut rows = Rows::new(db);
            let mut abandoned = false;
            let mut affected = 0u64;
            #[allow(deprecated)] // the only sqlx API giving both rows and rows_affected of one statement
            let mut stream = query.fetch_many(&mut *conn);
            while let Some(item) = stream.try_next().await.map_err(query_error)? {
                let row = match item {
                    Either::Left(done) => {
                        affected += <$db as Engine>::ROWS_AFFECTED(&done);
                        continue;
                    }
                    Either::Right(row) => row,
                };
                if rows.truncated() {
                    // Past a cap: only rows being drained (or, wrapped, none) get here.
                    if abandon {
                        abandoned = true;
                        break;
                    }
                    continue;
                }
                let by_rows = rows.full();
                let over = by_rows
                    || (plan.guarded
                        && row.try_get::<i64, _>(width).map_or(true, |n| n < 0 || n as u64 > db.max_bytes as u64));
                if rows.offer(over, &names, |i| <$db as Engine>::MIN_BYTES(&row, i), |i| <$db as Engine>::CELL(&row, i)) {
                    continue;
                }
                // A wrapped read cut at the row cap is the server's last row (its LIMIT is one
                // past the cap): reading on costs nothing and leaves the connection clean.
                if abandon && !(plan.guarded && by_rows) {
                    abandoned = true;
                    break;
                }
            }
            drop(stream);
            let out = rows.into_value(&names, q.writes.then_some(affected));
            Ok::<(Value, bool), CallError>((out, abandoned))
        }
    }};
}

/// Commits a successful read-write statement; rolls back everything else.
async fn finish<DB: Database>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<Value, CallError>,
    read_only: bool,
) -> Result<Value, CallError> {
    match result {
        Ok(v) if read_only => {
            tx.rollback().await.map_err(query_error)?;
            Ok(v)
        }
        Ok(v) => {
            tx.commit().await.map_err(query_error)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn limit(db: &DatabaseConstraints) -> Duration {
    Duration::from_millis(db.statement_timeout_ms)
}

/// Longest wait for the cancel of an abandoned statement (one round trip on a pooled session, or
/// a new connection).
pub(crate) const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// Runs a validated statement on a connection inside its transaction (one per engine).
type RunStatement<DB> = for<'c> fn(
    &'c mut <DB as Database>::Connection,
    &'c ValidatedQuery,
    &'c DatabaseConstraints,
) -> BoxFuture<'c, Result<Ran, CallError>>;

/// Stops the statement running in the session with this id, from another session.
type CancelStatement<DB> =
    for<'p> fn(&'p sqlx::Pool<DB>, u64) -> BoxFuture<'p, Result<(), sqlx::Error>>;

/// What differs between PostgreSQL and MySQL/MariaDB around one statement.
struct Server<DB: Database> {
    /// The statements opening a read-only and a read-write transaction.
    begin: (&'static str, &'static str),
    run: RunStatement<DB>,
    cancel: CancelStatement<DB>,
}

/// Runs the statement on a PostgreSQL or MySQL/MariaDB connection in a transaction, within the
/// handle's statement timeout. An abandoned statement is cancelled on the server and its
/// connection closed, never returned to the pool with unread rows (nor finished: a `ROLLBACK`
/// would first read the rest of the result).
async fn run_in_transaction<DB: Database>(
    pool: &sqlx::Pool<DB>,
    q: &ValidatedQuery,
    db: &DatabaseConstraints,
    server: &Server<DB>,
) -> Result<Value, CallError> {
    let mut conn = pool.acquire().await.map_err(connect_error)?;
    if q.taints_session {
        // Whatever happens, the session it may have changed is not handed out again.
        conn.close_on_drop();
    }
    let read_only = db.scope == Scope::ReadOnly;
    let work = async {
        let begin = if read_only {
            server.begin.0
        } else {
            server.begin.1
        };
        let mut tx = Connection::begin_with(&mut *conn, begin)
            .await
            .map_err(query_error)?;
        match (server.run)(&mut tx, q, db).await {
            // Dropping the transaction only queues its ROLLBACK; the connection is closed below.
            Ok(ran) if ran.abandoned => Ok(ran),
            r => {
                let session = r.as_ref().ok().and_then(|ran| ran.session);
                finish(tx, r.map(|ran| ran.value), read_only)
                    .await
                    .map(|value| Ran {
                        value,
                        abandoned: false,
                        session,
                    })
            }
        }
    };
    let res = tokio::time::timeout(limit(db), work).await;
    match res {
        Ok(Ok(ran)) if ran.abandoned => {
            conn.close_on_drop();
            if let Some(id) = ran.session {
                match tokio::time::timeout(CANCEL_WAIT, (server.cancel)(pool, id)).await {
                    Ok(Ok(())) => {}
                    // The closed connection still ends it: the server stops at its next write
                    // or at its own statement timeout.
                    Ok(Err(_)) | Err(_) => {
                        tracing::warn!(
                            "could not cancel a statement cut at a cap; closing its connection"
                        )
                    }
                }
            }
            Ok(ran.value)
        }
        Ok(r) => r.map(|ran| ran.value),
        Err(_) => {
            // The connection may be mid-statement: never hand it out again.
            conn.close_on_drop();
            Err(timeout_error())
        }
    }
}

/// Runs `sql` (one statement naming the session in `id`) on an idle pooled connection, else on a
/// new one made with the pool's options.
macro_rules! on_another_session {
    ($db:ty, $pool:expr, $sql:expr) => {{
        let pool: &sqlx::Pool<$db> = $pool;
        let sql: String = $sql;
        async move {
            if let Some(mut c) = pool.try_acquire() {
                match Executor::execute(&mut *c, sql.as_str()).await {
                    Ok(_) => return Ok(()),
                    // A stale idle connection: try a new one.
                    Err(_) => c.close_on_drop(),
                }
            }
            let mut c = pool.connect_options().connect().await?;
            let r = Executor::execute(&mut c, sql.as_str()).await.map(|_| ());
            let _ = c.close().await;
            r
        }
    }};
}

/// PostgreSQL: `pg_cancel_backend` (allowed on sessions of one's own role).
fn cancel_pg(pool: &sqlx::PgPool, pid: u64) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(on_another_session!(
        Postgres,
        pool,
        format!("SELECT pg_cancel_backend({pid})")
    ))
}

/// MySQL/MariaDB: `KILL QUERY` (allowed on one's own connections).
fn cancel_mysql(pool: &sqlx::MySqlPool, id: u64) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(on_another_session!(MySql, pool, format!("KILL QUERY {id}")))
}

/// The savepoint a PostgreSQL transaction returns to when the server refuses the bounded form
/// of a read (a failed statement aborts the whole transaction otherwise).
const PG_SAVEPOINT: &str = "airlock_wrap";

/// PostgreSQL: the statement timeout and literal syntax for this transaction (plus, when the
/// statement may be abandoned, the backend pid; for a read, a savepoint), then the bounded form
/// of a read or the statement as validated.
fn run_pg<'c>(
    tx: &'c mut sqlx::PgConnection,
    q: &'c ValidatedQuery,
    db: &'c DatabaseConstraints,
) -> BoxFuture<'c, Result<Ran, CallError>> {
    Box::pin(async move {
        use sqlx::Row as _;
        let abandon = db.scope == Scope::ReadOnly;
        let wrap = !q.writes;
        // standard_conforming_strings: the server reads backslashes in '...' as the validator did.
        let mut setup = format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL standard_conforming_strings = on",
            db.statement_timeout_ms
        );
        // The database enforces the handle too: a read runs under its least-privilege role.
        // (The name is checked at load: letters, digits and `_`; quoted all the same.)
        if let (Scope::ReadOnly, Some(role)) = (db.scope, &db.query_role) {
            setup.push_str("; SET LOCAL ROLE \"");
            setup.push_str(&role.replace('"', "\"\""));
            setup.push('"');
        }
        if abandon {
            setup.push_str("; SELECT pg_backend_pid()");
        }
        if wrap {
            setup.push_str("; SAVEPOINT ");
            setup.push_str(PG_SAVEPOINT);
        }
        // A plain `&str` runs over the simple-query protocol (all statements in one round
        // trip); `raw_sql(..)` would make this future non-`Send` (sqlx's higher-ranked
        // `Executor` bound).
        let session = Executor::fetch_all(&mut *tx, setup.as_str())
            .await
            .map_err(query_error)?
            .first()
            .and_then(|r| r.try_get::<i32, _>(0).ok())
            .and_then(|pid| u64::try_from(pid).ok());
        let columns = describe!(Postgres, &mut *tx, &q.sql, q)
            .await
            .map_err(query_error)?;
        let mut plan = Plan::plain(q);
        if wrap {
            let sql = crate::wrap::pg(&q.sql, &columns, db);
            match describe!(Postgres, &mut *tx, &sql, q).await {
                Ok(_) => {
                    plan = Plan {
                        sql: Cow::Owned(sql),
                        guarded: true,
                    }
                }
                Err(e) => {
                    tracing::debug!(code = ?db_code(&e), "bounded form refused; capping while streaming");
                    let back = format!("ROLLBACK TO SAVEPOINT {PG_SAVEPOINT}");
                    Executor::execute(&mut *tx, back.as_str())
                        .await
                        .map_err(query_error)?;
                }
            }
        }
        let (value, abandoned) =
            stream_rows!(Postgres, &mut *tx, q, &plan, &columns, db, abandon).await?;
        Ok(Ran {
            value,
            abandoned,
            session,
        })
    })
}

/// MySQL/MariaDB: the session already holds the statement timeout (`mysql_session`). Reads the
/// connection id when the statement may be abandoned, then runs the bounded form of a read or
/// the statement as validated.
fn run_mysql<'c>(
    tx: &'c mut sqlx::MySqlConnection,
    q: &'c ValidatedQuery,
    db: &'c DatabaseConstraints,
) -> BoxFuture<'c, Result<Ran, CallError>> {
    Box::pin(async move {
        use sqlx::Row as _;
        let abandon = db.scope == Scope::ReadOnly;
        let session = if abandon {
            let row = Executor::fetch_one(&mut *tx, "SELECT CAST(CONNECTION_ID() AS SIGNED)")
                .await
                .map_err(query_error)?;
            row.try_get::<i64, _>(0)
                .ok()
                .and_then(|id| u64::try_from(id).ok())
        } else {
            None
        };
        let columns = describe!(MySql, &mut *tx, &q.sql, q)
            .await
            .map_err(query_error)?;
        let mut plan = Plan::plain(q);
        if !q.writes {
            if let Some(sql) = crate::wrap::mysql(&q.sql, &columns, db) {
                match describe!(MySql, &mut *tx, &sql, q).await {
                    Ok(_) => {
                        plan = Plan {
                            sql: Cow::Owned(sql),
                            guarded: true,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(code = ?db_code(&e), "bounded form refused; capping while streaming")
                    }
                }
            }
        }
        let (value, abandoned) =
            stream_rows!(MySql, &mut *tx, q, &plan, &columns, db, abandon).await?;
        Ok(Ran {
            value,
            abandoned,
            session,
        })
    })
}

/// The server's code of a failed statement (an enumeration, safe to log), without its message.
fn db_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

async fn run_sqlite(
    pool: &std::sync::Arc<crate::lite::LitePool>,
    q: &ValidatedQuery,
    db: &DatabaseConstraints,
) -> Result<Value, CallError> {
    let mut conn = pool.acquire().await?;
    if q.taints_session {
        conn.close_on_drop();
    }
    // Most reads end within `lite::INLINE`: answered here, with no hand-off of the worker.
    if let Some(v) = conn.try_inline(q, db) {
        return Ok(v);
    }
    let read_only = db.scope == Scope::ReadOnly;
    blocking(|| conn.run(q, db, read_only))
}

/// Runs `f`, which blocks on SQLite: on a worker of a multi-threaded Tokio runtime inside
/// `block_in_place` (the runtime hands this worker's other tasks to another thread meanwhile);
/// elsewhere (a current-thread runtime, a blocking-pool thread) directly. The store's writer
/// runs its SQLite work the same way.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How a SQLite handle's connections open, from what sqlx parsed of its URL (sqlx's own URL
/// rules stay the handle's contract): the file, never created; read-only, with `query_only`,
/// for a read-only handle or `mode=ro`; the URL's cache, `immutable` and `vfs`.
fn lite_target(o: &SqliteConnectOptions, db: &DatabaseConstraints) -> crate::lite::Target {
    use rusqlite::OpenFlags as F;
    let url = o.to_url_lossy();
    let arg = |key: &str| url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
    let mode = arg("mode").unwrap_or_default();
    let read_only = db.scope == Scope::ReadOnly || mode == "ro";
    let mut flags = F::SQLITE_OPEN_URI | F::SQLITE_OPEN_NO_MUTEX;
    flags |= if read_only { F::SQLITE_OPEN_READ_ONLY } else { F::SQLITE_OPEN_READ_WRITE };
    if mode == "memory" {
        flags |= F::SQLITE_OPEN_MEMORY;
    }
    flags |= if arg("cache").as_deref() == Some("shared") { F::SQLITE_OPEN_SHARED_CACHE } else { F::SQLITE_OPEN_PRIVATE_CACHE };
    let mut path = o.get_filename().to_path_buf();
    if arg("immutable").as_deref() == Some("true") {
        // As sqlx opens it: a `file:` URI, which SQLite parses.
        let name = percent_encoding::percent_encode(path.as_os_str().as_encoded_bytes(), percent_encoding::NON_ALPHANUMERIC);
        path = std::path::PathBuf::from(format!("file:{name}?immutable=true"));
    }
    crate::lite::Target {
        path,
        flags,
        vfs: arg("vfs"),
        query_only: db.scope == Scope::ReadOnly,
        busy: Duration::from_millis(db.statement_timeout_ms),
    }
}

/// The broker awaits `execute` inside an axum handler, which must be `Send`.
#[allow(dead_code)]
fn execute_future_is_send(
    e: &'static SqlExecutor,
    h: &'static Handle,
    q: &'static ValidatedQuery,
    s: &'static Secret,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(e.execute(h, q, s));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraints() -> DatabaseConstraints {
        DatabaseConstraints {
            scope: Scope::ReadOnly,
            tables: None,
            allow_catalogs: false,
            max_rows: 10,
            max_bytes: 100,
            statement_timeout_ms: 1000,
            url: None,
            ..DatabaseConstraints::default()
        }
    }

    /// What a SQLite handle's URL opens: never a new file; read-only for a read-only handle or
    /// `mode=ro`; `query_only` for a read-only handle; the URL's cache, `immutable` and `vfs`.
    #[test]
    fn sqlite_urls_become_open_flags_that_never_create() {
        use rusqlite::OpenFlags as F;
        let target = |url: &str, scope: Scope| {
            let o = SqliteConnectOptions::from_str(url).unwrap();
            lite_target(&o, &DatabaseConstraints { scope, ..constraints() })
        };
        for url in ["sqlite:///srv/a.db", "sqlite:///srv/a.db?mode=rwc", "sqlite:///srv/a.db?mode=rw", "sqlite:///srv/a.db?mode=ro"] {
            for scope in [Scope::ReadOnly, Scope::ReadWrite] {
                let t = target(url, scope);
                assert!(!t.flags.contains(F::SQLITE_OPEN_CREATE), "{url} {scope:?}");
                assert!(t.flags.contains(F::SQLITE_OPEN_PRIVATE_CACHE | F::SQLITE_OPEN_NO_MUTEX));
                let read_only = scope == Scope::ReadOnly || url.ends_with("mode=ro");
                assert_eq!(t.flags.contains(F::SQLITE_OPEN_READ_ONLY), read_only, "{url} {scope:?}");
                assert_eq!(t.flags.contains(F::SQLITE_OPEN_READ_WRITE), !read_only, "{url} {scope:?}");
                assert_eq!(t.query_only, scope == Scope::ReadOnly);
                assert_eq!(t.path, std::path::Path::new("/srv/a.db"));
                assert_eq!(t.vfs, None);
            }
        }
        let t = target("sqlite:///srv/a%20b.db?immutable=true&vfs=unix-none&cache=shared", Scope::ReadWrite);
        assert_eq!(t.path, std::path::Path::new("file:%2Fsrv%2Fa%20b%2Edb?immutable=true"));
        assert_eq!(t.vfs.as_deref(), Some("unix-none"));
        assert!(t.flags.contains(F::SQLITE_OPEN_SHARED_CACHE));
        assert_eq!(t.busy, Duration::from_millis(1000));
    }

    #[test]
    fn fingerprint_follows_the_secret_and_the_handle_but_holds_no_value() {
        let d = constraints();
        let a = fingerprint(
            HandleKind::Postgres,
            &d,
            &Secret::from_str_value("postgres://u:one@h/db"),
        );
        assert_eq!(
            a,
            fingerprint(
                HandleKind::Postgres,
                &d,
                &Secret::from_str_value("postgres://u:one@h/db")
            )
        );
        assert_ne!(
            a,
            fingerprint(
                HandleKind::Postgres,
                &d,
                &Secret::from_str_value("postgres://u:two@h/db")
            )
        );
        assert_ne!(
            a,
            fingerprint(
                HandleKind::Mysql,
                &d,
                &Secret::from_str_value("postgres://u:one@h/db")
            )
        );
        let mut rw = d.clone();
        rw.scope = Scope::ReadWrite;
        assert_ne!(
            a,
            fingerprint(
                HandleKind::Postgres,
                &rw,
                &Secret::from_str_value("postgres://u:one@h/db")
            )
        );
        assert!(!a.windows(3).any(|w| w == b"one"));
    }

    #[test]
    fn t12_bad_secret_urls_are_refused_without_echo() {
        let d = constraints();
        for kind in [HandleKind::Postgres, HandleKind::Mysql, HandleKind::Sqlite] {
            let e = match build_pool(kind, &d, &Secret::from_str_value("hunter2 is not a url")) {
                Err(e) => e,
                Ok(_) => panic!("{kind:?} accepted a non-URL secret"),
            };
            assert_eq!(e.code, ErrorCode::SecretUnavailable);
            assert!(
                !e.message.contains("hunter2") && !e.detail.unwrap_or_default().contains("hunter2")
            );
        }
        assert!(build_pool(HandleKind::Postgres, &d, &Secret::new(vec![0xff, 0xfe])).is_err());
    }

    #[test]
    fn driver_errors_map_to_fixed_codes() {
        assert_eq!(
            query_error(sqlx::Error::PoolTimedOut).code,
            ErrorCode::UpstreamUnavailable
        );
        let e = query_error(sqlx::Error::Protocol("postgres://u:pw@h/db broke".into()));
        assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
        assert!(!e.message.contains("pw@h"));
        let e = connect_error(sqlx::Error::Configuration("postgres://u:pw@h/db".into()));
        assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
        assert_eq!(e.message, ErrorCode::UpstreamUnavailable.default_message());
    }
}
