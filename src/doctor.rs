//! `airlock doctor`: checks a deployment against the boundary airlock promises and prints each
//! finding with its fix. Run it as the broker's user, on the broker's configuration.

use crate::home::{self, Finding, Level};
use airlock_core::config::{Config, HandleKind, Scope};
use anyhow::Result;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Runs every check; prints text or JSON; 1 when any finding is an error.
pub async fn run(config: &Path, json: bool) -> Result<u8> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut findings = home::home_findings(&cfg);
    findings.extend(user_findings(&cfg));
    findings.extend(socket_findings(&cfg));
    findings.extend(sandbox_findings(&cfg).await);
    findings.extend(tls_findings(&cfg));
    findings.extend(identity_findings(&cfg, &platforms()));
    findings.extend(master_key_findings(&cfg));
    findings.extend(key_version_findings(&cfg).await);
    findings.extend(database_findings(&cfg).await);
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"errors": errors, "findings": findings}))?);
    } else {
        for f in &findings {
            let tag = match f.level {
                Level::Error => "error",
                Level::Warning => "warn ",
                Level::Ok => "ok   ",
            };
            println!("{tag} {}: {}", f.check, f.message);
            if !f.fix.is_empty() {
                println!("      fix: {}", f.fix);
            }
        }
        let warnings = findings.iter().filter(|f| f.level == Level::Warning).count();
        println!("{errors} error(s), {warnings} warning(s)");
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The broker must run as a user of its own: not root (a sandbox escape or a bug is then
/// everything), and none of the agents' users (they could read its files).
fn user_findings(cfg: &Config) -> Vec<Finding> {
    let uid = nix::unistd::geteuid().as_raw();
    let me = user_name(uid);
    let mut out = Vec::new();
    if uid == 0 {
        out.push(Finding::new(
            Level::Warning,
            "broker-user-root",
            "the broker runs as root",
            "run it as a dedicated user (the systemd unit in docs/deployment.md creates one)",
        ));
    }
    let agent_users = &cfg.server.agent_users;
    if agent_users.iter().any(|a| *a == me || a.parse::<u32>() == Ok(uid)) {
        out.push(Finding::new(
            Level::Error,
            "broker-user-is-agent",
            format!("the broker runs as {me}, which server.agent_users lists: an agent could read its keys"),
            "run the broker as a dedicated user that no agent runs as",
        ));
    } else if agent_users.is_empty() && cfg.server.socket_group.is_none() {
        out.push(Finding::new(
            Level::Warning,
            "agent-users-unknown",
            "neither server.agent_users nor server.socket_group is set: cannot tell whether agents run as another user",
            "list the agents' OS users in server.agent_users and give them the socket's group",
        ));
    } else {
        for a in agent_users {
            if nix::unistd::User::from_name(a).ok().flatten().is_none() {
                out.push(Finding::new(Level::Warning, "agent-user-missing", format!("server.agent_users: no user {a:?} here"), ""));
            }
        }
        out.push(Finding::new(Level::Ok, "broker-user", format!("the broker runs as {me}, not as an agent's user"), ""));
    }
    out
}

/// The socket: a private mode, a group, and whether a broker answers on it.
fn socket_findings(cfg: &Config) -> Vec<Finding> {
    let Some(path) = cfg.server.socket_path() else {
        return vec![Finding::new(
            Level::Warning,
            "socket-off",
            "server.socket is off: thin clients can only use HTTP, and no peer uid is recorded",
            "",
        )];
    };
    let mut out = Vec::new();
    if let Some(g) = &cfg.server.socket_group {
        if let Err(e) = home::group_id(g) {
            out.push(Finding::new(Level::Error, "socket-group", format!("{e:#}"), "create the group, or fix server.socket_group"));
        }
    }
    match std::fs::metadata(&path) {
        Err(_) => out.push(Finding::new(
            Level::Warning,
            "socket-absent",
            format!("{} does not exist: no broker is serving", path.display()),
            "start `airlock serve`",
        )),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                out.push(Finding::new(
                    Level::Error,
                    "socket-mode",
                    format!("{} has mode {mode:03o}: any local user can talk to the broker", path.display()),
                    "set server.socket_mode to 0o660 (the default) and restart",
                ));
            }
            let live = std::os::unix::net::UnixStream::connect(&path).is_ok();
            let level = if live { Level::Ok } else { Level::Warning };
            let state = if live { "a broker answers there" } else { "nothing answers there (stale)" };
            out.push(Finding::new(level, "socket", format!("{}: mode {mode:03o}, gid {}, {state}", path.display(), m.gid()), ""));
        }
    }
    out
}

/// Whether `run_command`'s sandbox can be built on this machine.
async fn sandbox_findings(cfg: &Config) -> Vec<Finding> {
    let uses_commands = cfg.handles.values().any(|h| h.kind == HandleKind::Command);
    if cfg.sandbox.insecure_no_sandbox {
        return vec![Finding::new(
            if uses_commands { Level::Error } else { Level::Warning },
            "sandbox-disabled",
            "sandbox.insecure_no_sandbox is set: run_command children run with the broker's user and files",
            "remove insecure_no_sandbox and make the sandbox work (see docs/deployment.md)",
        )];
    }
    match airlock_exec_command::SandboxSettings::from_config(cfg).probe().await {
        Ok(status) => vec![Finding::new(
            Level::Ok,
            "sandbox",
            format!("run_command sandbox works: {}", status.to_json(false)),
            "",
        )],
        Err(why) => vec![Finding::new(
            if uses_commands { Level::Error } else { Level::Warning },
            "sandbox-unavailable",
            format!("run_command would be refused (sandbox-unavailable): {why}"),
            "install bubblewrap and allow unprivileged user namespaces (see docs/deployment.md)",
        )],
    }
}

/// Plain HTTP only on loopback; links for people over https.
fn tls_findings(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    if !cfg.server.listen.ip().is_loopback() {
        out.push(Finding::new(
            Level::Warning,
            "listen-not-loopback",
            format!("server.listen is {}: tokens and links cross the network over plain HTTP unless a proxy terminates TLS", cfg.server.listen),
            "listen on 127.0.0.1 behind a TLS-terminating proxy",
        ));
    }
    // An http base_url for links that is not loopback (or an unset one on a listener that is
    // not loopback) is refused when the configuration loads (`insecure-link`), so it never
    // reaches here.
    out
}

/// A platform whose workloads get short-lived signed tokens, as doctor's environment shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Platform {
    /// `KUBERNETES_SERVICE_HOST` is set, or a service-account token is mounted.
    Kubernetes,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` is set (a job with `id-token: write`).
    GitHubActions,
    /// `GITLAB_CI` is set; the instance URL from `CI_SERVER_URL` when that is too.
    GitLab(Option<String>),
}

impl Platform {
    /// How an `[issuers.NAME]` table for it looks.
    fn advice(&self) -> String {
        match self {
            Platform::Kubernetes => "this runs in Kubernetes: the issuer is the cluster's service-account issuer \
                (`kubectl get --raw /.well-known/openid-configuration`) with its key set (jwks_url, or jwks_file \
                from `kubectl get --raw /openid/v1/jwks`); agents mount a projected service-account token whose \
                audience is airlock's URI and point AIRLOCK_TOKEN_FILE at it"
                .to_owned(),
            Platform::GitHubActions => "this runs in GitHub Actions: issuer = \"https://token.actions.githubusercontent.com\", \
                subjects matched on the repository and ref claims; the job asks for an ID token whose audience is \
                airlock's URI (permissions: id-token: write)"
                .to_owned(),
            Platform::GitLab(url) => format!(
                "this runs in GitLab CI: issuer = {}, subjects matched on the project_path and ref claims; \
                 the job gets a token from `id_tokens:` with aud = airlock's URI",
                match url {
                    Some(u) => format!("\"{u}\" (the instance URL)"),
                    None => "the instance URL (CI_SERVER_URL)".to_owned(),
                }
            ),
        }
    }
}

/// The platforms doctor's environment shows (several when, say, a CI runner runs in Kubernetes).
fn platforms() -> Vec<Platform> {
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    let mut out = Vec::new();
    if set("KUBERNETES_SERVICE_HOST") || Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists() {
        out.push(Platform::Kubernetes);
    }
    if set("ACTIONS_ID_TOKEN_REQUEST_URL") {
        out.push(Platform::GitHubActions);
    }
    if set("GITLAB_CI") {
        out.push(Platform::GitLab(std::env::var("CI_SERVER_URL").ok().filter(|u| !u.is_empty())));
    }
    out
}

/// How agents authenticate: static airlock tokens, or the short-lived tokens of trusted issuers
/// (T30). A note, not a fault: static tokens are sound, platform tokens need none handed out.
fn identity_findings(cfg: &Config, platforms: &[Platform]) -> Vec<Finding> {
    if cfg.agents.is_empty() {
        return Vec::new();
    }
    let agents: Vec<&str> = cfg.agents.keys().map(String::as_str).collect();
    if cfg.issuers.is_empty() {
        let mut message = format!(
            "agents authenticate with static airlock tokens ({}); an [issuers.NAME] table lets them sign in with \
             their platform's short-lived token instead, so no long-lived token is handed out",
            agents.join(", ")
        );
        for p in platforms {
            message.push_str("; ");
            message.push_str(&p.advice());
        }
        return vec![Finding::new(Level::Ok, "agent-identity", message, "")];
    }
    let mut mapped: Vec<&str> = Vec::new();
    let issuers: Vec<String> = cfg
        .issuers
        .values()
        .map(|i| {
            let mut to: Vec<&str> = i.subjects.iter().map(|s| s.agent.as_str()).collect();
            let mut seen = std::collections::BTreeSet::new();
            to.retain(|a| seen.insert(*a));
            mapped.extend(&to);
            format!("{} ({}) signs in {}", i.name, i.issuer, to.join(", "))
        })
        .collect();
    let mut message = format!("trusted issuers: {}", issuers.join("; "));
    let static_only: Vec<&str> = agents.iter().copied().filter(|a| !mapped.contains(a)).collect();
    if !static_only.is_empty() {
        message.push_str(&format!("; {} only with static airlock tokens", static_only.join(", ")));
    }
    vec![Finding::new(Level::Ok, "agent-identity", message, "")]
}

/// How the master key is kept at rest. A plain key file is a warning where the broker serves
/// beyond this machine (a listener that is not loopback, or a shared PostgreSQL store): a copy
/// of the data directory is then every secret.
fn master_key_findings(cfg: &Config) -> Vec<Finding> {
    use airlock_core::config::MasterKeyWrap;
    let path = cfg.store.data_dir.join("master.key");
    let want = cfg.store.master_key.wrap;
    let found = match airlock_vault::wrap::current_wrap(&path) {
        Ok(w) => w,
        // A missing key is reported where the store is opened; nothing to add here.
        Err(_) => return Vec::new(),
    };
    if found != want {
        return vec![Finding::new(
            Level::Error,
            "master-key",
            format!("{} is protected by {found:?} but [store.master_key] says {want:?}: the broker will not start", path.display()),
            "run `airlock key wrap` to protect it as configured",
        )];
    }
    if want != MasterKeyWrap::File {
        return vec![Finding::new(Level::Ok, "master-key", format!("the master key is wrapped ({want:?})"), "")];
    }
    let production = !cfg.server.listen.ip().is_loopback() || cfg.store.url.is_some();
    let message = format!(
        "the master key is a plain file ({}): anyone with a copy of the data directory (a backup, a snapshot, a disk) has every secret",
        path.display()
    );
    let fix = "set [store.master_key] wrap = \"passphrase\" or \"transit\" and run `airlock key wrap`";
    vec![if production { Finding::new(Level::Warning, "master-key", message, fix) } else { Finding::new(Level::Ok, "master-key", message, "") }]
}

/// Where the rotations stand: a rotation of the vault key left unfinished (values still under
/// an older version; `key rotate` resumes it), and a data directory whose audit signing key is
/// not the one the chain names now (another replica rotated it: this one cannot append).
async fn key_version_findings(cfg: &Config) -> Vec<Finding> {
    let Ok(store) = airlock_store::Store::connect(&cfg.store).await else {
        // An unreachable store is reported where the store is opened.
        return Vec::new();
    };
    let mut out = Vec::new();
    match store.master_keys().await {
        Ok(keys) if keys.len() > 1 => {
            let active = keys.iter().map(|k| k.version).max().unwrap_or(0);
            let left = match u32::try_from(active) {
                Ok(v) => store.count_sealed_outside(&airlock_vault::keyring::tag(v)).await.map_or("some".into(), |n| n.to_string()),
                Err(_) => "some".into(),
            };
            out.push(Finding::new(
                Level::Warning,
                "key-rotation",
                format!("a rotation of the vault key to version {active} is unfinished: {left} value(s) still under an older version (all readable)"),
                "run `airlock key rotate` to finish it",
            ));
        }
        Ok(keys) => {
            let m = keys.first().map_or("the vault key was never rotated".to_owned(), |k| format!("the vault key is at version {}", k.version));
            out.push(Finding::new(Level::Ok, "key-rotation", m, ""));
        }
        Err(e) => out.push(Finding::new(Level::Error, "key-rotation", format!("the key versions cannot be read: {e}"), "")),
    }
    let local = airlock_store::audit::AuditKey::load(&cfg.store.data_dir).map(|k| k.public_key());
    match (store.audit_signing_key().await, local) {
        (Ok(Some(chain)), Ok(local)) if chain != local => out.push(Finding::new(
            Level::Error,
            "audit-key",
            format!(
                "this data directory's audit signing key ({}) is not the chain's current key ({}): the audit signing key was rotated elsewhere, and every call here is refused with audit-unavailable",
                hex::encode(&local),
                hex::encode(&chain)
            ),
            "copy audit-signing.key (mode 0600) and audit-signing.pub from the data directory where `airlock audit rotate-key` ran",
        )),
        (Ok(_), Ok(_)) => out.push(Finding::new(Level::Ok, "audit-key", "the audit signing key is the chain's current key", "")),
        (Err(e), _) => out.push(Finding::new(Level::Error, "audit-key", format!("the chain's signing key cannot be read: {e}"), "")),
        // A missing or unreadable key file is reported with the data directory's files.
        (_, Err(_)) => {}
    }
    store.close().await;
    out
}

/// A read-only handle on a role that can write (or a superuser) leaves the scope to airlock's
/// parser alone; the database should enforce it too (T25, T26).
async fn database_findings(cfg: &Config) -> Vec<Finding> {
    let servers: Vec<_> = cfg
        .handles
        .values()
        .filter(|h| matches!(h.kind, HandleKind::Postgres | HandleKind::Mysql))
        .filter(|h| h.database().is_some_and(|d| d.scope == Scope::ReadOnly))
        .collect();
    if servers.is_empty() {
        return Vec::new();
    }
    let vault = match home::open_vault(cfg).await {
        Ok(v) => v,
        Err(e) => return vec![Finding::new(Level::Warning, "database-credentials", format!("cannot open the vault: {e:#}"), "")],
    };
    let mut out = Vec::new();
    for h in servers {
        let secret = match vault.resolve(&h.secret).await {
            Ok(s) => s,
            Err(e) => {
                out.push(Finding::new(Level::Warning, "database-credentials", format!("{}: secret unavailable ({e})", h.name), ""));
                continue;
            }
        };
        match airlock_exec_sql::lease::privileges(h, &secret).await {
            Ok(p) if p.superuser => out.push(Finding::new(
                Level::Warning,
                "read-only-handle-superuser",
                format!("{} is read_only but logs in as {}, a superuser", h.name, p.role),
                "give the handle a role with SELECT only on its tables, or on PostgreSQL a query_role that has only that",
            )),
            Ok(p) if p.can_write => out.push(Finding::new(
                Level::Warning,
                "read-only-handle-can-write",
                format!("{} is read_only but its role {} can write (or owns tables)", h.name, p.role),
                "give the handle a role with SELECT only on its tables, or on PostgreSQL a query_role that has only that",
            )),
            Ok(p) if !p.wide_reads.is_empty() => out.push(Finding::new(
                Level::Warning,
                "read-only-handle-reads-beyond",
                format!("{} is read_only but its role {} can read beyond its tables through {}", h.name, p.role, p.wide_reads.join(", ")),
                "revoke those roles or privileges from the handle's role (airlock refuses catalog and file functions, but the database should too)",
            )),
            Ok(p) => out.push(Finding::new(Level::Ok, "database-credentials", format!("{}: role {} reads only", h.name, p.role), "")),
            Err(e) => out.push(Finding::new(Level::Warning, "database-credentials", format!("{}: {e}", h.name), "")),
        }
    }
    out
}
