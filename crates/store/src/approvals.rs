//! Approvers (people who decide held calls) and approvals (one held call each).
//!
//! An approver is not an agent: its own table, its own token format (`apr_<id>_<43 base64url
//! chars>`, 256 random bits, only the SHA-256 stored, compared in constant time). An agent token
//! never authenticates here, nor an approver token as an agent.
//!
//! An approval row holds the hash of the exact call it approves (`call_hash`), a `binding` hash
//! over that, its id and its expiry, and the scrubbed arguments to show the approver. Every state
//! change is one conditional UPDATE, so a decision lands once and an approval is used once even
//! under concurrent retries.

use crate::agents::{token_hash, NewToken, APPROVER};
use crate::db::{found, now, with_pool};
use crate::{Result, Store};
use subtle::ConstantTimeEq;

/// A stored approver (never its token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approver {
    /// Stable id (16 hex digits).
    pub id: String,
    /// The name recorded with each decision.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// id, name, created_at, revoked_at, token_hash.
type ApproverRow = (String, String, String, Option<String>, Vec<u8>);

/// Where an approval stands. `expired` is not stored: it is any pending or approved row past
/// its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved, not used yet.
    Approved,
    /// Denied.
    Denied,
    /// Approved and used by the call it approves.
    Used,
    /// Past its expiry without being used.
    Expired,
}

impl ApprovalStatus {
    fn from_row(s: &str, expires_at: i64, now_ms: i64) -> ApprovalStatus {
        match s {
            "used" => ApprovalStatus::Used,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            _ if expires_at <= now_ms => ApprovalStatus::Expired,
            "approved" => ApprovalStatus::Approved,
            _ => ApprovalStatus::Pending,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Used => "used",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// A new approval request.
#[derive(Debug)]
pub struct NewApproval<'a> {
    /// Its id (random, unguessable).
    pub id: &'a str,
    /// The hash of the exact call.
    pub call_hash: &'a [u8],
    /// The hash binding `call_hash`, the id and the expiry.
    pub binding: &'a [u8],
    /// The agent's id.
    pub agent_id: &'a str,
    /// The agent's name.
    pub agent_name: &'a str,
    /// Parent names, nearest first.
    pub parent_chain: &'a [String],
    /// The tool.
    pub tool: &'a str,
    /// The handle.
    pub handle: &'a str,
    /// The arguments, scrubbed, for the approver to read.
    pub arguments: &'a serde_json::Value,
    /// Why the call needs approval.
    pub reason: &'a str,
    /// The policy version the call was checked under.
    pub policy_version: &'a str,
    /// Creation, Unix milliseconds.
    pub created_at: i64,
    /// Expiry, Unix milliseconds.
    pub expires_at: i64,
}

/// A stored approval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Approval {
    /// Its id.
    pub id: String,
    /// The hash of the exact call.
    #[serde(skip)]
    pub call_hash: Vec<u8>,
    /// The binding hash.
    #[serde(skip)]
    pub binding: Vec<u8>,
    /// Where it stands now.
    pub status: ApprovalStatus,
    /// The agent's id.
    pub agent_id: String,
    /// The agent's name.
    pub agent: String,
    /// Parent names, nearest first.
    pub parent_chain: Vec<String>,
    /// The tool.
    pub tool: String,
    /// The handle.
    pub handle: String,
    /// The arguments, scrubbed.
    pub arguments: serde_json::Value,
    /// Why the call needs approval.
    pub reason: String,
    /// The policy version the call was checked under.
    pub policy_version: String,
    /// Creation, Unix milliseconds.
    pub created_at: i64,
    /// Expiry, Unix milliseconds.
    pub expires_at: i64,
    /// When it was decided, Unix milliseconds.
    pub decided_at: Option<i64>,
    /// Who decided.
    pub approver: Option<String>,
    /// When the approved call ran, Unix milliseconds.
    pub used_at: Option<i64>,
}

const APPROVAL_COLS: &str = "id, call_hash, binding, status, agent_id, agent_name, parent_chain, tool, handle, arguments, \
reason, policy_version, created_at, expires_at, decided_at, approver, used_at";

fn row_to_approval<'r, R>(r: &'r R, now_ms: i64) -> std::result::Result<Approval, sqlx::Error>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let status: String = r.try_get("status")?;
    let expires_at: i64 = r.try_get("expires_at")?;
    let chain: String = r.try_get("parent_chain")?;
    let args: String = r.try_get("arguments")?;
    Ok(Approval {
        status: ApprovalStatus::from_row(&status, expires_at, now_ms),
        id: r.try_get("id")?,
        call_hash: r.try_get("call_hash")?,
        binding: r.try_get("binding")?,
        agent_id: r.try_get("agent_id")?,
        agent: r.try_get("agent_name")?,
        parent_chain: serde_json::from_str(&chain).unwrap_or_default(),
        tool: r.try_get("tool")?,
        handle: r.try_get("handle")?,
        arguments: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
        reason: r.try_get("reason")?,
        policy_version: r.try_get("policy_version")?,
        created_at: r.try_get("created_at")?,
        expires_at,
        decided_at: r.try_get("decided_at")?,
        approver: r.try_get("approver")?,
        used_at: r.try_get("used_at")?,
    })
}

/// The result of a decision attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecideOutcome {
    /// The decision was recorded.
    Decided,
    /// No such approval.
    NotFound,
    /// Already decided, used or expired, or made under another policy version.
    NotPending,
}

/// Marks lapsed approvals (pending or approved, past their expiry) `expired` for good: once the
/// broker has seen one lapse, a clock set back does not make it pending or usable again.
const LAPSE: &str = "UPDATE approvals SET status = 'expired' WHERE status IN ('pending', 'approved') AND expires_at <= ?";

impl Store {
    /// Marks the lapsed approvals of `which` (a condition with one `?`, bound to `key`), or all.
    async fn lapse_approvals(&self, which: Option<(&str, crate::db::Arg<'_>)>, now_ms: i64) -> Result<()> {
        match which {
            Some((cond, key)) => self.execute(&format!("{LAPSE} AND {cond}"), &[now_ms.into(), key]).await?,
            None => self.execute(LAPSE, &[now_ms.into()]).await?,
        };
        Ok(())
    }

    /// Creates an approver and returns it with its token (shown once).
    pub async fn add_approver(&self, name: &str) -> Result<(Approver, NewToken)> {
        let (id, created, token) = self.add_holder(APPROVER, name, &[]).await?;
        Ok((Approver { id, name: name.to_owned(), created_at: created, revoked_at: None }, token))
    }

    /// Authenticates an approver token: the live approver it belongs to, or None (the same for a
    /// malformed, unknown, wrong or revoked token, and for any agent token).
    pub async fn authenticate_approver(&self, token: &str) -> Result<Option<Approver>> {
        let Some(id) = APPROVER.token_id(token) else { return Ok(None) };
        let row: Option<ApproverRow> = self
            .fetch_optional("SELECT id, name, created_at, revoked_at, token_hash FROM approvers WHERE id = ?", &[id.into()])
            .await?;
        let Some((id, name, created_at, revoked_at, stored)) = row else { return Ok(None) };
        if !bool::from(token_hash(token).as_slice().ct_eq(stored.as_slice())) || revoked_at.is_some() {
            return Ok(None);
        }
        Ok(Some(Approver { id, name, created_at, revoked_at }))
    }

    /// Every approver, live and revoked, oldest first.
    pub async fn list_approvers(&self) -> Result<Vec<Approver>> {
        let rows: Vec<(String, String, String, Option<String>)> =
            self.fetch_all("SELECT id, name, created_at, revoked_at FROM approvers ORDER BY created_at, id", &[]).await?;
        Ok(rows.into_iter().map(|r| Approver { id: r.0, name: r.1, created_at: r.2, revoked_at: r.3 }).collect())
    }

    /// Revokes the live approver called `name` (or with that id).
    pub async fn revoke_approver(&self, name_or_id: &str) -> Result<()> {
        let n = self
            .execute(
                "UPDATE approvers SET revoked_at = ? WHERE (name = ? OR id = ?) AND revoked_at IS NULL",
                &[(&now()).into(), name_or_id.into(), name_or_id.into()],
            )
            .await?;
        found(n, || format!("live approver {name_or_id}"))
    }

    /// Stores a new pending approval.
    pub async fn create_approval(&self, a: &NewApproval<'_>) -> Result<()> {
        let chain = serde_json::to_string(a.parent_chain).expect("JSON");
        let args = serde_json::to_string(a.arguments).expect("JSON");
        self.execute(
            "INSERT INTO approvals (id, call_hash, binding, status, agent_id, agent_name, parent_chain, tool, handle, \
             arguments, reason, policy_version, created_at, expires_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                a.id.into(),
                a.call_hash.into(),
                a.binding.into(),
                a.agent_id.into(),
                a.agent_name.into(),
                (&chain).into(),
                a.tool.into(),
                a.handle.into(),
                (&args).into(),
                a.reason.into(),
                a.policy_version.into(),
                a.created_at.into(),
                a.expires_at.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// One approval by id.
    pub async fn approval(&self, id: &str, now_ms: i64) -> Result<Option<Approval>> {
        self.lapse_approvals(Some(("id = ?", id.into())), now_ms).await?;
        let sql = format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?");
        with_pool!(self, |p, d| {
            let row = sqlx::query(&d.sql(&sql)).bind(id).fetch_optional(p).await?;
            Ok(row.map(|r| row_to_approval(&r, now_ms)).transpose()?)
        })
    }

    /// The unexpired, unused approvals of one exact call, newest first.
    pub async fn approvals_for_call(&self, call_hash: &[u8], now_ms: i64) -> Result<Vec<Approval>> {
        self.lapse_approvals(Some(("call_hash = ?", call_hash.into())), now_ms).await?;
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE call_hash = ? AND status IN ('pending', 'approved', 'denied') \
             AND expires_at > ? ORDER BY created_at DESC"
        );
        with_pool!(self, |p, d| {
            let rows = sqlx::query(&d.sql(&sql)).bind(call_hash).bind(now_ms).fetch_all(p).await?;
            Ok(rows.iter().map(|r| row_to_approval(r, now_ms)).collect::<std::result::Result<_, _>>()?)
        })
    }

    /// Pending approvals, oldest first.
    pub async fn pending_approvals(&self, now_ms: i64) -> Result<Vec<Approval>> {
        self.lapse_approvals(None, now_ms).await?;
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE status = 'pending' AND expires_at > ? ORDER BY created_at"
        );
        with_pool!(self, |p, d| {
            let rows = sqlx::query(&d.sql(&sql)).bind(now_ms).fetch_all(p).await?;
            Ok(rows.iter().map(|r| row_to_approval(r, now_ms)).collect::<std::result::Result<_, _>>()?)
        })
    }

    /// Records a decision on a pending, unexpired approval made under `policy_version`. Exactly
    /// one of any number of concurrent decisions lands.
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        now_ms: i64,
        policy_version: &str,
    ) -> Result<DecideOutcome> {
        self.lapse_approvals(Some(("id = ?", id.into())), now_ms).await?;
        let n = self
            .execute(
                "UPDATE approvals SET status = ?, decided_at = ?, approver = ? \
                 WHERE id = ? AND status = 'pending' AND expires_at > ? AND policy_version = ?",
                &[
                    (if approve { "approved" } else { "denied" }).into(),
                    now_ms.into(),
                    approver.into(),
                    id.into(),
                    now_ms.into(),
                    policy_version.into(),
                ],
            )
            .await?;
        if n == 1 {
            return Ok(DecideOutcome::Decided);
        }
        let exists: Option<(String,)> = self.fetch_optional("SELECT id FROM approvals WHERE id = ?", &[id.into()]).await?;
        Ok(if exists.is_some() { DecideOutcome::NotPending } else { DecideOutcome::NotFound })
    }

    /// Uses an approved, unexpired approval whose binding is `binding`. True for exactly one of
    /// any number of concurrent callers.
    pub async fn consume_approval(&self, id: &str, binding: &[u8], now_ms: i64) -> Result<bool> {
        self.lapse_approvals(Some(("id = ?", id.into())), now_ms).await?;
        let n = self
            .execute(
                "UPDATE approvals SET status = 'used', used_at = ? \
                 WHERE id = ? AND status = 'approved' AND binding = ? AND expires_at > ?",
                &[now_ms.into(), id.into(), binding.into(), now_ms.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Undoes a decision that could not be audited (back to pending, unless already used).
    pub async fn revert_decision(&self, id: &str) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE approvals SET status = 'pending', decided_at = NULL, approver = NULL \
                 WHERE id = ? AND status IN ('approved', 'denied')",
                &[id.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives back an approval used by a call that was then refused before it ran (a send limit,
    /// an audit failure), so that the approved call can still run once.
    pub async fn unuse_approval(&self, id: &str) -> Result<bool> {
        let n = self.execute("UPDATE approvals SET status = 'approved', used_at = NULL WHERE id = ? AND status = 'used'", &[id.into()]).await?;
        Ok(n == 1)
    }
}
