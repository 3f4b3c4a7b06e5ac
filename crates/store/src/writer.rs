//! One writer for what must be durable before its caller is answered, on the SQLite store:
//! audit records, one-time share creates and share burns. Operations that arrive together are
//! committed together: one transaction, one fsync (with `sync = full`) and one signed audit
//! checkpoint per group.
//!
//! There is no writer thread to hand work to. A caller that finds no group being written
//! writes the group itself, on its own thread, so a call on an idle broker pays no thread
//! hand-off for its durable writes. With `sync = normal`, while the writer is crowded (one of
//! its last 16 groups had company), it first yields twice to its thread's scheduler, so that
//! the calls runnable there, and those whose I/O became ready meanwhile, reach their own writes
//! and join its group (one commit and one signature for them all); with `full` the fsync of one
//! group gathers the next. With
//! `sync = normal` a commit waits for no disk, so the group is written on the async worker
//! itself, as long as the store's write lock is free at that moment (another connection
//! holding it would make SQLite wait on the worker). With `sync = full` (whose commit waits for
//! an fsync) the same holds when the caller's request is the only one in flight on its serving
//! lane (`airlock_core::lane::alone`): waiting for the disk on the worker then holds up no one
//! but a request that arrives meanwhile, for one fsync at most. Otherwise the group is written
//! inside `block_in_place` on a multi-threaded Tokio runtime, which first hands the worker's
//! other tasks to another thread (a thread wake-up each time). Callers that arrive while a
//! group is being written queue up; when the group is done, the writer that wrote it hands the
//! queue to a blocking-pool task, which writes queued groups until the queue is empty and then
//! ends the turn. A queued caller that goes away (its request was cancelled) does not stop its
//! operation from being written or anyone else's from being answered.
//!
//! An operation that fails (a share id that is taken) is rolled back alone and answered with its
//! error, the others go on. A group first runs its operations one after the other under one
//! savepoint of its own (operations almost never fail, and a savepoint each costs two
//! statements an operation); when one fails, the group is rolled back to that savepoint, in the
//! same transaction (so nobody else writes meanwhile and every operation finds what it found the
//! first time), and run again with a savepoint for each operation. A group that cannot commit
//! fails every operation in it: nothing is answered as done that is not durable.
//!
//! The writer knows nothing of what it writes: an operation is an [`Op`], which does its work
//! in the group's transaction and answers its caller. What the operations of one group hand on
//! to each other is a [`Carry`]: one step for the end of the group (the audit checkpoint signs
//! the last record of the group, once) and the audit chain's head as the group's last record
//! left it (so that only a group's first record reads it from the store).

use crate::{Result, StoreError};
use airlock_core::config::SyncMode;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The most operations one group takes; more wait for the next group.
const MAX_GROUP: usize = 512;

/// Every this many lone groups one is written off the worker even when it could be written on
/// it, so that SQLite's automatic checkpoint (off for commits on the worker) still runs: the WAL
/// grows by at most this many groups' pages past SQLite's 1,000-page mark.
const CHECKPOINT_EVERY: u32 = 64;

/// After this many groups in a row written alone (one operation, nobody queued behind it), the
/// writer is quiet and the caller that takes the turn writes at once, without yielding first.
const QUIET_AFTER: u32 = 16;

/// How many times the turn's holder yields before it writes, while the writer is crowded: the
/// first lets the calls runnable on its thread run, the second those that the reactor readied
/// meanwhile (their upstream's answer, say), so that they join its group too
/// ([`Writer::submit`]).
const YIELDS: usize = 2;

/// SQLite's automatic checkpoint at its default, 1,000 WAL pages.
const AUTO_CHECKPOINT_ON: &str = "PRAGMA wal_autocheckpoint = 1000";

/// A step left for the end of a group, run in its transaction before the commit.
pub(crate) type AtEnd = Box<dyn FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send>;

/// What the operations of one group hand on to each other, in the order they run. An operation
/// that fails leaves it as it found it.
#[derive(Default)]
pub(crate) struct Carry {
    /// A step for the end of the group: the last one left by an operation that succeeded runs
    /// before the commit.
    pub(crate) at_end: Option<AtEnd>,
    /// The audit chain's head (its last seq and hash) once a record of this group is appended:
    /// the next record links to it without reading the store.
    pub(crate) chain_head: Option<(i64, Vec<u8>)>,
}

/// One durable operation.
pub(crate) trait Op: Send {
    /// Does the work inside the group's transaction and keeps its outcome for [`Op::answer`];
    /// may leave what the group's later operations need in `carry`. An error here rolls this
    /// operation back alone. It may run a second time in the same transaction (the group run
    /// again operation by operation after another one failed), on the store as it was the first
    /// time: each run sets every part of the outcome it answers with.
    fn apply(&mut self, conn: &rusqlite::Connection, carry: &mut Carry) -> Result<()>;

    /// Answers the caller once the group's fate is known: `outcome` is what [`Op::apply`]
    /// returned when the group committed, else the failure that kept it from being written.
    fn answer(self: Box<Self>, outcome: Result<()>);
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Writer(e.to_string())
    }
}

/// The queue and whose turn it is to write.
#[derive(Default)]
struct Turn {
    queue: Vec<Box<dyn Op>>,
    /// True while a group is being written (by a caller or the blocking-pool task).
    writing: bool,
}

/// The SQLite writer of one store file.
pub(crate) struct Writer {
    path: PathBuf,
    sync: SyncMode,
    turn: Mutex<Turn>,
    /// Opened on first use (and again after a failure to open); used by whoever holds the turn.
    conn: Mutex<Option<rusqlite::Connection>>,
    /// Groups committed and their operations (the metrics' group-commit sizes).
    stats: Arc<crate::stats::GroupStats>,
    /// Lone groups begun so far (which of them go off the worker: [`CHECKPOINT_EVERY`]).
    lone: AtomicU32,
    /// How many groups in a row a caller wrote alone: one operation, and nobody queued behind
    /// it. Below [`QUIET_AFTER`] the writer is crowded, and the caller that takes the turn
    /// yields before writing ([`Writer::submit`]); 0 at first.
    alone_in_a_row: AtomicU32,
    /// Whether the open connection checkpoints automatically at its commits (off while it
    /// commits on the worker). Read and set under the `conn` lock.
    auto_checkpoint: AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).field("sync", &self.sync).finish_non_exhaustive()
    }
}

/// Locks `m`; a panic while it was held does not poison the writer (the state it guards is
/// consistent between statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// The writer of the SQLite file at `path`, committing with `sync`.
    pub(crate) fn new(path: PathBuf, sync: SyncMode, stats: Arc<crate::stats::GroupStats>) -> Arc<Writer> {
        Arc::new(Writer { path, sync, turn: Mutex::new(Turn::default()), conn: Mutex::new(None), stats, lone: AtomicU32::new(0), alone_in_a_row: AtomicU32::new(0), auto_checkpoint: AtomicBool::new(true) })
    }

    /// Closes the connection (after the group being written, if any); the next operation opens
    /// it again.
    pub(crate) fn close(&self) {
        lock(&self.conn).take();
    }

    /// Queues `op`; when no group is being written, this caller takes the turn and writes the
    /// group on its own thread, yielding to the scheduler first when the writer is crowded
    /// (see below). The op answers its caller through whatever channel it carries.
    ///
    /// The yields, with `sync = normal` and while the writer is crowded (one of its last
    /// [`QUIET_AFTER`] groups had more than one operation, or callers queued behind it): before
    /// taking the queue, the caller that holds the turn lets every task that is runnable on its
    /// thread run first. Under load those are other calls on their way to their own durable
    /// write: they queue, and one commit and one signed checkpoint serves them all. It yields
    /// [`YIELDS`] times: after the first, Tokio's multi-threaded worker polls its reactor and
    /// then wakes the yielded task into its next-task slot, ahead of the tasks that poll readied
    /// (calls whose upstream has answered); the second yield lets those run too. A lone caller on a quiet writer does
    /// not yield: the yield would put the tasks behind it (the upstream connection's own, say)
    /// ahead of its answer. With `sync = full` the group's fsync already gathers the next
    /// group, so the turn's holder writes at once. If the caller goes away during the yields,
    /// the queue (its own operation in it) is handed to the blocking pool, as it would be after
    /// a group.
    pub(crate) async fn submit(self: &Arc<Self>, op: Box<dyn Op>) {
        {
            let mut t = lock(&self.turn);
            t.queue.push(op);
            if t.writing {
                return;
            }
            t.writing = true;
        }
        if self.sync == SyncMode::Normal && self.alone_in_a_row.load(Ordering::Relaxed) < QUIET_AFTER {
            let pass = PassOn(self);
            for _ in 0..YIELDS {
                tokio::task::yield_now().await;
            }
            std::mem::forget(pass);
        }
        let Some(mut group) = self.take_group() else {
            // Nobody else takes from the queue while this caller holds the turn, and its own
            // operation is in it.
            unreachable!("the turn's holder finds its own operation queued")
        };
        let company = group.len() > 1;
        let guard = EndTurn(self);
        let checkpoint_turn = self.lone.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1;
        // With `full`, too, when the caller's request is the only one in flight on its lane:
        // the fsync then holds up no one but an arrival, and `block_in_place` would cost a
        // thread wake-up.
        let here = self.sync == SyncMode::Normal || airlock_core::lane::alone();
        let written = here && !checkpoint_turn && on_worker() && self.write_group(&mut group, Begin::Now);
        if written {
            self.stats.on_worker();
        } else {
            blocking(|| self.write_group(&mut group, Begin::Wait));
        }
        // Whoever queued meanwhile is written by a task of the blocking pool, so that this
        // caller is answered now.
        let rest = self.next_group();
        if company || rest.is_some() {
            self.alone_in_a_row.store(0, Ordering::Relaxed);
        } else if self.alone_in_a_row.load(Ordering::Relaxed) < QUIET_AFTER {
            self.alone_in_a_row.fetch_add(1, Ordering::Relaxed);
        }
        guard.disarm();
        if let Some(rest) = rest {
            Arc::clone(self).drain_elsewhere(rest);
        }
    }

    /// Writes `group` and then the queue on a blocking-pool thread (on this one outside a
    /// Tokio runtime).
    fn drain_elsewhere(self: Arc<Self>, group: Vec<Box<dyn Op>>) {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(move || self.drain(group))),
            Err(_) => self.drain(group),
        }
    }

    /// Up to [`MAX_GROUP`] operations from the queue, or `None` when it is empty (the turn
    /// stays taken).
    fn take_group(&self) -> Option<Vec<Box<dyn Op>>> {
        let mut t = lock(&self.turn);
        if t.queue.is_empty() {
            return None;
        }
        let n = t.queue.len().min(MAX_GROUP);
        Some(t.queue.drain(..n).collect())
    }

    /// The next group from the queue, or `None` (and the turn ended) when it is empty.
    fn next_group(&self) -> Option<Vec<Box<dyn Op>>> {
        let mut t = lock(&self.turn);
        if t.queue.is_empty() {
            t.writing = false;
            return None;
        }
        let n = t.queue.len().min(MAX_GROUP);
        Some(t.queue.drain(..n).collect())
    }

    /// Writes groups from the queue until it is empty (on a blocking-pool thread).
    fn drain(&self, mut group: Vec<Box<dyn Op>>) {
        let guard = EndTurn(self);
        loop {
            self.write_group(&mut group, Begin::Wait);
            match self.next_group() {
                Some(g) => group = g,
                None => break,
            }
        }
        guard.disarm();
    }

    /// Writes `group` in one transaction and answers every operation in it. With
    /// [`Begin::Now`], a store whose write lock is held elsewhere leaves `group` untouched and
    /// returns false; otherwise the group is answered and the result is true.
    fn write_group(&self, group: &mut Vec<Box<dyn Op>>, begin: Begin) -> bool {
        let mut conn = lock(&self.conn);
        if conn.is_none() {
            if let Begin::Now = begin {
                // Opening may wait for the disk and for locks: not on the worker.
                return false;
            }
            match open(&self.path, self.sync) {
                Ok(c) => {
                    *conn = Some(c);
                    self.auto_checkpoint.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %self.path.display(), "the store writer cannot open the store; its operations fail");
                    for op in group.drain(..) {
                        op.answer(Err(StoreError::Writer(e.to_string())));
                    }
                    return true;
                }
            }
        }
        let c = conn.as_ref().expect("opened above");
        // A checkpoint copies WAL pages into the database file and syncs both: never on the
        // worker. SQLite's own runs at a commit once the WAL holds 1,000 pages, so it is off
        // for commits there and on for the others.
        let auto = matches!(begin, Begin::Wait);
        let began = if self.auto_checkpoint.load(Ordering::Relaxed) != auto {
            // Prepared once each: a turn under load may switch twice.
            let sql = if auto { AUTO_CHECKPOINT_ON } else { "PRAGMA wal_autocheckpoint = 0" };
            c.prepare_cached(sql)
                .and_then(|mut st| st.query([]).and_then(|mut rows| rows.next().map(drop)))
                .map(|()| self.auto_checkpoint.store(auto, Ordering::Relaxed))
        } else {
            Ok(())
        };
        let began = began.and_then(|()| match begin {
            Begin::Wait => c.prepare_cached("BEGIN IMMEDIATE").and_then(|mut st| st.execute([])).map(|_| true),
            Begin::Now => begin_now(c),
        });
        let outcomes = match began.and_then(|began| if began { apply_all(c, group).map(Some) } else { Ok(None) }) {
            Ok(None) => return false,
            Ok(Some(outcomes)) => {
                self.stats.committed(outcomes.len());
                outcomes
            }
            Err(e) => {
                tracing::error!(error = %e, "a durable group could not be committed; its operations fail");
                if !c.is_autocommit() {
                    let _ = c.execute_batch("ROLLBACK");
                }
                group.iter().map(|_| Err(StoreError::Writer(e.to_string()))).collect()
            }
        };
        for (op, outcome) in group.drain(..).zip(outcomes) {
            op.answer(outcome);
        }
        true
    }
}

/// How a group's transaction takes the store's write lock. It is `BEGIN IMMEDIATE` either way:
/// taking the lock up front, two processes writing one store queue on it (the busy timeout)
/// instead of failing on a read-to-write upgrade, and the audit chain head read inside cannot
/// move.
#[derive(Clone, Copy)]
enum Begin {
    /// Waiting for it up to the busy timeout (off the async worker).
    Wait,
    /// Only if it is free now (on the async worker, which must not wait for another
    /// connection).
    Now,
}

/// How long a writer waits for a store's write lock that another connection holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `BEGIN IMMEDIATE` if the write lock is free now: true when the transaction began, false
/// when another connection holds the lock (SQLite answered busy, having waited for nothing).
fn begin_now(c: &rusqlite::Connection) -> rusqlite::Result<bool> {
    c.busy_timeout(std::time::Duration::ZERO)?;
    let r = c.prepare_cached("BEGIN IMMEDIATE").and_then(|mut st| st.execute([]));
    c.busy_timeout(BUSY_TIMEOUT)?;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(false),
        Err(e) => Err(e),
    }
}

/// True on a worker of a multi-threaded Tokio runtime, where [`blocking`] would hand the
/// worker's core away; elsewhere a group is written directly either way.
fn on_worker() -> bool {
    matches!(tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()), Ok(tokio::runtime::RuntimeFlavor::MultiThread))
}

/// Runs `ops` in the transaction begun on `c` and commits: first all together under one
/// savepoint, and only when one of them fails, again each under its own (the module's doc). The
/// outcome of each.
fn apply_all(c: &rusqlite::Connection, ops: &mut [Box<dyn Op>]) -> rusqlite::Result<Vec<Result<()>>> {
    let run = |sql: &str| run(c, sql);
    if let [op] = ops {
        // One operation: the transaction is its savepoint. When it fails, nothing of the group
        // is kept and the transaction ends empty.
        let mut carry = Carry::default();
        let r = op.apply(c, &mut carry);
        if r.is_err() {
            // SQLite may have ended the transaction itself (a full disk): then the operation's
            // own error is the answer, and there is nothing to roll back.
            if !c.is_autocommit() {
                run("ROLLBACK")?;
            }
            return Ok(vec![r]);
        }
        if let Some(end) = carry.at_end {
            end(c)?;
        }
        run("COMMIT")?;
        return Ok(vec![r]);
    }
    run("SAVEPOINT grp")?;
    let mut carry = Carry::default();
    let together = ops.iter_mut().try_for_each(|op| op.apply(c, &mut carry));
    let (out, carry) = if together.is_ok() {
        run("RELEASE grp")?;
        (ops.iter().map(|_| Ok(())).collect(), carry)
    } else {
        // As if nothing had run: the store, and what the operations carried.
        run("ROLLBACK TO grp")?;
        run("RELEASE grp")?;
        one_by_one(c, ops)?
    };
    if let Some(end) = carry.at_end {
        end(c)?;
    }
    run("COMMIT")?;
    Ok(out)
}

/// Runs `ops` each under its own savepoint: one that fails is rolled back alone, with what it
/// left in the carry. The outcome of each and what the ones that succeeded carried.
fn one_by_one(c: &rusqlite::Connection, ops: &mut [Box<dyn Op>]) -> rusqlite::Result<(Vec<Result<()>>, Carry)> {
    let run = |sql: &str| run(c, sql);
    let mut carry = Carry::default();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        run("SAVEPOINT op")?;
        let (at_end, head) = (carry.at_end.take(), carry.chain_head.clone());
        let r = op.apply(c, &mut carry);
        if r.is_ok() {
            run("RELEASE op")?;
            if carry.at_end.is_none() {
                carry.at_end = at_end;
            }
        } else {
            // Rolled back alone, and what it left for the rest of the group with it.
            run("ROLLBACK TO op")?;
            run("RELEASE op")?;
            carry = Carry { at_end, chain_head: head };
        }
        out.push(r);
    }
    Ok((out, carry))
}

/// Runs one of the group's own statements (`SAVEPOINT`, `COMMIT`, ...), kept prepared on the
/// connection: the common group is one record.
fn run(c: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql).and_then(|mut st| st.execute([])).map(drop)
}

/// Opens the writer's connection: WAL, the store's sync mode, a busy timeout.
fn open(path: &std::path::Path, sync: SyncMode) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every operation's statements and the group's own stay prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Runs `f`, which blocks on SQLite: on a worker of a multi-threaded Tokio runtime inside
/// `block_in_place` (the runtime hands this worker's other tasks to another thread meanwhile);
/// elsewhere (a current-thread runtime, a blocking-pool thread) directly. `query_db` on a
/// SQLite handle runs its statements the same way (`airlock-exec-sql`, `exec::blocking`).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Held across the turn holder's yields in [`Writer::submit`]: if the caller's future is
/// dropped there (its request went away), the queue, the caller's own operation in it, is
/// written on the blocking pool and the turn passes on with it. Forgotten once the yields are
/// over.
struct PassOn<'a>(&'a Arc<Writer>);

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        if let Some(group) = self.0.next_group() {
            Arc::clone(self.0).drain_elsewhere(group);
        }
    }
}

/// Ends the turn if the writer unwinds mid-group (a panic): the queued operations are dropped
/// (their callers see the writer gone) and the next caller writes again. Forgotten on the
/// normal path.
struct EndTurn<'a>(&'a Writer);

impl EndTurn<'_> {
    /// The turn was passed on or ended normally: nothing to undo.
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for EndTurn<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.0.turn);
        t.queue.clear();
        t.writing = false;
    }
}
