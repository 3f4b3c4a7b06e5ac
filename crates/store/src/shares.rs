//! One-time shares: ciphertext, SHA-256 of the consume proof and the limits (never a key or a
//! plaintext), plus read receipts for shares an agent created.
//!
//! A consume is one `UPDATE ... RETURNING` guarded by the id, the proof hash, the views left and
//! the expiry, inside a transaction that also wipes the row at its last view. On SQLite creates
//! and consumes are operations of the store's one writer (`crate::writer`), committed in groups
//! with the audit records of the moment, each under its own savepoint; the writer's
//! `BEGIN IMMEDIATE` serializes them with any other process writing the file. On PostgreSQL the `UPDATE` takes the row lock, and a
//! concurrent consumer waiting on it re-checks the guard against the committed row (read
//! committed), so on either engine, from any number of processes, exactly as many consumers
//! succeed as there were views, and a wrong proof changes nothing. The guard compares SHA-256 hashes of a
//! 256-bit proof, so the timing of that comparison says nothing useful about the proof.
//!
//! An id is never reusable (T17, T29): a share that is used up, expired, deleted or evicted keeps
//! its row as a tombstone (no ciphertext, no proof hash, no views left), so creating another
//! share under its id is a conflict. The sweeper turns expired shares into tombstones instead of
//! deleting them; a consume that finds a share expired does the same at once, so a link once
//! refused as expired stays refused when the clock is set back before the sweeper runs.
//!
//! Shares created without an agent (no read receipt) are capped: at the cap, the oldest live ones
//! become tombstones to make room ([`Store::create_share_capped`]).

use crate::db::{bind, conflict, with_pool};
use crate::writer::{Carry, Op};
use crate::{Result, Store, StoreError};
use rusqlite::OptionalExtension;
use tokio::sync::oneshot;

/// Receipts outlive their share by this long, then the sweeper removes them.
const RECEIPT_RETENTION_SECS: i64 = 30 * 86_400;

/// The ciphertext and proof hash of a tombstone: nothing to read, no proof that matches.
const WIPED: &[u8] = &[];

/// How long the answer to a consume that named an attempt is kept for that attempt's retry
/// (its client lost the answer: the connection or the broker died after the burn committed).
pub const REDELIVERY_SECS: i64 = 120;

/// A live share made without an agent (it has no read receipt), as a condition on `shares s`.
macro_rules! live_anonymous {
    () => {
        "s.views_left > 0 AND s.expires_at > ? AND NOT EXISTS (SELECT 1 FROM share_receipts r WHERE r.share_id = s.id)"
    };
}

/// The statements of a create and a consume, in SQLite's spelling (see `db::Dialect::sql`), run
/// by the SQLite writer and on PostgreSQL alike.
mod sql {
    /// Live shares without a creator: `?` now.
    pub(super) const COUNT_ANONYMOUS: &str = concat!("SELECT count(*) FROM shares s WHERE ", live_anonymous!());
    /// Wipes the oldest `?` live shares without a creator: `?` wiped, `?` wiped, `?` now, `?` count.
    pub(super) const EVICT_ANONYMOUS: &str = concat!(
        "UPDATE shares SET ciphertext = ?, proof_hash = ?, views_left = 0 WHERE id IN (SELECT s.id FROM shares s WHERE ",
        live_anonymous!(),
        " ORDER BY s.created_at, s.id LIMIT ?)"
    );
    pub(super) const INSERT: &str = "INSERT INTO shares (id, ciphertext, proof_hash, expires_at, max_views, views_left, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)";
    pub(super) const UPSERT_RECEIPT: &str = "INSERT INTO share_receipts (share_id, creator, recipient, created_at, expires_at, max_views)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (share_id) DO UPDATE SET creator = excluded.creator, recipient = excluded.recipient,
           created_at = excluded.created_at, expires_at = excluded.expires_at, max_views = excluded.max_views,
           views_used = 0, first_opened_at = NULL, last_opened_at = NULL";
    /// Burns one view: `?` id, `?` proof hash, `?` now.
    pub(super) const BURN: &str = "UPDATE shares SET views_left = views_left - 1
         WHERE id = ? AND proof_hash = ? AND views_left > 0 AND expires_at > ?
         RETURNING ciphertext, expires_at, max_views, views_left";
    /// Makes a tombstone of a used-up share: `?` wiped, `?` wiped, `?` id.
    pub(super) const WIPE: &str = "UPDATE shares SET ciphertext = ?, proof_hash = ? WHERE id = ?";
    /// Makes a tombstone of a share a consume found past its expiry, so that a clock set back
    /// later cannot open it again: `?` wiped, `?` wiped, `?` id, `?` now.
    pub(super) const EXPIRE: &str = "UPDATE shares SET ciphertext = ?, proof_hash = ?, views_left = 0
         WHERE id = ? AND expires_at <= ? AND length(proof_hash) > 0";
    pub(super) const COUNT_VIEW: &str = "UPDATE share_receipts SET views_used = views_used + 1,
         first_opened_at = COALESCE(first_opened_at, ?), last_opened_at = ? WHERE share_id = ?";
    /// The kept answer of an attempt: `?` id, `?` proof hash, `?` attempt hash, `?` now.
    pub(super) const REDELIVER: &str = "SELECT ciphertext, expires_at, max_views, views_left FROM share_deliveries
         WHERE share_id = ? AND proof_hash = ? AND attempt_hash = ? AND until > ?";
    /// Keeps the answer of an attempt (the latest of the share's): id, proof hash, attempt hash,
    /// ciphertext, expiry, views, views left, until.
    pub(super) const KEEP_DELIVERY: &str = "INSERT INTO share_deliveries
         (share_id, proof_hash, attempt_hash, ciphertext, expires_at, max_views, views_left, until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (share_id) DO UPDATE SET proof_hash = excluded.proof_hash, attempt_hash = excluded.attempt_hash,
           ciphertext = excluded.ciphertext, expires_at = excluded.expires_at, max_views = excluded.max_views,
           views_left = excluded.views_left, until = excluded.until";
    /// Drops kept answers past their time: `?` now.
    pub(super) const DROP_DELIVERIES: &str = "DELETE FROM share_deliveries WHERE until <= ?";
}

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
    /// True when this is the kept answer to an earlier consume of the same attempt (no view
    /// was burned now).
    pub redelivered: bool,
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
    /// Stores a new share. A duplicate id, even of a share long used up or expired, is a
    /// [`StoreError::Conflict`].
    pub async fn create_share(&self, s: &NewShareRecord<'_>) -> Result<()> {
        self.create_share_capped(s, None).await.map(|_| ())
    }

    /// Stores a new share; when it has no creator and `anonymous_cap` is set, first turns the
    /// oldest live shares without a creator into tombstones until, with this one, there are at
    /// most `anonymous_cap`. Returns how many were evicted. A duplicate id is a
    /// [`StoreError::Conflict`].
    pub async fn create_share_capped(&self, s: &NewShareRecord<'_>, anonymous_cap: Option<u64>) -> Result<u64> {
        if s.views == 0 {
            return Err(StoreError::Invalid("a share has at least one view".into()));
        }
        let now = unix_now();
        if let Some(w) = self.writer() {
            let (done, wait) = oneshot::channel();
            w.submit(Box::new(Create { share: OwnedShare::from(s), cap: anonymous_cap, now, evicted: 0, done })).await;
            return wait.await.map_err(|_| StoreError::AuditWriterGone)?;
        }
        with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let mut evicted = 0u64;
            if let (None, Some(cap)) = (s.creator, anonymous_cap) {
                let (live,): (i64,) = sqlx::query_as(&d.sql(sql::COUNT_ANONYMOUS)).bind(now).fetch_one(&mut *tx).await?;
                let over = over_cap(live, cap);
                if over > 0 {
                    let args = [WIPED.into(), WIPED.into(), now.into(), over.into()];
                    evicted = bind(sqlx::query(&d.sql(sql::EVICT_ANONYMOUS)), &args).execute(&mut *tx).await?.rows_affected();
                }
            }
            let views = i64::from(s.views);
            let args = [s.id.into(), s.ciphertext.into(), s.proof_hash[..].into(), s.expires_at.into(), views.into(), views.into(), now.into()];
            let res = bind(sqlx::query(&d.sql(sql::INSERT)), &args).execute(&mut *tx).await;
            conflict(res, || "share id".to_owned())?;
            if let Some(creator) = s.creator {
                let args = [s.id.into(), creator.into(), s.recipient.into(), now.into(), s.expires_at.into(), views.into()];
                bind(sqlx::query(&d.sql(sql::UPSERT_RECEIPT)), &args).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(evicted)
        })
    }

    /// Burns one view of share `id` for a caller presenting a proof whose SHA-256 is
    /// `proof_hash`. None for an unknown, expired or used share and for a wrong proof alike.
    ///
    /// With `attempt_hash` (SHA-256 of a random value the client made for this consume), the
    /// answer is also kept for [`REDELIVERY_SECS`]: the same proof with the same attempt gets it
    /// again (`redelivered`) without burning another view, even after the broker restarted, so an
    /// answer lost with its connection is not a link lost; any other request sees what it would
    /// have seen without the copy (a used link is still unknown to it).
    pub async fn consume_share(&self, id: &str, proof_hash: &[u8; 32], attempt_hash: Option<&[u8; 32]>) -> Result<Option<Consumed>> {
        let now = unix_now();
        let attempt_hash = attempt_hash.copied();
        if let Some(w) = self.writer() {
            let (done, wait) = oneshot::channel();
            w.submit(Box::new(Consume { id: id.to_owned(), proof_hash: *proof_hash, attempt_hash, now, consumed: None, done })).await;
            return wait.await.map_err(|_| StoreError::AuditWriterGone)?;
        }
        with_pool!(self, |p, d| {
            // The UPDATE's row lock orders concurrent consumers.
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            sqlx::query(&d.sql(sql::DROP_DELIVERIES)).bind(now).execute(&mut *tx).await?;
            if let Some(a) = &attempt_hash {
                let kept: Option<(Vec<u8>, i64, i64, i64)> = sqlx::query_as(&d.sql(sql::REDELIVER))
                    .bind(id)
                    .bind(&proof_hash[..])
                    .bind(&a[..])
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((ciphertext, expires_at, max_views, views_left)) = kept {
                    tx.commit().await?;
                    return Ok(Some(Consumed { ciphertext, expires_at, views: max_views as u32, views_left: views_left.max(0) as u32, redelivered: true }));
                }
            }
            let row: Option<(Vec<u8>, i64, i64, i64)> =
                sqlx::query_as(&d.sql(sql::BURN)).bind(id).bind(&proof_hash[..]).bind(now).fetch_optional(&mut *tx).await?;
            let Some((ciphertext, expires_at, max_views, views_left)) = row else {
                bind(sqlx::query(&d.sql(sql::EXPIRE)), &[WIPED.into(), WIPED.into(), id.into(), now.into()]).execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(None);
            };
            if views_left <= 0 {
                // A tombstone: the ciphertext is gone, the id stays taken.
                bind(sqlx::query(&d.sql(sql::WIPE)), &[WIPED.into(), WIPED.into(), id.into()]).execute(&mut *tx).await?;
            }
            bind(sqlx::query(&d.sql(sql::COUNT_VIEW)), &[now.into(), now.into(), id.into()]).execute(&mut *tx).await?;
            if let Some(a) = &attempt_hash {
                sqlx::query(&d.sql(sql::KEEP_DELIVERY))
                    .bind(id)
                    .bind(&proof_hash[..])
                    .bind(&a[..])
                    .bind(&ciphertext)
                    .bind(expires_at)
                    .bind(max_views)
                    .bind(views_left.max(0))
                    .bind(now + REDELIVERY_SECS)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Some(Consumed { ciphertext, expires_at, views: max_views as u32, views_left: views_left.max(0) as u32, redelivered: false }))
        })
    }

    /// Moves every kept consume answer `secs` seconds closer to its end (tests of the
    /// redelivery window; the clock is not mocked).
    pub async fn age_share_deliveries(&self, secs: i64) -> Result<u64> {
        self.execute("UPDATE share_deliveries SET until = until - ?", &[secs.into()]).await
    }

    /// True when share `id` is live and `proof_hash` is the hash of its proof. A read only: a
    /// client past its limit of wrong proofs is checked with this before a consume, so its
    /// guesses do not take the write lock, and the key's holder still gets through.
    pub async fn share_proof_matches(&self, id: &str, proof_hash: &[u8; 32]) -> Result<bool> {
        let r: Option<(i64,)> = self
            .fetch_optional(
                "SELECT views_left FROM shares WHERE id = ? AND proof_hash = ? AND views_left > 0 AND expires_at > ?",
                &[id.into(), proof_hash[..].into(), unix_now().into()],
            )
            .await?;
        Ok(r.is_some())
    }

    /// Views left on a live share (None when unknown, used up or expired). For tests and the
    /// operator; it reveals nothing the consume guard does not.
    pub async fn share_views_left(&self, id: &str) -> Result<Option<u32>> {
        let r: Option<(i64,)> =
            self.fetch_optional("SELECT views_left FROM shares WHERE id = ? AND expires_at > ? AND views_left > 0", &[id.into(), unix_now().into()]).await?;
        Ok(r.map(|(v,)| v.max(0) as u32))
    }

    /// Burns a share unread (a link that could not be delivered): it becomes a tombstone.
    pub async fn delete_share(&self, id: &str) -> Result<()> {
        self.execute("UPDATE shares SET ciphertext = ?, proof_hash = ?, views_left = 0 WHERE id = ?", &[WIPED.into(), WIPED.into(), id.into()])
            .await?;
        Ok(())
    }

    /// Revokes live share `id` before it is used up: it becomes a tombstone (its id stays taken).
    /// With `creator` (an agent id), only a share that agent created. False when there is no
    /// such live share (unknown, used up, expired, already revoked, or another agent's).
    pub async fn revoke_share(&self, id: &str, creator: Option<&str>) -> Result<bool> {
        let live = "UPDATE shares SET ciphertext = ?, proof_hash = ?, views_left = 0 \
                    WHERE id = ? AND views_left > 0 AND expires_at > ? AND length(proof_hash) > 0";
        let mut args = vec![WIPED.into(), WIPED.into(), id.into(), unix_now().into()];
        let sql = match creator {
            Some(c) => {
                args.push(id.into());
                args.push(c.into());
                format!("{live} AND EXISTS (SELECT 1 FROM share_receipts r WHERE r.share_id = ? AND r.creator = ?)")
            }
            None => live.to_owned(),
        };
        Ok(self.execute(&sql, &args).await? > 0)
    }

    /// Turns expired shares into tombstones (their ids stay taken) and deletes receipts long past
    /// their share's expiry. Returns the number of shares wiped.
    pub async fn sweep_shares(&self) -> Result<u64> {
        let now = unix_now();
        let n = self
            .execute(
                "UPDATE shares SET ciphertext = ?, proof_hash = ?, views_left = 0 WHERE (expires_at <= ? OR views_left <= 0) AND length(proof_hash) > 0",
                &[WIPED.into(), WIPED.into(), now.into()],
            )
            .await?;
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

/// How many live anonymous shares to evict so that, with one more, there are at most `cap`.
fn over_cap(live: i64, cap: u64) -> i64 {
    (live.max(0) as u64 + 1).saturating_sub(cap.max(1)) as i64
}

/// A [`NewShareRecord`] the writer can keep until its group is written.
struct OwnedShare {
    id: String,
    ciphertext: Vec<u8>,
    proof_hash: [u8; 32],
    expires_at: i64,
    views: u32,
    creator: Option<String>,
    recipient: Option<String>,
}

impl From<&NewShareRecord<'_>> for OwnedShare {
    fn from(s: &NewShareRecord<'_>) -> OwnedShare {
        OwnedShare {
            id: s.id.to_owned(),
            ciphertext: s.ciphertext.to_vec(),
            proof_hash: *s.proof_hash,
            expires_at: s.expires_at,
            views: s.views,
            creator: s.creator.map(str::to_owned),
            recipient: s.recipient.map(str::to_owned),
        }
    }
}

/// A share create for the SQLite writer.
struct Create {
    share: OwnedShare,
    cap: Option<u64>,
    now: i64,
    evicted: u64,
    done: oneshot::Sender<Result<u64>>,
}

impl Op for Create {
    fn apply(&mut self, c: &rusqlite::Connection, _: &mut Carry) -> Result<()> {
        self.evicted = 0;
        let (s, now) = (&self.share, self.now);
        if let (None, Some(cap)) = (&s.creator, self.cap) {
            let live: i64 = c.prepare_cached(sql::COUNT_ANONYMOUS)?.query_row([now], |r| r.get(0))?;
            let over = over_cap(live, cap);
            if over > 0 {
                self.evicted = c.prepare_cached(sql::EVICT_ANONYMOUS)?.execute(rusqlite::params![WIPED, WIPED, now, over])? as u64;
            }
        }
        let views = i64::from(s.views);
        let inserted = c
            .prepare_cached(sql::INSERT)?
            .execute(rusqlite::params![s.id, s.ciphertext, &s.proof_hash[..], s.expires_at, views, views, now]);
        match inserted {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                return Err(StoreError::Conflict("share id".into()));
            }
            other => other?,
        };
        if let Some(creator) = &s.creator {
            c.prepare_cached(sql::UPSERT_RECEIPT)?.execute(rusqlite::params![s.id, creator, s.recipient, now, s.expires_at, views])?;
        }
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<()>) {
        let _ = self.done.send(outcome.map(|()| self.evicted));
    }
}

/// A share consume (one view burned) for the SQLite writer. The writer's transaction holds the
/// store's write lock, so consumers in this process and in any other are serialized.
struct Consume {
    id: String,
    proof_hash: [u8; 32],
    attempt_hash: Option<[u8; 32]>,
    now: i64,
    consumed: Option<Consumed>,
    done: oneshot::Sender<Result<Option<Consumed>>>,
}

impl Op for Consume {
    fn apply(&mut self, c: &rusqlite::Connection, _: &mut Carry) -> Result<()> {
        self.consumed = None;
        c.prepare_cached(sql::DROP_DELIVERIES)?.execute(rusqlite::params![self.now])?;
        if let Some(a) = &self.attempt_hash {
            let kept: Option<(Vec<u8>, i64, i64, i64)> = c
                .prepare_cached(sql::REDELIVER)?
                .query_row(rusqlite::params![self.id, &self.proof_hash[..], &a[..], self.now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            if let Some((ciphertext, expires_at, max_views, views_left)) = kept {
                self.consumed =
                    Some(Consumed { ciphertext, expires_at, views: max_views as u32, views_left: views_left.max(0) as u32, redelivered: true });
                return Ok(());
            }
        }
        let row: Option<(Vec<u8>, i64, i64, i64)> = c
            .prepare_cached(sql::BURN)?
            .query_row(rusqlite::params![self.id, &self.proof_hash[..], self.now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let Some((ciphertext, expires_at, max_views, views_left)) = row else {
            c.prepare_cached(sql::EXPIRE)?.execute(rusqlite::params![WIPED, WIPED, self.id, self.now])?;
            return Ok(());
        };
        if views_left <= 0 {
            c.prepare_cached(sql::WIPE)?.execute(rusqlite::params![WIPED, WIPED, self.id])?;
        }
        c.prepare_cached(sql::COUNT_VIEW)?.execute(rusqlite::params![self.now, self.now, self.id])?;
        if let Some(a) = &self.attempt_hash {
            c.prepare_cached(sql::KEEP_DELIVERY)?.execute(rusqlite::params![
                self.id,
                &self.proof_hash[..],
                &a[..],
                ciphertext,
                expires_at,
                max_views,
                views_left.max(0),
                self.now + REDELIVERY_SECS
            ])?;
        }
        self.consumed =
            Some(Consumed { ciphertext, expires_at, views: max_views as u32, views_left: views_left.max(0) as u32, redelivered: false });
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<()>) {
        let Consume { done, consumed, .. } = *self;
        let _ = done.send(outcome.map(|()| consumed));
    }
}

#[cfg(test)]
mod tests {
    use super::sql;

    /// The cap's count and eviction read live shares through the partial index, not every
    /// tombstone a used share leaves.
    #[tokio::test]
    async fn the_cap_reads_live_shares_through_their_index() {
        let d = tempfile::tempdir().unwrap();
        crate::Store::open(d.path()).await.unwrap();
        let c = rusqlite::Connection::open(d.path().join("store.db")).unwrap();
        for q in [sql::COUNT_ANONYMOUS, sql::EVICT_ANONYMOUS] {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {q}")).unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Null, st.parameter_count());
            let plan: Vec<String> = st.query_map(rusqlite::params_from_iter(nulls), |r| r.get(3)).unwrap().map(Result::unwrap).collect();
            assert!(plan.iter().any(|r| r.contains("USING INDEX shares_live")), "{q}: {plan:?}");
        }
    }
}
