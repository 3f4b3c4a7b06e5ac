//! T14: plaintext is read only where the design allows it. A secret's bytes
//! (`Secret::expose_secret`, `Secret::expose_str`) may be read by executors, vault backends, the
//! scrubber's builder, the one-time link crate (which seals it) and the person's side of the CLI
//! (`airlock share open` prints what a person received). An executor's raw output
//! (`Unscrubbed::into_raw`) is opened only by the scrubber. The broker, its HTTP front end, the
//! MCP server and the rest of the binary hold secrets only to pass them on.
//!
//! The rule is checked over the whole tree so that it cannot erode silently; the allowance for
//! each path is written once, here.

use std::path::{Path, PathBuf};

/// Where `expose_secret` / `expose_str` may be called (path prefixes from the repository root).
const MAY_READ_PLAINTEXT: &[&str] = &[
    "crates/exec/",
    "crates/vault/",
    "crates/scrub/",
    "crates/share/",
    "crates/core/src/secret.rs",
    // The person's side: prints a secret received through a one-time link.
    "src/cli/share.rs",
    // The demo plays the person who opens the link it made.
    "src/demo.rs",
    // Benchmarks of executors build their inputs.
    "bench/",
];

/// Where `Unscrubbed::into_raw` may be called.
const MAY_OPEN_OUTPUT: &[&str] = &["crates/scrub/", "crates/core/src/executor.rs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Rust source file of the product (tests, examples and benches excluded: they exercise
/// the types from outside on purpose).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(name.as_str(), "target" | "tests" | "examples" | "benches" | "node_modules" | "fuzz" | ".git") {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(p);
        }
    }
}

/// `(file, line)` of every call of one of `methods` in non-test code (a `#[cfg(test)]` module
/// at the end of a file is left out).
fn calls(methods: &[&str]) -> Vec<(String, usize)> {
    let root = root();
    let mut files = Vec::new();
    for d in ["crates", "src", "bench"] {
        if root.join(d).is_dir() {
            sources(&root.join(d), &mut files);
        }
    }
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            if methods.iter().any(|m| code.contains(&format!(".{m}(")) || code.contains(&format!("::{m}("))) {
                found.push((rel.clone(), i + 1));
            }
        }
    }
    found
}

fn outside(found: &[(String, usize)], allowed: &[&str]) -> Vec<String> {
    found
        .iter()
        .filter(|(f, _)| !allowed.iter().any(|a| f.starts_with(a)))
        .map(|(f, l)| format!("{f}:{l}"))
        .collect()
}

#[test]
fn t14_only_executors_vaults_the_scrubber_and_links_read_plaintext() {
    let found = calls(&["expose_secret", "expose_str"]);
    // The scan sees the calls that must exist (an executor injecting its secret), so an empty
    // result cannot pass by accident.
    assert!(found.iter().any(|(f, _)| f.starts_with("crates/exec/http/")), "scan found no executor call: {found:?}");
    assert!(found.iter().any(|(f, _)| f.starts_with("crates/vault/")), "scan found no vault call: {found:?}");
    let bad = outside(&found, MAY_READ_PLAINTEXT);
    assert!(bad.is_empty(), "plaintext read outside executors and vault backends: {bad:?}");
}

#[test]
fn t14_only_the_scrubber_opens_executor_output() {
    let found = calls(&["into_raw"]);
    assert!(found.iter().any(|(f, _)| f.starts_with("crates/scrub/")), "scan found no scrubber call: {found:?}");
    let bad = outside(&found, MAY_OPEN_OUTPUT);
    assert!(bad.is_empty(), "executor output opened outside the scrubber: {bad:?}");
}

#[test]
fn t14_the_server_and_mcp_crates_hold_no_allowance() {
    for a in MAY_READ_PLAINTEXT.iter().chain(MAY_OPEN_OUTPUT) {
        assert!(!a.starts_with("crates/server") && !a.starts_with("crates/mcp"), "{a}");
    }
    let found = calls(&["expose_secret", "expose_str", "into_raw"]);
    let in_front: Vec<_> = found.iter().filter(|(f, _)| f.starts_with("crates/server/") || f.starts_with("crates/mcp/")).collect();
    assert!(in_front.is_empty(), "{in_front:?}");
}
