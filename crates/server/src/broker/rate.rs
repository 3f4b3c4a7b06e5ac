//! Per-agent token buckets (T03, T20): a burst of up to `per_minute` calls, refilled continuously.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Rate limiter keyed by agent id.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token for `key` at `per_minute`; false when the bucket is empty.
    pub fn check(&self, key: &str, per_minute: u32) -> bool {
        self.check_at(key, per_minute, Instant::now())
    }

    /// True when `key` has a token left, without taking it (limits on failures only: check
    /// before the attempt, take with [`RateLimiter::check`] when it fails).
    pub fn available(&self, key: &str, per_minute: u32) -> bool {
        let cap = per_minute.max(1) as f64;
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            None => true,
            Some(b) => b.tokens + Instant::now().saturating_duration_since(b.last).as_secs_f64() * cap / 60.0 >= 1.0,
        }
    }

    fn check_at(&self, key: &str, per_minute: u32, now: Instant) -> bool {
        let cap = per_minute.max(1) as f64;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(key.to_owned()).or_insert(Bucket { tokens: cap, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * cap / 60.0).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn t03_bucket_limits_bursts_and_refills() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(r.check_at("a", 5, t0));
        }
        assert!(!r.check_at("a", 5, t0));
        assert!(r.check_at("b", 5, t0), "buckets are per agent");
        assert!(!r.check_at("a", 5, t0 + Duration::from_secs(6)));
        assert!(r.check_at("a", 5, t0 + Duration::from_secs(13)));
    }
}
