//! Dynamic database credentials: a real role per lease on PostgreSQL and MySQL/MariaDB.
//!
//! This module sees two kinds of secret: the handle's admin credential, used only to open the
//! admin connection, and the lease's generated password, which leaves this module only inside the
//! lease's [`Secret`] (for the vault). The server receives the password already hashed: a
//! SCRAM-SHA-256 verifier for PostgreSQL, a `mysql_native_password` hash for MySQL, so it never
//! appears in a statement log.
//!
//! Statements are templates in the manner of Vault's database secrets engine (`{{name}}`,
//! `{{password}}`, `{{expiration}}`, plus `{{database}}`, `{{privileges}}`, `{{schema}}` and
//! `{{table}}`). Every value put into them comes from the configuration or from airlock, never from
//! the agent: table names are the config's own spelling, already checked to be identifiers.

use airlock_core::config::{DatabaseConstraints, Handle, HandleKind, LeasePolicy, Scope};
use airlock_core::{HandleName, Secret};
use base64::Engine as _;
use rand::RngCore;
use ring::{digest, hmac, pbkdf2};
use sqlx::{Connection, Executor};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

mod group;
pub use group::{group_name, GROUP_PREFIX};

/// Why a dynamic credential could not be created or revoked. Messages name no secret: driver
/// errors are reduced to their database code and a fixed text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The handle cannot carry dynamic leases (kind, missing database name, bad admin URL).
    #[error("the handle cannot carry dynamic leases: {0}")]
    Unsupported(&'static str),
    /// The admin connection failed.
    #[error("cannot connect with the admin credential ({0})")]
    Connect(String),
    /// A statement failed.
    #[error("statement {index} failed ({code})")]
    Statement {
        /// 0-based index in the statement list (after template expansion).
        index: usize,
        /// The database's error code, or the kind of failure.
        code: String,
    },
    /// The role still exists after revocation.
    #[error("role {0} still exists after revocation")]
    StillExists(String),
}

/// The role's prefix; reconciliation looks only at roles that start with it.
pub const ROLE_PREFIX: &str = "airlock_l_";

const PG_CREATE: &[&str] = &[
    "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
    "GRANT CONNECT ON DATABASE \"{{database}}\" TO \"{{name}}\"",
    "GRANT USAGE ON SCHEMA {{schema}} TO \"{{name}}\"",
    "GRANT {{privileges}} ON {{table}} TO \"{{name}}\"",
];

const PG_REVOKE: &[&str] = &[
    "ALTER ROLE \"{{name}}\" NOLOGIN",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'",
    "REASSIGN OWNED BY \"{{name}}\" TO CURRENT_USER",
    "DROP OWNED BY \"{{name}}\"",
    "DROP ROLE IF EXISTS \"{{name}}\"",
];

const MY_CREATE: &[&str] = &[
    "CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'",
    "GRANT {{privileges}} ON {{table}} TO '{{name}}'@'%'",
];

const MY_REVOKE: &[&str] = &["REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{{name}}'@'%'", "DROP USER IF EXISTS '{{name}}'@'%'"];

/// What to create.
#[derive(Debug, Clone)]
pub struct RoleSpec<'a> {
    /// The role name (starts with [`ROLE_PREFIX`]; airlock's own text).
    pub name: &'a str,
    /// Read-only or read-write grants.
    pub scope: Scope,
    /// The tables, in the config's spelling; `None` grants every table of the `public` schema
    /// (PostgreSQL) or of the database (MySQL).
    pub tables: Option<&'a [String]>,
    /// When the role stops working on its own (PostgreSQL `VALID UNTIL`).
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A fresh random password: 32 characters of base64url (192 bits).
pub fn generate_password() -> Secret {
    let mut b = zeroize::Zeroizing::new([0u8; 24]);
    rand::rng().fill_bytes(&mut b[..]);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b[..]).into_bytes())
}

/// The PBKDF2 iteration count of a lease password's SCRAM verifier.
///
/// Iterations slow down guessing a password from a stolen verifier, which matters for passwords
/// people choose. A lease password is 192 random bits ([`generate_password`]): guessing it takes
/// about 2^191 attempts whatever each costs, so stretching adds nothing to its strength. It does
/// cost time wherever PBKDF2 runs: PostgreSQL derives a key from the empty password at
/// `CREATE ROLE`, to refuse an empty one (4.5 ms at 4,096 iterations on a 2-core
/// machine, most of a lease's issue), and every client logging in derives it once. RFC 7677's
/// floor of 4,096 is written for chosen passwords; this count is used only for generated ones.
pub const LEASE_SCRAM_ITERATIONS: u32 = 16;

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. `password` must be ASCII
/// (SASLprep leaves it unchanged), as [`generate_password`]'s are.
pub fn scram_sha256_verifier(password: &[u8], salt: &[u8; 16], iterations: NonZeroU32) -> String {
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut salted[..]);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted[..]);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key.as_ref()),
        b64.encode(server_key.as_ref())
    )
}

/// The `mysql_native_password` hash: `*` and upper-case hex of SHA1(SHA1(password)).
pub fn mysql_native_hash(password: &[u8]) -> String {
    let a = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, password);
    let b = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, a.as_ref());
    format!("*{}", hex_upper(b.as_ref()))
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The admin connection URL of a handle: the handle's `url` with the secret as password, or the
/// secret itself.
fn admin_url(db: &DatabaseConstraints, admin: &Secret) -> Result<url::Url, LeaseError> {
    let value = admin.expose_str().ok_or(LeaseError::Unsupported("the admin secret is not UTF-8"))?;
    match &db.url {
        Some(u) => {
            let mut url = url::Url::parse(u).map_err(|_| LeaseError::Unsupported("the handle's url does not parse"))?;
            url.set_password(Some(value)).map_err(|_| LeaseError::Unsupported("the handle's url takes no password"))?;
            Ok(url)
        }
        None => url::Url::parse(value.trim()).map_err(|_| LeaseError::Unsupported("the admin secret is not a URL")),
    }
}

fn database_name(url: &url::Url) -> Result<String, LeaseError> {
    let name = url.path().trim_start_matches('/');
    let name = percent_decode(name);
    if name.is_empty() || name.contains('/') {
        return Err(LeaseError::Unsupported("the admin URL names no database"));
    }
    Ok(name)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The lease's own secret: with a handle `url`, its password; otherwise the admin URL with the
/// role's name and password in place of the admin's.
fn lease_secret(db: &DatabaseConstraints, admin: &url::Url, role: &str, password: &Secret) -> Result<Secret, LeaseError> {
    if db.url.is_some() {
        return Ok(password.clone());
    }
    let mut u = admin.clone();
    let pw = password.expose_str().ok_or(LeaseError::Unsupported("password"))?;
    u.set_username(role).map_err(|_| LeaseError::Unsupported("the admin URL takes no user name"))?;
    u.set_password(Some(pw)).map_err(|_| LeaseError::Unsupported("the admin URL takes no password"))?;
    let s = Secret::new(String::from(u).into_bytes());
    Ok(s)
}

/// The lease handle's `url` when the base handle has one: the same URL with the role as user.
pub fn lease_url(db: &DatabaseConstraints, role: &str) -> Option<String> {
    let mut u = url::Url::parse(db.url.as_deref()?).ok()?;
    u.set_username(role).ok()?;
    Some(u.into())
}

fn esc_literal(s: &str) -> String {
    s.replace('\'', "''")
}

fn esc_ident(s: &str) -> String {
    s.replace('"', "\"\"")
}

/// What the statement templates are filled with.
struct Fill<'a> {
    /// `{{name}}`: the role.
    name: &'a str,
    /// `{{password}}`: the password's hash (verifier), never the password.
    password_hash: &'a str,
    /// `{{expiration}}`: RFC 3339.
    expiration: &'a str,
    /// `{{database}}`.
    database: &'a str,
    /// `{{privileges}}`.
    scope: Scope,
    /// `{{table}}` and `{{schema}}`: one statement each.
    tables: Option<&'a [String]>,
}

/// Expands the templates into the statements to run.
fn expand(kind: HandleKind, templates: &[String], fill: &Fill<'_>) -> Vec<String> {
    let Fill { name, password_hash, expiration, database, scope, tables } = *fill;
    let privileges = match scope {
        Scope::ReadOnly => "SELECT",
        Scope::ReadWrite => "SELECT, INSERT, UPDATE, DELETE",
    };
    let pg = kind == HandleKind::Postgres;
    let (table_list, schema_list): (Vec<String>, Vec<String>) = match tables {
        Some(ts) => {
            let t = ts
                .iter()
                .map(|t| match (pg, t.split_once('.')) {
                    (true, _) => t.clone(),
                    (false, Some(_)) => t.clone(),
                    (false, None) => format!("`{}`.{t}", database.replace('`', "``")),
                })
                .collect();
            let mut s: Vec<String> = ts
                .iter()
                .map(|t| t.split_once('.').map(|(s, _)| s.to_owned()).unwrap_or_else(|| "public".into()))
                .collect();
            s.sort();
            s.dedup();
            (t, s)
        }
        None if pg => (vec!["ALL TABLES IN SCHEMA public".into()], vec!["public".into()]),
        None => (vec![format!("`{}`.*", database.replace('`', "``"))], vec![]),
    };
    let db_sub = if pg { esc_ident(database) } else { database.replace('`', "``") };
    let mut out = Vec::new();
    for t in templates {
        let base = t
            .replace("{{name}}", name)
            .replace("{{password}}", &esc_literal(password_hash))
            .replace("{{expiration}}", expiration)
            .replace("{{database}}", &db_sub)
            .replace("{{privileges}}", privileges);
        if base.contains("{{table}}") {
            out.extend(table_list.iter().map(|x| base.replace("{{table}}", x)));
        } else if base.contains("{{schema}}") {
            out.extend(schema_list.iter().map(|x| base.replace("{{schema}}", x)));
        } else {
            out.push(base);
        }
    }
    out
}

fn templates(given: &Option<Vec<String>>, default: &[&str]) -> Vec<String> {
    given.clone().unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect())
}

fn db_code(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()).unwrap_or_else(|| "database".into()),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => "io".into(),
        _ => "driver".into(),
    }
}

/// Checks that a credential no longer logs in to the handle's server (its role was revoked
/// elsewhere, for example by OpenBao's database engine): `Ok` when the server refuses it
/// (PostgreSQL `28000`/`28P01`, MySQL `28000`/`1045`), [`LeaseError::StillExists`] when it still
/// logs in, [`LeaseError::Connect`] when the server cannot say.
pub async fn check_login_refused(handle: &Handle, user: &str, password: &Secret) -> Result<(), LeaseError> {
    let db = handle.database().ok_or(LeaseError::Unsupported("not a database handle"))?;
    let mut url = admin_url(db, password)?;
    url.set_username(user).map_err(|_| LeaseError::Unsupported("the handle's url takes no user name"))?;
    match connect(handle.kind, &url).await {
        Ok(Admin::Pg(c)) => {
            let _ = c.close().await;
            Err(LeaseError::StillExists(user.to_owned()))
        }
        Ok(Admin::My(c)) => {
            let _ = c.close().await;
            Err(LeaseError::StillExists(user.to_owned()))
        }
        Err(LeaseError::Connect(code)) if matches!(code.as_str(), "28000" | "28P01" | "1045") => Ok(()),
        Err(e) => Err(e),
    }
}

enum Admin {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin connection is kept unused for the next lease operation.
const KEEP_IDLE: Duration = Duration::from_secs(60);
/// At most this many idle admin connections per credential: leases of one handle are created
/// and dropped concurrently.
const KEEP_PER_CREDENTIAL: usize = 8;

/// Admin connections kept between lease operations, so that issuing and revoking a lease do not
/// each open (and authenticate) a new connection. One value per broker, never process-wide: a
/// connection belongs to the Tokio runtime that opened it. Keyed by the SHA-256 of the admin URL
/// (server, database, user and credential; never the URL itself), so a rotated credential never
/// reuses a session of the old one. A kept connection is reset and checked with one round trip
/// before reuse (on PostgreSQL [`PG_RESET`], which drops whatever session state a custom
/// statement set; a ping on MySQL, whose connections are kept only after the default statements,
/// which set none). A connection whose operation failed is closed, never kept; one unused for
/// [`KEEP_IDLE`] is dropped when next looked at.
///
/// It also remembers which group roles ([`group`]) this broker has made or checked, so that a
/// lease does not make them again (each lease still checks its group's grants).
#[derive(Default)]
pub struct AdminSessions {
    kept: std::sync::Mutex<std::collections::HashMap<[u8; 32], Vec<Kept>>>,
    groups: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for AdminSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminSessions")
    }
}

struct Kept {
    conn: Admin,
    since: std::time::Instant,
}

impl AdminSessions {
    fn groups(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<[u8; 32]>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Vec<Kept>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An admin connection for `url`: a kept one that answers its reset, else a new one.
    async fn checkout(&self, kind: HandleKind, url: &url::Url) -> Result<Admin, LeaseError> {
        let key = credential_key(url);
        loop {
            let Some(k) = self.kept().get_mut(&key).and_then(Vec::pop) else { break };
            if k.since.elapsed() > KEEP_IDLE {
                continue;
            }
            let mut conn = k.conn;
            let ok = match &mut conn {
                Admin::Pg(c) => c.execute(sqlx::raw_sql(PG_RESET)).await.is_ok(),
                Admin::My(c) => c.ping().await.is_ok(),
            };
            if ok {
                return Ok(conn);
            }
        }
        connect(kind, url).await
    }

    /// A kept PostgreSQL session for `url` as it was left, without its reset: for an operation
    /// that sends [`PG_RESET`] in front of its own statements, in the same round trip, and that
    /// can be sent again on a new session when this one turns out to be gone.
    fn take_kept_pg(&self, url: &url::Url) -> Option<sqlx::PgConnection> {
        let key = credential_key(url);
        let mut kept = self.kept();
        let list = kept.get_mut(&key)?;
        while let Some(k) = list.pop() {
            match k.conn {
                Admin::Pg(c) if k.since.elapsed() <= KEEP_IDLE => return Some(c),
                _ => continue,
            }
        }
        None
    }

    /// Returns an admin connection after an operation: kept when `reusable` (the operation
    /// succeeded; on MySQL with the default statements too), else closed.
    async fn check_in(&self, url: &url::Url, conn: Admin, reusable: bool) {
        if !reusable {
            conn.close().await;
            return;
        }
        let mut map = self.kept();
        let list = map.entry(credential_key(url)).or_default();
        list.retain(|k| k.since.elapsed() <= KEEP_IDLE);
        if list.len() < KEEP_PER_CREDENTIAL {
            list.push(Kept { conn, since: std::time::Instant::now() });
        }
    }
}

/// `DISCARD ALL` but for its `DEALLOCATE ALL` and `DISCARD PLANS`: the driver's own prepared
/// statements stay valid (it would otherwise use statements the server dropped), everything a
/// statement may have changed in the session goes.
const PG_RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// The key of an admin URL in [`AdminSessions`].
fn credential_key(url: &url::Url) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, url.as_str().as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}


/// One lock per database server and database: GRANT and DROP OWNED on one database update the
/// same catalog row, and PostgreSQL fails concurrent updates of it ("tuple concurrently
/// updated"). Within a process they queue here; across processes the retries cover it.
fn ddl_lock(url: &url::Url) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>> =
        std::sync::OnceLock::new();
    let key = format!("{}:{}{}", url.host_str().unwrap_or(""), url.port().unwrap_or(0), url.path());
    LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone()
}

async fn connect(kind: HandleKind, url: &url::Url) -> Result<Admin, LeaseError> {
    let fut = async {
        match kind {
            HandleKind::Postgres => {
                let o = sqlx::postgres::PgConnectOptions::from_str(url.as_str()).map_err(|_| LeaseError::Connect("options".into()))?;
                Ok(Admin::Pg(sqlx::PgConnection::connect_with(&o).await.map_err(|e| LeaseError::Connect(db_code(&e)))?))
            }
            HandleKind::Mysql => {
                let o = sqlx::mysql::MySqlConnectOptions::from_str(url.as_str()).map_err(|_| LeaseError::Connect("options".into()))?;
                Ok(Admin::My(sqlx::MySqlConnection::connect_with(&o).await.map_err(|e| LeaseError::Connect(db_code(&e)))?))
            }
            _ => Err(LeaseError::Unsupported("only postgres and mysql handles")),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut).await.map_err(|_| LeaseError::Connect("timeout".into()))?
}

impl Admin {
    async fn run(&mut self, stmts: &[String]) -> Result<(), LeaseError> {
        for (index, s) in stmts.iter().enumerate() {
            // Statements go unprepared (raw): DDL takes no parameters, and a raw statement is not
            // kept in the driver's statement cache.
            let r = match self {
                Admin::Pg(c) => c.execute(sqlx::raw_sql(s)).await.map(|_| ()),
                Admin::My(c) => c.execute(sqlx::raw_sql(s)).await.map(|_| ()),
            };
            r.map_err(|e| LeaseError::Statement { index, code: db_code(&e) })?;
        }
        Ok(())
    }

    /// Runs a batch of statements in one implicit transaction (simple query protocol) and returns
    /// the boolean in the first column of the last row it yields.
    async fn fetch_bool(&mut self, batch: &str) -> Result<bool, LeaseError> {
        use sqlx::Row;
        let rows = match self {
            Admin::Pg(c) => c.fetch_all(sqlx::raw_sql(batch)).await.map(|rows| rows.last().map(|r| r.try_get::<bool, _>(0))),
            Admin::My(c) => c.fetch_all(sqlx::raw_sql(batch)).await.map(|rows| rows.last().map(|r| r.try_get::<bool, _>(0))),
        };
        match rows {
            Ok(Some(Ok(b))) => Ok(b),
            Ok(_) => Err(LeaseError::Statement { index: usize::MAX, code: "no-result".into() }),
            Err(e) => Err(LeaseError::Statement { index: 0, code: db_code(&e) }),
        }
    }

    async fn role_exists(&mut self, name: &str) -> Result<bool, LeaseError> {
        let r = match self {
            Admin::Pg(c) => sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(name).fetch_one(c).await,
            Admin::My(c) => sqlx::query_scalar::<_, i64>("SELECT CAST(count(*) AS SIGNED) FROM mysql.user WHERE user = ?").bind(name).fetch_one(c).await,
        };
        r.map(|n| n > 0).map_err(|e| LeaseError::Statement { index: usize::MAX, code: db_code(&e) })
    }

    async fn roles_like(&mut self, prefix: &str) -> Result<Vec<String>, LeaseError> {
        let pat = format!("{}%", prefix.replace('_', "\\_"));
        let r = match self {
            Admin::Pg(c) => sqlx::query_scalar::<_, String>("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1").bind(&pat).fetch_all(c).await,
            Admin::My(c) => {
                sqlx::query_scalar::<_, String>("SELECT DISTINCT CAST(user AS CHAR) FROM mysql.user WHERE user LIKE ?").bind(&pat).fetch_all(c).await
            }
        };
        r.map_err(|e| LeaseError::Statement { index: usize::MAX, code: db_code(&e) })
    }

    async fn kill_sessions(&mut self, name: &str) -> Result<(), LeaseError> {
        if let Admin::My(c) = self {
            let ids: Vec<i64> = sqlx::query_scalar("SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE user = ?")
                .bind(name)
                .fetch_all(&mut *c)
                .await
                .map_err(|e| LeaseError::Statement { index: usize::MAX, code: db_code(&e) })?;
            for id in ids {
                // A session that ended meanwhile is fine.
                let _ = c.execute(sqlx::raw_sql(&format!("KILL {id}"))).await;
            }
        }
        Ok(())
    }

    async fn close(self) {
        let _ = match self {
            Admin::Pg(c) => c.close().await,
            Admin::My(c) => c.close().await,
        };
    }
}

/// Creates the role of a lease with the handle's admin credential and returns the lease's
/// secret (a connection URL, or a password when the handle has a `url`). On failure, whatever was
/// created is dropped again.
pub async fn create_role(sessions: &AdminSessions, handle: &Handle, policy: &LeasePolicy, admin: &Secret, spec: &RoleSpec<'_>) -> Result<Secret, LeaseError> {
    let db = handle.database().ok_or(LeaseError::Unsupported("not a database handle"))?;
    let url = admin_url(db, admin)?;
    let database = database_name(&url)?;
    let password = generate_password();
    let pw = password.expose_secret();
    let (hash, defaults) = match handle.kind {
        HandleKind::Postgres => {
            let mut salt = [0u8; 16];
            rand::rng().fill_bytes(&mut salt);
            let iterations = NonZeroU32::new(LEASE_SCRAM_ITERATIONS).expect("nonzero");
            (scram_sha256_verifier(pw, &salt, iterations), PG_CREATE)
        }
        HandleKind::Mysql => (mysql_native_hash(pw), MY_CREATE),
        _ => return Err(LeaseError::Unsupported("only postgres and mysql handles")),
    };
    let expiration = spec.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let fill = Fill { name: spec.name, password_hash: &hash, expiration: &expiration, database: &database, scope: spec.scope, tables: spec.tables };
    let stmts = expand(handle.kind, &templates(&policy.creation_statements, defaults), &fill);
    let secret = lease_secret(db, &url, spec.name, &password)?;
    if grouped(handle.kind, policy) {
        let g = group::Grouped {
            url: &url,
            database: &database,
            group: group_name(url.username(), &database, spec.scope, spec.tables),
            scope: spec.scope,
            tables: spec.tables,
        };
        g.create(sessions, spec.name, &hash, &expiration).await?;
        return Ok(secret);
    }
    let lock = ddl_lock(&url);
    let _guard = lock.lock().await;
    let mut conn = sessions.checkout(handle.kind, &url).await?;
    let mut attempt = 0;
    loop {
        match conn.run(&stmts).await {
            Ok(()) => break,
            Err(e) => {
                // Roll back: nothing of a half-created role may stay.
                let _ = drop_role_on(&mut conn, handle.kind, policy, spec.name, &database).await;
                attempt += 1;
                if !retryable(&e) || attempt >= RETRIES {
                    sessions.check_in(&url, conn, false).await;
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
            }
        }
    }
    sessions.check_in(&url, conn, keepable(handle.kind, policy)).await;
    Ok(secret)
}

/// Whether a handle's leases join a group role ([`group`]): PostgreSQL with the default creation
/// statements.
fn grouped(kind: HandleKind, policy: &LeasePolicy) -> bool {
    kind == HandleKind::Postgres && policy.creation_statements.is_none()
}

/// Whether an admin connection may be kept after this policy's statements ran: always on
/// PostgreSQL (reset before reuse), on MySQL only after the default statements.
fn keepable(kind: HandleKind, policy: &LeasePolicy) -> bool {
    kind == HandleKind::Postgres || (policy.creation_statements.is_none() && policy.revocation_statements.is_none())
}

/// Attempts at a statement list that lost a race.
const RETRIES: usize = 4;

/// Concurrent GRANTs on one database object make PostgreSQL fail with "tuple concurrently
/// updated" (XX000); deadlocks and serialization failures are worth another try too.
fn retryable(e: &LeaseError) -> bool {
    matches!(e, LeaseError::Statement { code, .. } if matches!(code.as_str(), "XX000" | "40001" | "40P01" | "1213" | "1205"))
}

async fn drop_role_on(conn: &mut Admin, kind: HandleKind, policy: &LeasePolicy, name: &str, database: &str) -> Result<(), LeaseError> {
    if !conn.role_exists(name).await? {
        return Ok(());
    }
    let defaults = if kind == HandleKind::Postgres { PG_REVOKE } else { MY_REVOKE };
    let fill = Fill { name, password_hash: "", expiration: "", database, scope: Scope::ReadOnly, tables: None };
    let stmts = expand(kind, &templates(&policy.revocation_statements, defaults), &fill);
    let mut first_err = None;
    for attempt in 0..RETRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
        }
        conn.kill_sessions(name).await?;
        // Each statement is tried; a failing one (a grant already gone, a race with a concurrent
        // GRANT) does not stop the drop.
        for (i, s) in stmts.iter().enumerate() {
            if let Err(LeaseError::Statement { code, .. }) = conn.run(std::slice::from_ref(s)).await {
                first_err.get_or_insert(LeaseError::Statement { index: i, code });
            }
        }
        if !conn.role_exists(name).await? {
            return Ok(());
        }
    }
    Err(first_err.unwrap_or_else(|| LeaseError::StillExists(name.to_owned())))
}

/// Revokes a lease's role: no more logins, its sessions ended, its grants and objects gone, the
/// role dropped, and checked to be gone. A role that does not exist counts as revoked.
pub async fn drop_role(sessions: &AdminSessions, handle: &Handle, policy: &LeasePolicy, admin: &Secret, name: &str) -> Result<(), LeaseError> {
    let db = handle.database().ok_or(LeaseError::Unsupported("not a database handle"))?;
    let url = admin_url(db, admin)?;
    let database = database_name(&url)?;
    // With the default statements a role holds no grants of its own (a group's member) and is
    // dropped without the lock; a role with grants (made by custom or earlier statements) fails
    // that way on a concurrent grant and is dropped the careful way below.
    if handle.kind == HandleKind::Postgres && policy.revocation_statements.is_none() && group::drop_fast(sessions, &url, name).await.is_ok() {
        return Ok(());
    }
    let lock = ddl_lock(&url);
    let _guard = lock.lock().await;
    let mut conn = sessions.checkout(handle.kind, &url).await?;
    let r = drop_role_on(&mut conn, handle.kind, policy, name, &database).await;
    sessions.check_in(&url, conn, r.is_ok() && keepable(handle.kind, policy)).await;
    r
}

/// The roles on the handle's server whose names start with `prefix` (for reconciliation).
pub async fn list_roles(handle: &Handle, admin: &Secret, prefix: &str) -> Result<Vec<String>, LeaseError> {
    let db = handle.database().ok_or(LeaseError::Unsupported("not a database handle"))?;
    let url = admin_url(db, admin)?;
    let mut conn = connect(handle.kind, &url).await?;
    let r = conn.roles_like(prefix).await;
    conn.close().await;
    r
}

/// What a handle's credential may do on its server (for `airlock doctor`): a read-only handle
/// should sit on a role that cannot write, so that the database itself enforces the scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// The role or user the credential logs in as.
    pub role: String,
    /// A superuser (PostgreSQL `rolsuper`/`rolbypassrls`; MySQL `SUPER` or `ALL` on `*.*`).
    pub superuser: bool,
    /// Holds a write privilege on some table (or owns one, on PostgreSQL).
    pub can_write: bool,
    /// What lets it read beyond the tables it is granted, by name: on PostgreSQL the built-in
    /// roles it is a member of that read all data, server files, every setting or every
    /// session's statements (`pg_read_all_data`, `pg_read_server_files`, `pg_read_all_settings`,
    /// `pg_read_all_stats`, `pg_monitor`, `pg_execute_server_program`); on MariaDB and MySQL the
    /// global `FILE`, `PROCESS` and `SHOW DATABASES` privileges, `SELECT` on `*.*` and any grant
    /// on the `mysql` schema.
    pub wide_reads: Vec<String>,
}

/// Built-in PostgreSQL roles whose members read beyond their own grants.
const PG_WIDE_READ_ROLES: &[&str] = &[
    "pg_execute_server_program",
    "pg_monitor",
    "pg_read_all_data",
    "pg_read_all_settings",
    "pg_read_all_stats",
    "pg_read_server_files",
];

/// Judges `SHOW GRANTS` lines: (superuser, can write, what reads beyond the granted tables).
fn judge_mysql_grants(grants: &[String]) -> (bool, bool, Vec<String>) {
    let (mut superuser, mut can_write, mut wide) = (false, false, Vec::new());
    for g in grants {
        let up = g.to_ascii_uppercase();
        let Some(rest) = up.strip_prefix("GRANT ") else { continue };
        let Some((privs, target)) = rest.split_once(" ON ") else { continue };
        let target = target.split(" TO ").next().unwrap_or("").trim();
        let global = target == "*.*";
        let all = privs.contains("ALL PRIVILEGES");
        superuser |= privs.contains("SUPER") || (all && global);
        can_write |= all || ["INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER"].iter().any(|p| privs.contains(p));
        let mut note = |what: String| {
            if !wide.contains(&what) {
                wide.push(what);
            }
        };
        for p in ["FILE", "PROCESS", "SHOW DATABASES"] {
            if privs.split(',').any(|x| x.trim() == p) {
                note(p.to_owned());
            }
        }
        if global && (all || privs.split(',').any(|x| x.trim() == "SELECT")) {
            note("SELECT ON *.*".to_owned());
        }
        if target.trim_start_matches('`').starts_with("MYSQL`.") || target.starts_with("MYSQL.") {
            note(format!("grant on {}", target.to_ascii_lowercase()));
        }
    }
    (superuser, can_write, wide)
}

/// Connects with the handle's credential and reads what it may do; with a `query_role`, what
/// that role may do (reads run under it), after switching to it as the executor does.
pub async fn privileges(handle: &Handle, secret: &Secret) -> Result<Privileges, LeaseError> {
    let db = handle.database().ok_or(LeaseError::Unsupported("not a database handle"))?;
    let url = admin_url(db, secret)?;
    let mut conn = connect(handle.kind, &url).await?;
    let failed = |e: sqlx::Error| LeaseError::Statement { index: 0, code: db_code(&e) };
    if let (Admin::Pg(c), Some(role)) = (&mut conn, &db.query_role) {
        // This connection is closed below: the session-wide switch ends with it.
        let set = format!("SET ROLE \"{}\"", role.replace('"', "\"\""));
        if let Err(e) = sqlx::Executor::execute(&mut *c, set.as_str()).await {
            conn.close().await;
            return Err(failed(e));
        }
    }
    let r = match &mut conn {
        Admin::Pg(c) => sqlx::query_as::<_, (String, bool, bool)>(
            "SELECT current_user::text, r.rolsuper OR r.rolbypassrls, \
               EXISTS (SELECT 1 FROM information_schema.table_privileges \
                       WHERE grantee = current_user AND privilege_type IN ('INSERT','UPDATE','DELETE','TRUNCATE')) \
               OR EXISTS (SELECT 1 FROM pg_tables WHERE tableowner = current_user \
                          AND schemaname NOT IN ('pg_catalog', 'information_schema')) \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&mut *c)
        .await
        .map_err(failed)
        .map(|(role, superuser, can_write)| Privileges { role, superuser, can_write, wide_reads: Vec::new() }),
        Admin::My(c) => {
            let role: Result<String, _> = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)").fetch_one(&mut *c).await;
            let grants: Result<Vec<String>, _> = sqlx::query_scalar("SHOW GRANTS FOR CURRENT_USER()").fetch_all(&mut *c).await;
            match (role, grants) {
                (Ok(role), Ok(grants)) => {
                    let (superuser, can_write, wide_reads) = judge_mysql_grants(&grants);
                    Ok(Privileges { role, superuser, can_write, wide_reads })
                }
                (Err(e), _) | (_, Err(e)) => Err(failed(e)),
            }
        }
    };
    let r = match (r, &mut conn) {
        (Ok(mut p), Admin::Pg(c)) => {
            let wide: Result<Vec<String>, _> = sqlx::query_scalar(
                "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) \
                 AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY rolname",
            )
            .bind(PG_WIDE_READ_ROLES)
            .fetch_all(&mut *c)
            .await;
            wide.map(|w| {
                p.wide_reads = w;
                p
            })
            .map_err(failed)
        }
        (r, _) => r,
    };
    conn.close().await;
    r
}

/// The role name of a lease: the prefix, the installation's id and the lease suffix, lower case.
pub fn role_name(installation: &str, suffix: &str) -> String {
    format!("{ROLE_PREFIX}{installation}_{}", suffix.to_ascii_lowercase())
}

/// A lease handle's name: `BASE__L` and six upper-case hex digits.
pub fn lease_handle_name(base: &HandleName, suffix: &str) -> Option<HandleName> {
    HandleName::parse(&format!("{base}__L{suffix}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifier_matches_an_independent_computation() {
        // Computed independently with Python's hashlib.pbkdf2_hmac and hmac for password
        // "pencil" and salt 0..16.
        let salt: [u8; 16] = core::array::from_fn(|i| i as u8);
        let n = |i| NonZeroU32::new(i).unwrap();
        assert_eq!(
            scram_sha256_verifier(b"pencil", &salt, n(4096)),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y=:dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE="
        );
        assert_eq!(
            scram_sha256_verifier(b"pencil", &salt, n(16)),
            "SCRAM-SHA-256$16:AAECAwQFBgcICQoLDA0ODw==$+kTDhE5a05ruQ0C5RBlOHRYDRcv0gxvznYMokbgpYGM=:8m8MqeQNWkjldDnQ0nx67zREkBE9a+/1g3bDqZTIgZ4="
        );
    }

    #[test]
    fn mysql_grants_are_judged_by_privilege_and_target() {
        let g = |lines: &[&str]| judge_mysql_grants(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(g(&["GRANT USAGE ON *.* TO `ro`@`%`", "GRANT SELECT ON `test`.* TO `ro`@`%`"]), (false, false, vec![]));
        assert_eq!(
            g(&["GRANT FILE, PROCESS ON *.* TO `w`@`%`", "GRANT SELECT ON `test`.`t` TO `w`@`%`"]),
            (false, false, vec!["FILE".to_owned(), "PROCESS".to_owned()])
        );
        assert_eq!(g(&["GRANT SELECT ON *.* TO `w`@`%`"]), (false, false, vec!["SELECT ON *.*".to_owned()]));
        assert_eq!(g(&["GRANT SELECT ON `mysql`.* TO `w`@`%`"]), (false, false, vec!["grant on `mysql`.*".to_owned()]));
        assert_eq!(g(&["grant select on mysql.user to `w`@`%`"]), (false, false, vec!["grant on mysql.user".to_owned()]));
        let (su, w, wide) = g(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]);
        assert!(su && w && wide == vec!["SELECT ON *.*".to_owned()]);
        assert_eq!(g(&["GRANT INSERT ON `test`.* TO `w`@`%`"]), (false, true, vec![]));
        // A database or table merely named like a privilege is not that privilege.
        assert_eq!(g(&["GRANT SELECT ON `file`.`process` TO `x`@`%`"]), (false, false, vec![]));
    }

    #[test]
    fn mysql_native_hash_is_the_known_value() {
        // SELECT PASSWORD('password') on MariaDB.
        assert_eq!(mysql_native_hash(b"password"), "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
    }

    #[test]
    fn templates_expand_per_table_and_schema_without_agent_text() {
        let t = templates(&None, PG_CREATE);
        let tables = vec!["orders".to_owned(), "sales.items".to_owned()];
        let fill = Fill { name: "airlock_l_x_abc", password_hash: "SCRAM-SHA-256$v", expiration: "2030-01-01T00:00:00Z", database: "te\"st", scope: Scope::ReadOnly, tables: Some(&tables) };
        let s = expand(HandleKind::Postgres, &t, &fill);
        assert_eq!(s[0], "CREATE ROLE \"airlock_l_x_abc\" LOGIN PASSWORD 'SCRAM-SHA-256$v' VALID UNTIL '2030-01-01T00:00:00Z'");
        assert_eq!(s[1], "GRANT CONNECT ON DATABASE \"te\"\"st\" TO \"airlock_l_x_abc\"");
        assert!(s.contains(&"GRANT USAGE ON SCHEMA public TO \"airlock_l_x_abc\"".to_owned()));
        assert!(s.contains(&"GRANT USAGE ON SCHEMA sales TO \"airlock_l_x_abc\"".to_owned()));
        assert!(s.contains(&"GRANT SELECT ON sales.items TO \"airlock_l_x_abc\"".to_owned()));
        assert_eq!(s.len(), 6);
        let fill = Fill { name: "u", password_hash: "*AB", expiration: "", database: "test", scope: Scope::ReadWrite, tables: Some(&tables[..1]) };
        let m = expand(HandleKind::Mysql, &templates(&None, MY_CREATE), &fill);
        assert_eq!(m[1], "GRANT SELECT, INSERT, UPDATE, DELETE ON `test`.orders TO 'u'@'%'");
    }
}
