//! What a skip tells: a busy lock at debug level; a failure at error level, and on stderr
//! when nothing subscribes to `tracing` (rate-limited); a misconfiguration as a panic.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::LockSpec;
use crate::error::Error;

/// A busy lock under `on_busy = "skip"`: the call is skipped, which is routine.
#[doc(hidden)]
pub fn log_busy_skip(error: &Error, spec: &LockSpec) {
    tracing::debug!(
        %error,
        function = spec.function,
        "pals: the lock is busy; skipping the function"
    );
}

/// A failed acquire that the return type cannot carry. A misconfiguration is a panic: a
/// skip would hide it for ever. Anything else (the database down or unreachable) may pass:
/// it is logged at error level and the call skipped.
#[track_caller]
pub(super) fn skip_failure(error: &Error, lock: &str, function: &str) {
    if error.is_misconfiguration() {
        panic!(
            "pals: cannot run `{function}`: lock \"{lock}\" cannot be taken: {error}. \
             This is a configuration mistake, not a busy lock: fix it, or return a \
             `Result<_, E>` where `E: From<pals::Error>` to handle it; call \
             pals::init_from_env() (or build the locker) at startup to find it early"
        );
    }
    tracing::error!(
        lock,
        function,
        %error,
        "pals: could not take the lock; skipping the function"
    );
    let unobserved = tracing::dispatcher::get_default(|dispatch| {
        dispatch.is::<tracing::subscriber::NoSubscriber>()
    });
    if unobserved {
        if let Some(line) = STDERR_REPORTS.report(lock, function, error, Instant::now()) {
            eprintln!("{line}");
        }
    }
}

/// How often a failed acquire of one lock is printed to stderr when nothing subscribes to
/// `tracing`: a job that runs every second must not flood it.
const STDERR_REPORT_EVERY: Duration = Duration::from_secs(60);

/// How many locks' last reports are remembered (a few bytes each: a hash of the name).
const REPORTS_REMEMBERED: usize = 4096;

static STDERR_REPORTS: Reports = Reports(Mutex::new(None));

/// Per lock (a hash of its name: names formatted from requests can be long and many):
/// when it was last printed, and how many failures were not printed since. At most
/// [`REPORTS_REMEMBERED`] locks.
struct Reports(Mutex<Option<HashMap<u64, (Instant, u64)>>>);

impl Reports {
    /// The line to print for this failure, or `None` if one was printed for the lock less
    /// than [`STDERR_REPORT_EVERY`] ago.
    fn report(&self, lock: &str, function: &str, error: &Error, now: Instant) -> Option<String> {
        let mut reports = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let reports = reports.get_or_insert_with(HashMap::new);
        let id = {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(lock, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        if reports.len() >= REPORTS_REMEMBERED && !reports.contains_key(&id) {
            // Those printed a while ago would be printed again anyway; if every one is
            // recent (a flood of new names), their counts of what was left out go.
            reports
                .retain(|_, (last, _)| now.saturating_duration_since(*last) < STDERR_REPORT_EVERY);
            if reports.len() >= REPORTS_REMEMBERED {
                reports.clear();
            }
        }
        let suppressed = match reports.get_mut(&id) {
            Some((last, suppressed))
                if now.saturating_duration_since(*last) < STDERR_REPORT_EVERY =>
            {
                *suppressed += 1;
                return None;
            }
            Some((last, suppressed)) => {
                *last = now;
                std::mem::take(suppressed)
            }
            None => {
                reports.insert(id, (now, 0));
                0
            }
        };
        let more = match suppressed {
            0 => String::new(),
            1 => " (1 more failure of this lock since the last report)".to_string(),
            n => format!(" ({n} more failures of this lock since the last report)"),
        };
        Some(format!(
            "pals: skipped `{function}`: lock \"{lock}\" cannot be taken: {error}{more}. \
             Printed at most once a minute per lock because no tracing subscriber is installed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_reports_are_rate_limited_per_lock_and_count_what_they_left_out() {
        let reports = Reports(Mutex::new(None));
        let error = Error::Connect {
            reason: "connection refused".into(),
            source: None,
        };
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let first = reports.report("app.a", "m::a", &error, at(0)).unwrap();
        assert!(
            first.contains("`m::a`") && first.contains("\"app.a\""),
            "{first}"
        );
        assert!(
            first.contains("connection refused") && !first.contains("more failure"),
            "{first}"
        );
        assert_eq!(reports.report("app.a", "m::a", &error, at(1)), None);
        assert_eq!(reports.report("app.a", "m::a", &error, at(59)), None);
        // Another lock has its own budget.
        assert!(reports.report("app.b", "m::b", &error, at(2)).is_some());
        let later = reports.report("app.a", "m::a", &error, at(60)).unwrap();
        assert!(later.contains("(2 more failures of this lock"), "{later}");
        assert_eq!(reports.report("app.a", "m::a", &error, at(61)), None);
        let again = reports.report("app.a", "m::a", &error, at(125)).unwrap();
        assert!(again.contains("(1 more failure of this lock"), "{again}");
        assert!(reports
            .report("app.a", "m::a", &error, at(190))
            .unwrap()
            .ends_with("installed"));
    }

    #[test]
    fn failures_of_ever_new_lock_names_take_bounded_memory() {
        let reports = Reports(Mutex::new(None));
        let error = Error::NotConfigured;
        let start = Instant::now();
        let name = |i: usize| format!("app.tenant-{i}-{}", "x".repeat(1024));
        for i in 0..(4 * REPORTS_REMEMBERED) {
            let at = start + Duration::from_millis(i as u64);
            assert!(reports.report(&name(i), "m::f", &error, at).is_some());
        }
        let reports = reports.0.lock().unwrap();
        let remembered = reports.as_ref().map_or(0, HashMap::len);
        assert!(remembered <= REPORTS_REMEMBERED, "{remembered} lock names");
    }
}
