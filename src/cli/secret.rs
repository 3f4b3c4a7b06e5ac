//! `airlock secret`: the local vault's secrets. Values come from stdin or a file, never from
//! argv; listing shows names and metadata, never values; import and export copy one field from or
//! to an OpenBao or Vault KV v2 secret.

use crate::home;
use airlock_core::config::{RemoteRef, SecretRef};
use airlock_core::{HandleName, Secret};
use airlock_vault::Vault;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Store a secret under HANDLE, reading the value from stdin or --from-file.
    Put {
        /// The name (a handle name).
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Replace HANDLE's secret with a new value (stdin or --from-file). The value it replaces is
    /// retired: never used again, but still redacted from results for --overlap (e.g. 1h), while
    /// it may still be valid upstream.
    Rotate {
        /// The name (a handle name).
        name: String,
        /// Read the new value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// How long the old value stays known to the scrubber: seconds, or with s, m or h.
        #[arg(long, default_value = "1h")]
        overlap: String,
    },
    /// List names and metadata (never values).
    List,
    /// Remove a secret.
    Rm {
        /// The name.
        name: String,
    },
    /// Copy a field of an OpenBao or Vault KV v2 secret into the local vault.
    Import {
        /// `openbao:NAME/MOUNT/PATH[#FIELD][@VERSION]` (`vault:` also); the field may be left
        /// out when the secret has only one.
        #[arg(long)]
        from: String,
        /// The local name (default: the field's name in upper case).
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Write a local secret into a field of an OpenBao or Vault KV v2 secret, keeping its other
    /// fields, with check-and-set: a field that holds another value is not replaced without
    /// --force, and a concurrent change makes the write fail.
    Export {
        /// The local name.
        name: String,
        /// `openbao:NAME/MOUNT/PATH#FIELD`; with `@VERSION`, the write happens only if that is
        /// still the latest version.
        #[arg(long)]
        to: String,
        /// Replace a different value.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(config: &Path, cmd: SecretCmd, json: bool) -> Result<u8> {
    let cfg = super::load(config)?;
    let vault = home::open_vault(&cfg).await?;
    match cmd {
        SecretCmd::Put { name, from_file } => put(&vault, &name, from_file.as_deref(), json).await?,
        SecretCmd::Rotate { name, from_file, overlap } => {
            let o = super::overlap(&overlap)?;
            HandleName::parse(&name).map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
            let v = vault.rotate(&name, &read_value(from_file.as_deref())?, o).await?;
            if json {
                super::print_json(&json!({"name": name, "version": v, "overlap_seconds": o.as_secs()}))?;
            } else {
                println!("rotated {name} (version {v}); the previous value is redacted for {} s more", o.as_secs());
            }
        }
        SecretCmd::List if json => {
            let list = vault.store().list_secrets().await?;
            let items = list.iter().map(|m| json!({"name": m.name, "version": m.version, "created_at": m.created_at, "updated_at": m.updated_at}));
            super::print_json(&Value::Array(items.collect()))?;
        }
        SecretCmd::List => {
            for m in vault.store().list_secrets().await? {
                println!("{}\tversion {}\tupdated {}", m.name, m.version, m.updated_at);
            }
        }
        SecretCmd::Rm { name } => {
            vault.store().remove_secret(&name).await?;
            if json {
                super::print_json(&json!({"name": name, "removed": true}))?;
            } else {
                println!("removed {name}");
            }
        }
        SecretCmd::Import { from, as_name } => import(&vault, &from, as_name, json).await?,
        SecretCmd::Export { name, to, force } => export(&vault, &name, &to, force, json).await?,
    }
    Ok(0)
}

/// `secret put`: the value from `from_file` or stdin, less one trailing newline.
async fn put(vault: &Vault, name: &str, from_file: Option<&Path>, json: bool) -> Result<()> {
    HandleName::parse(name).map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
    let v = vault.put(name, &read_value(from_file)?).await?;
    if json {
        super::print_json(&json!({"name": name, "version": v}))?;
    } else {
        println!("stored {name} (version {v})");
    }
    Ok(())
}

/// A value from `from_file` or stdin, less one trailing newline.
fn read_value(from_file: Option<&Path>) -> Result<Secret> {
    let mut buf = match from_file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("reading the secret from stdin")?;
            b
        }
    };
    super::trim_one_newline(&mut buf);
    Ok(Secret::new(buf))
}

/// Parses `openbao:...` or `vault:...` for import and export.
fn remote_arg(s: &str, need_field: bool) -> Result<RemoteRef> {
    let rest = s
        .strip_prefix("openbao:")
        .or_else(|| s.strip_prefix("vault:"))
        .ok_or_else(|| anyhow::anyhow!("{s:?}: expected openbao:NAME/MOUNT/PATH#FIELD"))?;
    RemoteRef::parse(rest, need_field).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
}

/// `secret import`: one field of the remote secret `from` (the only one when none is named) into
/// the local vault, under `as_name` or the field's name in upper case.
async fn import(vault: &Vault, from: &str, as_name: Option<String>, json: bool) -> Result<()> {
    let mut r = remote_arg(from, false)?;
    let remote = vault.remote(&r.vault)?;
    let (fields, version) = remote.read_kv(&r).await?;
    let field = match &r.field {
        Some(f) => f.clone(),
        None if fields.len() == 1 => fields[0].0.clone(),
        None => {
            let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            bail!("{from} has {} fields ({}); name one with #FIELD", names.len(), names.join(", "))
        }
    };
    r.field = Some(field.clone());
    let value = fields
        .iter()
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| anyhow::anyhow!("{r}: version {version} has no field '{field}'"))?;
    let name = as_name.unwrap_or_else(|| field.to_ascii_uppercase().replace('-', "_"));
    HandleName::parse(&name).map_err(|e| anyhow::anyhow!("{name:?}: {e}; give a local name with --as"))?;
    let v = vault.put(&name, &value).await?;
    if json {
        super::print_json(&json!({"from": r.to_string(), "remote_version": version, "name": name, "version": v}))?;
    } else {
        println!("imported {r} (version {version}) into {name} (version {v})");
    }
    Ok(())
}

/// `secret export`: the local secret `name` into the remote field `to`, with check-and-set.
async fn export(vault: &Vault, name: &str, to: &str, force: bool, json: bool) -> Result<()> {
    let r = remote_arg(to, true)?;
    let remote = vault.remote(&r.vault)?;
    let value = vault.resolve(&SecretRef::Local(name.to_owned())).await?;
    let v = remote.write_field(&r, &value, force).await?;
    let latest = RemoteRef { version: None, ..r };
    if json {
        super::print_json(&json!({"name": name, "to": latest.to_string(), "remote_version": v}))?;
    } else {
        println!("exported {name} to {latest} (version {v})");
    }
    Ok(())
}
