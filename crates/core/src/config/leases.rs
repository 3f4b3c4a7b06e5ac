//! `[handles.X.lease]`: who may lease a database handle, for how long, with which scope and
//! tables, and who makes the lease's credential.

use super::agents::valid_agent_name;
use super::database::{check_table_names, default_lease_scopes, table_in, valid_table_name, DatabaseConstraints, Scope};
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use super::vault::Vaults;
use crate::kind::HandleKind;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `[handles.X.lease]`: who may lease the handle, for how long, with which scope and tables.
///
/// A lease never widens its handle: `scopes` and `tables` are checked at load time to be within
/// the handle's own constraints.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasePolicy {
    /// The handle's secret is an admin connection URL and every lease is a real database role
    /// (PostgreSQL, MySQL/MariaDB), created for it and dropped at revocation.
    #[serde(default)]
    pub dynamic: bool,
    /// Longest lease, in seconds, for any agent (default 3600).
    #[serde(default = "default_lease_ttl")]
    pub max_ttl_seconds: u64,
    /// Per-agent limits, in seconds, below `max_ttl_seconds` (agent name → seconds).
    #[serde(default)]
    pub agent_max_ttl_seconds: BTreeMap<String, u64>,
    /// The scopes a lease may take (default: `read_only` only).
    #[serde(default = "default_lease_scopes")]
    pub scopes: Vec<Scope>,
    /// The tables a lease may name; default: the handle's own list.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Statements that create a dynamic role, run in order with the admin credential. Templates:
    /// `{{name}}`, `{{password}}` (already hashed: a SCRAM verifier or a MySQL native hash),
    /// `{{expiration}}`, `{{database}}`, `{{privileges}}`, and per-table lines through
    /// `{{table}}` / `{{schema}}` (a statement naming one of those runs once per table or schema).
    #[serde(default)]
    pub creation_statements: Option<Vec<String>>,
    /// Statements that revoke a dynamic role, same templates. The role is checked to be gone
    /// afterwards whatever they do.
    #[serde(default)]
    pub revocation_statements: Option<Vec<String>>,
    /// Who makes the lease's credential: airlock itself (the default, see `dynamic`) or
    /// `openbao`, whose database secrets engine issues a dynamic credential under an OpenBao
    /// lease, revoked through OpenBao.
    #[serde(default)]
    pub provider: LeaseProvider,
    /// With `provider = "openbao"`: the `[vaults.NAME]` whose database engine issues the
    /// credential.
    #[serde(default)]
    pub vault: Option<String>,
    /// With `provider = "openbao"`: the database engine's mount (default `database`).
    #[serde(default)]
    pub mount: Option<String>,
    /// With `provider = "openbao"`: the engine's role (`GET /v1/{mount}/creds/{role}`).
    #[serde(default)]
    pub role: Option<String>,
}

/// What a `[handles.X.lease]` table with nothing in it means (not dynamic, 3,600 s, `read_only`,
/// the default statements, airlock as provider).
impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            dynamic: false,
            max_ttl_seconds: default_lease_ttl(),
            agent_max_ttl_seconds: BTreeMap::new(),
            scopes: default_lease_scopes(),
            tables: None,
            creation_statements: None,
            revocation_statements: None,
            provider: LeaseProvider::default(),
            vault: None,
            mount: None,
            role: None,
        }
    }
}

/// Who makes a lease's credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseProvider {
    /// airlock: the base handle's own credential (or a role airlock creates, `dynamic`).
    #[default]
    Airlock,
    /// The database secrets engine of an OpenBao or Vault server.
    Openbao,
}

/// The suffix a lease adds to its base handle's name: `__L` and six hex digits.
pub const LEASE_SUFFIX_LEN: usize = 9;

impl LeasePolicy {
    /// The longest TTL `agent` may ask for.
    pub fn max_ttl_for(&self, agent: &str) -> u64 {
        self.agent_max_ttl_seconds.get(agent).copied().unwrap_or(self.max_ttl_seconds).min(self.max_ttl_seconds)
    }

    /// Checks the policy against its handle: never wider than the handle, and the settings of
    /// one provider only.
    pub(super) fn check(&self, r: &mut Report<'_, '_>, at: &FieldPath, handle: &LeaseTarget<'_>) {
        if handle.kind == HandleKind::Aws {
            r.problem(at, ProblemCode::NotLeasable, "an aws handle's lease limits are in its [aws] table (max_ttl_seconds, scopes, buckets)");
            return;
        }
        if !handle.kind.is_database() {
            r.problem(at, ProblemCode::NotLeasable, "only database and aws handles can be leased");
            return;
        }
        if handle.name.len() + LEASE_SUFFIX_LEN > 64 {
            r.problem(at, ProblemCode::NameTooLong, "a leased handle's name is at most 55 characters (the lease adds 9)");
        }
        if self.dynamic && !matches!(handle.kind, HandleKind::Postgres | HandleKind::Mysql) {
            r.problem(&at.join("dynamic"), ProblemCode::NotLeasable, "dynamic leases need a postgres or mysql handle");
        }
        if self.max_ttl_seconds == 0 {
            r.problem(&at.join("max_ttl_seconds"), ProblemCode::OutOfRange, "must be at least 1");
        }
        for a in self.agent_max_ttl_seconds.keys() {
            if !valid_agent_name(a) {
                r.problem(&at.join("agent_max_ttl_seconds"), ProblemCode::BadAgentName, format!("'{a}' is not an agent name"));
            }
        }
        if self.scopes.is_empty() {
            r.problem(&at.join("scopes"), ProblemCode::EmptyList, "name at least one scope");
        }
        if let Some(db) = handle.db {
            self.check_within(r, at, db);
        }
        if let Some(t) = &self.tables {
            check_table_names(r, &at.join("tables"), t);
        }
        self.check_statements(r, at);
        if self.provider == LeaseProvider::Openbao {
            self.check_openbao(r, at, handle);
        } else if self.vault.is_some() || self.mount.is_some() || self.role.is_some() {
            r.problem(&at.join("provider"), ProblemCode::ProviderMismatch, "vault, mount and role go with provider = \"openbao\"");
        }
    }

    /// Scopes and tables within the handle's own.
    fn check_within(&self, r: &mut Report<'_, '_>, at: &FieldPath, db: &DatabaseConstraints) {
        if db.scope == Scope::ReadOnly && self.scopes.contains(&Scope::ReadWrite) {
            r.problem(&at.join("scopes"), ProblemCode::LeaseWiderThanHandle, "read_write is wider than the handle's read_only scope");
        }
        if let (Some(t), Some(base)) = (&self.tables, &db.tables) {
            // A name that is no table name is reported as such, not as a wider lease.
            for x in t.iter().filter(|x| valid_table_name(x) && table_in(x, base).is_none()) {
                r.problem(&at.join("tables"), ProblemCode::LeaseWiderThanHandle, format!("'{x}' is not among the handle's tables"));
            }
        }
    }

    /// Statement lists, when given, are non-empty, and creation sets the password.
    fn check_statements(&self, r: &mut Report<'_, '_>, at: &FieldPath) {
        for (field, list) in [("creation_statements", &self.creation_statements), ("revocation_statements", &self.revocation_statements)] {
            if let Some(list) = list {
                if list.is_empty() || list.iter().any(|s| s.trim().is_empty()) {
                    r.problem(
                        &at.join(field),
                        ProblemCode::EmptyList,
                        "give at least one non-empty statement, or leave it out for the defaults",
                    );
                }
            }
        }
        if self.creation_statements.as_ref().is_some_and(|c| !c.is_empty() && !c.iter().any(|s| s.contains("{{password}}"))) {
            r.problem(&at.join("creation_statements"), ProblemCode::BadTemplate, "one statement must set {{password}}");
        }
    }

    /// `provider = "openbao"`: a postgres or mysql handle with a URL, a defined vault, and a
    /// mount and role of one path segment each.
    fn check_openbao(&self, r: &mut Report<'_, '_>, at: &FieldPath, handle: &LeaseTarget<'_>) {
        if !matches!(handle.kind, HandleKind::Postgres | HandleKind::Mysql) {
            r.problem(&at.join("provider"), ProblemCode::NotLeasable, "OpenBao database credentials need a postgres or mysql handle");
            return;
        }
        if self.dynamic || self.creation_statements.is_some() || self.revocation_statements.is_some() {
            r.problem(
                &at.join("provider"),
                ProblemCode::ProviderMismatch,
                "with provider = \"openbao\" the role is OpenBao's: leave dynamic and the statements out",
            );
        }
        if handle.db.is_some_and(|db| db.url.is_none()) {
            r.problem(
                &at.join("provider"),
                ProblemCode::MissingKey,
                "the handle needs database.url (host and database); OpenBao gives the user and password",
            );
        }
        match &self.vault {
            None => r.problem(&at.join("vault"), ProblemCode::MissingKey, "name the [vaults.NAME] that issues the credentials"),
            Some(v) => handle.vaults.check_defined(r, &at.join("vault"), v),
        }
        let seg_ok = |s: &str| !s.is_empty() && !s.contains(['/', '?', '#', '%']) && !s.chars().any(|c| c.is_control() || c.is_whitespace());
        if !self.mount.as_deref().is_none_or(seg_ok) {
            r.problem(&at.join("mount"), ProblemCode::BadPathSegment, "one path segment");
        }
        match &self.role {
            Some(role) if seg_ok(role) => {}
            Some(_) => r.problem(&at.join("role"), ProblemCode::BadPathSegment, "name the database engine's role (one path segment)"),
            None => r.problem(&at.join("role"), ProblemCode::MissingKey, "name the database engine's role (one path segment)"),
        }
    }
}

/// The handle a lease policy is checked against.
pub(super) struct LeaseTarget<'a> {
    /// The handle's name as written.
    pub(super) name: &'a str,
    /// Its kind.
    pub(super) kind: HandleKind,
    /// Its database constraints, when they are valid.
    pub(super) db: Option<&'a DatabaseConstraints>,
    /// The file's vaults.
    pub(super) vaults: &'a Vaults,
}

fn default_lease_ttl() -> u64 {
    3600
}
