//! Which serving lane a thread belongs to, and how many requests are in flight on that lane.
//!
//! `airlock serve` runs each connection, whole, on a lane: a runtime of one worker thread
//! (crates/server/src/http/lanes.rs). Every thread of a lane's runtime joins it when it starts
//! ([`Lane::join`]), and each request the lane serves is counted while it is being answered
//! ([`request`], which returns an [`InFlight`] guard). A task that is about to block its thread
//! asks [`alone`] first: with no other request in flight on the lane, blocking the worker holds
//! up no one but a request that arrives meanwhile, so it need not hand the lane's other tasks to
//! another thread (a thread wake-up) before it blocks. The store's writer uses it for the fsync
//! of a commit (`crates/store/src/writer.rs`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One lane's count of requests in flight. Cloning shares the count.
#[derive(Clone, Debug, Default)]
pub struct Lane(Arc<AtomicUsize>);

thread_local! {
    /// The lane this thread serves, if any.
    static CURRENT: RefCell<Option<Lane>> = const { RefCell::new(None) };
}

impl Lane {
    /// A lane with nothing in flight.
    pub fn new() -> Lane {
        Lane::default()
    }

    /// Makes the calling thread one of this lane's (a runtime's `on_thread_start`).
    pub fn join(&self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// Counts one request in flight on this lane until the guard is dropped (on any thread).
    pub fn request(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The requests in flight on this lane now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request counted in flight on its lane; dropping it ends the count.
#[derive(Debug)]
#[must_use = "the request is counted only while the guard lives"]
pub struct InFlight(Lane);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The lane the calling thread serves, or `None` off the lanes.
pub fn current() -> Option<Lane> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Counts a request in flight on the calling thread's lane; `None` (nothing counted) off the
/// lanes.
pub fn request() -> Option<InFlight> {
    CURRENT.with(|c| c.borrow().as_ref().map(Lane::request))
}

/// True when the calling thread serves a lane on which exactly one request is in flight, which
/// for a caller serving a request is its own. False off the lanes, where nothing is known of who
/// else is waiting, and on a lane with none counted. (A task that serves no counted request
/// cannot tell the lane's one request from its own: blocking then holds that one up.)
pub fn alone() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|l| l.in_flight() == 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn off_the_lanes_nothing_is_counted_and_no_one_is_alone() {
        std::thread::spawn(|| {
            assert!(current().is_none());
            assert!(request().is_none());
            assert!(!alone());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_lane_is_alone_with_its_own_request_and_not_with_a_second() {
        let lane = Lane::new();
        let l = lane.clone();
        std::thread::spawn(move || {
            l.join();
            assert!(!alone(), "nothing counted: the caller is no request");
            let first = request().expect("on a lane");
            assert!(alone(), "the caller's own request");
            let second = request().expect("on a lane");
            assert!(!alone(), "two in flight");
            drop(first);
            assert!(alone());
            drop(second);
            assert!(!alone());
            assert_eq!(l.in_flight(), 0);
        })
        .join()
        .unwrap();
        assert_eq!(lane.in_flight(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Requests opened on the threads of three lanes and dropped in any order, on any
        /// thread: each lane counts exactly its live requests, and a thread of a lane is alone
        /// exactly when its lane has one.
        #[test]
        fn each_lane_counts_exactly_its_live_requests(steps in proptest::collection::vec((0usize..3, any::<bool>(), any::<prop::sample::Index>()), 1..60)) {
            let lanes = [Lane::new(), Lane::new(), Lane::new()];
            let mut live: Vec<(usize, InFlight)> = Vec::new();
            for (lane, open, pick) in steps {
                if open || live.is_empty() {
                    // Opened on a thread of that lane, then kept (moved) here.
                    let l = lanes[lane].clone();
                    let guard = std::thread::spawn(move || {
                        l.join();
                        request().expect("on a lane")
                    })
                    .join()
                    .unwrap();
                    live.push((lane, guard));
                } else {
                    // Dropped on yet another thread.
                    let (_, guard) = live.swap_remove(pick.index(live.len()));
                    std::thread::spawn(move || drop(guard)).join().unwrap();
                }
                for (i, l) in lanes.iter().enumerate() {
                    let n = live.iter().filter(|(lane, _)| *lane == i).count();
                    prop_assert_eq!(l.in_flight(), n);
                    let l = l.clone();
                    let alone_there = std::thread::spawn(move || {
                        l.join();
                        alone()
                    })
                    .join()
                    .unwrap();
                    prop_assert_eq!(alone_there, n == 1);
                }
            }
            drop(live);
            for l in &lanes {
                prop_assert_eq!(l.in_flight(), 0);
            }
        }
    }
}
