//! `airlock.toml`: parsed with serde (spans kept), then validated into [`Config`].
//!
//! Two phases, as in ripgrep and cargo-deny: the raw file is deserialized with unknown fields
//! refused, then every handle, constraint and grant is checked and resolved. Every error names
//! the file, the line and the field.

use crate::handle::HandleName;
use crate::tool::Tool;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A configuration error that names the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The configuration file.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// The file is not valid TOML or does not match the configuration's shape.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The configuration file.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// What the parser said (it names the field).
        message: String,
    },
    /// A value is well-formed TOML but not a valid setting.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The configuration file.
        file: String,
        /// 1-based line of the offending table or value.
        line: usize,
        /// Dotted path of the field, for example `handles.DB_PROD.database.scope`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What kind of credential a handle holds, which decides the tools that may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandleKind {
    /// A PostgreSQL server.
    Postgres,
    /// A MySQL or MariaDB server.
    Mysql,
    /// A SQLite database file.
    Sqlite,
    /// An HTTP API.
    Http,
    /// A value with no executor (for sharing or leasing only).
    Generic,
}

impl HandleKind {
    /// True for the SQL kinds.
    pub fn is_database(self) -> bool {
        matches!(self, HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HandleKind::Postgres => "postgres",
            HandleKind::Mysql => "mysql",
            HandleKind::Sqlite => "sqlite",
            HandleKind::Http => "http",
            HandleKind::Generic => "generic",
        }
    }
}

/// Read-only or read-write access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Queries only, in a read-only transaction.
    ReadOnly,
    /// Queries and data changes (INSERT, UPDATE, DELETE). Never DDL or administration.
    ReadWrite,
}

/// Where a handle's secret lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// The local encrypted vault, under this name.
    Local(String),
    /// An environment variable of the broker.
    Env(String),
    /// A file readable by the broker (its whole content, one trailing newline removed).
    File(PathBuf),
}

impl SecretRef {
    /// Parses `local:NAME`, `env:VAR` or `file:/path` (relative paths are relative to `base`).
    pub fn parse(s: &str, base: &Path) -> Result<SecretRef, String> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| "expected local:NAME, env:VAR or file:PATH".to_owned())?;
        if rest.is_empty() {
            return Err("the reference after the scheme is empty".into());
        }
        match scheme {
            "local" => Ok(SecretRef::Local(rest.to_owned())),
            "env" => Ok(SecretRef::Env(rest.to_owned())),
            "file" => Ok(SecretRef::File(base.join(rest))),
            _ => Err(format!("unknown secret backend '{scheme}' (expected local, env or file)")),
        }
    }
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
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Statement timeout.
    #[serde(default = "default_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// A connection URL without credentials. When set, the secret is the password and is put
    /// into this URL by the executor; when unset, the secret is the whole connection URL.
    #[serde(default)]
    pub url: Option<String>,
}

/// How the credential is put into an HTTP request. Only here; never where the agent writes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// A header whose value is `format` with `{}` replaced by the secret.
    Header {
        /// Header name, for example `Authorization` or `X-API-Key`.
        name: String,
        /// Value format containing exactly one `{}`; default `Bearer {}`.
        #[serde(default = "default_header_format")]
        format: String,
    },
    /// HTTP basic authentication; the secret is the password.
    Basic {
        /// The user name (not secret).
        username: String,
    },
    /// A query parameter carrying the secret.
    Query {
        /// The parameter name.
        param: String,
    },
}

/// One destination a credential may go to, parsed from `url` and `methods`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `https` or `http`.
    pub scheme: String,
    /// Lowercase host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// The port (the scheme's default when the URL gives none).
    pub port: u16,
    /// Path prefix; a request path must equal it or continue it after a `/`.
    pub path_prefix: String,
    /// Allowed methods, uppercase.
    pub methods: Vec<String>,
}

/// Constraints of an HTTP handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConstraints {
    /// Where the credential may go. The first one is the base for relative paths.
    pub destinations: Vec<Destination>,
    /// Where the secret goes.
    pub inject: Injection,
    /// Response bodies are cut at this size (the result says `truncated`).
    pub max_response_bytes: usize,
    /// Whole-request timeout.
    pub timeout_ms: u64,
    /// Redirects followed at most, each re-checked against the destinations (0: none).
    pub max_redirects: u8,
    /// Let host names resolve to loopback, private, link-local or CGNAT addresses. IP literals
    /// bound in `destinations` are always allowed, as that is an explicit binding.
    pub allow_private_addresses: bool,
    /// Largest request body the agent may send.
    pub max_request_bytes: usize,
}

/// A handle's constraints, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraints {
    /// For postgres, mysql and sqlite handles.
    Database(DatabaseConstraints),
    /// For http handles.
    Http(HttpConstraints),
    /// For generic handles.
    None,
}

/// A validated handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    /// Its name.
    pub name: HandleName,
    /// Its kind.
    pub kind: HandleKind,
    /// Where its secret lives.
    pub secret: SecretRef,
    /// What it is for, shown to agents in tool descriptions (never a value).
    pub description: String,
    /// Its constraints.
    pub constraints: Constraints,
}

impl Handle {
    /// The database constraints, if this is a database handle.
    pub fn database(&self) -> Option<&DatabaseConstraints> {
        match &self.constraints {
            Constraints::Database(d) => Some(d),
            _ => None,
        }
    }

    /// The HTTP constraints, if this is an HTTP handle.
    pub fn http(&self) -> Option<&HttpConstraints> {
        match &self.constraints {
            Constraints::Http(h) => Some(h),
            _ => None,
        }
    }
}

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
}

impl LeasePolicy {
    /// The longest TTL `agent` may ask for.
    pub fn max_ttl_for(&self, agent: &str) -> u64 {
        self.agent_max_ttl_seconds.get(agent).copied().unwrap_or(self.max_ttl_seconds).min(self.max_ttl_seconds)
    }
}

/// One grant: these tools on this handle.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The handle.
    pub handle: HandleName,
    /// The tools; each must apply to the handle's kind.
    pub tools: Vec<Tool>,
}

/// An agent's grants and limits, keyed by agent name in the config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// What the agent is for.
    #[serde(default)]
    pub description: String,
    /// Grants compiled to Cedar `permit` policies.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Calls per minute; overrides `limits.rate_per_minute`.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address; default `127.0.0.1:7878`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Browser origins allowed to call the MCP endpoint (`Origin` header, exact match such as
    /// `https://app.example`). Empty: requests carrying an `Origin` are refused (T19).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted by the MCP endpoint, besides loopback names and the listen
    /// address (T19: DNS rebinding of localhost).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: default_listen(), allowed_origins: Vec::new(), allowed_hosts: Vec::new() }
    }
}

/// `[store]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (SQLite store, master key, audit signing key). Relative to the config.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// When a commit counts as done: `full` (default) fsyncs every commit group, so audit
    /// records survive a power loss; `normal` leaves the fsync to checkpoints, so they survive
    /// a process crash or kill -9 but not an OS crash.
    #[serde(default)]
    pub sync: SyncMode,
}

/// Store durability, see [`StoreConfig::sync`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// fsync on every commit.
    #[default]
    Full,
    /// fsync at WAL checkpoints only.
    Normal,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { data_dir: default_data_dir(), sync: SyncMode::Full }
    }
}

/// `[limits]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls per minute per agent (token bucket; bursts up to this many).
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    /// Largest `/v1/invoke` body.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { rate_per_minute: default_rate(), max_request_bytes: default_max_request_bytes() }
    }
}

/// `[policy]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Extra Cedar policy files, relative to the config.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from (for messages), or a label.
    pub source: String,
    /// `[server]`
    pub server: ServerConfig,
    /// `[store]`, with `data_dir` made absolute.
    pub store: StoreConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[policy]`, with file paths made absolute.
    pub policy: PolicyConfig,
    /// Handles by name.
    pub handles: BTreeMap<HandleName, Handle>,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentConfig>,
    /// Lease policies of the handles that have one (`[handles.X.lease]`).
    pub leases: BTreeMap<HandleName, LeasePolicy>,
}

// ---- raw shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    handles: BTreeMap<Spanned<String>, Spanned<RawHandle>>,
    #[serde(default)]
    agents: BTreeMap<Spanned<String>, Spanned<AgentConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandle {
    kind: HandleKind,
    secret: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    database: Option<Spanned<DatabaseConstraints>>,
    #[serde(default)]
    http: Option<Spanned<RawHttp>>,
    #[serde(default)]
    lease: Option<Spanned<LeasePolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    destinations: Vec<Spanned<RawDestination>>,
    inject: Spanned<Injection>,
    #[serde(default = "default_max_bytes")]
    max_response_bytes: usize,
    #[serde(default = "default_http_timeout_ms")]
    timeout_ms: u64,
    #[serde(default)]
    max_redirects: u8,
    #[serde(default)]
    allow_private_addresses: bool,
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    url: String,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
}

fn default_scope() -> Scope {
    Scope::ReadOnly
}
fn default_lease_ttl() -> u64 {
    3600
}
fn default_lease_scopes() -> Vec<Scope> {
    vec![Scope::ReadOnly]
}
fn default_max_rows() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    1 << 20
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_http_timeout_ms() -> u64 {
    10_000
}
fn default_header_format() -> String {
    "Bearer {}".into()
}
fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("airlock-data")
}
fn default_rate() -> u32 {
    600
}
fn default_max_request_bytes() -> usize {
    1 << 20
}

/// Line (1-based) of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        Config::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses and validates configuration text. `base` resolves relative paths.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().trim().to_owned(),
        })?;
        let invalid = |pos: usize, field: String, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            line: line_of(text, pos),
            field,
            message,
        };

        let mut handles = BTreeMap::new();
        let mut leases = BTreeMap::new();
        for (name, raw_handle) in raw.handles {
            let pos = name.span().start;
            let name_str = name.into_inner();
            let hname = HandleName::parse(&name_str)
                .map_err(|e| invalid(pos, format!("handles.{name_str}"), e.to_string()))?;
            let hpos = raw_handle.span().start;
            let rh = raw_handle.into_inner();
            let field = |f: &str| format!("handles.{hname}.{f}");
            let secret = SecretRef::parse(rh.secret.get_ref(), base)
                .map_err(|m| invalid(rh.secret.span().start, field("secret"), m))?;
            let constraints = match rh.kind {
                HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite => {
                    if let Some(h) = &rh.http {
                        return Err(invalid(h.span().start, field("http"), "only http handles take [http] constraints".into()));
                    }
                    let db = match rh.database {
                        Some(d) => {
                            let p = d.span().start;
                            let d = d.into_inner();
                            validate_database(&d).map_err(|(f, m)| invalid(p, field(&format!("database.{f}")), m))?;
                            d
                        }
                        None => DatabaseConstraints {
                            scope: Scope::ReadOnly,
                            tables: None,
                            allow_catalogs: false,
                            max_rows: default_max_rows(),
                            max_bytes: default_max_bytes(),
                            statement_timeout_ms: default_timeout_ms(),
                            url: None,
                        },
                    };
                    Constraints::Database(db)
                }
                HandleKind::Http => {
                    if let Some(d) = &rh.database {
                        return Err(invalid(d.span().start, field("database"), "only database handles take [database] constraints".into()));
                    }
                    let http = rh.http.ok_or_else(|| {
                        invalid(hpos, field("http"), "an http handle needs [http] destinations and inject".into())
                    })?;
                    Constraints::Http(validate_http(http.into_inner(), &|p, f, m| invalid(p, field(&format!("http.{f}")), m))?)
                }
                HandleKind::Generic => {
                    if let Some(d) = &rh.database {
                        return Err(invalid(d.span().start, field("database"), "generic handles take no constraints".into()));
                    }
                    if let Some(h) = &rh.http {
                        return Err(invalid(h.span().start, field("http"), "generic handles take no constraints".into()));
                    }
                    Constraints::None
                }
            };
            if let Some(lp) = rh.lease {
                let p = lp.span().start;
                let lp = lp.into_inner();
                validate_lease(&hname, rh.kind, &constraints, &lp).map_err(|(f, m)| invalid(p, field(&format!("lease.{f}")), m))?;
                leases.insert(hname.clone(), lp);
            }
            handles.insert(
                hname.clone(),
                Handle { name: hname, kind: rh.kind, secret, description: rh.description, constraints },
            );
        }

        let mut agents = BTreeMap::new();
        for (name, agent) in raw.agents {
            let pos = name.span().start;
            let name = name.into_inner();
            if !valid_agent_name(&name) {
                return Err(invalid(
                    pos,
                    format!("agents.{name}"),
                    "an agent name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter".into(),
                ));
            }
            let apos = agent.span().start;
            let agent = agent.into_inner();
            for (i, g) in agent.grants.iter().enumerate() {
                let f = format!("agents.{name}.grants[{i}]");
                let h = handles
                    .get(&g.handle)
                    .ok_or_else(|| invalid(apos, f.clone(), format!("unknown handle {}", g.handle)))?;
                if g.tools.is_empty() {
                    return Err(invalid(apos, f, "a grant names at least one tool".into()));
                }
                for t in &g.tools {
                    if !t.applies_to(h.kind) {
                        return Err(invalid(
                            apos,
                            f,
                            format!("tool {} does not apply to {} handle {}", t.name(), h.kind.as_str(), g.handle),
                        ));
                    }
                }
            }
            agents.insert(name, agent);
        }

        if raw.limits.rate_per_minute == 0 {
            return Err(invalid(0, "limits.rate_per_minute".into(), "must be at least 1".into()));
        }
        let store = StoreConfig { data_dir: base.join(raw.store.data_dir), sync: raw.store.sync };
        let policy = PolicyConfig { files: raw.policy.files.iter().map(|f| base.join(f)).collect() };
        Ok(Config {
            source: file.to_owned(),
            server: raw.server,
            store,
            limits: raw.limits,
            policy,
            handles,
            agents,
            leases,
        })
    }
}

/// Agent names: `[a-z][a-z0-9_-]{0,63}`.
pub fn valid_agent_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// The suffix a lease adds to its base handle's name: `__L` and six hex digits.
pub const LEASE_SUFFIX_LEN: usize = 9;

/// The entry of `allowed` that `table` names, compared case-insensitively as SQL identifiers
/// are. The config's spelling is returned, so agent text never reaches a statement.
pub fn table_in(table: &str, allowed: &[String]) -> Option<String> {
    allowed.iter().find(|a| a.eq_ignore_ascii_case(table)).cloned()
}

fn validate_lease(
    name: &HandleName,
    kind: HandleKind,
    constraints: &Constraints,
    lp: &LeasePolicy,
) -> Result<(), (&'static str, String)> {
    let Constraints::Database(db) = constraints else {
        return Err(("", "only database handles can be leased".into()));
    };
    if name.as_str().len() + LEASE_SUFFIX_LEN > 64 {
        return Err(("", "a leased handle's name is at most 55 characters (the lease adds 9)".into()));
    }
    if lp.dynamic && !matches!(kind, HandleKind::Postgres | HandleKind::Mysql) {
        return Err(("dynamic", "dynamic leases need a postgres or mysql handle".into()));
    }
    if lp.max_ttl_seconds == 0 {
        return Err(("max_ttl_seconds", "must be at least 1".into()));
    }
    for a in lp.agent_max_ttl_seconds.keys() {
        if !valid_agent_name(a) {
            return Err(("agent_max_ttl_seconds", format!("'{a}' is not an agent name")));
        }
    }
    if lp.scopes.is_empty() {
        return Err(("scopes", "name at least one scope".into()));
    }
    if db.scope == Scope::ReadOnly && lp.scopes.contains(&Scope::ReadWrite) {
        return Err(("scopes", "read_write is wider than the handle's read_only scope".into()));
    }
    if let Some(t) = &lp.tables {
        validate_database(&DatabaseConstraints { tables: Some(t.clone()), ..db.clone() }).map_err(|(_, m)| ("tables", m))?;
        if let Some(base) = &db.tables {
            for x in t {
                if table_in(x, base).is_none() {
                    return Err(("tables", format!("'{x}' is not among the handle's tables")));
                }
            }
        }
    }
    for (f, list) in [("creation_statements", &lp.creation_statements), ("revocation_statements", &lp.revocation_statements)] {
        if let Some(list) = list {
            if list.is_empty() || list.iter().any(|s| s.trim().is_empty()) {
                return Err((f, "give at least one non-empty statement, or leave it out for the defaults".into()));
            }
        }
    }
    if lp.creation_statements.as_ref().is_some_and(|c| !c.iter().any(|s| s.contains("{{password}}"))) {
        return Err(("creation_statements", "one statement must set {{password}}".into()));
    }
    Ok(())
}

fn validate_database(d: &DatabaseConstraints) -> Result<(), (&'static str, String)> {
    if d.max_rows == 0 {
        return Err(("max_rows", "must be at least 1".into()));
    }
    if d.max_bytes == 0 {
        return Err(("max_bytes", "must be at least 1".into()));
    }
    if d.statement_timeout_ms == 0 {
        return Err(("statement_timeout_ms", "must be at least 1".into()));
    }
    if let Some(tables) = &d.tables {
        for t in tables {
            let ok = !t.is_empty()
                && t.split('.').count() <= 2
                && t.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            if !ok {
                return Err(("tables", format!("'{t}' is not a table name (name or schema.name)")));
            }
        }
    }
    if let Some(u) = &d.url {
        let parsed = url::Url::parse(u).map_err(|e| ("url", format!("not a URL: {e}")))?;
        if parsed.password().is_some() {
            return Err(("url", "must not contain a password; the secret is the password".into()));
        }
    }
    Ok(())
}

fn validate_http(
    h: RawHttp,
    invalid: &dyn Fn(usize, String, String) -> ConfigError,
) -> Result<HttpConstraints, ConfigError> {
    if h.destinations.is_empty() {
        return Err(invalid(0, "destinations".into(), "at least one destination is required".into()));
    }
    let mut destinations = Vec::new();
    for (i, d) in h.destinations.into_iter().enumerate() {
        let pos = d.span().start;
        let d = d.into_inner();
        let f = format!("destinations[{i}]");
        let u = url::Url::parse(&d.url).map_err(|e| invalid(pos, f.clone(), format!("not a URL: {e}")))?;
        if u.scheme() != "https" && u.scheme() != "http" {
            return Err(invalid(pos, f, "scheme must be https or http".into()));
        }
        if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
            return Err(invalid(pos, f, "a destination has no user info, query or fragment".into()));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(invalid(pos, f, "a destination needs a host".into())),
        };
        let port = u.port_or_known_default().ok_or_else(|| invalid(pos, f.clone(), "no port".into()))?;
        let mut methods = Vec::new();
        for m in d.methods {
            let up = m.to_ascii_uppercase();
            if !matches!(up.as_str(), "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") {
                return Err(invalid(pos, format!("{f}.methods"), format!("unknown method '{m}'")));
            }
            methods.push(up);
        }
        destinations.push(Destination {
            scheme: u.scheme().to_owned(),
            host,
            port,
            path_prefix: u.path().to_owned(),
            methods,
        });
    }
    let ipos = h.inject.span().start;
    let inject = h.inject.into_inner();
    match &inject {
        Injection::Header { name, format } => {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid(ipos, "inject.name".into(), "not a header name".into()));
            }
            if format.matches("{}").count() != 1 {
                return Err(invalid(ipos, "inject.format".into(), "must contain exactly one {}".into()));
            }
            if format.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(invalid(ipos, "inject.format".into(), "must not contain CR or LF".into()));
            }
        }
        Injection::Basic { username } => {
            if username.contains(':') {
                return Err(invalid(ipos, "inject.username".into(), "must not contain ':'".into()));
            }
        }
        Injection::Query { param } => {
            if param.is_empty() {
                return Err(invalid(ipos, "inject.param".into(), "must not be empty".into()));
            }
        }
    }
    if h.max_response_bytes == 0 || h.timeout_ms == 0 {
        return Err(invalid(0, "max_response_bytes".into(), "limits must be at least 1".into()));
    }
    Ok(HttpConstraints {
        destinations,
        inject,
        max_response_bytes: h.max_response_bytes,
        timeout_ms: h.timeout_ms,
        max_redirects: h.max_redirects,
        allow_private_addresses: h.allow_private_addresses,
        max_request_bytes: h.max_request_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"

[handles.DB_PROD]
kind = "postgres"
secret = "env:DB_URL"
description = "orders"
[handles.DB_PROD.database]
scope = "read_only"
tables = ["orders", "public.customers"]

[handles.API]
kind = "http"
secret = "local:API"
[handles.API.http]
destinations = [{ url = "https://api.example.com/v1/", methods = ["get", "POST"] }]
inject = { type = "header", name = "X-API-Key", format = "{}" }

[agents.support-bot]
grants = [{ handle = "DB_PROD", tools = ["query_db"] }, { handle = "API", tools = ["http_request"] }]
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD, "airlock.toml", Path::new("/etc/airlock")).unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.store.data_dir, Path::new("/etc/airlock/airlock-data"));
        let api = &c.handles[&HandleName::parse("API").unwrap()];
        let h = api.http().unwrap();
        assert_eq!(h.destinations[0].host, "api.example.com");
        assert_eq!(h.destinations[0].port, 443);
        assert_eq!(h.destinations[0].path_prefix, "/v1/");
        assert_eq!(h.destinations[0].methods, vec!["GET", "POST"]);
        assert_eq!(c.agents["support-bot"].grants.len(), 2);
    }

    fn err(text: &str) -> String {
        Config::parse(text, "airlock.toml", Path::new(".")).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err(&GOOD.replace("scope = \"read_only\"", "scope = \"everything\""));
        assert!(e.starts_with("airlock.toml:10:"), "{e}");
        assert!(e.contains("everything"), "{e}");

        let e = err(&GOOD.replace("handles.API", "handles.api"));
        assert!(e.starts_with("airlock.toml:13: handles.api:"), "{e}");

        let e = err(&GOOD.replace("env:DB_URL", "vault:x"));
        assert!(e.contains("airlock.toml:7: handles.DB_PROD.secret"), "{e}");

        let e = err(&GOOD.replace("tools = [\"query_db\"]", "tools = [\"http_request\"]"));
        assert!(e.contains("agents.support-bot.grants[0]"), "{e}");
        assert!(e.contains("does not apply"), "{e}");

        let e = err(&format!("{GOOD}\n[handles.X]\nkind = \"http\"\nsecret = \"env:X\"\nbogus = 1\n"));
        assert!(e.contains("bogus"), "{e}");

        let e = err(&GOOD.replace("format = \"{}\"", "format = \"Bearer\""));
        assert!(e.contains("handles.API.http.inject.format"), "{e}");
    }

    #[test]
    fn t15_a_lease_policy_never_widens_its_handle() {
        let with = |lease: &str| format!("{GOOD}\n[handles.DB_PROD.lease]\n{lease}\n");
        let c = Config::parse(&with("dynamic = true\nmax_ttl_seconds = 600\nagent_max_ttl_seconds = { support-bot = 60 }\ntables = [\"ORDERS\"]"), "airlock.toml", Path::new(".")).unwrap();
        let lp = &c.leases[&HandleName::parse("DB_PROD").unwrap()];
        assert_eq!((lp.max_ttl_for("support-bot"), lp.max_ttl_for("other")), (60, 600));
        assert_eq!(lp.scopes, vec![Scope::ReadOnly]);
        for (lease, needle) in [
            ("scopes = [\"read_write\"]", "read_write is wider"),
            ("tables = [\"secrets\"]", "'secrets' is not among the handle's tables"),
            ("tables = [\"orders; drop\"]", "is not a table name"),
            ("max_ttl_seconds = 0", "must be at least 1"),
            ("creation_statements = [\"CREATE ROLE x\"]", "{{password}}"),
            ("agent_max_ttl_seconds = { Bad = 1 }", "not an agent name"),
            ("bogus = 1", "bogus"),
        ] {
            let e = err(&with(lease));
            assert!(e.contains("handles.DB_PROD.lease") || e.contains("bogus"), "{lease}: {e}");
            assert!(e.contains(needle), "{lease}: {e}");
        }
        let e = err(&format!("{GOOD}\n[handles.API.lease]\n"));
        assert!(e.contains("only database handles can be leased"), "{e}");
        let e = err(&format!("{GOOD}\n[handles.LITE]\nkind = \"sqlite\"\nsecret = \"env:X\"\n[handles.LITE.lease]\ndynamic = true\n"));
        assert!(e.contains("dynamic leases need a postgres or mysql handle"), "{e}");
    }

    #[test]
    fn t16_unknown_handle_in_grant_is_refused() {
        let e = err(&GOOD.replace("handle = \"DB_PROD\"", "handle = \"DB_PRO\u{041E}\""));
        assert!(e.starts_with("airlock.toml:21:") && e.contains("a handle is"), "{e}");
        let e = err(&GOOD.replace("handle = \"DB_PROD\"", "handle = \"DB_PRODX\""));
        assert!(e.contains("agents.support-bot.grants[0]: unknown handle DB_PRODX"), "{e}");
    }
}
