//! `airlock migrate --to postgres://...`: copies the SQLite store of the data directory into a
//! PostgreSQL database in one transaction. Running it again changes nothing; a database holding
//! other data is refused.

use airlock_store::Store;
use anyhow::{bail, Context, Result};
use std::path::Path;

pub async fn run(config: &Path, to: &str, json: bool) -> Result<u8> {
    let cfg = super::load(config)?;
    if cfg.store.url.is_some() {
        bail!("the configured store is already PostgreSQL (store.url); migrate copies the SQLite store of data_dir");
    }
    airlock_core::config::validate_store_url(to).map_err(|m| anyhow::anyhow!("--to {m}"))?;
    let dir = &cfg.store.data_dir;
    if !dir.join("store.db").exists() {
        bail!("{} has no store.db to migrate", dir.display());
    }
    let source = Store::open(dir).await.with_context(|| format!("opening the store in {}", dir.display()))?;
    let target = Store::open_postgres(to, dir).await.context("opening the PostgreSQL target")?;
    let bar = super::progress::bar(0, "rows");
    let report = source
        .copy_into_reporting(&target, &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
    bar.finish_and_clear();
    if json {
        super::print_json(&serde_json::json!({"rows": report.rows, "copied": report.copied}))?;
    } else if report.copied == 0 {
        println!("nothing to do: the target already holds this store ({} rows)", report.rows);
    } else {
        println!("copied {} rows into PostgreSQL; set store.url to use it", report.copied);
    }
    Ok(0)
}
