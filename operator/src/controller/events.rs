//! The Recorder every Event goes through, renewed once its cache has expired.
//!
//! kube's [`Recorder`] keeps each Event it published in a cache, so that a repeat within six
//! minutes is folded into a series (one Event object with a count) instead of a new object. It
//! drops expired entries only when it publishes the next Event. A converging fleet publishes
//! one Event per AWS change (about fifteen per new pipeline) and a converged one publishes none,
//! so a single Recorder kept every Event of the convergence for good: about 50 KiB per pipeline
//! of resident memory (measured with heaptrack under `make bench-scale`; docs/controller.md,
//! *At scale*). [`Events`] starts a fresh Recorder when the current one is older than that
//! expiry, or has published [`RENEW_AFTER_EVENTS`] Events (a thousand pipelines converging
//! publish ~15,000 within the six minutes); the old one, and its cache, go with the last publish
//! still using it. What is published does not change, except that a repeat after the renewal
//! starts a new series instead of counting in the old one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

/// How long kube's Recorder keeps an Event to fold repeats into a series (its `CACHE_TTL`).
pub const RENEW_AFTER: Duration = Duration::from_secs(6 * 60);

/// How many Events one Recorder publishes before a new one starts: its cache holds at most
/// this many (~1 KiB each), however many pipelines converge at once.
pub const RENEW_AFTER_EVENTS: u64 = 1000;

/// The Recorder for all Events, renewed every [`RENEW_AFTER`].
pub struct Events {
    client: Client,
    reporter: Reporter,
    current: Mutex<Current>,
}

struct Current {
    recorder: Recorder,
    since: Instant,
    /// Events published with this Recorder.
    published: u64,
    /// How many Recorders were started before this one.
    generation: u64,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Events {
            client,
            reporter,
            current: Mutex::new(Current {
                recorder,
                since: Instant::now(),
                published: 0,
                generation: 0,
            }),
        }
    }

    /// The Recorder to publish one Event with now.
    pub fn recorder(&self) -> Recorder {
        self.publishing_at(Instant::now()).0
    }

    /// Drops an expired Recorder and its cache even when nothing is published (a converged
    /// fleet): called at the start of every reconcile.
    pub fn expire(&self) {
        self.renewed_at(Instant::now());
    }

    /// The Recorder for one more Event as of `now`, counted against [`RENEW_AFTER_EVENTS`].
    fn publishing_at(&self, now: Instant) -> (Recorder, u64) {
        let mut current = self.lock_renewed(now);
        current.published += 1;
        (current.recorder.clone(), current.generation)
    }

    /// The current Recorder as of `now` (renewed when older than [`RENEW_AFTER`]), with its
    /// generation.
    fn renewed_at(&self, now: Instant) -> (Recorder, u64) {
        let current = self.lock_renewed(now);
        (current.recorder.clone(), current.generation)
    }

    /// The current Recorder, renewed first when expired or full.
    fn lock_renewed(&self, now: Instant) -> std::sync::MutexGuard<'_, Current> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(current.since) >= RENEW_AFTER
            || current.published >= RENEW_AFTER_EVENTS
        {
            *current = Current {
                recorder: Recorder::new(self.client.clone(), self.reporter.clone()),
                since: now,
                published: 0,
                generation: current.generation + 1,
            };
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Events {
        // A client that is never called: building a Recorder makes no request.
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(service, "default");
        Events::new(client, Reporter::from("outbox-operator"))
    }

    #[tokio::test]
    async fn the_recorder_and_its_cache_are_renewed_once_kubes_expiry_has_passed() {
        let e = events();
        let start = e.current.lock().unwrap().since;
        assert_eq!(e.renewed_at(start).1, 0);
        assert_eq!(
            e.renewed_at(start + RENEW_AFTER - Duration::from_secs(1)).1,
            0,
            "within the window repeats still fold into a series"
        );
        assert_eq!(e.renewed_at(start + RENEW_AFTER).1, 1, "expired: a new one");
        assert_eq!(
            e.renewed_at(start + RENEW_AFTER + Duration::from_secs(60))
                .1,
            1,
            "the window starts again with the new Recorder"
        );
    }

    #[tokio::test]
    async fn a_recorder_that_published_its_share_of_events_is_renewed_within_the_window() {
        let e = events();
        let start = e.current.lock().unwrap().since;
        for _ in 0..RENEW_AFTER_EVENTS {
            assert_eq!(
                e.publishing_at(start).1,
                0,
                "under the cap: the same Recorder"
            );
        }
        assert_eq!(
            e.publishing_at(start + Duration::from_secs(1)).1,
            1,
            "full: a new Recorder (and an empty cache) although the window has not passed"
        );
        assert_eq!(e.renewed_at(start + Duration::from_secs(2)).1, 1);
    }
}
