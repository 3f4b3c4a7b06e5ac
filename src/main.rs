//! The `airlock` command: a thin layer over the library crates. The command line is in
//! [`cli`]; this file does what must come before it.
// Two lines need `unsafe` (an allocator setting each, through libc in `limit_malloc_arenas` and
// through mimalloc in `tune_allocator`), and the test that reads the second back; nothing else
// may.
#![deny(unsafe_code)]

mod cli;
mod client;
mod demo;
mod doctor;
mod home;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;

/// Rust's allocations go to mimalloc: under load a call allocates some 400 times, and with
/// glibc's allocator the broker spent 10 to 19 % more CPU a call at concurrency 32 in three
/// alternating runs (README "Benchmarks", "The allocator"). Built without transparent huge pages
/// (`no_thp`); the C code linked in (SQLite, aws-lc) keeps glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The run_command sandbox's second stage: before argument parsing, logging or a runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == airlock_exec_command::stage2::STAGE2_ARG) {
        return airlock_exec_command::stage2::run();
    }
    // Before anything else: no core dumps, not dumpable (no ptrace, no /proc/PID/mem or environ
    // for other processes of this user), and every file this process creates private.
    home::harden_process();
    limit_malloc_arenas();
    tune_allocator();
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

/// How long mimalloc keeps memory freed in its arenas before it gives it back to the system
/// (`madvise(MADV_DONTNEED)`): with its default, one second, the broker's resident memory grew
/// 9 % from 10,000 to 200,000 calls, with 10 ms 4 % (one run each; README "Benchmarks", "The
/// allocator"). The delay is read each time a purge is scheduled, so setting it here covers
/// everything freed from now on.
#[allow(unsafe_code)]
fn tune_allocator() {
    /// Milliseconds; `MIMALLOC_PURGE_DELAY` in the environment overrides it.
    const PURGE_DELAY_MS: std::ffi::c_long = 10;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores one of mimalloc's option values (an atomic word); it
        // touches no Rust memory, and purge_delay may change while the allocator runs.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (`enum mi_option_e`), which
/// libmimalloc-sys does not name; `the_purge_delay_option_is_mimallocs` checks it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set at start is the purge delay: mimalloc 3's default for it is 1,000 ms (no
    /// other option of that version defaults to 1,000), and after `tune_allocator` it is 10.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_mimallocs() {
        // SAFETY: mi_option_get reads one of mimalloc's option values.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            // The environment's value stands.
            let before = get();
            tune_allocator();
            assert_eq!(get(), before);
            return;
        }
        assert_eq!(get(), 1000, "option {MI_OPTION_PURGE_DELAY} is not mimalloc's purge delay");
        tune_allocator();
        assert_eq!(get(), 10);
    }
}
