//! Run-time support for the `#[pals::exclusive]` attribute: what a busy lock or a failed
//! acquire turns into, and the scope that releases the lock however the body ends.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::guard::LockGuard;
use crate::locker::Locker;
use crate::loud;
use crate::runtime::block_on;
use crate::semaphore::SemaphoreGuard;

mod fence;
mod report;
mod returns;

pub use fence::{current_fence, with_fence, SyncFence};
pub use report::log_busy_skip;
pub use returns::{
    error_return, skipped_return, LockErrorReturn, OnFailure, Outcome, Resolved, ReturnFailure,
    SkipFailure, Skippable,
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
        Ok(Some(guard)) => Acquired::Entered(Scope::new(guard, spec.min_hold, false)),
        Ok(None) => {
            if spec.skip_when_busy {
                locker.count_skip(&full_name);
            }
            Acquired::Busy(Error::Timeout {
                name: full_name.to_string(),
            })
        }
        Err(error) => Acquired::Failed(error, full_name.to_string()),
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

/// The scope of an annotated function's body: the lock while the body runs, released
/// however the body ends.
#[doc(hidden)]
pub struct Scope {
    guard: Option<LockGuard>,
    keep_until: Option<Instant>,
    /// A sync function's scope: release and wait for it on a normal exit.
    blocking_drop: bool,
}

impl Scope {
    fn new(guard: LockGuard, min_hold: Option<Duration>, blocking_drop: bool) -> Scope {
        Scope {
            guard: Some(guard),
            keep_until: min_hold.and_then(|hold| Instant::now().checked_add(hold)),
            blocking_drop,
        }
    }

    /// The fencing token of a fenced lock.
    fn fence(&self) -> Option<u64> {
        self.guard.as_ref().and_then(LockGuard::fence)
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

    /// [`release`](Scope::release), then `output`: the async function's normal exit, as one
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

impl Drop for Scope {
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
        Ok(false) => loud::lost_at_end(&name, None),
        Err(error) => loud::lost_at_end(&name, Some(&error)),
    }
}

/// Runs `body` unless the lock is lost first; then `body` is dropped where it stands and
/// the result is the `LockLost` error. (`on_lost = "cancel"`.)
#[doc(hidden)]
pub async fn unless_lost<F: Future>(scope: &Scope, body: F) -> Result<F::Output, Error> {
    let Some(guard) = &scope.guard else {
        return Ok(body.await);
    };
    guard.unless_lost(body).await.ok_or_else(|| {
        let error = scope.lost_error();
        tracing::error!(%error, "pals: the lock was lost while the body ran; the body was cancelled");
        error
    })
}
