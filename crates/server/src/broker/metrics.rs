//! Prometheus metrics: calls by tool and outcome, a latency histogram, the rate limiters'
//! sizes and evictions, and the audit export's lag (when `[audit.export]` is configured).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

/// The audit export's metrics ([`super::audit_sink`]).
#[derive(Clone, Debug, Default)]
pub struct ExportMetrics {
    /// The last record's seq minus the export cursor: records not yet confirmed delivered.
    pub lag: Gauge,
    /// Records written to the receiver (a record resent after a reconnection counts again).
    pub records: Counter,
    /// Connections that failed or broke.
    pub failures: Counter,
}

/// The broker's metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabel, Histogram>,
    evictions: Family<MapLabel, Counter>,
    shares_evicted: Counter,
    refusals_folded: Counter,
    oauth_refreshes: Family<OutcomeLabel, Counter>,
    audit_export: ExportMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<ToolLabel, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~13 s
            Histogram::new(exponential_buckets(0.00005, 2.0, 19))
        });
        registry.register("calls", "Tool calls by tool and outcome (ok or an error code)", calls.clone());
        registry.register("call_duration_seconds", "Wall time of a tool call through the broker", latency.clone());
        let evictions = Family::<MapLabel, Counter>::default();
        let shares_evicted = Counter::default();
        let refusals_folded = Counter::default();
        registry.register("bounded_evictions", "Entries evicted from a capped client-keyed map, by map", evictions.clone());
        registry.register("shares_evicted", "Unauthenticated shares burned unread to keep their number under the cap", shares_evicted.clone());
        registry.register(
            "refusals_folded",
            "Refusals of bad tokens counted into an aggregated audit record instead of one record each",
            refusals_folded.clone(),
        );
        let oauth_refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "oauth_refreshes",
            "Refreshes of connected accounts' tokens by outcome (ok, unavailable, needs-reauth)",
            oauth_refreshes.clone(),
        );
        Metrics { registry, calls, latency, evictions, shares_evicted, refusals_folded, oauth_refreshes, audit_export: ExportMetrics::default() }
    }
}

impl Metrics {
    /// Records one call.
    pub fn record(&self, tool: &str, outcome: &str, seconds: f64) {
        self.calls.get_or_create(&CallLabels { tool: tool.to_owned(), outcome: outcome.to_owned() }).inc();
        self.latency.get_or_create(&ToolLabel { tool: tool.to_owned() }).observe(seconds);
    }

    /// Exports a rate limiter's evictions and key count, labelled `limiter="<name>"` (T29).
    pub fn register_limiter(&mut self, name: &'static str, l: &super::rate::RateLimiter) {
        let sub = self.registry.sub_registry_with_label(("limiter".into(), name.into()));
        sub.register("rate_limiter_evictions", "Buckets a rate limiter dropped to stay within its cap", l.evictions().clone());
        sub.register("rate_limiter_keys", "Buckets a rate limiter keeps", l.keys().clone());
    }

    /// Exports the audit export's lag, records and failures (`airlock_audit_export_*`); only
    /// when a sink is configured, so that a broker without one shows no lag of 0.
    pub fn register_audit_export(&mut self) {
        let m = self.audit_export.clone();
        self.registry.register("audit_export_lag", "Audit records not yet confirmed delivered to the export's receiver (last seq minus the export cursor)", m.lag);
        self.registry.register("audit_export_records", "Audit records written to the export's receiver (resent ones count again)", m.records);
        self.registry.register("audit_export_failures", "Connections to the export's receiver that failed or broke", m.failures);
    }

    /// The audit export's metrics.
    pub fn audit_export(&self) -> &ExportMetrics {
        &self.audit_export
    }

    /// Counts `n` entries evicted from the capped map `map`.
    pub fn evicted(&self, map: &str, n: u64) {
        if n > 0 {
            self.evictions.get_or_create(&MapLabel { map: map.to_owned() }).inc_by(n);
        }
    }

    /// Counts `n` unauthenticated shares evicted at the cap.
    pub fn shares_evicted(&self, n: u64) {
        self.shares_evicted.inc_by(n);
    }

    /// Counts one refusal folded into an aggregated audit record.
    pub fn refusal_folded(&self) {
        self.refusals_folded.inc();
    }

    /// Counts one refresh of a connected account's tokens.
    pub fn oauth_refresh(&self, outcome: &str) {
        self.oauth_refreshes.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
