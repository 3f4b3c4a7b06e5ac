//! `airlock backup FILE` and `airlock restore FILE --to DIR`: an online, encrypted snapshot of
//! the SQLite store and the audit signing key, and its restore into a new data directory that
//! must verify ([`airlock_vault::backup`] has the format). A PostgreSQL store is backed up with
//! `pg_dump` together with the data directory's key files (README, "Backup and restore").

use airlock_core::config::Config;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// `airlock backup FILE`
pub async fn backup(cfg: &Config, file: &Path, json: bool) -> Result<u8> {
    if cfg.store.url.is_some() {
        bail!("this store is on PostgreSQL: back it up with pg_dump, with master.key and audit-signing.key of {}", cfg.store.data_dir.display());
    }
    let dir = &cfg.store.data_dir;
    let master = airlock_vault::wrap::open(&cfg.store.master_key, &cfg.vaults, &dir.join("master.key")).await.context("opening the master key")?;
    let store = crate::home::open_store(cfg).await?;
    let s = airlock_vault::backup::write(&store, dir, &master, &cfg.store.master_key, file).await?;
    let key_apart = cfg.store.master_key.wrap == airlock_core::config::MasterKeyWrap::File;
    if json {
        let out = serde_json::json!({
            "file": file,
            "bytes": s.bytes,
            "last_seq": s.last_seq,
            "records": s.records,
            "master_key_included": !key_apart,
        });
        super::print_json(&out)?;
        return Ok(0);
    }
    println!("backed up to {} ({} bytes sealed; audit through record {}, {} records)", file.display(), s.bytes, s.last_seq, s.records);
    if key_apart {
        println!("the master key is a plain file and is not in the backup: keep {} apart from it", dir.join("master.key").display());
    }
    Ok(0)
}

/// `airlock restore FILE --to DIR [--master-key-file F]`
pub async fn restore(cfg: &Config, file: &Path, to: &Path, raw_key: Option<&Path>, json: bool) -> Result<u8> {
    let s = airlock_vault::backup::restore(file, to, &cfg.store.master_key, &cfg.vaults, raw_key).await?;
    if json {
        super::print_json(&serde_json::json!({"file": file, "data_dir": to, "last_seq": s.last_seq}))?;
        return Ok(0);
    }
    println!(
        "restored {} into {} (audit verified through record {}); point [store] data_dir at it",
        file.display(),
        to.display(),
        s.last_seq
    );
    Ok(0)
}
