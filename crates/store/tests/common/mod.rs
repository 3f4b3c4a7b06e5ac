//! What the store's integration tests share.

use airlock_store::audit::{AuditRecord, Decision};

/// An allowed `query_db` call of `agent`, numbered `i` (in its request id and query).
pub fn record(i: usize, agent: &str) -> AuditRecord {
    AuditRecord {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request_id: format!("req-{i}"),
        agent: agent.into(),
        parent_chain: vec![],
        tool: "query_db".into(),
        handle: Some("DB".into()),
        arguments: serde_json::json!({"query": format!("SELECT {i}")}),
        decision: Decision::Allow,
        code: None,
        outcome: "ok".into(),
        result_bytes: 1,
        redactions: 0,
        duration_us: 1,
        policies: vec![],
        approval: None,
        peer: None,
        sandbox: None,
        identity: None,
        key_handover: None,
    }
}
