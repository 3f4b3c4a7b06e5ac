//! `airlock init`: a commented starter configuration, the private data directory beside it, the
//! master key, the audit signing key and an empty store. Refuses to overwrite any of them.

use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::MasterKey;
use anyhow::{bail, Context, Result};
use std::path::Path;

pub async fn run(config: &Path, json: bool) -> Result<u8> {
    if config.exists() {
        bail!("{} exists; refusing to overwrite it", config.display());
    }
    let base = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = base.join("airlock-data");
    if dir.join("master.key").exists() || dir.join("audit-signing.key").exists() {
        bail!("{} already holds keys; refusing to overwrite them", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    MasterKey::create(&dir.join("master.key"))?;
    AuditKey::create(&dir)?;
    Store::open(&dir).await?;
    std::fs::write(config, include_str!("../starter.toml")).with_context(|| format!("writing {}", config.display()))?;
    if json {
        super::print_json(&serde_json::json!({
            "config": config,
            "data_dir": dir,
            "files": ["master.key", "audit-signing.key", "store.db"],
        }))?;
    } else {
        println!("created {}, {}/ (master.key, audit-signing.key, store.db)", config.display(), dir.display());
    }
    Ok(0)
}

/// `airlock init --data-only`: the data directory of an existing configuration, for a container
/// whose configuration is mounted read-only (a Kubernetes ConfigMap) and whose data directory is
/// on a volume. Idempotent: a directory holding both keys is left untouched. The new directory is
/// made beside it as `DIR.partial` and renamed into place once complete, so an interrupted run
/// leaves nothing that looks like a data directory (the next run starts over).
pub async fn data_only(config: &Path, json: bool) -> Result<u8> {
    let cfg = super::load(config)?;
    if cfg.store.url.is_some() {
        bail!(
            "store.url is set: every replica needs the same key files, so make them once and restore them on each \
             (`airlock backup FILE`, then `airlock restore FILE --to DIR`) instead of making new ones here"
        );
    }
    let dir = &cfg.store.data_dir;
    let has = |f: &str| dir.join(f).exists();
    match (has("master.key"), has("audit-signing.key")) {
        (true, true) => {
            if json {
                super::print_json(&serde_json::json!({"config": config, "data_dir": dir, "files": [], "created": false}))?;
            } else {
                println!("{} holds the keys already; nothing to do", dir.display());
            }
            return Ok(0);
        }
        (false, false) => {}
        _ => bail!("{} holds only one of master.key and audit-signing.key; refusing to make the other", dir.display()),
    }
    if dir.exists() && std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
        bail!("{} is not empty but holds no keys; refusing to initialise it", dir.display());
    }
    let name = dir.file_name().with_context(|| format!("store.data_dir {} names no directory", dir.display()))?;
    let partial = dir.with_file_name(format!("{}.partial", name.to_string_lossy()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))?;
    }
    airlock_vault::wrap::create(&cfg.store.master_key, &cfg.vaults, &partial.join("master.key"))
        .await
        .context("creating the master key")?;
    AuditKey::create(&partial)?;
    let store = Store::open_with(&partial, cfg.store.sync).await?;
    store.close().await;
    std::fs::rename(&partial, dir).with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    if json {
        super::print_json(&serde_json::json!({
            "config": config,
            "data_dir": dir,
            "files": ["master.key", "audit-signing.key", "store.db"],
            "created": true,
        }))?;
    } else {
        println!("created {}/ (master.key, audit-signing.key, store.db)", dir.display());
    }
    Ok(0)
}
