//! The `airlock` command: a thin layer over the library crates. The command line is in
//! [`cli`]; this file does what must come before it.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod demo;
mod doctor;
mod home;
mod telemetry;

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
    telemetry::init_logging(cli.default_log_level(), cli.log_json);
    cli::execute(cli)
}

