//! One-time shares: ciphertext, SHA-256 of the consume proof and the limits (never a key or a
//! plaintext), plus read receipts for shares an agent created.
//!
//! A consume is one `UPDATE ... RETURNING` guarded by the id, the proof hash, the views left and
//! the expiry, inside a transaction that also deletes the row at its last view. SQLite
//! serializes writers (`BEGIN IMMEDIATE`); on PostgreSQL the `UPDATE` takes the row lock, and a
//! concurrent consumer waiting on it re-checks the guard against the committed row (read
//! committed), so on either engine, from any number of processes, exactly as many consumers
//! succeed as there were views, and a wrong proof changes nothing. The guard compares SHA-256 hashes of a
//! 256-bit proof, so the timing of that comparison says nothing useful about the proof.

use crate::db::{bind, conflict, with_pool};
use crate::{Result, Store, StoreError};

/// Receipts outlive their share by this long, then the sweeper removes them.
const RECEIPT_RETENTION_SECS: i64 = 30 * 86_400;

/// A share to store.
#[derive(Debug, Clone)]
pub struct NewShareRecord<'a> {
    /// The client-chosen id (22 base64url characters; checked by the caller).
    pub id: &'a str,
    /// Nonce, ciphertext and tag.
    pub ciphertext: &'a [u8],
    /// SHA-256 of the consume proof.
    pub proof_hash: &'a [u8; 32],
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The view limit.
    pub views: u32,
    /// The creating agent's id, when an agent created it (enables the read receipt).
    pub creator: Option<&'a str>,
    /// Whom it was delivered to (the recipient name from the configuration), for the receipt.
    pub recipient: Option<&'a str>,
}

/// What a successful consume returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Nonce, ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// Expiry, Unix seconds (bound into the associated data).
    pub expires_at: i64,
    /// The view limit the share was created with (bound into the associated data).
    pub views: u32,
    /// Views left after this one; 0 means the record is gone.
    pub views_left: u32,
}

/// Whether and when an agent's share was opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    /// The share id.
    pub share_id: String,
    /// The recipient it was delivered to.
    pub recipient: Option<String>,
    /// Creation, Unix seconds.
    pub created_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The view limit.
    pub views: u32,
    /// Views used so far.
    pub views_used: u32,
    /// First open, Unix seconds.
    pub first_opened_at: Option<i64>,
    /// Latest open, Unix seconds.
    pub last_opened_at: Option<i64>,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    /// Stores a new share. A duplicate id is a [`StoreError::Conflict`].
    pub async fn create_share(&self, s: &NewShareRecord<'_>) -> Result<()> {
        if s.views == 0 {
            return Err(StoreError::Invalid("a share has at least one view".into()));
        }
        let now = unix_now();
        with_pool!(self, |p, d| {
            let mut tx = p.begin().await?;
            let views = i64::from(s.views);
            let insert = d.sql(
                "INSERT INTO shares (id, ciphertext, proof_hash, expires_at, max_views, views_left, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            );
            let args = [s.id.into(), s.ciphertext.into(), s.proof_hash[..].into(), s.expires_at.into(), views.into(), views.into(), now.into()];
            let res = bind(sqlx::query(&insert), &args).execute(&mut *tx).await;
            conflict(res, || "share id".to_owned())?;
            if let Some(creator) = s.creator {
                let upsert = d.sql(
                    "INSERT INTO share_receipts (share_id, creator, recipient, created_at, expires_at, max_views)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (share_id) DO UPDATE SET creator = excluded.creator, recipient = excluded.recipient,
                       created_at = excluded.created_at, expires_at = excluded.expires_at, max_views = excluded.max_views,
                       views_used = 0, first_opened_at = NULL, last_opened_at = NULL",
                );
                let args = [s.id.into(), creator.into(), s.recipient.into(), now.into(), s.expires_at.into(), views.into()];
                bind(sqlx::query(&upsert), &args).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Burns one view of share `id` for a caller presenting a proof whose SHA-256 is
    /// `proof_hash`. None for an unknown, expired or used share and for a wrong proof alike.
    pub async fn consume_share(&self, id: &str, proof_hash: &[u8; 32]) -> Result<Option<Consumed>> {
        let now = unix_now();
        with_pool!(self, |p, d| {
            // SQLite: IMMEDIATE takes the write lock up front, so concurrent consumers queue
            // (busy_timeout) instead of failing on a read-to-write upgrade. PostgreSQL: the
            // UPDATE's row lock orders them.
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let row: Option<(Vec<u8>, i64, i64, i64)> = sqlx::query_as(&d.sql(
                "UPDATE shares SET views_left = views_left - 1
                 WHERE id = ? AND proof_hash = ? AND views_left > 0 AND expires_at > ?
                 RETURNING ciphertext, expires_at, max_views, views_left",
            ))
            .bind(id)
            .bind(&proof_hash[..])
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((ciphertext, expires_at, max_views, views_left)) = row else {
                return Ok(None);
            };
            if views_left <= 0 {
                sqlx::query(&d.sql("DELETE FROM shares WHERE id = ?")).bind(id).execute(&mut *tx).await?;
            }
            let receipt = d.sql(
                "UPDATE share_receipts SET views_used = views_used + 1,
                 first_opened_at = COALESCE(first_opened_at, ?), last_opened_at = ? WHERE share_id = ?",
            );
            bind(sqlx::query(&receipt), &[now.into(), now.into(), id.into()]).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(Consumed { ciphertext, expires_at, views: max_views as u32, views_left: views_left.max(0) as u32 }))
        })
    }

    /// Views left on a live share (None when unknown, used up or expired). For tests and the
    /// operator; it reveals nothing the consume guard does not.
    pub async fn share_views_left(&self, id: &str) -> Result<Option<u32>> {
        let r: Option<(i64,)> =
            self.fetch_optional("SELECT views_left FROM shares WHERE id = ? AND expires_at > ?", &[id.into(), unix_now().into()]).await?;
        Ok(r.map(|(v,)| v.max(0) as u32))
    }

    /// Deletes a share (a link that could not be delivered).
    pub async fn delete_share(&self, id: &str) -> Result<()> {
        self.execute("DELETE FROM shares WHERE id = ?", &[id.into()]).await?;
        Ok(())
    }

    /// Deletes expired shares (and receipts long past their share's expiry). Returns the number
    /// of shares deleted.
    pub async fn sweep_shares(&self) -> Result<u64> {
        let now = unix_now();
        let n = self.execute("DELETE FROM shares WHERE expires_at <= ? OR views_left <= 0", &[now.into()]).await?;
        self.execute("DELETE FROM share_receipts WHERE expires_at <= ?", &[(now - RECEIPT_RETENTION_SECS).into()]).await?;
        Ok(n)
    }

    /// The receipt of share `id` if `creator` (an agent id) created it.
    pub async fn share_receipt(&self, id: &str, creator: &str) -> Result<Option<Receipt>> {
        type Row = (String, Option<String>, i64, i64, i64, i64, Option<i64>, Option<i64>);
        let r: Option<Row> = self
            .fetch_optional(
                "SELECT share_id, recipient, created_at, expires_at, max_views, views_used, first_opened_at, last_opened_at
                 FROM share_receipts WHERE share_id = ? AND creator = ?",
                &[id.into(), creator.into()],
            )
            .await?;
        Ok(r.map(|r| Receipt {
            share_id: r.0,
            recipient: r.1,
            created_at: r.2,
            expires_at: r.3,
            views: r.4 as u32,
            views_used: r.5 as u32,
            first_opened_at: r.6,
            last_opened_at: r.7,
        }))
    }
}
