//! Requests for a secret (`request_secret`): a person is sent a one-time intake link, submits a
//! value encrypted to the request's own key, and the value lands as a handle.
//!
//! ```text
//! pending ──submit (proof, once)──▶ received ──policy or approver──▶ approved
//!    │                                 └──────────approver denies──▶ rejected (value deleted)
//!    ├── expires_at passed: expired (a time, not a write; `status_at` reports it)
//!    └── an operator revokes (pending, received or approved) ──▶ revoked (value deleted)
//! ```
//!
//! Every step is one conditional `UPDATE` inside a transaction, so that a replayed or raced
//! submit finds nothing to do, and the value is written in the same transaction as the step
//! that accepts it: nothing is ever stored half-way. The request's private key (`intake_key`)
//! is sealed by the vault under [`intake_seal_name`]; the landed value is a row of `secrets`
//! under [`value_seal_name`], a name no configured `local:` reference may spell.

use crate::db::{conflict, with_pool};
use subtle::ConstantTimeEq;
use crate::{Result, Store, StoreError};

/// Request statuses as stored. `expired` is never stored: it is `pending` past its expiry.
pub mod status {
    /// The link has not been used.
    pub const PENDING: &str = "pending";
    /// The value is stored; the grant waits for an approver.
    pub const RECEIVED: &str = "received";
    /// The handle is usable by the agent that asked.
    pub const APPROVED: &str = "approved";
    /// An approver refused; the value was deleted.
    pub const REJECTED: &str = "rejected";
    /// The link expired unused (reported, never stored).
    pub const EXPIRED: &str = "expired";
    /// An operator revoked the request (its link, or the handle it landed as); the value, if
    /// any, was deleted.
    pub const REVOKED: &str = "revoked";
}

/// The name a request's intake private key is sealed for.
pub fn intake_seal_name(request_id: &str) -> String {
    format!("request-key\u{0}{request_id}")
}

/// The prefix of the names requested values are stored under. Configured `local:` names and
/// `airlock secret put` refuse it, so a requested value and a configured secret never share a
/// row.
pub const VALUE_PREFIX: &str = airlock_core::config::REQUESTED_VALUE_PREFIX;

/// The prefix values landed by earlier versions were stored under. A NUL cannot be stored in a
/// PostgreSQL text column, so [`Store::legacy_request_values`] finds these (only SQLite holds
/// any) for the broker to seal again under [`value_seal_name`].
pub const LEGACY_VALUE_PREFIX: &str = "request\u{0}";

/// The name a requested handle's value is sealed and stored for in `secrets`.
pub fn value_seal_name(handle: &str) -> String {
    format!("{VALUE_PREFIX}{handle}")
}

/// The handle a name made by [`value_seal_name`] is for.
pub fn handle_of_value_name(name: &str) -> Option<&str> {
    name.strip_prefix(VALUE_PREFIX)
}

/// A new request (`pending`).
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    /// Random id (in the link).
    pub id: &'a str,
    /// The agent that asked.
    pub agent_id: &'a str,
    /// Its name.
    pub agent_name: &'a str,
    /// The proposed handle name.
    pub handle: &'a str,
    /// The handle's kind (wire name).
    pub kind: &'a str,
    /// The canonical JSON the person is shown and the ciphertext is bound to (its AAD).
    pub context: &'a str,
    /// The handle's definition (a `[handles.NAME]` table, TOML).
    pub definition: &'a str,
    /// The tools the request proposes to grant, comma-separated.
    pub tools: &'a str,
    /// The recipient the link went to.
    pub recipient: &'a str,
    /// SHA-256 of the submit proof (the link's fragment).
    pub proof_hash: &'a [u8],
    /// The sealed X25519 private key.
    pub intake_key: &'a [u8],
    /// Unix seconds.
    pub expires_at: i64,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Id.
    pub id: String,
    /// Asking agent's id.
    pub agent_id: String,
    /// Its name.
    pub agent_name: String,
    /// Proposed handle.
    pub handle: String,
    /// Kind.
    pub kind: String,
    /// The context (AAD).
    pub context: String,
    /// The handle's TOML definition.
    pub definition: String,
    /// Proposed tools, comma-separated.
    pub tools: String,
    /// Recipient.
    pub recipient: String,
    /// SHA-256 of the submit proof.
    pub proof_hash: Vec<u8>,
    /// The sealed private key (cleared once the request leaves `pending`).
    pub intake_key: Option<Vec<u8>>,
    /// Stored status (see [`Request::status_at`]).
    pub status: String,
    /// The approval that decides the grant, once received.
    pub approval_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// When the value arrived (Unix seconds).
    pub received_at: Option<i64>,
}

impl Request {
    /// The status as the agent sees it at `now` (Unix seconds): `pending` past its expiry is
    /// `expired`.
    pub fn status_at(&self, now: i64) -> &str {
        if self.status == status::PENDING && self.expires_at <= now {
            status::EXPIRED
        } else {
            &self.status
        }
    }
}

/// A row as both engines decode it (sqlx decodes tuples of at most 16 columns).
type RequestRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

const REQUEST_COLS: &str = "id, agent_id, agent_name, handle, kind, context, definition, tools, recipient, proof_hash, \
     intake_key, status, approval_id, created_at, expires_at, received_at";

fn request_row(r: RequestRow) -> Request {
    Request {
        id: r.0,
        agent_id: r.1,
        agent_name: r.2,
        handle: r.3,
        kind: r.4,
        context: r.5,
        definition: r.6,
        tools: r.7,
        recipient: r.8,
        proof_hash: r.9,
        intake_key: r.10,
        status: r.11,
        approval_id: r.12,
        created_at: r.13,
        expires_at: r.14,
        received_at: r.15,
    }
}

/// Why a request could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored.
    Created,
    /// The agent already has `max_open` requests waiting for a person.
    TooMany,
    /// A live request (pending, received or approved) already names this handle.
    HandleTaken,
}

/// What a submit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandOutcome {
    /// The value is stored and the request is `received`.
    Received,
    /// Unknown id, wrong proof, used or expired link: alike.
    Unavailable,
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    /// Stores a new `pending` request unless the agent already has `max_open` pending ones or
    /// a live request names the same handle. One transaction: the count and the insert cannot
    /// interleave with another create for the same agent (SQLite's write lock; on PostgreSQL
    /// an advisory lock per agent).
    pub async fn create_request(&self, r: &NewRequest<'_>, max_open: i64) -> Result<CreateOutcome> {
        let now = now_s();
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            if d == crate::db::Dialect::Postgres {
                sqlx::query(&d.sql("SELECT pg_advisory_xact_lock(hashtext(?))")).bind(r.agent_id).execute(&mut *tx).await?;
            }
            // A link that expired unused frees its handle name.
            sqlx::query(&d.sql("DELETE FROM secret_requests WHERE status = 'pending' AND expires_at <= ? AND handle = ?"))
                .bind(now)
                .bind(r.handle)
                .execute(&mut *tx)
                .await?;
            let (open,): (i64,) = sqlx::query_as(&d.sql(
                "SELECT COUNT(*) FROM secret_requests WHERE agent_id = ? AND status = 'pending' AND expires_at > ?",
            ))
            .bind(r.agent_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if open >= max_open {
                return Ok(CreateOutcome::TooMany);
            }
            let ins = sqlx::query(&d.sql(
                "INSERT INTO secret_requests (id, agent_id, agent_name, handle, kind, context, definition, tools, recipient,
                    proof_hash, intake_key, status, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            ))
            .bind(r.id)
            .bind(r.agent_id)
            .bind(r.agent_name)
            .bind(r.handle)
            .bind(r.kind)
            .bind(r.context)
            .bind(r.definition)
            .bind(r.tools)
            .bind(r.recipient)
            .bind(r.proof_hash)
            .bind(r.intake_key)
            .bind(now)
            .bind(r.expires_at)
            .execute(&mut *tx)
            .await;
            match conflict(ins, || format!("request for {}", r.handle)) {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => return Ok(CreateOutcome::HandleTaken),
                Err(e) => return Err(e),
            }
            tx.commit().await?;
            Ok(CreateOutcome::Created)
        })
    }

    /// Deletes a request that was never delivered (its link reached nobody).
    pub async fn delete_request(&self, id: &str) -> Result<()> {
        self.execute("DELETE FROM secret_requests WHERE id = ? AND status = 'pending'", &[id.into()]).await?;
        Ok(())
    }

    /// One request by id.
    pub async fn request(&self, id: &str) -> Result<Option<Request>> {
        let sql = format!("SELECT {REQUEST_COLS} FROM secret_requests WHERE id = ?");
        Ok(self.fetch_optional::<RequestRow>(&sql, &[id.into()]).await?.map(request_row))
    }

    /// The live request (pending, received or approved) for `handle`, whoever made it.
    pub async fn request_for_handle(&self, handle: &str) -> Result<Option<Request>> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM secret_requests WHERE handle = ? AND status IN ('pending', 'received', 'approved')"
        );
        Ok(self.fetch_optional::<RequestRow>(&sql, &[handle.into()]).await?.map(request_row))
    }

    /// The approved requests of `agent_id` (the handles it was given).
    pub async fn approved_requests(&self, agent_id: &str) -> Result<Vec<Request>> {
        let sql = format!("SELECT {REQUEST_COLS} FROM secret_requests WHERE agent_id = ? AND status = 'approved' ORDER BY handle");
        Ok(self.fetch_all::<RequestRow>(&sql, &[agent_id.into()]).await?.into_iter().map(request_row).collect())
    }

    /// Every request whose value is stored (received or approved): their values are known to
    /// the scrubber.
    pub async fn landed_requests(&self) -> Result<Vec<Request>> {
        let sql = format!("SELECT {REQUEST_COLS} FROM secret_requests WHERE status IN ('received', 'approved') ORDER BY handle");
        Ok(self.fetch_all::<RequestRow>(&sql, &[]).await?.into_iter().map(request_row).collect())
    }

    /// Whether `proof_hash` is the submit proof of a pending, unexpired request `id`.
    pub async fn request_proof_matches(&self, id: &str, proof_hash: &[u8]) -> Result<Option<Request>> {
        let r = self.request(id).await?;
        Ok(r.filter(|r| {
            r.status == status::PENDING
                && r.expires_at > now_s()
                && bool::from(r.proof_hash.as_slice().ct_eq(proof_hash))
        }))
    }

    /// Lands a submitted value: in one transaction, the request moves `pending → received`
    /// (only with the right proof, only before expiry; its private key is cleared) and the
    /// sealed value is stored under [`value_seal_name`]. A second submit, a wrong proof or an
    /// expired link is [`LandOutcome::Unavailable`] and stores nothing.
    pub async fn land_request(&self, id: &str, proof_hash: &[u8], handle: &str, sealed: &[u8]) -> Result<LandOutcome> {
        let now = now_s();
        let ts = crate::db::now();
        let name = value_seal_name(handle);
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let n = sqlx::query(&d.sql(
                "UPDATE secret_requests SET status = 'received', intake_key = NULL, received_at = ?
                 WHERE id = ? AND status = 'pending' AND expires_at > ? AND proof_hash = ? AND handle = ?",
            ))
            .bind(now)
            .bind(id)
            .bind(now)
            .bind(proof_hash)
            .bind(handle)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(LandOutcome::Unavailable);
            }
            sqlx::query(&d.sql(
                "INSERT INTO secrets (name, sealed, created_at, updated_at, version) VALUES (?, ?, ?, ?, 1)
                 ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at,
                   version = secrets.version + 1",
            ))
            .bind(&name)
            .bind(sealed)
            .bind(&ts)
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(LandOutcome::Received)
        })
    }

    /// Records the approval that decides a received request's grant.
    pub async fn set_request_approval(&self, id: &str, approval_id: &str) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE secret_requests SET approval_id = ? WHERE id = ? AND status = 'received' AND approval_id IS NULL",
                &[approval_id.into(), id.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// `received → approved`. False when the request is not `received`.
    pub async fn approve_request(&self, id: &str) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE secret_requests SET status = 'approved', decided_at = ? WHERE id = ? AND status = 'received'",
                &[now_s().into(), id.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// `received → rejected`, and the value deleted, in one transaction. False when the
    /// request is not `received`.
    pub async fn reject_request(&self, id: &str) -> Result<bool> {
        let now = now_s();
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let handle: Option<(String,)> = sqlx::query_as(&d.sql(
                "UPDATE secret_requests SET status = 'rejected', decided_at = ? WHERE id = ? AND status = 'received' RETURNING handle",
            ))
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((handle,)) = handle else { return Ok(false) };
            sqlx::query(&d.sql("DELETE FROM secrets WHERE name = ?")).bind(value_seal_name(&handle)).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// `pending`, `received` or `approved` → `revoked`, and the value deleted, in one
    /// transaction: the link stops opening, the handle stops resolving, and its name is free
    /// again. The request (now `revoked`); None when there is no such live request.
    pub async fn revoke_request(&self, id: &str) -> Result<Option<Request>> {
        let now = now_s();
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            // One conditional UPDATE: a submit or an approval racing with it either lands first
            // (and its value is deleted below) or finds the request no longer pending.
            let sql = format!(
                "UPDATE secret_requests SET status = 'revoked', intake_key = NULL, decided_at = ?
                 WHERE id = ? AND status IN ('pending', 'received', 'approved') RETURNING {REQUEST_COLS}"
            );
            let row: Option<RequestRow> = sqlx::query_as(&d.sql(&sql)).bind(now).bind(id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(None) };
            let r = request_row(row);
            sqlx::query(&d.sql("DELETE FROM secrets WHERE name = ?")).bind(value_seal_name(&r.handle)).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(r))
        })
    }

    /// Values stored under [`LEGACY_VALUE_PREFIX`] names: `(name, sealed)`.
    pub async fn legacy_request_values(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let rows: Vec<(String, Vec<u8>)> = self.fetch_all("SELECT name, sealed FROM secrets ORDER BY name", &[]).await?;
        Ok(rows.into_iter().filter(|(n, _)| n.starts_with(LEGACY_VALUE_PREFIX)).collect())
    }

    /// Moves the value stored as `old` to `new`, sealed again for its new name (`sealed`), in one
    /// transaction; its times and version are kept. False when `old` is gone (another process
    /// moved it) or `new` exists.
    pub async fn rename_sealed(&self, old: &str, new: &str, sealed: &[u8]) -> Result<bool> {
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let n = sqlx::query(&d.sql(
                "INSERT INTO secrets (name, sealed, created_at, updated_at, version)
                 SELECT ?, ?, created_at, updated_at, version FROM secrets WHERE name = ?
                 ON CONFLICT(name) DO NOTHING",
            ))
            .bind(new)
            .bind(sealed)
            .bind(old)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            sqlx::query(&d.sql("DELETE FROM secrets WHERE name = ?")).bind(old).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
