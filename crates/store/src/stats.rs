//! What the broker's metrics read from the store: how many durable writes went into how many
//! commit groups (the cost of one fsync is shared by a group), and the counts of live state
//! (leases, approvals, shares, requests) read when `/metrics` is scraped.

use crate::{Result, Store};
use std::sync::atomic::{AtomicU64, Ordering};

/// Commit groups and the writes in them, since the store was opened. On SQLite these are the
/// writer's groups (audit records, share creates and burns); on PostgreSQL the audit writer's.
#[derive(Debug, Default)]
pub struct GroupStats {
    groups: AtomicU64,
    writes: AtomicU64,
    on_worker: AtomicU64,
}

impl GroupStats {
    /// Counts one committed group of `writes` writes.
    pub(crate) fn committed(&self, writes: usize) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
    }

    /// Counts one group written on the async worker that submitted it, which SQLite's writer
    /// does when the store's write lock is free, with `sync = normal` or with the caller's
    /// request alone on its lane (no hand-off of the worker to another thread).
    pub(crate) fn on_worker(&self) {
        self.on_worker.fetch_add(1, Ordering::Relaxed);
    }

    /// Groups written on the async worker that submitted them, so far.
    pub fn written_on_worker(&self) -> u64 {
        self.on_worker.load(Ordering::Relaxed)
    }

    /// `(groups, writes)` so far.
    pub fn read(&self) -> (u64, u64) {
        (self.groups.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
}

/// Live state, counted at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Leases pending or active.
    pub leases: i64,
    /// Approvals waiting for a person, not expired.
    pub approvals_pending: i64,
    /// One-time links that can still be opened.
    pub shares: i64,
    /// Requests for a secret whose link is still open.
    pub requests_pending: i64,
}

impl Store {
    /// Counts the live leases, pending approvals, openable links and open requests.
    pub async fn live_counts(&self) -> Result<LiveCounts> {
        let now = chrono::Utc::now().timestamp();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (leases,): (i64,) = self.fetch_one("SELECT COUNT(*) FROM leases WHERE status IN ('pending', 'active')", &[]).await?;
        let (approvals_pending,): (i64,) =
            self.fetch_one("SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at > ?", &[now_ms.into()]).await?;
        let (shares,): (i64,) = self.fetch_one("SELECT COUNT(*) FROM shares WHERE views_left > 0 AND expires_at > ?", &[now.into()]).await?;
        let (requests_pending,): (i64,) =
            self.fetch_one("SELECT COUNT(*) FROM secret_requests WHERE status = 'pending' AND expires_at > ?", &[now.into()]).await?;
        Ok(LiveCounts { leases, approvals_pending, shares, requests_pending })
    }
}
