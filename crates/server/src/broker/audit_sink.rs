//! The continuous audit export (`[audit.export]`): every audit record, in sequence order, as one
//! RFC 5424 syslog message to a receiver over TCP (RFC 6587 octet counting, `LEN SP MSG`; with
//! TLS as RFC 5425 frames it), at least once.
//!
//! The sink never holds up a call: it is a task of its own that reads the records back from the
//! audit table by seq, a page at a time, after they are committed. The backlog while the
//! receiver is down is the table itself (nothing queues in memory), and it is sent when the
//! receiver is back, after a reconnection with exponential backoff.
//!
//! At least once: a batch is *confirmed* once it was written and the connection stayed up for
//! [`CONFIRM`] after (the receiver never sends; the read side seeing the end of the stream or an
//! error means it is gone). The cursor (`audit-export.cursor` in the data directory, replaced
//! atomically) holds the last confirmed seq; after a broken connection, and after a restart of
//! the broker, the sink resends from it. A receiver may therefore get a record more than once,
//! never out of order on one connection: it deduplicates by seq (`metadata.sequence` in OCSF,
//! `seq` in jsonl). The lag (head seq minus cursor) is the gauge `airlock_audit_export_lag`.

use super::metrics::ExportMetrics;
use super::Broker;
use airlock_core::config::AuditExport;
use airlock_store::audit_export::{self, ExportCursor, StoredRecord};
use airlock_store::Store;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

/// How long a written batch must stay on a live connection before it counts as delivered.
pub const CONFIRM: Duration = Duration::from_millis(1000);
/// How often the sink looks for new records once it has sent everything.
const POLL: Duration = Duration::from_millis(200);
/// Records read and sent per batch.
const PAGE: i64 = 500;
/// Reconnection backoff: from this, doubling, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection (and TLS handshake), or a write, that takes longer than this has failed.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5424 facility 13, log audit.
const FACILITY: u8 = 13;

/// What stops the export for a while (it retries; nothing here stops the broker).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The receiver cannot be reached, refused the TLS handshake, or the connection broke.
    #[error("syslog receiver {addr}: {message}")]
    Receiver {
        /// `host:port`.
        addr: String,
        /// What happened.
        message: String,
    },
    /// The TLS settings cannot be used: the CA file is unreadable or holds no certificate, or
    /// the host is no valid server name.
    #[error("audit export TLS: {0}")]
    Tls(String),
    /// The audit table or the cursor file could not be read or written.
    #[error(transparent)]
    Store(#[from] airlock_store::StoreError),
}

/// A connection to the receiver, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

/// The sink: its settings, where it reads, where its cursor is, its metrics.
struct Sink {
    cfg: AuditExport,
    store: Store,
    cursor: ExportCursor,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    hostname: String,
    pid: u32,
    metrics: ExportMetrics,
    /// [`CONFIRM`]; longer in a test that must see nothing confirmed.
    confirm: Duration,
}

impl Broker {
    /// Starts the sink of `[audit.export]`, when configured; it runs until the task is aborted.
    /// A TLS setting that cannot be used is logged, and the sink does not start (the broker
    /// serves on: the records wait in the table).
    pub fn spawn_audit_export(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let cfg = self.cfg().audit.export.clone()?;
        let tls = match tls_connector(&cfg) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "audit export not started");
                return None;
            }
        };
        let sink = Sink {
            cursor: ExportCursor::new(&self.cfg().store.data_dir),
            store: self.store.clone(),
            tls,
            hostname: hostname(),
            pid: std::process::id(),
            metrics: self.metrics.audit_export().clone(),
            cfg,
            confirm: CONFIRM,
        };
        Some(tokio::spawn(sink.run()))
    }
}

/// The TLS connector and server name for `cfg`, when it uses TLS: the CA file's certificates, or
/// the public roots (webpki-roots) without one.
fn tls_connector(
    cfg: &AuditExport,
) -> Result<Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>, SinkError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    if !cfg.tls {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(f) => {
            let bad = |e: &dyn std::fmt::Display| SinkError::Tls(format!("ca_file {}: {e}", f.display()));
            for cert in CertificateDer::pem_file_iter(f).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"holds no certificate"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(cfg.host.clone()).map_err(|e| SinkError::Tls(format!("{}: {e}", cfg.host)))?;
    Ok(Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name)))
}

/// This machine's host name for the syslog HOSTNAME field, or `-` (RFC 5424's nil value).
fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = h.trim();
    if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| b.is_ascii_graphic()) {
        return "-".into();
    }
    h.to_owned()
}

/// Appends one octet-counted RFC 5424 message to `out`:
/// `LEN SP <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, with MSGID `audit`, no
/// structured data, and the record's JSON as MSG (UTF-8, no BOM).
pub fn frame(out: &mut Vec<u8>, rec: &StoredRecord, hostname: &str, app_name: &str, pid: u32, msg: &str) {
    let pri = u16::from(FACILITY) * 8 + u16::from(audit_export::syslog_severity(rec));
    // The record's time is RFC 3339 UTC with microseconds, as RFC 5424 allows; anything else
    // (a row edited by hand) goes as the nil value rather than a malformed header.
    let ts = if chrono::DateTime::parse_from_rfc3339(&rec.ts).is_ok() && rec.ts.bytes().all(|b| b.is_ascii_graphic()) {
        rec.ts.as_str()
    } else {
        "-"
    };
    let message = format!("<{pri}>1 {ts} {hostname} {app_name} {pid} audit - {msg}");
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.as_bytes());
}

impl Sink {
    /// Connects, sends, and on any failure waits and starts again from the cursor; forever.
    async fn run(self) {
        // A store that cannot be read yet (PostgreSQL restarting) or a cursor file that cannot
        // be read holds the export back, not forever: retried like a receiver that is down.
        let mut backoff = MIN_BACKOFF;
        let mut cursor = loop {
            match self.start_cursor().await {
                Ok(c) => break c,
                Err(e) => {
                    if backoff == MIN_BACKOFF {
                        tracing::error!(error = %e, "audit export waiting: its cursor or the audit log cannot be read");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let mut backoff = MIN_BACKOFF;
        let mut down = false;
        loop {
            let started = Instant::now();
            let before = cursor;
            let result = match self.connect().await {
                Ok(conn) => {
                    if down {
                        tracing::info!(addr = %self.addr(), from = cursor + 1, "audit export reconnected");
                        down = false;
                    }
                    self.session(conn, &mut cursor).await
                }
                Err(e) => Err(e),
            };
            let Err(e) = result else { continue };
            self.metrics.failures.inc();
            self.update_lag(cursor).await;
            if !down {
                tracing::warn!(error = %e, resend_from = cursor + 1, "audit export interrupted; retrying with backoff");
                down = true;
            }
            // A session that got somewhere starts the backoff again.
            if cursor > before || started.elapsed() > MAX_BACKOFF {
                backoff = MIN_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The cursor to start from. One past the table's head (a store restored from an older
    /// backup, or another store) would skip the records numbered again: the sink restarts at the
    /// head instead, and says so.
    async fn start_cursor(&self) -> Result<i64, SinkError> {
        let cursor = self.cursor.load()?;
        let head = self.store.audit_head().await?;
        if cursor > head {
            tracing::warn!(cursor, head, "the audit export cursor is past the last record; exporting from the head on");
            self.cursor.save(head)?;
            return Ok(head);
        }
        Ok(cursor)
    }

    fn addr(&self) -> String {
        if self.cfg.host.contains(':') {
            format!("[{}]:{}", self.cfg.host, self.cfg.port)
        } else {
            format!("{}:{}", self.cfg.host, self.cfg.port)
        }
    }

    fn receiver_error(&self, message: impl std::fmt::Display) -> SinkError {
        SinkError::Receiver { addr: self.addr(), message: message.to_string() }
    }

    /// A connection to the receiver, with the TLS handshake done when configured.
    async fn connect(&self) -> Result<Box<dyn Conn>, SinkError> {
        let addr = (self.cfg.host.as_str(), self.cfg.port);
        let tcp = match tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(self.receiver_error(e)),
            Err(_) => return Err(self.receiver_error("connection timed out")),
        };
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else { return Ok(Box::new(tcp)) };
        match tokio::time::timeout(IO_TIMEOUT, connector.connect(name.clone(), tcp)).await {
            Ok(Ok(t)) => Ok(Box::new(t)),
            Ok(Err(e)) => Err(self.receiver_error(format!("TLS: {e}"))),
            Err(_) => Err(self.receiver_error("TLS handshake timed out")),
        }
    }

    /// Sends every record after `cursor` on `conn`, then polls for more, until the connection
    /// fails; `cursor` advances (and is saved) as batches are confirmed.
    async fn session(&self, conn: Box<dyn Conn>, cursor: &mut i64) -> Result<(), SinkError> {
        let (mut rd, mut wr) = tokio::io::split(conn);
        // The receiver sends nothing (TLS records aside, which the read side consumes): the end
        // of the stream or an error means the receiver is gone.
        let (gone_tx, mut gone) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = gone_tx.send(true);
        });
        let _abort = AbortOnDrop(reader);
        let mut sent = *cursor;
        let mut unconfirmed: VecDeque<(i64, Instant)> = VecDeque::new();
        // The cursor file is replaced (two fsyncs) at most once per CONFIRM while a backlog
        // streams, and as soon as everything sent is confirmed.
        let mut confirmed_seq = *cursor;
        let mut saved_at = Instant::now();
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            if *gone.borrow() {
                return Err(self.receiver_error("the receiver closed the connection"));
            }
            while let Some(&(seq, at)) = unconfirmed.front() {
                if at.elapsed() < self.confirm {
                    break;
                }
                confirmed_seq = seq;
                unconfirmed.pop_front();
            }
            if confirmed_seq > *cursor && (unconfirmed.is_empty() || saved_at.elapsed() >= self.confirm) {
                self.cursor.save(confirmed_seq)?;
                *cursor = confirmed_seq;
                saved_at = Instant::now();
            }
            self.update_lag(*cursor).await;
            let page = self.store.audit_records(sent, PAGE).await?;
            let Some(last) = page.last().map(|r| r.seq) else {
                tokio::select! {
                    _ = gone.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            };
            buf.clear();
            for rec in &page {
                // A record that cannot be rendered (a body edited by hand) is sent as its stored
                // row, so the receiver still sees its seq; `audit verify` names it.
                let line = audit_export::render(rec, self.cfg.format)
                    .unwrap_or_else(|_| audit_export::render(rec, airlock_core::config::AuditExportFormat::Jsonl).expect("jsonl renders any row"));
                frame(&mut buf, rec, &self.hostname, &self.cfg.app_name, self.pid, &line.to_string());
            }
            let write = async {
                wr.write_all(&buf).await?;
                wr.flush().await
            };
            match tokio::time::timeout(IO_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.receiver_error(e)),
                Err(_) => return Err(self.receiver_error("write timed out (the receiver does not read)")),
            }
            self.metrics.records.inc_by(page.len() as u64);
            sent = last;
            unconfirmed.push_back((last, Instant::now()));
        }
    }

    /// Sets the lag gauge: the head seq minus the cursor.
    async fn update_lag(&self, cursor: i64) {
        if let Ok(head) = self.store.audit_head().await {
            self.metrics.lag.set((head - cursor).max(0));
        }
    }
}

/// Aborts the task when dropped (the reader of a connection given up).
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::{AuditExportFormat, AuditSink};
    use airlock_store::audit::{AuditKey, AuditLog, AuditRecord, Decision};

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: format!("req-{i}"),
            agent: "bot".into(),
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

    /// The seqs of the whole octet-counted messages in `bytes` (their MSG is jsonl); a message
    /// not yet all there ends the list.
    fn seqs(mut bytes: &[u8]) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(sp) = bytes.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&bytes[..sp]).unwrap().parse().unwrap();
            if bytes.len() < sp + 1 + len {
                break;
            }
            let msg = std::str::from_utf8(&bytes[sp + 1..sp + 1 + len]).unwrap();
            let json = msg.splitn(8, ' ').nth(7).unwrap();
            out.push(serde_json::from_str::<serde_json::Value>(json).unwrap()["seq"].as_i64().unwrap());
            bytes = &bytes[sp + 1 + len..];
        }
        out
    }

    /// Reads one connection of `listener` until it holds messages up to `last`; what it read.
    /// At most 30 s.
    async fn read_until(listener: &tokio::net::TcpListener, last: i64) -> (tokio::net::TcpStream, Vec<i64>) {
        tokio::time::timeout(Duration::from_secs(30), read_until_unbounded(listener, last)).await.unwrap_or_else(|_| panic!("no messages up to {last} in 30 s"))
    }

    async fn read_until_unbounded(listener: &tokio::net::TcpListener, last: i64) -> (tokio::net::TcpStream, Vec<i64>) {
        let (mut c, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 65536];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the sink closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let got = seqs(&buf);
            if got.last() == Some(&last) {
                return (c, got);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_not_confirmed_when_the_receiver_goes_are_sent_again_and_the_cursor_follows_confirmation() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).await.unwrap();
        let log = AuditLog::start(store.clone(), AuditKey::create(d.path()).unwrap());
        for i in 0..20 {
            log.append(record(i)).await.unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = AuditExport {
            sink: AuditSink::Syslog,
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
            tls: false,
            ca_file: None,
            format: AuditExportFormat::Jsonl,
            app_name: "airlock".into(),
        };
        let sink = |confirm| Sink {
            cfg: cfg.clone(),
            store: store.clone(),
            cursor: ExportCursor::new(d.path()),
            tls: None,
            hostname: "h".into(),
            pid: 1,
            metrics: ExportMetrics::default(),
            confirm,
        };
        // Nothing is confirmed within an hour: a receiver that reads everything and goes gets
        // everything again on the next connection, and the cursor stays at 0.
        let task = AbortOnDrop(tokio::spawn(sink(Duration::from_secs(3600)).run()));
        let (first, got) = read_until(&listener, 20).await;
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
        drop(first);
        let (_second, got) = read_until(&listener, 20).await;
        assert_eq!(got, (1..=20).collect::<Vec<_>>(), "the unconfirmed records again, in order");
        assert_eq!(ExportCursor::new(d.path()).load().unwrap(), 0);
        drop(task);

        // Confirmed at once: the cursor reaches the last record, and a new sink (the broker
        // restarted) sends only what came after it.
        let task = AbortOnDrop(tokio::spawn(sink(Duration::ZERO).run()));
        let (_third, _) = read_until(&listener, 20).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ExportCursor::new(d.path()).load().unwrap() != 20 {
            assert!(Instant::now() < deadline, "the cursor did not reach 20");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(task);
        log.append(record(20)).await.unwrap();
        let _task = AbortOnDrop(tokio::spawn(sink(Duration::ZERO).run()));
        let (_fourth, got) = read_until(&listener, 21).await;
        assert_eq!(got, vec![21]);
    }

    #[test]
    fn a_message_is_octet_counted_rfc5424() {
        let rec = StoredRecord {
            seq: 7,
            format: 2,
            ts: "2026-12-03T15:00:48.537976Z".into(),
            agent: "bot".into(),
            tool: "query_db".into(),
            decision: "deny".into(),
            body: "{\"outcome\":\"error\"}".into(),
            prev_hash: vec![],
            hash: vec![],
        };
        let mut out = Vec::new();
        frame(&mut out, &rec, "host-1", "airlock", 42, "{\"seq\":7,\"é\":1}");
        let text = String::from_utf8(out).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len(), "the count is of octets");
        // Facility 13 (log audit) * 8 + severity 4 (warning: refused).
        assert_eq!(msg, "<108>1 2026-12-03T15:00:48.537976Z host-1 airlock 42 audit - {\"seq\":7,\"é\":1}");
        let mut out = Vec::new();
        frame(&mut out, &StoredRecord { ts: "yesterday".into(), ..rec }, "h", "a", 1, "{}");
        assert!(String::from_utf8(out).unwrap().contains("<108>1 - h a 1 audit - {}"));
    }
}
