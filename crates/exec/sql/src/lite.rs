//! The connections of one SQLite handle, each with its progress handler set once.
//!
//! SQLite has no server-side timeout: a progress handler interrupts a statement at its
//! deadline, or as soon as the executor abandons it at a cap. sqlx runs each SQLite connection
//! on a thread of its own, and every call into the handle (to set or remove a handler) is a
//! round trip to that thread. So each connection here carries a [`Deadline`] that its handler,
//! installed once when the connection opens, reads on every check: a call arms it and disarms it
//! with atomic stores, no round trip. The set is small (the executor's per-handle bound, a
//! permit each), opens connections when first needed, and drops those idle for [`IDLE`] or older
//! than [`LIFETIME`] when it hands one out.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
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

/// What a connection's progress handler reads: the running statement's deadline (none while
/// disarmed) and whether the executor abandoned it.
#[derive(Debug)]
pub(crate) struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`; `u64::MAX` while disarmed.
    at: AtomicU64,
    stop: AtomicBool,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline { base: Instant::now(), at: AtomicU64::new(u64::MAX), stop: AtomicBool::new(false) }
    }

    /// Statements run from now on are interrupted at `at`.
    pub(crate) fn arm(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos().min(u128::from(u64::MAX - 1)) as u64;
        self.stop.store(false, Ordering::Relaxed);
        self.at.store(ns, Ordering::Release);
    }

    /// The running statement is interrupted at its next check.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Nothing is interrupted (for `COMMIT` and `ROLLBACK`, and while idle).
    pub(crate) fn disarm(&self) {
        self.at.store(u64::MAX, Ordering::Release);
        self.stop.store(false, Ordering::Release);
    }

    /// The handler's answer: true to go on.
    fn go_on(&self) -> bool {
        let at = self.at.load(Ordering::Acquire);
        !self.stop.load(Ordering::Acquire) && (at == u64::MAX || (self.base.elapsed().as_nanos() as u64) < at)
    }
}

struct Open {
    conn: SqliteConnection,
    deadline: Arc<Deadline>,
    born: Instant,
    idle_since: Instant,
}

/// The connections of one SQLite handle.
pub(crate) struct LitePool {
    opts: SqliteConnectOptions,
    idle: Mutex<Vec<Open>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    closed: AtomicBool,
}

impl LitePool {
    /// A set of at most `max` connections, opened with `opts` when first needed; a call waits
    /// at most `acquire_timeout` for one.
    pub(crate) fn new(opts: SqliteConnectOptions, max: usize, acquire_timeout: Duration) -> Arc<LitePool> {
        Arc::new(LitePool { opts, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(max)), acquire_timeout, closed: AtomicBool::new(false) })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Open>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection, idle or new, for one call. `PoolTimedOut` when none frees up in time,
    /// `PoolClosed` after [`LitePool::close`].
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<LiteConn, sqlx::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let permit = tokio::time::timeout(self.acquire_timeout, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let now = Instant::now();
        let reused = {
            let mut idle = self.idle();
            let mut found = None;
            while let Some(o) = idle.pop() {
                if now.duration_since(o.idle_since) < IDLE && now.duration_since(o.born) < LIFETIME {
                    found = Some(o);
                    break;
                }
                // Too old: dropped, which ends its worker thread and closes the file.
            }
            found
        };
        let open = match reused {
            Some(o) => o,
            None => {
                let mut conn = SqliteConnection::connect_with(&self.opts).await?;
                let deadline = Arc::new(Deadline::new());
                let d = Arc::clone(&deadline);
                conn.lock_handle().await?.set_progress_handler(CHECK_EVERY, move || d.go_on());
                Open { conn, deadline, born: now, idle_since: now }
            }
        };
        Ok(LiteConn { open: Some(open), pool: Arc::clone(self), keep: true, _permit: permit })
    }

    /// Closes the idle connections; those in use close when they come back.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle: Vec<Open> = std::mem::take(&mut *self.idle());
        for o in idle {
            let _ = o.conn.close().await;
        }
    }
}

/// One connection, for one call; back to its set when dropped, unless
/// [`LiteConn::close_on_drop`] was called or the set was closed.
pub(crate) struct LiteConn {
    open: Option<Open>,
    pool: Arc<LitePool>,
    keep: bool,
    _permit: OwnedSemaphorePermit,
}

impl LiteConn {
    /// The connection is closed when dropped, not kept (its session may hold state a later call
    /// must not see, or a statement may still be running on it).
    pub(crate) fn close_on_drop(&mut self) {
        self.keep = false;
    }

    /// What the connection's progress handler reads.
    pub(crate) fn deadline(&self) -> Arc<Deadline> {
        Arc::clone(&self.open.as_ref().expect("present until dropped").deadline)
    }

    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.open.as_mut().expect("present until dropped").conn
    }
}

impl Drop for LiteConn {
    fn drop(&mut self) {
        if let Some(mut o) = self.open.take() {
            if self.keep && !self.pool.closed.load(Ordering::Acquire) {
                o.deadline.disarm();
                o.idle_since = Instant::now();
                self.pool.idle().push(o);
            } else {
                // Whatever may still run on it is interrupted; dropping the connection ends its
                // worker thread once that is done.
                o.deadline.stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_interrupts_after_its_time_or_a_stop_and_never_while_disarmed() {
        let d = Deadline::new();
        assert!(d.go_on(), "disarmed");
        d.arm(Instant::now() + Duration::from_secs(60));
        assert!(d.go_on(), "before the deadline");
        d.stop();
        assert!(!d.go_on(), "stopped");
        d.disarm();
        assert!(d.go_on(), "disarmed after a stop");
        d.arm(Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        assert!(!d.go_on(), "past the deadline");
        d.arm(Instant::now() - Duration::from_secs(1));
        assert!(!d.go_on(), "a deadline already past");
        d.disarm();
        assert!(d.go_on());
    }
}
