//! Opening the store (a SQLite file in the data directory, or a PostgreSQL database shared by
//! several replicas) and bringing its schema up to date.
//!
//! Every query is written once in SQLite's spelling with `?` placeholders; [`Dialect::sql`]
//! numbers the placeholders for PostgreSQL (`$1`, `$2`, ...), and the few statements whose
//! spelling differs pick per dialect.

use crate::{Result, StoreError};
use airlock_core::config::SyncMode;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, SqlitePool};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The schema, written once for both engines in the order it grew. Where the engines spell a
/// column differently the text says `{blob}` (bytes), `{int}` (a 64-bit integer), `{bool}`,
/// `{time}` (RFC 3339 text; on PostgreSQL compared byte-wise, `COLLATE "C"`, as SQLite does) or
/// `{fk}` (after a foreign key: deferrable on PostgreSQL, so `airlock migrate` can copy rows in
/// any order); [`Dialect::ddl`] fills them in. A part never changes once released: a change to
/// the schema is a new part, run by a new migration on each engine.
mod schema {
    /// Agents, sealed secrets and the audit log.
    pub(super) const CORE: &str = r#"
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  {blob} NOT NULL,
    parent      TEXT REFERENCES agents(id){fk},
    created_at  {time} NOT NULL,
    expires_at  {time},
    revoked_at  {time}
);
CREATE UNIQUE INDEX agents_live_name ON agents(name) WHERE revoked_at IS NULL;
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    sealed      {blob} NOT NULL,
    created_at  {time} NOT NULL,
    updated_at  {time} NOT NULL,
    version     {int} NOT NULL
);
CREATE TABLE audit (
    seq         {int} PRIMARY KEY,
    ts          {time} NOT NULL,
    agent       TEXT NOT NULL,
    tool        TEXT NOT NULL,
    decision    TEXT NOT NULL,
    body        TEXT NOT NULL,
    prev_hash   {blob} NOT NULL,
    hash        {blob} NOT NULL
);
CREATE TABLE audit_checkpoints (
    seq         {int} PRIMARY KEY,
    hash        {blob} NOT NULL,
    signature   {blob} NOT NULL,
    ts          {time} NOT NULL
);
"#;

    /// One-time shares and their read receipts.
    pub(super) const SHARES: &str = r#"
CREATE TABLE shares (
    id          TEXT PRIMARY KEY,
    ciphertext  {blob} NOT NULL,
    proof_hash  {blob} NOT NULL,
    expires_at  {int} NOT NULL,
    max_views   {int} NOT NULL,
    views_left  {int} NOT NULL,
    created_at  {int} NOT NULL
);
CREATE INDEX shares_expiry ON shares(expires_at);
CREATE TABLE share_receipts (
    share_id        TEXT PRIMARY KEY,
    creator         TEXT NOT NULL,
    recipient       TEXT,
    created_at      {int} NOT NULL,
    expires_at      {int} NOT NULL,
    max_views       {int} NOT NULL,
    views_used      {int} NOT NULL DEFAULT 0,
    first_opened_at {int},
    last_opened_at  {int}
);
"#;

    /// Tasks, leases and sub-agent grants.
    pub(super) const LEASES: &str = r#"
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents(id){fk},
    created_at  {time} NOT NULL,
    closed_at   {time}
);
CREATE TABLE leases (
    id              TEXT PRIMARY KEY,
    handle          TEXT NOT NULL UNIQUE,
    base            TEXT NOT NULL,
    agent_id        TEXT NOT NULL REFERENCES agents(id){fk},
    scope           TEXT NOT NULL,
    tables          TEXT,
    dynamic         {bool} NOT NULL,
    role_name       TEXT,
    task_id         TEXT REFERENCES tasks(id){fk},
    status          TEXT NOT NULL,
    created_at      {time} NOT NULL,
    expires_at      {time} NOT NULL,
    revoked_at      {time},
    attempts        {int} NOT NULL DEFAULT 0,
    next_attempt_at {time}
);
CREATE INDEX leases_status ON leases(status, expires_at);
CREATE INDEX leases_agent ON leases(agent_id);
CREATE TABLE agent_grants (
    agent_id    TEXT NOT NULL REFERENCES agents(id){fk},
    handle      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    PRIMARY KEY (agent_id, handle, tool)
);
"#;

    /// Approvers and held calls.
    pub(super) const APPROVALS: &str = r#"
CREATE TABLE approvers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  {blob} NOT NULL,
    created_at  {time} NOT NULL,
    revoked_at  {time}
);
CREATE UNIQUE INDEX approvers_live_name ON approvers(name) WHERE revoked_at IS NULL;
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    call_hash       {blob} NOT NULL,
    binding         {blob} NOT NULL,
    status          TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    parent_chain    TEXT NOT NULL,
    tool            TEXT NOT NULL,
    handle          TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    policy_version  TEXT NOT NULL,
    created_at      {int} NOT NULL,
    expires_at      {int} NOT NULL,
    decided_at      {int},
    approver        TEXT,
    used_at         {int}
);
CREATE INDEX approvals_call ON approvals(call_hash, status);
"#;

    /// The S3 buckets of aws leases.
    pub(super) const BUCKETS: &str = r#"
ALTER TABLE leases ADD COLUMN buckets TEXT;
"#;

    /// The record format of each audit row and checkpoint (see `crate::audit`): rows written
    /// before this migration are format 1 and keep verifying under format 1's rule; the writer
    /// writes format 2, whose hash covers every column of the row.
    pub(super) const AUDIT_FORMAT: &str = r#"
ALTER TABLE audit ADD COLUMN format {int} NOT NULL DEFAULT 1;
ALTER TABLE audit_checkpoints ADD COLUMN format {int} NOT NULL DEFAULT 1;
"#;
}

/// Connected OAuth accounts and the links that connect them (`crate::oauth`). Idempotent (the
/// audit-format migration test runs it again).
const OAUTH: &str = r#"
CREATE TABLE IF NOT EXISTS oauth_connects (
    id            TEXT PRIMARY KEY,
    handle        TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    agent_name    TEXT NOT NULL,
    owner         TEXT NOT NULL,
    code_hash     {blob} NOT NULL,
    attempts      {int} NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    state_hash    {blob},
    browser_hash  {blob},
    verifier      {blob},
    created_at    {int} NOT NULL,
    expires_at    {int} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS oauth_connects_state ON oauth_connects(state_hash);
CREATE INDEX IF NOT EXISTS oauth_connects_expiry ON oauth_connects(expires_at);
CREATE TABLE IF NOT EXISTS oauth_accounts (
    handle            TEXT PRIMARY KEY,
    owner             TEXT NOT NULL,
    status            TEXT NOT NULL,
    sealed            {blob} NOT NULL,
    version           {int} NOT NULL,
    access_expires_at {int},
    claim_until       {int},
    claimed_by        TEXT,
    connected_at      {time} NOT NULL,
    refreshed_at      {time},
    updated_at        {time} NOT NULL
);
"#;

/// Rotations with an overlap: an agent's previous token (`Store::rotate_agent_token`), its
/// hash and until when it still authenticates; a secret's retired value
/// (`Store::rotate_sealed`), still known to the scrubber until then. Idempotent.
const ROTATIONS: &str = r#"
CREATE TABLE IF NOT EXISTS agent_previous_tokens (
    agent_id    TEXT PRIMARY KEY REFERENCES agents(id){fk},
    token_hash  {blob} NOT NULL,
    expires_at  {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS retired_secrets (
    name        TEXT NOT NULL,
    version     {int} NOT NULL,
    sealed      {blob} NOT NULL,
    until       {time} NOT NULL,
    PRIMARY KEY (name, version)
);
"#;

/// Key versions. `master_keys` is the keyring of the local vault (`airlock_vault::keyring`):
/// each version is a random key sealed under the root master key (`wrapped`), and `tag` is the
/// header every value sealed under it begins with; version 0 is the root key itself (tag `01`,
/// the original sealed format, no `wrapped`). The table is empty until the first rotation. A
/// trigger refuses any sealed value whose version is not in the table (once it holds any row),
/// so no value can ever be written under a key that a finished rotation has deleted; the
/// rotation deletes a version only when no value is left under it, in a transaction that holds
/// every writer of sealed values off (`Store::retire_master_keys`).
///
/// `audit_signing_key` is the audit chain's current signing key (one row, `id` 1, absent until
/// the first rotation): the public key and the hand-over record since which it signs, set in
/// the hand-over's transaction (`AuditLog::rotate_key`) and read by every appender in each
/// group's transaction, so that no process goes on signing with a retired key. Idempotent.
mod keys {
    pub(super) const SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS master_keys (
    version     INTEGER PRIMARY KEY,
    tag         BLOB NOT NULL UNIQUE,
    wrapped     BLOB,
    created_at  TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS secrets_key_live_i BEFORE INSERT ON secrets
WHEN EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.sealed, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS secrets_key_live_u BEFORE UPDATE OF sealed ON secrets
WHEN EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.sealed, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS retired_secrets_key_live_i BEFORE INSERT ON retired_secrets
WHEN EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.sealed, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS retired_secrets_key_live_u BEFORE UPDATE OF sealed ON retired_secrets
WHEN EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.sealed, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS oauth_accounts_key_live_i BEFORE INSERT ON oauth_accounts
WHEN EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.sealed, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS oauth_accounts_key_live_u BEFORE UPDATE OF sealed ON oauth_accounts
WHEN EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.sealed, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS oauth_connects_key_live_u BEFORE UPDATE OF verifier ON oauth_connects
WHEN NEW.verifier IS NOT NULL AND EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.verifier, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TABLE IF NOT EXISTS audit_signing_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    public      BLOB NOT NULL,
    since_seq   INTEGER NOT NULL
);
"#;

    pub(super) const POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS master_keys (
    version     BIGINT PRIMARY KEY,
    tag         BYTEA NOT NULL UNIQUE,
    wrapped     BYTEA,
    created_at  TEXT COLLATE "C" NOT NULL
);
CREATE OR REPLACE FUNCTION airlock_sealed_key_live(v BYTEA) RETURNS BOOLEAN LANGUAGE sql VOLATILE AS $$
    SELECT v IS NULL OR NOT EXISTS (SELECT 1 FROM master_keys)
        OR EXISTS (SELECT 1 FROM master_keys WHERE tag = substring(v FROM 1 FOR length(tag)))
$$;
CREATE OR REPLACE FUNCTION airlock_sealed_key_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT airlock_sealed_key_live(NEW.sealed) THEN RAISE EXCEPTION 'airlock-key-retired'; END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION airlock_verifier_key_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT airlock_sealed_key_live(NEW.verifier) THEN RAISE EXCEPTION 'airlock-key-retired'; END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS secrets_key_live ON secrets;
CREATE TRIGGER secrets_key_live BEFORE INSERT OR UPDATE OF sealed ON secrets
    FOR EACH ROW EXECUTE FUNCTION airlock_sealed_key_check();
DROP TRIGGER IF EXISTS retired_secrets_key_live ON retired_secrets;
CREATE TRIGGER retired_secrets_key_live BEFORE INSERT OR UPDATE OF sealed ON retired_secrets
    FOR EACH ROW EXECUTE FUNCTION airlock_sealed_key_check();
DROP TRIGGER IF EXISTS oauth_accounts_key_live ON oauth_accounts;
CREATE TRIGGER oauth_accounts_key_live BEFORE INSERT OR UPDATE OF sealed ON oauth_accounts
    FOR EACH ROW EXECUTE FUNCTION airlock_sealed_key_check();
DROP TRIGGER IF EXISTS oauth_connects_key_live ON oauth_connects;
CREATE TRIGGER oauth_connects_key_live BEFORE UPDATE OF verifier ON oauth_connects
    FOR EACH ROW EXECUTE FUNCTION airlock_verifier_key_check();
CREATE TABLE IF NOT EXISTS audit_signing_key (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    public      BYTEA NOT NULL,
    since_seq   BIGINT NOT NULL
);
"#;
}

/// Answers to consumes that may not have arrived (the connection or the broker died after the
/// burn committed): a consume that names an `attempt` (a random value only its client knows)
/// keeps a copy of what it answered for `REDELIVERY_SECS`, so the same client retrying with the
/// same proof and attempt gets the same answer without burning another view, and nobody else
/// gets anything (`Store::consume_share`). Idempotent.
const SHARE_DELIVERIES: &str = r#"
CREATE TABLE IF NOT EXISTS share_deliveries (
    share_id      TEXT PRIMARY KEY,
    proof_hash    {blob} NOT NULL,
    attempt_hash  {blob} NOT NULL,
    ciphertext    {blob} NOT NULL,
    expires_at    {int} NOT NULL,
    max_views     {int} NOT NULL,
    views_left    {int} NOT NULL,
    until         {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS share_deliveries_until ON share_deliveries(until);
"#;

/// Requests for a secret (`crate::requests`): one row per intake link, its private key sealed
/// under the keyring like every other sealed value (the trigger refuses a retired version), and
/// one live request per handle name. Idempotent.
mod requests {
    const TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS secret_requests (
    id            TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    agent_name    TEXT NOT NULL,
    handle        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    context       TEXT NOT NULL,
    definition    TEXT NOT NULL,
    tools         TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    proof_hash    {blob} NOT NULL,
    intake_key    {blob},
    status        TEXT NOT NULL,
    approval_id   TEXT,
    created_at    {int} NOT NULL,
    expires_at    {int} NOT NULL,
    received_at   {int},
    decided_at    {int}
);
CREATE UNIQUE INDEX IF NOT EXISTS secret_requests_live_handle ON secret_requests(handle)
    WHERE status IN ('pending', 'received', 'approved');
CREATE INDEX IF NOT EXISTS secret_requests_agent ON secret_requests(agent_id, status);
"#;

    pub(super) const SQLITE: &[&str] = &[
        TABLE,
        r#"
CREATE TRIGGER IF NOT EXISTS secret_requests_key_live_i BEFORE INSERT ON secret_requests
WHEN NEW.intake_key IS NOT NULL AND EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.intake_key, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
CREATE TRIGGER IF NOT EXISTS secret_requests_key_live_u BEFORE UPDATE OF intake_key ON secret_requests
WHEN NEW.intake_key IS NOT NULL AND EXISTS (SELECT 1 FROM master_keys) AND NOT EXISTS (SELECT 1 FROM master_keys WHERE tag = substr(NEW.intake_key, 1, length(tag)))
BEGIN SELECT RAISE(ABORT, 'airlock-key-retired'); END;
"#,
    ];

    pub(super) const POSTGRES: &[&str] = &[
        TABLE,
        r#"
CREATE OR REPLACE FUNCTION airlock_intake_key_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT airlock_sealed_key_live(NEW.intake_key) THEN RAISE EXCEPTION 'airlock-key-retired'; END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS secret_requests_key_live ON secret_requests;
CREATE TRIGGER secret_requests_key_live BEFORE INSERT OR UPDATE OF intake_key ON secret_requests
    FOR EACH ROW EXECUTE FUNCTION airlock_intake_key_check();
"#,
    ];
}

/// Live shares by expiry, a partial index: the per-create count of live anonymous shares (the
/// cap) and its eviction visit live shares only, never the tombstones every used share leaves.
/// Idempotent.
const SHARES_LIVE: &str = r#"
CREATE INDEX IF NOT EXISTS shares_live ON shares(expires_at) WHERE views_left > 0;
"#;

/// A generation number for identities, bumped by triggers on every change to `agents` or
/// `agent_grants`, by whichever process or replica makes it, so that a broker keeping
/// authenticated agents in memory learns of a revocation with one small read. Idempotent (the
/// audit-format migration test runs it again).
mod identity {
    pub(super) const SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS identity_generation (n INTEGER NOT NULL);
INSERT INTO identity_generation (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM identity_generation);
CREATE TRIGGER IF NOT EXISTS agents_identity_i AFTER INSERT ON agents BEGIN UPDATE identity_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS agents_identity_u AFTER UPDATE ON agents BEGIN UPDATE identity_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS agents_identity_d AFTER DELETE ON agents BEGIN UPDATE identity_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS agent_grants_identity_i AFTER INSERT ON agent_grants BEGIN UPDATE identity_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS agent_grants_identity_u AFTER UPDATE ON agent_grants BEGIN UPDATE identity_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS agent_grants_identity_d AFTER DELETE ON agent_grants BEGIN UPDATE identity_generation SET n = n + 1; END;
"#;

    pub(super) const POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS identity_generation (n BIGINT NOT NULL);
INSERT INTO identity_generation (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM identity_generation);
CREATE OR REPLACE FUNCTION airlock_identity_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE identity_generation SET n = n + 1;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS agents_identity ON agents;
CREATE TRIGGER agents_identity AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION airlock_identity_changed();
DROP TRIGGER IF EXISTS agent_grants_identity ON agent_grants;
CREATE TRIGGER agent_grants_identity AFTER INSERT OR UPDATE OR DELETE ON agent_grants
    FOR EACH STATEMENT EXECUTE FUNCTION airlock_identity_changed();
"#;
}

/// The SQLite migrations, applied in order, each the schema parts it adds; `PRAGMA
/// user_version` records how many have run.
const MIGRATIONS: &[&[&str]] = &[
    &[schema::CORE],
    &[schema::SHARES],
    &[schema::LEASES],
    &[schema::APPROVALS],
    &[schema::BUCKETS],
    &[schema::AUDIT_FORMAT],
    &[identity::SQLITE],
    &[SHARES_LIVE],
    &[OAUTH],
    &[ROTATIONS],
    &[keys::SQLITE],
    &[SHARE_DELIVERIES],
    requests::SQLITE,
];

/// The PostgreSQL migrations, the first of which adds the first three parts at once, applied in
/// order under an advisory lock; `airlock_schema` records how many have run.
const PG_MIGRATIONS: &[&[&str]] = &[
    &[schema::CORE, schema::SHARES, schema::LEASES],
    &[schema::APPROVALS],
    &[schema::BUCKETS],
    &[schema::AUDIT_FORMAT],
    &[identity::POSTGRES],
    &[SHARES_LIVE],
    &[OAUTH],
    &[ROTATIONS],
    &[keys::POSTGRES],
    &[SHARE_DELIVERIES],
    requests::POSTGRES,
];

/// The PostgreSQL schema version this build brings a database to.
pub const PG_SCHEMA_VERSION: i64 = PG_MIGRATIONS.len() as i64;

/// Advisory lock keys (`pg_advisory_*lock`), one per kind of work that must not run twice at
/// once across replicas. The high bits spell "airlock" so they do not collide with an
/// application's own keys on a shared server.
pub(crate) mod locks {
    /// Schema migrations.
    pub const MIGRATE: i64 = 0x6169_726c_6f63_0001;
    /// Appending to the audit chain.
    pub const AUDIT: i64 = 0x6169_726c_6f63_0002;
    /// The lease reaper.
    pub const REAPER: i64 = 0x6169_726c_6f63_0003;
    /// `airlock migrate` into this database.
    pub const IMPORT: i64 = 0x6169_726c_6f63_0004;
}

/// The engine behind a [`Store`].
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// `store.db` in the data directory.
    Sqlite(SqlitePool),
    /// A PostgreSQL database (`store.url`).
    Postgres(PgPool),
}

/// SQL spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sql` (SQLite spelling, `?` or `?N` placeholders) in this dialect's spelling.
    pub(crate) fn sql(self, sql: &str) -> Cow<'_, str> {
        match self {
            Dialect::Sqlite => Cow::Borrowed(sql),
            Dialect::Postgres => Cow::Owned(number_placeholders(sql)),
        }
    }

    /// A migration (the [`schema`] parts it adds) in this dialect's spelling.
    fn ddl(self, parts: &[&str]) -> String {
        let (blob, int, boolean, time, fk) = match self {
            Dialect::Sqlite => ("BLOB", "INTEGER", "INTEGER", "TEXT", ""),
            Dialect::Postgres => ("BYTEA", "BIGINT", "BOOLEAN", r#"TEXT COLLATE "C""#, " DEFERRABLE INITIALLY IMMEDIATE"),
        };
        parts
            .concat()
            .replace("{blob}", blob)
            .replace("{int}", int)
            .replace("{bool}", boolean)
            .replace("{time}", time)
            .replace("{fk}", fk)
    }

    /// `sqlite` or `postgres`, whichever is this dialect's.
    pub(crate) fn pick<'a>(self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

/// `?` → `$n` (counting), `?N` → `$N`; quoted text is left alone. Only ever applied to the
/// constant statements of this crate.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        out.push(d);
                        chars.next();
                    }
                } else {
                    n += 1;
                    out.push_str(&n.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Runs `$body` with `$p` bound to the pool and `$d` to the [`Dialect`] of `$store`. The body is
/// compiled once per engine.
macro_rules! with_pool {
    ($store:expr, |$p:ident, $d:ident| $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Sqlite($p) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Sqlite;
                $body
            }
            $crate::db::Backend::Postgres($p) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Postgres;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

/// A value bound to a `?` of a statement.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

/// `q` with `args` bound in order, on either engine.
pub(crate) fn bind<'q, DB>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for a in args {
        q = match *a {
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
        };
    }
    q
}

/// A row type (a tuple) that both engines decode.
pub(crate) trait Record:
    for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin
{
}

/// Statements on the pool: each `sql` is in SQLite's spelling (see [`Dialect::sql`]), its `?`s
/// bound to `args` in order.
impl Store {
    /// The [`Dialect`] of this store's engine.
    pub(crate) fn dialect(&self) -> Dialect {
        with_pool!(self, |_p, d| d)
    }

    /// Runs the statement; the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        Ok(with_pool!(self, |p, d| bind(sqlx::query(&d.sql(sql)), args).execute(p).await?.rows_affected()))
    }

    /// Every row the statement returns.
    pub(crate) async fn fetch_all<T: Record>(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<T>> {
        Ok(with_pool!(self, |p, d| bind(sqlx::query(&d.sql(sql)), args).try_map(|r| T::from_row(&r)).fetch_all(p).await?))
    }

    /// The first row the statement returns, if any.
    pub(crate) async fn fetch_optional<T: Record>(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<T>> {
        Ok(with_pool!(self, |p, d| bind(sqlx::query(&d.sql(sql)), args).try_map(|r| T::from_row(&r)).fetch_optional(p).await?))
    }

    /// The first row the statement returns; an error when there is none.
    pub(crate) async fn fetch_one<T: Record>(&self, sql: &str, args: &[Arg<'_>]) -> Result<T> {
        Ok(with_pool!(self, |p, d| bind(sqlx::query(&d.sql(sql)), args).try_map(|r| T::from_row(&r)).fetch_one(p).await?))
    }
}

/// `res`, with a unique-key violation reported as [`StoreError::Conflict`] on `what()`.
pub(crate) fn conflict<T, E: Into<StoreError>>(res: std::result::Result<T, E>, what: impl FnOnce() -> String) -> Result<T> {
    match res.map_err(Into::into) {
        Err(StoreError::Db(sqlx::Error::Database(e))) if e.is_unique_violation() => Err(StoreError::Conflict(what())),
        other => other,
    }
}

/// `Ok` when a statement changed `n` > 0 rows; [`StoreError::NotFound`] on `what()` when it
/// changed none.
pub(crate) fn found(n: u64, what: impl FnOnce() -> String) -> Result<()> {
    if n == 0 {
        return Err(StoreError::NotFound(what()));
    }
    Ok(())
}

/// Holds the reaper's turn until dropped (see [`Store::reaper_turn`]).
#[derive(Debug)]
pub struct ReaperTurn {
    _tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

/// A handle on the store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    dir: PathBuf,
    sync: SyncMode,
    /// On SQLite, the one writer of what must be durable before a caller is answered (audit
    /// records, share creates and burns), shared by every clone of this store.
    writer: Option<std::sync::Arc<crate::writer::Writer>>,
    /// Durable commit groups and their writes, shared by every clone of this store.
    groups: std::sync::Arc<crate::stats::GroupStats>,
}

impl Store {
    /// Opens the store `cfg` names: the PostgreSQL database of `store.url`, or else `store.db`
    /// in the data directory.
    pub async fn connect(cfg: &airlock_core::config::StoreConfig) -> Result<Store> {
        match &cfg.url {
            Some(url) => Store::open_postgres(url, &cfg.data_dir).await,
            None => Store::open_with(&cfg.data_dir, cfg.sync).await,
        }
    }

    /// Opens the PostgreSQL database at `url` (`postgres://...`) and brings its schema up to
    /// date. `data_dir` still holds the key files. Several replicas may open one database at
    /// once: migrations run one at a time under an advisory lock.
    pub async fn open_postgres(url: &str, data_dir: &Path) -> Result<Store> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Invalid("store.url is not a valid postgres:// URL".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Store::start(Backend::Postgres(pool), data_dir, SyncMode::Full).await
    }

    /// A store on `backend` with its schema brought up to date.
    async fn start(backend: Backend, data_dir: &Path, sync: SyncMode) -> Result<Store> {
        match &backend {
            Backend::Sqlite(pool) => migrate_sqlite(pool).await?,
            Backend::Postgres(pool) => migrate_postgres(pool).await?,
        }
        let groups = std::sync::Arc::<crate::stats::GroupStats>::default();
        let writer = match &backend {
            Backend::Sqlite(_) => Some(crate::writer::Writer::new(data_dir.join("store.db"), sync, groups.clone())),
            Backend::Postgres(_) => None,
        };
        Ok(Store { backend, dir: data_dir.to_path_buf(), sync, writer, groups })
    }

    /// Which engine holds the state: `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The reaper's turn: `Some` while no other replica's reaper is running (on PostgreSQL a
    /// transaction-level advisory lock, released when the turn is dropped or the process
    /// dies), `None` when another one is. On SQLite the store has one process, and the turn is
    /// always granted.
    pub async fn reaper_turn(&self) -> Result<Option<ReaperTurn>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(ReaperTurn { _tx: None })),
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(locks::REAPER).fetch_one(&mut *tx).await?;
                Ok(got.then_some(ReaperTurn { _tx: Some(tx) }))
            }
        }
    }
    /// Opens (creating if needed) `store.db` in `data_dir` and brings its schema up to date,
    /// with every commit fsynced.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        Store::open_with(data_dir, SyncMode::Full).await
    }

    /// As [`Store::open`], with the given durability.
    pub async fn open_with(data_dir: &Path, sync: SyncMode) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| crate::StoreError::Io {
            path: data_dir.display().to_string(),
            source: e,
        })?;
        let path = data_dir.join("store.db");
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed audit record survives a power loss; NORMAL (WAL): it survives a
            // process crash or kill -9 (invariant 7), and the fsync happens at checkpoints.
            .synchronous(match sync {
                SyncMode::Full => SqliteSynchronous::Full,
                SyncMode::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // A local file does not go stale: skip the ping round trip on every acquire.
            .test_before_acquire(false)
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts)
            .await?;
        Store::start(Backend::Sqlite(pool), data_dir, sync).await
    }

    /// Writes a consistent copy of the SQLite store to `dest` while the store stays in use
    /// (`VACUUM INTO`: one read transaction, so the copy is the state at one instant, compacted).
    /// `dest` must not exist. On PostgreSQL the snapshot is `pg_dump`'s job:
    /// [`StoreError::Invalid`].
    pub async fn snapshot(&self, dest: &Path) -> Result<()> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(crate::StoreError::Invalid("a PostgreSQL store is backed up with pg_dump (see the README)".into()));
        };
        let d = dest.to_str().ok_or_else(|| crate::StoreError::Invalid("the snapshot path is not UTF-8".into()))?;
        sqlx::query("VACUUM INTO ?").bind(d).execute(pool).await?;
        Ok(())
    }

    /// The durability the store was opened with.
    pub fn sync(&self) -> SyncMode {
        self.sync
    }

    /// The group-committing writer, on SQLite.
    pub(crate) fn writer(&self) -> Option<&std::sync::Arc<crate::writer::Writer>> {
        self.writer.as_ref()
    }

    /// Durable commit groups and the writes in them since the store was opened.
    pub fn group_stats(&self) -> &crate::stats::GroupStats {
        &self.groups
    }

    /// The same counters, shared (for the PostgreSQL audit writer).
    pub(crate) fn group_stats_arc(&self) -> std::sync::Arc<crate::stats::GroupStats> {
        self.groups.clone()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SQLite pool, when the store is the SQLite file (tests reach into it).
    pub fn pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite(p) => Some(p),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when the store is a PostgreSQL database.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p),
        }
    }

    /// Closes the pool, waiting for connections to finish, and the writer's connection.
    pub async fn close(&self) {
        with_pool!(self, |p, d| p.close().await);
        if let Some(w) = &self.writer {
            w.close();
        }
    }
}

/// Runs the SQLite migrations not run yet, in one transaction that holds the write lock.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (version,): (i64,) = sqlx::query_as("PRAGMA user_version").fetch_one(&mut *tx).await?;
    for (i, parts) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(&Dialect::Sqlite.ddl(parts)).execute(&mut *tx).await?;
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs the PostgreSQL migrations not run yet, in one transaction under an advisory lock (so
/// replicas starting together run each once); refuses a schema newer than this build's.
async fn migrate_postgres(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(locks::MIGRATE).execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS airlock_schema (version BIGINT NOT NULL)").execute(&mut *tx).await?;
    let v: Option<(i64,)> = sqlx::query_as("SELECT version FROM airlock_schema").fetch_optional(&mut *tx).await?;
    let version = match v {
        Some((v,)) => v,
        None => {
            sqlx::query("INSERT INTO airlock_schema (version) VALUES (0)").execute(&mut *tx).await?;
            0
        }
    };
    if version as usize > PG_MIGRATIONS.len() {
        let _ = tx.rollback().await;
        return Err(StoreError::Invalid(format!(
            "the database schema is version {version}, newer than this airlock ({})",
            PG_MIGRATIONS.len()
        )));
    }
    for (i, parts) in PG_MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(&Dialect::Postgres.ddl(parts)).execute(&mut *tx).await?;
        sqlx::query("UPDATE airlock_schema SET version = $1").bind(i as i64 + 1).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Now, as RFC 3339 with microseconds, UTC.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
