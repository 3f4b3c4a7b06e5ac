//! A broker in this process on a throw-away data directory: a config written to a temporary
//! directory, fresh master and audit keys, an empty store, secrets sealed and agents added
//! directly, with no `airlock` binary involved.

use airlock_core::config::Config;
use airlock_core::Secret;
use airlock_server::{Broker, Caller};
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{Context, Result};

/// The setup; the directory goes away with it.
pub struct Scratch {
    /// Holds `airlock.toml` and the data directory.
    pub dir: tempfile::TempDir,
    /// The loaded configuration.
    pub config: Config,
    /// The store of the data directory.
    pub store: Store,
}

impl Scratch {
    /// Writes `config_text` to `airlock.toml` in a new temporary directory, loads it, and
    /// creates the data directory it names with its keys and store.
    pub async fn new(config_text: &str) -> Result<Scratch> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("airlock.toml");
        std::fs::write(&path, config_text).with_context(|| format!("writing {}", path.display()))?;
        let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let data = &config.store.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        MasterKey::create(&data.join("master.key"))?;
        AuditKey::create(data)?;
        let store = Store::open(data).await.with_context(|| format!("opening the store in {}", data.display()))?;
        Ok(Scratch { dir, config, store })
    }

    /// Seals `value` under `name` in the local vault.
    pub async fn put_secret(&self, name: &str, value: &Secret) -> Result<()> {
        let master = MasterKey::load(&self.config.store.data_dir.join("master.key"))?;
        Vault::new(master, self.store.clone()).put(name, value).await?;
        Ok(())
    }

    /// Adds the agent `name` and opens the broker; the broker and the agent as a caller.
    pub async fn broker_for(&self, name: &str) -> Result<(Broker, Caller)> {
        let (_, token) = self.store.add_agent(name, None, None).await?;
        let broker = self.broker().await?;
        let caller = broker.authenticate(Some(token.reveal())).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((broker, caller))
    }

    /// Opens the broker on this setup.
    pub async fn broker(&self) -> Result<Broker> {
        Broker::open(self.config.clone()).await.context("opening the broker")
    }
}
