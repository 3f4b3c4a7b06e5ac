//! `airlock key rotate` on a data directory, with or without a broker serving it: the local
//! vault's key rotated online ([`airlock_vault::Vault::finish_rotation`]) and audited.

use super::audit::operator_record;
use super::revocation::{Revoked, Revoker};
use airlock_store::audit::AuditLog;
use airlock_vault::keyring::RotationReport;
use airlock_vault::{Vault, VaultError};
use serde_json::json;

/// Starts a rotation of `vault`'s key (a new key version) unless one is under way, then
/// re-wraps every sealed value under the new version and deletes the older ones; brokers on the
/// same store go on serving meanwhile. Run again after an interruption, it resumes. Audited in
/// `audit`: `master_key_rotation_started` (the new version, written before it is made),
/// `master_key_rotation_resumed` (a run that finishes an interrupted one),
/// `master_key_rotation_failed` and `master_key_rotated` (the version, values re-wrapped,
/// versions deleted, passes), never key material. Returns the
/// version this run started, if any, and the report.
pub async fn rotate_master_key(
    vault: &Vault,
    audit: &AuditLog,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<(Option<u32>, RotationReport), VaultError> {
    let reason = "master key rotated by the operator";
    let status = vault.rotation_status().await?;
    let started = if status.in_progress() {
        let target = json!({"key_version": status.active, "remaining": status.remaining});
        audit_key_event(audit, "master_key_rotation_resumed", reason, target).await?;
        None
    } else {
        // Recorded before the version exists, so that a process killed right after it leaves
        // the record; a failure to make it is recorded too.
        let next = status.versions.iter().max().copied().unwrap_or(0) + 1;
        audit_key_event(audit, "master_key_rotation_started", reason, json!({"key_version": next})).await?;
        match vault.begin_rotation().await {
            Ok(v) => Some(v),
            Err(e) => {
                let target = json!({"key_version": next, "error": e.to_string()});
                audit_key_event(audit, "master_key_rotation_failed", reason, target).await?;
                return Err(e);
            }
        }
    };
    let report = vault.finish_rotation(progress).await?;
    let target = json!({
        "key_version": report.version, "rewrapped": report.rewrapped, "retired_versions": report.retired, "passes": report.passes,
    });
    audit_key_event(audit, "master_key_rotated", reason, target).await?;
    Ok((started, report))
}

/// Appends the record of a key operation done by the operator (`event`, with `target`: names
/// and numbers, never key material) and waits for it to be committed.
pub async fn audit_key_event(audit: &AuditLog, event: &str, reason: &str, target: serde_json::Value) -> Result<i64, airlock_store::StoreError> {
    let who = Revoker { by: "operator", chain: &[], reason };
    audit.append(operator_record(&who, Revoked { event, handle: None, target, code: None })).await
}
