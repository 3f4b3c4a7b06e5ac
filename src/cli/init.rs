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
