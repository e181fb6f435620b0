//! Run-time support for the `#[pals::exclusive]` attribute: what a busy lock or a failed
//! acquire turns into, and the scope that releases the lock however the body ends (and,
//! for `once_per`, writes down how the run ended first).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::guard::LockGuard;
use crate::locker::Locker;
use crate::loud;
use crate::once::{Claim, Ended, RunGuard};
use crate::panics::Caught;
use crate::runtime::block_on;
use crate::semaphore::SemaphoreGuard;

mod ended;
mod fence;
mod report;
mod returns;

pub use ended::{Classify, EndedAny, EndedDebug, EndedDisplay, EndedErr};
pub use fence::{current_fence, with_fence, SyncFence};
pub use report::{log_busy_skip, log_tick_ran};
pub use returns::{
    error_return, skipped_return, LockErrorReturn, OnFailure, Resolved, ReturnFailure, SkipFailure,
    Skippable,
};

/// How the attribute takes its lock.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct LockSpec {
    /// `None`: the locker's default timeout.
    pub timeout: Option<Duration>,
    pub shared: bool,
    pub fenced: bool,
    /// `permits = N`: a permit of the semaphore `name` instead of the lock; 0: the lock.
    pub permits: u32,
    pub min_hold: Option<Duration>,
    /// The annotated function's path, `module_path::name`, for messages.
    pub function: &'static str,
    /// `on_busy = "skip"`: a busy lock skips the body (and is counted so).
    pub skip_when_busy: bool,
    /// `once_per = "..."`: the period, and the offset of its ticks.
    pub once_per: Option<(Duration, Duration)>,
}

/// The outcome of the attribute's acquire.
#[doc(hidden)]
// Matched once, right away: boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Acquired {
    Entered(Scope),
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
    let timeout = spec.timeout.unwrap_or(locker.default_timeout());
    // The full name is shared, not copied: a String is made only on the busy and failed
    // paths.
    let (taken, full_name) = if spec.permits > 0 {
        let semaphore = locker.semaphore(name, spec.permits);
        let taken = semaphore.acquire_timeout(timeout).await;
        let taken = taken.map(|permit| permit.map(SemaphoreGuard::into_lock_guard));
        (taken, Arc::clone(semaphore.shared_name()))
    } else {
        let mut lock = locker.lock(name);
        if spec.shared {
            lock = lock.shared();
        }
        if spec.fenced {
            lock = lock.fenced();
        }
        (
            lock.acquire_timeout(timeout).await,
            Arc::clone(lock.shared_name()),
        )
    };
    match taken {
        Ok(Some(guard)) => Acquired::Entered(Scope::new(Held::Lock(guard), spec.min_hold, false)),
        Ok(None) => Acquired::Busy(busy(locker, &full_name, &spec)),
        Err(error) => Acquired::Failed(error, full_name.to_string()),
    }
}

/// A busy lock, counted as a skip under `on_busy = "skip"`: its `Timeout` error.
fn busy(locker: &Locker, full_name: &Arc<str>, spec: &LockSpec) -> Error {
    if spec.skip_when_busy {
        locker.count_skip(full_name);
    }
    Error::Timeout {
        name: full_name.to_string(),
    }
}

#[doc(hidden)]
pub fn blocking_acquire(locker: Result<&Locker, Error>, name: &str, spec: LockSpec) -> Acquired {
    match block_on(acquire(locker, name, spec)) {
        Acquired::Entered(mut scope) => {
            scope.blocking_drop = true;
            Acquired::Entered(scope)
        }
        other => other,
    }
}

/// What the scope holds: the lock, or a `once_per` run (its lock and its row).
enum Held {
    Lock(LockGuard),
    Run(RunGuard),
}

/// The outcome of a `once_per` function's claim of its tick.
#[doc(hidden)]
#[allow(clippy::large_enum_variant)] // see `Acquired`
pub enum Claimed {
    Entered(Scope),
    /// Not acquired within the timeout: the error is [`Error::Timeout`].
    Busy(Error),
    /// The tick of the call ran already (or is running).
    Ran,
    /// As [`Acquired::Failed`].
    Failed(Error, String),
}

/// Claims the tick of the call of a `once_per` function (`spec.once_per` is set).
#[doc(hidden)]
pub async fn claim(locker: Result<&Locker, Error>, name: &str, spec: LockSpec) -> Claimed {
    let began = Instant::now();
    let locker = match locker {
        Ok(locker) => locker,
        Err(error) => return Claimed::Failed(error, name.to_string()),
    };
    let (period, offset) = spec.once_per.unwrap_or_default();
    let timeout = spec.timeout.unwrap_or(locker.default_timeout());
    let lock = locker.lock(name).timeout(timeout);
    let lock = if spec.fenced { lock.fenced() } else { lock };
    let job = lock.once_per(period).offset(offset);
    match job.claim_from(began).await {
        Ok(Claim::Run(run)) => Claimed::Entered(Scope::new(Held::Run(run), None, false)),
        Ok(Claim::Ran) => {
            locker.count_skip(job.lock().shared_name());
            Claimed::Ran
        }
        Ok(Claim::Busy) => Claimed::Busy(busy(locker, job.lock().shared_name(), &spec)),
        Err(error) => Claimed::Failed(error, job.lock().name().to_string()),
    }
}

#[doc(hidden)]
pub fn blocking_claim(locker: Result<&Locker, Error>, name: &str, spec: LockSpec) -> Claimed {
    match block_on(claim(locker, name, spec)) {
        Claimed::Entered(mut scope) => {
            scope.blocking_drop = true;
            Claimed::Entered(scope)
        }
        other => other,
    }
}

/// The scope of an annotated function's body: the lock while the body runs, released
/// however the body ends.
#[doc(hidden)]
pub struct Scope {
    held: Option<Held>,
    keep_until: Option<Instant>,
    /// A sync function's scope: release and wait for it on a normal exit.
    blocking_drop: bool,
}

impl Scope {
    fn new(held: Held, min_hold: Option<Duration>, blocking_drop: bool) -> Scope {
        Scope {
            held: Some(held),
            keep_until: min_hold.and_then(|hold| Instant::now().checked_add(hold)),
            blocking_drop,
        }
    }

    /// The lock held.
    fn guard(&self) -> Option<&LockGuard> {
        match self.held.as_ref()? {
            Held::Lock(guard) => Some(guard),
            Held::Run(run) => run.guard(),
        }
    }

    /// The fencing token of a fenced lock.
    fn fence(&self) -> Option<u64> {
        self.guard().and_then(LockGuard::fence)
    }

    /// The `LockLost` error for this lock.
    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self
                .guard()
                .map_or_else(String::new, |g| g.name().to_string()),
        }
    }

    /// [`release`](Scope::release), then `output`: the async function's normal exit, as one
    /// expression.
    pub async fn release_returning<T>(self, output: T) -> T {
        self.release().await;
        output
    }

    /// The async function's normal exit: release and wait for the database to confirm it,
    /// or, with `min_hold`, leave the release to the background when the time is up.
    pub async fn release(mut self) {
        match self.held.take() {
            None => {}
            Some(Held::Run(run)) => run.end_logged(Ended::Succeeded).await,
            Some(Held::Lock(guard)) => match self.keep_until {
                Some(until) if until > Instant::now() => guard.release_at(until),
                _ => log_release(guard.name().to_string(), guard.release().await),
            },
        }
    }

    /// A `once_per` body's normal exit: write down how it `ended`, release, then `output`.
    pub async fn finish_returning<T>(mut self, ended: Ended, output: T) -> T {
        if let Some(Held::Run(run)) = self.held.take() {
            run.end_logged(ended).await;
        }
        output
    }

    /// [`finish_returning`](Scope::finish_returning) for a sync function.
    pub fn blocking_finish_returning<T>(mut self, ended: Ended, output: T) -> T {
        if let Some(Held::Run(run)) = self.held.take() {
            block_on(run.end_logged(ended));
        }
        output
    }

    /// A `once_per` body's panic: write down that it panicked, release, and go on with
    /// the panic.
    pub async fn resume_panic(mut self, panic: Caught) -> Infallible {
        if let Some(Held::Run(run)) = self.held.take() {
            run.end_logged(Ended::Panicked(panic.message())).await;
        }
        panic.resume()
    }

    /// [`resume_panic`](Scope::resume_panic) for a sync function.
    pub fn blocking_resume_panic(mut self, panic: Caught) -> Infallible {
        if let Some(Held::Run(run)) = self.held.take() {
            block_on(run.end_logged(Ended::Panicked(panic.message())));
        }
        panic.resume()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let guard = match self.held.take() {
            None => return,
            // Written down as cancelled (or lost), in the background.
            Some(Held::Run(run)) => return drop(run),
            Some(Held::Lock(guard)) => guard,
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
        Ok(false) => loud::lost_at_end(&name, None),
        Err(error) => loud::lost_at_end(&name, Some(&error)),
    }
}

/// Runs `body` unless the lock is lost first; then `body` is dropped where it stands and
/// the result is the `LockLost` error. (`on_lost = "cancel"`.)
#[doc(hidden)]
pub async fn unless_lost<F: Future>(scope: &Scope, body: F) -> Result<F::Output, Error> {
    let Some(guard) = scope.guard() else {
        return Ok(body.await);
    };
    guard.unless_lost(body).await.ok_or_else(|| {
        let error = scope.lost_error();
        tracing::error!(%error, "pals: the lock was lost while the body ran; the body was cancelled");
        error
    })
}
