//! Probe: the time of one `AuditLog::append` on an idle SQLite store, sequentially, as one
//! `http_request` call's record. `cargo run --release -p airlock-store --example audit_append --
//! [N] [normal|full]` prints p50 and p99 over N appends on a two-worker multi-threaded runtime.
use airlock_core::config::SyncMode;
use airlock_store::audit::{AuditKey, AuditLog, AuditRecord, Decision};
use airlock_store::Store;
use std::time::Instant;

fn record(i: usize) -> AuditRecord {
    AuditRecord {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request_id: format!("018f0000-0000-7000-8000-{i:012}"),
        agent: "bench".into(),
        parent_chain: vec![],
        tool: "http_request".into(),
        handle: Some("API".into()),
        arguments: serde_json::json!({"method": "GET", "path_or_url": format!("/v1/ping/{i}")}),
        decision: Decision::Allow,
        code: None,
        outcome: "ok".into(),
        result_bytes: 120,
        redactions: 0,
        duration_us: 90,
        policies: vec!["grant:bench:API".into()],
        approval: None,
        peer: None,
        sandbox: None,
        identity: None,
        key_handover: None,
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(20_000);
    let sync = match std::env::args().nth(2).as_deref() {
        Some("full") => SyncMode::Full,
        _ => SyncMode::Normal,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_with(d.path(), sync).await.unwrap();
        let log = AuditLog::start(s.clone(), AuditKey::create(d.path()).unwrap());
        // On a worker of the runtime, as a call's task.
        tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n);
        let pause = std::env::var("PAUSE_US").ok().map(|v| std::time::Duration::from_micros(v.parse().unwrap()));
        for i in 0..n {
            if let Some(p) = pause {
                // As between a broker's calls: the thread waits on I/O.
                tokio::time::sleep(p).await;
            }
            let t = Instant::now();
            log.append(record(i)).await.unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(f64::total_cmp);
        println!("{n} appends ({sync:?}): p50 {:.1} µs, p99 {:.1} µs", lat[n / 2], lat[n * 99 / 100]);
    }).await.unwrap() });
}
