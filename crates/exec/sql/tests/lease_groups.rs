//! PostgreSQL leases with the default statements join a group role that holds the grants
//! (`lease::group`). Against the machine's PostgreSQL: what a lease can do is exactly its scope on
//! its tables, walked over every relation of the schema and every table privilege; leases are made
//! and dropped concurrently; a group that lost a grant or was dropped is made whole again.
#![allow(clippy::disallowed_methods, reason = "the test connects to the database as the lease, with the DSN it was issued")]

mod common;

use airlock_core::config::{DatabaseConstraints, Handle, HandleKind, LeasePolicy, Scope};
use airlock_core::Secret;
use airlock_exec_sql::lease::{self, AdminSessions, RoleSpec, GROUP_PREFIX};
use common::*;
use proptest::prelude::*;
use sqlx::Connection;
use std::collections::BTreeSet;

fn policy() -> LeasePolicy {
    LeasePolicy { dynamic: true, max_ttl_seconds: 600, scopes: vec![Scope::ReadOnly, Scope::ReadWrite], ..LeasePolicy::default() }
}

fn pg_handle() -> Handle {
    handle("PGG", HandleKind::Postgres, DatabaseConstraints { scope: Scope::ReadWrite, ..db(Scope::ReadWrite) })
}

fn admin() -> Secret {
    Secret::from_str_value(PG_URL)
}

/// Every privilege a table can carry.
const TABLE_PRIVILEGES: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"];

/// A schema of its own with `n` tables, a view and a materialized view, made fresh.
async fn schema(n: usize) -> (String, Vec<String>) {
    let s = unique("lgs");
    let mut c = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    let mut sql = format!("CREATE SCHEMA {s};");
    let tables: Vec<String> = (0..n).map(|i| format!("{s}.t{i}")).collect();
    for t in &tables {
        sql.push_str(&format!("CREATE TABLE {t} (id int); INSERT INTO {t} VALUES (1);"));
    }
    sql.push_str(&format!("CREATE VIEW {s}.v AS SELECT 1 AS one; CREATE MATERIALIZED VIEW {s}.m AS SELECT 1 AS one;"));
    sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
    (s, tables)
}

/// The lease's connection URL and role name.
fn login(secret: &Secret) -> (String, String) {
    let dsn = secret.expose_str().unwrap().to_owned();
    let user = url::Url::parse(&dsn).unwrap().username().to_owned();
    (dsn, user)
}

/// What the lease's role may do on every relation of `schema`: (relation, privilege) pairs held.
async fn held(dsn: &str, schema: &str) -> BTreeSet<(String, String)> {
    let mut c = sqlx::PgConnection::connect(dsn).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, p FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, \
         unnest($2::text[]) AS p WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
         AND has_table_privilege(current_user, c.oid, p)",
    )
    .bind(schema)
    .bind(TABLE_PRIVILEGES)
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.into_iter().collect()
}

fn expected(scope: Scope, tables: &[String]) -> BTreeSet<(String, String)> {
    let privs: &[&str] = match scope {
        Scope::ReadOnly => &["SELECT"],
        Scope::ReadWrite => &["SELECT", "INSERT", "UPDATE", "DELETE"],
    };
    tables.iter().flat_map(|t| privs.iter().map(move |p| (t.clone(), (*p).to_owned()))).collect()
}

async fn role_count(prefix: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1").bind(format!("{}%", prefix.replace('_', "\\_"))).fetch_one(&mut c).await.unwrap()
}

async fn issue(sessions: &AdminSessions, name: &str, scope: Scope, tables: &[String]) -> Secret {
    let spec = RoleSpec { name, scope, tables: Some(tables), expires_at: chrono::Utc::now() + chrono::Duration::seconds(120) };
    lease::create_role(sessions, &pg_handle(), &policy(), &admin(), &spec).await.unwrap()
}

fn role(tag: &str) -> String {
    unique(&format!("{}gt_{tag}", lease::ROLE_PREFIX))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any scope and any subset of the schema's tables: the lease holds exactly the scope's
    /// privileges on exactly those tables, over every relation of the schema (other tables, a view,
    /// a materialized view) and every table privilege; it is a member of its group alone; and it
    /// is gone, with its group left, once dropped.
    #[test]
    fn a_grouped_lease_holds_exactly_its_scope_on_its_tables(pick in proptest::collection::vec(any::<bool>(), 5), rw in any::<bool>(), upper in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if !service("127.0.0.1:5432", "PostgreSQL").await {
                return;
            }
            let (s, all) = schema(5).await;
            let mut tables: Vec<String> = all.iter().zip(&pick).filter(|(_, p)| **p).map(|(t, _)| t.clone()).collect();
            if tables.is_empty() {
                tables.push(all[0].clone());
            }
            let scope = if rw { Scope::ReadWrite } else { Scope::ReadOnly };
            let sessions = AdminSessions::default();
            let name = role("p");
            // The configuration may spell them in capitals: the server folds unquoted names.
            let spelled: Vec<String> = if upper { tables.iter().map(|t| t.to_uppercase()).collect() } else { tables.clone() };
            let secret = issue(&sessions, &name, scope, &spelled).await;
            let (dsn, user) = login(&secret);
            assert_eq!(user, name);
            assert_eq!(held(&dsn, &s).await, expected(scope, &tables), "scope {scope:?}, tables {tables:?}");

            // The server keeps the verifier it was given (never the password), at the lease's
            // iteration count.
            let mut a = sqlx::PgConnection::connect(PG_URL).await.unwrap();
            let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1").bind(&name).fetch_one(&mut a).await.unwrap();
            assert!(stored.starts_with(&format!("SCRAM-SHA-256${}:", lease::LEASE_SCRAM_ITERATIONS)), "{stored}");
            assert!(!stored.contains(url::Url::parse(&dsn).unwrap().password().unwrap()));
            a.close().await.unwrap();

            let mut c = sqlx::PgConnection::connect(&dsn).await.unwrap();
            let groups: Vec<String> = sqlx::query_scalar(
                "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            let group = lease::group_name("postgres", "test", scope, Some(&spelled));
            assert_eq!(groups, vec![group.clone()]);
            // Nothing more by becoming the group, and no way to widen it or hand it on.
            sqlx::raw_sql(&format!("SET ROLE \"{group}\"")).execute(&mut c).await.unwrap();
            let as_group: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND has_table_privilege(c.oid, 'INSERT')",
            )
            .bind(&s)
            .fetch_all(&mut c)
            .await
            .unwrap();
            assert_eq!(as_group.len(), if rw { tables.len() } else { 0 });
            sqlx::raw_sql("RESET ROLE").execute(&mut c).await.unwrap();
            for attempt in [
                format!("GRANT \"{group}\" TO postgres"),
                format!("ALTER ROLE \"{group}\" LOGIN"),
                format!("CREATE TABLE {s}.mine (id int)"),
                format!("CREATE ROLE {name}_x"),
            ] {
                assert!(sqlx::raw_sql(&attempt).execute(&mut c).await.is_err(), "{attempt}");
            }
            // Granting on: at most a warning that nothing was granted; what it holds is unchanged.
            let _ = sqlx::raw_sql(&format!("GRANT ALL ON ALL TABLES IN SCHEMA {s} TO \"{group}\"")).execute(&mut c).await;
            c.close().await.unwrap();
            assert_eq!(held(&dsn, &s).await, expected(scope, &tables));

            lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &name).await.unwrap();
            assert_eq!(role_count(&name).await, 0);
            assert_eq!(role_count(&group).await, 1, "the group stays for the next lease");
        });
    }
}

/// Sixteen leases of one handle over two groups, made and dropped at once (no per-database
/// lock): every one succeeds and reads its table, none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_leases_are_made_and_dropped_concurrently() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let (_, tables) = schema(2).await;
    let sessions = std::sync::Arc::new(AdminSessions::default());
    let prefix = role("c");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (sessions, tables, name) = (sessions.clone(), tables.clone(), format!("{prefix}_{i}"));
        set.spawn(async move {
            let t = vec![tables[i % 2].clone()];
            let secret = issue(&sessions, &name, if i % 4 == 0 { Scope::ReadWrite } else { Scope::ReadOnly }, &t).await;
            let (dsn, _) = login(&secret);
            let mut c = sqlx::PgConnection::connect(&dsn).await.unwrap();
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", t[0])).fetch_one(&mut c).await.unwrap();
            assert_eq!(n, 1);
            // Still connected while it is dropped: the session ends with the role.
            lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &name).await.unwrap();
            assert!(sqlx::query("SELECT 1").execute(&mut c).await.is_err(), "{name}'s session survived");
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert_eq!(role_count(&prefix).await, 0);
}

/// A table dropped and made again loses its grants, and a group dropped by hand loses all: the
/// next lease finds its grants missing in the same transaction that creates it and makes them
/// again, so it reads the table.
#[tokio::test]
async fn a_group_that_lost_its_grants_is_made_whole_by_the_next_lease() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let (_, tables) = schema(1).await;
    let sessions = AdminSessions::default();
    let table = tables[0].clone();
    let reads = |secret: Secret| {
        let table = table.clone();
        async move {
            let (dsn, _) = login(&secret);
            let mut c = sqlx::PgConnection::connect(&dsn).await.unwrap();
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut c).await
        }
    };
    let first = role("w");
    assert_eq!(reads(issue(&sessions, &first, Scope::ReadOnly, &tables).await).await.unwrap(), 1);

    let mut admin_conn = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    let t = &tables[0];
    sqlx::raw_sql(&format!("DROP TABLE {t}; CREATE TABLE {t} (id int); INSERT INTO {t} VALUES (1), (2);")).execute(&mut admin_conn).await.unwrap();
    let second = role("w");
    assert_eq!(reads(issue(&sessions, &second, Scope::ReadOnly, &tables).await).await.unwrap(), 2);

    let group = lease::group_name("postgres", "test", Scope::ReadOnly, Some(&tables));
    assert!(group.starts_with(GROUP_PREFIX));
    sqlx::raw_sql(&format!("DROP OWNED BY \"{group}\"; DROP ROLE \"{group}\"")).execute(&mut admin_conn).await.unwrap();
    let third = role("w");
    assert_eq!(reads(issue(&sessions, &third, Scope::ReadOnly, &tables).await).await.unwrap(), 2);
    assert_eq!(role_count(&group).await, 1);
    for r in [first, second, third] {
        lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &r).await.unwrap();
        assert_eq!(role_count(&r).await, 0);
    }
}

/// A role made by custom statements holds grants of its own: the revocation without the lock
/// fails on it only when a grant races it, and then the careful path drops it; either way it is
/// gone. Here: a custom-made role with a direct grant, dropped with the default statements.
#[tokio::test]
async fn a_role_with_grants_of_its_own_is_dropped_too() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let (_, tables) = schema(1).await;
    let sessions = AdminSessions::default();
    let name = role("d");
    let custom = LeasePolicy {
        creation_statements: Some(vec![
            "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'".into(),
            "GRANT USAGE ON SCHEMA {{schema}} TO \"{{name}}\"".into(),
            "GRANT {{privileges}} ON {{table}} TO \"{{name}}\"".into(),
        ]),
        ..policy()
    };
    let spec = RoleSpec { name: &name, scope: Scope::ReadOnly, tables: Some(&tables), expires_at: chrono::Utc::now() + chrono::Duration::seconds(60) };
    lease::create_role(&sessions, &pg_handle(), &custom, &admin(), &spec).await.unwrap();
    assert_eq!(role_count(&name).await, 1);
    lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &name).await.unwrap();
    assert_eq!(role_count(&name).await, 0);
    // Dropping again is not an error.
    lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &name).await.unwrap();
}

/// A drop that fails part-way (the role owns a table in another database, which `DROP OWNED`
/// here cannot reach) leaves the role whole and the admin sessions usable: the next lease is
/// made and reads, and once the table is gone the role drops.
#[tokio::test]
async fn a_drop_that_fails_part_way_leaves_the_role_and_the_sessions_whole() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let (_, tables) = schema(1).await;
    let sessions = AdminSessions::default();
    let name = role("f");
    issue(&sessions, &name, Scope::ReadOnly, &tables).await;
    let other_db = PG_URL.rsplit_once('/').map(|(base, _)| format!("{base}/postgres")).unwrap();
    let mut other = sqlx::PgConnection::connect(&other_db).await.unwrap();
    let table = unique("lgf_owned");
    sqlx::raw_sql(&format!("CREATE TABLE {table} (id int); ALTER TABLE {table} OWNER TO \"{name}\"")).execute(&mut other).await.unwrap();

    let failed = lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &name).await;
    assert!(failed.is_err(), "the drop of a role that owns a table elsewhere succeeded");
    assert_eq!(role_count(&name).await, 1, "the failed drop took the role away");

    let next = role("f");
    let (dsn, _) = login(&issue(&sessions, &next, Scope::ReadOnly, &tables).await);
    let mut c = sqlx::PgConnection::connect(&dsn).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", tables[0])).fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 1);
    c.close().await.unwrap();

    sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(&mut other).await.unwrap();
    for r in [name, next] {
        lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &r).await.unwrap();
        assert_eq!(role_count(&r).await, 0);
    }
}

/// A role already gone (dropped by hand) drops without an error, twice, and the admin sessions
/// stay usable: the next lease is made, reads, and drops with its session ended.
#[tokio::test]
async fn a_role_gone_already_drops_without_error_and_the_next_lease_is_whole() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let (_, tables) = schema(1).await;
    let sessions = AdminSessions::default();
    let gone = role("g");
    issue(&sessions, &gone, Scope::ReadOnly, &tables).await;
    let mut admin_conn = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    sqlx::raw_sql(&format!("DROP ROLE \"{gone}\"")).execute(&mut admin_conn).await.unwrap();
    for _ in 0..2 {
        lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &gone).await.unwrap();
    }

    let next = role("g");
    let (dsn, _) = login(&issue(&sessions, &next, Scope::ReadOnly, &tables).await);
    let mut c = sqlx::PgConnection::connect(&dsn).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", tables[0])).fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 1);
    lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &next).await.unwrap();
    assert_eq!(role_count(&next).await, 0);
    assert!(sqlx::query("SELECT 1").execute(&mut c).await.is_err(), "the lease's session outlived its drop");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever a role's name holds (quotes of both kinds, backslashes, semicolons, dollars,
    /// spaces, letters beyond ASCII), the one-query drop drops that role, with its session ended,
    /// and nothing else: a sentinel role made next to it is still there.
    #[test]
    fn a_role_of_any_name_is_dropped_alone(tail in "[a-zA-Z0-9 \"'\\\\;$%()é-]{1,16}") {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if !service("127.0.0.1:5432", "PostgreSQL").await {
                return;
            }
            let name = format!("{}{tail}", role("n"));
            if name.len() > 63 {
                return; // PostgreSQL cuts longer names
            }
            let sentinel = role("s");
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let mut a = sqlx::PgConnection::connect(PG_URL).await.unwrap();
            sqlx::raw_sql(&format!("CREATE ROLE {quoted} LOGIN; CREATE ROLE \"{sentinel}\" NOLOGIN")).execute(&mut a).await.unwrap();
            // A session of the role (trust authentication on the test server).
            let mut dsn = url::Url::parse(PG_URL).unwrap();
            dsn.set_username(&name).unwrap();
            dsn.set_password(None).unwrap();
            let mut session = sqlx::PgConnection::connect(dsn.as_str()).await.unwrap();

            let sessions = AdminSessions::default();
            lease::drop_role(&sessions, &pg_handle(), &policy(), &admin(), &name).await.unwrap();
            let left: Vec<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) ORDER BY 1")
                .bind(vec![name.clone(), sentinel.clone()])
                .fetch_all(&mut a)
                .await
                .unwrap();
            assert_eq!(left, vec![sentinel.clone()], "name {name:?}");
            assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err(), "the session of {name:?} outlived its role");
            sqlx::raw_sql(&format!("DROP ROLE \"{sentinel}\"")).execute(&mut a).await.unwrap();
        });
    }
}
