//! The `airlock` command: a thin layer over the library crates.
#![forbid(unsafe_code)]

mod approve_cli;
mod client;
mod demo;
mod doctor;
mod home;
mod share_cli;

use airlock_core::config::Config;
use airlock_core::{HandleName, Secret, Tool};
use airlock_server::tools::Format;
use airlock_server::Broker;
use airlock_store::audit::AuditKey;
use airlock_store::Store;
use airlock_vault::{MasterKey, Vault};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// airlock: a secrets broker for AI agents.
#[derive(Parser)]
#[command(name = "airlock", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "AIRLOCK_CONFIG", default_value = "airlock.toml")]
    config: PathBuf,
    /// Log as JSON lines (for the server).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole job on a throw-away setup: brokered calls, denials, scrubbing, audit verify.
    Demo,
    /// Create a commented airlock.toml, the data directory, the master key and the audit key.
    Init,
    /// Serve the REST API and MCP over streamable HTTP at /mcp.
    Serve,
    /// MCP over stdio for an agent: a thin client of the running broker (its socket, or
    /// AIRLOCK_ENDPOINT) holding only the agent's token (AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE).
    Mcp,
    /// Check this deployment: file modes and owners, the broker's user, the sandbox, TLS, the
    /// database credentials of read-only handles. Exits 1 on any error-level finding.
    Doctor {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage secrets in the local vault (values from stdin or a file, never from argv).
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// Manage agent identities.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// Print the tools the agent may call (a thin client of the running broker; token from
    /// AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE).
    Tools {
        /// mcp, openai or anthropic.
        #[arg(long, default_value = "mcp")]
        format: String,
    },
    /// Invoke a tool as an agent (a thin client of the running broker; token from AIRLOCK_TOKEN
    /// or AIRLOCK_TOKEN_FILE). Exit 0 ok, 1 refused or failed, 3 no broker answered.
    Call {
        /// The tool.
        tool: String,
        /// The arguments as a JSON object (including credential_handle).
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Read and verify the audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Check and explain policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Make a one-time, end-to-end encrypted link to the secret on stdin; prints the link.
    Share {
        /// How many times the link can be opened.
        #[arg(long, default_value_t = 1)]
        views: u32,
        /// When it expires: 5m, 1h, 1d, 7d (or seconds).
        #[arg(long, default_value = "1h")]
        expires: String,
        /// Also require a passphrase (prompted on the terminal).
        #[arg(long)]
        passphrase: bool,
        /// Read the passphrase from the first line of this file instead of prompting.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The airlock server; default `shares.base_url`, else the configured listen address.
        #[arg(long, env = "AIRLOCK_URL")]
        server: Option<String>,
    },
    /// Open a one-time link (uses one view) and print the secret.
    Open {
        /// The link, `{base}/s/{id}#{key}`.
        link: String,
        /// Read the passphrase from the first line of this file instead of prompting.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Short-lived, scoped credentials: issue one as an agent (token from AIRLOCK_TOKEN), list
    /// them with their status, revoke one.
    Lease {
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// Copy the SQLite store of the data directory into a PostgreSQL database (agents, sealed
    /// secrets, leases, tasks, shares, receipts, the audit log with its checkpoints), in one
    /// transaction. Running it again changes nothing; a database holding other data is refused.
    Migrate {
        /// The target, postgres://user@host:5432/database.
        #[arg(long)]
        to: String,
    },
    /// Manage approvers: the people who approve or deny held calls, each with their own token.
    Approver {
        #[command(subcommand)]
        cmd: ApproverCmd,
    },
    /// Approve a held call (approver token from AIRLOCK_APPROVER_TOKEN, else prompted).
    Approve {
        /// The approval id (from the agent's `approval-required` answer or the webhook).
        id: String,
        /// The airlock server; default `shares.base_url`, else the configured listen address.
        #[arg(long, env = "AIRLOCK_URL")]
        server: Option<String>,
    },
    /// Deny a held call (approver token from AIRLOCK_APPROVER_TOKEN, else prompted).
    Deny {
        /// The approval id.
        id: String,
        /// The airlock server; default `shares.base_url`, else the configured listen address.
        #[arg(long, env = "AIRLOCK_URL")]
        server: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApproverCmd {
    /// Create an approver and print its token once.
    Add {
        /// The approver's name (recorded with each decision).
        name: String,
    },
    /// List approvers.
    List,
    /// Revoke an approver.
    Revoke {
        /// The approver's name or id.
        name: String,
    },
}

#[derive(Subcommand)]
enum LeaseCmd {
    /// Issue a lease on HANDLE for an agent (a thin client of the running broker; token from
    /// AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE).
    Issue {
        /// The base handle.
        handle: String,
        /// read_only or read_write.
        #[arg(long, default_value = "read_only")]
        scope: String,
        /// Lifetime in seconds (default: 300, or 900, STS's minimum, on an aws handle).
        #[arg(long)]
        ttl: Option<u64>,
        /// Comma-separated tables.
        #[arg(long)]
        tables: Option<String>,
        /// Comma-separated S3 buckets (aws handles; default: all of the handle's).
        #[arg(long)]
        buckets: Option<String>,
    },
    /// Every lease, with its status (`revoke-pending` for a revocation being retried).
    List,
    /// Revoke a lease by id.
    Revoke {
        /// The lease id.
        id: String,
    },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Store a secret under HANDLE, reading the value from stdin or --from-file.
    Put {
        /// The name (a handle name).
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List names and metadata (never values).
    List,
    /// Remove a secret.
    Rm {
        /// The name.
        name: String,
    },
    /// Copy a field of an OpenBao or Vault KV v2 secret into the local vault.
    Import {
        /// `openbao:NAME/MOUNT/PATH[#FIELD][@VERSION]` (`vault:` also); the field may be left
        /// out when the secret has only one.
        #[arg(long)]
        from: String,
        /// The local name (default: the field's name in upper case).
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Write a local secret into a field of an OpenBao or Vault KV v2 secret, keeping its other
    /// fields, with check-and-set: a field that holds another value is not replaced without
    /// --force, and a concurrent change makes the write fail.
    Export {
        /// The local name.
        name: String,
        /// `openbao:NAME/MOUNT/PATH#FIELD`; with `@VERSION`, the write happens only if that is
        /// still the latest version.
        #[arg(long)]
        to: String,
        /// Replace a different value.
        #[arg(long)]
        force: bool,
    },
}

/// Parses `openbao:...` or `vault:...` for import and export.
fn remote_arg(s: &str, need_field: bool) -> Result<airlock_core::config::RemoteRef> {
    let rest = s
        .strip_prefix("openbao:")
        .or_else(|| s.strip_prefix("vault:"))
        .ok_or_else(|| anyhow::anyhow!("{s:?}: expected openbao:NAME/MOUNT/PATH#FIELD"))?;
    airlock_core::config::RemoteRef::parse(rest, need_field).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Create an agent and print its token once.
    Add {
        /// The agent's name (the one grants refer to).
        name: String,
        /// Expire the token after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List agents.
    List,
    /// Revoke an agent and its sub-agents, and their leases.
    Revoke {
        /// The agent's name or id.
        name: String,
    },
    /// Agents and their sub-agents, as a tree.
    Tree,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Print the newest records as JSON lines.
    Tail {
        /// How many.
        #[arg(short, long, default_value_t = 20)]
        n: i64,
    },
    /// Verify the hash chain and the signed checkpoints; exits 1 on the first bad record.
    Verify,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate the grants and Cedar files against the schema.
    Check {
        /// Also print the Cedar generated from the grants.
        #[arg(long)]
        show: bool,
        /// Print the Cedar schema.
        #[arg(long)]
        schema: bool,
    },
    /// Say whether an agent may call a tool on a handle, and which policy decided.
    Explain {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        tool: String,
        #[arg(long)]
        handle: String,
    },
}

fn init_logging(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> std::process::ExitCode {
    // The run_command sandbox's second stage: before argument parsing, logging or a runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == airlock_exec_command::stage2::STAGE2_ARG) {
        return airlock_exec_command::stage2::run();
    }
    // Before anything else: no core dumps, not dumpable (no ptrace, no /proc/PID/mem or environ
    // for other processes of this user), and every file this process creates private.
    home::harden_process();
    let cli = Cli::parse();
    let default_level = if matches!(cli.cmd, Cmd::Serve) { "info" } else { "warn" };
    init_logging(default_level, cli.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let unreachable = e.downcast_ref::<client::Unreachable>().is_some();
            std::process::ExitCode::from(if unreachable { client::EXIT_UNREACHABLE } else { 2 })
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn open_vault(cfg: &Config) -> Result<Vault> {
    let dir = &cfg.store.data_dir;
    let master = MasterKey::load(&dir.join("master.key")).context("run `airlock init` first")?;
    let store = open_store(cfg).await?;
    Ok(Vault::with_remotes(master, store, cfg.vaults.values())?)
}

/// The configured store: `store.url`'s PostgreSQL database, or the SQLite file.
async fn open_store(cfg: &Config) -> Result<Store> {
    match &cfg.store.url {
        Some(_) => Store::connect(&cfg.store).await.context("opening the PostgreSQL store (store.url)"),
        None => Store::connect(&cfg.store)
            .await
            .with_context(|| format!("opening the store in {}", cfg.store.data_dir.display())),
    }
}

/// `airlock approve` / `airlock deny`, against `server` or the configured one.
async fn decide_cli(config: &Path, server: Option<String>, id: &str, approve: bool) -> Result<u8> {
    let server = match server {
        Some(s) => s,
        None => {
            let c = load(config)?;
            c.shares.base_url.clone().unwrap_or_else(|| format!("http://{}", c.server.listen))
        }
    };
    approve_cli::decide(&server, id, approve).await
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Demo => demo::run().await,
        Cmd::Share { views, expires, passphrase, passphrase_file, server } => {
            // The config is optional here: a person may share to any airlock server.
            let cfg = if cli.config.exists() { Some(load(&cli.config)?) } else { None };
            let server = match (server, &cfg) {
                (Some(s), _) => s,
                (None, Some(c)) => c.shares.base_url.clone().unwrap_or_else(|| format!("http://{}", c.server.listen)),
                (None, None) => "http://127.0.0.1:7878".to_owned(),
            };
            let max_plaintext = cfg.as_ref().map(|c| c.shares.max_plaintext_bytes).unwrap_or(1 << 20);
            share_cli::share(share_cli::ShareOpts {
                server: &server,
                views,
                expires: &expires,
                passphrase,
                passphrase_file: passphrase_file.as_deref(),
                max_plaintext,
            })
            .await?;
            Ok(0)
        }
        Cmd::Approve { id, server } => decide_cli(&cli.config, server, &id, true).await,
        Cmd::Deny { id, server } => decide_cli(&cli.config, server, &id, false).await,
        Cmd::Approver { cmd } => {
            let cfg = load(&cli.config)?;
            let store = open_store(&cfg).await?;
            match cmd {
                ApproverCmd::Add { name } => {
                    let (a, token) = store.add_approver(&name).await?;
                    eprintln!("approver {} ({}) created; its token is shown once:", a.name, a.id);
                    println!("{}", token.reveal());
                }
                ApproverCmd::List => {
                    for a in store.list_approvers().await? {
                        let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
                        println!("{}\t{}\t{}\tcreated {}", a.id, a.name, state, a.created_at);
                    }
                }
                ApproverCmd::Revoke { name } => {
                    store.revoke_approver(&name).await?;
                    println!("revoked approver {name}");
                }
            }
            Ok(0)
        }
        Cmd::Open { link, passphrase_file } => share_cli::open(&link, passphrase_file.as_deref()).await,
        Cmd::Init => {
            init(&cli.config).await?;
            Ok(0)
        }
        Cmd::Migrate { to } => {
            let cfg = load(&cli.config)?;
            if cfg.store.url.is_some() {
                anyhow::bail!("the configured store is already PostgreSQL (store.url); migrate copies the SQLite store of data_dir");
            }
            airlock_core::config::validate_store_url(&to).map_err(|m| anyhow::anyhow!("--to {m}"))?;
            let dir = &cfg.store.data_dir;
            if !dir.join("store.db").exists() {
                anyhow::bail!("{} has no store.db to migrate", dir.display());
            }
            let source = Store::open(dir).await.with_context(|| format!("opening the store in {}", dir.display()))?;
            let target = Store::open_postgres(&to, dir).await.context("opening the PostgreSQL target")?;
            let report = source.copy_into(&target).await?;
            if report.copied == 0 {
                println!("nothing to do: the target already holds this store ({} rows)", report.rows);
            } else {
                println!("copied {} rows into PostgreSQL; set store.url to use it", report.copied);
            }
            Ok(0)
        }
        Cmd::Serve => {
            let cfg = load(&cli.config)?;
            home::refuse_unsafe_home(&cfg)?;
            let listen = cfg.server.listen;
            let socket = cfg.server.socket_path();
            let broker = Arc::new(Broker::open(cfg.clone()).await.context("opening the broker")?);
            let tcp = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            let unix = match &socket {
                Some(p) => Some(home::bind_socket(p, &cfg.server)?),
                None => None,
            };
            tracing::info!(addr = %tcp.local_addr()?, socket = ?socket, "airlock serving");
            let mcp = airlock_mcp::http_router(broker.clone());
            spawn_invalidate_on_hup(broker.clone());
            let listeners = airlock_server::rest::Listeners { tcp, unix };
            let r = airlock_server::rest::serve_on(listeners, broker, mcp, shutdown_signal()).await;
            if let Some(p) = &socket {
                let _ = std::fs::remove_file(p);
            }
            r?;
            Ok(0)
        }
        Cmd::Mcp => client::Client::from_env()?.mcp_stdio().await,
        Cmd::Doctor { json } => doctor::run(&cli.config, json).await,
        Cmd::Secret { cmd } => {
            let cfg = load(&cli.config)?;
            let vault = open_vault(&cfg).await?;
            match cmd {
                SecretCmd::Put { name, from_file } => {
                    HandleName::parse(&name).map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
                    let mut buf = match from_file {
                        Some(p) => std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                        None => {
                            let mut b = Vec::new();
                            std::io::stdin().read_to_end(&mut b).context("reading the secret from stdin")?;
                            b
                        }
                    };
                    // One trailing newline is the shell's, not the secret's.
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                        if buf.last() == Some(&b'\r') {
                            buf.pop();
                        }
                    }
                    let v = vault.put(&name, &Secret::new(buf)).await?;
                    println!("stored {name} (version {v})");
                }
                SecretCmd::List => {
                    for m in vault.store().list_secrets().await? {
                        println!("{}\tversion {}\tupdated {}", m.name, m.version, m.updated_at);
                    }
                }
                SecretCmd::Rm { name } => {
                    vault.store().remove_secret(&name).await?;
                    println!("removed {name}");
                }
                SecretCmd::Import { from, as_name } => {
                    let mut r = remote_arg(&from, false)?;
                    let remote = vault.remote(&r.vault)?;
                    let (fields, version) = remote.read_kv(&r).await?;
                    let field = match &r.field {
                        Some(f) => f.clone(),
                        None if fields.len() == 1 => fields[0].0.clone(),
                        None => {
                            let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                            bail!("{from} has {} fields ({}); name one with #FIELD", names.len(), names.join(", "))
                        }
                    };
                    r.field = Some(field.clone());
                    let value = fields
                        .iter()
                        .find(|(k, _)| *k == field)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| anyhow::anyhow!("{r}: version {version} has no field '{field}'"))?;
                    let name = as_name.unwrap_or_else(|| field.to_ascii_uppercase().replace('-', "_"));
                    HandleName::parse(&name)
                        .map_err(|e| anyhow::anyhow!("{name:?}: {e}; give a local name with --as"))?;
                    let v = vault.put(&name, &value).await?;
                    println!("imported {r} (version {version}) into {name} (version {v})");
                }
                SecretCmd::Export { name, to, force } => {
                    let r = remote_arg(&to, true)?;
                    let remote = vault.remote(&r.vault)?;
                    let value = vault.resolve(&airlock_core::config::SecretRef::Local(name.clone())).await?;
                    let v = remote.write_field(&r, &value, force).await?;
                    let latest = airlock_core::config::RemoteRef { version: None, ..r };
                    println!("exported {name} to {latest} (version {v})");
                }
            }
            Ok(0)
        }
        Cmd::Agent { cmd } => {
            let cfg = load(&cli.config)?;
            let store = open_store(&cfg).await?;
            match cmd {
                AgentCmd::Add { name, expires_in } => {
                    let exp = expires_in.map(|s| {
                        (chrono::Utc::now() + chrono::Duration::seconds(s as i64))
                            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    });
                    let (a, token) = store.add_agent(&name, None, exp.as_deref()).await?;
                    if !cfg.agents.contains_key(&name) {
                        eprintln!("note: no [agents.{name}] grants in {}; this agent can call nothing yet", cfg.source);
                    }
                    eprintln!("agent {} ({}) created; its token is shown once:", a.name, a.id);
                    println!("{}", token.reveal());
                }
                AgentCmd::List => {
                    for a in store.list_agents().await? {
                        let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
                        println!("{}\t{}\t{}\tcreated {}", a.id, a.name, state, a.created_at);
                    }
                }
                AgentCmd::Revoke { name } => {
                    drop(store);
                    // Through the broker, so that the agents' leases are revoked now.
                    let broker = Broker::open(cfg).await.context("opening the broker")?;
                    let n = broker.revoke_agent(&name).await?;
                    println!("revoked {n} agent(s)");
                }
                AgentCmd::Tree => {
                    let agents = store.list_agents().await?;
                    fn walk(agents: &[airlock_store::agents::Agent], parent: Option<&str>, depth: usize) {
                        for a in agents.iter().filter(|a| a.parent.as_deref() == parent) {
                            let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
                            println!("{}{} ({}, {state})", "  ".repeat(depth), a.name, a.id);
                            if depth < 16 {
                                walk(agents, Some(&a.id), depth + 1);
                            }
                        }
                    }
                    walk(&agents, None, 0);
                }
            }
            Ok(0)
        }
        Cmd::Tools { format } => {
            Format::parse(&format).context("--format is mcp, openai or anthropic")?;
            let (code, v) = client::Client::from_env()?.tools(&format).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(code)
        }
        Cmd::Call { tool, args } => {
            let args: serde_json::Value = serde_json::from_str(&args).context("--args is not JSON")?;
            let (code, v) = client::Client::from_env()?.call(&tool, args).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(code)
        }
        Cmd::Lease { cmd: LeaseCmd::Issue { handle, scope, ttl, tables, buckets } } => {
            let mut args = serde_json::json!({"credential_handle": handle, "scope": scope});
            if let Some(t) = ttl {
                args["ttl_seconds"] = t.into();
            }
            if let Some(t) = tables {
                args["tables"] = t.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>().into();
            }
            if let Some(b) = buckets {
                args["buckets"] = b.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>().into();
            }
            let (code, v) = client::Client::from_env()?.lease(args).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(code)
        }
        Cmd::Lease { cmd } => {
            let cfg = load(&cli.config)?;
            let broker = Broker::open(cfg).await.context("opening the broker")?;
            match cmd {
                LeaseCmd::Issue { .. } => unreachable!("issued through the thin client above"),
                LeaseCmd::List => {
                    for l in broker.store().list_leases().await? {
                        println!("{}\t{}\t{}\t{}\texpires {}\tagent {}", l.id, l.handle, l.scope, l.status, l.expires_at, l.agent_id);
                    }
                    Ok(0)
                }
                LeaseCmd::Revoke { id } => match broker.revoke_lease(&id).await {
                    Ok(true) => {
                        println!("revoked {id}");
                        Ok(0)
                    }
                    Ok(false) => {
                        println!("{id} was already revoked");
                        Ok(0)
                    }
                    Err(e) => {
                        println!("{id}: {}; the revocation is retried (revoke-pending)", e.code);
                        Ok(1)
                    }
                },
            }
        }
        Cmd::Audit { cmd } => {
            let cfg = load(&cli.config)?;
            let store = open_store(&cfg).await?;
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
        Cmd::Policy { cmd } => {
            let cfg = load(&cli.config)?;
            let engine = airlock_policy::PolicyEngine::from_config(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            match cmd {
                PolicyCmd::Check { show, schema } => {
                    if schema {
                        println!("{}", airlock_policy::schema_text());
                    }
                    if show {
                        println!("{}", engine.generated_policies());
                    }
                    println!("policies ok: {} policies, version {}", engine.policy_count(), engine.version());
                    Ok(0)
                }
                PolicyCmd::Explain { agent, tool, handle } => {
                    let t = Tool::parse(&tool).with_context(|| format!("unknown tool {tool:?}"))?;
                    let h = HandleName::parse(&handle).map_err(|e| anyhow::anyhow!("{handle:?}: {e}"))?;
                    let Some(handle) = cfg.handles.get(&h) else {
                        println!("deny: no handle {h} in {}", cfg.source);
                        return Ok(1);
                    };
                    if !t.applies_to(handle.kind) {
                        println!("deny: {} does not apply to {} handle {h}", t.name(), handle.kind.as_str());
                        return Ok(1);
                    }
                    let d = engine.decide(&agent, t, handle);
                    let who = if d.policies.is_empty() { "default deny (no policy matched)".to_owned() } else { d.policies.join(", ") };
                    println!("{}: {who}", if d.allowed { "allow" } else { "deny" });
                    for e in &d.errors {
                        println!("evaluation error: {e}");
                    }
                    Ok(if d.allowed { 0 } else { 1 })
                }
            }
        }
    }
}

/// `airlock init`: config, data directory, master key, audit key. Refuses to overwrite any.
async fn init(config: &Path) -> Result<()> {
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
    std::fs::write(config, include_str!("starter.toml")).with_context(|| format!("writing {}", config.display()))?;
    println!("created {}, {}/ (master.key, audit-signing.key, store.db)", config.display(), dir.display());
    Ok(())
}

/// SIGHUP drops every cached secret (remote vault values included) and rebuilds the scrubber.
fn spawn_invalidate_on_hup(broker: Arc<Broker>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while s.recv().await.is_some() {
            match broker.invalidate_secrets().await {
                Ok(()) => tracing::info!("SIGHUP: cached secrets dropped"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: secret invalidation failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down; draining in-flight requests");
}
