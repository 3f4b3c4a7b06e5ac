//! OpenBao as a secret backend, against a real `bao server -dev` per test.

mod bao;

use airlock_core::config::{Config, RemoteRef, SecretRef};
use airlock_core::Secret;
use airlock_store::Store;
use airlock_vault::{MasterKey, RemoteFailure, Vault, VaultError};
use bao::Bao;
use serde_json::json;
use std::time::Duration;

/// A vault whose `[vaults.corp]` is `bao`, with `auth` and `cache_ttl`.
async fn vault_for(b: &Bao, auth: &str, cache_ttl: u64) -> (Vault, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let text = b.vault_toml("corp", auth, cache_ttl);
    let cfg = Config::parse(&text, "test.toml", d.path()).unwrap();
    let store = Store::open(d.path()).await.unwrap();
    let v = Vault::with_remotes(MasterKey::from_bytes([3u8; 32]), store, cfg.vaults.values()).unwrap();
    (v, d)
}

fn r(s: &str) -> SecretRef {
    SecretRef::parse(s, std::path::Path::new(".")).unwrap()
}

fn failure(e: VaultError) -> RemoteFailure {
    let shown = e.to_string();
    assert!(!shown.contains("canary"), "an error shows no value: {shown}");
    e.remote_failure().unwrap_or_else(|| panic!("not a remote failure: {shown}"))
}

/// A unique environment variable holding `value`.
fn env_token(value: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let var = format!("AIRLOCK_TEST_BAO_TOKEN_{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    std::env::set_var(&var, value);
    var
}

#[tokio::test]
async fn token_auth_over_tls_versions_cache_and_invalidation() {
    let Some(b) = Bao::start_tls().await else { return };
    assert!(b.ca.is_some() && b.addr.starts_with("https://"));
    let token = b.policy_and_token("1h").await;
    b.kv_put("app/db", json!({"password": "canary-v1-Qx7", "user": "app"})).await;
    let var = env_token(&token);
    let (v, _d) = vault_for(&b, &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 30).await;

    let got = v.resolve(&r("openbao:corp/secret/app/db#password")).await.unwrap();
    assert_eq!(got.expose_str(), Some("canary-v1-Qx7"));
    assert_eq!(v.resolve(&r("vault:corp/secret/app/db#user")).await.unwrap().expose_str(), Some("app"));

    // A new version: the cache still answers the old one until it is invalidated.
    assert_eq!(b.kv_put("app/db", json!({"password": "canary-v2-Lm3", "user": "app"})).await, 2);
    assert_eq!(v.resolve(&r("openbao:corp/secret/app/db#password")).await.unwrap().expose_str(), Some("canary-v1-Qx7"));
    v.invalidate();
    assert_eq!(v.resolve(&r("openbao:corp/secret/app/db#password")).await.unwrap().expose_str(), Some("canary-v2-Lm3"));
    // One reference only.
    b.kv_put("app/db", json!({"password": "canary-v3-Zp0", "user": "app"})).await;
    let SecretRef::Remote(rr) = r("openbao:corp/secret/app/db#password") else { unreachable!() };
    v.invalidate_ref(&rr);
    assert_eq!(v.resolve(&SecretRef::Remote(rr)).await.unwrap().expose_str(), Some("canary-v3-Zp0"));

    // Version pinning.
    assert_eq!(v.resolve(&r("openbao:corp/secret/app/db#password@1")).await.unwrap().expose_str(), Some("canary-v1-Qx7"));
    assert_eq!(v.resolve(&r("openbao:corp/secret/app/db#password@2")).await.unwrap().expose_str(), Some("canary-v2-Lm3"));
    assert_eq!(failure(v.resolve(&r("openbao:corp/secret/app/db#password@9")).await.unwrap_err()), RemoteFailure::NotFound);

    // Missing field, missing path, a path the policy does not cover.
    let e = v.resolve(&r("openbao:corp/secret/app/db#nope")).await.unwrap_err();
    assert!(e.to_string().contains("no field 'nope'"), "{e}");
    assert_eq!(failure(e), RemoteFailure::FieldMissing);
    assert_eq!(failure(v.resolve(&r("openbao:corp/secret/app/none#password")).await.unwrap_err()), RemoteFailure::NotFound);
    assert_eq!(failure(v.resolve(&r("openbao:corp/other/x/y#z")).await.unwrap_err()), RemoteFailure::PermissionDenied);
}

#[tokio::test]
async fn wrong_token_sealed_and_down_fail_clearly() {
    let Some(mut b) = Bao::start().await else { return };
    b.kv_put("svc/api", json!({"key": "canary-key-Wn4"})).await;
    let var = env_token("not-a-real-token");
    let (v, _d) = vault_for(&b, &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 0).await;
    assert_eq!(failure(v.resolve(&r("openbao:corp/secret/svc/api#key")).await.unwrap_err()), RemoteFailure::PermissionDenied);
    // The token from a file (trailing newline ignored).
    let tf = b.dir.path().join("token");
    std::fs::write(&tf, format!("{}\n", bao::ROOT)).unwrap();
    let (v, _d2) = vault_for(&b, &format!("{{ method = \"token\", token = \"file:{}\" }}", tf.display()), 0).await;
    assert_eq!(v.resolve(&r("openbao:corp/secret/svc/api#key")).await.unwrap().expose_str(), Some("canary-key-Wn4"));
    // An unset variable.
    let (v2, _d3) = vault_for(&b, "{ method = \"token\", token = \"env:AIRLOCK_TEST_SURELY_UNSET_BAO\" }", 0).await;
    assert_eq!(failure(v2.resolve(&r("openbao:corp/secret/svc/api#key")).await.unwrap_err()), RemoteFailure::Credential);

    b.seal().await;
    let e = v.resolve(&r("openbao:corp/secret/svc/api#key")).await.unwrap_err();
    assert!(e.to_string().contains("sealed"), "{e}");
    assert_eq!(failure(e), RemoteFailure::Sealed);

    b.kill();
    let t = std::time::Instant::now();
    assert_eq!(failure(v.resolve(&r("openbao:corp/secret/svc/api#key")).await.unwrap_err()), RemoteFailure::Unreachable);
    assert!(t.elapsed() < Duration::from_secs(10), "a dead server fails fast");
}

#[tokio::test]
async fn approle_logs_in_and_renews_its_token() {
    let Some(b) = Bao::start().await else { return };
    b.kv_put("ops/x", json!({"v": "canary-ar-Hh2"})).await;
    let (role_id, secret_id) = b.approle("4s").await;
    let rv = env_token(&role_id);
    let sv = env_token(&secret_id);
    let (v, _d) = vault_for(&b, &format!("{{ method = \"approle\", role_id = \"env:{rv}\", secret_id = \"env:{sv}\" }}"), 0).await;
    // Reads past the token's 4 s TTL keep working: the token is renewed past its half-life.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        assert_eq!(v.resolve(&r("openbao:corp/secret/ops/x#v")).await.unwrap().expose_str(), Some("canary-ar-Hh2"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (renewals, logins) = v.remote("corp").unwrap().token_stats();
    assert!(renewals >= 2, "renewed {renewals} times");
    assert_eq!(logins, 1, "renewal, not new logins");

    // A wrong secret id: permission denied at login.
    let bad = env_token("00000000-0000-0000-0000-000000000000");
    let (v2, _d2) = vault_for(&b, &format!("{{ method = \"approle\", role_id = \"env:{rv}\", secret_id = \"env:{bad}\" }}"), 0).await;
    let e = v2.resolve(&r("openbao:corp/secret/ops/x#v")).await.unwrap_err();
    assert!(e.to_string().contains("AppRole login"), "{e}");
    assert_eq!(failure(e), RemoteFailure::PermissionDenied);
}

#[tokio::test]
async fn a_renewable_token_is_renewed_and_an_expired_one_is_refused() {
    let Some(b) = Bao::start().await else { return };
    b.kv_put("t/x", json!({"v": "canary-tk-Pp9"})).await;
    let token = b.policy_and_token("4s").await;
    let var = env_token(&token);
    let (v, _d) = vault_for(&b, &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 0).await;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        v.resolve(&r("openbao:corp/secret/t/x#v")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(v.remote("corp").unwrap().token_stats().0 >= 1);
    // A token revoked behind airlock's back: permission denied, no retry loop.
    b.call("POST", "auth/token/revoke", Some(json!({"token": token}))).await;
    assert_eq!(failure(v.resolve(&r("openbao:corp/secret/t/x#v")).await.unwrap_err()), RemoteFailure::PermissionDenied);
}

#[tokio::test]
async fn export_writes_with_check_and_set_and_keeps_other_fields() {
    let Some(b) = Bao::start().await else { return };
    let token = b.policy_and_token("1h").await;
    let var = env_token(&token);
    let (v, _d) = vault_for(&b, &format!("{{ method = \"token\", token = \"env:{var}\" }}"), 30).await;
    let remote = v.remote("corp").unwrap();
    let rr = |s: &str| RemoteRef::parse(s, true).unwrap();
    // A new secret.
    assert_eq!(remote.write_field(&rr("corp/secret/exp/a#pw"), &Secret::from_str_value("canary-e1"), false).await.unwrap(), 1);
    b.kv_put("exp/a", json!({"pw": "canary-e1", "user": "u1"})).await;
    // The same value: nothing written.
    assert_eq!(remote.write_field(&rr("corp/secret/exp/a#pw"), &Secret::from_str_value("canary-e1"), false).await.unwrap(), 2);
    // A different value is not replaced without force.
    let e = remote.write_field(&rr("corp/secret/exp/a#pw"), &Secret::from_str_value("canary-e2"), false).await.unwrap_err();
    assert_eq!(failure(e), RemoteFailure::Conflict);
    // A stale pinned version is refused.
    let e = remote.write_field(&rr("corp/secret/exp/a#pw@1"), &Secret::from_str_value("canary-e2"), false).await.unwrap_err();
    assert_eq!(failure(e), RemoteFailure::Conflict);
    // The current pinned version, or force: written, other fields kept.
    assert_eq!(remote.write_field(&rr("corp/secret/exp/a#pw@2"), &Secret::from_str_value("canary-e2"), false).await.unwrap(), 3);
    assert_eq!(remote.write_field(&rr("corp/secret/exp/a#pw"), &Secret::from_str_value("canary-e3"), true).await.unwrap(), 4);
    let d = b.kv_get("exp/a").await;
    assert_eq!(d["data"], json!({"pw": "canary-e3", "user": "u1"}));
    // Reading the whole secret (import).
    let (fields, version) = remote.read_kv(&RemoteRef::parse("corp/secret/exp/a", false).unwrap()).await.unwrap();
    assert_eq!(version, 4);
    let mut names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    assert_eq!(names, ["pw", "user"]);
}
