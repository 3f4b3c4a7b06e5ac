//! `[audit.export]`: a continuous export of the audit records to a syslog receiver (a SIEM's
//! collector), one RFC 5424 message per record over TCP, with TLS unless the receiver is on
//! loopback. The broker reads the records back from the audit table by sequence number, so the
//! export never holds up a call (docs/audit-format.md, "Export").

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What one exported record looks like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditExportFormat {
    /// An Open Cybersecurity Schema Framework event (API Activity, class 6003; Authorize
    /// Session, 3003, for a sign-in refused).
    #[default]
    Ocsf,
    /// The stored record as it is, with its `seq` and `hash` (hex).
    Jsonl,
}

impl AuditExportFormat {
    /// `ocsf` or `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditExportFormat::Ocsf => "ocsf",
            AuditExportFormat::Jsonl => "jsonl",
        }
    }
}

/// Where exported records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    /// A syslog receiver over TCP (RFC 6587 octet counting; RFC 5425 with TLS).
    Syslog,
}

/// `[audit]`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// `[audit.export]`, when the broker exports its records continuously.
    pub export: Option<AuditExport>,
}

/// `[audit.export]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditExport {
    /// The kind of receiver.
    pub sink: AuditSink,
    /// The receiver's host name or IP address (also the TLS server name).
    pub host: String,
    /// The receiver's port.
    pub port: u16,
    /// TLS to the receiver (RFC 5425). Off only for a loopback receiver.
    pub tls: bool,
    /// A PEM file of certificate authorities that verify the receiver, instead of the public
    /// roots. Absolute.
    pub ca_file: Option<PathBuf>,
    /// The format of each message's body.
    pub format: AuditExportFormat,
    /// The syslog APP-NAME (RFC 5424: 1 to 48 printable ASCII characters, no space).
    pub app_name: String,
}

/// `[audit]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default)]
    export: Option<RawExport>,
}

/// `[audit.export]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    sink: AuditSink,
    address: String,
    #[serde(default = "default_tls")]
    tls: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    format: AuditExportFormat,
    #[serde(default = "default_app_name")]
    app_name: String,
}

fn default_tls() -> bool {
    true
}

fn default_app_name() -> String {
    "airlock".to_owned()
}

/// `host:port` or `[v6]:port`: the host (without brackets) and the port.
fn split_address(a: &str) -> Option<(String, u16)> {
    let (host, port) = a.trim().rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    ok.then(|| (host.to_ascii_lowercase(), port))
}

impl RawAudit {
    /// Checks `[audit.export]`: the address, TLS to anything but loopback, the CA file, the
    /// APP-NAME.
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path) -> AuditConfig {
        let Some(e) = self.export else { return AuditConfig::default() };
        let at = at.key("export");
        let before = r.count();
        let addr = split_address(&e.address);
        if addr.is_none() {
            r.problem(&at.join("address"), ProblemCode::BadValue, format!("'{}' is not host:port", e.address.escape_debug()));
        }
        let (host, port) = addr.unwrap_or_default();
        if !e.tls && addr_is_remote(&host) {
            r.problem(
                &at.join("tls"),
                ProblemCode::InsecureTransport,
                "tls = false is accepted only for a loopback receiver (127.0.0.1, ::1, localhost): the records would cross the network in clear",
            );
        }
        if let Some(f) = &e.ca_file {
            if !e.tls {
                r.problem(&at.join("ca_file"), ProblemCode::BadValue, "ca_file is for tls = true");
            } else if !base.join(f).is_file() {
                r.problem(&at.join("ca_file"), ProblemCode::BadValue, format!("{} is not a file", base.join(f).display()));
            }
        }
        if e.app_name.is_empty() || e.app_name.len() > 48 || !e.app_name.bytes().all(|b| b.is_ascii_graphic()) {
            r.problem(&at.join("app_name"), ProblemCode::BadValue, "1 to 48 printable ASCII characters, no space (RFC 5424 APP-NAME)");
        }
        let export = (r.count() == before).then(|| AuditExport {
            sink: e.sink,
            host,
            port,
            tls: e.tls,
            ca_file: e.ca_file.map(|f| base.join(f)),
            format: e.format,
            app_name: e.app_name,
        });
        AuditConfig { export }
    }
}

/// Not a loopback name or address (empty counts as remote: it is reported as malformed anyway).
fn addr_is_remote(host: &str) -> bool {
    !matches!(host, "127.0.0.1" | "::1" | "localhost")
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(split_address("siem.example:6514"), Some(("siem.example".into(), 6514)));
        assert_eq!(split_address("[::1]:514"), Some(("::1".into(), 514)));
        assert_eq!(split_address("10.0.0.5:514"), Some(("10.0.0.5".into(), 514)));
        for bad in ["siem.example", "siem.example:0", "siem.example:99999", ":514", "::1:514", "a b:514", "[::1:514"] {
            assert_eq!(split_address(bad), None, "{bad}");
        }
    }
}
