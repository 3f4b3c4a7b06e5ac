//! `[handles.X.database]`: constraints of postgres, mysql and sqlite handles.

use super::defaults;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// Read-only or read-write access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Queries only, in a read-only transaction.
    ReadOnly,
    /// Queries and data changes (INSERT, UPDATE, DELETE). Never DDL or administration.
    ReadWrite,
}

/// Constraints of a database handle. None of them comes from the agent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConstraints {
    /// `read_only` (default) or `read_write`.
    #[serde(default = "default_scope")]
    pub scope: Scope,
    /// The tables statements may touch (`name` or `schema.name`, compared case-insensitively as
    /// SQL identifiers are). `None` allows every non-catalog table.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Allow system catalogs (`pg_catalog`, `information_schema`, `mysql.*`, `sqlite_master`).
    #[serde(default)]
    pub allow_catalogs: bool,
    /// Most rows returned; more are cut and the result says `truncated`.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Most bytes of cell data returned.
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: usize,
    /// Statement timeout.
    #[serde(default = "defaults::timeout_ms")]
    pub statement_timeout_ms: u64,
    /// A connection URL without credentials. When set, the secret is the password and is put
    /// into this URL by the executor; when unset, the secret is the whole connection URL.
    #[serde(default)]
    pub url: Option<String>,
}

impl Default for DatabaseConstraints {
    /// What a database handle without a `[database]` table gets.
    fn default() -> Self {
        DatabaseConstraints {
            scope: default_scope(),
            tables: None,
            allow_catalogs: false,
            max_rows: default_max_rows(),
            max_bytes: defaults::max_bytes(),
            statement_timeout_ms: defaults::timeout_ms(),
            url: None,
        }
    }
}

impl DatabaseConstraints {
    /// Checks limits, table names and the URL.
    pub(super) fn check(&self, r: &mut Report<'_, '_>, at: &FieldPath) {
        for (field, value) in [
            ("max_rows", self.max_rows as u64),
            ("max_bytes", self.max_bytes as u64),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            if value == 0 {
                r.problem(&at.join(field), ProblemCode::OutOfRange, "must be at least 1");
            }
        }
        if let Some(tables) = &self.tables {
            check_table_names(r, &at.join("tables"), tables);
        }
        if let Some(u) = &self.url {
            match url::Url::parse(u) {
                Err(e) => r.problem(&at.join("url"), ProblemCode::BadUrl, format!("not a URL: {e}")),
                Ok(p) if p.password().is_some() => {
                    r.problem(&at.join("url"), ProblemCode::PasswordInUrl, "must not contain a password; the secret is the password")
                }
                Ok(_) => {}
            }
        }
    }
}

/// Checks that each entry is `name` or `schema.name` of ASCII letters, digits and `_`.
pub(super) fn check_table_names(r: &mut Report<'_, '_>, at: &FieldPath, tables: &[String]) {
    for t in tables.iter().filter(|t| !valid_table_name(t)) {
        r.problem(at, ProblemCode::BadTableName, format!("'{t}' is not a table name (name or schema.name)"));
    }
}

/// `name` or `schema.name`, each part of ASCII letters, digits and `_`.
pub(super) fn valid_table_name(t: &str) -> bool {
    !t.is_empty()
        && t.split('.').count() <= 2
        && t.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// The entry of `allowed` that `table` names, compared case-insensitively as SQL identifiers
/// are. The config's spelling is returned, so agent text never reaches a statement.
pub fn table_in(table: &str, allowed: &[String]) -> Option<String> {
    allowed.iter().find(|a| a.eq_ignore_ascii_case(table)).cloned()
}

fn default_scope() -> Scope {
    Scope::ReadOnly
}

fn default_max_rows() -> usize {
    1000
}

/// The scopes a lease may take unless the handle says otherwise: `read_only` only.
pub(super) fn default_lease_scopes() -> Vec<Scope> {
    vec![Scope::ReadOnly]
}
