//! `[vaults.NAME]`: remote OpenBao or HashiCorp Vault servers that hold secrets.

use super::defaults;
use super::problem::ProblemCode;
use super::secret_ref::{valid_vault_name, SecretRef};
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use toml::de::DeValue;
use toml::Spanned;

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
    #[serde(default = "defaults::timeout_ms")]
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

/// The `[vaults]` of a file.
#[derive(Default)]
pub(super) struct Vaults {
    /// The valid ones, by name.
    pub(super) valid: BTreeMap<String, RemoteVaultConfig>,
    /// Every name the file defines, valid or not: a reference to one of them is not reported
    /// again as unknown.
    pub(super) declared: BTreeSet<String>,
}

impl Vaults {
    /// Records a problem at `at` unless `name` is a vault the file defines.
    pub(super) fn check_defined(&self, r: &mut Report<'_, '_>, at: &FieldPath, name: &str) {
        if !self.declared.contains(name) {
            r.problem(at, ProblemCode::UnknownVault, format!("no [vaults.{name}] is defined"));
        }
    }
}

/// Checks every `[vaults.NAME]` table.
pub(super) fn check_all<'s, 't>(r: &mut Report<'s, 't>, section: Option<&'s Spanned<DeValue<'t>>>, base: &Path) -> Vaults {
    let at = FieldPath::root().key("vaults");
    let mut vaults = Vaults::default();
    for (name, value) in r.entries(&at, section) {
        vaults.declared.insert(name.to_owned());
        let at = at.key(name);
        let before = r.count();
        if !valid_vault_name(name) {
            r.problem(&at, ProblemCode::BadVaultName, "a vault name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter");
        }
        let Some(raw) = r.de::<RawVault>(&at, value) else { continue };
        if let Some(v) = check_vault(r, &at, name, raw, base) {
            if r.count() == before {
                vaults.valid.insert(name.to_owned(), v);
            }
        }
    }
    vaults
}

fn check_vault(r: &mut Report<'_, '_>, at: &FieldPath, name: &str, v: RawVault, base: &Path) -> Option<RemoteVaultConfig> {
    let before = r.count();
    check_addr(r, &at.join("addr"), &v.addr);
    if v.timeout_ms == 0 {
        r.problem(&at.join("timeout_ms"), ProblemCode::OutOfRange, "must be at least 1");
    }
    let mut cred = |field: &str, s: &str| -> Option<SecretRef> {
        let at = at.join(field);
        match SecretRef::parse(s, base) {
            Ok(s @ (SecretRef::Env(_) | SecretRef::File(_))) => Some(s),
            Ok(_) => {
                r.problem(&at, ProblemCode::SecretInConfig, "give env:VAR or file:PATH (the credential never goes in the configuration)");
                None
            }
            Err(m) => {
                r.problem(&at, ProblemCode::BadSecretRef, m);
                None
            }
        }
    };
    let auth = match v.auth {
        RawRemoteAuth::Token { token } => cred("auth.token", &token).map(|token| RemoteAuth::Token { token }),
        RawRemoteAuth::Approle { role_id, secret_id, mount } => {
            let role_id = cred("auth.role_id", &role_id);
            let secret_id = cred("auth.secret_id", &secret_id);
            let mount = mount.unwrap_or_else(|| "approle".into());
            if mount.is_empty() || mount.contains(['/', '?', '#', '%']) {
                r.problem(&at.join("auth.mount"), ProblemCode::BadPathSegment, "one path segment");
            }
            role_id.zip(secret_id).map(|(role_id, secret_id)| RemoteAuth::AppRole { role_id, secret_id, mount })
        }
    };
    if r.count() != before {
        return None;
    }
    Some(RemoteVaultConfig {
        name: name.to_owned(),
        kind: v.kind,
        addr: v.addr.trim_end_matches('/').to_owned(),
        ca_cert: v.ca_cert.map(|p| base.join(p)),
        namespace: v.namespace.filter(|n| !n.is_empty()),
        auth: auth?,
        cache_ttl_seconds: v.cache_ttl_seconds,
        timeout_ms: v.timeout_ms,
    })
}

/// `addr`: `https://host:port`, or `http` for a loopback host; nothing else in the URL.
fn check_addr(r: &mut Report<'_, '_>, at: &FieldPath, addr: &str) {
    let u = match url::Url::parse(addr) {
        Ok(u) => u,
        Err(e) => return r.problem(at, ProblemCode::BadUrl, format!("not a URL: {e}")),
    };
    let host_loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match u.scheme() {
        "https" => {}
        "http" if host_loopback => {}
        "http" => return r.problem(at, ProblemCode::InsecureTransport, "http is allowed only for a loopback address; use https"),
        s => return r.problem(at, ProblemCode::BadUrl, format!("scheme {s} is not https")),
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        r.problem(at, ProblemCode::BadUrl, "give only scheme, host and port (no path, query or credentials)");
    }
}
