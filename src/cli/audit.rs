//! `airlock audit`: the newest audit records as JSON lines, and the verification of the hash
//! chain and its signed checkpoints.

use crate::home;
use airlock_store::audit::AuditKey;
use anyhow::Result;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print the newest records as JSON lines.
    Tail {
        /// How many.
        #[arg(short, long, default_value_t = 20)]
        n: i64,
    },
    /// Verify the hash chain and the signed checkpoints; exits 1 on the first bad record.
    Verify,
}

pub async fn run(config: &Path, cmd: AuditCmd) -> Result<u8> {
    let cfg = super::load(config)?;
    let store = home::open_store(&cfg).await?;
    match cmd {
        AuditCmd::Tail { n } => {
            for (seq, r) in store.audit_tail(n).await? {
                let mut v = serde_json::to_value(&r)?;
                v["seq"] = seq.into();
                println!("{}", serde_json::to_string(&v)?);
            }
            Ok(0)
        }
        AuditCmd::Verify => {
            let pk = AuditKey::load_public(&cfg.store.data_dir)?;
            let r = store.verify_audit(&pk).await?;
            match &r.first_bad {
                None => {
                    println!("audit ok: {} records, {} signed checkpoints, last seq {}", r.records, r.checkpoints, r.last_seq);
                    Ok(0)
                }
                Some((seq, why)) => {
                    println!("audit BROKEN at record {seq}: {why}");
                    Ok(1)
                }
            }
        }
    }
}
