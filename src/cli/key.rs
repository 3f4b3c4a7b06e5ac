//! `airlock key`: the master key at rest. `key wrap` re-protects the existing master key as
//! `[store.master_key]` now says (a raw file to a passphrase or an OpenBao/Vault transit key, a
//! new passphrase, another transit key). The key itself does not change, so no secret is
//! re-sealed; the file is replaced atomically, and the key is checked against a sealed secret
//! before the old file goes. `key status` says how the file is protected.

use airlock_core::config::{Config, MasterKeyWrap};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
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
    /// How the master key file is protected now, and whether that matches the configuration.
    Status,
}

pub async fn run(cfg: &Config, cmd: KeyCmd) -> Result<u8> {
    let path = cfg.store.data_dir.join("master.key");
    let current = airlock_vault::wrap::current_wrap(&path)?;
    match cmd {
        KeyCmd::Status => {
            let want = cfg.store.master_key.wrap;
            println!("{}: {current:?}{}", path.display(), if current == want { "" } else { " (the configuration says otherwise)" });
            Ok(if current == want { 0 } else { 1 })
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
            println!("{}: {current:?} -> {:?}", path.display(), cfg.store.master_key.wrap);
            Ok(0)
        }
    }
}
