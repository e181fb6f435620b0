//! What must reach a person even when the program installed no `tracing` subscriber: a lock
//! lost while held, a skipped run that was an error, an ignored password file, a
//! misconfiguration found at run time. One policy for all of them:
//!
//! - the `tracing` event is always emitted (the subscriber, if any, decides what to keep);
//! - if no subscriber takes events at that level from pals (none installed, or none on this
//!   thread, such as pals' own runtime thread when the program set only a thread-local
//!   default), a line is printed to stderr instead, at most once a minute per cause (a
//!   lock's name, a file), saying how many events of that cause it left out since.
//!
//! Everything here is for rare events: a lost lock, a failed skip. Routine outcomes (a busy
//! lock, a released one) never come here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{is_not_ours, why_closed, Error, PgError};

/// How often one cause may be printed to stderr: a job that runs every second, or a
/// process that loses a lock in a loop, must not flood it.
const STDERR_EVERY: Duration = Duration::from_secs(60);

/// How many causes the stderr budget keeps before it forgets those printed more than
/// [`STDERR_EVERY`] ago (lock names may be formatted from arguments: unbounded).
const CAUSES_KEPT: usize = 4096;

static STDERR: Budget = Budget(Mutex::new(None));

/// How loud an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Warn,
    Error,
}

/// Why a lock session is closed after `error` ended `what` (see [`why_closed`]); a session
/// found shared with other clients ([`is_not_ours`]: a transaction-mode pooler) is a
/// misconfiguration found at run time, and reported here as one.
pub(crate) fn session_failed(what: &str, error: &PgError) -> String {
    let why = why_closed(what, error);
    if is_not_ours(error) {
        self::error("pooler", &why);
    }
    why
}

/// An error that must reach a person: `cause` (what it is about: `"pooler"`, a lock's
/// name...) budgets the stderr fallback; `message` says what happened and what to do.
pub(crate) fn error(cause: &str, message: &str) {
    tracing::error!(cause, "pals: {message}");
    fall_back(Level::Error, cause, || format!("pals: {message}"));
}

/// A lock lost with its database session while a guard held it.
pub(crate) fn lock_lost(lock: &str, key: i64, held: Duration, pid: i32, why: &str) {
    tracing::error!(
        lock = %lock,
        key,
        ?held,
        pid,
        why,
        "pals: lock lost: its database session ended while the lock was held"
    );
    fall_back(Level::Error, &lost(lock), || {
        format!(
            "pals: lock \"{lock}\" lost after {held:.1?}: its database session ended ({why}). \
             Another process may hold it now: stop the work it guards (watch `guard.lost()`, \
             or use `on_lost = \"cancel\"` with `#[pals::exclusive]`)"
        )
    });
}

/// A function of `#[pals::exclusive]` whose lock was found lost at its end (the body ran
/// on: `on_lost = "continue"`); `error`: its release failed instead.
pub(crate) fn lost_at_end(lock: &str, error: Option<&Error>) {
    let what = match error {
        None => "the lock was no longer held when the function ended".to_string(),
        Some(error) => format!("releasing the lock failed; its session was closed: {error}"),
    };
    match error {
        None => tracing::error!(lock, "pals: {what}"),
        Some(error) => {
            tracing::error!(lock, %error, "pals: releasing the lock failed; its session was closed")
        }
    }
    fall_back(Level::Error, &lost(lock), || {
        format!(
            "pals: lock \"{lock}\": {what}; the function ran on without it (on_lost = \
             \"continue\"), and another process may have held it meanwhile"
        )
    });
}

/// A skipped call of `#[pals::exclusive(on_busy = "skip")]` whose lock could not be taken
/// for a reason other than a busy lock (the database down or unreachable).
pub(crate) fn skip_failed(lock: &str, function: &str, error: &Error) {
    tracing::error!(
        lock,
        function,
        %error,
        "pals: could not take the lock; skipping the function"
    );
    fall_back(Level::Error, &format!("skip {lock}"), || {
        format!("pals: skipped `{function}`: lock \"{lock}\" cannot be taken: {error}")
    });
}

/// A password file that others may read, ignored as libpq ignores it.
pub(crate) fn passfile_ignored(file: &Path) {
    let file = file.display();
    tracing::warn!(
        file = %file,
        "pals: the password file can be read by others (chmod 0600 it); it is ignored, as libpq does"
    );
    fall_back(Level::Warn, &format!("passfile {file}"), || {
        format!(
            "pals: the password file {file} can be read by others, so it is ignored, as libpq \
             does: `chmod 0600 {file}`"
        )
    });
}

/// The stderr cause of a lost lock: the events of its loss share one budget.
fn lost(lock: &str) -> String {
    format!("lost {lock}")
}

/// True if a subscriber takes pals' events at `level` here.
fn heard(level: Level) -> bool {
    match level {
        Level::Warn => tracing::enabled!(tracing::Level::WARN),
        Level::Error => tracing::enabled!(tracing::Level::ERROR),
    }
}

/// Prints `line()` to stderr if nobody hears `level`, unless `cause` was printed less than
/// [`STDERR_EVERY`] ago.
fn fall_back(level: Level, cause: &str, line: impl FnOnce() -> String) {
    if heard(level) {
        return;
    }
    if let Some(left_out) = STDERR.admit(cause, Instant::now()) {
        eprintln!("{}", with_footer(&line(), left_out));
    }
}

/// `line` with what the reader should know about the fallback: how many were left out.
fn with_footer(line: &str, left_out: u64) -> String {
    let more = match left_out {
        0 => String::new(),
        1 => " (1 more like it since the last report)".to_string(),
        n => format!(" ({n} more like it since the last report)"),
    };
    format!(
        "{line}{more}. Printed at most once a minute per cause because no tracing \
         subscriber is installed"
    )
}

/// Per cause (a hash of it: causes hold lock names, which may be long, and many): when it
/// was last printed, and how many events were not printed since. At most [`CAUSES_KEPT`].
struct Budget(Mutex<Option<HashMap<u64, (Instant, u64)>>>);

impl Budget {
    /// `Some(left out since the last print)` if `cause` may be printed at `now`; `None` if
    /// it was printed less than [`STDERR_EVERY`] ago (and this one is counted).
    fn admit(&self, cause: &str, now: Instant) -> Option<u64> {
        let mut causes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let causes = causes.get_or_insert_with(HashMap::new);
        let recent = |last: &Instant| now.saturating_duration_since(*last) < STDERR_EVERY;
        let cause = {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(cause, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        match causes.get_mut(&cause) {
            Some((last, left_out)) if recent(last) => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                if causes.len() >= CAUSES_KEPT {
                    causes.retain(|_, (last, _)| recent(last));
                }
                if causes.len() >= CAUSES_KEPT {
                    // A flood of new causes within the minute: their counts of what was
                    // left out go, and memory stays bounded.
                    causes.clear();
                }
                causes.insert(cause, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_at_most_once_a_minute_with_what_was_left_out() {
        let budget = Budget(Mutex::new(None));
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(budget.admit("lost app.a", at(0)), Some(0));
        assert_eq!(budget.admit("lost app.a", at(1)), None);
        assert_eq!(budget.admit("lost app.a", at(59)), None);
        // Another cause has its own budget.
        assert_eq!(budget.admit("lost app.b", at(2)), Some(0));
        assert_eq!(budget.admit("lost app.a", at(60)), Some(2));
        assert_eq!(budget.admit("lost app.a", at(61)), None);
        assert_eq!(budget.admit("lost app.a", at(125)), Some(1));
        assert_eq!(budget.admit("lost app.a", at(190)), Some(0));
    }

    #[test]
    fn the_budget_forgets_causes_printed_long_ago_when_it_is_full() {
        let budget = Budget(Mutex::new(None));
        let start = Instant::now();
        for n in 0..CAUSES_KEPT {
            assert_eq!(budget.admit(&format!("cause {n}"), start), Some(0));
        }
        let later = start + STDERR_EVERY;
        assert_eq!(budget.admit("one more", later), Some(0));
        let kept = budget.0.lock().unwrap().as_ref().map(HashMap::len);
        assert_eq!(kept, Some(1), "the causes of a minute ago were forgotten");
        // A recent cause is kept, and still limited.
        assert_eq!(budget.admit("one more", later), None);
    }

    #[test]
    fn causes_ever_new_within_the_minute_take_bounded_memory() {
        let budget = Budget(Mutex::new(None));
        let start = Instant::now();
        let name = |i: usize| format!("lost app.tenant-{i}-{}", "x".repeat(1024));
        for i in 0..(4 * CAUSES_KEPT) {
            let at = start + Duration::from_millis(i as u64);
            assert_eq!(budget.admit(&name(i), at), Some(0));
        }
        let kept = budget.0.lock().unwrap().as_ref().map_or(0, HashMap::len);
        assert!(kept <= CAUSES_KEPT, "{kept} causes");
    }

    #[test]
    fn the_footer_says_why_and_how_many_were_left_out() {
        let line = with_footer("pals: lock \"app.a\" lost", 0);
        assert!(
            line.ends_with("because no tracing subscriber is installed"),
            "{line}"
        );
        assert!(!line.contains("more like it"), "{line}");
        assert!(with_footer("x", 1).contains("(1 more like it since the last report)"));
        assert!(with_footer("x", 7).contains("(7 more like it since"));
    }
}
