//! [`Meter`]: what pals tells a metrics recorder, with the cargo feature `metrics`.
//!
//! Figures go through the [`metrics`](https://docs.rs/metrics) crate's facade, the Rust
//! ecosystem's standard: pals records, and whichever exporter the application installs
//! (Prometheus, StatsD, OpenTelemetry, ...) publishes; without one, nothing is kept.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pals_acquired_total` | counter | `app`, `kind` | acquires that took the lock |
//! | `pals_busy_total` | counter | `app`, `kind` | acquires that did not take it within their timeout (a try that found it busy) |
//! | `pals_skipped_total` | counter | `app` | calls of `#[pals::exclusive(on_busy = "skip")]` skipped for a busy lock |
//! | `pals_errors_total` | counter | `app`, `kind` | acquires that failed (the database, the configuration) |
//! | `pals_lost_total` | counter | `app` | held locks lost with their session |
//! | `pals_wait_seconds` | histogram | `app`, `kind` | how long each acquire took, taken or busy |
//! | `pals_hold_seconds` | histogram | `app`, `kind` | how long each lock was held, until its guard let it go |
//! | `pals_held_locks` | gauge | `app`, `kind` | locks held now by this process (a lost one until its guard ends) |
//!
//! Labels are bounded: `app` (the locker's), `kind` (`lock`; `semaphore`, `election`), and
//! `lock` (the full name, `"app.name"`) only with `LockerBuilder::metric_lock_names`, since
//! names formatted from arguments make as many series as there are arguments.
//!
//! Each figure is registered with the recorder installed when it is recorded, so a recorder
//! installed after a locker was built still gets everything; the descriptions (units and
//! help) go once, with the first figure. Without the feature every method is empty and
//! [`Meter`] holds nothing.

#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a figure counts (its `kind` label): plain locks, semaphore permits, or leadership.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Primitive {
    Lock,
    /// Semaphore permits (counted once per semaphore acquire, not per permit tried).
    Semaphore,
    /// Leadership (campaigns and terms).
    Election,
}

/// What a locker's locks, guards and sessions record; cheap to clone.
#[derive(Clone)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    labels: Arc<Labels>,
}

impl Meter {
    /// An acquire's outcome, started at `started`: taken, busy, or failed.
    pub(crate) fn count<T>(
        &self,
        kind: Primitive,
        name: &str,
        started: Instant,
        result: &Result<Option<T>, crate::error::Error>,
    ) {
        match result {
            Ok(Some(_)) => self.acquired(kind, name, started.elapsed()),
            Ok(None) => self.busy(kind, name, started.elapsed()),
            Err(_) => self.failed(kind, name),
        }
    }
}

#[cfg(not(feature = "metrics"))]
impl Meter {
    #[inline]
    pub(crate) fn new(_app: &str, _lock_names: bool) -> Meter {
        Meter {}
    }

    #[inline]
    pub(crate) fn acquired(&self, _kind: Primitive, _name: &str, _waited: Duration) {}

    #[inline]
    pub(crate) fn busy(&self, _kind: Primitive, _name: &str, _waited: Duration) {}

    #[inline]
    pub(crate) fn skipped(&self, _name: &str) {}

    #[inline]
    pub(crate) fn failed(&self, _kind: Primitive, _name: &str) {}

    #[inline]
    pub(crate) fn released(&self, _kind: Primitive, _name: &str, _held: Duration) {}

    #[inline]
    pub(crate) fn lost(&self, _name: &str) {}
}

#[cfg(feature = "metrics")]
mod names {
    pub(super) const ACQUIRED: &str = "pals_acquired_total";
    pub(super) const BUSY: &str = "pals_busy_total";
    pub(super) const SKIPPED: &str = "pals_skipped_total";
    pub(super) const ERRORS: &str = "pals_errors_total";
    pub(super) const LOST: &str = "pals_lost_total";
    pub(super) const WAIT: &str = "pals_wait_seconds";
    pub(super) const HOLD: &str = "pals_hold_seconds";
    pub(super) const HELD: &str = "pals_held_locks";
}

/// The labels every figure of a locker carries.
#[cfg(feature = "metrics")]
struct Labels {
    app: ::metrics::SharedString,
    lock_names: bool,
}

#[cfg(feature = "metrics")]
impl Primitive {
    fn label(self) -> &'static str {
        match self {
            Primitive::Lock => "lock",
            Primitive::Semaphore => "semaphore",
            Primitive::Election => "election",
        }
    }
}

#[cfg(feature = "metrics")]
impl Meter {
    pub(crate) fn new(app: &str, lock_names: bool) -> Meter {
        let app: Arc<str> = app.into();
        Meter {
            labels: Arc::new(Labels {
                app: app.into(),
                lock_names,
            }),
        }
    }

    /// An acquire took the lock after `waited`: one more held.
    pub(crate) fn acquired(&self, kind: Primitive, name: &str, waited: Duration) {
        let labels = self.labels(Some(kind), name);
        ::metrics::counter!(names::ACQUIRED, labels.clone()).increment(1);
        ::metrics::histogram!(names::WAIT, labels.clone()).record(waited);
        ::metrics::gauge!(names::HELD, labels).increment(1.0);
    }

    /// An acquire gave up after `waited`: not taken within its timeout, or busy for a try.
    pub(crate) fn busy(&self, kind: Primitive, name: &str, waited: Duration) {
        let labels = self.labels(Some(kind), name);
        ::metrics::counter!(names::BUSY, labels.clone()).increment(1);
        ::metrics::histogram!(names::WAIT, labels).record(waited);
    }

    /// `#[pals::exclusive(on_busy = "skip")]` did not run its body: the lock was busy.
    pub(crate) fn skipped(&self, name: &str) {
        ::metrics::counter!(names::SKIPPED, self.labels(None, name)).increment(1);
    }

    /// An acquire failed for another reason than a busy lock.
    pub(crate) fn failed(&self, kind: Primitive, name: &str) {
        ::metrics::counter!(names::ERRORS, self.labels(Some(kind), name)).increment(1);
    }

    /// A guard's hold ended after `held` (released, dropped, or its `release_at` came).
    pub(crate) fn released(&self, kind: Primitive, name: &str, held: Duration) {
        let labels = self.labels(Some(kind), name);
        ::metrics::histogram!(names::HOLD, labels.clone()).record(held);
        ::metrics::gauge!(names::HELD, labels).decrement(1.0);
    }

    /// A held lock's session ended: the lock is gone.
    pub(crate) fn lost(&self, name: &str) {
        ::metrics::counter!(names::LOST, self.labels(None, name)).increment(1);
    }

    fn labels(&self, kind: Option<Primitive>, name: &str) -> Vec<::metrics::Label> {
        describe();
        let mut labels = Vec::with_capacity(3);
        labels.push(::metrics::Label::new("app", self.labels.app.clone()));
        if let Some(kind) = kind {
            labels.push(::metrics::Label::new("kind", kind.label()));
        }
        if self.labels.lock_names {
            labels.push(::metrics::Label::new("lock", name.to_string()));
        }
        labels
    }
}

/// Units and help for each figure, told to the recorder once, at the first figure.
#[cfg(feature = "metrics")]
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        describe_counter!(
            names::ACQUIRED,
            Unit::Count,
            "pals: acquires that took the lock"
        );
        describe_counter!(
            names::BUSY,
            Unit::Count,
            "pals: acquires that found the lock busy until their timeout (or at once, for a try)"
        );
        describe_counter!(
            names::SKIPPED,
            Unit::Count,
            "pals: calls of #[pals::exclusive(on_busy = \"skip\")] skipped because the lock was busy"
        );
        describe_counter!(
            names::ERRORS,
            Unit::Count,
            "pals: acquires that failed (database unreachable, configuration), not busy"
        );
        describe_counter!(
            names::LOST,
            Unit::Count,
            "pals: held locks lost because their database session ended"
        );
        describe_histogram!(
            names::WAIT,
            Unit::Seconds,
            "pals: how long an acquire took, whether it took the lock or found it busy"
        );
        describe_histogram!(
            names::HOLD,
            Unit::Seconds,
            "pals: how long a lock was held, from acquire to release"
        );
        describe_gauge!(
            names::HELD,
            Unit::Count,
            "pals: locks this process holds now"
        );
    });
}
