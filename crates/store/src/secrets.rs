//! Sealed secrets: opaque ciphertext blobs produced by the vault, stored by name.

use crate::db::{found, now};
use crate::{Result, Store};

/// What `secret list` shows: a name and metadata, never a value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretMeta {
    /// The name (a handle name for `local:` references).
    pub name: String,
    /// First stored.
    pub created_at: String,
    /// Last replaced.
    pub updated_at: String,
    /// Incremented on every put.
    pub version: i64,
}

impl Store {
    /// Stores (or replaces) a sealed secret. Returns its new version.
    pub async fn put_sealed(&self, name: &str, sealed: &[u8]) -> Result<i64> {
        let ts = now();
        let (v,): (i64,) = self
            .fetch_one(
                "INSERT INTO secrets (name, sealed, created_at, updated_at, version) VALUES (?, ?, ?, ?, 1)
                 ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at,
                   version = secrets.version + 1
                 RETURNING version",
                &[name.into(), sealed.into(), (&ts).into(), (&ts).into()],
            )
            .await?;
        Ok(v)
    }

    /// The sealed blob and version of `name`.
    pub async fn get_sealed(&self, name: &str) -> Result<Option<(Vec<u8>, i64)>> {
        self.fetch_optional("SELECT sealed, version FROM secrets WHERE name = ?", &[name.into()]).await
    }

    /// Every sealed secret (for building the scrubber's known-value set).
    pub async fn all_sealed(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.fetch_all("SELECT name, sealed FROM secrets ORDER BY name", &[]).await
    }

    /// A number that changes whenever any secret is put, rotated or removed, or a retired
    /// value is dropped.
    pub async fn secrets_generation(&self) -> Result<String> {
        let (n, m, v): (i64, Option<String>, Option<i64>) =
            self.fetch_one("SELECT COUNT(*), MAX(updated_at), CAST(SUM(version) AS BIGINT) FROM secrets", &[]).await?;
        let (r, rv): (i64, Option<i64>) = self.fetch_one("SELECT COUNT(*), CAST(SUM(version) AS BIGINT) FROM retired_secrets", &[]).await?;
        Ok(format!("{n}:{}:{}:{r}:{}", m.unwrap_or_default(), v.unwrap_or(0), rv.unwrap_or(0)))
    }

    /// Replaces the sealed secret `name` with `sealed`, keeping the value it replaces as retired
    /// until `until` (RFC 3339): still known to the scrubber, no longer used. Returns the new
    /// version. `NotFound` when there is no such secret.
    pub async fn rotate_sealed(&self, name: &str, sealed: &[u8], until: &str) -> Result<i64> {
        let ts = now();
        crate::db::with_pool!(self, |p, d| {
            let mut tx = p.begin_with(d.pick("BEGIN IMMEDIATE", "BEGIN")).await?;
            let old: Option<(Vec<u8>, i64)> = sqlx::query_as(&d.sql("SELECT sealed, version FROM secrets WHERE name = ?"))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((old, version)) = old else {
                return Err(crate::StoreError::NotFound(format!("secret {name}")));
            };
            sqlx::query(&d.sql("INSERT INTO retired_secrets (name, version, sealed, until) VALUES (?, ?, ?, ?)"))
                .bind(name)
                .bind(version)
                .bind(old)
                .bind(until)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&d.sql("UPDATE secrets SET sealed = ?, updated_at = ?, version = version + 1 WHERE name = ?"))
                .bind(sealed)
                .bind(&ts)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(version + 1)
        })
    }

    /// Retired values still in their overlap: `(name, sealed)`.
    pub async fn retired_sealed(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.fetch_all("SELECT name, sealed FROM retired_secrets WHERE until > ? ORDER BY name, version", &[(&now()).into()]).await
    }

    /// Drops retired values whose overlap has ended; the number dropped.
    pub async fn drop_retired_secrets(&self) -> Result<u64> {
        self.execute("DELETE FROM retired_secrets WHERE until <= ?", &[(&now()).into()]).await
    }

    /// Names and metadata.
    pub async fn list_secrets(&self) -> Result<Vec<SecretMeta>> {
        let rows: Vec<(String, String, String, i64)> =
            self.fetch_all("SELECT name, created_at, updated_at, version FROM secrets ORDER BY name", &[]).await?;
        Ok(rows
            .into_iter()
            .map(|(name, created_at, updated_at, version)| SecretMeta { name, created_at, updated_at, version })
            .collect())
    }

    /// Removes a secret.
    pub async fn remove_secret(&self, name: &str) -> Result<()> {
        let n = self.execute("DELETE FROM secrets WHERE name = ?", &[name.into()]).await?;
        found(n, || format!("secret {name}"))
    }
}
