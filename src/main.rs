//! The `airlock` command: a thin layer over the library crates. The command line is in
//! [`cli`]; this file does what must come before it.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod demo;
mod doctor;
mod home;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The run_command sandbox's second stage: before argument parsing, logging or a runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == airlock_exec_command::stage2::STAGE2_ARG) {
        return airlock_exec_command::stage2::run();
    }
    // Before anything else: no core dumps, not dumpable (no ptrace, no /proc/PID/mem or environ
    // for other processes of this user), and every file this process creates private.
    home::harden_process();
    let cli = cli::Cli::parse();
    init_logging(cli.default_log_level(), cli.log_json);
    cli::execute(cli)
}

/// Logs to stderr at `default` unless RUST_LOG says otherwise; JSON lines with `json`. Colored
/// only on a terminal, and never with NO_COLOR set (https://no-color.org): a log redirected to a
/// file or read by journald holds no escape sequences.
fn init_logging(default: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(color);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
