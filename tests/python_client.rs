//! The Python client (`clients/python`, package `airlock-client`) against this binary: its pytest
//! suite starts `airlock serve` (AIRLOCK_BIN) on a free port with a real HTTP upstream, and runs
//! the client, its async twin and the OpenAI Agents SDK and LangChain adapters through it.
//!
//! Without python3 and its packages (httpx, pytest, openai-agents, langchain-core) the test
//! prints `skipped: …` and passes, unless AIRLOCK_REQUIRE_SERVICES=1 (CI), where it fails.

use std::process::Command;

mod common;
use common::{require, root};

const MODULES: &str = "import httpx, pytest, agents, langchain_core";
const INSTALL: &str = "pip install httpx pytest openai-agents langchain-core";

#[test]
fn python_client_suite_passes_against_a_real_broker() {
    let probe = Command::new("python3").args(["-c", MODULES]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        let why = format!("python3 with httpx, pytest, openai-agents and langchain-core is missing ({INSTALL})");
        if require() {
            panic!("{why} and AIRLOCK_REQUIRE_SERVICES=1");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let root = root();
    let src = root.join("clients/python/src");
    let pythonpath = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut v = src.into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => src.into_os_string(),
    };
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "clients/python/tests"])
        .current_dir(&root)
        .env("AIRLOCK_BIN", env!("CARGO_BIN_EXE_airlock"))
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // No model is called; make sure nothing could reach one.
        .env_remove("OPENAI_API_KEY")
        .env_remove("AIRLOCK_TOKEN")
        .env_remove("AIRLOCK_TOKEN_FILE")
        .env_remove("AIRLOCK_ENDPOINT")
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "the Python client's tests failed:\n{report}");
    let summary = report.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    assert!(!summary.is_empty(), "no pytest summary:\n{report}");
    if require() {
        assert!(!summary.contains("skipped"), "AIRLOCK_REQUIRE_SERVICES=1 but tests were skipped: {summary}");
    }
}
