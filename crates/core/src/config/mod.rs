//! `airlock.toml`: parsed with spans, then validated into [`Config`].
//!
//! Two phases, as in ripgrep and cargo-deny: the text is parsed into a document that keeps the
//! place of every key and value, then each table is deserialized on its own (unknown keys
//! refused) and checked, every handle, constraint and grant resolved. A mistake does not stop
//! the checks: [`ConfigError::Invalid`] lists every [`Problem`] found in one run, each with a
//! stable [`ProblemCode`], the dotted field, and its line and column in the file.
//!
//! One module per table: `server`, `store`, `limits`, `sandbox`, `policy`, `shares`, `vault`
//! (`[vaults.NAME]`), `handle` (`[handles.NAME]`, with the constraints of each kind in
//! `database`, `http`, `smtp`, `command` and `aws`, and its `leases`, `approvals` and
//! `results` tables), `agents`, `audit` (`[audit.export]`) and `telemetry`. `source` turns spans into
//! places and collects problems; `problem` holds the error types.

mod agents;
mod approvals;
mod audit;
mod aws;
mod command;
mod database;
mod defaults;
mod handle;
mod http;
mod issuers;
mod leases;
mod limits;
mod oauth;
mod policy;
mod problem;
mod requests;
mod results;
mod sandbox;
mod secret_ref;
mod server;
mod shares;
mod smtp;
mod source;
mod store;
mod telemetry;
mod vault;

#[cfg(test)]
mod tests;

pub use self::agents::{valid_agent_name, AgentConfig, Grant};
pub use self::approvals::ApprovalRule;
pub use self::audit::{AuditConfig, AuditExport, AuditExportFormat, AuditSink};
pub use self::aws::{valid_bucket_name, AwsConstraints, AWS_MAX_TTL_SECONDS, AWS_MIN_TTL_SECONDS};
pub use self::command::{ArgTemplate, CommandConstraints, Placeholder, SecretDelivery};
pub use self::database::{table_in, DatabaseConstraints, Scope, TableColumns};
pub use self::handle::{Constraints, Handle};
pub use self::http::{Destination, HttpConstraints, Injection};
pub use self::issuers::{IssuerConfig, JwksSource, SubjectRule, ASYMMETRIC_ALGORITHMS};
pub use self::leases::{LeasePolicy, LeaseProvider, LEASE_SUFFIX_LEN};
pub use self::limits::{LimitsConfig, MAX_CHILD_DEPTH};
pub use self::oauth::{OauthConstraints, OauthEndpoints, OauthProvider};
pub use self::policy::PolicyConfig;
pub use self::problem::{ConfigError, Location, Problem, ProblemCode};
pub use self::requests::RequestsConfig;
pub use self::results::{MarkupPolicy, ResultsPolicy};
pub use self::sandbox::SandboxConfig;
pub use self::secret_ref::{RemoteRef, SecretRef, REQUESTED_VALUE_PREFIX};
pub use self::server::{default_socket_path, ServerConfig};
pub use self::shares::{ShareChannelConfig, SharesConfig};
pub use self::smtp::{plausible_address, recipient_allowed, SmtpConstraints, SmtpTls};
pub use self::telemetry::TelemetryConfig;
pub use self::store::{validate_store_url, MasterKeyConfig, MasterKeyWrap, StoreConfig, SyncMode};
pub use self::secret_ref::valid_vault_name;
pub use self::vault::{RemoteAuth, RemoteVaultConfig, RemoteVaultKind};
pub use crate::kind::HandleKind;

use self::source::{FieldPath, Report, Source};
use crate::handle::HandleName;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// `[requests]`: limits of requests for a secret.
    pub requests: RequestsConfig,
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
    /// Trusted token issuers by name (`[issuers.NAME]`).
    pub issuers: BTreeMap<String, IssuerConfig>,
    /// `[audit]`: the continuous export of the audit records, when configured.
    pub audit: AuditConfig,
    /// `[telemetry]`: where the spans of each call go (OTLP, or the log).
    pub telemetry: TelemetryConfig,
}

/// The top-level tables. Each is read on its own; they are named here so that any other key
/// is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "only the keys matter; each table is read on its own")]
struct Sections {
    server: Option<IgnoredAny>,
    store: Option<IgnoredAny>,
    limits: Option<IgnoredAny>,
    sandbox: Option<IgnoredAny>,
    policy: Option<IgnoredAny>,
    shares: Option<IgnoredAny>,
    requests: Option<IgnoredAny>,
    handles: Option<IgnoredAny>,
    agents: Option<IgnoredAny>,
    vaults: Option<IgnoredAny>,
    issuers: Option<IgnoredAny>,
    audit: Option<IgnoredAny>,
    telemetry: Option<IgnoredAny>,
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

    /// Parses and validates configuration text. `file` names it in problems; `base` resolves
    /// relative paths. Every problem found is returned at once.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid { file: file.to_owned(), problems };
        let src = Source::parse(text).map_err(invalid)?;
        let mut r = Report::new(&src);
        r.de_lenient::<Sections>(&FieldPath::root(), src.document());

        let vaults = vault::check_all(&mut r, src.section("vaults"), base);
        let handles = handle::check_all(&mut r, src.section("handles"), &vaults, base);
        let agents = agents::check_all(&mut r, src.section("agents"), &handles.declared);
        // Every agent the file declares, valid or not: a rule naming one in error is not
        // reported again as unknown.
        let agent_names: Vec<&str> = match src.section("agents").map(toml::Spanned::get_ref) {
            Some(toml::de::DeValue::Table(t)) => t.iter().map(|(k, _)| k.get_ref().as_ref()).collect(),
            _ => Vec::new(),
        };
        let issuers = issuers::check_all(&mut r, src.section("issuers"), base, &agent_names);
        let root = FieldPath::root();
        let server = section::<ServerConfig>(&mut r, &src, "server").checked(&mut r, &root.key("server"), base);
        let vault_names: Vec<&str> = vaults.valid.keys().map(String::as_str).collect();
        let store = section::<StoreConfig>(&mut r, &src, "store").checked(&mut r, &root.key("store"), base, &vault_names);
        let limits = section::<LimitsConfig>(&mut r, &src, "limits").checked(&mut r, &root.key("limits"));
        let sandbox = section::<SandboxConfig>(&mut r, &src, "sandbox").checked(&mut r, &root.key("sandbox"), base);
        let policy = section::<PolicyConfig>(&mut r, &src, "policy").resolved(base);
        let before_shares = r.count();
        let shares = section::<SharesConfig>(&mut r, &src, "shares").checked(&mut r, &root.key("shares"), base);
        // Owners are checked against recipients only when [shares] itself is valid.
        if r.count() == before_shares {
            check_owners(&mut r, &handles.handles, &shares);
            check_channel_handles(&mut r, &handles, &shares);
        }
        self::shares::check_default_base(&shares, server.listen, &mut r, &root.key("shares"));
        let requests = section::<RequestsConfig>(&mut r, &src, "requests").checked(&mut r, &root.key("requests"));
        let audit = section::<audit::RawAudit>(&mut r, &src, "audit").checked(&mut r, &root.key("audit"), base);
        let telemetry = section::<TelemetryConfig>(&mut r, &src, "telemetry").checked(&mut r, &root.key("telemetry"));

        let problems = r.into_problems();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        Ok(Config {
            source: file.to_owned(),
            server,
            store,
            limits,
            sandbox,
            policy,
            shares,
            requests,
            handles: handles.handles,
            agents,
            leases: handles.leases,
            approvals: handles.approvals,
            results: handles.results,
            vaults: vaults.valid,
            issuers,
            audit,
            telemetry,
        })
    }
}

/// One handle defined at run time (a handle a person's secret lands as, `request_secret`),
/// checked exactly as a configured one: `text` is a TOML document holding the one table
/// `[handles.NAME]`, with no lease, approval or results table and no remote vault. Every
/// problem is returned at once.
pub fn parse_handle(text: &str, name: &HandleName) -> Result<Handle, ConfigError> {
    let file = "<requested handle>";
    let invalid = |problems| ConfigError::Invalid { file: file.to_owned(), problems };
    let src = Source::parse(text).map_err(invalid)?;
    let mut r = Report::new(&src);
    let at = FieldPath::root();
    let mut handles = handle::check_all(&mut r, src.section("handles"), &vault::Vaults::default(), Path::new("."));
    let extra = !handles.leases.is_empty() || !handles.approvals.is_empty() || !handles.results.is_empty();
    let count = handles.declared.len();
    let problems = r.into_problems();
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    match handles.handles.remove(name) {
        Some(h) if count == 1 && !extra => Ok(h),
        _ => Err(invalid(vec![Problem::new(
            ProblemCode::UnknownHandle,
            at.key("handles").to_string(),
            &format!("exactly one [handles.{name}] table without lease, approval or results"),
            None,
        )])),
    }
}

/// Every owner an oauth handle names is a `[shares.recipients]` entry: the channel that reaches
/// that person delivers the code the connect page asks for.
fn check_owners(r: &mut Report<'_, '_>, handles: &BTreeMap<HandleName, Handle>, shares: &SharesConfig) {
    for h in handles.values() {
        let Some(o) = h.oauth() else { continue };
        let at = FieldPath::root().key("handles").key(h.name.as_str()).join("oauth").join("owners");
        for owner in o.provider.owners.iter().filter(|w| !shares.recipients.contains_key(*w)) {
            r.problem(&at, ProblemCode::UnknownChannel, format!("owner '{owner}' is not in [shares.recipients]"));
        }
    }
}

/// Every smtp share channel goes through a declared smtp handle that allows its address. A
/// handle declared in error is reported where it is, not again here.
fn check_channel_handles(r: &mut Report<'_, '_>, handles: &handle::Handles, shares: &SharesConfig) {
    for (name, ch) in &shares.channels {
        let ShareChannelConfig::Smtp { handle, to } = ch else { continue };
        let at = FieldPath::root().key("shares").key("channels").key(name);
        match handles.declared.get(handle.as_str()) {
            None => r.problem(&at.key("handle"), ProblemCode::UnknownHandle, format!("unknown handle {handle}")),
            Some(Some(kind)) if *kind != HandleKind::Smtp => {
                r.problem(&at.key("handle"), ProblemCode::WrongHandleKind, format!("handle {handle} is {}, not smtp", kind.as_str()))
            }
            _ => {
                let allowed = handles.handles.get(handle).and_then(Handle::smtp).map(|c| &c.allowed_recipients);
                if allowed.is_some_and(|a| !recipient_allowed(a, to)) {
                    r.problem(
                        &at.key("to"),
                        ProblemCode::RecipientNotAllowed,
                        format!("handle {handle}'s allowed_recipients do not allow '{}'", to.escape_debug()),
                    );
                }
            }
        }
    }
}

/// The top-level table `name`, or its defaults when it is absent or not of the right shape
/// (then a problem says so, and the defaults are never used).
fn section<'s, 't, T: DeserializeOwned + Default>(r: &mut Report<'s, 't>, src: &'s Source<'t>, name: &str) -> T {
    src.section(name).and_then(|v| r.de(&FieldPath::root().key(name), v)).unwrap_or_default()
}
