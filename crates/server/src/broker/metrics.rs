//! Prometheus metrics: calls by tool and outcome, a latency histogram, and the rate limiters'
//! sizes and evictions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// The broker's metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabel, Histogram>,
    evictions: Family<MapLabel, Counter>,
    shares_evicted: Counter,
    refusals_folded: Counter,
    oauth_refreshes: Family<OutcomeLabel, Counter>,
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
        Metrics { registry, calls, latency, evictions, shares_evicted, refusals_folded, oauth_refreshes }
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
