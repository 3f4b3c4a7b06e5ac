//! The broker's home: the process hardening done first thing, the checks that keep `serve` from
//! running on files others can read (T22), the agents' Unix socket, and opening the store and
//! the vault that live there.

use airlock_core::config::{Config, ServerConfig};
use airlock_store::Store;
use airlock_vault::Vault;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// No core dumps (`RLIMIT_CORE` 0), not dumpable (`PR_SET_DUMPABLE` 0: no ptrace attach, no
/// `/proc/PID/mem` or `environ` for other processes of the same user without `CAP_SYS_PTRACE`),
/// and a umask of 077 so that every file this process creates (store, keys, outbox, socket
/// before its mode is set) is private. Called as the first thing in `main`, for every command:
/// any of them may hold a secret (`secret put`, `open`, `share`) or a token.
pub fn harden_process() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    if let Err(e) = airlock_exec_command::make_non_dumpable() {
        eprintln!("warning: cannot make this process non-dumpable: {e}");
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `serve` refuses to start; `doctor` exits 1.
    Error,
    /// Worth fixing; nothing refuses.
    Warning,
    /// As it should be.
    Ok,
}

/// One thing `doctor` (or `serve`'s start-up check) found, with how to fix it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// A stable kebab-case id of the check.
    pub check: &'static str,
    /// What was found.
    pub message: String,
    /// How to fix it (empty when nothing is to be done).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Finding {
    pub fn new(level: Level, check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { level, check, message: message.into(), fix: fix.into() }
    }
}

/// The files that hold the keys to everything: the master key, the audit signing key, and the
/// SQLite store (sealed secrets, token hashes, the audit log) with its journal files.
fn key_files(cfg: &Config) -> Vec<PathBuf> {
    let dir = &cfg.store.data_dir;
    let mut v = vec![dir.join("master.key"), dir.join("audit-signing.key")];
    if cfg.store.url.is_none() {
        for f in ["store.db", "store.db-wal", "store.db-shm"] {
            v.push(dir.join(f));
        }
    }
    v
}

/// What a path of the broker's home is, for [`private_findings`].
struct Private {
    /// `data-dir` or `key-file`: the prefix of the checks' ids.
    kind: &'static str,
    /// The mode it should have.
    mode: u32,
}

/// An error for `path` owned by another user than `me`, or open to group or others.
fn private_findings(path: &Path, m: &std::fs::Metadata, me: u32, want: &Private, out: &mut Vec<Finding>) {
    let mode = m.permissions().mode() & 0o777;
    let shown = path.display();
    let mut ok = true;
    if m.uid() != me {
        ok = false;
        let check = if want.kind == "data-dir" { "data-dir-owner" } else { "key-file-owner" };
        let message = format!("{shown} is owned by uid {}, not by the broker's uid {me}", m.uid());
        out.push(Finding::new(Level::Error, check, message, format!("chown {me} {shown}")));
    }
    let check = if want.kind == "data-dir" { "data-dir-mode" } else { "key-file-mode" };
    if mode & 0o077 != 0 {
        ok = false;
        let message = format!("{shown} has mode {mode:03o}: group or others can reach it");
        out.push(Finding::new(Level::Error, check, message, format!("chmod {:o} {shown}", want.mode)));
    }
    if ok && want.kind == "data-dir" {
        out.push(Finding::new(Level::Ok, check, format!("{shown} is {:o} and the broker's", want.mode), ""));
    }
}

/// Modes and owners of the data directory and the key files: an error for anything readable or
/// writable by group or others, owned by another user than this process's, or a symbolic link.
pub fn home_findings(cfg: &Config) -> Vec<Finding> {
    let me = nix::unistd::geteuid().as_raw();
    let dir = &cfg.store.data_dir;
    let mut out = Vec::new();
    match std::fs::metadata(dir) {
        Err(e) => {
            let fix = "run `airlock init`, or set store.data_dir";
            out.push(Finding::new(Level::Error, "data-dir-missing", format!("{}: {e}", dir.display()), fix));
        }
        Ok(m) => private_findings(dir, &m, me, &Private { kind: "data-dir", mode: 0o700 }, &mut out),
    }
    for f in key_files(cfg) {
        let Ok(m) = std::fs::symlink_metadata(&f) else { continue };
        if m.file_type().is_symlink() {
            let fix = "keep the key files as plain files in the data directory";
            out.push(Finding::new(Level::Error, "key-file-symlink", format!("{} is a symbolic link", f.display()), fix));
        }
        private_findings(&f, &m, me, &Private { kind: "key-file", mode: 0o600 }, &mut out);
    }
    out
}

/// `serve` does not start on a home that others can read (T22).
pub fn refuse_unsafe_home(cfg: &Config) -> Result<()> {
    let bad: Vec<String> = home_findings(cfg)
        .into_iter()
        .filter(|f| f.level == Level::Error)
        .map(|f| format!("  {}: {} (fix: {})", f.check, f.message, f.fix))
        .collect();
    if !bad.is_empty() {
        bail!("refusing to serve: the broker's files are not private to it\n{}\n`airlock doctor` checks the whole deployment", bad.join("\n"));
    }
    Ok(())
}

/// The gid of `group` (a name or a number).
pub fn group_id(group: &str) -> Result<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => bail!("server.socket_group: no group named {group:?}"),
        Err(e) => bail!("server.socket_group {group:?}: {e}"),
    }
}

/// Binds the agents' socket at `path` with `server.socket_mode` and `server.socket_group`.
/// Creates a missing parent directory (mode 0750, in the socket's group). A stale socket from a
/// previous run is replaced; a live one (another broker answers) or any other kind of file is
/// refused.
pub fn bind_socket(path: &Path, server: &ServerConfig) -> Result<tokio::net::UnixListener> {
    let gid = server.socket_group.as_deref().map(group_id).transpose()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o750))?;
            if let Some(g) = gid {
                std::os::unix::fs::chown(parent, None, Some(g)).with_context(|| format!("chgrp {g} {}", parent.display()))?;
            }
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            bail!("{} exists and is not a socket; refusing to replace it (server.socket)", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another airlock broker is serving at {} (server.socket); stop it or set another path", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| format!("binding the socket {}", path.display()))?;
    // The umask (077) made it private at bind; now open it to the agents' group.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(server.socket_mode))
        .with_context(|| format!("chmod {:o} {}", server.socket_mode, path.display()))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).with_context(|| format!("chgrp {g} {}", path.display()))?;
    }
    Ok(l)
}

/// The configured store: `store.url`'s PostgreSQL database, or the SQLite file.
pub async fn open_store(cfg: &Config) -> Result<Store> {
    match &cfg.store.url {
        Some(_) => Store::connect(&cfg.store).await.context("opening the PostgreSQL store (store.url)"),
        None => Store::connect(&cfg.store)
            .await
            .with_context(|| format!("opening the store in {}", cfg.store.data_dir.display())),
    }
}

/// The local vault with the configured remotes; its master key must exist.
pub async fn open_vault(cfg: &Config) -> Result<Vault> {
    let path = cfg.store.data_dir.join("master.key");
    if !path.exists() {
        anyhow::bail!("{} does not exist: run `airlock init` first", path.display());
    }
    let master = airlock_vault::wrap::open(&cfg.store.master_key, &cfg.vaults, &path).await.context("opening the master key")?;
    let store = open_store(cfg).await?;
    let vault = Vault::with_remotes(master, store, cfg.vaults.values())?;
    vault.reload_keyring().await.context("reading the key versions")?;
    Ok(vault)
}
