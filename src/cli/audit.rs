//! `airlock audit`: the newest audit records as JSON lines, the export of every record from a
//! sequence number on (stored form or OCSF events, optionally following new ones), the
//! verification of the hash chain and its signed checkpoints, the export of those checkpoints
//! for a verifier outside the host,
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
    /// Print the records from a sequence number on as JSON lines, as stored (with their hashes)
    /// or as OCSF events; --follow keeps printing new ones until interrupted.
    Export(ExportArgs),
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

// The arguments of `audit export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The first sequence number to print (records are numbered 1, 2, ... with no gap).
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    from: i64,
    /// After the last record, keep polling for new ones (every half second) until interrupted.
    #[arg(long)]
    follow: bool,
    /// `jsonl`: each stored row ({seq, format, ts, agent, tool, decision, body, prev_hash,
    /// hash}, hashes in hex); `ocsf`: an OCSF 1.3.0 event per record (docs/audit-format.md).
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    format: ExportFormat,
    /// Records read from the store per query (what the export holds in memory at once).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    page_size: i64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    Ocsf,
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

/// Runs one `airlock audit` command. `json`: the global `--json` (`verify` reads its own field of
/// the same id), for `public-key` and `rotate-key`.
pub async fn run(config: &Path, cmd: AuditCmd, json: bool) -> Result<u8> {
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
        AuditCmd::Export(args) => {
            let store = home::open_store(&cfg).await?;
            export_records(&store, &args).await
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
        AuditCmd::PublicKey => public_key(&cfg.store.data_dir, json),
        AuditCmd::RotateKey => {
            let store = home::open_store(&cfg).await?;
            rotate_key(&store, &cfg.store.data_dir, json).await
        }
    }
}

/// `audit rotate-key`: stages a new key in the data directory and appends the hand-over with the
/// key in use (reloaded first when another process already rotated it).
async fn rotate_key(store: &airlock_store::Store, dir: &Path, json: bool) -> Result<u8> {
    let key = AuditKey::load(dir).context("reading the audit signing key (run as the broker's user)")?;
    let log = AuditLog::start(store.clone(), key);
    let next = AuditKey::stage(dir).context("writing the new audit signing key")?;
    let r = log.rotate_key(next).await.context("rotating the audit signing key")?;
    if json {
        super::print_json(&serde_json::json!({
            "public_key": hex::encode(&r.next),
            "previous_public_key": hex::encode(&r.previous),
            "handover_seq": r.seq,
        }))?;
        return Ok(0);
    }
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

/// `audit export`: the records from `--from` on, a page at a time (never the whole table in
/// memory), one JSON line each; with `--follow`, polls for new records after the last.
async fn export_records(store: &airlock_store::Store, args: &ExportArgs) -> Result<u8> {
    use airlock_core::config::AuditExportFormat;
    let format = match args.format {
        ExportFormat::Jsonl => AuditExportFormat::Jsonl,
        ExportFormat::Ocsf => AuditExportFormat::Ocsf,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = args.from.max(1) - 1;
    // The records there are now; a follow goes on past them without a bar.
    let head = store.audit_head().await.context("reading the audit log")?;
    let bar = super::progress::bar(head.saturating_sub(after).max(0) as u64, "records");
    loop {
        let page = store.audit_records(after, args.page_size).await.context("reading the audit log")?;
        bar.inc(page.len() as u64);
        for rec in &page {
            let line = airlock_store::audit_export::render(rec, format).with_context(|| format!("rendering record {}", rec.seq))?;
            if let Err(e) = writeln!(out, "{line}") {
                return broken_pipe_is_done(e);
            }
        }
        if let Some(last) = page.last() {
            after = last.seq;
        }
        if let Err(e) = out.flush() {
            return broken_pipe_is_done(e);
        }
        if (page.len() as i64) < args.page_size {
            bar.finish_and_clear();
            if !args.follow {
                return Ok(0);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// A reader that went away (`| head`) ends the export normally; any other write error fails it.
fn broken_pipe_is_done(e: std::io::Error) -> Result<u8> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(0);
    }
    Err(anyhow::Error::new(e).context("writing the export"))
}

/// `audit public-key`: the public half of audit-signing.key; refuses when audit-signing.pub,
/// which `verify` trusts by default, says otherwise.
fn public_key(dir: &Path, json: bool) -> Result<u8> {
    let key = AuditKey::load(dir).context("reading the audit signing key (run as the broker's user)")?;
    let hex_key = hex::encode(key.public_key());
    if json {
        let file = AuditKey::load_public(dir).ok();
        let matches = file.as_deref() == Some(key.public_key().as_slice());
        super::print_json(&serde_json::json!({"public_key": hex_key, "pub_file_matches": matches}))?;
        return Ok(if matches { 0 } else { 1 });
    }
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
