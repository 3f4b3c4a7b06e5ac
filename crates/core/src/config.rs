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
    /// An SMTP server account (`send_email`).
    Smtp,
    /// A program run with the secret on its stdin, in a private file or (if the handle says so)
    /// in an environment variable (`run_command`).
    Command,
    /// An AWS access key pair. Never used directly by an agent: a lease on it is a short-lived
    /// STS session (`AssumeRole` with a session policy) used with `s3_object`.
    Aws,
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
            HandleKind::Smtp => "smtp",
            HandleKind::Command => "command",
            HandleKind::Aws => "aws",
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
    /// A field of a KV v2 secret in an OpenBao or HashiCorp Vault server (`[vaults.NAME]`).
    Remote(RemoteRef),
}

/// A field of a KV v2 secret in a remote vault, written
/// `openbao:NAME/MOUNT/PATH#FIELD` or `openbao:NAME/MOUNT/PATH#FIELD@VERSION` (`vault:` is the
/// same scheme).
///
/// `NAME` is a `[vaults.NAME]` table, `MOUNT` the KV v2 engine's mount (one path segment),
/// `PATH` the secret's path under it (one or more segments), `FIELD` the key inside the secret
/// and `VERSION` a version number to pin (default: the latest). Segments are non-empty, never
/// `.` or `..`, and hold none of `# @ ? % \` nor spaces or control characters; `FIELD` holds
/// neither `#`, `@` nor `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteRef {
    /// The `[vaults.NAME]` table.
    pub vault: String,
    /// The KV v2 mount.
    pub mount: String,
    /// The secret's path under the mount.
    pub path: String,
    /// The field; `None` only where a whole secret is meant (`airlock secret import`).
    pub field: Option<String>,
    /// The pinned version.
    pub version: Option<u64>,
}

impl RemoteRef {
    /// Parses `NAME/MOUNT/PATH[#FIELD[@VERSION]]` (the part after `openbao:`). A field is
    /// required when `need_field` is set.
    pub fn parse(s: &str, need_field: bool) -> Result<RemoteRef, String> {
        let grammar = "expected openbao:NAME/MOUNT/PATH#FIELD with an optional @VERSION";
        let (loc, field) = match s.split_once('#') {
            Some((l, f)) => (l, Some(f)),
            None => (s, None),
        };
        let (field, version) = match field {
            None => (None, None),
            Some(f) => match f.split_once('@') {
                Some((f, v)) => {
                    let n: u64 = v.parse().map_err(|_| format!("version '{v}' is not a positive integer; {grammar}"))?;
                    if n == 0 {
                        return Err("versions start at 1".into());
                    }
                    (Some(f), Some(n))
                }
                None => (Some(f), None),
            },
        };
        if let Some(f) = field {
            if f.is_empty() || f.contains(['#', '@', '/']) || f.chars().any(char::is_control) {
                return Err(format!("the field is empty or holds '#', '@', '/' or a control character; {grammar}"));
            }
        } else if need_field {
            return Err(format!("the field is missing; {grammar}"));
        }
        let segs: Vec<&str> = loc.split('/').collect();
        if segs.len() < 3 {
            return Err(format!("a vault name, a mount and a path are needed; {grammar}"));
        }
        for seg in &segs {
            if seg.is_empty()
                || *seg == "."
                || *seg == ".."
                || seg.chars().any(|c| c.is_control() || c.is_whitespace() || "#@?%\\".contains(c))
            {
                return Err(format!("'{seg}' is not a valid path segment; {grammar}"));
            }
        }
        if !valid_vault_name(segs[0]) {
            return Err(format!("'{}' is not a vault name (a-z, 0-9, '-', '_')", segs[0]));
        }
        Ok(RemoteRef {
            vault: segs[0].to_owned(),
            mount: segs[1].to_owned(),
            path: segs[2..].join("/"),
            field: field.map(str::to_owned),
            version,
        })
    }
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "openbao:{}/{}/{}", self.vault, self.mount, self.path)?;
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        if let Some(v) = self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

/// Vault names: `[a-z][a-z0-9_-]{0,63}`, as agent names.
pub fn valid_vault_name(s: &str) -> bool {
    valid_agent_name(s)
}

/// Which remote vault server a `[vaults.NAME]` table talks to. Both speak the same API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteVaultKind {
    /// OpenBao.
    Openbao,
    /// HashiCorp Vault.
    Vault,
}

/// How airlock logs in to a remote vault. The credential itself is never in the configuration
/// text: it is an `env:` or `file:` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteAuth {
    /// A token, renewed by airlock while it is renewable.
    Token {
        /// Where the token is.
        token: SecretRef,
    },
    /// AppRole: airlock logs in, renews its token and logs in again when renewal fails.
    AppRole {
        /// The role id (not secret in itself, but kept out of the text all the same).
        role_id: SecretRef,
        /// The secret id.
        secret_id: SecretRef,
        /// The AppRole mount (default `approle`).
        mount: String,
    },
}

/// A validated `[vaults.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteVaultConfig {
    /// Its name.
    pub name: String,
    /// OpenBao or HashiCorp Vault.
    pub kind: RemoteVaultKind,
    /// The server's base URL, `https://host:port` (`http` only for a loopback address).
    pub addr: String,
    /// A PEM CA certificate to trust for `addr` (besides the system roots).
    pub ca_cert: Option<PathBuf>,
    /// The namespace (`X-Vault-Namespace`), if any.
    pub namespace: Option<String>,
    /// How airlock logs in.
    pub auth: RemoteAuth,
    /// How long a value read is reused before it is read again (0: never cached).
    pub cache_ttl_seconds: u64,
    /// Per-request timeout.
    pub timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    kind: RemoteVaultKind,
    addr: String,
    #[serde(default)]
    ca_cert: Option<PathBuf>,
    #[serde(default)]
    namespace: Option<String>,
    auth: RawRemoteAuth,
    #[serde(default = "default_remote_cache_ttl")]
    cache_ttl_seconds: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
enum RawRemoteAuth {
    Token {
        token: String,
    },
    Approle {
        role_id: String,
        secret_id: String,
        #[serde(default)]
        mount: Option<String>,
    },
}

fn default_remote_cache_ttl() -> u64 {
    30
}

fn validate_vault(name: &str, v: RawVault, base: &Path) -> Result<RemoteVaultConfig, (&'static str, String)> {
    if !valid_vault_name(name) {
        return Err(("", "a vault name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter".into()));
    }
    let u = url::Url::parse(&v.addr).map_err(|e| ("addr", format!("not a URL: {e}")))?;
    let host_loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match u.scheme() {
        "https" => {}
        "http" if host_loopback => {}
        "http" => return Err(("addr", "http is allowed only for a loopback address; use https".into())),
        s => return Err(("addr", format!("scheme {s} is not https"))),
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err(("addr", "give only scheme, host and port (no path, query or credentials)".into()));
    }
    if v.timeout_ms == 0 {
        return Err(("timeout_ms", "must be at least 1".into()));
    }
    let cred = |f: &'static str, s: &str| -> Result<SecretRef, (&'static str, String)> {
        match SecretRef::parse(s, base) {
            Ok(r @ (SecretRef::Env(_) | SecretRef::File(_))) => Ok(r),
            Ok(_) => Err((f, "give env:VAR or file:PATH (the credential never goes in the configuration)".into())),
            Err(m) => Err((f, m)),
        }
    };
    let auth = match v.auth {
        RawRemoteAuth::Token { token } => RemoteAuth::Token { token: cred("auth.token", &token)? },
        RawRemoteAuth::Approle { role_id, secret_id, mount } => {
            let mount = mount.unwrap_or_else(|| "approle".into());
            if mount.is_empty() || mount.contains(['/', '?', '#', '%']) {
                return Err(("auth.mount", "one path segment".into()));
            }
            RemoteAuth::AppRole { role_id: cred("auth.role_id", &role_id)?, secret_id: cred("auth.secret_id", &secret_id)?, mount }
        }
    };
    Ok(RemoteVaultConfig {
        name: name.to_owned(),
        kind: v.kind,
        addr: v.addr.trim_end_matches('/').to_owned(),
        ca_cert: v.ca_cert.map(|p| base.join(p)),
        namespace: v.namespace.filter(|n| !n.is_empty()),
        auth,
        cache_ttl_seconds: v.cache_ttl_seconds,
        timeout_ms: v.timeout_ms,
    })
}

impl SecretRef {
    /// Parses `local:NAME`, `env:VAR`, `file:/path` (relative paths are relative to `base`) or
    /// `openbao:NAME/MOUNT/PATH#FIELD[@VERSION]` (also spelt `vault:`, see [`RemoteRef`]).
    pub fn parse(s: &str, base: &Path) -> Result<SecretRef, String> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| "expected local:NAME, env:VAR, file:PATH or openbao:NAME/MOUNT/PATH#FIELD".to_owned())?;
        if rest.is_empty() {
            return Err("the reference after the scheme is empty".into());
        }
        match scheme {
            "local" => Ok(SecretRef::Local(rest.to_owned())),
            "env" => Ok(SecretRef::Env(rest.to_owned())),
            "file" => Ok(SecretRef::File(base.join(rest))),
            "openbao" | "vault" => Ok(SecretRef::Remote(RemoteRef::parse(rest, true)?)),
            _ => Err(format!("unknown secret backend '{scheme}' (expected local, env, file, openbao or vault)")),
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

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required; port 587 by default).
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No TLS at all. Accepted only for a loopback host (tests, a local relay): the password
    /// would otherwise cross the network in clear.
    None,
}

/// Constraints of an `smtp` handle. None of them comes from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpConstraints {
    /// The server's host name (also the TLS server name).
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The AUTH user name; the secret is the password.
    pub username: String,
    /// The sender address (`From` and the envelope sender); never chosen by the agent.
    pub from: String,
    /// Allowed recipients: exact addresses (compared case-insensitively) or `@domain` (that
    /// domain exactly, not its subdomains).
    pub allowed_recipients: Vec<String>,
    /// Sends per minute through this handle, all agents together.
    pub sends_per_minute: u32,
    /// Whole-send timeout.
    pub timeout_ms: u64,
    /// Largest subject plus body the agent may send.
    pub max_body_bytes: usize,
}

/// How a command receives its secret. Never through argv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretDelivery {
    /// Written to the child's stdin, which is then closed (the default).
    Stdin,
    /// A private temporary file (mode 0400 in a 0700 directory, removed afterwards) whose path is
    /// in the environment variable `secret_env` and available as the `{secret_file}` argument.
    File,
    /// The environment variable `secret_env`. Only when the handle says so: a child can print
    /// its environment.
    Env,
}

/// What an agent-supplied argument may be.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    /// A regular expression the whole value must match (anchored by airlock; linear time).
    #[serde(default)]
    pub regex: Option<String>,
    /// The values allowed, exactly.
    #[serde(default, rename = "enum")]
    pub one_of: Option<Vec<String>>,
    /// Largest value in bytes.
    #[serde(default = "default_max_arg_bytes")]
    pub max_bytes: usize,
}

/// One element of a command's argument template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgTemplate {
    /// A fixed argument.
    Fixed(String),
    /// `{name}`: the agent's value for the placeholder `name`.
    Placeholder(String),
    /// `{secret_file}`: the path of the private secret file (not the secret).
    SecretFile,
}

/// Constraints of a `command` handle. None of them comes from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandConstraints {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// The argument template: fixed strings and whole-argument placeholders.
    pub args: Vec<ArgTemplate>,
    /// The placeholders the agent fills, by name.
    pub placeholders: BTreeMap<String, Placeholder>,
    /// How the secret reaches the child.
    pub secret_via: SecretDelivery,
    /// The variable that holds the secret (`env`) or the secret file's path (`file`).
    pub secret_env: String,
    /// Extra environment variables (besides a minimal `PATH` and `LANG`).
    pub env: BTreeMap<String, String>,
    /// Let the child use the network. Off by default: the child runs in an empty network
    /// namespace (T09).
    pub network: bool,
    /// Wall-clock limit; the whole process group is killed when it passes.
    pub timeout_ms: u64,
    /// Bytes kept of stdout and of stderr each; more is cut and the result says `truncated`.
    pub max_output_bytes: usize,
    /// Working directory (default `/`).
    pub workdir: PathBuf,
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
    /// For smtp handles.
    Smtp(SmtpConstraints),
    /// For command handles.
    Command(CommandConstraints),
    /// For aws handles.
    Aws(AwsConstraints),
}

/// Constraints of an `aws` handle: what its leases may grant. None of them comes from the agent.
///
/// The handle's secret is the broker's own access key pair, as JSON:
/// `{"access_key_id": "...", "secret_access_key": "..."}` (plus `"session_token"` when the
/// broker itself runs on temporary credentials). Agents never use it: each lease calls STS
/// `AssumeRole` for `role_arn` with a session policy naming only the lease's buckets and
/// actions, and the agent uses the temporary credentials through `s3_object` on the lease
/// handle. STS credentials cannot be revoked early: a lease's duration is its exposure bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsConstraints {
    /// The region requests are signed for (`us-east-1`).
    pub region: String,
    /// An endpoint for STS and S3 (scheme, host and port; for an emulator or a private
    /// endpoint), used path-style. `None`: `https://sts.{region}.amazonaws.com` and
    /// `https://s3.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// The role every lease assumes.
    pub role_arn: String,
    /// The buckets a lease may name.
    pub buckets: Vec<String>,
    /// The scopes a lease may take: `read_only` (GetObject, ListBucket) and `read_write`
    /// (also PutObject, DeleteObject). Default `read_only` only.
    pub scopes: Vec<Scope>,
    /// Longest lease, in seconds: 900 (STS's minimum, the default) to 43200.
    pub max_ttl_seconds: u64,
    /// Largest object read or written through `s3_object`, in bytes.
    pub max_object_bytes: usize,
    /// Most keys a `list` returns.
    pub max_keys: usize,
    /// Whole-request timeout for STS and S3.
    pub timeout_ms: u64,
}

/// The shortest session STS grants, and so the shortest aws lease.
pub const AWS_MIN_TTL_SECONDS: u64 = 900;
/// The longest session STS grants for a role.
pub const AWS_MAX_TTL_SECONDS: u64 = 43_200;

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

    /// The SMTP constraints, if this is an SMTP handle.
    pub fn smtp(&self) -> Option<&SmtpConstraints> {
        match &self.constraints {
            Constraints::Smtp(s) => Some(s),
            _ => None,
        }
    }

    /// The command constraints, if this is a command handle.
    pub fn command(&self) -> Option<&CommandConstraints> {
        match &self.constraints {
            Constraints::Command(c) => Some(c),
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

    /// The AWS constraints, if this is an aws handle (or a lease of one).
    pub fn aws(&self) -> Option<&AwsConstraints> {
        match &self.constraints {
            Constraints::Aws(a) => Some(a),
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

impl LeasePolicy {
    /// The longest TTL `agent` may ask for.
    pub fn max_ttl_for(&self, agent: &str) -> u64 {
        self.agent_max_ttl_seconds.get(agent).copied().unwrap_or(self.max_ttl_seconds).min(self.max_ttl_seconds)
    }
}

/// `[handles.X.approval]`: which calls on the handle wait for a person's approval, and for how
/// long an approval stays valid. A call matching any condition is held (`approval-required`)
/// until an approver approves that exact call (README, "Approvals").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Every call on the handle.
    #[serde(default)]
    pub always: bool,
    /// Calls that change data: a `query_db` statement that is not read-only (INSERT, UPDATE,
    /// DELETE, MERGE), an `http_request` whose method is not GET, HEAD or OPTIONS. Database and
    /// http handles only.
    #[serde(default)]
    pub writes: bool,
    /// `send_email` to any recipient (to or cc) outside this list: exact addresses or
    /// `@domain`. Smtp handles only.
    #[serde(default)]
    pub recipients_outside: Option<Vec<String>>,
    /// `request_lease` asking for more than this many seconds. Leasable database handles only.
    #[serde(default)]
    pub lease_ttl_over_seconds: Option<u64>,
    /// How long a request, and then an approval, stays valid (default 900 s; 2 s to 1 day).
    #[serde(default = "default_approval_expiry")]
    pub expires_in_seconds: u64,
    /// Hold the call up to this many seconds for the decision instead of answering
    /// `approval-required` at once (default 0; at most 300 and at most the expiry).
    #[serde(default)]
    pub wait_seconds: u64,
    /// POST a notice (approval id, page link, agent, tool, handle, expiry; never the arguments)
    /// to this http(s) URL when a request is made.
    #[serde(default)]
    pub webhook: Option<String>,
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
    /// E-mails per minute, over all smtp handles; overrides `limits.sends_per_minute`.
    #[serde(default)]
    pub sends_per_minute: Option<u32>,
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
    /// The Unix domain socket agents' thin clients (`airlock mcp`, `airlock call`) connect to.
    /// Default: [`default_socket_path`]. `"off"` serves no socket. Relative to the config.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The group that owns the socket (mode [`ServerConfig::socket_mode`]), so that only the
    /// agents' users can connect. Default: the broker's own group.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// The socket's permission bits, `0o660` by default; never more than `0o770` (the socket is
    /// never open to others).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    /// The OS users agents run as. `airlock doctor` checks that the broker is none of them.
    #[serde(default)]
    pub agent_users: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            socket: None,
            socket_group: None,
            socket_mode: default_socket_mode(),
            agent_users: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The socket to serve, or `None` when `socket = "off"`.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.socket {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) => Some(p.clone()),
            None => Some(default_socket_path()),
        }
    }
}

fn default_socket_mode() -> u32 {
    0o660
}

/// Where the broker's socket is when nothing says otherwise, and so where thin clients look
/// first: `$XDG_RUNTIME_DIR/airlock/airlock.sock` when that is set, else
/// `/run/airlock/airlock.sock` (systemd's `RuntimeDirectory=airlock`). A runtime directory, never
/// the data directory, so that agents' users never need a path into the broker's files.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("airlock").join("airlock.sock"),
        None => PathBuf::from("/run/airlock/airlock.sock"),
    }
}

/// `[store]`
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (SQLite store, master key, audit signing key). Relative to the config.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:5432/db`) holding the state instead of
    /// `store.db`, shared by every replica; the key files stay in `data_dir`. Keep the password
    /// out of the URL (`PGPASSWORD` or `~/.pgpass`).
    #[serde(default)]
    pub url: Option<String>,
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
        StoreConfig { data_dir: default_data_dir(), url: None, sync: SyncMode::Full }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show its host and database only.
        let url = self.url.as_deref().map(|u| match url::Url::parse(u) {
            Ok(p) => format!("{}://{}{}", p.scheme(), p.host_str().unwrap_or(""), p.path()),
            Err(_) => "[invalid]".into(),
        });
        f.debug_struct("StoreConfig").field("data_dir", &self.data_dir).field("url", &url).field("sync", &self.sync).finish()
    }
}

/// Checks `store.url`: a `postgres://` or `postgresql://` URL naming a host and a database.
pub fn validate_store_url(u: &str) -> Result<(), String> {
    let p = url::Url::parse(u).map_err(|_| "is not a URL (postgres://user@host:5432/database)".to_owned())?;
    if !matches!(p.scheme(), "postgres" | "postgresql") {
        return Err(format!("scheme {:?} is not supported: only postgres:// (the default store is the SQLite file in data_dir)", p.scheme()));
    }
    if p.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if p.path().trim_start_matches('/').is_empty() {
        return Err("names no database".into());
    }
    Ok(())
}

/// `[sandbox]`: how `run_command` children are confined (T23). Every call runs in a fresh
/// bubblewrap sandbox whose second stage is this same `airlock` binary; when that sandbox cannot
/// be built, calls are refused (`sandbox-unavailable`) unless `insecure_no_sandbox` says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The bubblewrap binary; default `/usr/bin/bwrap`.
    #[serde(default = "SandboxConfig::default_bwrap")]
    pub bwrap: PathBuf,
    /// The `airlock` binary run as the sandbox's second stage (it applies landlock, seccomp and
    /// rlimits, then runs the program). Default: the running executable. Relative to the config.
    #[serde(default)]
    pub stage2: Option<PathBuf>,
    /// Run commands without any sandbox. Only for hosts where user namespaces cannot be had and
    /// the commands are trusted; logged loudly at start-up and on every call.
    #[serde(default)]
    pub insecure_no_sandbox: bool,
    /// Size of each call's private `/tmp` (and `/dev/shm`), in MiB; default 64.
    #[serde(default = "SandboxConfig::default_tmp_size_mb")]
    pub tmp_size_mb: u64,
    /// Address space of each process of a call, in MiB (`RLIMIT_AS`); default 2048.
    #[serde(default = "SandboxConfig::default_memory_mb")]
    pub memory_mb: u64,
    /// Processes (and threads) a call may run at once (`RLIMIT_NPROC`); default 128.
    #[serde(default = "SandboxConfig::default_max_processes")]
    pub max_processes: u64,
}

impl SandboxConfig {
    fn default_bwrap() -> PathBuf {
        PathBuf::from("/usr/bin/bwrap")
    }
    fn default_tmp_size_mb() -> u64 {
        64
    }
    fn default_memory_mb() -> u64 {
        2048
    }
    fn default_max_processes() -> u64 {
        128
    }

    /// Checks the values and makes `stage2` absolute; errors name the field.
    fn validated(mut self, base: &Path) -> Result<SandboxConfig, (&'static str, String)> {
        if !self.bwrap.is_absolute() {
            return Err(("bwrap", "must be an absolute path".into()));
        }
        self.stage2 = self.stage2.map(|p| base.join(p));
        if !(1..=65536).contains(&self.tmp_size_mb) {
            return Err(("tmp_size_mb", "must be 1 to 65536".into()));
        }
        if !(16..=1 << 20).contains(&self.memory_mb) {
            return Err(("memory_mb", "must be 16 to 1048576".into()));
        }
        if !(1..=65536).contains(&self.max_processes) {
            return Err(("max_processes", "must be 1 to 65536".into()));
        }
        Ok(self)
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: SandboxConfig::default_bwrap(),
            stage2: None,
            insecure_no_sandbox: false,
            tmp_size_mb: SandboxConfig::default_tmp_size_mb(),
            memory_mb: SandboxConfig::default_memory_mb(),
            max_processes: SandboxConfig::default_max_processes(),
        }
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
    /// E-mails per minute per agent (`send_email`), over all smtp handles.
    #[serde(default = "default_sends_per_minute")]
    pub sends_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_minute: default_rate(),
            max_request_bytes: default_max_request_bytes(),
            sends_per_minute: default_sends_per_minute(),
        }
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

/// `[shares]`: one-time links.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharesConfig {
    /// Largest secret a share may hold, in bytes of plaintext (default 1 MiB).
    #[serde(default = "default_max_share_bytes")]
    pub max_plaintext_bytes: usize,
    /// Most views a share may allow.
    #[serde(default = "default_max_views")]
    pub max_views: u32,
    /// Longest expiry, in seconds (default 7 days).
    #[serde(default = "default_max_expiry")]
    pub max_expiry_seconds: u64,
    /// Shares created per minute per client address (token bucket).
    #[serde(default = "default_share_create_rate")]
    pub create_per_minute: u32,
    /// Failed consumes (wrong proof, unknown, used or expired id) per minute per client address.
    #[serde(default = "default_share_fail_rate")]
    pub failed_consumes_per_minute: u32,
    /// The public base of links the broker makes for `share_secret`, for example
    /// `https://airlock.example`; default `http://{server.listen}`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Delivery channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, ShareChannelConfig>,
    /// Recipients an agent may name in `share_secret`, each with the channel that reaches it.
    /// Exact match; anyone else is refused.
    #[serde(default)]
    pub recipients: BTreeMap<String, String>,
}

impl Default for SharesConfig {
    fn default() -> Self {
        SharesConfig {
            max_plaintext_bytes: default_max_share_bytes(),
            max_views: default_max_views(),
            max_expiry_seconds: default_max_expiry(),
            create_per_minute: default_share_create_rate(),
            failed_consumes_per_minute: default_share_fail_rate(),
            base_url: None,
            channels: BTreeMap::new(),
            recipients: BTreeMap::new(),
        }
    }
}

/// How a link made by `share_secret` reaches its recipient. More kinds (SMTP through a handle)
/// fit here later.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShareChannelConfig {
    /// POST `{recipient, link, share_id, expires_at, views}` as JSON to this URL.
    Webhook {
        /// The endpoint (http or https).
        url: String,
    },
    /// Append the same JSON as one line to this file (created with mode 0600). Relative to the
    /// configuration.
    Outbox {
        /// The file.
        path: PathBuf,
    },
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
    /// `[sandbox]`, with `stage2` made absolute.
    pub sandbox: SandboxConfig,
    /// `[policy]`, with file paths made absolute.
    pub policy: PolicyConfig,
    /// `[shares]`, with outbox paths made absolute.
    pub shares: SharesConfig,
    /// Handles by name.
    pub handles: BTreeMap<HandleName, Handle>,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentConfig>,
    /// Lease policies of the handles that have one (`[handles.X.lease]`).
    pub leases: BTreeMap<HandleName, LeasePolicy>,
    /// Approval rules of the handles that have one (`[handles.X.approval]`).
    pub approvals: BTreeMap<HandleName, ApprovalRule>,
    /// Result policies of the handles that set one (`[handles.X.results]`); every other handle
    /// gets [`ResultsPolicy::default`].
    pub results: BTreeMap<HandleName, ResultsPolicy>,
    /// Remote vaults by name (`[vaults.NAME]`).
    pub vaults: BTreeMap<String, RemoteVaultConfig>,
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
    sandbox: SandboxConfig,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    shares: SharesConfig,
    #[serde(default)]
    handles: BTreeMap<Spanned<String>, Spanned<RawHandle>>,
    #[serde(default)]
    agents: BTreeMap<Spanned<String>, Spanned<AgentConfig>>,
    #[serde(default)]
    vaults: BTreeMap<Spanned<String>, Spanned<RawVault>>,
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
    smtp: Option<Spanned<RawSmtp>>,
    #[serde(default)]
    command: Option<Spanned<RawCommand>>,
    #[serde(default)]
    lease: Option<Spanned<LeasePolicy>>,
    #[serde(default)]
    approval: Option<Spanned<ApprovalRule>>,
    aws: Option<Spanned<RawAws>>,
    #[serde(default)]
    results: Option<ResultsPolicy>,
}

/// `[handles.X.results]`: what happens to a handle's results besides scrubbing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsPolicy {
    /// Active markup (Markdown images and links, HTML that fetches or navigates) pointing
    /// anywhere but the handle's own destinations (T11).
    #[serde(default)]
    pub markup: MarkupPolicy,
}

/// What to do with active markup in a handle's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkupPolicy {
    /// Defang it (readable, neither clickable nor fetchable) and say so in the result.
    #[default]
    Neutralize,
    /// Leave it and say in the result that it is there.
    Flag,
    /// Nothing: for handles whose data is trusted.
    Off,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    role_arn: String,
    buckets: Vec<String>,
    #[serde(default = "default_lease_scopes")]
    scopes: Vec<Scope>,
    #[serde(default = "default_aws_ttl")]
    max_ttl_seconds: u64,
    #[serde(default = "default_max_bytes")]
    max_object_bytes: usize,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    #[serde(default = "default_http_timeout_ms")]
    timeout_ms: u64,
}

fn default_aws_ttl() -> u64 {
    AWS_MIN_TTL_SECONDS
}
fn default_max_keys() -> usize {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default = "default_smtp_tls")]
    tls: SmtpTls,
    username: String,
    from: String,
    allowed_recipients: Vec<String>,
    #[serde(default = "default_sends_per_minute")]
    sends_per_minute: u32,
    #[serde(default = "default_http_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_bytes")]
    max_body_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    placeholders: BTreeMap<String, Placeholder>,
    #[serde(default = "default_secret_via")]
    secret_via: SecretDelivery,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    network: bool,
    #[serde(default = "default_command_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_output_bytes")]
    max_output_bytes: usize,
    #[serde(default)]
    workdir: Option<PathBuf>,
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

fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}
fn default_sends_per_minute() -> u32 {
    10
}
fn default_secret_via() -> SecretDelivery {
    SecretDelivery::Stdin
}
fn default_command_timeout_ms() -> u64 {
    30_000
}
fn default_max_output_bytes() -> usize {
    64 * 1024
}
fn default_max_arg_bytes() -> usize {
    4096
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
fn default_max_share_bytes() -> usize {
    1 << 20
}
fn default_max_views() -> u32 {
    100
}
fn default_max_expiry() -> u64 {
    7 * 86_400
}
fn default_share_create_rate() -> u32 {
    60
}
fn default_share_fail_rate() -> u32 {
    30
}
fn default_approval_expiry() -> u64 {
    900
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

        let mut vaults = BTreeMap::new();
        for (name, rv) in raw.vaults {
            let name = name.into_inner();
            let p = rv.span().start;
            let v = validate_vault(&name, rv.into_inner(), base).map_err(|(f, m)| {
                invalid(p, if f.is_empty() { format!("vaults.{name}") } else { format!("vaults.{name}.{f}") }, m)
            })?;
            vaults.insert(name, v);
        }
        let mut handles = BTreeMap::new();
        let mut leases = BTreeMap::new();
        let mut approvals = BTreeMap::new();
        let mut results = BTreeMap::new();
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
            if let SecretRef::Remote(r) = &secret {
                if !vaults.contains_key(&r.vault) {
                    return Err(invalid(rh.secret.span().start, field("secret"), format!("no [vaults.{}] is defined", r.vault)));
                }
            }
            // Each kind takes its own table of constraints and no other.
            let own = match rh.kind {
                HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite => "database",
                HandleKind::Http => "http",
                HandleKind::Smtp => "smtp",
                HandleKind::Command => "command",
                HandleKind::Aws => "aws",
                HandleKind::Generic => "",
            };
            let present = [
                ("database", rh.database.as_ref().map(|d| d.span().start)),
                ("http", rh.http.as_ref().map(|d| d.span().start)),
                ("smtp", rh.smtp.as_ref().map(|d| d.span().start)),
                ("command", rh.command.as_ref().map(|d| d.span().start)),
                ("aws", rh.aws.as_ref().map(|d| d.span().start)),
            ];
            for (table, at) in present {
                if let Some(p) = at {
                    if table != own {
                        let msg = if own.is_empty() {
                            "generic handles take no constraints".to_owned()
                        } else {
                            format!("a {} handle takes [{own}] constraints, not [{table}]", rh.kind.as_str())
                        };
                        return Err(invalid(p, field(table), msg));
                    }
                }
            }
            let constraints = match rh.kind {
                HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite => {
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
                    let http = rh.http.ok_or_else(|| {
                        invalid(hpos, field("http"), "an http handle needs [http] destinations and inject".into())
                    })?;
                    Constraints::Http(validate_http(http.into_inner(), &|p, f, m| invalid(p, field(&format!("http.{f}")), m))?)
                }
                HandleKind::Smtp => {
                    let smtp = rh.smtp.ok_or_else(|| {
                        invalid(hpos, field("smtp"), "an smtp handle needs [smtp] host, username, from and allowed_recipients".into())
                    })?;
                    let p = smtp.span().start;
                    Constraints::Smtp(validate_smtp(smtp.into_inner()).map_err(|(f, m)| invalid(p, field(&format!("smtp.{f}")), m))?)
                }
                HandleKind::Command => {
                    let cmd = rh.command.ok_or_else(|| {
                        invalid(hpos, field("command"), "a command handle needs [command] program".into())
                    })?;
                    let p = cmd.span().start;
                    Constraints::Command(
                        validate_command(cmd.into_inner()).map_err(|(f, m)| invalid(p, field(&format!("command.{f}")), m))?,
                    )
                }
                HandleKind::Aws => {
                    let aws = rh.aws.ok_or_else(|| {
                        invalid(hpos, field("aws"), "an aws handle needs [aws] region, role_arn and buckets".into())
                    })?;
                    let p = aws.span().start;
                    if hname.as_str().len() + LEASE_SUFFIX_LEN > 64 {
                        return Err(invalid(hpos, format!("handles.{hname}"), "an aws handle's name is at most 55 characters (its leases add 9)".into()));
                    }
                    Constraints::Aws(validate_aws(aws.into_inner()).map_err(|(f, m)| invalid(p, field(&format!("aws.{f}")), m))?)
                }
                HandleKind::Generic => Constraints::None,
            };
            if let Some(lp) = rh.lease {
                let p = lp.span().start;
                let lp = lp.into_inner();
                validate_lease(&hname, rh.kind, &constraints, &lp).map_err(|(f, m)| invalid(p, field(&format!("lease.{f}")), m))?;
                if lp.provider == LeaseProvider::Openbao {
                    validate_openbao_lease(rh.kind, &constraints, &lp, &vaults)
                        .map_err(|(f, m)| invalid(p, field(&format!("lease.{f}")), m))?;
                } else if lp.vault.is_some() || lp.mount.is_some() || lp.role.is_some() {
                    return Err(invalid(p, field("lease.provider"), "vault, mount and role go with provider = \"openbao\"".into()));
                }
                leases.insert(hname.clone(), lp);
            }
            if let Some(ar) = rh.approval {
                let p = ar.span().start;
                let ar = ar.into_inner();
                validate_approval(rh.kind, leases.contains_key(&hname), &ar)
                    .map_err(|(f, m)| {
                        let f = if f.is_empty() { "approval".to_owned() } else { format!("approval.{f}") };
                        invalid(p, field(&f), m)
                    })?;
                approvals.insert(hname.clone(), ar);
            }
            if let Some(r) = rh.results {
                results.insert(hname.clone(), r);
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
                    if *t == Tool::S3Object {
                        return Err(invalid(
                            apos,
                            f,
                            format!("s3_object is used on leases of an aws handle, never on the handle itself: grant request_lease on {}", g.handle),
                        ));
                    }
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
        if raw.limits.sends_per_minute == 0 {
            return Err(invalid(0, "limits.sends_per_minute".into(), "must be at least 1".into()));
        }
        if let Some(u) = &raw.store.url {
            validate_store_url(u).map_err(|m| invalid(0, "store.url".into(), m))?;
        }
        let mut server = raw.server;
        if server.socket_mode & !0o770 != 0 || server.socket_mode & 0o600 != 0o600 {
            return Err(invalid(
                0,
                "server.socket_mode".into(),
                format!("{:#o}: the owner needs read and write, and others may have nothing (at most 0o770)", server.socket_mode),
            ));
        }
        server.socket = server.socket.map(|p| if p.as_os_str() == "off" { p } else { base.join(p) });
        let store = StoreConfig { data_dir: base.join(raw.store.data_dir), url: raw.store.url, sync: raw.store.sync };
        let policy = PolicyConfig { files: raw.policy.files.iter().map(|f| base.join(f)).collect() };
        let sandbox = raw.sandbox.validated(base).map_err(|(f, m)| invalid(0, format!("sandbox.{f}"), m))?;
        let shares = validate_shares(raw.shares, base).map_err(|(f, m)| invalid(0, format!("shares.{f}"), m))?;
        Ok(Config {
            source: file.to_owned(),
            server,
            store,
            limits: raw.limits,
            sandbox,
            policy,
            shares,
            handles,
            agents,
            leases,
            approvals,
            results,
            vaults,
        })
    }
}

fn validate_approval(kind: HandleKind, leasable: bool, r: &ApprovalRule) -> Result<(), (&'static str, String)> {
    if !r.always && !r.writes && r.recipients_outside.is_none() && r.lease_ttl_over_seconds.is_none() {
        return Err(("", "name at least one condition: always, writes, recipients_outside or lease_ttl_over_seconds".into()));
    }
    if r.writes && !(kind.is_database() || kind == HandleKind::Http) {
        return Err(("writes", "applies to database and http handles only".into()));
    }
    if let Some(list) = &r.recipients_outside {
        if kind != HandleKind::Smtp {
            return Err(("recipients_outside", "applies to smtp handles only".into()));
        }
        if let Some(bad) = list.iter().find(|a| match a.strip_prefix('@') {
            Some(d) => d.is_empty() || d.contains('@') || d.chars().any(char::is_whitespace),
            None => !plausible_address(a),
        }) {
            return Err(("recipients_outside", format!("'{bad}' is neither an address nor @domain")));
        }
    }
    if r.lease_ttl_over_seconds.is_some() && !leasable {
        return Err(("lease_ttl_over_seconds", "the handle has no [lease] policy".into()));
    }
    if !(2..=86_400).contains(&r.expires_in_seconds) {
        return Err(("expires_in_seconds", "is 2 to 86400".into()));
    }
    if r.wait_seconds > 300 || r.wait_seconds > r.expires_in_seconds {
        return Err(("wait_seconds", "is at most 300 and at most expires_in_seconds".into()));
    }
    if let Some(w) = &r.webhook {
        match url::Url::parse(w) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(("webhook", "must be an http or https URL".into())),
        }
    }
    Ok(())
}

impl ApprovalRule {
    /// Whether `addr` is outside `recipients_outside` (case-insensitive; `@domain` entries
    /// match the whole domain).
    pub fn recipient_outside(&self, addr: &str) -> bool {
        let Some(list) = &self.recipients_outside else { return false };
        let addr = addr.to_ascii_lowercase();
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        !list.iter().any(|a| match a.strip_prefix('@') {
            Some(d) => d.eq_ignore_ascii_case(domain),
            None => a.eq_ignore_ascii_case(&addr),
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

fn validate_shares(mut s: SharesConfig, base: &Path) -> Result<SharesConfig, (String, String)> {
    if s.max_plaintext_bytes == 0 || s.max_plaintext_bytes > 64 << 20 {
        return Err(("max_plaintext_bytes".into(), "must be between 1 and 67108864".into()));
    }
    if s.max_views == 0 || s.max_expiry_seconds < 60 || s.create_per_minute == 0 || s.failed_consumes_per_minute == 0 {
        return Err(("limits".into(), "max_views, create_per_minute and failed_consumes_per_minute must be at least 1, max_expiry_seconds at least 60".into()));
    }
    if let Some(b) = &s.base_url {
        let u = url::Url::parse(b).map_err(|e| ("base_url".to_owned(), format!("not a URL: {e}")))?;
        if u.scheme() != "https" && u.scheme() != "http" || u.fragment().is_some() || u.query().is_some() {
            return Err(("base_url".into(), "an http(s) URL without query or fragment".into()));
        }
    }
    for (name, ch) in s.channels.iter_mut() {
        match ch {
            ShareChannelConfig::Webhook { url } => {
                let u = url::Url::parse(url).map_err(|e| (format!("channels.{name}.url"), format!("not a URL: {e}")))?;
                if u.scheme() != "https" && u.scheme() != "http" {
                    return Err((format!("channels.{name}.url"), "scheme must be https or http".into()));
                }
            }
            ShareChannelConfig::Outbox { path } => *path = base.join(&*path),
        }
    }
    for (r, ch) in &s.recipients {
        if r.is_empty() || r.len() > 254 || r.chars().any(|c| c.is_control()) {
            return Err((format!("recipients.{r}"), "a recipient is 1 to 254 printable characters".into()));
        }
        if !s.channels.contains_key(ch) {
            return Err((format!("recipients.{r}"), format!("unknown channel {ch}")));
        }
    }
    Ok(s)
}

/// The suffix a lease adds to its base handle's name: `__L` and six hex digits.
pub const LEASE_SUFFIX_LEN: usize = 9;

/// The entry of `allowed` that `table` names, compared case-insensitively as SQL identifiers
/// are. The config's spelling is returned, so agent text never reaches a statement.
pub fn table_in(table: &str, allowed: &[String]) -> Option<String> {
    allowed.iter().find(|a| a.eq_ignore_ascii_case(table)).cloned()
}

fn validate_openbao_lease(
    kind: HandleKind,
    constraints: &Constraints,
    lp: &LeasePolicy,
    vaults: &BTreeMap<String, RemoteVaultConfig>,
) -> Result<(), (&'static str, String)> {
    if !matches!(kind, HandleKind::Postgres | HandleKind::Mysql) {
        return Err(("provider", "OpenBao database credentials need a postgres or mysql handle".into()));
    }
    if lp.dynamic || lp.creation_statements.is_some() || lp.revocation_statements.is_some() {
        return Err(("provider", "with provider = \"openbao\" the role is OpenBao's: leave dynamic and the statements out".into()));
    }
    let Constraints::Database(db) = constraints else { return Err(("", "only database handles can be leased".into())) };
    if db.url.is_none() {
        return Err(("provider", "the handle needs database.url (host and database); OpenBao gives the user and password".into()));
    }
    match &lp.vault {
        None => return Err(("vault", "name the [vaults.NAME] that issues the credentials".into())),
        Some(v) if !vaults.contains_key(v) => return Err(("vault", format!("no [vaults.{v}] is defined"))),
        Some(_) => {}
    }
    let seg_ok = |s: &str| !s.is_empty() && !s.contains(['/', '?', '#', '%']) && !s.chars().any(|c| c.is_control() || c.is_whitespace());
    if !lp.mount.as_deref().map(seg_ok).unwrap_or(true) {
        return Err(("mount", "one path segment".into()));
    }
    match &lp.role {
        Some(r) if seg_ok(r) => Ok(()),
        _ => Err(("role", "name the database engine's role (one path segment)".into())),
    }
}

fn validate_lease(
    name: &HandleName,
    kind: HandleKind,
    constraints: &Constraints,
    lp: &LeasePolicy,
) -> Result<(), (&'static str, String)> {
    if kind == HandleKind::Aws {
        return Err(("", "an aws handle's lease limits are in its [aws] table (max_ttl_seconds, scopes, buckets)".into()));
    }
    let Constraints::Database(db) = constraints else {
        return Err(("", "only database and aws handles can be leased".into()));
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

/// S3 bucket naming rules: 3 to 63 characters of `a-z`, `0-9`, `.` and `-`, starting and ending
/// with a letter or digit, no `..`, not an IPv4 address.
pub fn valid_bucket_name(b: &str) -> bool {
    let bytes = b.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err()
}

fn validate_aws(r: RawAws) -> Result<AwsConstraints, (&'static str, String)> {
    if r.region.is_empty() || r.region.len() > 32 || !r.region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(("region", "not a region name (such as us-east-1)".into()));
    }
    let endpoint = match &r.endpoint {
        None => None,
        Some(e) => {
            let u = url::Url::parse(e).map_err(|err| ("endpoint", format!("not a URL: {err}")))?;
            if u.scheme() != "https" && u.scheme() != "http" {
                return Err(("endpoint", "scheme must be https or http".into()));
            }
            if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() || u.path() != "/" || u.host().is_none() {
                return Err(("endpoint", "an endpoint is scheme, host and port only".into()));
            }
            Some(u.origin().ascii_serialization())
        }
    };
    let parts: Vec<&str> = r.role_arn.split(':').collect();
    let arn_ok = parts.len() == 6
        && parts[0] == "arn"
        && matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].strip_prefix("role/").is_some_and(|n| !n.is_empty())
        && r.role_arn.len() <= 2048
        && r.role_arn.bytes().all(|b| b.is_ascii_graphic());
    if !arn_ok {
        return Err(("role_arn", "not a role ARN (arn:aws:iam::123456789012:role/NAME)".into()));
    }
    if r.buckets.is_empty() {
        return Err(("buckets", "list at least one bucket".into()));
    }
    let mut buckets = Vec::new();
    for b in &r.buckets {
        if !valid_bucket_name(b) {
            return Err(("buckets", format!("'{}' is not an S3 bucket name", b.escape_debug())));
        }
        if !buckets.contains(b) {
            buckets.push(b.clone());
        }
    }
    if r.scopes.is_empty() {
        return Err(("scopes", "name at least one scope".into()));
    }
    if !(AWS_MIN_TTL_SECONDS..=AWS_MAX_TTL_SECONDS).contains(&r.max_ttl_seconds) {
        return Err((
            "max_ttl_seconds",
            format!("must be between {AWS_MIN_TTL_SECONDS} (STS's minimum) and {AWS_MAX_TTL_SECONDS}"),
        ));
    }
    if r.max_object_bytes == 0 || r.max_object_bytes > 64 << 20 {
        return Err(("max_object_bytes", "must be between 1 and 67108864".into()));
    }
    if r.max_keys == 0 || r.max_keys > 1000 {
        return Err(("max_keys", "must be between 1 and 1000".into()));
    }
    if r.timeout_ms == 0 {
        return Err(("timeout_ms", "must be at least 1".into()));
    }
    Ok(AwsConstraints {
        region: r.region,
        endpoint,
        role_arn: r.role_arn,
        buckets,
        scopes: r.scopes,
        max_ttl_seconds: r.max_ttl_seconds,
        max_object_bytes: r.max_object_bytes,
        max_keys: r.max_keys,
        timeout_ms: r.timeout_ms,
    })
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

/// True for an e-mail address `local@domain` with no spaces, angle brackets, CR or LF (a bare
/// address; display names are not accepted anywhere).
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && (domain.contains('.') || domain == "localhost")
        && a.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"' | b'(' | b')' | b';' | b'\\'))
}

fn validate_smtp(r: RawSmtp) -> Result<SmtpConstraints, (&'static str, String)> {
    let host = r.host.trim().to_ascii_lowercase();
    if host.is_empty() || host.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')) {
        return Err(("host", "not a host name or IP address".into()));
    }
    if r.tls == SmtpTls::None && !matches!(host.as_str(), "127.0.0.1" | "::1" | "localhost") {
        return Err(("tls", "tls = \"none\" is accepted only for a loopback host (127.0.0.1, ::1, localhost)".into()));
    }
    let port = r.port.unwrap_or(match r.tls {
        SmtpTls::Tls => 465,
        SmtpTls::Starttls => 587,
        SmtpTls::None => 25,
    });
    if r.username.is_empty() || r.username.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(("username", "must be non-empty, without CR or LF".into()));
    }
    if !plausible_address(&r.from) {
        return Err(("from", format!("'{}' is not a bare e-mail address", r.from.escape_debug())));
    }
    if r.allowed_recipients.is_empty() {
        return Err(("allowed_recipients", "list at least one address or @domain".into()));
    }
    let mut allowed = Vec::new();
    for a in &r.allowed_recipients {
        let a = a.to_ascii_lowercase();
        let ok = match a.strip_prefix('@') {
            Some(d) => plausible_address(&format!("x@{d}")),
            None => plausible_address(&a),
        };
        if !ok {
            return Err(("allowed_recipients", format!("'{}' is not an address or @domain", a.escape_debug())));
        }
        allowed.push(a);
    }
    if r.sends_per_minute == 0 || r.timeout_ms == 0 || r.max_body_bytes == 0 {
        return Err(("sends_per_minute", "limits must be at least 1".into()));
    }
    Ok(SmtpConstraints {
        host,
        port,
        tls: r.tls,
        username: r.username,
        from: r.from,
        allowed_recipients: allowed,
        sends_per_minute: r.sends_per_minute,
        timeout_ms: r.timeout_ms,
        max_body_bytes: r.max_body_bytes,
    })
}

fn valid_env_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn validate_command(r: RawCommand) -> Result<CommandConstraints, (&'static str, String)> {
    if !r.program.is_absolute() {
        return Err(("program", "must be an absolute path".into()));
    }
    let mut args = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for a in &r.args {
        if a.contains('\0') {
            return Err(("args", "an argument cannot contain NUL".into()));
        }
        let inner = a.strip_prefix('{').and_then(|x| x.strip_suffix('}'));
        match inner {
            Some("secret_file") => {
                if r.secret_via != SecretDelivery::File {
                    return Err(("args", "{secret_file} needs secret_via = \"file\"".into()));
                }
                args.push(ArgTemplate::SecretFile);
            }
            Some(name) if !name.contains(['{', '}']) => {
                if !r.placeholders.contains_key(name) {
                    return Err(("args", format!("placeholder {{{name}}} is not declared in [placeholders]")));
                }
                used.insert(name.to_owned());
                args.push(ArgTemplate::Placeholder(name.to_owned()));
            }
            _ => {
                if a.contains(['{', '}']) {
                    return Err(("args", format!("'{a}': a placeholder is a whole argument, {{name}}; braces are not allowed elsewhere")));
                }
                args.push(ArgTemplate::Fixed(a.clone()));
            }
        }
    }
    for (name, p) in &r.placeholders {
        if !used.contains(name) {
            return Err(("placeholders", format!("placeholder '{name}' is not used in args")));
        }
        match (&p.regex, &p.one_of) {
            (Some(re), None) => {
                regex::Regex::new(re).map_err(|e| ("placeholders", format!("'{name}': bad regex: {e}")))?;
            }
            (None, Some(v)) if !v.is_empty() => {}
            _ => return Err(("placeholders", format!("'{name}' needs exactly one of regex or a non-empty enum"))),
        }
        if p.max_bytes == 0 {
            return Err(("placeholders", format!("'{name}': max_bytes must be at least 1")));
        }
    }
    let secret_env = r.secret_env.unwrap_or_else(|| match r.secret_via {
        SecretDelivery::File => "AIRLOCK_SECRET_FILE".into(),
        _ => "AIRLOCK_SECRET".into(),
    });
    if !valid_env_name(&secret_env) {
        return Err(("secret_env", "not an environment variable name".into()));
    }
    for k in r.env.keys() {
        if !valid_env_name(k) || *k == secret_env {
            return Err(("env", format!("'{k}' is not a usable environment variable name")));
        }
    }
    if r.env.values().any(|v| v.contains('\0')) {
        return Err(("env", "a value cannot contain NUL".into()));
    }
    if r.timeout_ms == 0 || r.max_output_bytes == 0 {
        return Err(("timeout_ms", "limits must be at least 1".into()));
    }
    let workdir = r.workdir.unwrap_or_else(|| PathBuf::from("/"));
    if !workdir.is_absolute() {
        return Err(("workdir", "must be an absolute path".into()));
    }
    Ok(CommandConstraints {
        program: r.program,
        args,
        placeholders: r.placeholders,
        secret_via: r.secret_via,
        secret_env,
        env: r.env,
        network: r.network,
        timeout_ms: r.timeout_ms,
        max_output_bytes: r.max_output_bytes,
        workdir,
    })
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

    const MAIL_AND_CMD: &str = r#"
[handles.MAIL]
kind = "smtp"
secret = "env:MAIL_PW"
[handles.MAIL.smtp]
host = "smtp.example.com"
username = "bot@example.com"
from = "bot@example.com"
allowed_recipients = ["Ops@Example.com", "@team.example.com"]

[handles.RUN]
kind = "command"
secret = "env:RUN_TOKEN"
[handles.RUN.command]
program = "/usr/bin/deploy"
args = ["--env", "{target}", "{tag}"]
placeholders = { target = { enum = ["staging", "prod"] }, tag = { regex = 'v[0-9]+' } }

[agents.ops]
grants = [{ handle = "MAIL", tools = ["send_email"] }, { handle = "RUN", tools = ["run_command"] }]
"#;

    #[test]
    fn approval_rules_are_validated_with_file_line_and_field() {
        let ok = format!("{MAIL_AND_CMD}\n[handles.MAIL.approval]\nrecipients_outside = [\"@example.com\"]\nwait_seconds = 5\n");
        let c = Config::parse(&ok, "airlock.toml", Path::new(".")).unwrap();
        let r = &c.approvals[&HandleName::parse("MAIL").unwrap()];
        assert_eq!((r.expires_in_seconds, r.wait_seconds), (900, 5));
        assert!(r.recipient_outside("a@elsewhere.org"));
        assert!(!r.recipient_outside("A@Example.COM"));
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nwrites = true\n"));
        assert!(e.contains("airlock.toml:22: handles.RUN.approval.writes: applies to database and http"), "{e}");
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nwait_seconds = 3\n"));
        assert!(e.contains("handles.RUN.approval: name at least one condition"), "{e}");
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nalways = true\nexpires_in_seconds = 1\n"));
        assert!(e.contains("handles.RUN.approval.expires_in_seconds"), "{e}");
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nalways = true\nwebhook = \"ftp://x\"\n"));
        assert!(e.contains("handles.RUN.approval.webhook"), "{e}");
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.MAIL.approval]\nrecipients_outside = [\"nobody\"]\n"));
        assert!(e.contains("handles.MAIL.approval.recipients_outside"), "{e}");
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nlease_ttl_over_seconds = 60\n"));
        assert!(e.contains("no [lease] policy"), "{e}");
        let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nalways = true\nbogus = 1\n"));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn parses_smtp_and_command_handles() {
        let c = Config::parse(MAIL_AND_CMD, "airlock.toml", Path::new(".")).unwrap();
        let m = c.handles[&HandleName::parse("MAIL").unwrap()].smtp().unwrap();
        assert_eq!((m.port, m.tls), (587, SmtpTls::Starttls));
        assert_eq!(m.allowed_recipients, ["ops@example.com", "@team.example.com"]);
        let r = c.handles[&HandleName::parse("RUN").unwrap()].command().unwrap();
        assert_eq!(r.secret_via, SecretDelivery::Stdin);
        assert!(!r.network);
        assert_eq!(
            r.args,
            [
                ArgTemplate::Fixed("--env".into()),
                ArgTemplate::Placeholder("target".into()),
                ArgTemplate::Placeholder("tag".into())
            ]
        );
    }

    #[test]
    fn t10_t08_unsafe_smtp_and_command_settings_are_refused() {
        let e = err(&MAIL_AND_CMD.replace("username = \"bot@example.com\"", "username = \"bot@example.com\"\ntls = \"none\""));
        assert!(e.contains("handles.MAIL.smtp.tls") && e.contains("loopback"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("\"@team.example.com\"", "\"@\""));
        assert!(e.contains("allowed_recipients"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("/usr/bin/deploy", "deploy"));
        assert!(e.contains("handles.RUN.command.program"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("\"{tag}\"", "\"--tag={tag}\""));
        assert!(e.contains("whole argument"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("\"{tag}\"", "\"{other}\""));
        assert!(e.contains("not declared"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("\"{tag}\"", "\"{secret_file}\""));
        assert!(e.contains("secret_via"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("tools = [\"send_email\"]", "tools = [\"run_command\"]"));
        assert!(e.contains("does not apply"), "{e}");
        let e = err(&MAIL_AND_CMD.replace("[handles.RUN.command]", "[handles.RUN.smtp]"));
        assert!(e.contains("unknown field"), "{e}");
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
        assert!(e.contains("only database and aws handles can be leased"), "{e}");
        let e = err(&format!("{GOOD}\n[handles.LITE]\nkind = \"sqlite\"\nsecret = \"env:X\"\n[handles.LITE.lease]\ndynamic = true\n"));
        assert!(e.contains("dynamic leases need a postgres or mysql handle"), "{e}");
    }

    const AWS: &str = r#"
[handles.S3]
kind = "aws"
secret = "env:AWS_KEYS"
[handles.S3.aws]
region = "eu-west-1"
endpoint = "http://127.0.0.1:5000/"
role_arn = "arn:aws:iam::123456789012:role/agents"
buckets = ["reports", "exports.2026", "reports"]

[agents.bot]
grants = [{ handle = "S3", tools = ["request_lease"] }]
"#;

    #[test]
    fn parses_an_aws_handle_with_sts_defaults() {
        let c = Config::parse(AWS, "airlock.toml", Path::new(".")).unwrap();
        let a = c.handles[&HandleName::parse("S3").unwrap()].aws().unwrap();
        assert_eq!(a.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(a.buckets, ["reports", "exports.2026"]);
        assert_eq!((a.max_ttl_seconds, a.scopes.as_slice()), (900, &[Scope::ReadOnly][..]));
        assert!(Tool::RequestLease.applies_to(HandleKind::Aws) && !Tool::QueryDb.applies_to(HandleKind::Aws));
    }

    #[test]
    fn t15_bad_aws_settings_are_refused_with_file_line_and_field() {
        for (from, to, needle) in [
            ("buckets = [", "max_ttl_seconds = 899\nbuckets = [", "handles.S3.aws.max_ttl_seconds"),
            ("buckets = [", "max_ttl_seconds = 43201\nbuckets = [", "between 900"),
            ("\"reports\", \"exports", "\"Reports\", \"exports", "'Reports' is not an S3 bucket name"),
            ("\"reports\", \"exports", "\"a*\", \"exports", "not an S3 bucket name"),
            ("role/agents", "user/agents", "handles.S3.aws.role_arn"),
            ("123456789012", "12345", "role_arn"),
            ("5000/", "5000/path", "handles.S3.aws.endpoint"),
            ("http://127.0.0.1", "ftp://127.0.0.1", "scheme"),
            ("eu-west-1", "EU WEST", "region"),
            ("region = ", "scopes = []\nregion = ", "name at least one scope"),
            ("region = ", "bogus = 1\nregion = ", "bogus"),
        ] {
            let e = err(&AWS.replace(from, to));
            assert!(e.starts_with("airlock.toml:"), "{e}");
            assert!(e.contains(needle), "{to}: {e}");
        }
        let e = err(&AWS.replace("tools = [\"request_lease\"]", "tools = [\"s3_object\"]"));
        assert!(e.contains("agents.bot.grants[0]") && e.contains("grant request_lease"), "{e}");
        let e = err(&format!("{AWS}\n[handles.S3.lease]\nmax_ttl_seconds = 900\n"));
        assert!(e.contains("handles.S3.lease") && e.contains("[aws] table"), "{e}");
        let e = err("[handles.S3]\nkind = \"aws\"\nsecret = \"env:X\"\n");
        assert!(e.contains("handles.S3.aws") && e.contains("role_arn"), "{e}");
    }

    #[test]
    fn t16_unknown_handle_in_grant_is_refused() {
        let e = err(&GOOD.replace("handle = \"DB_PROD\"", "handle = \"DB_PRO\u{041E}\""));
        assert!(e.starts_with("airlock.toml:21:") && e.contains("a handle is"), "{e}");
        let e = err(&GOOD.replace("handle = \"DB_PROD\"", "handle = \"DB_PRODX\""));
        assert!(e.contains("agents.support-bot.grants[0]: unknown handle DB_PRODX"), "{e}");
    }

    const VAULTS: &str = r#"
[vaults.corp]
kind = "openbao"
addr = "https://bao.example:8200"
ca_cert = "ca.pem"
namespace = "team"
auth = { method = "approle", role_id = "env:ROLE", secret_id = "file:sid" }

[vaults.local-bao]
kind = "vault"
addr = "http://127.0.0.1:8200"
auth = { method = "token", token = "env:BAO_TOKEN" }

[handles.PG]
kind = "postgres"
secret = "openbao:corp/secret/app/db#password@3"
[handles.PG.database]
url = "postgres://app@db.example/app"
[handles.PG.lease]
provider = "openbao"
vault = "local-bao"
role = "readonly"

[handles.API]
kind = "generic"
secret = "vault:local-bao/kv/a/b/c#api-key"
"#;

    #[test]
    fn parses_vaults_remote_refs_and_openbao_leases() {
        let c = Config::parse(VAULTS, "airlock.toml", Path::new("/etc/airlock")).unwrap();
        let corp = &c.vaults["corp"];
        assert_eq!(corp.kind, RemoteVaultKind::Openbao);
        assert_eq!(corp.ca_cert.as_deref(), Some(Path::new("/etc/airlock/ca.pem")));
        assert_eq!(corp.cache_ttl_seconds, 30);
        assert_eq!(corp.namespace.as_deref(), Some("team"));
        assert!(matches!(&corp.auth, RemoteAuth::AppRole { mount, secret_id: SecretRef::File(p), .. } if mount == "approle" && p == Path::new("/etc/airlock/sid")));
        let pg = &c.handles[&HandleName::parse("PG").unwrap()];
        assert_eq!(
            pg.secret,
            SecretRef::Remote(RemoteRef {
                vault: "corp".into(),
                mount: "secret".into(),
                path: "app/db".into(),
                field: Some("password".into()),
                version: Some(3)
            })
        );
        let SecretRef::Remote(api) = &c.handles[&HandleName::parse("API").unwrap()].secret else { panic!() };
        assert_eq!((api.mount.as_str(), api.path.as_str(), api.field.as_deref(), api.version), ("kv", "a/b/c", Some("api-key"), None));
        assert_eq!(api.to_string(), "openbao:local-bao/kv/a/b/c#api-key");
        let lp = &c.leases[&HandleName::parse("PG").unwrap()];
        assert_eq!((lp.provider, lp.vault.as_deref(), lp.role.as_deref()), (LeaseProvider::Openbao, Some("local-bao"), Some("readonly")));
    }

    #[test]
    fn remote_refs_are_validated_at_load() {
        for (bad, what) in [
            ("openbao:corp/secret/app", "field is missing"),
            ("openbao:corp/secret#f", "a vault name, a mount and a path"),
            ("openbao:corp//app#f", "not a valid path segment"),
            ("openbao:corp/secret/../x#f", "not a valid path segment"),
            ("openbao:corp/secret/a?b#f", "not a valid path segment"),
            ("openbao:corp/secret/app#", "field is empty"),
            ("openbao:corp/secret/app#f@x", "not a positive integer"),
            ("openbao:corp/secret/app#f@0", "versions start at 1"),
            ("openbao:Corp/secret/app#f", "not a vault name"),
        ] {
            let e = SecretRef::parse(bad, Path::new(".")).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
        let text = VAULTS.replace("openbao:corp/secret/app/db#password@3", "openbao:nope/secret/app/db#password");
        let e = Config::parse(&text, "a.toml", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("handles.PG.secret") && e.contains("no [vaults.nope]") && e.starts_with("a.toml:16:"), "{e}");
    }

    #[test]
    fn vault_tables_are_validated() {
        let cases = [
            ("auth = { method = \"token\", token = \"env:BAO_TOKEN\" }", "auth = { method = \"token\", token = \"s.abcdef\" }", "vaults.local-bao.auth.token"),
            ("auth = { method = \"token\", token = \"env:BAO_TOKEN\" }", "auth = { method = \"token\", token = \"local:X\" }", "env:VAR or file:PATH"),
            ("addr = \"http://127.0.0.1:8200\"", "addr = \"http://bao.example:8200\"", "only for a loopback"),
            ("addr = \"http://127.0.0.1:8200\"", "addr = \"https://bao.example:8200/v1\"", "no path"),
            ("role = \"readonly\"", "", "lease.role"),
            ("vault = \"local-bao\"", "vault = \"other\"", "no [vaults.other]"),
            ("url = \"postgres://app@db.example/app\"", "", "needs database.url"),
            ("provider = \"openbao\"", "provider = \"airlock\"", "go with provider"),
        ];
        for (from, to, what) in cases {
            let text = VAULTS.replace(from, to);
            assert_ne!(text, VAULTS, "{from}");
            let e = Config::parse(&text, "a.toml", Path::new(".")).unwrap_err().to_string();
            assert!(e.contains(what), "{to}: {e}");
        }
        let e = Config::parse(&VAULTS.replace("[vaults.corp]", "[vaults.Corp]").replace("openbao:corp/", "openbao:x/"), "a.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vaults.Corp"), "{e}");
    }
}
