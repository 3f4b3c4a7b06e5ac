//! `airlock secret import` / `export` against a real OpenBao dev server.

#[path = "../crates/vault/tests/bao/mod.rs"]
mod bao;
mod common;

use serde_json::json;
use std::path::Path;
use std::process::Output;

fn airlock(dir: &Path, args: &[&str], token_var: &str, token: &str, input: Option<&str>) -> Output {
    common::airlock_in(dir, args, input, &[(token_var, token)])
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_import_and_export_round_trip_through_openbao() {
    let Some(b) = bao::Bao::start().await else { return };
    let token = b.policy_and_token("1h").await;
    b.kv_put("imp/app", json!({"api_key": "canaryImp_1aZ", "other": "x"})).await;
    b.kv_put("imp/single", json!({"only": "canaryOne_2bY"})).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let var = "AIRLOCK_TEST_BAO_CLI_TOKEN";
    let run = |args: &[&str], input: Option<&str>| airlock(dir, args, var, &token, input);
    let o = run(&["init"], None);
    assert!(o.status.success(), "{}", text(&o));
    let mut cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    cfg.push_str(&format!("\n{}", b.vault_toml("corp", &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 30)));
    std::fs::write(dir.join("airlock.toml"), cfg).unwrap();

    // Import one field; the value is never printed.
    let o = run(&["secret", "import", "--from", "openbao:corp/secret/imp/app#api_key"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("into API_KEY") && !text(&o).contains("canaryImp"), "{}", text(&o));
    // A secret with several fields needs #FIELD; one with a single field does not.
    let o = run(&["secret", "import", "--from", "openbao:corp/secret/imp/app"], None);
    assert!(!o.status.success() && text(&o).contains("has 2 fields (api_key, other)"), "{}", text(&o));
    let o = run(&["secret", "import", "--from", "vault:corp/secret/imp/single", "--as", "ONE"], None);
    assert!(o.status.success() && text(&o).contains("into ONE"), "{}", text(&o));
    let o = run(&["secret", "import", "--from", "openbao:corp/secret/imp/app#nope"], None);
    assert!(!o.status.success() && text(&o).contains("has no field 'nope'"), "{}", text(&o));
    let o = run(&["secret", "list"], None);
    assert!(text(&o).contains("API_KEY") && text(&o).contains("ONE"), "{}", text(&o));

    // Export back to a new path: the round trip gives the same value.
    let o = run(&["secret", "export", "API_KEY", "--to", "openbao:corp/secret/exp/app#api_key"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("canaryImp"));
    assert_eq!(b.kv_get("exp/app").await["data"], json!({"api_key": "canaryImp_1aZ"}));
    let o = run(&["secret", "export", "ONE", "--to", "openbao:corp/secret/exp/app#one"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(b.kv_get("exp/app").await["data"], json!({"api_key": "canaryImp_1aZ", "one": "canaryOne_2bY"}));

    // A changed local value does not silently replace the remote one.
    let o = run(&["secret", "put", "API_KEY"], Some("canaryNew_3cX\n"));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["secret", "export", "API_KEY", "--to", "openbao:corp/secret/exp/app#api_key"], None);
    assert!(!o.status.success() && text(&o).contains("--force"), "{}", text(&o));
    assert_eq!(b.kv_get("exp/app").await["data"]["api_key"], "canaryImp_1aZ");
    let o = run(&["secret", "export", "API_KEY", "--to", "openbao:corp/secret/exp/app#api_key", "--force"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(b.kv_get("exp/app").await["data"], json!({"api_key": "canaryNew_3cX", "one": "canaryOne_2bY"}));
    assert_eq!(b.kv_get("exp/app").await["metadata"]["version"], 3);

    // Bad references and a sealed server: clear errors.
    let o = run(&["secret", "import", "--from", "openbao:nope/secret/imp/app#api_key"], None);
    assert!(!o.status.success() && text(&o).contains("no vault named nope"), "{}", text(&o));
    let o = run(&["secret", "export", "API_KEY", "--to", "openbao:corp/secret/exp/app"], None);
    assert!(!o.status.success() && text(&o).contains("field is missing"), "{}", text(&o));
    b.seal().await;
    let o = run(&["secret", "import", "--from", "openbao:corp/secret/imp/app#api_key"], None);
    assert!(!o.status.success() && text(&o).contains("sealed"), "{}", text(&o));
}
