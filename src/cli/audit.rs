//! `airlock audit`: the newest audit records as JSON lines, the verification of the hash chain
//! and its signed checkpoints, the export of those checkpoints for a verifier outside the host,
//! the public key that verifies them, and the rotation of the signing key with a signed
//! hand-over (after which `verify` accepts the original key, the new one or any between).
//!
//! Exit codes of `verify`: 0 intact, 1 the first bad record (or checkpoint line) named with its
//! stable code (`audit-hash-mismatch`, `audit-record-missing`, ...; see
//! `airlock_store::audit::Failure` and docs/audit-format.md), 2 verification could not run (no
//! store, no key, an unreadable file).

use crate::home;
use airlock_store::audit::{self, AuditKey, AuditLog, CheckpointFileReport, VerifyReport};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print the newest records as JSON lines.
    Tail {
        /// How many.
        #[arg(short, long, default_value_t = 20)]
        n: i64,
    },
    /// Verify the hash chain (every column of every record) and the signed checkpoints; exits 1
    /// naming the first bad record and a stable code.
    Verify(VerifyArgs),
    /// Signed checkpoints for a verifier outside this host.
    Checkpoints {
        #[command(subcommand)]
        cmd: CheckpointsCmd,
    },
    /// Print the public key that verifies the checkpoints (hex, from audit-signing.key).
    PublicKey,
    /// Replace the signing key with a new one, through a hand-over record signed by both;
    /// prints the new public key (pin it) and the hand-over's seq.
    RotateKey,
}

// The arguments of `audit verify` (its help text is the variant's above).
#[derive(Args)]
pub struct VerifyArgs {
    /// The audit public key to trust (hex, as `airlock audit public-key` prints it), instead of
    /// the data directory's audit-signing.pub. Keep a copy away from this host.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// A file written by `airlock audit checkpoints export`: each of its checkpoints must verify
    /// and the chain must still hold the record it signs (catches truncation and a chain
    /// re-signed with another key).
    #[arg(long, value_name = "FILE")]
    checkpoints: Option<PathBuf>,
    /// Verify only the --checkpoints file with only the --public-key: reads no configuration and
    /// no store (for a party outside this host).
    #[arg(long, requires_all = ["checkpoints", "public_key"])]
    offline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum CheckpointsCmd {
    /// Write the signed checkpoints as JSON lines {seq, hash, time, signature, format}, with the
    /// signing-key hand-overs among them ({"kind": "key_handover", ...}); they verify with one
    /// public key alone.
    Export {
        /// Only the checkpoints of records after this sequence number (for incremental export).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Write to this file instead of stdout (appending, so exports can accumulate).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub async fn run(config: &Path, cmd: AuditCmd) -> Result<u8> {
    if let AuditCmd::Verify(args) = &cmd {
        if args.offline {
            return verify_offline(args);
        }
    }
    let cfg = super::load(config)?;
    match cmd {
        AuditCmd::Tail { n } => {
            let store = home::open_store(&cfg).await?;
            for (seq, r) in store.audit_tail(n).await? {
                let mut v = serde_json::to_value(&r)?;
                v["seq"] = seq.into();
                println!("{}", serde_json::to_string(&v)?);
            }
            Ok(0)
        }
        AuditCmd::Verify(args) => {
            let pk = match &args.public_key {
                Some(f) => AuditKey::load_public_file(f).context("reading --public-key")?,
                None => AuditKey::load_public(&cfg.store.data_dir).context("reading the data directory's audit public key")?,
            };
            let file = match &args.checkpoints {
                Some(f) => Some(checkpoint_file(f, &pk)?),
                None => None,
            };
            if let Some(bad) = file.as_ref().and_then(|f| f.first_bad.as_ref()) {
                return Ok(print_file_report(file.as_ref().expect("checked"), args.json, bad.to_string()));
            }
            let store = home::open_store(&cfg).await?;
            let anchors = file.map(|f| f.anchors).unwrap_or_default();
            let r = store.verify_audit_anchored(&pk, &anchors).await.context("reading the audit log")?;
            Ok(print_report(&r, args.json))
        }
        AuditCmd::Checkpoints { cmd: CheckpointsCmd::Export { after, output } } => {
            let store = home::open_store(&cfg).await?;
            export(&store, after, output.as_deref()).await
        }
        AuditCmd::PublicKey => public_key(&cfg.store.data_dir),
        AuditCmd::RotateKey => {
            let store = home::open_store(&cfg).await?;
            rotate_key(&store, &cfg.store.data_dir).await
        }
    }
}

/// `audit rotate-key`: stages a new key in the data directory and appends the hand-over with the
/// key in use (reloaded first when another process already rotated it).
async fn rotate_key(store: &airlock_store::Store, dir: &Path) -> Result<u8> {
    let key = AuditKey::load(dir).context("reading the audit signing key (run as the broker's user)")?;
    let log = AuditLog::start(store.clone(), key);
    let next = AuditKey::stage(dir).context("writing the new audit signing key")?;
    let r = log.rotate_key(next).await.context("rotating the audit signing key")?;
    println!("{}", hex::encode(&r.next));
    eprintln!(
        "audit signing key rotated at record {}: checkpoints up to it verify with {}, later ones with the new key above. \
         `audit verify` accepts either; pin the new key and export the checkpoints (`audit checkpoints export`).",
        r.seq,
        hex::encode(&r.previous)
    );
    Ok(0)
}

/// Reads and verifies an exported checkpoint file with `pk`.
fn checkpoint_file(path: &Path, pk: &[u8]) -> Result<CheckpointFileReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(audit::verify_checkpoint_file(&text, pk))
}

/// `audit verify --offline`: the checkpoint file and the public key, nothing else.
fn verify_offline(args: &VerifyArgs) -> Result<u8> {
    let (Some(cps), Some(key)) = (&args.checkpoints, &args.public_key) else {
        bail!("--offline needs --checkpoints FILE and --public-key FILE");
    };
    let pk = AuditKey::load_public_file(key).context("reading --public-key")?;
    let r = checkpoint_file(cps, &pk)?;
    let summary = match (&r.first_bad, &r.last) {
        (Some(bad), _) => bad.to_string(),
        (None, Some(last)) => format!(
            "checkpoints ok: {} signed checkpoints ({} in the legacy format 1, time not signed){}, last seq {} hash {} signed at {}",
            r.checkpoints,
            r.legacy_checkpoints,
            keys_note(r.handovers, r.keys),
            last.seq,
            last.hash,
            last.time
        ),
        (None, None) => bail!("{} holds no checkpoint", cps.display()),
    };
    Ok(print_file_report(&r, args.json, summary))
}

/// Prints a checkpoint file's report; its exit code.
fn print_file_report(r: &CheckpointFileReport, json: bool, summary: String) -> u8 {
    if json {
        println!("{}", serde_json::json!({"ok": r.ok(), "checkpoint_file": r}));
    } else if r.ok() {
        println!("{summary}");
    } else {
        println!("checkpoints BROKEN at {summary}");
    }
    u8::from(!r.ok())
}

/// Prints the chain's report; its exit code.
fn print_report(r: &VerifyReport, json: bool) -> u8 {
    if json {
        println!("{}", serde_json::json!({"ok": r.ok(), "audit": r}));
        return u8::from(!r.ok());
    }
    match &r.first_bad {
        None => {
            let anchors = if r.anchors > 0 { format!(", {} exported checkpoints held", r.anchors) } else { String::new() };
            println!(
                "audit ok: {} records ({} in the legacy format 1), {} signed checkpoints{}{anchors}, last seq {}",
                r.records,
                r.legacy_records,
                r.checkpoints,
                keys_note(r.handovers, r.keys),
                r.last_seq
            );
            0
        }
        Some(bad) => {
            println!("audit BROKEN at record {}: {}: {}", bad.seq, bad.code.code(), bad.detail);
            1
        }
    }
}

/// `, K signing keys (H hand-overs)` after a rotation; nothing before the first.
fn keys_note(handovers: u64, keys: u64) -> String {
    if handovers == 0 {
        return String::new();
    }
    format!(", {keys} signing keys ({handovers} hand-over{})", if handovers == 1 { "" } else { "s" })
}

/// `audit checkpoints export`: pages through the checkpoints (and the hand-overs among them),
/// one JSON line each.
async fn export(store: &airlock_store::Store, after: i64, output: Option<&Path>) -> Result<u8> {
    const PAGE: i64 = 10_000;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new().create(true).append(true).open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut after = after;
    loop {
        let page = store.audit_export(after, PAGE).await.context("reading the checkpoints")?;
        for line in &page {
            writeln!(out, "{}", serde_json::to_string(line)?).context("writing the export")?;
        }
        let checkpoints: Vec<i64> = page
            .iter()
            .filter_map(|l| match l {
                audit::ExportLine::Checkpoint(c) => Some(c.seq),
                audit::ExportLine::Handover(_) => None,
            })
            .collect();
        match checkpoints.last() {
            Some(last) if checkpoints.len() as i64 == PAGE => after = *last,
            _ => break,
        }
    }
    out.flush().context("writing the export")?;
    Ok(0)
}

/// `audit public-key`: the public half of audit-signing.key; refuses when audit-signing.pub,
/// which `verify` trusts by default, says otherwise.
fn public_key(dir: &Path) -> Result<u8> {
    let key = AuditKey::load(dir).context("reading the audit signing key (run as the broker's user)")?;
    let hex_key = hex::encode(key.public_key());
    println!("{hex_key}");
    match AuditKey::load_public(dir) {
        Ok(file) if file == key.public_key() => Ok(0),
        Ok(_) => {
            eprintln!("warning: audit-signing.pub does not match audit-signing.key; `audit verify` without --public-key trusts the .pub file");
            Ok(1)
        }
        Err(e) => {
            eprintln!("warning: {e}");
            Ok(1)
        }
    }
}
