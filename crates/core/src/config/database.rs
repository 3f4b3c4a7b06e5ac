//! `[handles.X.database]`: constraints of postgres, mysql and sqlite handles.

use super::defaults;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Read-only or read-write access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Queries only, in a read-only transaction.
    ReadOnly,
    /// Queries and data changes (INSERT, UPDATE, DELETE). Never DDL or administration.
    ReadWrite,
}

/// Constraints of a database handle. None of them comes from the agent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "RawDatabase")]
pub struct DatabaseConstraints {
    /// `read_only` (default) or `read_write`.
    pub scope: Scope,
    /// The tables statements may touch (`name` or `schema.name`, compared case-insensitively as
    /// SQL identifiers are). `None` allows every non-catalog table. Written as a list, or as a
    /// table whose keys are these names and whose values may restrict columns ([`columns`]).
    ///
    /// [`columns`]: DatabaseConstraints::columns
    pub tables: Option<Vec<String>>,
    /// Column rules of the tables that have one, keyed by the entry of `tables` as written
    /// (`tables = { customers = { deny_columns = ["ssn"] } }`).
    pub columns: BTreeMap<String, TableColumns>,
    /// Allow system catalogs (`pg_catalog`, `information_schema`, `mysql.*`, `sqlite_master`)
    /// and the dialect's catalog functions (`pg_get_viewdef`, `format_type`, ...).
    pub allow_catalogs: bool,
    /// Functions a statement may call besides the dialect's built-in allow-list (`name` or
    /// `schema.name`): user-defined functions and procedures, extension functions. A statement
    /// calling one of them may change data, so on a `read_write` handle it counts as a write.
    pub allow_functions: Vec<String>,
    /// Most rows returned; more are cut and the result says `truncated`.
    pub max_rows: usize,
    /// Most bytes of cell data returned.
    pub max_bytes: usize,
    /// Statement timeout.
    pub statement_timeout_ms: u64,
    /// A connection URL without credentials. When set, the secret is the password and is put
    /// into this URL by the executor; when unset, the secret is the whole connection URL.
    pub url: Option<String>,
    /// PostgreSQL only: a role every statement of a `read_only` handle runs under
    /// (`SET LOCAL ROLE` inside the read-only transaction), so the database enforces what the
    /// validator checks: grant it `SELECT` on the allowed tables (and columns) only. The
    /// credential must be a member of it.
    pub query_role: Option<String>,
}

/// Which columns of one table statements may name. A restricted table cannot be read with `*`
/// or `t.*`, nor as a whole row (`to_json(t)`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableColumns {
    /// The only columns statements may name; `None`: every column but `deny_columns`.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Columns statements may never name.
    #[serde(default)]
    pub deny_columns: Vec<String>,
}

impl TableColumns {
    /// Whether the rule restricts anything.
    pub fn restricts(&self) -> bool {
        self.columns.is_some() || !self.deny_columns.is_empty()
    }

    /// Whether a column may be named. `exact` is the column as the database compares it (a
    /// quoted PostgreSQL name as written, otherwise lower case): allowed only when it is
    /// exactly one of `columns`; denied as soon as it equals one of `deny_columns` in any case.
    pub fn allows(&self, exact: &str) -> bool {
        // Column names in a rule are ASCII (checked at load), so ASCII case folding is theirs.
        if self.deny_columns.iter().any(|d| d.eq_ignore_ascii_case(exact)) {
            return false;
        }
        match &self.columns {
            Some(only) => only.iter().any(|c| lower_eq(c, exact)),
            None => true,
        }
    }
}

/// Whether `name` in lower case is `key` (ASCII folding, no allocation).
fn lower_eq(name: &str, key: &str) -> bool {
    name.len() == key.len() && name.bytes().zip(key.bytes()).all(|(n, k)| n.to_ascii_lowercase() == k)
}

/// `[handles.X.database]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    #[serde(default = "default_scope")]
    scope: Scope,
    #[serde(default)]
    tables: Option<TableSpec>,
    #[serde(default)]
    allow_catalogs: bool,
    #[serde(default)]
    allow_functions: Vec<String>,
    #[serde(default = "default_max_rows")]
    max_rows: usize,
    #[serde(default = "defaults::max_bytes")]
    max_bytes: usize,
    #[serde(default = "defaults::timeout_ms")]
    statement_timeout_ms: u64,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    query_role: Option<String>,
}

impl From<RawDatabase> for DatabaseConstraints {
    fn from(r: RawDatabase) -> Self {
        let (tables, columns) = match r.tables {
            None => (None, BTreeMap::new()),
            Some(t) => (Some(t.names), t.columns),
        };
        DatabaseConstraints {
            scope: r.scope,
            tables,
            columns,
            allow_catalogs: r.allow_catalogs,
            allow_functions: r.allow_functions,
            max_rows: r.max_rows,
            max_bytes: r.max_bytes,
            statement_timeout_ms: r.statement_timeout_ms,
            url: r.url,
            query_role: r.query_role,
        }
    }
}

/// `tables`: a list of names, or a table of names to column rules.
struct TableSpec {
    names: Vec<String>,
    columns: BTreeMap<String, TableColumns>,
}

impl<'de> Deserialize<'de> for TableSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TableSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of table names or a table of tables")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TableSpec, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(TableSpec { names, columns: BTreeMap::new() })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TableSpec, A::Error> {
                let mut names = Vec::new();
                let mut columns = BTreeMap::new();
                while let Some(n) = map.next_key::<String>()? {
                    let rule = map.next_value::<TableColumns>()?;
                    if rule.restricts() {
                        columns.insert(n.clone(), rule);
                    }
                    names.push(n);
                }
                Ok(TableSpec { names, columns })
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for DatabaseConstraints {
    /// What a database handle without a `[database]` table gets.
    fn default() -> Self {
        DatabaseConstraints {
            scope: default_scope(),
            tables: None,
            columns: BTreeMap::new(),
            allow_catalogs: false,
            allow_functions: Vec::new(),
            max_rows: default_max_rows(),
            max_bytes: defaults::max_bytes(),
            statement_timeout_ms: defaults::timeout_ms(),
            url: None,
            query_role: None,
        }
    }
}

impl DatabaseConstraints {
    /// The column rule of an entry of `tables`, if it has one.
    pub fn columns_of(&self, entry: &str) -> Option<&TableColumns> {
        self.columns.get(entry).filter(|c| c.restricts())
    }

    /// Checks limits, table, column and function names, and the URL.
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
            let mut seen: Vec<String> = Vec::new();
            for t in tables {
                if seen.contains(&t.to_lowercase()) {
                    r.problem(&at.join("tables").key(t), ProblemCode::DuplicateKey, format!("'{t}' is listed twice (names compare case-insensitively)"));
                }
                seen.push(t.to_lowercase());
            }
        }
        for (table, rule) in &self.columns {
            check_columns(r, &at.join("tables").key(table), rule);
        }
        for f in self.allow_functions.iter().filter(|f| !valid_table_name(f)) {
            r.problem(&at.join("allow_functions"), ProblemCode::BadFunctionName, format!("'{f}' is not a function name (name or schema.name)"));
        }
        if let Some(role) = &self.query_role {
            let ok = role.len() <= 63
                && role.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                r.problem(&at.join("query_role"), ProblemCode::BadValue, format!("'{role}' is not a role name (ASCII letters, digits and _, at most 63)"));
            }
            if self.scope != Scope::ReadOnly {
                r.problem(&at.join("query_role"), ProblemCode::BadValue, "applies to read_only handles only");
            }
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

/// One table's column rule: `columns` or `deny_columns`, not both; names of ASCII letters,
/// digits and `_`.
fn check_columns(r: &mut Report<'_, '_>, at: &FieldPath, rule: &TableColumns) {
    if rule.columns.is_some() && !rule.deny_columns.is_empty() {
        r.problem(at, ProblemCode::BadValue, "give columns or deny_columns, not both");
    }
    if rule.columns.as_ref().is_some_and(Vec::is_empty) {
        r.problem(&at.join("columns"), ProblemCode::EmptyList, "columns = [] allows no column: name at least one, or leave it out");
    }
    let named = rule.columns.iter().flatten().map(|c| ("columns", c));
    for (field, c) in named.chain(rule.deny_columns.iter().map(|c| ("deny_columns", c))) {
        if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            r.problem(&at.join(field), ProblemCode::BadColumnName, format!("'{c}' is not a column name (ASCII letters, digits and _)"));
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
