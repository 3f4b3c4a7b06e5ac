//! Token buckets (T03, T20, T29): a burst of up to `per_minute`, refilled continuously; one shape
//! for every limiter of the broker (calls, sends, sub-agent creations, the share endpoints).
//!
//! The map of buckets is keyed by client-chosen things (agents, handles, addresses, share ids),
//! so it is capped (T29):
//! when it is full, buckets that have refilled completely are dropped first (forgetting them
//! changes nothing, a new bucket starts full), then the least recently used ones. Evictions are
//! counted in `airlock_rate_limiter_evictions_total{limiter=...}` and the number of buckets is
//! `airlock_rate_limiter_keys{limiter=...}` (see [`super::metrics::Metrics::register_limiter`]).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The default number of buckets a limiter keeps.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The rate the bucket was last checked at, to tell a full bucket at eviction time.
    cap: f64,
}

impl Bucket {
    /// Tokens at `now` for a bucket of `cap` refilled per minute.
    fn refilled(&self, cap: f64, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * cap / 60.0).min(cap)
    }
}

/// Rate limiter keyed by agent (or any other key), capped at a number of keys.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    capacity: usize,
    evictions: Counter,
    keys: Gauge,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::with_capacity(DEFAULT_CAPACITY)
    }
}

impl RateLimiter {
    /// A limiter keeping at most `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> RateLimiter {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            evictions: Counter::default(),
            keys: Gauge::default(),
        }
    }

    /// Buckets evicted to stay within the capacity (shared with the metrics).
    pub fn evictions(&self) -> &Counter {
        &self.evictions
    }

    /// Buckets kept now (shared with the metrics).
    pub fn keys(&self) -> &Gauge {
        &self.keys
    }

    /// The number of buckets kept now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one token for `key` at `per_minute`; false when the bucket is empty.
    pub fn check(&self, key: &str, per_minute: u32) -> bool {
        self.check_at(&[(key, per_minute)], Instant::now())
    }

    /// Takes one token from every `(key, per_minute)` bucket, or from none when any of them is
    /// empty: all or nothing, under one lock (a sub-agent's call counts against itself and
    /// every ancestor).
    pub fn check_all(&self, keys: &[(&str, u32)]) -> bool {
        self.check_at(keys, Instant::now())
    }

    /// True when `key` has a token left, without taking it (limits on failures only: check
    /// before the attempt, take with [`RateLimiter::check`] when it fails).
    pub fn available(&self, key: &str, per_minute: u32) -> bool {
        let cap = per_minute.max(1) as f64;
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            None => true,
            Some(x) => x.refilled(cap, Instant::now()) >= 1.0,
        }
    }

    fn check_at(&self, keys: &[(&str, u32)], now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let ok = keys.iter().all(|(k, per)| {
            let cap = (*per).max(1) as f64;
            map.get(*k).is_none_or(|x| x.refilled(cap, now) >= 1.0)
        });
        for (k, per) in keys {
            let cap = (*per).max(1) as f64;
            if !map.contains_key(*k) {
                self.make_room(&mut map, now);
            }
            let x = map.entry((*k).to_owned()).or_insert(Bucket { tokens: cap, last: now, cap });
            x.tokens = x.refilled(cap, now);
            x.last = now;
            x.cap = cap;
            if ok {
                x.tokens -= 1.0;
            }
        }
        self.keys.set(map.len() as i64);
        ok
    }

    /// Makes room for one more key: drops full buckets, then the least recently used sixteenth.
    fn make_room(&self, map: &mut HashMap<String, Bucket>, now: Instant) {
        if map.len() < self.capacity {
            return;
        }
        let before = map.len();
        map.retain(|_, x| x.refilled(x.cap, now) < x.cap);
        if map.len() >= self.capacity {
            let mut ages: Vec<(Instant, String)> = map.iter().map(|(k, x)| (x.last, k.clone())).collect();
            let n = (self.capacity / 16).max(1).min(ages.len());
            ages.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
            for (_, k) in ages.into_iter().take(n) {
                map.remove(&k);
            }
        }
        self.evictions.inc_by((before - map.len()) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn one(r: &RateLimiter, k: &str, per: u32, t: Instant) -> bool {
        r.check_at(&[(k, per)], t)
    }

    #[test]
    fn t03_bucket_limits_bursts_and_refills() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(one(&r, "a", 5, t0));
        }
        assert!(!one(&r, "a", 5, t0));
        assert!(one(&r, "b", 5, t0), "buckets are per agent");
        assert!(!one(&r, "a", 5, t0 + Duration::from_secs(6)));
        assert!(one(&r, "a", 5, t0 + Duration::from_secs(13)));
    }

    #[test]
    fn t27_a_chain_takes_from_every_bucket_or_from_none() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        // The parent has 3 calls a minute; its child 10, but the child's calls count against both.
        for _ in 0..3 {
            assert!(r.check_at(&[("child", 10), ("parent", 3)], t0));
        }
        assert!(!r.check_at(&[("child", 10), ("parent", 3)], t0), "the parent's budget is spent");
        assert!(!one(&r, "parent", 3, t0), "the parent itself is out too");
        // A refused chain took nothing from the child.
        for _ in 0..7 {
            assert!(one(&r, "child", 10, t0));
        }
        assert!(!one(&r, "child", 10, t0));
    }

    #[test]
    fn t29_the_map_is_capped_and_evictions_are_counted() {
        let r = RateLimiter::with_capacity(32);
        let t0 = Instant::now();
        for i in 0..1000 {
            // Each key spends its only token, so no bucket is full when room is needed.
            assert!(one(&r, &format!("k{i}"), 1, t0 + Duration::from_millis(i)));
            assert!(r.buckets.lock().unwrap().len() <= 32);
        }
        assert!(r.evictions().get() >= 1000 - 32);
        assert!(r.keys().get() <= 32);
        // The most recent keys are kept: the last one is still empty.
        assert!(!one(&r, "k999", 1, t0 + Duration::from_millis(999)));
        // Full buckets are the first to go and cost nothing.
        let r = RateLimiter::with_capacity(4);
        for k in ["a", "b", "c"] {
            assert!(one(&r, k, 600, t0));
        }
        assert!(one(&r, "d", 1, t0));
        assert!(one(&r, "e", 1, t0 + Duration::from_secs(1)), "a, b and c refilled and are dropped");
        assert!(!one(&r, "d", 1, t0 + Duration::from_secs(1)), "d, spent, was kept");
    }
}
