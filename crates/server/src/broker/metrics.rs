//! Prometheus metrics: calls by tool and outcome, their latency as a whole and by stage,
//! decisions by reason, redactions by handle, errors by component, lease and share events, the
//! live state read from the store at each scrape (leases, pending approvals, links, requests),
//! the store's commit groups, the rate limiters' sizes and evictions, and the audit export's lag
//! (when `[audit.export]` is configured). `docs/grafana/airlock.json` is a dashboard of them.
//!
//! Labels never carry what an agent chooses freely: a handle label is a configured handle's
//! name, or `lease` / `requested` for the names the broker makes for leases and requests.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandleLabel {
    handle: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// The named stages of a call ([`super::call`]), each timed on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The token checked (at the front end).
    Authenticate,
    /// Tool, handle, policy and rate checks.
    Check,
    /// The arguments validated against the handle.
    Prepare,
    /// The approval gate (a held call ends here).
    Approval,
    /// The secret read from its backend (part of `execute`).
    Resolve,
    /// The action itself, secret resolution included.
    Execute,
    /// The result scrubbed and its markup sanitized.
    Scrub,
    /// The audit record committed.
    Audit,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Check => "check",
            Stage::Prepare => "prepare",
            Stage::Approval => "approval",
            Stage::Resolve => "resolve",
            Stage::Execute => "execute",
            Stage::Scrub => "scrub",
            Stage::Audit => "audit",
        }
    }
}

/// Lease and share events counted as they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A lease issued.
    LeaseIssued,
    /// A lease revoked (by its agent, an operator, or the reaper at expiry).
    LeaseRevoked,
    /// A one-time link made.
    ShareCreated,
    /// A one-time link opened (a view used).
    ShareOpened,
}

/// The gauges of live state and the store's commit counters, refreshed at each scrape.
#[derive(Debug, Default)]
struct Live {
    leases: Gauge,
    approvals_pending: Gauge,
    shares: Gauge,
    requests_pending: Gauge,
    commit_groups: Counter,
    commit_writes: Counter,
    commit_groups_on_worker: Counter,
    /// The store's counters as last read (groups, writes, groups on the worker), so that each
    /// scrape adds what is new.
    seen: std::sync::Mutex<(u64, u64, u64)>,
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
    stages: Family<StageLabel, Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    redactions: Family<HandleLabel, Counter>,
    errors: Family<ComponentLabel, Counter>,
    lease_events: Family<EventLabel, Counter>,
    share_events: Family<EventLabel, Counter>,
    live: std::sync::Arc<Live>,
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
        let stages = Family::<StageLabel, Histogram>::new_with_constructor(|| {
            // 1 µs .. ~4 s
            Histogram::new(exponential_buckets(0.000001, 2.0, 23))
        });
        registry.register("call_stage_duration_seconds", "Wall time of each stage of a tool call (execute includes resolve)", stages.clone());
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Calls decided, by decision (allow or deny) and reason (allowed, or the refusal's error code)",
            decisions.clone(),
        );
        let redactions = Family::<HandleLabel, Counter>::default();
        registry.register("redactions", "Secret values redacted from results, by the call's handle (lease or requested for dynamic names)", redactions.clone());
        let errors = Family::<ComponentLabel, Counter>::default();
        registry.register("errors", "Calls that failed in a component: vault, store, audit, upstream or internal", errors.clone());
        let lease_events = Family::<EventLabel, Counter>::default();
        registry.register("lease_events", "Leases issued and revoked", lease_events.clone());
        let share_events = Family::<EventLabel, Counter>::default();
        registry.register("share_events", "One-time links created and opened", share_events.clone());
        // Series at 0 from the start, so that a rate over them is defined before the first event.
        for component in ["vault", "store", "audit", "upstream", "internal"] {
            drop(errors.get_or_create(&ComponentLabel { component }));
        }
        for event in ["issued", "revoked"] {
            drop(lease_events.get_or_create(&EventLabel { event }));
        }
        for event in ["created", "opened"] {
            drop(share_events.get_or_create(&EventLabel { event }));
        }
        let live = std::sync::Arc::<Live>::default();
        registry.register("leases_live", "Leases pending or active (read from the store at scrape)", live.leases.clone());
        registry.register("approvals_pending", "Approvals waiting for a person (read from the store at scrape)", live.approvals_pending.clone());
        registry.register("shares_live", "One-time links that can still be opened (read from the store at scrape)", live.shares.clone());
        registry.register("requests_pending", "Requests for a secret whose link is open (read from the store at scrape)", live.requests_pending.clone());
        registry.register("store_commit_groups", "Durable commit groups (one fsync each) since start", live.commit_groups.clone());
        registry.register("store_commit_writes", "Durable writes in those groups since start (writes / groups = the mean group size)", live.commit_writes.clone());
        registry.register(
            "store_commit_groups_on_worker",
            "Of those groups, the ones written on the thread of the call that submitted them (no hand-off to another thread)",
            live.commit_groups_on_worker.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            evictions,
            shares_evicted,
            refusals_folded,
            oauth_refreshes,
            audit_export: ExportMetrics::default(),
            stages,
            decisions,
            redactions,
            errors,
            lease_events,
            share_events,
            live,
        }
    }
}

impl Metrics {
    /// Records one call.
    pub fn record(&self, tool: &str, outcome: &str, seconds: f64) {
        self.calls.get_or_create(&CallLabels { tool: tool.to_owned(), outcome: outcome.to_owned() }).inc();
        self.latency.get_or_create(&ToolLabel { tool: tool.to_owned() }).observe(seconds);
    }

    /// Records the time one stage of a call took.
    pub fn stage(&self, stage: Stage, seconds: f64) {
        self.stages.get_or_create(&StageLabel { stage: stage.name() }).observe(seconds);
    }

    /// Records how a call was decided: allowed, or denied with its error code.
    pub fn decision(&self, allowed: bool, code: Option<&str>) {
        let labels = if allowed {
            DecisionLabels { decision: "allow", reason: "allowed".into() }
        } else {
            DecisionLabels { decision: "deny", reason: code.unwrap_or("denied").to_owned() }
        };
        self.decisions.get_or_create(&labels).inc();
    }

    /// Counts `n` redactions in a result of a call on `handle` (already reduced to a label by
    /// the caller: a configured handle's name, `lease`, `requested` or `-`).
    pub fn redacted(&self, handle: &str, n: u64) {
        if n > 0 {
            self.redactions.get_or_create(&HandleLabel { handle: handle.to_owned() }).inc_by(n);
        }
    }

    /// Counts a call that failed with `code` against the component it names, if any.
    pub fn failed(&self, code: &str) {
        let component = match code {
            "secret-unavailable" => "vault",
            "audit-unavailable" => "audit",
            "upstream-unavailable" | "upstream-timeout" | "query-failed" => "upstream",
            "internal" => "internal",
            _ => return,
        };
        self.errors.get_or_create(&ComponentLabel { component }).inc();
    }

    /// Counts a store failure outside a call (a scrape's read of live state).
    pub fn store_failed(&self) {
        self.errors.get_or_create(&ComponentLabel { component: "store" }).inc();
    }

    /// Counts one lease or share event.
    pub fn event(&self, e: Event) {
        let (family, event) = match e {
            Event::LeaseIssued => (&self.lease_events, "issued"),
            Event::LeaseRevoked => (&self.lease_events, "revoked"),
            Event::ShareCreated => (&self.share_events, "created"),
            Event::ShareOpened => (&self.share_events, "opened"),
        };
        family.get_or_create(&EventLabel { event }).inc();
    }

    /// Sets the live-state gauges and adds the store's new commit groups.
    pub fn set_live(&self, c: &airlock_store::stats::LiveCounts, stats: &airlock_store::stats::GroupStats) {
        self.live.leases.set(c.leases);
        self.live.approvals_pending.set(c.approvals_pending);
        self.live.shares.set(c.shares);
        self.live.requests_pending.set(c.requests_pending);
        let (groups, writes) = stats.read();
        let on_worker = stats.written_on_worker();
        let mut seen = self.live.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.live.commit_groups.inc_by(groups.saturating_sub(seen.0));
        self.live.commit_writes.inc_by(writes.saturating_sub(seen.1));
        self.live.commit_groups_on_worker.inc_by(on_worker.saturating_sub(seen.2));
        *seen = (seen.0.max(groups), seen.1.max(writes), seen.2.max(on_worker));
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

impl super::Broker {
    /// Reads the live state (leases, pending approvals, links, requests) and the store's commit
    /// groups into the metrics; `/metrics` calls it before each scrape is encoded.
    pub async fn refresh_live_metrics(&self) {
        match self.store().live_counts().await {
            Ok(c) => self.metrics.set_live(&c, self.store().group_stats()),
            Err(e) => {
                tracing::warn!(error = %e, "the live state for the metrics could not be read");
                self.metrics.store_failed();
            }
        }
    }
}
