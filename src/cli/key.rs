//! `airlock key`: the master key at rest. `key wrap` re-protects the existing master key as
//! `[store.master_key]` now says (a raw file to a passphrase or an OpenBao/Vault transit key, a
//! new passphrase, another transit key). The key itself does not change, so no secret is
//! re-sealed; the file is replaced atomically, and the key is checked against a sealed secret
//! before the old file goes. `key rotate` changes the key that seals the data keys: a new key
//! version, every value re-wrapped under it online, the old versions deleted
//! (`airlock_vault::keyring`). `key status` says how the file is protected and where a rotation
//! stands.

use airlock_core::config::{Config, MasterKeyWrap};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Protect the master key as [store.master_key] says. The current protection is opened with
    /// the same settings, or, for a passphrase being changed or removed, with
    /// --old-passphrase-file.
    Wrap {
        /// The current passphrase, from this file (0600), when the file is passphrase-wrapped
        /// and [store.master_key] no longer names its passphrase.
        #[arg(long)]
        old_passphrase_file: Option<PathBuf>,
    },
    /// How the master key file is protected now, whether that matches the configuration, and
    /// the key versions (a rotation under way, and how many values it has left).
    Status,
    /// Rotate the key that seals the data keys: a new key version, every sealed value re-wrapped
    /// under it while the broker keeps serving, then the old versions deleted. Interrupted, run
    /// it again: it resumes. Audited.
    Rotate,
}

pub async fn run(cfg: &Config, cmd: KeyCmd, json: bool) -> Result<u8> {
    let path = cfg.store.data_dir.join("master.key");
    let current = airlock_vault::wrap::current_wrap(&path)?;
    match cmd {
        KeyCmd::Status if json => status_json(cfg, &path, current).await,
        KeyCmd::Status => {
            let want = cfg.store.master_key.wrap;
            println!("{}: {current:?}{}", path.display(), if current == want { "" } else { " (the configuration says otherwise)" });
            // The versions are read with the key as configured; a key that does not open that
            // way was reported above.
            let status = match crate::home::open_vault(cfg).await {
                Ok(vault) => vault.rotation_status().await.context("reading the key versions")?,
                Err(e) => {
                    println!("key versions: not read ({e:#})");
                    return Ok(1);
                }
            };
            match (status.versions.len(), status.in_progress()) {
                (0, _) => println!("key versions: the master key only (never rotated)"),
                (_, false) => println!("key version {}", status.active),
                (_, true) => println!(
                    "key version {}; rotation under way: {} value(s) still under version(s) {:?} (run `airlock key rotate` to finish it)",
                    status.active,
                    status.remaining,
                    status.versions.iter().filter(|v| **v != status.active).collect::<Vec<_>>()
                ),
            }
            Ok(if current == want && !status.in_progress() { 0 } else { 1 })
        }
        KeyCmd::Rotate => {
            let vault = crate::home::open_vault(cfg).await?;
            let audit_key = airlock_store::audit::AuditKey::load(&cfg.store.data_dir).context("reading the audit signing key")?;
            let audit = airlock_store::audit::AuditLog::start(vault.store().clone(), audit_key);
            let mut last = std::time::Instant::now();
            let mut progress = |done: u64, total: u64| {
                if last.elapsed() >= std::time::Duration::from_secs(1) {
                    last = std::time::Instant::now();
                    eprintln!("re-wrapped {done} of {total}");
                }
            };
            let (started, report) = airlock_server::broker::keys::rotate_master_key(&vault, &audit, &mut progress).await.context("rotating the master key")?;
            if json {
                super::print_json(&json!({
                    "version": report.version,
                    "resumed": started.is_none(),
                    "rewrapped": report.rewrapped,
                    "retired": report.retired,
                }))?;
                return Ok(0);
            }
            match started {
                Some(v) => eprintln!("started key version {v}"),
                None => eprintln!("resumed the rotation to key version {}", report.version),
            }
            println!(
                "key version {}: {} value(s) re-wrapped, {} older version(s) deleted",
                report.version, report.rewrapped, report.retired
            );
            Ok(0)
        }
        KeyCmd::Wrap { old_passphrase_file } => {
            let mut old = cfg.store.master_key.clone();
            if let Some(f) = old_passphrase_file {
                if current != MasterKeyWrap::Passphrase {
                    bail!("--old-passphrase-file is for a passphrase-wrapped key; this one is {current:?}");
                }
                old.passphrase_file = Some(f);
                old.passphrase_fd = None;
            } else if current == MasterKeyWrap::Passphrase && cfg.store.master_key.wrap != MasterKeyWrap::Passphrase {
                bail!("the key is passphrase-wrapped: give its passphrase with --old-passphrase-file");
            }
            let key = airlock_vault::wrap::open_as(current, &old, &cfg.vaults, &path).await.context("opening the current master key")?;
            // The key must open what the store holds before the old file is replaced.
            let vault = airlock_vault::Vault::new(key, crate::home::open_store(cfg).await?);
            vault.check_key().await.context("the master key does not open the stored secrets")?;
            airlock_vault::wrap::write_wrapped(vault.master(), &cfg.store.master_key, &cfg.vaults, &path)
                .await
                .context("writing the wrapped key")?;
            // Read back as the broker will, before saying it is done.
            airlock_vault::wrap::open(&cfg.store.master_key, &cfg.vaults, &path).await.context("reading the new key file back")?;
            let audit_key = airlock_store::audit::AuditKey::load(&cfg.store.data_dir).context("reading the audit signing key")?;
            let audit = airlock_store::audit::AuditLog::start(vault.store().clone(), audit_key);
            let target = serde_json::json!({"from": format!("{current:?}"), "to": format!("{:?}", cfg.store.master_key.wrap)});
            airlock_server::broker::keys::audit_key_event(&audit, "master_key_wrapped", "master key re-protected by the operator", target)
                .await
                .context("auditing the new protection")?;
            if json {
                super::print_json(&json!({
                    "file": path,
                    "from": super::snake_case(&format!("{current:?}")),
                    "to": super::snake_case(&format!("{:?}", cfg.store.master_key.wrap)),
                }))?;
            } else {
                println!("{}: {current:?} -> {:?}", path.display(), cfg.store.master_key.wrap);
            }
            Ok(0)
        }
    }
}

/// `key status --json`: what the text says, as one object; the same exit code (1 when the
/// protection differs from the configuration, a rotation is under way, or the versions could
/// not be read).
async fn status_json(cfg: &Config, path: &std::path::Path, current: MasterKeyWrap) -> Result<u8> {
    let want = cfg.store.master_key.wrap;
    let mut out = json!({
        "file": path,
        "wrap": super::snake_case(&format!("{current:?}")),
        "configured_wrap": super::snake_case(&format!("{want:?}")),
        "matches_configuration": current == want,
    });
    let code = match crate::home::open_vault(cfg).await {
        Ok(vault) => {
            let s = vault.rotation_status().await.context("reading the key versions")?;
            out["active_version"] = json!(s.active);
            out["versions"] = json!(s.versions);
            out["remaining"] = json!(s.remaining);
            out["rotation_in_progress"] = json!(s.in_progress());
            if current == want && !s.in_progress() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            out["error"] = json!(format!("{e:#}"));
            1
        }
    };
    super::print_json(&out)?;
    Ok(code)
}
