//! Refused tokens, audited in aggregate (T29): a client sending bad tokens in a loop gets at most
//! one audit record per source (client address or socket peer) per minute. The first refusal of
//! a minute is recorded, with the number of refusals folded since the previous record; the others
//! are answered alike but only counted (`airlock_refusals_folded`). The sources are a map capped
//! at `[shares] max_tracked_clients`; evictions are counted (`airlock_bounded_evictions_total{map="bad_token_sources"}`).

use super::call::CallCtx;
use super::{Broker, Invocation};
use airlock_core::{CallError, ErrorCode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One record per source per this long.
const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    folded: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    /// Write a record, carrying this many refusals folded since the previous one.
    Record(u64),
    /// Already recorded this interval: count it only.
    Folded,
}

/// The per-source windows of refused tokens.
#[derive(Debug, Default)]
pub(crate) struct BadTokens {
    windows: Mutex<HashMap<String, Window>>,
}

impl BadTokens {
    /// Notes one refusal from `source`; also returns how many windows still holding folded
    /// refusals were evicted to keep at most `cap` sources.
    fn note(&self, source: &str, cap: usize, now: Instant) -> (Note, u64) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = 0;
        if !map.contains_key(source) && map.len() >= cap.max(1) {
            evicted = make_room(&mut map, cap.max(1), now);
        }
        let Some(w) = map.get_mut(source) else {
            map.insert(source.to_owned(), Window { started: now, folded: 0 });
            return (Note::Record(0), evicted);
        };
        if now.saturating_duration_since(w.started) >= INTERVAL {
            let folded = w.folded;
            *w = Window { started: now, folded: 0 };
            (Note::Record(folded), evicted)
        } else {
            w.folded += 1;
            (Note::Folded, evicted)
        }
    }
}

/// Drops windows past their interval with nothing folded, then, if still full, the oldest eighth.
/// Returns how many were evicted (windows past their interval with nothing folded are not counted:
/// they hold nothing).
fn make_room(map: &mut HashMap<String, Window>, cap: usize, now: Instant) -> u64 {
    map.retain(|_, w| now.saturating_duration_since(w.started) < INTERVAL || w.folded > 0);
    if map.len() < cap {
        return 0;
    }
    let excess = map.len() - (cap - cap.div_ceil(8));
    let mut ages: Vec<Instant> = map.values().map(|w| w.started).collect();
    let (_, cut, _) = ages.select_nth_unstable(excess - 1);
    let cut = *cut;
    let mut left = excess;
    map.retain(|_, w| {
        if left > 0 && w.started <= cut {
            left -= 1;
            false
        } else {
            true
        }
    });
    (excess - left) as u64
}

impl Broker {
    /// Refuses a request refused before the broker's checks, as [`Broker::refuse`] does, except
    /// that a refused token (`unauthenticated`) from `source` is audited at most once per minute
    /// per source: the record's arguments name the source and the refusals folded into it.
    pub async fn refuse_from(&self, source: &str, action: &str, err: CallError) -> Invocation {
        if err.code != ErrorCode::Unauthenticated {
            return self.refuse(action, err).await;
        }
        let cap = self.config().shares.max_tracked_clients;
        let (note, evicted) = self.limits.bad_tokens.note(source, cap, Instant::now());
        self.metrics().evicted("bad_token_sources", evicted);
        match note {
            Note::Record(folded) => {
                let args = json!({"source": source, "refusals_folded": folded});
                self.finish(CallCtx::new(None, action, args), Err(err)).await
            }
            Note::Folded => {
                self.metrics().refusal_folded();
                let request_id = uuid::Uuid::now_v7().to_string();
                // Not audited, but traced like any refusal (when a front end opened a call span).
                let span = tracing::Span::current();
                span.record("request_id", request_id.as_str());
                span.record("decision", "deny");
                span.record("outcome", err.code.as_str());
                Invocation { request_id, result: Err(err), redactions: 0, approval: None, elicit: None }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t29_one_record_per_source_per_interval_with_the_count_folded() {
        let b = BadTokens::default();
        let t0 = Instant::now();
        assert_eq!(b.note("10.0.0.1", 100, t0).0, Note::Record(0));
        for i in 1..=1000 {
            assert_eq!(b.note("10.0.0.1", 100, t0 + Duration::from_millis(i)).0, Note::Folded);
        }
        assert_eq!(b.note("10.0.0.2", 100, t0 + Duration::from_millis(5)).0, Note::Record(0), "per source");
        assert_eq!(b.note("10.0.0.1", 100, t0 + INTERVAL + Duration::from_secs(1)).0, Note::Record(1000));
    }

    #[test]
    fn t29_a_million_sources_stay_within_the_cap() {
        let b = BadTokens::default();
        let t0 = Instant::now();
        for i in 0..1_000_000u64 {
            b.note(&i.to_string(), 1000, t0 + Duration::from_nanos(i));
        }
        assert!(b.windows.lock().unwrap().len() <= 1000);
    }
}
