//! The engine as the broker uses it: a config file on disk naming a relative policy file.

use airlock_core::config::Config;
use airlock_core::{HandleName, Tool};
use airlock_policy::{PolicyEngine, PolicyError};

const CONFIG: &str = r#"
[policy]
files = ["policies/extra.cedar"]

[handles.DB_PROD]
kind = "sqlite"
secret = "file:db.path"

[handles.DB_TEST]
kind = "sqlite"
secret = "file:test.path"

[agents.report-bot]
grants = [{ handle = "DB_PROD", tools = ["query_db"] }, { handle = "DB_TEST", tools = ["query_db"] }]
"#;

fn setup(policy: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/extra.cedar"), policy).unwrap();
    std::fs::write(dir.path().join("airlock.toml"), CONFIG).unwrap();
    let cfg = Config::load(&dir.path().join("airlock.toml")).unwrap();
    (dir, cfg)
}

#[test]
fn a_policy_file_next_to_the_config_is_loaded_and_its_forbid_wins() {
    let (_dir, cfg) = setup(
        "// Production stays out of reach of reporting agents.\n@id(\"no-prod\")\nforbid (principal, action, resource == Airlock::Handle::\"DB_PROD\");\n",
    );
    let engine = PolicyEngine::from_config(&cfg).unwrap();
    assert_eq!(engine.policy_count(), 3);
    let prod = &cfg.handles[&HandleName::parse("DB_PROD").unwrap()];
    let d = engine.decide("report-bot", Tool::QueryDb, prod);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["no-prod"]);
    let names: Vec<_> = engine.allowed_handles("report-bot", Tool::QueryDb, &cfg).into_iter().map(|h| h.to_string()).collect();
    assert_eq!(names, ["DB_TEST"]);
}

#[test]
fn a_typo_in_the_policy_file_is_reported_with_its_path_and_line() {
    let (_dir, cfg) = setup("\n\nforbid (principal, action, resource)\n  when { resource.scoop == \"read_write\" };\n");
    let err = PolicyEngine::from_config(&cfg).unwrap_err();
    assert!(matches!(err, PolicyError::Validation { .. }), "{err:?}");
    let s = err.to_string();
    assert!(s.contains("policies/extra.cedar:4:"), "{s}");
    assert!(s.contains("scoop"), "{s}");
}
