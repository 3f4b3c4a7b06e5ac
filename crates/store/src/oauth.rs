//! Connected OAuth accounts and the one-time links that connect them (T31).
//!
//! An account is one row per `oauth` handle: its token set sealed by the vault (ciphertext only
//! here), a `version` bumped by every change, and a refresh claim. A refresh is a chain of
//! conditional `UPDATE`s on the version, so that of any number of callers in any number of
//! replicas exactly one refreshes a given refresh token:
//!
//! ```text
//! claim (version = v, no live claim) ──▶ provider ──▶ save (version = v) → v + 1, claim cleared
//!                                               └──▶ back off (claim held until retry time)
//!                                               └──▶ needs-reauth (version = v)
//! ```
//!
//! A connect link moves `pending → authorizing → exchanging → connected | failed`, or
//! `denied`; each step is one conditional `UPDATE`, so a callback replayed or raced finds
//! nothing to finish. Expiry is a time, not a status.

use crate::db::{now, Arg};
use crate::{Result, Store};

/// Connect link statuses as stored.
pub mod status {
    /// Waiting for the owner's code.
    pub const PENDING: &str = "pending";
    /// The owner was verified and sent to the provider.
    pub const AUTHORIZING: &str = "authorizing";
    /// A callback claimed the link and is exchanging its code.
    pub const EXCHANGING: &str = "exchanging";
    /// The account is connected.
    pub const CONNECTED: &str = "connected";
    /// The owner (or the provider) refused.
    pub const DENIED: &str = "denied";
    /// The code exchange failed, or too many wrong owner codes.
    pub const FAILED: &str = "failed";
    /// Account status: the refresh token was refused or may be spent.
    pub const NEEDS_REAUTH: &str = "needs-reauth";
}

/// A new connect link.
#[derive(Debug, Clone)]
pub struct NewConnect<'a> {
    /// The link id (random; it is in the link).
    pub id: &'a str,
    /// The oauth handle.
    pub handle: &'a str,
    /// The agent that asked.
    pub agent_id: &'a str,
    /// Its name, shown on the page.
    pub agent_name: &'a str,
    /// The owner who must finish it.
    pub owner: &'a str,
    /// SHA-256 of the code sent to the owner.
    pub code_hash: &'a [u8],
    /// Unix seconds.
    pub expires_at: i64,
}

/// A stored connect link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Link id.
    pub id: String,
    /// Handle.
    pub handle: String,
    /// Requesting agent's id.
    pub agent_id: String,
    /// Requesting agent's name.
    pub agent_name: String,
    /// Owner.
    pub owner: String,
    /// SHA-256 of the owner's code.
    pub code_hash: Vec<u8>,
    /// Wrong codes so far.
    pub attempts: i64,
    /// See [`status`].
    pub status: String,
    /// SHA-256 of the browser binding (the cookie set when the owner was verified).
    pub browser_hash: Option<Vec<u8>>,
    /// The sealed PKCE verifier.
    pub verifier: Option<Vec<u8>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

type ConnectRow = (String, String, String, String, String, Vec<u8>, i64, String, Option<Vec<u8>>, Option<Vec<u8>>, i64, i64);

const CONNECT_COLS: &str =
    "id, handle, agent_id, agent_name, owner, code_hash, attempts, status, browser_hash, verifier, created_at, expires_at";

fn connect_row(r: ConnectRow) -> Connect {
    Connect {
        id: r.0,
        handle: r.1,
        agent_id: r.2,
        agent_name: r.3,
        owner: r.4,
        code_hash: r.5,
        attempts: r.6,
        status: r.7,
        browser_hash: r.8,
        verifier: r.9,
        created_at: r.10,
        expires_at: r.11,
    }
}

/// A connected account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The oauth handle.
    pub handle: String,
    /// Who connected it.
    pub owner: String,
    /// `connected` or `needs-reauth`.
    pub status: String,
    /// The sealed token set.
    pub sealed: Vec<u8>,
    /// Bumped by every change.
    pub version: i64,
    /// When the access token expires (Unix seconds), if known.
    pub access_expires_at: Option<i64>,
    /// Until when (Unix milliseconds) a refresh claim or a back-off holds.
    pub claim_until: Option<i64>,
    /// The broker holding the claim; `None` with `claim_until` set is a back-off.
    pub claimed_by: Option<String>,
    /// First connected (RFC 3339).
    pub connected_at: String,
    /// Last refreshed.
    pub refreshed_at: Option<String>,
}

type AccountRow = (String, String, String, Vec<u8>, i64, Option<i64>, Option<i64>, Option<String>, String, Option<String>);

const ACCOUNT_COLS: &str =
    "handle, owner, status, sealed, version, access_expires_at, claim_until, claimed_by, connected_at, refreshed_at";

fn account_row(r: AccountRow) -> Account {
    Account {
        handle: r.0,
        owner: r.1,
        status: r.2,
        sealed: r.3,
        version: r.4,
        access_expires_at: r.5,
        claim_until: r.6,
        claimed_by: r.7,
        connected_at: r.8,
        refreshed_at: r.9,
    }
}

/// What a finished refresh leaves.
#[derive(Debug, Clone, Copy)]
pub struct Refreshed<'a> {
    /// The new sealed token set.
    pub sealed: &'a [u8],
    /// Its access token's expiry.
    pub access_expires_at: Option<i64>,
}

impl Store {
    /// Records a new connect link (`pending`).
    pub async fn insert_connect(&self, c: &NewConnect<'_>) -> Result<()> {
        self.execute(
            "INSERT INTO oauth_connects (id, handle, agent_id, agent_name, owner, code_hash, status, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            &[
                c.id.into(),
                c.handle.into(),
                c.agent_id.into(),
                c.agent_name.into(),
                c.owner.into(),
                c.code_hash.into(),
                chrono::Utc::now().timestamp().into(),
                c.expires_at.into(),
            ],
        )
        .await?;
        // Links long past their expiry are of no use to anyone.
        let old = chrono::Utc::now().timestamp() - 86_400;
        self.execute("DELETE FROM oauth_connects WHERE expires_at < ?", &[old.into()]).await?;
        Ok(())
    }

    /// One connect link by id.
    pub async fn connect_link(&self, id: &str) -> Result<Option<Connect>> {
        let sql = format!("SELECT {CONNECT_COLS} FROM oauth_connects WHERE id = ?");
        Ok(self.fetch_optional::<ConnectRow>(&sql, &[id.into()]).await?.map(connect_row))
    }

    /// Counts a wrong owner code; at `max` wrong codes the link fails for good. Returns whether
    /// the link is still usable.
    pub async fn connect_code_failed(&self, id: &str, max: i64) -> Result<bool> {
        self.execute(
            "UPDATE oauth_connects SET attempts = attempts + 1,
                    status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE status END
             WHERE id = ? AND status IN ('pending', 'authorizing')",
            &[max.into(), id.into()],
        )
        .await?;
        Ok(self.connect_link(id).await?.is_some_and(|c| c.status == status::PENDING || c.status == status::AUTHORIZING))
    }

    /// The owner was verified: the link moves to `authorizing` with the hash of its `state`, the
    /// browser binding and the sealed PKCE verifier (a second verification replaces them). False
    /// when the link is not pending or authorizing, or has expired.
    pub async fn connect_authorize(&self, id: &str, state_hash: &[u8], browser_hash: &[u8], verifier: &[u8]) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE oauth_connects SET status = 'authorizing', state_hash = ?, browser_hash = ?, verifier = ?
                 WHERE id = ? AND status IN ('pending', 'authorizing') AND expires_at > ?",
                &[state_hash.into(), browser_hash.into(), verifier.into(), id.into(), chrono::Utc::now().timestamp().into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// The link a callback's `state` belongs to, claimed for its one exchange (`authorizing` →
    /// `exchanging`) if it is live and bound to the browser whose binding hashes to
    /// `browser_hash`. `None` for an unknown state, another browser, a link used or being used,
    /// or an expired one: the callback finishes nothing.
    pub async fn claim_callback(&self, state_hash: &[u8], browser_hash: &[u8]) -> Result<Option<Connect>> {
        let n = self
            .execute(
                "UPDATE oauth_connects SET status = 'exchanging'
                 WHERE state_hash = ? AND browser_hash = ? AND status = 'authorizing' AND expires_at > ?",
                &[state_hash.into(), browser_hash.into(), chrono::Utc::now().timestamp().into()],
            )
            .await?;
        if n != 1 {
            return Ok(None);
        }
        let sql = format!("SELECT {CONNECT_COLS} FROM oauth_connects WHERE state_hash = ?");
        Ok(self.fetch_optional::<ConnectRow>(&sql, &[state_hash.into()]).await?.map(connect_row))
    }

    /// Ends a link (`to` is `connected`, `denied` or `failed`) from one of `from`.
    pub async fn finish_connect(&self, id: &str, from: &[&str], to: &str) -> Result<bool> {
        let mut q = String::from("UPDATE oauth_connects SET status = ?, verifier = NULL WHERE id = ? AND status IN (");
        q.push_str(&vec!["?"; from.len()].join(", "));
        q.push(')');
        let mut args = vec![Arg::Text(to), Arg::Text(id)];
        args.extend(from.iter().map(|f| Arg::Text(f)));
        Ok(self.execute(&q, &args).await? == 1)
    }

    /// Stores a newly connected account's token set, replacing any earlier one (a new version;
    /// any refresh claim is dropped).
    pub async fn put_account(&self, handle: &str, owner: &str, sealed: &[u8], access_expires_at: Option<i64>) -> Result<i64> {
        let ts = now();
        let (v,): (i64,) = self
            .fetch_one(
                "INSERT INTO oauth_accounts (handle, owner, status, sealed, version, access_expires_at, connected_at, updated_at)
                 VALUES (?, ?, 'connected', ?, 1, ?, ?, ?)
                 ON CONFLICT(handle) DO UPDATE SET owner = excluded.owner, status = 'connected', sealed = excluded.sealed,
                   version = oauth_accounts.version + 1, access_expires_at = excluded.access_expires_at,
                   claim_until = NULL, claimed_by = NULL, connected_at = excluded.connected_at, refreshed_at = NULL,
                   updated_at = excluded.updated_at
                 RETURNING version",
                &[handle.into(), owner.into(), sealed.into(), access_expires_at.into(), (&ts).into(), (&ts).into()],
            )
            .await?;
        Ok(v)
    }

    /// The account of an oauth handle.
    pub async fn account(&self, handle: &str) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLS} FROM oauth_accounts WHERE handle = ?");
        Ok(self.fetch_optional::<AccountRow>(&sql, &[handle.into()]).await?.map(account_row))
    }

    /// Every account.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLS} FROM oauth_accounts ORDER BY handle");
        Ok(self.fetch_all::<AccountRow>(&sql, &[]).await?.into_iter().map(account_row).collect())
    }

    /// Claims the refresh of version `version` until `until_ms` (Unix milliseconds) for `by`.
    /// False when the account moved on, needs re-authorization, or another claim or back-off
    /// holds: then someone else refreshes, and the caller waits for the new version.
    pub async fn claim_refresh(&self, handle: &str, version: i64, until_ms: i64, by: &str) -> Result<bool> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let n = self
            .execute(
                "UPDATE oauth_accounts SET claim_until = ?, claimed_by = ?
                 WHERE handle = ? AND version = ? AND status = 'connected' AND (claim_until IS NULL OR claim_until < ?)",
                &[until_ms.into(), by.into(), handle.into(), version.into(), now_ms.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Saves a refreshed token set over version `version` (the claim's) and drops the claim, in
    /// one statement. False when the version moved on (the account was connected again).
    pub async fn save_refresh(&self, handle: &str, version: i64, r: &Refreshed<'_>) -> Result<bool> {
        let ts = now();
        let n = self
            .execute(
                "UPDATE oauth_accounts SET sealed = ?, version = version + 1, access_expires_at = ?, claim_until = NULL,
                        claimed_by = NULL, refreshed_at = ?, updated_at = ?
                 WHERE handle = ? AND version = ?",
                &[r.sealed.into(), r.access_expires_at.into(), (&ts).into(), (&ts).into(), handle.into(), version.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Keeps the claim of version `version` as a back-off until `until_ms`: nobody refreshes
    /// before then, and the tokens stay.
    pub async fn back_off_refresh(&self, handle: &str, version: i64, until_ms: i64) -> Result<()> {
        self.execute(
            "UPDATE oauth_accounts SET claim_until = ?, claimed_by = NULL WHERE handle = ? AND version = ?",
            &[until_ms.into(), handle.into(), version.into()],
        )
        .await?;
        Ok(())
    }

    /// Marks version `version` as needing the owner again (`needs-reauth`).
    pub async fn account_needs_reauth(&self, handle: &str, version: i64) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE oauth_accounts SET status = 'needs-reauth', version = version + 1, claim_until = NULL, claimed_by = NULL,
                        updated_at = ?
                 WHERE handle = ? AND version = ? AND status = 'connected'",
                &[(&now()).into(), handle.into(), version.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes an account; the row it was, if any.
    pub async fn delete_account(&self, handle: &str) -> Result<Option<Account>> {
        let Some(a) = self.account(handle).await? else { return Ok(None) };
        let n = self.execute("DELETE FROM oauth_accounts WHERE handle = ? AND version = ?", &[handle.into(), a.version.into()]).await?;
        Ok((n == 1).then_some(a))
    }
}
