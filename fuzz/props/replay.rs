//! Replays fuzz inputs through a target's property with stable Rust: what the crates'
//! `tests/fuzz_regressions.rs` run in `cargo test`, so the corpus is checked in CI without
//! nightly. Every file directly in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` is
//! one input (subdirectories are not read).

use std::path::{Path, PathBuf};

/// The fuzz directory, from a crate's manifest directory (`CARGO_MANIFEST_DIR`).
pub fn fuzz_dir(manifest_dir: &str) -> PathBuf {
    let mut d = Path::new(manifest_dir).to_path_buf();
    loop {
        if d.join("fuzz/props").is_dir() {
            return d.join("fuzz");
        }
        if !d.pop() {
            panic!("no fuzz/ directory above {manifest_dir}");
        }
    }
}

/// The inputs of `target`, sorted by path.
pub fn inputs(fuzz: &Path, target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target` (on a thread with libFuzzer's 8 MiB main stack) and
/// panics naming every input whose property fails. Returns the number of inputs.
pub fn replay(manifest_dir: &str, target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(&fuzz_dir(manifest_dir), target);
    assert!(!files.is_empty(), "no corpus for fuzz target {target}");
    let n = files.len();
    let failed = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let mut failed = Vec::new();
            for f in files {
                let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failed.push(f.display().to_string());
                }
            }
            failed
        })
        .expect("a replay thread")
        .join()
        .expect("the replay thread");
    assert!(failed.is_empty(), "{} of {n} inputs fail the {target} property:\n{}", failed.len(), failed.join("\n"));
    n
}

/// Runs `check` on one file (a reproducer libFuzzer wrote to `fuzz/artifacts/<target>/`).
pub fn replay_file(manifest_dir: &str, path: &str, check: fn(&[u8])) {
    let f = fuzz_dir(manifest_dir).join(path);
    let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || check(&data))
        .expect("a replay thread")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

/// How many inputs of `target` satisfy `pred` (for example: reach the checks of an accepted
/// request), and how many there are.
pub fn count(manifest_dir: &str, target: &str, pred: fn(&[u8]) -> bool) -> (usize, usize) {
    let files = inputs(&fuzz_dir(manifest_dir), target);
    let n = files.iter().filter(|f| pred(&std::fs::read(f).expect("a corpus file"))).count();
    (n, files.len())
}
