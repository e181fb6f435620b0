//! What a skip tells: a busy lock at debug level; a failure at error level, and on stderr
//! when nothing subscribes to `tracing` (rate-limited: see `loud`); a misconfiguration as a
//! panic.

use super::LockSpec;
use crate::error::Error;
use crate::loud;

/// A busy lock under `on_busy = "skip"`: the call is skipped, which is routine.
#[doc(hidden)]
pub fn log_busy_skip(error: &Error, spec: &LockSpec) {
    tracing::debug!(
        %error,
        function = spec.function,
        "pals: the lock is busy; skipping the function"
    );
}

/// A `once_per` call whose tick ran already (or is running): skipped, which is routine.
#[doc(hidden)]
pub fn log_tick_ran(spec: &LockSpec) {
    tracing::debug!(
        function = spec.function,
        "pals: once_per: this tick ran already; skipping the function"
    );
}

/// A failed acquire that the return type cannot carry. A misconfiguration is a panic: a
/// skip would hide it for ever. Anything else (the database down or unreachable) may pass:
/// it is logged at error level (see `loud`) and the call skipped.
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
    loud::skip_failed(lock, function, error);
}
