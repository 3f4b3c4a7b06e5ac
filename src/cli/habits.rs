//! What a command line is expected to have besides its commands: shell completions
//! (`airlock completions SHELL`), man pages (`airlock man --out DIR`), and the examples at the
//! end of each command's `--help`.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

/// `airlock completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "airlock", &mut std::io::stdout());
    Ok(0)
}

/// `airlock man --out DIR`: one page a command, `airlock.1`, `airlock-agent.1`,
/// `airlock-agent-add.1`, ..., readable by everyone (they hold nothing but help text).
pub fn man(out: &Path, json: bool) -> Result<u8> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cmd = super::Cli::command();
    let mut names = Vec::new();
    page_names(&cmd, "airlock", &mut names);
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_pages(cmd, out).with_context(|| format!("writing the man pages to {}", out.display()))?;
    #[cfg(unix)]
    for n in &names {
        use std::os::unix::fs::PermissionsExt;
        let p = out.join(n);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).with_context(|| format!("making {} readable", p.display()))?;
    }
    if json {
        super::print_json(&serde_json::json!({"out": out, "pages": names}))?;
    } else {
        println!("wrote {} man pages to {}", names.len(), out.display());
    }
    Ok(0)
}

/// `cmd`'s page and its subcommands' (as `clap_mangen::generate_to`, with the package and its
/// version in each page's footer).
fn write_pages(cmd: clap::Command, out: &Path) -> std::io::Result<()> {
    for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sc, out)?;
    }
    clap_mangen::Man::new(cmd).source(concat!("airlock ", env!("CARGO_PKG_VERSION"))).manual("airlock manual").generate_to(out)?;
    Ok(())
}

/// The file names clap_mangen gives `cmd`'s page and its subcommands' (not the hidden ones, nor
/// `help`).
fn page_names(cmd: &clap::Command, name: &str, out: &mut Vec<String>) {
    out.push(format!("{name}.1"));
    for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        page_names(sc, &format!("{name}-{}", sc.get_name()), out);
    }
}

pub const EX_AIRLOCK: &str = "\
Examples:
  airlock init && airlock serve
  printf '%s' \"$KEY\" | airlock secret put STRIPE_KEY
  airlock agent list --json
  airlock completions bash > /etc/bash_completion.d/airlock

Exit codes: 0 ok, 1 refused, failed or a finding, 2 usage or error, 3 no broker answered
(docs/cli-json.md).";

pub const EX_RELOAD: &str = "\
Examples:
  airlock reload
  airlock --config /etc/airlock/airlock.toml reload --json
  systemctl reload airlock        # the unit's ExecReload sends the same SIGHUP";

pub const EX_DEMO: &str = "\
Examples:
  airlock demo";

pub const EX_INIT: &str = "\
Examples:
  airlock init
  airlock --config /etc/airlock/airlock.toml init --json
  airlock --config /etc/airlock/airlock.toml init --data-only   # a container's first start";

pub const EX_SERVE: &str = "\
Examples:
  airlock serve
  RUST_LOG=debug airlock serve --log-json
  RUST_LOG=info,airlock::trace=debug airlock serve --log-json   # each stage of each call as a log line
  OTEL_EXPORTER_OTLP_ENDPOINT=https://collector.example:4318 airlock serve   # spans over OTLP/HTTP";

pub const EX_MCP: &str = "\
Examples:
  AIRLOCK_TOKEN_FILE=~/.config/airlock/token airlock mcp";

pub const EX_DOCTOR: &str = "\
Examples:
  airlock doctor
  airlock doctor --json | jq '.findings[] | select(.level == \"error\")'";

pub const EX_SECRET: &str = "\
Examples:
  printf '%s' \"$KEY\" | airlock secret put STRIPE_KEY
  airlock secret rotate STRIPE_KEY --from-file new-key.txt --overlap 1h
  airlock secret list --json";

pub const EX_AGENT: &str = "\
Examples:
  airlock agent add support-bot --expires-in 86400 > bot.token
  airlock agent rotate support-bot --overlap 10m
  airlock agent list --json";

pub const EX_TOOLS: &str = "\
Examples:
  AIRLOCK_TOKEN_FILE=bot.token airlock tools --format openai";

pub const EX_CALL: &str = "\
Examples:
  airlock call query_db --args '{\"credential_handle\": \"APP_DB\", \"sql\": \"SELECT 1\"}'
  airlock call http_request --args \"$(cat args.json)\"";

pub const EX_AUDIT: &str = "\
Examples:
  airlock audit tail -n 5
  airlock audit verify --json
  airlock audit checkpoints export --output checkpoints.jsonl";

pub const EX_POLICY: &str = "\
Examples:
  airlock policy check --show
  airlock policy explain --agent support-bot --tool query_db --handle APP_DB --json";

pub const EX_SHARE: &str = "\
Examples:
  printf '%s' \"$PASSWORD\" | airlock share --expires 1d --views 2
  airlock share --passphrase < note.txt";

pub const EX_OPEN: &str = "\
Examples:
  airlock open < link.txt
  airlock open --passphrase-file pass.txt < link.txt";

pub const EX_REQUEST: &str = "\
Examples:
  airlock request new --handle STRIPE_KEY --kind secret --recipient alice --description 'the Stripe key'
  airlock request status Xk3q9ZrT0bLwP7mN2cVd1A
  airlock request fill --link-file link.txt
  airlock request revoke --handle STRIPE_KEY";

pub const EX_UNSHARE: &str = "\
Examples:
  airlock unshare q2Vd8nX0LrT5mB9kZ1pW4A";

pub const EX_LEASE: &str = "\
Examples:
  airlock lease issue APP_DB --ttl 600 --tables orders,customers
  airlock lease list --json
  airlock lease revoke 0190c3e2-d4a8-7b1c-9e0f-5a6b7c8d9e0f";

pub const EX_MIGRATE: &str = "\
Examples:
  airlock migrate --to postgres://airlock@db.internal:5432/airlock";

pub const EX_APPROVER: &str = "\
Examples:
  airlock approver add alice > alice.token
  airlock approver list --json";

pub const EX_APPROVE: &str = "\
Examples:
  AIRLOCK_APPROVER_TOKEN=\"$(cat alice.token)\" airlock approve 0123456789abcdef0123456789abcdef";

pub const EX_DENY: &str = "\
Examples:
  airlock deny 0123456789abcdef0123456789abcdef --server https://airlock.example.com";

pub const EX_CONNECT: &str = "\
Examples:
  airlock connect GMAIL --owner alice";

pub const EX_BACKUP: &str = "\
Examples:
  airlock backup /backups/airlock-$(date +%F).bak";

pub const EX_RESTORE: &str = "\
Examples:
  airlock restore /backups/airlock-2026-01-31.bak --to /var/lib/airlock-restored";

pub const EX_KEY: &str = "\
Examples:
  airlock key status --json
  airlock key wrap --old-passphrase-file old-pass.txt
  airlock key rotate";

pub const EX_ACCOUNT: &str = "\
Examples:
  airlock account list
  airlock account revoke GMAIL";

pub const EX_COMPLETIONS: &str = "\
Examples:
  airlock completions bash > /etc/bash_completion.d/airlock
  airlock completions zsh > \"${fpath[1]}/_airlock\"
  airlock completions fish > ~/.config/fish/completions/airlock.fish";

pub const EX_MAN: &str = "\
Examples:
  airlock man --out /usr/local/share/man/man1 && man airlock-agent-add";
