//! Run-time support for the `#[pals::exclusive]` attribute: what a busy lock or a failed
//! acquire turns into, and the scope that releases the lock however the body ends.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::{runtime, Error, LockGuard, Locker};

/// Return types that can carry a [`pals::Error`](crate::Error) out of a function annotated
/// with `#[pals::exclusive]` (`on_busy = "error"`, the default).
///
/// Implemented for `Result<T, E>` where `E: From<pals::Error>`; implement it for your own
/// return types if they have a way to report the error.
///
/// ```
/// use pals::LockErrorReturn;
/// let r: Result<(), pals::Error> = LockErrorReturn::from_lock_error(pals::Error::NotConfigured);
/// assert!(r.is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[pals::exclusive]` cannot return a lock error as `{Self}`",
    label = "this return type cannot carry a `pals::Error`",
    note = "with on_busy = \"error\" (the default), return `Result<T, E>` where `E: From<pals::Error>`",
    note = "or use on_busy = \"skip\" to skip the body when the lock is busy"
)]
pub trait LockErrorReturn {
    /// The value that returns `error` to the caller.
    fn from_lock_error(error: Error) -> Self;
}

impl<T, E: From<Error>> LockErrorReturn for Result<T, E> {
    fn from_lock_error(error: Error) -> Self {
        Err(E::from(error))
    }
}

/// Return types with a "skipped" value: what a function annotated with
/// `#[pals::exclusive(on_busy = "skip")]` returns when the lock is busy and its body did not run.
///
/// `()` for `()`, `None` for `Option<T>`, [`Outcome::Skipped`] for [`Outcome<T>`],
/// `Ok(T::skipped())` for `Result<T, E>`. Implement it for your own types:
///
/// ```
/// #[derive(Debug, PartialEq)]
/// enum Run { Done(u32), Skipped }
/// impl pals::Skippable for Run {
///     fn skipped() -> Self { Run::Skipped }
/// }
/// assert_eq!(<Result<Run, pals::Error> as pals::Skippable>::skipped().unwrap(), Run::Skipped);
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[pals::exclusive(on_busy = \"skip\")]` has no skipped value for `{Self}`",
    label = "no skipped value for this return type",
    note = "skipped values exist for `()`, `Option<T>`, `pals::Outcome<T>` and `Result<T, E>` whose `T` has one",
    note = "implement `pals::Skippable` for your type, or use on_busy = \"error\""
)]
pub trait Skippable {
    /// The value returned in place of running the body.
    fn skipped() -> Self;
}

impl Skippable for () {
    fn skipped() -> Self {}
}

impl<T> Skippable for Option<T> {
    fn skipped() -> Self {
        None
    }
}

impl<T: Skippable, E> Skippable for Result<T, E> {
    fn skipped() -> Self {
        Ok(T::skipped())
    }
}

/// What a function annotated with `#[pals::exclusive(on_busy = "skip")]` returns when a skip
/// must be told apart from a value of the body: [`Ran`](Outcome::Ran) with the body's
/// value, or [`Skipped`](Outcome::Skipped) when another holder had the lock.
///
/// With `Option<T>` as the return type, a skip and the body's own `None` look the same;
/// with `Outcome<Option<T>>` they do not. Inside a `Result`, a skip is `Ok(Outcome::Skipped)`.
///
/// ```
/// use pals::Outcome;
/// # use std::sync::LazyLock;
/// # static LOCKER: LazyLock<pals::Locker> = LazyLock::new(|| pals::Locker::new("doc-outcome",
/// #     &std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into())).unwrap());
///
/// #[pals::exclusive(name = "next-invoice", timeout = "0", on_busy = "skip", locker = &LOCKER)]
/// fn next_invoice() -> Outcome<Option<u32>> {
///     Outcome::Ran(None) // ran, and found nothing to do
/// }
///
/// let outcome = next_invoice();
/// assert_eq!(outcome, Outcome::Ran(None)); // not Outcome::Skipped: nobody else held the lock
/// assert!(!outcome.is_skipped());
/// assert_eq!(outcome.ran(), Some(None));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Outcome<T> {
    /// The lock was taken and the body ran; this is its value.
    Ran(T),
    /// The lock was busy: the body did not run.
    Skipped,
}

impl<T> Outcome<T> {
    /// The body's value, `None` if the call was skipped.
    pub fn ran(self) -> Option<T> {
        match self {
            Outcome::Ran(value) => Some(value),
            Outcome::Skipped => None,
        }
    }

    /// True if the lock was busy and the body did not run.
    pub const fn is_skipped(&self) -> bool {
        matches!(self, Outcome::Skipped)
    }
}

impl<T> Skippable for Outcome<T> {
    fn skipped() -> Self {
        Outcome::Skipped
    }
}

/// How the attribute takes its lock.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct LockSpec {
    /// `None`: the locker's default timeout.
    pub timeout: Option<Duration>,
    pub shared: bool,
    pub min_hold: Option<Duration>,
    /// The annotated function's path, `module_path::name`, for messages.
    pub function: &'static str,
}

/// The outcome of the attribute's acquire.
#[doc(hidden)]
// Matched once, right away: boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Acquired {
    Held(Held),
    /// Not acquired within the timeout: the error is [`Error::Timeout`].
    Busy(Error),
    /// The database (or the configuration) failed; with the lock's full name (`"app.name"`,
    /// or the name alone when there is no locker).
    Failed(Error, String),
}

#[doc(hidden)]
pub async fn acquire(locker: Result<&Locker, Error>, name: &str, spec: LockSpec) -> Acquired {
    let locker = match locker {
        Ok(locker) => locker,
        Err(error) => return Acquired::Failed(error, name.to_string()),
    };
    let mut lock = locker.lock(name);
    if spec.shared {
        lock = lock.shared();
    }
    let timeout = spec.timeout.unwrap_or_else(|| lock.acquire_timeout_value());
    match lock.acquire_timeout(timeout).await {
        Ok(Some(guard)) => Acquired::Held(Held::new(guard, spec.min_hold, false)),
        Ok(None) => Acquired::Busy(lock.timeout_error()),
        Err(error) => Acquired::Failed(error, lock.name().to_string()),
    }
}

#[doc(hidden)]
pub fn blocking_acquire(locker: Result<&Locker, Error>, name: &str, spec: LockSpec) -> Acquired {
    match runtime::block_on(acquire(locker, name, spec)) {
        Acquired::Held(mut held) => {
            held.blocking_drop = true;
            Acquired::Held(held)
        }
        other => other,
    }
}

/// The lock while the body runs; releasing it however the body ends.
#[doc(hidden)]
pub struct Held {
    guard: Option<LockGuard>,
    keep_until: Option<Instant>,
    /// A sync function's scope: release and wait for it on a normal exit.
    blocking_drop: bool,
}

impl Held {
    fn new(guard: LockGuard, min_hold: Option<Duration>, blocking_drop: bool) -> Held {
        Held {
            guard: Some(guard),
            keep_until: min_hold.and_then(|hold| Instant::now().checked_add(hold)),
            blocking_drop,
        }
    }

    /// The `LockLost` error for this lock.
    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self
                .guard
                .as_ref()
                .map_or_else(String::new, |g| g.name().to_string()),
        }
    }

    /// [`release`](Held::release), then `output`: the async function's normal exit, as one
    /// expression.
    pub async fn release_returning<T>(self, output: T) -> T {
        self.release().await;
        output
    }

    /// The async function's normal exit: release and wait for the database to confirm it,
    /// or, with `min_hold`, leave the release to the background when the time is up.
    pub async fn release(mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        match self.keep_until {
            Some(until) if until > Instant::now() => guard.release_at(until),
            _ => log_release(guard.name().to_string(), guard.release().await),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        match self.keep_until {
            Some(until) if until > Instant::now() => guard.release_at(until),
            // A sync function returning normally: the lock is free when it returns.
            _ if self.blocking_drop && !std::thread::panicking() => {
                log_release(guard.name().to_string(), guard.blocking_release())
            }
            // Cancellation or a panic: released promptly in the background.
            _ => drop(guard),
        }
    }
}

fn log_release(name: String, result: Result<bool, Error>) {
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(lock = %name, "pals: the lock was no longer held when the function ended")
        }
        Err(error) => {
            tracing::error!(lock = %name, %error, "pals: releasing the lock failed; its session was closed")
        }
    }
}

/// Runs `body` unless the lock is lost first; then `body` is dropped where it stands and
/// the result is the `LockLost` error. (`on_lost = "cancel"`.)
#[doc(hidden)]
pub async fn unless_lost<F: Future>(held: &Held, body: F) -> Result<F::Output, Error> {
    let Some(guard) = &held.guard else {
        return Ok(body.await);
    };
    let mut body = pin!(body);
    let mut lost = pin!(guard.lost());
    let finished = poll_fn(|cx| {
        // The body first: work that finished as the loss was found stands.
        if let Poll::Ready(output) = body.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        lost.as_mut().poll(cx).map(|()| None)
    })
    .await;
    finished.ok_or_else(|| {
        let error = held.lost_error();
        tracing::error!(%error, "pals: the lock was lost while the body ran; the body was cancelled");
        error
    })
}

/// The return value for a busy lock under `on_busy = "error"`, and for a failed acquire.
#[doc(hidden)]
pub fn error_return<R: LockErrorReturn>(error: Error) -> R {
    R::from_lock_error(error)
}

/// The return value for a busy lock under `on_busy = "skip"`.
#[doc(hidden)]
pub fn skipped_return<R: Skippable>() -> R {
    R::skipped()
}

/// A busy lock under `on_busy = "skip"`: the call is skipped, which is routine.
#[doc(hidden)]
pub fn log_busy_skip(error: &Error, spec: &LockSpec) {
    tracing::debug!(
        %error,
        function = spec.function,
        "pals: the lock is busy; skipping the function"
    );
}

/// A failed acquire under `on_busy = "skip"`: returned as an error where the return type
/// can carry one, else logged and skipped. Chosen by autoref specialisation at the call
/// site: `(&&OnFailure::<R>::new()).resolve(error)`.
#[doc(hidden)]
pub struct OnFailure<R>(PhantomData<fn() -> R>);

impl<R> OnFailure<R> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        OnFailure(PhantomData)
    }
}

/// What to do with a failed acquire under `on_busy = "skip"`.
#[doc(hidden)]
pub enum Resolved<R> {
    /// Return this (the error, carried by the return type).
    Return(R),
    /// Return the skipped value (the error was logged).
    Skip,
}

#[doc(hidden)]
pub trait ReturnFailure<R> {
    fn resolve(&self, error: Error, lock: &str, spec: &LockSpec) -> Resolved<R>;
}

impl<R: LockErrorReturn> ReturnFailure<R> for &OnFailure<R> {
    fn resolve(&self, error: Error, _: &str, _: &LockSpec) -> Resolved<R> {
        Resolved::Return(R::from_lock_error(error))
    }
}

#[doc(hidden)]
pub trait SkipFailure<R> {
    fn resolve(&self, error: Error, lock: &str, spec: &LockSpec) -> Resolved<R>;
}

// No bound here: a return type without a skipped value is reported once, by the
// `skipped_return` call the skip path makes anyway.
impl<R> SkipFailure<R> for OnFailure<R> {
    // A misconfiguration's panic points at the annotated function.
    #[track_caller]
    fn resolve(&self, error: Error, lock: &str, spec: &LockSpec) -> Resolved<R> {
        skip_failure(&error, lock, spec.function);
        Resolved::Skip
    }
}

/// A failed acquire that the return type cannot carry. A misconfiguration is a panic: a
/// skip would hide it for ever. Anything else (the database down or unreachable) may pass:
/// it is logged at error level and the call skipped.
#[track_caller]
fn skip_failure(error: &Error, lock: &str, function: &str) {
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

static STDERR_REPORTS: Reports = Reports(Mutex::new(None));

/// Per lock name: when it was last printed, and how many failures were not printed since.
struct Reports(Mutex<Option<HashMap<String, (Instant, u64)>>>);

impl Reports {
    /// The line to print for this failure, or `None` if one was printed for the lock less
    /// than [`STDERR_REPORT_EVERY`] ago.
    fn report(&self, lock: &str, function: &str, error: &Error, now: Instant) -> Option<String> {
        let mut reports = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let reports = reports.get_or_insert_with(HashMap::new);
        let suppressed = match reports.get_mut(lock) {
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
                reports.insert(lock.to_string(), (now, 0));
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
    fn outcome_tells_a_skip_from_a_value() {
        assert_eq!(Outcome::Ran(None::<u32>).ran(), Some(None));
        assert_eq!(<Outcome<Option<u32>> as Skippable>::skipped().ran(), None);
        assert!(<Outcome<()> as Skippable>::skipped().is_skipped());
        assert!(!Outcome::Ran(()).is_skipped());
        assert_eq!(
            <Result<Outcome<u8>, Error> as Skippable>::skipped().unwrap(),
            Outcome::Skipped
        );
    }
}
