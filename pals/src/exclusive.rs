//! Run-time support for the `#[pals::exclusive]` attribute: what a busy lock or a failed
//! acquire turns into, and the scope that releases the lock however the body ends.

use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::pin;
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
/// `()` for `()`, `None` for `Option<T>`, `Ok(T::skipped())` for `Result<T, E>`. Implement it
/// for your own types:
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
    note = "skipped values exist for `()`, `Option<T>` and `Result<T, E>` whose `T` has one",
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

/// How the attribute takes its lock.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct LockSpec {
    /// `None`: the locker's default timeout.
    pub timeout: Option<Duration>,
    pub shared: bool,
    pub min_hold: Option<Duration>,
}

/// The outcome of the attribute's acquire.
#[doc(hidden)]
// Matched once, right away: boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Acquired {
    Held(Held),
    /// Not acquired within the timeout: the error is [`Error::Timeout`].
    Busy(Error),
    /// The database (or the configuration) failed.
    Failed(Error),
}

#[doc(hidden)]
pub async fn acquire(locker: Result<&Locker, Error>, name: &str, spec: LockSpec) -> Acquired {
    let locker = match locker {
        Ok(locker) => locker,
        Err(error) => return Acquired::Failed(error),
    };
    let mut lock = locker.lock(name);
    if spec.shared {
        lock = lock.shared();
    }
    let timeout = spec.timeout.unwrap_or_else(|| lock.acquire_timeout_value());
    match lock.acquire_timeout(timeout).await {
        Ok(Some(guard)) => Acquired::Held(Held::new(guard, spec.min_hold, false)),
        Ok(None) => Acquired::Busy(lock.timeout_error()),
        Err(error) => Acquired::Failed(error),
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
    fn resolve(&self, error: Error) -> Resolved<R>;
}

impl<R: LockErrorReturn> ReturnFailure<R> for &OnFailure<R> {
    fn resolve(&self, error: Error) -> Resolved<R> {
        Resolved::Return(R::from_lock_error(error))
    }
}

#[doc(hidden)]
pub trait SkipFailure<R> {
    fn resolve(&self, error: Error) -> Resolved<R>;
}

// No bound here: a return type without a skipped value is reported once, by the
// `skipped_return` call the skip path makes anyway.
impl<R> SkipFailure<R> for OnFailure<R> {
    fn resolve(&self, error: Error) -> Resolved<R> {
        tracing::error!(%error, "pals: could not take the lock; skipping the function");
        Resolved::Skip
    }
}
