//! `[telemetry]`: where the spans of each call go. With an OTLP endpoint (here, or the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`), `airlock serve` sends
//! them over OTLP/HTTP (protobuf) from a batch in the background, so a call never waits on the
//! collector; without one they are log lines at debug level (target `airlock::trace`). A span
//! carries the request id, agent, tool, handle and decision of its call, never an argument or a
//! result.

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// `[telemetry]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP traces endpoint, the whole URL as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// takes it (`https://collector.example:4318/v1/traces`): https, or http to a loopback host.
    /// When set it wins over the environment; when neither is set no span leaves the broker.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans; else `OTEL_SERVICE_NAME`; else `airlock`. 1 to 255 printable
    /// characters.
    #[serde(default)]
    pub service_name: Option<String>,
}

impl TelemetryConfig {
    /// Checks the endpoint (an http(s) URL with a host, no credentials, http only to loopback)
    /// and the service name.
    pub(super) fn checked(self, r: &mut Report<'_, '_>, at: &FieldPath) -> TelemetryConfig {
        if let Some(e) = &self.otlp_endpoint {
            let at = at.join("otlp_endpoint");
            match url::Url::parse(e) {
                Ok(u) if u.host().is_none() || !matches!(u.scheme(), "http" | "https") => {
                    r.problem(&at, ProblemCode::BadUrl, "an http(s) URL with a host, such as https://collector.example:4318/v1/traces")
                }
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    r.problem(&at, ProblemCode::PasswordInUrl, "no credentials in the URL (OTEL_EXPORTER_OTLP_HEADERS carries a collector's key)")
                }
                Ok(u) if u.query().is_some() || u.fragment().is_some() => r.problem(&at, ProblemCode::BadUrl, "no query or fragment"),
                Ok(u) if u.scheme() == "http" && !super::shares::loopback(&u) => r.problem(
                    &at,
                    ProblemCode::InsecureTransport,
                    "http is allowed only for a loopback collector (127.0.0.1, ::1, localhost): the spans would cross the network in clear; use https",
                ),
                Ok(_) => {}
                Err(err) => r.problem(&at, ProblemCode::BadUrl, format!("not a URL: {err}")),
            }
        }
        if let Some(n) = &self.service_name {
            if n.is_empty() || n.chars().count() > 255 || n.chars().any(char::is_control) {
                r.problem(&at.join("service_name"), ProblemCode::BadValue, "1 to 255 printable characters");
            }
        }
        self
    }
}
