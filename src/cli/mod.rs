//! The command line: clap's definition of every command, and the dispatch of each to the module
//! of its group. What a command does lives in its module; this one owns the top-level flags, the
//! helpers the groups share (loading the config, opening the broker, printing JSON) and the exit
//! code of an error: 3 when no broker answered at the endpoint, 2 for anything else
//! (docs/cli-json.md has every command's exit codes and JSON output).

mod account;
mod agent;
mod approve;
mod audit;
mod backup;
mod call;
mod habits;
mod init;
mod key;
mod lease;
mod migrate;
mod policy;
mod progress;
mod secret;
mod reload;
mod serve;
mod request;
mod share;

use crate::{client, demo, doctor};
use airlock_core::config::Config;
use airlock_server::Broker;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// airlock: a secrets broker for AI agents.
#[derive(Parser)]
#[command(name = "airlock", version, about, after_long_help = habits::EX_AIRLOCK)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "AIRLOCK_CONFIG", default_value = "airlock.toml")]
    config: PathBuf,
    /// Log as JSON lines (for the server).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// Print the output as JSON: one object, or one array for a list (docs/cli-json.md).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole job on a throw-away setup: brokered calls, denials, scrubbing, audit verify.
    #[command(after_long_help = habits::EX_DEMO)]
    Demo,
    /// Create a commented airlock.toml, the data directory, the master key and the audit key.
    #[command(after_long_help = habits::EX_INIT)]
    Init {
        /// Keep the existing configuration (a Kubernetes ConfigMap, say) and create only its
        /// store.data_dir: the master key, wrapped as [store.master_key] says, the audit signing
        /// key and the store. A data directory that holds both keys already is left as it is
        /// (exit 0), so a container can run this before every start.
        #[arg(long)]
        data_only: bool,
    },
    /// Serve the REST API and MCP over streamable HTTP at /mcp.
    #[command(after_long_help = habits::EX_SERVE)]
    Serve,
    /// Put the configuration file and its policies in force in the running broker, without a restart.
    ///
    /// Checks the file (every problem, every policy) first, then sends SIGHUP to the process serving
    /// the configured socket and prints what the broker did. Exit 0 reloaded, 1 refused by the broker
    /// (nothing changed), 2 the file does not load, 3 no broker answered.
    #[command(after_long_help = habits::EX_RELOAD)]
    Reload,
    /// MCP over stdio for an agent: a thin client of the running broker (its socket, or
    /// AIRLOCK_ENDPOINT) holding only the agent's token (AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE).
    #[command(after_long_help = habits::EX_MCP)]
    Mcp,
    /// Check this deployment: file modes and owners, the broker's user, the sandbox, TLS, the
    /// database credentials of read-only handles. Exits 1 on any error-level finding.
    #[command(after_long_help = habits::EX_DOCTOR)]
    Doctor,
    /// Manage secrets in the local vault (values from stdin or a file, never from argv).
    #[command(after_long_help = habits::EX_SECRET)]
    Secret {
        #[command(subcommand)]
        cmd: secret::SecretCmd,
    },
    /// Manage agent identities.
    #[command(after_long_help = habits::EX_AGENT)]
    Agent {
        #[command(subcommand)]
        cmd: agent::AgentCmd,
    },
    /// Print the tools the agent may call (a thin client of the running broker; token from
    /// AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE).
    #[command(after_long_help = habits::EX_TOOLS)]
    Tools {
        /// mcp, openai or anthropic.
        #[arg(long, default_value = "mcp")]
        format: String,
    },
    /// Invoke a tool as an agent (a thin client of the running broker; token from AIRLOCK_TOKEN
    /// or AIRLOCK_TOKEN_FILE). Exit 0 ok, 1 refused or failed, 3 no broker answered.
    #[command(after_long_help = habits::EX_CALL)]
    Call {
        /// The tool.
        tool: String,
        /// The arguments as a JSON object (including credential_handle).
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Read and verify the audit log.
    #[command(after_long_help = habits::EX_AUDIT)]
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// Check and explain policies.
    #[command(after_long_help = habits::EX_POLICY)]
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Make a one-time, end-to-end encrypted link to the secret on stdin; prints the link.
    #[command(after_long_help = habits::EX_SHARE)]
    Share(share::ShareArgs),
    /// Open a one-time link (uses one view) and print the secret.
    ///
    /// The link, `{base}/s/{id}#{key}`, is read from stdin (`airlock open < link.txt`) or, on a
    /// terminal, from a prompt that does not echo it. Never give it as an argument: arguments are
    /// visible to every user in /proc and stay in the shell's history.
    #[command(after_long_help = habits::EX_OPEN)]
    Open {
        /// Refused: a link on the command line is readable by others. Paste it at the prompt or
        /// pipe it in.
        #[arg(hide = true)]
        link: Option<String>,
        /// Read the passphrase from the first line of this file instead of prompting.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Ask a person for a secret as an agent (new, status), or answer such a request as the
    /// person (fill).
    #[command(after_long_help = habits::EX_REQUEST)]
    Request {
        #[command(subcommand)]
        cmd: request::RequestCmd,
    },
    /// Revoke a one-time link before it is opened or used up (the operator, on the broker's
    /// configuration). The revocation is audited. Exit 0 revoked, 1 no such live link.
    #[command(after_long_help = habits::EX_UNSHARE)]
    Unshare {
        /// The link's id (the part of `{base}/s/{id}#{key}` before `#`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Short-lived, scoped credentials: issue one as an agent (token from AIRLOCK_TOKEN), list
    /// them with their status, revoke one.
    #[command(after_long_help = habits::EX_LEASE)]
    Lease {
        #[command(subcommand)]
        cmd: lease::LeaseCmd,
    },
    /// Copy the SQLite store of the data directory into a PostgreSQL database (agents, sealed
    /// secrets, leases, tasks, shares, receipts, the audit log with its checkpoints), in one
    /// transaction. Running it again changes nothing; a database holding other data is refused.
    #[command(after_long_help = habits::EX_MIGRATE)]
    Migrate {
        /// The target, postgres://user@host:5432/database.
        #[arg(long)]
        to: String,
    },
    /// Manage approvers: the people who approve or deny held calls, each with their own token.
    #[command(after_long_help = habits::EX_APPROVER)]
    Approver {
        #[command(subcommand)]
        cmd: approve::ApproverCmd,
    },
    /// Approve a held call (approver token from AIRLOCK_APPROVER_TOKEN, else prompted).
    #[command(after_long_help = habits::EX_APPROVE)]
    Approve {
        /// The approval id (from the agent's `approval-required` answer or the webhook).
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// The airlock server; default `shares.base_url`, else the configured listen address.
        #[arg(long, env = "AIRLOCK_URL")]
        server: Option<String>,
    },
    /// Deny a held call (approver token from AIRLOCK_APPROVER_TOKEN, else prompted).
    #[command(after_long_help = habits::EX_DENY)]
    Deny {
        /// The approval id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// The airlock server; default `shares.base_url`, else the configured listen address.
        #[arg(long, env = "AIRLOCK_URL")]
        server: Option<String>,
    },
    /// Make a link for a person to connect their account at an oauth handle's provider; prints
    /// the link and the code its page asks for (the operator, on the broker's configuration).
    #[command(after_long_help = habits::EX_CONNECT)]
    Connect {
        /// The oauth handle.
        handle: String,
        /// Who connects it: one of the handle's `owners`.
        #[arg(long)]
        owner: String,
    },
    /// Write an encrypted, online snapshot of the SQLite store and the audit signing key to FILE
    /// (a passphrase- or transit-wrapped master key travels in it, still wrapped).
    #[command(after_long_help = habits::EX_BACKUP)]
    Backup {
        /// The backup file to create (never replaced).
        file: std::path::PathBuf,
    },
    /// Restore a backup into a new data directory; refused unless its audit chain verifies and
    /// ends where the backup recorded.
    #[command(after_long_help = habits::EX_RESTORE)]
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long)]
        to: std::path::PathBuf,
        /// The raw master key file, for a backup made with wrap = "file".
        #[arg(long)]
        master_key_file: Option<std::path::PathBuf>,
    },
    /// The master key at rest: how it is protected (`key status`), protecting it as
    /// [store.master_key] says (`key wrap`), and rotating the key that seals the data keys,
    /// online (`key rotate`).
    #[command(after_long_help = habits::EX_KEY)]
    Key {
        #[command(subcommand)]
        cmd: key::KeyCmd,
    },
    /// Connected OAuth accounts: list them, revoke one.
    #[command(after_long_help = habits::EX_ACCOUNT)]
    Account {
        #[command(subcommand)]
        cmd: account::AccountCmd,
    },
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(after_long_help = habits::EX_COMPLETIONS)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write a man page for every command (airlock.1, airlock-agent.1, airlock-agent-add.1, ...).
    #[command(after_long_help = habits::EX_MAN)]
    Man {
        /// The directory to write them to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

impl Cli {
    /// The log filter when RUST_LOG does not say: `serve` reports its start and stop and each
    /// refused call, every other command is quiet unless something is wrong. The MCP SDK's own `info`
    /// lines stay out of `serve`'s log: it writes three for every streamable HTTP request (its
    /// per-request session starting, with the client's whole `initialize` parameters, its input
    /// ending and the session ending), which would drown the call lines and cost every request a
    /// formatted write; its warnings and errors still show.
    pub fn default_log_level(&self) -> &'static str {
        if matches!(self.cmd, Cmd::Serve) {
            "info,rmcp=warn"
        } else {
            "warn"
        }
    }
}

/// Runs the command on a multi-threaded runtime; prints an error that ends it as `error: ...`
/// with its context chain.
pub fn execute(cli: Cli) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The exit code of a command that ended in `e`.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<client::Unreachable>().is_some() {
        client::EXIT_UNREACHABLE
    } else {
        2
    }
}

/// Dispatches to the command's group; its exit code.
async fn run(cli: Cli) -> Result<u8> {
    let config = cli.config.as_path();
    let json = cli.json;
    if json {
        if let Some(name) = without_json(&cli.cmd) {
            anyhow::bail!("`airlock {name}` has no JSON output (docs/cli-json.md lists the commands that have)");
        }
    }
    match cli.cmd {
        Cmd::Demo => demo::run().await,
        Cmd::Init { data_only: false } => init::run(config, json).await,
        Cmd::Init { data_only: true } => init::data_only(config, json).await,
        Cmd::Serve => serve::run(config).await,
        Cmd::Reload => reload::run(config, json).await,
        Cmd::Mcp => call::mcp().await,
        Cmd::Doctor => doctor::run(config, json).await,
        Cmd::Secret { cmd } => secret::run(config, cmd, json).await,
        Cmd::Agent { cmd } => agent::run(config, cmd, json).await,
        Cmd::Tools { format } => call::tools(&format).await,
        Cmd::Call { tool, args } => call::call(&tool, &args).await,
        Cmd::Audit { cmd } => audit::run(config, cmd, json).await,
        Cmd::Policy { cmd } => policy::run(config, cmd, json).await,
        Cmd::Share(args) => share::run(config, args, json).await,
        Cmd::Open { link, passphrase_file } => share::open(link.is_some(), passphrase_file.as_deref()).await,
        Cmd::Request { cmd } => request::run(config, cmd, json).await,
        Cmd::Unshare { id } => share::revoke(&open_broker(load(config)?).await?, &id, json).await,
        Cmd::Lease { cmd } => lease::run(config, cmd, json).await,
        Cmd::Migrate { to } => migrate::run(config, &to, json).await,
        Cmd::Approver { cmd } => approve::approvers(config, cmd, json).await,
        Cmd::Approve { id, server } => approve::decide_at(config, server, &id, true, json).await,
        Cmd::Deny { id, server } => approve::decide_at(config, server, &id, false, json).await,
        Cmd::Connect { handle, owner } => account::connect(&open_broker(load(config)?).await?, &handle, &owner, json).await,
        Cmd::Backup { file } => backup::backup(&load(config)?, &file, json).await,
        Cmd::Restore { file, to, master_key_file } => backup::restore(&load(config)?, &file, &to, master_key_file.as_deref(), json).await,
        Cmd::Key { cmd } => key::run(&load(config)?, cmd, json).await,
        Cmd::Account { cmd } => account::run(&open_broker(load(config)?).await?, cmd, json).await,
        Cmd::Completions { shell } => habits::completions(shell),
        Cmd::Man { out } => habits::man(&out, json),
    }
}

/// The command's name when it has no JSON output, so that `--json` on it is refused rather than
/// ignored: a narrative (demo), a server or a stream (serve, mcp), a secret's raw bytes (open),
/// JSON lines or a key already (audit's other commands), a script (completions).
fn without_json(cmd: &Cmd) -> Option<&'static str> {
    match cmd {
        Cmd::Demo => Some("demo"),
        Cmd::Serve => Some("serve"),
        Cmd::Mcp => Some("mcp"),
        Cmd::Open { .. } => Some("open"),
        Cmd::Completions { .. } => Some("completions"),
        Cmd::Audit { cmd: audit::AuditCmd::Verify(_) | audit::AuditCmd::PublicKey | audit::AuditCmd::RotateKey } => None,
        Cmd::Audit { .. } => Some("audit tail, export and checkpoints export (JSON lines already)"),
        _ => None,
    }
}

/// Prints a command's JSON output (docs/cli-json.md): one value, pretty-printed, on stdout.
fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `Passphrase`, `AwsKms` (a `Debug` name) as `passphrase`, `aws_kms`: the spelling of the
/// configuration file.
fn snake_case(debug_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug_name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The configuration at `path`; its errors already name the file, line and field.
fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The broker on `cfg`, in this process.
async fn open_broker(cfg: Config) -> Result<Broker> {
    Broker::open(cfg).await.context("opening the broker")
}

/// Where people's commands (`share`, `approve`, `deny`) reach this deployment's server when no
/// `--server` is given: `shares.base_url`, else the listen address.
fn configured_server(cfg: &Config) -> String {
    cfg.shares.base_url.clone().unwrap_or_else(|| format!("http://{}", cfg.server.listen))
}

/// Drops one trailing newline (`\n` or `\r\n`) from a value read from stdin or a file: it is the
/// shell's or the editor's, not the secret's.
fn trim_one_newline(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

/// `90`, `90s`, `10m`, `1h` → a duration (at most a day).
pub(crate) fn overlap(s: &str) -> Result<std::time::Duration> {
    let (n, unit) = match s.trim().char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s.trim()[..i], c),
        _ => (s.trim(), 's'),
    };
    let n: u64 = n.parse().map_err(|_| anyhow::anyhow!("--overlap {s:?}: a number of seconds, or with s, m or h"))?;
    let secs = match unit {
        's' => n,
        'm' => n.saturating_mul(60),
        'h' => n.saturating_mul(3600),
        _ => anyhow::bail!("--overlap {s:?}: the unit is s, m or h"),
    };
    if secs > 86_400 {
        anyhow::bail!("--overlap is at most 24h");
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped_and_no_more() {
        for (input, want) in [(&b"v\n"[..], &b"v"[..]), (b"v\r\n", b"v"), (b"v\n\n", b"v\n"), (b"v", b"v"), (b"\r", b"\r"), (b"", b"")] {
            let mut buf = input.to_vec();
            trim_one_newline(&mut buf);
            assert_eq!(buf, want, "{input:?}");
        }
    }

    #[test]
    fn debug_names_become_the_configuration_spelling() {
        assert_eq!(snake_case("File"), "file");
        assert_eq!(snake_case("AwsKms"), "aws_kms");
    }

    #[test]
    fn json_is_one_flag_given_anywhere_and_audit_verify_keeps_its_own() {
        use clap::Parser;
        for args in [&["airlock", "--json", "agent", "list"][..], &["airlock", "agent", "list", "--json"], &["airlock", "agent", "--json", "list"]] {
            assert!(Cli::try_parse_from(args).unwrap().json, "{args:?}");
        }
        // `audit verify` has a --json of its own (the same id): either spelling reaches it.
        use clap::CommandFactory;
        for args in [&["airlock", "audit", "verify", "--json"][..], &["airlock", "--json", "audit", "verify"]] {
            let m = Cli::command().try_get_matches_from(args).unwrap();
            let verify = m.subcommand_matches("audit").and_then(|a| a.subcommand_matches("verify")).unwrap();
            assert!(verify.get_flag("json"), "{args:?}");
        }
        assert!(!Cli::try_parse_from(["airlock", "agent", "list"]).unwrap().json);
    }

    /// Ids are random base64url or UUIDs, and one in 64 share or request ids starts with `-`:
    /// every argument that takes an id (`ID`, or `--id ID`, or any `*_id`) takes such an one as
    /// the id, not as a flag (`airlock unshare -Ntgl...` and `airlock request revoke --id -gee...`
    /// were refused as unknown arguments, exit 2).
    #[test]
    fn every_id_argument_takes_an_id_that_starts_with_a_dash() {
        use clap::CommandFactory;
        /// (the subcommand path, the argument's id, its long name if it is an option)
        type IdArg = (Vec<String>, String, Option<String>);
        fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<IdArg>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "id" || id.ends_with("_id") {
                    out.push((path.clone(), id.to_owned(), a.get_long().map(str::to_owned)));
                }
            }
            for sub in cmd.get_subcommands() {
                let mut p = path.clone();
                p.push(sub.get_name().to_owned());
                walk(sub, p, out);
            }
        }
        let mut found = Vec::new();
        walk(&Cli::command(), Vec::new(), &mut found);
        assert!(found.len() >= 6, "fewer arguments take an id than expected: {found:?}");
        for value in ["-NtglcMGJc14lTcMZZjiYA", "--x", "-"] {
            for (path, id, long) in &found {
                let mut args = vec!["airlock".to_owned()];
                args.extend(path.iter().cloned());
                args.extend(long.iter().map(|l| format!("--{l}")));
                args.push(value.to_owned());
                args.push("--json".to_owned());
                let m = Cli::command().try_get_matches_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                let leaf = path.iter().fold(&m, |m, name| m.subcommand_matches(name).unwrap());
                assert_eq!(leaf.get_one::<String>(id).map(String::as_str), Some(value), "{args:?}");
                assert!(Cli::try_parse_from(&args).unwrap().json, "{args:?}: --json after the id is still the flag");
            }
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
