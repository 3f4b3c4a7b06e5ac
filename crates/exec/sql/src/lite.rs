//! `query_db` on a SQLite handle: the statement runs on the calling thread.
//!
//! SQLite is a library, not a server: a statement is a function call into it. Through sqlx each
//! connection lives on a thread of its own and every step of a call (`BEGIN`, the statement's
//! description, its rows, `ROLLBACK`) is a hand-off to that thread and a wake-up back. Here each
//! connection is a `rusqlite` connection that the call takes from its handle's set and uses
//! directly, inside `block_in_place` on a multi-threaded runtime (the runtime hands the worker's
//! other tasks to another thread meanwhile), so a call is one stretch of work on one thread.
//!
//! A read on a connection already open is first tried on the async worker itself, with no
//! hand-off at all, for at most [`INLINE`] and without waiting for a busy database: most reads
//! end well within that (`SELECT 1` takes a few microseconds). One that does not, or that fails,
//! is rolled back and run again inside `block_in_place`, whose answer stands; a read changes
//! nothing, so the first try leaves no trace. Writes, and statements that may change the
//! session, always run inside `block_in_place` (a `COMMIT` may wait for the disk).
//!
//! SQLite has no server-side timeout: each connection gets a progress handler when it opens,
//! which interrupts a statement past the [`Deadline`] the call arms (an atomic store) and
//! disarms before `COMMIT` or `ROLLBACK`. A busy database is waited for at most the statement
//! timeout (capped at 5 s). A read left at a cap is simply not stepped further: the statement
//! is reset when its rows are dropped, and the connection is clean for the next call.
//!
//! The set is small (the executor's per-handle bound, a permit each), opens connections when
//! first needed, and drops those idle for [`IDLE`] or older than [`LIFETIME`] when it hands one
//! out. A connection whose transaction could not be ended, or whose session a statement may have
//! changed, is closed rather than kept.

use crate::decode::{sqlite_cell, sqlite_min_bytes};
use crate::rows::Rows;
use crate::validate::{Param, ValidatedQuery};
use airlock_core::config::DatabaseConstraints;
use airlock_core::{CallError, ErrorCode};
use rusqlite::types::ToSqlOutput;
use rusqlite::OpenFlags;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An idle connection older than this is closed rather than handed out.
const IDLE: Duration = Duration::from_secs(300);
/// A connection older than this is closed rather than handed out.
const LIFETIME: Duration = Duration::from_secs(1800);
/// Virtual machine instructions between two checks of the deadline.
const CHECK_EVERY: i32 = 1000;
/// Longest wait for a busy database (a writer elsewhere holding its lock).
const MAX_BUSY: Duration = Duration::from_secs(5);
/// Statements each connection keeps prepared.
const PREPARED: usize = 64;
/// Longest a read runs on the async worker before it is run again off it.
pub(crate) const INLINE: Duration = Duration::from_micros(100);

/// What a connection's progress handler reads: the running statement's deadline, none while
/// disarmed.
#[derive(Debug)]
pub(crate) struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`; `u64::MAX` while disarmed.
    at: AtomicU64,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline { base: Instant::now(), at: AtomicU64::new(u64::MAX) }
    }

    /// Statements run from now on are interrupted at `at`.
    pub(crate) fn arm(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos().min(u128::from(u64::MAX - 1)) as u64;
        self.at.store(ns, Ordering::Release);
    }

    /// Nothing is interrupted (for `COMMIT` and `ROLLBACK`, and while idle).
    pub(crate) fn disarm(&self) {
        self.at.store(u64::MAX, Ordering::Release);
    }

    /// The handler's answer: true to go on.
    fn go_on(&self) -> bool {
        let at = self.at.load(Ordering::Acquire);
        at == u64::MAX || (self.base.elapsed().as_nanos() as u64) < at
    }
}

/// How the handle's connections are opened: what sqlx made of the handle's URL, kept as
/// SQLite's own open arguments.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The file (or a `file:` URI, which SQLite parses itself).
    pub(crate) path: PathBuf,
    pub(crate) flags: OpenFlags,
    pub(crate) vfs: Option<String>,
    /// `PRAGMA query_only`: the connection refuses to write whatever the file's permissions.
    pub(crate) query_only: bool,
    pub(crate) busy: Duration,
}

impl Target {
    /// Opens a connection: never creating the file, foreign keys enforced (as sqlx does by
    /// default), the handler installed.
    fn open(&self) -> rusqlite::Result<Open> {
        let conn = match &self.vfs {
            Some(vfs) => rusqlite::Connection::open_with_flags_and_vfs(&self.path, self.flags, vfs.as_str())?,
            None => rusqlite::Connection::open_with_flags(&self.path, self.flags)?,
        };
        conn.busy_timeout(self.busy.min(MAX_BUSY))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        if self.query_only {
            conn.pragma_update(None, "query_only", "ON")?;
        }
        conn.set_prepared_statement_cache_capacity(PREPARED);
        let deadline = Arc::new(Deadline::new());
        let d = Arc::clone(&deadline);
        conn.progress_handler(CHECK_EVERY, Some(move || !d.go_on()));
        let now = Instant::now();
        Ok(Open { conn, deadline, born: now, idle_since: now })
    }
}

struct Open {
    conn: rusqlite::Connection,
    deadline: Arc<Deadline>,
    born: Instant,
    idle_since: Instant,
}

/// The connections of one SQLite handle.
pub(crate) struct LitePool {
    target: Target,
    idle: Mutex<Vec<Open>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    closed: AtomicBool,
    /// Calls answered on the async worker, and calls run inside `block_in_place`.
    inline: AtomicU64,
    off_worker: AtomicU64,
}

impl LitePool {
    /// A set of at most `max` connections to `target`, opened when first needed; a call waits at
    /// most `acquire_timeout` for one.
    pub(crate) fn new(target: Target, max: usize, acquire_timeout: Duration) -> Arc<LitePool> {
        Arc::new(LitePool {
            target,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max)),
            acquire_timeout,
            closed: AtomicBool::new(false),
            inline: AtomicU64::new(0),
            off_worker: AtomicU64::new(0),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Open>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The right to use one of the handle's connections, for one call (the connection itself is
    /// taken, or opened, by [`LiteConn::run`]). `upstream-unavailable` when none frees up in
    /// time or after [`LitePool::close`].
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<LiteConn, CallError> {
        let unavailable = |why: &str| CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("connect: {why}"));
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the handle's connections were closed"));
        }
        let permit = tokio::time::timeout(self.acquire_timeout, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| unavailable("no connection freed up in time"))?
            .map_err(|_| unavailable("the handle's connections were closed"))?;
        Ok(LiteConn { open: None, pool: Arc::clone(self), keep: true, _permit: permit })
    }

    /// An idle connection young enough to use; those too old are dropped (closed).
    fn take_idle(&self) -> Option<Open> {
        let now = Instant::now();
        let mut idle = self.idle();
        while let Some(o) = idle.pop() {
            if now.duration_since(o.idle_since) < IDLE && now.duration_since(o.born) < LIFETIME {
                return Some(o);
            }
        }
        None
    }

    /// Calls answered on the async worker, and calls run inside `block_in_place`.
    pub(crate) fn runs(&self) -> (u64, u64) {
        (self.inline.load(Ordering::Relaxed), self.off_worker.load(Ordering::Relaxed))
    }

    /// Closes the idle connections; those in use close when they come back.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(std::mem::take(&mut *self.idle()));
    }
}

/// One call's use of a handle's connection; the connection goes back to its set when dropped,
/// unless [`LiteConn::close_on_drop`] was called, the transaction could not be ended, or the set
/// was closed.
pub(crate) struct LiteConn {
    open: Option<Open>,
    pool: Arc<LitePool>,
    keep: bool,
    _permit: OwnedSemaphorePermit,
}

impl LiteConn {
    /// The connection is closed when dropped, not kept (its session may hold state a later call
    /// must not see).
    pub(crate) fn close_on_drop(&mut self) {
        self.keep = false;
    }

    /// Tries a read on this thread for at most [`INLINE`], with no wait for a busy database: on a
    /// connection already open, for a statement that neither writes nor may change the session.
    /// `Some` with the answer when it ended in time; `None` when it was not tried, or was cut or
    /// failed and rolled back, so that [`LiteConn::run`] runs it again (whose answer stands).
    pub(crate) fn try_inline(&mut self, q: &ValidatedQuery, db: &DatabaseConstraints) -> Option<Value> {
        if q.writes || q.taints_session || db.statement_timeout_ms == 0 {
            return None;
        }
        let open = self.pool.take_idle()?;
        let conn = &self.open.insert(open).conn;
        if conn.busy_timeout(Duration::ZERO).is_err() {
            self.open = None;
            return None;
        }
        let r = self.attempt(q, db, true, Instant::now() + INLINE);
        let restored = self.open.as_ref().is_some_and(|o| o.conn.busy_timeout(self.pool.target.busy.min(MAX_BUSY)).is_ok());
        if !restored || !self.keep {
            // Not fit to run the call again: another connection will.
            self.open = None;
            self.keep = true;
        }
        match r {
            Ok(v) => {
                self.pool.inline.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(_) => None,
        }
    }

    /// Runs `q` in a transaction (`BEGIN`, or `BEGIN IMMEDIATE` to write), within the statement
    /// timeout and the caps, on this thread: blocking, so called through `blocking`. A
    /// successful statement of a read-write handle is committed, everything else rolled back.
    pub(crate) fn run(&mut self, q: &ValidatedQuery, db: &DatabaseConstraints, read_only: bool) -> Result<Value, CallError> {
        self.pool.off_worker.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_millis(db.statement_timeout_ms);
        self.attempt(q, db, read_only, deadline)
    }

    /// One run of `q` on this call's connection (taken or opened first), interrupted at
    /// `deadline`.
    fn attempt(&mut self, q: &ValidatedQuery, db: &DatabaseConstraints, read_only: bool, deadline: Instant) -> Result<Value, CallError> {
        let open = match self.open.take().or_else(|| self.pool.take_idle()) {
            Some(o) => o,
            None => self.pool.target.open().map_err(|e| CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("connect: {e}")))?,
        };
        let open = self.open.insert(open);
        open.deadline.arm(deadline);
        let conn = &open.conn;
        let begin = if read_only { "BEGIN" } else { "BEGIN IMMEDIATE" };
        let r = match conn.prepare_cached(begin).and_then(|mut s| s.execute([])) {
            Ok(_) => statement(conn, q, db),
            Err(e) => Err(query_error(e)),
        };
        let r = match r {
            Err(e) if e.code == ErrorCode::QueryFailed && Instant::now() >= deadline => {
                Err(CallError::new(ErrorCode::UpstreamTimeout).detail(e.detail.unwrap_or_else(|| "statement timeout".into())))
            }
            other => other,
        };
        // The handler stands down first: past the deadline it would interrupt these too.
        open.deadline.disarm();
        let end = if r.is_ok() && !read_only { "COMMIT" } else { "ROLLBACK" };
        let ended = if conn.is_autocommit() {
            // SQLite already rolled the transaction back (some errors do), or none began.
            Ok(())
        } else {
            conn.prepare_cached(end).and_then(|mut s| s.execute([])).map(|_| ())
        };
        if !conn.is_autocommit() {
            // A failed COMMIT leaves the transaction open: it is rolled back, or the connection
            // is not used again.
            let _ = conn.prepare_cached("ROLLBACK").and_then(|mut s| s.execute([]));
            if !conn.is_autocommit() {
                self.keep = false;
            }
        }
        match (r, ended) {
            (Ok(_), Err(e)) => Err(query_error(e)),
            (r, _) => r,
        }
    }
}

impl Drop for LiteConn {
    fn drop(&mut self) {
        if let Some(mut o) = self.open.take() {
            if self.keep && !self.pool.closed.load(Ordering::Acquire) {
                o.deadline.disarm();
                o.idle_since = Instant::now();
                self.pool.idle().push(o);
            }
            // Otherwise dropped here, which closes it.
        }
    }
}

/// Runs one validated statement and gathers its rows under the caps. A read is left at a cap (a
/// SQLite read changes nothing, whatever the handle's scope); a write is stepped to its end so
/// that it completes and `rows_affected` counts all of it.
fn statement(conn: &rusqlite::Connection, q: &ValidatedQuery, db: &DatabaseConstraints) -> Result<Value, CallError> {
    let mut stmt = conn.prepare_cached(&q.sql).map_err(query_error)?;
    bind(&mut stmt, &q.params)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = Rows::new(db);
    let mut it = stmt.raw_query();
    while let Some(row) = it.next().map_err(query_error)? {
        if rows.truncated() {
            if !q.writes {
                break;
            }
            continue;
        }
        let cell = |i: usize| row.get_ref(i).map_or(crate::decode::Cell::Unsupported("?".into()), sqlite_cell);
        let min = |i: usize| row.get_ref(i).map_or(0, sqlite_min_bytes);
        if !rows.offer(rows.full(), &columns, min, cell) && !q.writes {
            break;
        }
    }
    drop(it);
    let affected = q.writes.then(|| conn.changes());
    Ok(rows.into_value(&columns, affected))
}

/// Binds the parameters as sqlx binds them on SQLite: `?` in order, `?NNN` and `$NNN` by
/// number; a parameter past the values given stays NULL, as SQLite leaves it.
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Param]) -> Result<(), CallError> {
    let mut next = 0usize;
    for i in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(i) {
            None => {
                next += 1;
                next
            }
            Some(name) => name
                .strip_prefix('?')
                .or_else(|| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| CallError::new(ErrorCode::QueryFailed).detail("a parameter name that is not ?NNN or $NNN"))?,
        };
        let Some(p) = n.checked_sub(1).and_then(|k| params.get(k)) else {
            break;
        };
        stmt.raw_bind_parameter(i, value(p)).map_err(query_error)?;
    }
    Ok(())
}

/// A parameter as SQLite stores it: booleans as 0 or 1, integers beyond `i64` as REAL.
fn value(p: &Param) -> ToSqlOutput<'_> {
    use rusqlite::types::{Value as V, ValueRef};
    match p {
        Param::Null => ToSqlOutput::Owned(V::Null),
        Param::Bool(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
        Param::Int(x) => ToSqlOutput::Owned(V::Integer(*x)),
        Param::UInt(x) => ToSqlOutput::Owned(V::Real(*x as f64)),
        Param::Float(x) => ToSqlOutput::Owned(V::Real(*x)),
        Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
    }
}

/// Maps a SQLite error. Its extended result code (an enumeration, safe to show) goes into the
/// message; SQLite's text, which may quote data, only into the detail. `SQLITE_INTERRUPT` is
/// the progress handler at the deadline.
fn query_error(e: rusqlite::Error) -> CallError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted => {
            CallError::new(ErrorCode::UpstreamTimeout).detail(format!("database: {e}"))
        }
        rusqlite::Error::SqliteFailure(f, _) => CallError::with_message(
            ErrorCode::QueryFailed,
            format!("{} (code {})", ErrorCode::QueryFailed.default_message(), f.extended_code),
        )
        .detail(format!("database: {e}")),
        _ => CallError::new(ErrorCode::QueryFailed).detail(format!("driver: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_interrupts_after_its_time_and_never_while_disarmed() {
        let d = Deadline::new();
        assert!(d.go_on(), "disarmed");
        d.arm(Instant::now() + Duration::from_secs(60));
        assert!(d.go_on(), "before the deadline");
        d.arm(Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        assert!(!d.go_on(), "past the deadline");
        d.arm(Instant::now() - Duration::from_secs(1));
        assert!(!d.go_on(), "a deadline already past");
        d.disarm();
        assert!(d.go_on());
    }
}
