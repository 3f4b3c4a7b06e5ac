//! Agent identities. A token is shown once at creation; only its SHA-256 is stored, and
//! verification compares hashes in constant time (invariant 5).
//!
//! Token format: `alk_<id>_<43 base64url chars>` where `<id>` is the agent's 16-hex-digit id and
//! the tail carries 256 random bits. The id lets the store fetch one row; the comparison of the
//! hash of the whole token is what authenticates.

use crate::db::{conflict, now, with_pool, Arg};
use crate::{Result, Store, StoreError};
use base64::Engine as _;
use rand::RngCore;
use ring::digest;
use subtle::ConstantTimeEq;

/// A stored agent (never its token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Agent {
    /// Stable id (16 hex digits).
    pub id: String,
    /// The name that grants refer to.
    pub name: String,
    /// The parent agent's id, for sub-agents.
    pub parent: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<String>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// A newly issued token. Its `Debug` hides the value; print it once with [`NewToken::reveal`].
pub struct NewToken(String);

impl NewToken {
    /// The token text, to show the operator once.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken([hidden])")
    }
}

/// What a cache of authenticated agents keys a token by: the agent id it names and the SHA-256
/// of the whole token (to compare in constant time). None for a token that is not an agent
/// token's shape.
pub fn agent_token_key(token: &str) -> Option<(String, [u8; 32])> {
    let id = AGENT.token_id(token)?.to_owned();
    let mut h = [0u8; 32];
    h.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    Some((id, h))
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes()).as_ref().to_vec()
}

/// A kind of token holder: agents (`alk_` tokens) or approvers (`apr_` tokens), each in its
/// own table. Token format: `<prefix><id>_<43 base64url chars>`, where `<id>` is the holder's
/// 16-hex-digit id and the tail carries 256 random bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holder {
    /// The table.
    table: &'static str,
    /// What one is called in messages.
    what: &'static str,
    /// The tokens' prefix.
    prefix: &'static str,
}

/// Agents.
const AGENT: Holder = Holder { table: "agents", what: "agent", prefix: "alk_" };

/// Approvers.
pub(crate) const APPROVER: Holder = Holder { table: "approvers", what: "approver", prefix: "apr_" };

impl Holder {
    /// The holder id in `token`, or None when it is not shaped like this holder's token.
    pub(crate) fn token_id(self, token: &str) -> Option<&str> {
        let rest = token.strip_prefix(self.prefix)?;
        let (id, tail) = rest.split_once('_')?;
        let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        let tail_ok = tail.len() == 43 && tail.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (id_ok && tail_ok).then_some(id)
    }

    /// A new id and a token for it.
    fn new_token(self) -> (String, String) {
        // The thread-local generator is not Send: it must not live across an await.
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let id = hex::encode(id);
        let token = self.token_for(&id);
        (id, token)
    }

    /// A new token for the holder `id`.
    fn token_for(self, id: &str) -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        format!("{}{id}_{}", self.prefix, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
    }
}

impl Store {
    /// Stores a new `holder` called `name`: its id, name, token hash and creation time, and the
    /// `extra` columns with their values. Returns the id, the creation time and the token.
    pub(crate) async fn add_holder(
        &self,
        holder: Holder,
        name: &str,
        extra: &[(&str, Arg<'_>)],
    ) -> Result<(String, String, NewToken)> {
        if !airlock_core::config::valid_agent_name(name) {
            return Err(StoreError::Invalid(format!(
                "an {} name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter",
                holder.what
            )));
        }
        let (id, token) = holder.new_token();
        let created = now();
        let hash = token_hash(&token);
        let mut columns = vec!["id", "name", "token_hash", "created_at"];
        let mut args = vec![Arg::Text(&id), Arg::Text(name), Arg::Bytes(&hash), Arg::Text(&created)];
        for (column, value) in extra {
            columns.push(column);
            args.push(*value);
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            holder.table,
            columns.join(", "),
            vec!["?"; columns.len()].join(", ")
        );
        conflict(self.execute(&sql, &args).await, || format!("{} {name}", holder.what))?;
        Ok((id, created, NewToken(token)))
    }
}

type AgentRow = (String, String, Option<String>, String, Option<String>, Option<String>);

/// An agent row and its token hash.
type AuthRow = (String, String, Option<String>, String, Option<String>, Option<String>, Vec<u8>);

fn row_to_agent(r: AgentRow) -> Agent {
    Agent { id: r.0, name: r.1, parent: r.2, created_at: r.3, expires_at: r.4, revoked_at: r.5 }
}

impl Store {
    /// Creates an agent and returns it with its token (shown once).
    pub async fn add_agent(
        &self,
        name: &str,
        parent: Option<&str>,
        expires_at: Option<&str>,
    ) -> Result<(Agent, NewToken)> {
        let extra = [("parent", parent.into()), ("expires_at", expires_at.into())];
        let (id, created, token) = self.add_holder(AGENT, name, &extra).await?;
        let agent = Agent {
            id,
            name: name.to_owned(),
            parent: parent.map(str::to_owned),
            created_at: created,
            expires_at: expires_at.map(str::to_owned),
            revoked_at: None,
        };
        Ok((agent, token))
    }

    /// Authenticates a bearer token: the live, unexpired agent it belongs to, or None. The same
    /// answer (None) for a malformed, unknown, wrong, revoked or expired token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Agent>> {
        Ok(self.authenticate_token(token).await?.map(|(a, _)| a))
    }

    /// As [`Store::authenticate`], and whether the token is the agent's previous one, valid
    /// only until its rotation's overlap ends (a cache must not keep it).
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<(Agent, bool)>> {
        let Some(id) = AGENT.token_id(token) else { return Ok(None) };
        let row: Option<AuthRow> = self
            .fetch_optional(
                "SELECT id, name, parent, created_at, expires_at, revoked_at, token_hash FROM agents WHERE id = ?",
                &[id.into()],
            )
            .await?;
        let Some((id, name, parent, created_at, expires_at, revoked_at, stored)) = row else {
            return Ok(None);
        };
        let presented = token_hash(token);
        let previous = !bool::from(presented.as_slice().ct_eq(stored.as_slice()));
        if previous {
            // The token it had before a rotation, while the overlap lasts.
            let prev: Option<(Vec<u8>,)> = self
                .fetch_optional(
                    "SELECT token_hash FROM agent_previous_tokens WHERE agent_id = ? AND expires_at > ?",
                    &[(&id).into(), (&now()).into()],
                )
                .await?;
            if !prev.is_some_and(|(h,)| bool::from(presented.as_slice().ct_eq(h.as_slice()))) {
                return Ok(None);
            }
        }
        if revoked_at.is_some() {
            return Ok(None);
        }
        if let Some(exp) = &expires_at {
            if exp.as_str() <= now().as_str() {
                // Ended for good, at its expiry: a clock set back later does not revive it.
                self.execute("UPDATE agents SET revoked_at = expires_at WHERE id = ? AND revoked_at IS NULL", &[(&id).into()]).await?;
                return Ok(None);
            }
        }
        // A revoked ancestor revokes the agent too.
        let mut cursor = parent.clone();
        let mut depth = 0;
        while let Some(p) = cursor {
            depth += 1;
            if depth > 16 {
                return Ok(None);
            }
            let r: Option<(Option<String>, Option<String>)> =
                self.fetch_optional("SELECT parent, revoked_at FROM agents WHERE id = ?", &[(&p).into()]).await?;
            match r {
                Some((next, None)) => cursor = next,
                _ => return Ok(None),
            }
        }
        Ok(Some((Agent { id, name, parent, created_at, expires_at, revoked_at }, previous)))
    }

    /// The live, unexpired top-level agent called `name`, if any (an agent that authenticates
    /// with a token of a trusted issuer is found by name).
    pub async fn live_agent_named(&self, name: &str) -> Result<Option<Agent>> {
        let row: Option<AgentRow> = self
            .fetch_optional(
                "SELECT id, name, parent, created_at, expires_at, revoked_at FROM agents
                 WHERE name = ? AND revoked_at IS NULL AND parent IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                &[name.into(), (&now()).into()],
            )
            .await?;
        Ok(row.map(row_to_agent))
    }

    /// Whether a top-level agent called `name` was ever added (live, expired or revoked).
    pub async fn agent_name_used(&self, name: &str) -> Result<bool> {
        let (n,): (i64,) = self.fetch_one("SELECT COUNT(*) FROM agents WHERE name = ? AND parent IS NULL", &[name.into()]).await?;
        Ok(n > 0)
    }

    /// Every agent, live and revoked, oldest first.
    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        let rows: Vec<AgentRow> = self
            .fetch_all("SELECT id, name, parent, created_at, expires_at, revoked_at FROM agents ORDER BY created_at, id", &[])
            .await?;
        Ok(rows.into_iter().map(row_to_agent).collect())
    }

    /// Revokes the live agent called `name` (or with that id) and every descendant, and brings
    /// the expiry of their leases to now. Returns the number of agents revoked.
    pub async fn revoke_agent(&self, name_or_id: &str) -> Result<u64> {
        with_pool!(self, |p, d| {
            // IMMEDIATE on SQLite, as for a rotation: a read, then writes.
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let root: Option<(String,)> =
                sqlx::query_as(&d.sql("SELECT id FROM agents WHERE (name = ? OR id = ?) AND revoked_at IS NULL"))
                    .bind(name_or_id)
                    .bind(name_or_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((root,)) = root else {
                return Err(StoreError::NotFound(format!("live agent {name_or_id}")));
            };
            let n = sqlx::query(&d.sql(
                "WITH RECURSIVE tree(id) AS (SELECT CAST(? AS TEXT) UNION SELECT a.id FROM agents a JOIN tree t ON a.parent = t.id)
                 UPDATE agents SET revoked_at = ? WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL",
            ))
            .bind(&root)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Their leases fall due now; the broker's reaper revokes them.
            sqlx::query(&d.sql(&format!(
                "WITH RECURSIVE tree(id) AS (SELECT CAST(? AS TEXT) UNION SELECT a.id FROM agents a JOIN tree t ON a.parent = t.id)
                 UPDATE leases SET expires_at = {}(expires_at, ?) WHERE agent_id IN (SELECT id FROM tree) AND status IN ('pending', 'active')",
                d.pick("MIN", "LEAST")
            )))
            .bind(&root)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    /// Gives the live agent `name_or_id` a new token. The current one keeps authenticating for
    /// `overlap` more (zero: not at all), so that whoever holds it can switch without a failed
    /// call; a token from before an earlier rotation stops now. Both in one transaction, which
    /// bumps the identity generation (brokers drop what they kept of the old token).
    pub async fn rotate_agent_token(&self, name_or_id: &str, overlap: std::time::Duration) -> Result<(Agent, NewToken)> {
        let now_t = chrono::Utc::now();
        let until = crate::leases::stamp(now_t + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::zero()));
        with_pool!(self, |p, d| {
            // IMMEDIATE on SQLite: this reads then writes, and must not lose its snapshot to a
            // writer in between.
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let row: Option<AgentRow> = sqlx::query_as(&d.sql(
                "SELECT id, name, parent, created_at, expires_at, revoked_at FROM agents WHERE (name = ? OR id = ?) AND revoked_at IS NULL",
            ))
            .bind(name_or_id)
            .bind(name_or_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("live agent {name_or_id}")));
            };
            let agent = row_to_agent(row);
            let (old,): (Vec<u8>,) =
                sqlx::query_as(&d.sql("SELECT token_hash FROM agents WHERE id = ?")).bind(&agent.id).fetch_one(&mut *tx).await?;
            let token = AGENT.token_for(&agent.id);
            sqlx::query(&d.sql("UPDATE agents SET token_hash = ? WHERE id = ?"))
                .bind(token_hash(&token))
                .bind(&agent.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&d.sql("DELETE FROM agent_previous_tokens WHERE agent_id = ?")).bind(&agent.id).execute(&mut *tx).await?;
            if !overlap.is_zero() {
                sqlx::query(&d.sql("INSERT INTO agent_previous_tokens (agent_id, token_hash, expires_at) VALUES (?, ?, ?)"))
                    .bind(&agent.id)
                    .bind(old)
                    .bind(&until)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok((agent, NewToken(token)))
        })
    }

    /// The identity generation: a number that changes whenever any agent or grant changes, in
    /// any process or replica sharing this store (triggers bump it). Equal numbers mean nothing
    /// an authentication depends on has changed in between.
    pub async fn identity_generation(&self) -> Result<i64> {
        let (n,): (i64,) = self.fetch_one("SELECT n FROM identity_generation", &[]).await?;
        Ok(n)
    }

    /// The chain of parent names from the immediate parent up to the root.
    pub async fn parent_chain(&self, agent: &Agent) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor = agent.parent.clone();
        while let Some(p) = cursor {
            if out.len() > 16 {
                break;
            }
            let r: Option<(String, Option<String>)> =
                self.fetch_optional("SELECT name, parent FROM agents WHERE id = ?", &[(&p).into()]).await?;
            match r {
                Some((name, next)) => {
                    out.push(name);
                    cursor = next;
                }
                None => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn token_round_trip_and_revocation() {
        let (_d, s) = store().await;
        let (a, tok) = s.add_agent("bot", None, None).await.unwrap();
        assert!(format!("{tok:?}").contains("hidden"));
        let got = s.authenticate(tok.reveal()).await.unwrap().unwrap();
        assert_eq!(got.id, a.id);
        // The stored hash is not the token.
        let (h,): (Vec<u8>,) = sqlx::query_as("SELECT token_hash FROM agents").fetch_one(s.pool().unwrap()).await.unwrap();
        assert_eq!(h.len(), 32);
        assert!(!String::from_utf8_lossy(&h).contains(&tok.reveal()[20..]));

        // One flipped character, a truncated token, garbage: all refused.
        let mut bad = tok.reveal().to_owned();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(s.authenticate(&bad).await.unwrap().is_none());
        assert!(s.authenticate(&tok.reveal()[..40]).await.unwrap().is_none());
        assert!(s.authenticate("").await.unwrap().is_none());
        assert!(s.authenticate("Bearer x").await.unwrap().is_none());

        assert_eq!(s.revoke_agent("bot").await.unwrap(), 1);
        assert!(s.authenticate(tok.reveal()).await.unwrap().is_none());
        assert!(matches!(s.revoke_agent("bot").await, Err(StoreError::NotFound(_))));
        // The name can be reused after revocation, with a new token.
        let (_, tok2) = s.add_agent("bot", None, None).await.unwrap();
        assert!(s.authenticate(tok2.reveal()).await.unwrap().is_some());
        assert!(matches!(s.add_agent("bot", None, None).await, Err(StoreError::Conflict(_))));
    }

    #[tokio::test]
    async fn revoking_a_parent_revokes_children_and_expiry_holds() {
        let (_d, s) = store().await;
        let (p, ptok) = s.add_agent("parent", None, None).await.unwrap();
        let (c, ctok) = s.add_agent("child", Some(&p.id), None).await.unwrap();
        let (_, gtok) = s.add_agent("grandchild", Some(&c.id), None).await.unwrap();
        assert_eq!(s.parent_chain(&s.authenticate(gtok.reveal()).await.unwrap().unwrap()).await.unwrap(), vec!["child", "parent"]);
        assert_eq!(s.revoke_agent("parent").await.unwrap(), 3);
        for t in [&ptok, &ctok, &gtok] {
            assert!(s.authenticate(t.reveal()).await.unwrap().is_none());
        }
        let (_, etok) = s.add_agent("old", None, Some("2000-01-01T00:00:00Z")).await.unwrap();
        assert!(s.authenticate(etok.reveal()).await.unwrap().is_none());
        assert!(matches!(s.add_agent("Bad Name", None, None).await, Err(StoreError::Invalid(_))));
    }
}
