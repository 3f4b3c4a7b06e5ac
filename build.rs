//! Release builds of `airlock` on x86_64 Linux link the functions `airlock serve` runs at its
//! start and on its first calls side by side, in the order of `link/code-order.txt`: lld's
//! `--symbol-ordering-file`. The kernel maps code in 64 KB around each page a process touches,
//! so scattered, those functions kept 16 MB of code resident in an idle broker (README
//! "Benchmarks"; `airlock_bench::code_order` says how the file is made).
//!
//! Only where lld is the linker: rustc 1.90 and later link `x86_64-unknown-linux-gnu` with its
//! own lld by default. `AIRLOCK_CODE_ORDER=0` leaves the order to the linker (for a build that
//! links with another linker).
#![forbid(unsafe_code)]

use std::path::PathBuf;

const ORDER: &str = "link/code-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=AIRLOCK_CODE_ORDER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let order = PathBuf::from(var("CARGO_MANIFEST_DIR")).join(ORDER);
    if var("PROFILE") != "release" || var("AIRLOCK_CODE_ORDER") == "0" || !order.is_file() {
        return;
    }
    let target = (var("CARGO_CFG_TARGET_ARCH"), var("CARGO_CFG_TARGET_OS"), var("CARGO_CFG_TARGET_ENV"));
    // Last, as it runs the compiler: only a release build gets this far.
    let on_lld = target == ("x86_64".into(), "linux".into(), "gnu".into()) && rustc_minor().is_some_and(|m| m >= 90);
    if on_lld {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // A name the build no longer has (its hash moved) is skipped, not reported.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the compiler building this (`rustc 1.95.0 (...)` → 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var_os("RUSTC")?;
    let out = std::process::Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}
