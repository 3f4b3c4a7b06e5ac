//! Logging and traces. The log goes to stderr as before (text, or JSON lines with `--log-json`,
//! filtered by RUST_LOG). The spans of each call (`airlock_server::broker::spans`, target
//! `airlock::trace`, debug level) go:
//!
//! - over OTLP/HTTP (protobuf) to a collector, when `airlock serve` has an endpoint:
//!   `[telemetry] otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` (`OTEL_SDK_DISABLED=true` turns it off). A
//!   batch processor on its own thread sends them: a call only queues its spans, never waits
//!   for the collector, and a collector that is down costs a warning in the log (at most one a
//!   minute, with the count of spans lost), never an error in a call;
//! - to the log otherwise, one line per closed span with its fields and times, when RUST_LOG
//!   enables `airlock::trace=debug` (JSON with `--log-json`).
//!
//! Only the spans of that target are exported, and no event: what a collector receives is the
//! fields those spans declare (request id, agent, tool, handle, decision, outcome), never an
//! argument, a result, a token or a secret, nor a log line of a dependency.

use airlock_core::config::TelemetryConfig;
use anyhow::{bail, Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, fmt, reload, EnvFilter, Layer, Registry};

/// The target of the call spans (`airlock_server::broker::spans::TARGET`).
const TARGET: &str = airlock_server::broker::spans::TARGET;

/// A warning about a failing collector is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>;

/// Whether spans go to a collector: the OTLP layer's filter reads it on every span.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Where the OTLP layer is put in once `airlock serve` has read its configuration.
static SLOT: OnceLock<reload::Handle<Option<OtelLayer>, Registry>> = OnceLock::new();
/// The provider, for the flush at shutdown.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// What scrubs a log line before it is written, once `airlock serve` has a broker
/// ([`scrub_log_with`]); `None` when the line holds no secret the broker knows.
type LineScrub = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;
static LOG_SCRUB: OnceLock<LineScrub> = OnceLock::new();

/// From now on every log line is checked against `broker`'s current scrubber and, when it holds
/// a secret the broker knows (in any form the scrubber finds), written scrubbed. A line may
/// quote an upstream's, a program's or a store's text (an error's detail or message): this is
/// the one place every such line passes, whichever call site wrote it. Lines with no known
/// secret are written as they are (the pattern rules, meant for results, do not touch them).
pub fn scrub_log_with(broker: &std::sync::Arc<airlock_server::Broker>) {
    let broker = std::sync::Arc::downgrade(broker);
    let _ = LOG_SCRUB.set(Box::new(move |line| scrub_line(&broker.upgrade()?.scrubber(), line)));
}

/// `line` scrubbed when it holds a secret `scrubber` knows; `None` otherwise.
fn scrub_line(scrubber: &airlock_scrub::Scrubber, line: &str) -> Option<String> {
    scrubber.contains_known_secret(line).then(|| scrubber.scrub_str(line).0.into_owned())
}

/// stderr, each line scrubbed as [`scrub_log_with`] says. The log layers format a whole event
/// into one buffer and write it with one `write_all`, so each write is one line.
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let scrubbed = LOG_SCRUB.get().zip(std::str::from_utf8(buf).ok()).and_then(|(scrub, line)| scrub(line));
        let mut err = std::io::stderr().lock();
        err.write_all(scrubbed.as_ref().map_or(buf, |s| s.as_bytes()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to stderr at `default` unless RUST_LOG says otherwise; JSON lines with `json`. Colored
/// only on a terminal, and never with NO_COLOR set (https://no-color.org): a log redirected to a
/// file or read by journald holds no escape sequences. Leaves room for the OTLP layer
/// ([`start_traces`]).
pub fn init_logging(default: &str, json: bool) {
    use std::io::IsTerminal;
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let env_filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (subscriber, handle) = subscriber(env_filter, json, color);
    let _ = SLOT.set(handle);
    subscriber.init();
}

/// The whole stack: the OTLP layer (empty until `start_traces`; then the call spans only, no
/// event) and the log layers, whose filter `env_filter` makes.
///
/// A call span's callsite is enabled only when some layer can take it: the OTLP layer while
/// spans are exported, or the span log when the filter enables `airlock::trace=debug`. Otherwise
/// its interest is `never` and a call creates no span at all. The OTLP layer's callsite filter
/// says so itself: while it answered "sometimes" for a call span's callsite, every call span was
/// made in the registry although its per-span filter then refused it (seen with this stack:
/// the empty reload slot behind a per-span filter; about 6 % of the broker's CPU under load, in
/// `Span::current`, the filters and the span slab). So it answers "never" until `start_traces`,
/// which rebuilds the interest cache.
fn subscriber(env_filter: impl Fn() -> EnvFilter, json: bool, color: bool) -> (impl tracing::Subscriber + Send + Sync, reload::Handle<Option<OtelLayer>, Registry>) {
    let (otel, handle) = reload::Layer::new(None::<OtelLayer>);
    let otel = otel.with_filter(filter::dynamic_filter_fn(|m, _| EXPORTING.load(Ordering::Relaxed) && call_span(m)).with_callsite_filter(exported_site).with_max_level_hint(tracing::Level::DEBUG));
    (Registry::default().with(otel).with(log_layers(env_filter, json, color)), handle)
}

/// The log on stderr: everything the filter enables, and, in a layer of its own, a line as each
/// call span closes, with its fields and times, when the filter enables them
/// (`airlock::trace=debug`) and no collector takes them.
fn log_layers<S>(env_filter: impl Fn() -> EnvFilter, json: bool, color: bool) -> Vec<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync + 'static,
{
    let spans_only = || {
        filter::dynamic_filter_fn(|m, _| !EXPORTING.load(Ordering::Relaxed) && call_span(m))
            .with_callsite_filter(call_site)
            .with_max_level_hint(tracing::Level::DEBUG)
    };
    let log = fmt::layer().with_writer(|| ScrubbedStderr).with_ansi(color);
    let spans = fmt::layer().with_writer(|| ScrubbedStderr).with_ansi(color).with_span_events(fmt::format::FmtSpan::CLOSE);
    if json {
        vec![log.json().with_filter(env_filter()).boxed(), spans.json().with_filter(env_filter().and(spans_only())).boxed()]
    } else {
        vec![log.with_filter(env_filter()).boxed(), spans.with_filter(env_filter().and(spans_only())).boxed()]
    }
}

/// A span of a call (not an event, nor a span of a dependency).
fn call_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.target() == TARGET
}

/// [`call_span`] for a callsite: decided per span (whether spans are exported can change).
fn call_site(m: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
    if call_span(m) {
        tracing::subscriber::Interest::sometimes()
    } else {
        tracing::subscriber::Interest::never()
    }
}

/// The OTLP layer's interest in a callsite: a call span's while spans are exported (decided per
/// span after that: `stop_traces` turns it off), none before.
fn exported_site(m: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
    if EXPORTING.load(Ordering::Relaxed) {
        call_site(m)
    } else {
        tracing::subscriber::Interest::never()
    }
}

/// Where the spans go over OTLP, if anywhere: the configured endpoint, else the standard
/// variables'. An endpoint that is not an http(s) URL with a host, or http to a host that is not
/// loopback, is refused (as `[telemetry] otlp_endpoint` is when the configuration is loaded).
fn endpoint(cfg: &TelemetryConfig) -> Result<Option<String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let (from, url) = match (&cfg.otlp_endpoint, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(e), _, _) => ("[telemetry] otlp_endpoint", e.clone()),
        (None, Some(e), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e),
        (None, None, Some(e)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", e.trim_end_matches('/'))),
        (None, None, None) => return Ok(None),
    };
    let u = url::Url::parse(url.trim()).with_context(|| format!("{from}: {url:?} is not a URL"))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => bail!("{from}: {url:?} has no host"),
    };
    match u.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => bail!("{from}: http is allowed only for a loopback collector (the spans would cross the network in clear); use https"),
        s => bail!("{from}: scheme {s} is not http or https (OTLP/HTTP)"),
    }
    Ok(Some(u.to_string()))
}

/// Starts sending the call spans over OTLP/HTTP when an endpoint is configured ([`endpoint`]);
/// does nothing otherwise. `airlock serve` calls it once its configuration is loaded.
pub fn start_traces(cfg: &TelemetryConfig) -> Result<()> {
    let Some(url) = endpoint(cfg)? else { return Ok(()) };
    let service = cfg
        .service_name
        .clone()
        .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "airlock".to_owned());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
        .with_context(|| format!("the OTLP exporter to {url}"))?;
    let exporter = Warned { inner: exporter, endpoint: url.clone(), state: Mutex::new(WarnState::default()) };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service.clone()).build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("airlock"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false);
    let Some(slot) = SLOT.get() else { bail!("logging is not initialized") };
    slot.reload(Some(layer)).context("installing the OTLP layer")?;
    let _ = PROVIDER.set(provider);
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(endpoint = %url, service = %service, "call spans sent over OTLP/HTTP");
    Ok(())
}

/// Sends the spans still queued and stops the exporter (at most a few seconds: a collector that
/// is down loses them, with a warning). `airlock serve` calls it as it stops.
pub async fn stop_traces() {
    let Some(p) = PROVIDER.get().cloned() else { return };
    EXPORTING.store(false, Ordering::Relaxed);
    let r = tokio::task::spawn_blocking(move || p.shutdown_with_timeout(Duration::from_secs(5))).await;
    match r {
        Ok(Ok(())) => tracing::info!("call spans flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "call spans not all flushed"),
        Err(e) => tracing::warn!(error = %e, "call spans not flushed"),
    }
}

/// The OTLP exporter, saying in the log when the collector cannot be reached: the first failure
/// at once, then at most one warning per [`WARN_EVERY`] with the spans lost since, and a line
/// when it is reached again.
#[derive(Debug)]
struct Warned<E> {
    inner: E,
    endpoint: String,
    state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
struct WarnState {
    /// When the last warning was written.
    warned: Option<Instant>,
    /// Spans lost since then.
    lost: u64,
    /// Whether the last export failed.
    failing: bool,
}

impl<E: SpanExporter> SpanExporter for Warned<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(()) => {
                if std::mem::take(&mut st.failing) {
                    tracing::info!(endpoint = %self.endpoint, lost = st.lost, "OTLP collector reached again; call spans are sent");
                    st.lost = 0;
                    st.warned = None;
                }
            }
            Err(e) => {
                st.failing = true;
                st.lost += n;
                if st.warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                    let e = e.to_string();
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        lost = st.lost,
                        reason = reason(&e),
                        error = %e,
                        "OTLP collector not reached; call spans dropped (calls and the audit are not affected; repeated at most once a minute)"
                    );
                    st.warned = Some(Instant::now());
                    st.lost = 0;
                }
            }
        }
        r
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The cause of a failed export in a few words: the innermost OS message of a connection that
/// failed (`Connection refused`), the collector's status, or a timeout; else the error itself.
fn reason(e: &str) -> &str {
    if let Some(m) = e.rsplit_once("message: \"").and_then(|(_, m)| m.split_once('"')).map(|(m, _)| m) {
        return m;
    }
    if let Some(i) = e.find("Status Code: ") {
        return e[i..].split(',').next().unwrap_or(e);
    }
    if e.contains("TimedOut") || e.contains("timed out") {
        return "timed out";
    }
    e
}

#[cfg(test)]
mod tests {
    /// A log line with a secret the broker knows, as it is or encoded, is written scrubbed; a
    /// line with none is written as it is, even where a pattern rule for results would match.
    #[test]
    fn a_log_line_with_a_known_secret_is_scrubbed_and_any_other_kept() {
        use base64::Engine as _;
        let secret = "logCanary_Zr8Lq2Wm5Tx9Kb4N";
        let handle = airlock_core::HandleName::parse("API").unwrap();
        let scrubber = airlock_scrub::ScrubberBuilder::new().add_secret(&handle, &airlock_core::Secret::from_str_value(secret)).build();
        for form in [secret.to_owned(), base64::engine::general_purpose::STANDARD.encode(secret), hex::encode(secret), secret.chars().rev().collect()] {
            let line = format!("2026-12-06T16:00:00Z  WARN airlock_server: call failed request_id=0193 detail=handle API: upstream said {form:?}\n");
            let out = super::scrub_line(&scrubber, &line).unwrap_or_else(|| panic!("not scrubbed: {line}"));
            assert!(!out.contains(&form) && out.contains("[REDACTED:API]") && out.ends_with('\n'), "{out}");
        }
        for line in [
            "INFO airlock serving addr=127.0.0.1:7878\n",
            "WARN a token-like value eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX3Rlc3Q and AKIAIOSFODNN7EXAMPLE\n",
        ] {
            assert_eq!(super::scrub_line(&scrubber, line), None, "{line}");
        }
    }

    /// With no collector and the span log off, a call creates no span; with the span log on, it
    /// does (so the first half is not true of every subscriber). One test: the interest of a
    /// callsite is shared by every subscriber alive at the time.
    #[test]
    fn call_spans_exist_only_when_something_takes_them() {
        use airlock_server::broker::spans::call_span;
        for (directives, created) in [("info,airlock::trace=debug", true), ("info", false), ("error", false), ("airlock=debug", true)] {
            let (subscriber, _slot) = super::subscriber(|| tracing_subscriber::EnvFilter::new(directives), false, false);
            tracing::subscriber::with_default(subscriber, || {
                let span = call_span();
                assert_eq!(!span.is_disabled(), created, "{directives}");
                let _in = span.enter();
                assert_eq!(!tracing::Span::current().is_none(), created, "{directives}");
            });
        }
    }

    #[test]
    fn the_reason_of_a_failed_export_is_short() {
        let refused = r#"Operation failed: reqwest::Error { kind: Request, url: "http://127.0.0.1:9/v1/traces", source: hyper_util::client::legacy::Error(Connect, ConnectError("tcp connect error", 127.0.0.1:9, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })) }"#;
        assert_eq!(super::reason(refused), "Connection refused");
        let status = "Operation failed: OpenTelemetry trace export failed. Url: http://127.0.0.1:9/v1/traces, Status Code: 503, Response: b\"\"";
        assert_eq!(super::reason(status), "Status Code: 503");
        assert_eq!(super::reason("Operation failed: error sending request: operation timed out"), "timed out");
        assert_eq!(super::reason("something else"), "something else");
    }
}
