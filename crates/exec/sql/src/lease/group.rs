//! PostgreSQL leases with the default statements: the grants live on a group role, a lease's role
//! only joins it.
//!
//! Per-lease `GRANT`s update the catalog rows of the database, the schemas and the tables, which
//! every lease of a handle shares; PostgreSQL fails two concurrent updates of one row ("tuple
//! concurrently updated"), so they had to queue, one lease at a time per database. Here the
//! grants are made once, on a `NOLOGIN` group role per admin user, database, scope and table
//! set ([`group_name`]), and a lease is one statement that writes only rows of its own:
//! `CREATE ROLE … IN ROLE group`. Leases of one handle are created and dropped concurrently.
//!
//! What a lease may do is exactly what its group holds, and the group holds exactly the grants
//! its name stands for: the scope's privileges on the listed tables (or every table of `public`),
//! `USAGE` on their schemas, `CONNECT` on the database. The statement that creates a lease also
//! checks, in the same transaction, that the group still holds all of them (a table dropped and
//! created again loses its grants); when it does not, the grants are made again before the lease
//! is returned.
//!
//! Durability: a lease's role is committed without waiting for the WAL flush
//! (`synchronous_commit = off` for that one transaction). A PostgreSQL crash within the WAL
//! writer's delay can lose a role created just before; its lease then fails closed (the login is
//! refused) and its revocation finds the role gone. A revocation is always committed durably:
//! losing one would bring a revoked role back.

use super::{credential_key, ddl_lock, esc_ident, esc_literal, expand, retryable, Admin, AdminSessions, Fill, LeaseError, PG_CREATE, PG_RESET, RETRIES};
use airlock_core::config::{HandleKind, Scope};
use ring::digest;
use sqlx::Executor;
use std::time::Duration;

/// The prefix of group roles; reconciliation, which drops lease roles left behind, never looks at
/// them (they are shared by the leases of every installation using the same admin user).
pub const GROUP_PREFIX: &str = "airlock_g_";

/// The group role of an admin user, database, scope and table set (tables in the config's
/// spelling, in any order): the prefix and 20 hex digits of a SHA-256 over them.
pub fn group_name(admin_user: &str, database: &str, scope: Scope, tables: Option<&[String]>) -> String {
    let mut h = digest::Context::new(&digest::SHA256);
    let scope = match scope {
        Scope::ReadOnly => "read_only",
        Scope::ReadWrite => "read_write",
    };
    for part in [admin_user, database, scope] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    match tables {
        None => h.update(b"\x01all tables of public"),
        Some(ts) => {
            let mut ts: Vec<&str> = ts.iter().map(String::as_str).collect();
            ts.sort_unstable();
            ts.dedup();
            for t in ts {
                h.update(t.as_bytes());
                h.update(&[0]);
            }
        }
    }
    let d = h.finish();
    let hex: String = d.as_ref()[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("{GROUP_PREFIX}{hex}")
}

/// The privileges of a scope, one by one (`has_table_privilege` with a list is true when any of
/// them is held).
fn privileges(scope: Scope) -> &'static [&'static str] {
    match scope {
        Scope::ReadOnly => &["SELECT"],
        Scope::ReadWrite => &["SELECT", "INSERT", "UPDATE", "DELETE"],
    }
}

/// A `SELECT` of one boolean: whether `group` holds every grant the lease needs.
fn holds_all(group: &str, database: &str, scope: Scope, tables: Option<&[String]>) -> String {
    let g = esc_literal(group);
    let mut parts = vec![format!("has_database_privilege('{g}', '{}', 'CONNECT')", esc_literal(database))];
    let privs = privileges(scope);
    match tables {
        Some(ts) => {
            // `has_schema_privilege` takes the name as stored; the `GRANT` named it unquoted, so
            // PostgreSQL folded it to lower case (table names are parsed by both alike).
            let mut schemas: Vec<String> = ts.iter().map(|t| t.split_once('.').map_or("public", |(s, _)| s).to_lowercase()).collect();
            schemas.sort_unstable();
            schemas.dedup();
            parts.extend(schemas.iter().map(|s| format!("has_schema_privilege('{g}', '{}', 'USAGE')", esc_literal(s))));
            for t in ts {
                parts.extend(privs.iter().map(|p| format!("has_table_privilege('{g}', '{}', '{p}')", esc_literal(t))));
            }
        }
        None => {
            parts.push(format!("has_schema_privilege('{g}', 'public', 'USAGE')"));
            let each: Vec<String> = privs.iter().map(|p| format!("has_table_privilege('{g}', c.oid, '{p}')")).collect();
            // What `GRANT … ON ALL TABLES IN SCHEMA` covers: tables, partitioned tables, views,
            // materialized views and foreign tables.
            parts.push(format!(
                "NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace \
                 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT ({}))",
                each.join(" AND ")
            ));
        }
    }
    format!("SELECT {}", parts.join(" AND "))
}

/// What a grouped lease is made of.
pub(super) struct Grouped<'a> {
    pub url: &'a url::Url,
    pub database: &'a str,
    pub group: String,
    pub scope: Scope,
    pub tables: Option<&'a [String]>,
}

impl Grouped<'_> {
    /// The key of this group in [`AdminSessions`]: the server, database, admin and group.
    fn key(&self) -> [u8; 32] {
        let mut k = credential_key(self.url).to_vec();
        k.extend_from_slice(self.group.as_bytes());
        digest::digest(&digest::SHA256, &k).as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    /// Creates the group if missing and makes its grants, in one transaction, under the
    /// database's DDL lock (grants update shared catalog rows). Idempotent; another process doing
    /// the same at once makes one of the two retry.
    async fn ensure(&self, sessions: &AdminSessions) -> Result<(), LeaseError> {
        let fill = Fill { name: &self.group, password_hash: "", expiration: "", database: self.database, scope: self.scope, tables: self.tables };
        let g = esc_ident(&self.group);
        let mut stmts = vec![
            format!(
                "DO $$ BEGIN CREATE ROLE \"{g}\" NOLOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ),
            // A role of that name made some other way must not log in either.
            format!("ALTER ROLE \"{g}\" NOLOGIN"),
        ];
        stmts.extend(expand(HandleKind::Postgres, &PG_CREATE[1..].iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), &fill));
        let batch = stmts.join(";\n");
        let lock = ddl_lock(self.url);
        let _guard = lock.lock().await;
        let mut conn = sessions.checkout(HandleKind::Postgres, self.url).await?;
        let mut attempt = 0;
        let r = loop {
            match conn.run(std::slice::from_ref(&batch)).await {
                Ok(()) => break Ok(()),
                Err(e) if retryable(&e) && attempt + 1 < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
                }
                Err(e) => break Err(e),
            }
        };
        sessions.check_in(self.url, conn, r.is_ok()).await;
        if r.is_ok() {
            sessions.groups().insert(self.key());
        }
        r
    }

    /// Creates the lease's role in the group: one statement, committed without waiting for the
    /// WAL flush, checked in the same transaction to find every grant in place. Makes the group
    /// first if this broker has not seen it, and again if the check finds a grant missing.
    pub(super) async fn create(&self, sessions: &AdminSessions, name: &str, verifier: &str, expiration: &str) -> Result<(), LeaseError> {
        if !sessions.groups().contains(&self.key()) {
            self.ensure(sessions).await?;
        }
        let batch = format!(
            "SET LOCAL synchronous_commit = off;\n\
             CREATE ROLE \"{}\" LOGIN PASSWORD '{}' VALID UNTIL '{}' IN ROLE \"{}\";\n{}",
            esc_ident(name),
            esc_literal(verifier),
            esc_literal(expiration),
            esc_ident(&self.group),
            holds_all(&self.group, self.database, self.scope, self.tables)
        );
        let mut attempt = 0;
        let complete = loop {
            let mut conn = sessions.checkout(HandleKind::Postgres, self.url).await?;
            let r = conn.fetch_bool(&batch).await;
            sessions.check_in(self.url, conn, r.is_ok()).await;
            match r {
                Ok(all) => break all,
                // The group is gone (dropped by hand): make it again, once.
                Err(LeaseError::Statement { code, .. }) if code == "42704" && attempt == 0 => {
                    attempt += 1;
                    sessions.groups().remove(&self.key());
                    self.ensure(sessions).await?;
                }
                Err(e) => return Err(e),
            }
        };
        if !complete {
            if let Err(e) = self.ensure(sessions).await {
                let _ = drop_fast(sessions, self.url, name).await;
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Drops a lease's role without the database's DDL lock, for roles made by [`Grouped::create`]
/// (which hold no grants of their own): its objects reassigned and dropped and the role dropped in
/// one durable transaction, then its sessions ended (a login is refused from the commit on).
/// `Ok(false)` when the role did not exist.
///
/// One round trip: on a kept admin session its reset goes in the same simple query as the drop.
/// A kept session that is gone (the server ended it while it was idle) fails without a server
/// answer; the drop is then sent again on a new session (a second run of it finds the role gone
/// if the first one committed).
pub(super) async fn drop_fast(sessions: &AdminSessions, url: &url::Url, name: &str) -> Result<bool, LeaseError> {
    let batch = drop_batch(name);
    if let Some(mut c) = sessions.take_kept_pg(url) {
        match drop_on(&mut c, &format!("{PG_RESET};\n{batch}")).await {
            Err(Failure::Lost(_)) => {
                Admin::Pg(c).close().await;
            }
            r => return settle(sessions, url, c, r).await,
        }
    }
    let Admin::Pg(mut c) = super::connect(HandleKind::Postgres, url).await? else {
        return Err(LeaseError::Unsupported("grouped leases are PostgreSQL's"));
    };
    let r = drop_on(&mut c, &batch).await;
    settle(sessions, url, c, r).await
}

/// How a drop on one session ended, when it did not drop the role.
enum Failure {
    /// The role does not exist (`42704`): nothing to drop. The session's transaction is aborted.
    Absent,
    /// The server answered with an error.
    Refused(LeaseError),
    /// No answer from the server: the session is gone.
    Lost(LeaseError),
}

impl From<Failure> for LeaseError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Absent => LeaseError::Statement { index: 0, code: "42704".into() },
            Failure::Refused(e) | Failure::Lost(e) => e,
        }
    }
}

/// Keeps the session after a successful drop, closes it otherwise; `Ok(false)` for a role that
/// did not exist.
async fn settle(sessions: &AdminSessions, url: &url::Url, c: sqlx::PgConnection, r: Result<bool, Failure>) -> Result<bool, LeaseError> {
    let ok = r.is_ok();
    sessions.check_in(url, Admin::Pg(c), ok).await;
    match r {
        Ok(dropped) => Ok(dropped),
        Err(Failure::Absent) => Ok(false),
        Err(f) => Err(f.into()),
    }
}

async fn drop_on(c: &mut sqlx::PgConnection, batch: &str) -> Result<bool, Failure> {
    match c.execute(sqlx::raw_sql(batch)).await {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42704") => Err(Failure::Absent),
        Err(e @ sqlx::Error::Database(_)) => Err(Failure::Refused(LeaseError::Statement { index: 0, code: super::db_code(&e) })),
        Err(e) => Err(Failure::Lost(LeaseError::Statement { index: 0, code: super::db_code(&e) })),
    }
}

/// The setting that carries the role's oid from before its drop to the sessions ended after the
/// commit, when the name no longer resolves. Session-wide, so it outlives the transaction; the
/// reset of a kept session clears it.
const DROPPED_OID: &str = "airlock.dropped_role";

/// The drop of role `name` as one simple query, so one round trip: its oid kept in
/// [`DROPPED_OID`] (the role missing stops everything there with `42704`), its sessions ended,
/// its objects reassigned and dropped and the role dropped in one durable transaction, then its
/// sessions ended again after the commit, for a login that raced it. The server runs the
/// statements in order and stops at the first error, leaving the transaction aborted (the caller
/// then discards the connection). Sessions are found with `pg_stat_get_activity`, the function
/// under the `pg_stat_activity` view, without the view's joins: about a third of its cost.
fn drop_batch(name: &str) -> String {
    let n = esc_ident(name);
    let role = esc_literal(&format!("\"{n}\""));
    let terminate = format!(
        "SELECT count(pg_terminate_backend(s.pid)) FROM pg_stat_get_activity(NULL) AS s \
         WHERE s.usesysid = current_setting('{DROPPED_OID}')::oid"
    );
    format!(
        "BEGIN;\nSELECT set_config('{DROPPED_OID}', '{role}'::regrole::oid::text, false);\n{terminate};\n\
         REASSIGN OWNED BY \"{n}\" TO CURRENT_USER;\nDROP OWNED BY \"{n}\";\nDROP ROLE \"{n}\";\nCOMMIT;\n{terminate}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_the_grants_not_their_order() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = group_name("admin", "test", Scope::ReadOnly, Some(&t(&["a", "b"])));
        assert_eq!(a, group_name("admin", "test", Scope::ReadOnly, Some(&t(&["b", "a", "b"]))));
        assert!(a.starts_with(GROUP_PREFIX) && a.len() == GROUP_PREFIX.len() + 20, "{a}");
        for other in [
            group_name("admin", "test", Scope::ReadWrite, Some(&t(&["a", "b"]))),
            group_name("admin", "test", Scope::ReadOnly, Some(&t(&["a"]))),
            group_name("admin", "test", Scope::ReadOnly, None),
            group_name("admin", "other", Scope::ReadOnly, Some(&t(&["a", "b"]))),
            group_name("other", "test", Scope::ReadOnly, Some(&t(&["a", "b"]))),
            // No concatenation ambiguity.
            group_name("admin", "test", Scope::ReadOnly, Some(&t(&["ab"]))),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn the_drop_names_the_role_once_quoted_and_ends_its_sessions_by_the_oid_it_kept() {
        let b = drop_batch("we\"ird'role");
        assert!(b.contains("'\"we\"\"ird''role\"'::regrole"), "{b}");
        for stmt in ["REASSIGN OWNED BY \"we\"\"ird'role\"", "DROP OWNED BY \"we\"\"ird'role\"", "DROP ROLE \"we\"\"ird'role\""] {
            assert_eq!(b.matches(stmt).count(), 1, "{stmt} in {b}");
        }
        // The oid is kept before anything else runs, and the sessions are ended by it on both
        // sides of the commit (after it, the name no longer resolves).
        let (before, after) = b.split_once("COMMIT;").unwrap();
        assert!(before.starts_with("BEGIN;\nSELECT set_config('airlock.dropped_role'"), "{b}");
        for side in [before, after] {
            assert!(side.contains("pg_terminate_backend") && side.contains("current_setting('airlock.dropped_role')::oid"), "{side}");
        }
        assert!(!after.contains("regrole"));
    }

    #[test]
    fn the_check_names_every_grant_of_the_scope() {
        let ts = vec!["orders".to_owned(), "Sales.it'ems".to_owned()];
        let q = holds_all("g", "te'st", Scope::ReadWrite, Some(&ts));
        assert!(q.contains("has_database_privilege('g', 'te''st', 'CONNECT')"), "{q}");
        assert!(q.contains("has_schema_privilege('g', 'public', 'USAGE')") && q.contains("has_schema_privilege('g', 'sales', 'USAGE')"));
        for p in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            assert!(q.contains(&format!("has_table_privilege('g', 'orders', '{p}')")));
            assert!(q.contains(&format!("has_table_privilege('g', 'Sales.it''ems', '{p}')")));
        }
        let q = holds_all("g", "test", Scope::ReadOnly, None);
        assert!(q.contains("has_table_privilege('g', c.oid, 'SELECT')") && !q.contains("INSERT"), "{q}");
    }
}
