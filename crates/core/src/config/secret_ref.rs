//! Secret references: where a handle's (or a vault login's) secret lives.

use super::agents::valid_agent_name;
use std::path::{Path, PathBuf};

/// The prefix of the local names that values a person sent for a request are stored under
/// (`request_secret`); a configured `local:` reference may not begin with it.
pub const REQUESTED_VALUE_PREFIX: &str = "request:";

/// Vault names: `[a-z][a-z0-9_-]{0,63}`, as agent names.
pub fn valid_vault_name(s: &str) -> bool {
    valid_agent_name(s)
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
            "local" if rest.starts_with(REQUESTED_VALUE_PREFIX) || rest.contains('\0') => {
                Err(format!("local names starting with {REQUESTED_VALUE_PREFIX} or holding NUL are airlock's own (requested values)"))
            }
            "local" => Ok(SecretRef::Local(rest.to_owned())),
            "env" => Ok(SecretRef::Env(rest.to_owned())),
            "file" => Ok(SecretRef::File(base.join(rest))),
            "openbao" | "vault" => Ok(SecretRef::Remote(RemoteRef::parse(rest, true)?)),
            _ => Err(format!("unknown secret backend '{scheme}' (expected local, env, file, openbao or vault)")),
        }
    }
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
