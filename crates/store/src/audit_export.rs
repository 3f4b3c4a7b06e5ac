//! The audit records as an export reads them: page by page by sequence number
//! ([`Store::audit_records`]), each rendered as one JSON object ([`render`]) in the stored form
//! (`jsonl`) or as an Open Cybersecurity Schema Framework event (`ocsf`). `airlock audit export`
//! prints them; the broker's syslog sink sends them. docs/audit-format.md ("Export") is the
//! normative description, with the OCSF field mapping.
//!
//! Nothing here adds to what the record holds: the arguments are the stored ones, which the
//! broker scrubbed (and for some tools reduced to their shape) before it wrote the record.

use crate::audit::AuditRecord;
use crate::{Result, Store, StoreError};
use airlock_core::config::AuditExportFormat;
use serde_json::{json, Map, Value};

/// The OCSF schema version the `ocsf` format follows.
pub const OCSF_VERSION: &str = "1.3.0";

/// One stored `audit` row, as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The sequence number.
    pub seq: i64,
    /// The record format (1 legacy, 2 current).
    pub format: i64,
    /// When the call arrived (RFC 3339 UTC).
    pub ts: String,
    /// The agent.
    pub agent: String,
    /// The tool (or the operator event).
    pub tool: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// The record as stored: the JSON text the hash covers.
    pub body: String,
    /// The previous record's hash.
    pub prev_hash: Vec<u8>,
    /// This record's hash.
    pub hash: Vec<u8>,
}

impl Store {
    /// Records after `after`, oldest first, at most `limit`: one page of an export. Seq has no
    /// gap and grows in commit order, so paging by `seq > after` misses nothing and repeats
    /// nothing.
    pub async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<StoredRecord>> {
        type Row = (i64, i64, String, String, String, String, String, Vec<u8>, Vec<u8>);
        let rows: Vec<Row> = self
            .fetch_all(
                "SELECT seq, format, ts, agent, tool, decision, body, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                &[after.into(), limit.into()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, format, ts, agent, tool, decision, body, prev_hash, hash)| StoredRecord {
                seq,
                format,
                ts,
                agent,
                tool,
                decision,
                body,
                prev_hash,
                hash,
            })
            .collect())
    }

    /// The highest sequence number (0 for an empty log).
    pub async fn audit_head(&self) -> Result<i64> {
        let row: Option<(Option<i64>,)> = self.fetch_optional("SELECT MAX(seq) FROM audit", &[]).await?;
        Ok(row.and_then(|(s,)| s).unwrap_or(0))
    }
}

/// `rec` as one JSON object in `format`. Fails only for a record whose body is not a record
/// (a store edited by hand; `audit verify` names it).
pub fn render(rec: &StoredRecord, format: AuditExportFormat) -> Result<Value> {
    match format {
        AuditExportFormat::Jsonl => Ok(jsonl(rec)),
        AuditExportFormat::Ocsf => ocsf(rec),
    }
}

/// The stored row: every column, `prev_hash` and `hash` in hex, `body` the exact text the hash
/// covers (so a receiver can recompute the chain, docs/audit-format.md "Record hash").
fn jsonl(rec: &StoredRecord) -> Value {
    json!({
        "seq": rec.seq,
        "format": rec.format,
        "ts": rec.ts,
        "agent": rec.agent,
        "tool": rec.tool,
        "decision": rec.decision,
        "body": rec.body,
        "prev_hash": hex::encode(&rec.prev_hash),
        "hash": hex::encode(&rec.hash),
    })
}

/// The OCSF classes used.
const API_ACTIVITY: i64 = 6003;
const AUTHENTICATION: i64 = 3002;

/// The OCSF API Activity `activity_id` of a record: what the tool does to its resource.
fn api_activity(tool: &str, args: &Value) -> (i64, &'static str) {
    const CREATE: (i64, &str) = (1, "Create");
    const READ: (i64, &str) = (2, "Read");
    const UPDATE: (i64, &str) = (3, "Update");
    const DELETE: (i64, &str) = (4, "Delete");
    const OTHER: (i64, &str) = (99, "Other");
    match tool {
        "query_db" | "connect_status" | "request_status" => READ,
        "http_request" => match args.get("method").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
            Some("GET" | "HEAD" | "OPTIONS") | None => READ,
            Some("POST") => CREATE,
            Some("PUT" | "PATCH") => UPDATE,
            Some("DELETE") => DELETE,
            Some(_) => OTHER,
        },
        "share_secret" | "request_lease" | "request_secret" | "connect_account" | "send_email" => CREATE,
        "agent_token_rotated" | "audit_key_rotated" | "config_reloaded" => UPDATE,
        t if t.ends_with("_revoked") => DELETE,
        _ => OTHER,
    }
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn epoch_ms(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp_millis())
}

/// The record as an OCSF 1.3.0 event: API Activity (6003) for a call or an operator event,
/// Authentication (3002, Logon, failed) for a refused token. The mapping is the table of
/// docs/audit-format.md; every field of the record that no OCSF attribute holds is in
/// `unmapped`.
fn ocsf(rec: &StoredRecord) -> Result<Value> {
    let r: AuditRecord = serde_json::from_str(&rec.body)
        .map_err(|e| StoreError::Invalid(format!("audit record {} is not valid JSON: {e}", rec.seq)))?;
    let denied = rec.decision != "allow";
    let failed = r.outcome != "ok";
    let (status_id, status) = if denied || failed { (2, "Failure") } else { (1, "Success") };
    // Informational when it went through, Low when an allowed call failed (upstream, limits),
    // Medium when it was refused (policy, token, approval).
    let (severity_id, severity) = match (denied, failed) {
        (false, false) => (1, "Informational"),
        (false, true) => (2, "Low"),
        (true, _) => (3, "Medium"),
    };
    let sign_in_refused = r.code.as_deref() == Some("unauthenticated");
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) = if sign_in_refused {
        (AUTHENTICATION, "Authentication", 3, "Identity & Access Management", 1, "Logon")
    } else {
        let (id, name) = api_activity(&rec.tool, &r.arguments);
        (API_ACTIVITY, "API Activity", 6, "Application Activity", id, name)
    };
    let mut actor = Map::new();
    let mut user = Map::new();
    if rec.agent != "-" {
        user.insert("name".into(), json!(rec.agent));
    }
    if let Some(id) = &r.identity {
        user.insert("uid".into(), json!(id.subject));
        actor.insert("idp".into(), json!({"name": id.issuer}));
    }
    if !user.is_empty() {
        actor.insert("user".into(), Value::Object(user.clone()));
    }
    if let Some(p) = &r.peer {
        let mut process = json!({"user": {"uid": p.uid.to_string()}, "group": {"uid": p.gid.to_string()}});
        if let Some(pid) = p.pid {
            process["pid"] = json!(pid);
        }
        actor.insert("process".into(), process);
    }
    let mut unmapped = json!({
        "decision": rec.decision,
        "outcome": r.outcome,
        "arguments": r.arguments,
        "parent_chain": r.parent_chain,
        "policies": r.policies,
        "result_bytes": r.result_bytes,
        "redactions": r.redactions,
        "duration_us": r.duration_us,
        "record_format": rec.format,
        "hash": hex::encode(&rec.hash),
        "prev_hash": hex::encode(&rec.prev_hash),
    });
    for (k, v) in [
        ("approval", r.approval.as_ref().map(|a| json!(a))),
        ("sandbox", r.sandbox.clone()),
        ("key_handover", r.key_handover.as_ref().map(|k| json!(k))),
    ] {
        if let Some(v) = v {
            unmapped[k] = v;
        }
    }
    let mut event = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
        "time": epoch_ms(&rec.ts).unwrap_or(0),
        "duration": r.duration_us / 1000,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "actor": actor,
        "message": format!("{} {} {}: {}", if rec.agent == "-" { "(no agent)" } else { &rec.agent }, rec.tool, rec.decision, r.outcome),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "airlock", "vendor_name": "airlock", "version": env!("CARGO_PKG_VERSION")},
            "uid": r.request_id,
            "sequence": rec.seq,
            "original_time": rec.ts,
            "log_name": "audit",
        },
        "unmapped": unmapped,
    });
    if let Some(code) = &r.code {
        event["status_code"] = json!(code);
    }
    if let Some(a) = &r.approval {
        event["metadata"]["correlation_uid"] = json!(a);
    }
    if let Some(h) = &r.handle {
        event["resources"] = json!([{"name": h, "type": "credential_handle"}]);
    }
    if sign_in_refused {
        // What the refused caller tried to reach; the source address, when the broker recorded
        // one, is in the arguments (unmapped).
        event["service"] = json!({"name": rec.tool});
        event["is_mfa"] = json!(false);
        if !user.is_empty() {
            event["user"] = Value::Object(user);
        }
    } else {
        let mut api = json!({"operation": rec.tool, "request": {"uid": r.request_id}});
        if let Some(code) = &r.code {
            api["response"] = json!({"error": code});
        }
        event["api"] = api;
    }
    Ok(event)
}

/// The syslog severity (RFC 5424) of a record: 6 informational when the call went through, 5
/// notice when an allowed call failed, 4 warning when it was refused.
pub fn syslog_severity(rec: &StoredRecord) -> u8 {
    #[derive(serde::Deserialize)]
    struct Outcome {
        outcome: Option<String>,
    }
    let ok = serde_json::from_str::<Outcome>(&rec.body).ok().and_then(|o| o.outcome).is_none_or(|o| o == "ok");
    match (rec.decision == "allow", ok) {
        (true, true) => 6,
        (true, false) => 5,
        (false, _) => 4,
    }
}

/// The export cursor of the broker's syslog sink: the last sequence number the receiver is known
/// to have (written on a connection that stayed up for the confirmation delay after it), in the
/// file `audit-export.cursor` of the data directory, replaced atomically (a temporary file,
/// fsynced, renamed over, the directory fsynced). Absent: nothing exported yet (0).
#[derive(Debug, Clone)]
pub struct ExportCursor {
    path: std::path::PathBuf,
}

/// The cursor file's name in the data directory.
pub const CURSOR_FILE: &str = "audit-export.cursor";

impl ExportCursor {
    /// The cursor of the data directory `dir`.
    pub fn new(dir: &std::path::Path) -> ExportCursor {
        ExportCursor { path: dir.join(CURSOR_FILE) }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The last acknowledged seq; 0 when the file does not exist.
    pub fn load(&self) -> Result<i64> {
        let io = |e| StoreError::Io { path: self.path.display().to_string(), source: e };
        match std::fs::read_to_string(&self.path) {
            Ok(t) => t.trim().parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                StoreError::Invalid(format!("{} does not hold a sequence number", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(e)),
        }
    }

    /// Replaces the cursor with `seq`, atomically and durably.
    pub fn save(&self, seq: i64) -> Result<()> {
        use std::io::Write;
        let name = format!(".{CURSOR_FILE}.tmp-{}", hex::encode(rand::random::<[u8; 8]>()));
        let tmp = self.path.with_file_name(name);
        let io = |p: &std::path::Path| {
            let p = p.display().to_string();
            move |e: std::io::Error| StoreError::Io { path: p, source: e }
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(format!("{seq}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&self.path)(e)
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: i64, rec: &AuditRecord) -> StoredRecord {
        StoredRecord {
            seq,
            format: 2,
            ts: rec.ts.clone(),
            agent: rec.agent.clone(),
            tool: rec.tool.clone(),
            decision: if rec.decision == crate::audit::Decision::Allow { "allow" } else { "deny" }.into(),
            body: serde_json::to_string(rec).unwrap(),
            prev_hash: vec![0; 32],
            hash: vec![7; 32],
        }
    }

    fn record(tool: &str, decision: crate::audit::Decision, code: Option<&str>) -> AuditRecord {
        AuditRecord {
            ts: "2026-12-03T15:00:48.537976Z".into(),
            request_id: "req-1".into(),
            agent: "bot".into(),
            parent_chain: vec!["root".into()],
            tool: tool.into(),
            handle: Some("DB".into()),
            arguments: json!({"query": "SELECT 1", "method": "DELETE"}),
            decision,
            code: code.map(str::to_owned),
            outcome: if code.is_some() { "error" } else { "ok" }.into(),
            result_bytes: 10,
            redactions: 1,
            duration_us: 2500,
            policies: vec!["grant:bot:DB".into()],
            approval: None,
            peer: Some(airlock_core::Peer { uid: 1000, gid: 1000, pid: Some(42) }),
            sandbox: None,
            identity: None,
            key_handover: None,
        }
    }

    #[test]
    fn a_call_maps_to_api_activity_with_its_status_and_sequence() {
        use crate::audit::Decision::*;
        let e = render(&stored(9, &record("query_db", Allow, None)), AuditExportFormat::Ocsf).unwrap();
        assert_eq!((e["class_uid"].as_i64(), e["activity_id"].as_i64(), e["type_uid"].as_i64()), (Some(6003), Some(2), Some(600302)));
        assert_eq!((e["status_id"].as_i64(), e["severity_id"].as_i64()), (Some(1), Some(1)));
        assert_eq!(e["time"].as_i64(), Some(1_796_310_048_537));
        assert_eq!(e["actor"]["user"]["name"], "bot");
        assert_eq!(e["actor"]["process"]["pid"], 42);
        assert_eq!(e["api"]["operation"], "query_db");
        assert_eq!(e["resources"][0]["name"], "DB");
        assert_eq!(e["metadata"]["sequence"], 9);
        assert_eq!(e["metadata"]["uid"], "req-1");
        assert_eq!(e["metadata"]["version"], OCSF_VERSION);
        assert_eq!(e["metadata"]["product"]["name"], "airlock");
        assert_eq!(e["unmapped"]["arguments"]["query"], "SELECT 1");
        assert_eq!(e["unmapped"]["parent_chain"][0], "root");

        let e = render(&stored(10, &record("http_request", Deny, Some("destination-not-allowed"))), AuditExportFormat::Ocsf).unwrap();
        assert_eq!((e["activity_id"].as_i64(), e["status_id"].as_i64(), e["severity_id"].as_i64()), (Some(4), Some(2), Some(3)));
        assert_eq!(e["status_code"], "destination-not-allowed");
        assert_eq!(e["api"]["response"]["error"], "destination-not-allowed");

        let e = render(&stored(11, &record("query_db", Allow, Some("upstream-unavailable"))), AuditExportFormat::Ocsf).unwrap();
        assert_eq!((e["status_id"].as_i64(), e["severity_id"].as_i64()), (Some(2), Some(2)));
    }

    #[test]
    fn a_refused_token_maps_to_a_failed_logon() {
        let mut r = record("query_db", crate::audit::Decision::Deny, Some("unauthenticated"));
        r.agent = "-".into();
        r.peer = None;
        let e = render(&stored(3, &r), AuditExportFormat::Ocsf).unwrap();
        assert_eq!((e["class_uid"].as_i64(), e["activity_id"].as_i64(), e["type_uid"].as_i64()), (Some(3002), Some(1), Some(300201)));
        assert_eq!(e["status_id"], 2);
        assert!(e.get("api").is_none() && e["actor"].get("user").is_none(), "{e}");
    }

    #[test]
    fn the_cursor_is_zero_until_saved_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let c = ExportCursor::new(d.path());
        assert_eq!(c.load().unwrap(), 0);
        c.save(41).unwrap();
        c.save(42).unwrap();
        assert_eq!(c.load().unwrap(), 42);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temporary file left");
        std::fs::write(c.path(), "x").unwrap();
        assert!(c.load().is_err());
    }

    #[test]
    fn jsonl_is_the_stored_row_with_hex_hashes() {
        let s = stored(5, &record("query_db", crate::audit::Decision::Allow, None));
        let e = render(&s, AuditExportFormat::Jsonl).unwrap();
        assert_eq!(e["seq"], 5);
        assert_eq!(e["body"].as_str(), Some(s.body.as_str()));
        assert_eq!(e["hash"], "07".repeat(32));
        assert_eq!(e["prev_hash"], "00".repeat(32));
    }
}
