//! Leases, tasks and sub-agent grants.
//!
//! A lease's life is a chain of status transitions, each one a single conditional `UPDATE`, so
//! that two reapers (or a reaper and an operator) never revoke the same lease twice:
//!
//! ```text
//! pending ──▶ active ──▶ revoking ──▶ revoked
//!    │           │          │  ▲
//!    └──▶ failed └──────────┴─▶ revoke-pending (retried with backoff)
//! ```
//!
//! `pending` is written and committed before a database role is created, so a crash between the
//! two leaves a record that start-up reconciliation finds and cleans up.

use crate::db::{bind, conflict, now, with_pool, Arg};
use crate::{Result, Store, StoreError};
use rand::RngCore;

/// Lease status names as stored.
pub mod status {
    /// Recorded, credential being created.
    pub const PENDING: &str = "pending";
    /// Usable until `expires_at`.
    pub const ACTIVE: &str = "active";
    /// A revocation has claimed it and is running.
    pub const REVOKING: &str = "revoking";
    /// A revocation failed (the database was down); retried with backoff.
    pub const REVOKE_PENDING: &str = "revoke-pending";
    /// Gone for good.
    pub const REVOKED: &str = "revoked";
    /// The credential could not be created; nothing is left of it.
    pub const FAILED: &str = "failed";
}

/// A stored lease. It holds no secret: a dynamic lease's password lives in the vault under the
/// lease handle's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    /// Lease id (UUID).
    pub id: String,
    /// The handle name the agent sees (`BASE__L7F3A2C`).
    pub handle: String,
    /// The base handle.
    pub base: String,
    /// The owning agent's id.
    pub agent_id: String,
    /// `read_only` or `read_write`.
    pub scope: String,
    /// The tables, if the lease names any.
    pub tables: Option<Vec<String>>,
    /// Whether the lease is a real database role.
    pub dynamic: bool,
    /// The database role of a dynamic lease, or the STS session name of an aws lease.
    pub role_name: Option<String>,
    /// The task it belongs to.
    pub task_id: Option<String>,
    /// See [`status`].
    pub status: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Revocation time.
    pub revoked_at: Option<String>,
    /// Failed revocation attempts.
    pub attempts: i64,
    /// When a failed revocation is tried again.
    pub next_attempt_at: Option<String>,
    /// The S3 buckets of an aws lease.
    pub buckets: Option<Vec<String>>,
}

/// What a new lease record holds.
#[derive(Debug, Clone)]
pub struct NewLease<'a> {
    /// Lease id.
    pub id: &'a str,
    /// Lease handle name.
    pub handle: &'a str,
    /// Base handle name.
    pub base: &'a str,
    /// Owner.
    pub agent_id: &'a str,
    /// Scope name.
    pub scope: &'a str,
    /// Tables.
    pub tables: Option<&'a [String]>,
    /// Dynamic role?
    pub dynamic: bool,
    /// Role name (or STS session name).
    pub role_name: Option<&'a str>,
    /// Buckets (aws leases).
    pub buckets: Option<&'a [String]>,
    /// Task.
    pub task_id: Option<&'a str>,
    /// Expiry (RFC 3339, UTC).
    pub expires_at: &'a str,
}

/// A task: a unit of work of one agent; closing it revokes its leases.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Owner.
    pub agent_id: String,
    /// Creation time.
    pub created_at: String,
    /// Closing time.
    pub closed_at: Option<String>,
}

const LEASE_COLS: &str = "id, handle, base, agent_id, scope, tables, dynamic, role_name, task_id, status, created_at, \
                          expires_at, revoked_at, attempts, next_attempt_at, buckets";

type LeaseRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
);

fn row(r: LeaseRow) -> Lease {
    Lease {
        id: r.0,
        handle: r.1,
        base: r.2,
        agent_id: r.3,
        scope: r.4,
        tables: r.5.and_then(|t| serde_json::from_str(&t).ok()),
        dynamic: r.6,
        role_name: r.7,
        task_id: r.8,
        status: r.9,
        created_at: r.10,
        expires_at: r.11,
        revoked_at: r.12,
        attempts: r.13,
        next_attempt_at: r.14,
        buckets: r.15.and_then(|t| serde_json::from_str(&t).ok()),
    }
}

/// RFC 3339 of a chrono time, in the store's format (lexicographic order is time order).
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Store {
    /// Records a lease as `pending` (committed before any credential exists).
    pub async fn insert_lease(&self, l: &NewLease<'_>) -> Result<()> {
        let tables = l.tables.map(|t| serde_json::to_string(t).expect("strings serialize"));
        let buckets = l.buckets.map(|t| serde_json::to_string(t).expect("strings serialize"));
        let res = self
            .execute(
                "INSERT INTO leases (id, handle, base, agent_id, scope, tables, dynamic, role_name, task_id, status, created_at, expires_at, buckets)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                &[
                    l.id.into(),
                    l.handle.into(),
                    l.base.into(),
                    l.agent_id.into(),
                    l.scope.into(),
                    tables.as_deref().into(),
                    l.dynamic.into(),
                    l.role_name.into(),
                    l.task_id.into(),
                    (&now()).into(),
                    l.expires_at.into(),
                    buckets.as_deref().into(),
                ],
            )
            .await;
        conflict(res, || format!("lease {}", l.handle)).map(|_| ())
    }

    /// Moves a lease from one of `from` to `to`. False when it was in none of them (someone else
    /// moved it first).
    pub async fn transition_lease(&self, id: &str, from: &[&str], to: &str) -> Result<bool> {
        let mut q = String::from("UPDATE leases SET status = ?");
        if to == status::REVOKED {
            q.push_str(", revoked_at = ?");
        }
        q.push_str(" WHERE id = ? AND status IN (");
        q.push_str(&vec!["?"; from.len()].join(", "));
        q.push(')');
        let at = now();
        let mut args = vec![Arg::Text(to)];
        if to == status::REVOKED {
            args.push(Arg::Text(&at));
        }
        args.push(Arg::Text(id));
        args.extend(from.iter().map(|f| Arg::Text(f)));
        Ok(self.execute(&q, &args).await? == 1)
    }

    /// Records a failed revocation: `revoking` → `revoke-pending`, retried at `next_attempt_at`.
    pub async fn lease_revoke_failed(&self, id: &str, next_attempt_at: &str) -> Result<()> {
        self.execute(
            "UPDATE leases SET status = 'revoke-pending', attempts = attempts + 1, next_attempt_at = ? WHERE id = ? AND status = 'revoking'",
            &[next_attempt_at.into(), id.into()],
        )
        .await?;
        Ok(())
    }

    /// The lease whose `column` (`id` or `handle`, both unique) is `value`.
    async fn lease_where(&self, column: &str, value: &str) -> Result<Option<Lease>> {
        let sql = format!("SELECT {LEASE_COLS} FROM leases WHERE {column} = ?");
        Ok(self.fetch_optional::<LeaseRow>(&sql, &[value.into()]).await?.map(row))
    }

    /// The leases `rest` (the statement after `FROM leases`: a WHERE and an ORDER BY) selects.
    async fn leases_where(&self, rest: &str, args: &[Arg<'_>]) -> Result<Vec<Lease>> {
        let sql = format!("SELECT {LEASE_COLS} FROM leases {rest}");
        Ok(self.fetch_all::<LeaseRow>(&sql, args).await?.into_iter().map(row).collect())
    }

    /// One lease by id.
    pub async fn lease(&self, id: &str) -> Result<Option<Lease>> {
        self.lease_where("id", id).await
    }

    /// One lease by its handle name.
    pub async fn lease_by_handle(&self, handle: &str) -> Result<Option<Lease>> {
        self.lease_where("handle", handle).await
    }

    /// Every lease, newest first.
    pub async fn list_leases(&self) -> Result<Vec<Lease>> {
        self.leases_where("ORDER BY created_at DESC, id", &[]).await
    }

    /// Leases in a status.
    pub async fn leases_in(&self, st: &str) -> Result<Vec<Lease>> {
        self.leases_where("WHERE status = ? ORDER BY expires_at", &[st.into()]).await
    }

    /// Leases due for revocation at `at`: active ones past their expiry, failed revocations
    /// whose retry time has come, and leases left `pending` (a crash while issuing) since before
    /// `stale_before`.
    pub async fn leases_due(&self, at: &str, stale_before: &str) -> Result<Vec<Lease>> {
        self.leases_where(
            "WHERE (status = 'active' AND expires_at <= ?1)
                OR (status = 'revoke-pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?1))
                OR (status = 'pending' AND created_at <= ?2)
             ORDER BY expires_at",
            &[at.into(), stale_before.into()],
        )
        .await
    }

    /// The earliest expiry of an active lease, or retry time of a pending revocation.
    pub async fn next_lease_deadline(&self) -> Result<Option<String>> {
        let (a,): (Option<String>,) = self
            .fetch_one(
                "SELECT MIN(t) FROM (SELECT MIN(expires_at) AS t FROM leases WHERE status = 'active'
                                      UNION ALL SELECT MIN(COALESCE(next_attempt_at, '')) FROM leases WHERE status = 'revoke-pending') AS due",
                &[],
            )
            .await?;
        Ok(a)
    }

    /// Brings the expiry of every live lease of these agents to now, so the reaper revokes them.
    /// Returns the lease ids.
    pub async fn expire_agent_leases(&self, agent_ids: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let sql = format!(
            "UPDATE leases SET expires_at = {}(expires_at, ?) WHERE agent_id = ? AND status IN ('pending', 'active') RETURNING id",
            self.dialect().pick("MIN", "LEAST")
        );
        for a in agent_ids {
            let ids: Vec<(String,)> = self.fetch_all(&sql, &[(&now()).into(), a.into()]).await?;
            out.extend(ids.into_iter().map(|r| r.0));
        }
        Ok(out)
    }

    /// Opens a task for an agent.
    pub async fn create_task(&self, agent_id: &str) -> Result<Task> {
        let mut b = [0u8; 8];
        rand::rng().fill_bytes(&mut b);
        let t = Task { id: format!("task_{}", hex::encode(b)), agent_id: agent_id.to_owned(), created_at: now(), closed_at: None };
        self.execute(
            "INSERT INTO tasks (id, agent_id, created_at) VALUES (?, ?, ?)",
            &[(&t.id).into(), (&t.agent_id).into(), (&t.created_at).into()],
        )
        .await?;
        Ok(t)
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<Option<Task>> {
        let r: Option<(String, String, String, Option<String>)> =
            self.fetch_optional("SELECT id, agent_id, created_at, closed_at FROM tasks WHERE id = ?", &[id.into()]).await?;
        Ok(r.map(|r| Task { id: r.0, agent_id: r.1, created_at: r.2, closed_at: r.3 }))
    }

    /// Closes an open task of `agent_id` and brings its live leases' expiry to now. Returns the
    /// lease ids; `NotFound` for a task that is not this agent's, `Conflict` for a closed one.
    pub async fn close_task(&self, id: &str, agent_id: &str) -> Result<Vec<String>> {
        with_pool!(self, |p, d| {
            let mut tx = p.begin().await?;
            let t: Option<(String, Option<String>)> =
                sqlx::query_as(&d.sql(d.pick("SELECT agent_id, closed_at FROM tasks WHERE id = ?", "SELECT agent_id, closed_at FROM tasks WHERE id = ? FOR UPDATE")))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match t {
                Some((owner, _)) if owner != agent_id => return Err(StoreError::NotFound(format!("task {id}"))),
                None => return Err(StoreError::NotFound(format!("task {id}"))),
                Some((_, Some(_))) => return Err(StoreError::Conflict(format!("task {id} is closed"))),
                Some((_, None)) => {}
            }
            let at = now();
            sqlx::query(&d.sql("UPDATE tasks SET closed_at = ? WHERE id = ?")).bind(&at).bind(id).execute(&mut *tx).await?;
            let ids: Vec<(String,)> = sqlx::query_as(&d.sql(&format!(
                "UPDATE leases SET expires_at = {}(expires_at, ?) WHERE task_id = ? AND status IN ('pending', 'active') RETURNING id",
                d.pick("MIN", "LEAST")
            )))
            .bind(&at)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(ids.into_iter().map(|r| r.0).collect())
        })
    }

    /// Sets a sub-agent's grants: `(handle, tool)` pairs.
    pub async fn set_agent_grants(&self, agent_id: &str, grants: &[(String, String)]) -> Result<()> {
        with_pool!(self, |p, d| {
            let mut tx = p.begin().await?;
            sqlx::query(&d.sql("DELETE FROM agent_grants WHERE agent_id = ?")).bind(agent_id).execute(&mut *tx).await?;
            let insert = d.sql("INSERT INTO agent_grants (agent_id, handle, tool) VALUES (?, ?, ?) ON CONFLICT DO NOTHING");
            for (h, t) in grants {
                bind(sqlx::query(&insert), &[agent_id.into(), h.into(), t.into()]).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A sub-agent's grants, `(handle, tool)` pairs in order.
    pub async fn agent_grants(&self, agent_id: &str) -> Result<Vec<(String, String)>> {
        self.fetch_all("SELECT handle, tool FROM agent_grants WHERE agent_id = ? ORDER BY handle, tool", &[agent_id.into()]).await
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn t15_a_lease_is_revoked_once_and_a_closed_task_expires_its_leases() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        let (a, _) = s.add_agent("bot", None, None).await.unwrap();
        let task = s.create_task(&a.id).await.unwrap();
        let far = "2999-01-01T00:00:00.000000Z";
        let nl = NewLease {
            id: "l1",
            handle: "DB__LABCDEF",
            base: "DB",
            agent_id: &a.id,
            scope: "read_only",
            tables: Some(&["orders".to_owned()]),
            dynamic: false,
            role_name: None,
            buckets: None,
            task_id: Some(&task.id),
            expires_at: far,
        };
        s.insert_lease(&nl).await.unwrap();
        assert!(matches!(s.insert_lease(&NewLease { id: "l2", ..nl.clone() }).await, Err(StoreError::Conflict(_))));
        assert!(s.transition_lease("l1", &[status::PENDING], status::ACTIVE).await.unwrap());
        assert!(s.leases_due(&now(), "2000-01-01").await.unwrap().is_empty());
        assert!(matches!(s.close_task(&task.id, "someone-else").await, Err(StoreError::NotFound(_))));
        assert_eq!(s.close_task(&task.id, &a.id).await.unwrap(), vec!["l1".to_owned()]);
        assert!(matches!(s.close_task(&task.id, &a.id).await, Err(StoreError::Conflict(_))));
        let due = s.leases_due(&now(), "2000-01-01").await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].tables.as_deref(), Some(&["orders".to_owned()][..]));
        // Two revokers: exactly one claims it.
        let from = [status::ACTIVE, status::REVOKE_PENDING];
        let (x, y) = tokio::join!(s.transition_lease("l1", &from, status::REVOKING), s.transition_lease("l1", &from, status::REVOKING));
        assert!(x.unwrap() ^ y.unwrap());
        s.lease_revoke_failed("l1", "2000-01-01T00:00:00.000000Z").await.unwrap();
        let l = s.lease("l1").await.unwrap().unwrap();
        assert_eq!((l.status.as_str(), l.attempts), (status::REVOKE_PENDING, 1));
        assert_eq!(s.leases_due(&now(), "2000-01-01").await.unwrap().len(), 1);
        assert!(s.transition_lease("l1", &from, status::REVOKING).await.unwrap());
        assert!(s.transition_lease("l1", &[status::REVOKING], status::REVOKED).await.unwrap());
        assert!(!s.transition_lease("l1", &from, status::REVOKING).await.unwrap());
        assert!(s.leases_due(&now(), "2000-01-01").await.unwrap().is_empty());
        assert!(s.lease_by_handle("DB__LABCDEF").await.unwrap().unwrap().revoked_at.is_some());
    }
}
