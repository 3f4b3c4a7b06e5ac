//! The `airlock` command: a thin layer over the library crates. The command line is in
//! [`cli`]; this file does what must come before it.
// One line needs `unsafe` (an allocator setting through libc, in `limit_malloc_arenas`); nothing
// else may.
#![deny(unsafe_code)]

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
    limit_malloc_arenas();
    let cli = cli::Cli::parse();
    telemetry::init_logging(cli.default_log_level(), cli.log_json);
    cli::execute(cli)
}

/// glibc's allocator gives threads that allocate at the same time arenas of their own, up to
/// eight per core, and gives little of them back: under steady load `airlock serve`'s resident
/// memory climbed in a sawtooth from 82 to 121 MiB over 200,000 calls while two arenas kept it
/// between 72 and 89 MiB at the same rate (README "Soak"). So two, unless `MALLOC_ARENA_MAX` is
/// set, which glibc applies itself. Called before any other thread exists.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets one parameter of glibc's allocator and touches no Rust memory;
        // M_ARENA_MAX only bounds how many arenas later allocations may create.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
