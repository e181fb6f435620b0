//! Deadlines: how long a caller is prepared to wait ([`Wait`]), the `lock_timeout` that
//! gives the server for a wait, and waiting on the library's timer ([`until`], [`within`],
//! [`sleep_until`]), which works under any executor, or none.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::future::unless;

/// How long a caller is prepared to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Try once, never wait.
    Never,
    /// Wait until this instant.
    Until(Instant),
    /// Wait as long as it takes.
    Forever,
}

impl Wait {
    /// The wait that `timeout` allows, starting now: zero tries once; a timeout too long
    /// for PostgreSQL's `lock_timeout` (an int4 of milliseconds) is forever.
    pub(crate) fn of_timeout(timeout: Duration) -> Wait {
        if timeout.is_zero() {
            return Wait::Never;
        }
        if timeout.as_millis() > i32::MAX as u128 {
            return Wait::Forever;
        }
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }

    /// The deadline to wait for, `None` meaning forever; `Never` waits until now.
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Never => Some(Instant::now()),
            Wait::Until(deadline) => Some(deadline),
            Wait::Forever => None,
        }
    }

    /// The `lock_timeout` for the database wait, in milliseconds: `None` to try once
    /// instead, `Some(0)` for no limit.
    pub(crate) fn lock_timeout_ms(self) -> Option<u64> {
        match self {
            Wait::Never => None,
            Wait::Forever => Some(0),
            Wait::Until(deadline) => millis_for(deadline.saturating_duration_since(Instant::now())),
        }
    }
}

/// The `lock_timeout` for `left` of a timeout: rounded up so that the whole timeout is
/// waited, a fraction of a millisecond too (never `0`, which would mean no limit: a wait
/// that tried once instead would end before its timeout); nothing left, `None` (try once).
pub(crate) fn millis_for(left: Duration) -> Option<u64> {
    let millis = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as u64;
    (!left.is_zero()).then_some(millis)
}

/// Runs `fut` to completion, returning `None` if `deadline` passes first. The timer
/// belongs to the library's runtime (`rt`), so this works under any executor; it is made
/// only if `fut` is not ready at once.
pub(crate) async fn until<F: Future>(rt: &Handle, deadline: Instant, fut: F) -> Option<F::Output> {
    unless(fut, sleep_until(rt, deadline)).await
}

/// Runs `fut` to completion, returning `None` if `limit` passes first (a limit too far to
/// reach is none).
pub(crate) async fn within<F: Future>(rt: &Handle, limit: Duration, fut: F) -> Option<F::Output> {
    match Instant::now().checked_add(limit) {
        Some(deadline) => until(rt, deadline, fut).await,
        None => Some(fut.await),
    }
}

/// Sleeps until `deadline` on the library's runtime's timer (so under any executor). The
/// timer is made when this is first polled.
pub(crate) async fn sleep_until(rt: &Handle, deadline: Instant) {
    let sleep = {
        let _entered = rt.enter();
        tokio::time::sleep_until(deadline.into())
    };
    sleep.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{block_on, handle};

    #[test]
    fn timeouts_map_to_waits() {
        assert_eq!(Wait::of_timeout(Duration::ZERO), Wait::Never);
        assert_eq!(Wait::of_timeout(Duration::MAX), Wait::Forever);
        let month = Duration::from_secs(30 * 24 * 3600);
        assert_eq!(Wait::of_timeout(month), Wait::Forever);
        let short = Wait::of_timeout(Duration::from_millis(300));
        assert!(matches!(short, Wait::Until(_)));
    }

    #[test]
    fn database_wait_rounds_up() {
        assert_eq!(Wait::Never.lock_timeout_ms(), None);
        assert_eq!(Wait::Forever.lock_timeout_ms(), Some(0));
        assert_eq!(Wait::Until(Instant::now()).lock_timeout_ms(), None);
        let ms = Duration::from_millis;
        assert_eq!(millis_for(ms(300)), Some(300));
        assert_eq!(millis_for(ms(300) - Duration::from_micros(1)), Some(300));
        assert_eq!(millis_for(ms(299) + Duration::from_nanos(1)), Some(300));
        assert_eq!(millis_for(ms(1)), Some(1));
        assert_eq!(millis_for(ms(1) - Duration::from_nanos(1)), Some(1));
        assert_eq!(millis_for(Duration::from_nanos(1)), Some(1));
        assert_eq!(millis_for(Duration::ZERO), None);
        assert_eq!(millis_for(ms(u64::MAX / 2)), Some(i32::MAX as u64));
    }

    #[test]
    fn until_times_out_without_a_caller_runtime() {
        let rt = handle().unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(30);
        let out = block_on(until(&rt, deadline, std::future::pending::<()>()));
        assert!(out.is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn until_returns_the_output_when_ready() {
        let rt = handle().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(block_on(until(&rt, deadline, async { 7 })), Some(7));
    }
}
