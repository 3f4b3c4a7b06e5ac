//! Execution: connection pools per handle, transactions, timeouts, capped streaming of rows.
//!
//! This is the only place a database secret is exposed: when connect options are built for a
//! new pool, and as input of the pool's cache key (a SHA-256 fingerprint, so a rotated secret
//! gets a new pool and the value itself is never kept outside the driver's options).
//!
//! Every error is mapped to a fixed agent message; the driver's text, which may name the DSN,
//! goes only to `CallError::detail` (T12).

use crate::decode::{cell_bytes, mysql_cell, pg_cell, sqlite_cell, Cell};
use crate::validate::{Param, ValidatedQuery};
use airlock_core::config::{DatabaseConstraints, Handle, HandleKind, Scope};
use airlock_core::{CallError, ErrorCode, HandleName, Secret};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use serde_json::{json, Value};
use sqlx::mysql::MySqlQueryResult;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgQueryResult;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, Postgres};
use sqlx::query::Query;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Column, Connection, Database, Either, Encode, Executor, Statement, Type};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connections per handle pool.
const MAX_CONNECTIONS: u32 = 4;
/// Longest wait for a connection (capped by the statement timeout).
const MAX_ACQUIRE: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
    Lite(sqlx::SqlitePool),
}

impl Pool {
    async fn close(&self) {
        match self {
            Pool::Pg(p) => p.close().await,
            Pool::My(p) => p.close().await,
            Pool::Lite(p) => p.close().await,
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
        }
    }

    /// Parse and check against the handle's kind and `DatabaseConstraints`. No I/O.
    pub fn validate(handle: &Handle, args: &crate::QueryArgs) -> Result<ValidatedQuery, CallError> {
        crate::validate::validate(handle, args)
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
                let begin = ("BEGIN READ ONLY", "BEGIN");
                run_in_transaction(&p, q, db, begin, run_pg).await
            }
            Pool::My(p) => {
                let begin = (
                    "START TRANSACTION READ ONLY",
                    "START TRANSACTION READ WRITE",
                );
                run_in_transaction(&p, q, db, begin, run_mysql).await
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

fn pool_options<DB: Database>(db: &DatabaseConstraints) -> PoolOptions<DB> {
    PoolOptions::<DB>::new()
        .max_connections(MAX_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(
            Duration::from_millis(db.statement_timeout_ms)
                .clamp(Duration::from_secs(1), MAX_ACQUIRE),
        )
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
            let mut o = o
                .create_if_missing(false)
                .busy_timeout(Duration::from_millis(db.statement_timeout_ms.min(5000)));
            if read_only {
                o = o.read_only(true).pragma("query_only", "ON");
            }
            // A local file does not go stale: no ping round trip on every acquire.
            let opts: SqlitePoolOptions = pool_options(db).test_before_acquire(false);
            Ok(Pool::Lite(opts.connect_lazy_with(o)))
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
            // 3024 max_execution_time (MySQL), 9 SQLITE_INTERRUPT.
            let timed_out = code == "57014"
                || matches!(mysql_number, Some(1969 | 3024))
                || (d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() && code == "9");
            if timed_out {
                return CallError::new(ErrorCode::UpstreamTimeout).detail(format!("database: {e}"));
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
    const ROWS_AFFECTED: fn(&Self::QueryResult) -> u64 = PgQueryResult::rows_affected;
}

impl Engine for MySql {
    type UInt = u64;
    const UINT: fn(u64) -> Self::UInt = std::convert::identity;
    const CELL: fn(&Self::Row, usize) -> Cell = mysql_cell;
    const ROWS_AFFECTED: fn(&Self::QueryResult) -> u64 = MySqlQueryResult::rows_affected;
}

impl Engine for Sqlite {
    // SQLite integers are i64: larger unsigned values go as REAL.
    type UInt = f64;
    const UINT: fn(u64) -> Self::UInt = |x| x as f64;
    const CELL: fn(&Self::Row, usize) -> Cell = sqlite_cell;
    const ROWS_AFFECTED: fn(&Self::QueryResult) -> u64 = SqliteQueryResult::rows_affected;
}

/// Runs the statement on `conn`, streaming rows until `max_rows` or `max_bytes` is reached.
// A macro rather than a generic `async fn`: with the generic version's higher-ranked
// `for<'c> &'c mut DB::Connection: Executor<'c>` bound, rustc cannot prove the future `Send`,
// and the broker runs it inside an axum handler that must be `Send`.
macro_rules! run_statement {
    ($db:ty, $conn:expr, $q:expr, $dbc:expr) => {{
        let conn: &mut <$db as Database>::Connection = $conn;
        let q: &ValidatedQuery = $q;
        let db: &DatabaseConstraints = $dbc;
        async move {
            use sqlx::Row as _;
            let types: Vec<<$db as Database>::TypeInfo> = q.params.iter().map(<$db as Engine>::param_type).collect();
            // Prepared first so the result names its columns even when no row comes back.
            let columns: Vec<String> = {
                let stmt = (&mut *conn)
                    .prepare_with(&q.sql, &types)
                    .await
                    .map_err(query_error)?;
                stmt.columns().iter().map(|c| c.name().to_owned()).collect()
            };
            let mut query = sqlx::query::<$db>(&q.sql);
            for p in &q.params {
                query = <$db as Engine>::bind(query, p);
            }
            let mut rows: Vec<Value> = Vec::new();
            let mut bytes = 0usize;
            let mut truncated = false;
            let mut affected = 0u64;
            let mut unsupported: Vec<String> = Vec::new();
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
                if truncated {
                    // Only writes get here: drain so the statement completes and is counted.
                    continue;
                }
                if rows.len() >= db.max_rows {
                    truncated = true;
                } else {
                    let mut cells = Vec::with_capacity(row.len());
                    let mut row_bytes = 0usize;
                    for i in 0..row.len() {
                        let v = match <$db as Engine>::CELL(&row, i) {
                            Cell::Value(v) => v,
                            Cell::Unsupported(ty) => {
                                let name = columns.get(i).cloned().unwrap_or_else(|| i.to_string());
                                let note = format!("{name} ({ty})");
                                if !unsupported.contains(&note) {
                                    unsupported.push(note);
                                }
                                Value::Null
                            }
                        };
                        row_bytes += cell_bytes(&v);
                        cells.push(v);
                    }
                    if bytes + row_bytes > db.max_bytes {
                        truncated = true;
                    } else {
                        bytes += row_bytes;
                        rows.push(Value::Array(cells));
                    }
                }
                if truncated && !q.writes {
                    break;
                }
            }
            drop(stream);
            let mut out = json!({
                "columns": columns,
                "row_count": rows.len(),
                "rows": rows,
                "truncated": truncated,
            });
            if q.writes {
                out["rows_affected"] = json!(affected);
            }
            if !unsupported.is_empty() {
                out["unsupported_columns"] = json!(unsupported);
            }
            Ok(out)

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

/// Runs a validated statement on a connection inside its transaction (one per engine, each an
/// expansion of `run_statement!`).
type RunStatement<DB> = for<'c> fn(
    &'c mut <DB as Database>::Connection,
    &'c ValidatedQuery,
    &'c DatabaseConstraints,
) -> BoxFuture<'c, Result<Value, CallError>>;

/// Runs the statement on a PostgreSQL or MySQL/MariaDB connection in a transaction that
/// `begin` opens (its read-only and its read-write statement), within the handle's statement
/// timeout.
async fn run_in_transaction<DB: Database>(
    pool: &sqlx::Pool<DB>,
    q: &ValidatedQuery,
    db: &DatabaseConstraints,
    begin: (&'static str, &'static str),
    run: RunStatement<DB>,
) -> Result<Value, CallError> {
    let mut conn = pool.acquire().await.map_err(connect_error)?;
    let read_only = db.scope == Scope::ReadOnly;
    let work = async {
        let begin = if read_only { begin.0 } else { begin.1 };
        let mut tx = Connection::begin_with(&mut *conn, begin)
            .await
            .map_err(query_error)?;
        let r = run(&mut tx, q, db).await;
        finish(tx, r, read_only).await
    };
    let res = tokio::time::timeout(limit(db), work).await;
    match res {
        Ok(r) => r,
        Err(_) => {
            // The connection may be mid-statement: never hand it out again.
            conn.close_on_drop();
            Err(timeout_error())
        }
    }
}

/// PostgreSQL: the statement timeout and literal syntax for this transaction, then the
/// statement.
fn run_pg<'c>(
    tx: &'c mut sqlx::PgConnection,
    q: &'c ValidatedQuery,
    db: &'c DatabaseConstraints,
) -> BoxFuture<'c, Result<Value, CallError>> {
    Box::pin(async move {
        // standard_conforming_strings: the server reads backslashes in '...' as the validator did.
        let setup = format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL standard_conforming_strings = on",
            db.statement_timeout_ms
        );
        // A plain `&str` runs over the simple-query protocol (both statements in one round
        // trip); `raw_sql(..).execute(..)` would make this future non-`Send` (sqlx's
        // higher-ranked `Executor` bound).
        Executor::execute(&mut *tx, setup.as_str())
            .await
            .map_err(query_error)?;
        run_statement!(Postgres, tx, q, db).await
    })
}

/// MySQL/MariaDB: the session already holds the statement timeout (`mysql_session`).
fn run_mysql<'c>(
    tx: &'c mut sqlx::MySqlConnection,
    q: &'c ValidatedQuery,
    db: &'c DatabaseConstraints,
) -> BoxFuture<'c, Result<Value, CallError>> {
    Box::pin(run_statement!(MySql, tx, q, db))
}

async fn run_sqlite(
    pool: &sqlx::SqlitePool,
    q: &ValidatedQuery,
    db: &DatabaseConstraints,
) -> Result<Value, CallError> {
    let mut conn = pool.acquire().await.map_err(connect_error)?;
    let read_only = db.scope == Scope::ReadOnly;
    let deadline = Instant::now() + limit(db);
    // SQLite has no server-side timeout: a progress handler interrupts the statement at the
    // deadline (the tokio timeout alone would leave the worker thread running it).
    conn.lock_handle()
        .await
        .map_err(connect_error)?
        .set_progress_handler(1000, move || Instant::now() < deadline);
    let work = async {
        let mut tx = match Connection::begin_with(
            &mut *conn,
            if read_only {
                "BEGIN"
            } else {
                "BEGIN IMMEDIATE"
            },
        )
        .await
        {
            Ok(tx) => tx,
            Err(e) => return (Err(query_error(e)), false),
        };
        let r: Result<Value, CallError> = run_statement!(Sqlite, &mut tx, q, db).await;
        let r = match r {
            Err(e) if e.code == ErrorCode::QueryFailed && Instant::now() >= deadline => {
                Err(timeout_error().detail(e.detail.unwrap_or_default()))
            }
            other => other,
        };
        // The handler must go before COMMIT/ROLLBACK, which it would interrupt past the deadline.
        let removed = match tx.lock_handle().await {
            Ok(mut h) => {
                h.remove_progress_handler();
                true
            }
            Err(_) => false,
        };
        (finish(tx, r, read_only).await, removed)
    };
    let res = tokio::time::timeout(limit(db) + Duration::from_millis(250), work).await;
    match res {
        Ok((r, true)) => r,
        Ok((r, false)) => {
            conn.close_on_drop();
            r
        }
        Err(_) => {
            conn.close_on_drop();
            Err(timeout_error())
        }
    }
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
        }
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
