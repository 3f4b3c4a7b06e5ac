//! The reaper: revokes leases at expiry, retries failed revocations with backoff, revokes
//! leases left `pending` by a crash, and at start-up drops roles of this installation that no
//! lease accounts for.

use crate::broker::{Broker, BrokerError, Revoker};
use airlock_exec_sql::lease as dynamic;
use airlock_store::leases::{stamp, status};
use std::sync::Arc;
use std::time::Duration;

/// The longest the reaper sleeps between two looks at the store.
const REAPER_MAX_SLEEP: Duration = Duration::from_secs(1);

/// A lease still `pending` this long after its creation was left by a crash mid-issue (an
/// issue takes milliseconds): it is revoked, dropping any role it got.
const STALE_PENDING_SECS: i64 = 60;

/// The longest wait between two attempts at a failed revocation.
const MAX_BACKOFF_SECS: i64 = 60;

impl Broker {
    /// Revokes every lease that is due (expired, or a failed revocation whose retry time came).
    /// Returns how many were revoked now.
    pub async fn reap_once(&self) -> usize {
        // One reaper at a time over every replica of a shared store; the others skip this
        // round (each revocation is a conditional transition anyway, so none runs twice).
        let _turn = match self.store.reaper_turn().await {
            Ok(Some(t)) => t,
            Ok(None) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "reaper cannot reach the store");
                return 0;
            }
        };
        let now = chrono::Utc::now();
        let stale = stamp(now - chrono::Duration::seconds(STALE_PENDING_SECS));
        let due = match self.store.leases_due(&stamp(now), &stale).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reaper cannot read leases");
                return 0;
            }
        };
        let mut n = 0;
        for l in due {
            if let Ok(true) = self.revoke_lease_by(&l.id, &Revoker::REAPER).await {
                n += 1;
            }
        }
        n
    }

    /// Start-up reconciliation: revocations cut short by a crash are queued for a retry, and
    /// roles of this installation's naming that no lease record accounts for are dropped.
    /// Leases left `pending` by a crash are the reaper's (see `STALE_PENDING_SECS`), as a
    /// pending lease may also be one being issued right now.
    pub async fn reconcile_leases(&self) -> Result<(), BrokerError> {
        for l in self.store.leases_in(status::REVOKING).await? {
            self.store.transition_lease(&l.id, &[status::REVOKING], status::REVOKE_PENDING).await?;
        }
        let prefix = dynamic::role_name(&self.leases.installation, "");
        for (name, policy) in &self.cfg().leases {
            if !policy.dynamic {
                continue;
            }
            let cfg = self.cfg();
            let Some(h) = cfg.handles.get(name) else { continue };
            let Ok(admin) = self.resolve(h).await else {
                tracing::warn!(handle = %name, "admin credential unavailable; roles not reconciled");
                continue;
            };
            match dynamic::list_roles(h, &admin, &prefix).await {
                Ok(roles) => {
                    // Read after listing: a lease record is committed (pending) before its role
                    // is created, so a role being created now is either not listed or kept.
                    let mut keep = std::collections::HashSet::new();
                    for st in [status::PENDING, status::ACTIVE, status::REVOKING, status::REVOKE_PENDING] {
                        for l in self.store.leases_in(st).await? {
                            keep.extend(l.role_name);
                        }
                    }
                    for r in roles.into_iter().filter(|r| !keep.contains(r)) {
                        match dynamic::drop_role(&self.leases.admin_sessions, h, policy, &admin, &r).await {
                            Ok(()) => tracing::info!(handle = %name, role = %r, "dropped a role with no live lease"),
                            Err(e) => tracing::warn!(handle = %name, role = %r, error = %e, "orphan role not dropped"),
                        }
                    }
                }
                Err(e) => tracing::warn!(handle = %name, error = %e, "roles not reconciled"),
            }
        }
        Ok(())
    }

    /// Runs reconciliation, then the reaper, until the task is aborted.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let b = self.clone();
        tokio::spawn(async move {
            if let Err(e) = b.reconcile_leases().await {
                tracing::warn!(error = %e, "lease reconciliation failed");
            }
            loop {
                b.reap_once().await;
                let until = match b.store.next_lease_deadline().await {
                    Ok(Some(t)) => Some(
                        chrono::DateTime::parse_from_rfc3339(&t)
                            .ok()
                            .and_then(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok())
                            .unwrap_or(Duration::ZERO),
                    ),
                    _ => None,
                };
                wait_for_next(until, &b.leases.reaper_wake).await;
            }
        })
    }
}

/// The reaper's wait: until the next deadline (`until` from now), at most
/// [`REAPER_MAX_SLEEP`] (so a lease issued by another process is seen soon), at least 5 ms, or
/// until woken.
async fn wait_for_next(until: Option<Duration>, wake: &tokio::sync::Notify) {
    let sleep = until.unwrap_or(REAPER_MAX_SLEEP).clamp(Duration::from_millis(5), REAPER_MAX_SLEEP);
    tokio::select! {
        _ = tokio::time::sleep(sleep) => {}
        _ = wake.notified() => {}
    }
}

/// Seconds before the next attempt at a revocation that failed `attempts` times.
pub(super) fn backoff_secs(attempts: i64) -> i64 {
    (1i64 << attempts.clamp(0, 6)).min(MAX_BACKOFF_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn the_reaper_wakes_at_the_deadline_at_most_a_second_apart_or_when_woken() {
        let wake = tokio::sync::Notify::new();
        let t = Instant::now();
        wait_for_next(Some(Duration::from_millis(250)), &wake).await;
        assert_eq!(t.elapsed(), Duration::from_millis(250));
        // A lease expiring in an hour: look again within a second anyway.
        let t = Instant::now();
        wait_for_next(Some(Duration::from_secs(3600)), &wake).await;
        assert_eq!(t.elapsed(), REAPER_MAX_SLEEP);
        let t = Instant::now();
        wait_for_next(None, &wake).await;
        assert_eq!(t.elapsed(), REAPER_MAX_SLEEP);
        // Past due: a short pause, never a busy loop.
        let t = Instant::now();
        wait_for_next(Some(Duration::ZERO), &wake).await;
        assert_eq!(t.elapsed(), Duration::from_millis(5));
        // Woken (a lease issued, an agent revoked): at once.
        wake.notify_one();
        let t = Instant::now();
        wait_for_next(Some(Duration::from_secs(3600)), &wake).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[test]
    fn failed_revocations_back_off_to_a_minute() {
        let s: Vec<i64> = (0..9).map(backoff_secs).collect();
        assert_eq!(s, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_secs(-3), 1);
    }
}
