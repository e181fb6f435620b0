//! The acquire path: a caller takes this process's turn at the key (`turn`), takes the
//! lock its last holder handed over if there is one (`release`), and otherwise goes to the
//! database: at once on a shared session (one round trip when the lock is free), then, if
//! it may wait, on a session of its own (`pool`, `session`). A statement cut short in a way
//! another attempt may outlast (a cancel, a session that ended) is tried again: a try once,
//! a wait until its timeout ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::Core;
use crate::deadline::{sleep_until, Wait};
use crate::error::Error;
use crate::key::Mode;
use crate::pool::Want;
use crate::release::{take_over, Owned};
use crate::session::{Failure, SessionLock};
use crate::turn::Chain;

/// How many times a try at once is made when the first fails in a way another session may
/// not (its session ended, or a cancel cut it short).
const NOW_TRIES: usize = 2;
/// How many attempts of a wait that failed that way are made again at once; after them,
/// each waits a little longer first (up to [`MAX_BACKOFF`]), so that a server that cancels
/// everything is not hammered for the whole of a long wait.
const RETRIES_AT_ONCE: usize = 3;
/// The longest pause before another attempt of a wait.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// How attempts that failed in a way another may not are made again.
#[derive(Clone, Copy)]
enum Retry {
    /// At most this many attempts in all: a try at once.
    Times(usize),
    /// Until the deadline (`None`: forever): a wait, which only its timeout ends. A cancel
    /// is not the caller's timeout (an operator's script, a pooler's or role's timeout may
    /// cancel any statement), nor is a session that ended while time is left.
    Until(Option<Instant>),
}

/// One acquire: which lock, for which locker.
pub(crate) struct Request<'a> {
    pub(crate) core: &'a Core,
    /// The full name, `"app.name"`.
    pub(crate) name: &'a Arc<str>,
    pub(crate) key: i64,
    pub(crate) mode: Mode,
    /// The lock's own timeout, or the locker's default: what bounds a try's wait for a
    /// session, and for an unlock of this process in flight.
    pub(crate) timeout: Duration,
    /// The sequence that mints a fenced lock's token.
    pub(crate) fence: Option<&'a Arc<str>>,
}

/// What a try at once found.
enum Now {
    Taken(SessionLock),
    Busy,
    /// No session could be had before the deadline.
    NoSession,
}

impl Request<'_> {
    /// Takes the lock within `wait`, for a caller that began at `started`; `Ok(None)`: busy.
    pub(crate) async fn acquire(
        &self,
        wait: Wait,
        started: Instant,
    ) -> Result<Option<Owned>, Error> {
        // Queue behind this process's other callers for the same lock before taking a
        // session: only the first in line goes to the database.
        let entered = self
            .core
            .turns
            .enter(self.key, self.mode, wait, self.timeout);
        let Some((turn, parked)) = entered.await else {
            self.trace_busy(started);
            return Ok(None);
        };
        let fenced = self.fence.is_some();
        let (lock, chain) = match take_over(parked, self.mode, fenced).await {
            Some(parked) => {
                tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), handoffs = parked.chain.handed, "pals: lock handed over in process");
                (parked.lock, parked.chain)
            }
            None => match self.in_database(wait).await? {
                Some(lock) => {
                    tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock acquired");
                    (lock, Chain::granted())
                }
                None => {
                    self.trace_busy(started);
                    return Ok(None);
                }
            },
        };
        Ok(Some(Owned {
            lock,
            turn,
            chain,
            after_release: None,
        }))
    }

    /// Takes the lock in the database: at once on a shared session, else (if `wait`
    /// allows) waiting on a session of its own. `Ok(None)`: busy.
    async fn in_database(&self, wait: Wait) -> Result<Option<SessionLock>, Error> {
        // Waiting for a session, and opening one, is bounded by the wait, and for a try by
        // the lock's timeout; except opening one for a try with a zero timeout (its
        // deadline is now): a try needs a connection to try on, so the connect timeout
        // bounds that.
        let (session_deadline, open_by) = match wait {
            Wait::Never => {
                let deadline = Wait::of_timeout(self.timeout).deadline();
                (deadline, deadline.filter(|_| !self.timeout.is_zero()))
            }
            other => (other.deadline(), other.deadline()),
        };
        // First at once, on a shared session: one round trip when the lock is free.
        let now_retry = match wait {
            Wait::Never => Retry::Times(NOW_TRIES),
            other => Retry::Until(other.deadline()),
        };
        let now = self.retrying(now_retry, || self.now(session_deadline, open_by));
        match now.await?.unwrap_or(Now::NoSession) {
            Now::Taken(lock) => Ok(Some(lock)),
            // Busy: wait for it on a session of its own.
            Now::Busy if wait != Wait::Never => {
                let waits = self.retrying(Retry::Until(wait.deadline()), || self.wait_once(wait));
                Ok(waits.await?.flatten())
            }
            Now::Busy | Now::NoSession => Ok(None),
        }
    }

    /// What the pool is asked for; a new session may take until `open_by` to open
    /// (`None`: the connect timeout).
    fn want(&self, open_by: Option<Instant>) -> Want<'_> {
        Want {
            key: self.key,
            mode: self.mode,
            name: self.name,
            open_by,
            fence: self.fence,
        }
    }

    /// The try statement on a shared session, waiting for one until `deadline` (and for a
    /// new one to open until `open_by`).
    async fn now(
        &self,
        deadline: Option<Instant>,
        open_by: Option<Instant>,
    ) -> Result<Now, Failure> {
        let pool = &self.core.pool;
        let ticket = pool
            .for_now(self.want(open_by), deadline)
            .await
            .map_err(Failure::no_session)?;
        let Some(ticket) = ticket else {
            return Ok(Now::NoSession);
        };
        Ok(match ticket.try_lock().await? {
            Some(lock) => Now::Taken(lock),
            None => Now::Busy,
        })
    }

    /// One wait for the lock, on a session of its own. `Ok(None)`: busy until the end.
    ///
    /// When no session is free for a wait (every one carries locks), the lock is tried
    /// again at once on a shared one, backing off up to 50 ms, until a session frees or
    /// time runs out; retryable failures of those tries count as busy, others end the acquire.
    async fn wait_once(&self, wait: Wait) -> Result<Option<SessionLock>, Failure> {
        let deadline = wait.deadline();
        let mut poll_interval = Duration::from_millis(1);
        let ticket = loop {
            let soon = Instant::now() + poll_interval;
            let pick_by = deadline.map_or(soon, |d| d.min(soon));
            let pool = &self.core.pool;
            let ticket = pool
                .for_wait(self.want(deadline), Some(pick_by))
                .await
                .map_err(Failure::no_session)?;
            if let Some(ticket) = ticket {
                break ticket;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            poll_interval = (poll_interval * 2).min(Duration::from_millis(50));
            match self.now(deadline, deadline).await {
                Ok(Now::Taken(lock)) => return Ok(Some(lock)),
                Ok(Now::Busy | Now::NoSession) => {}
                Err(failure) if failure.retryable => {}
                Err(failure) => return Err(failure),
            }
        };
        // The server must answer by the end of the wait plus the connect timeout: a dead
        // connection must not hang the caller.
        let answer_by = deadline.and_then(|d| d.checked_add(self.core.connect_timeout));
        match wait.lock_timeout_ms() {
            Some(millis) => ticket.wait_lock(millis, answer_by).await,
            // No time left: one more try.
            None => ticket.try_lock().await,
        }
    }

    fn trace_busy(&self, started: Instant) {
        tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock busy");
    }

    /// Runs `attempt` until it succeeds, fails for good, or `retry` gives up: then the
    /// last error, or `Ok(None)` if a wait's time ran out on a cancel (its timeout, not an
    /// error). Each failed attempt has settled what its session holds before it returns.
    async fn retrying<T, F>(
        &self,
        retry: Retry,
        mut attempt: impl FnMut() -> F,
    ) -> Result<Option<T>, Error>
    where
        F: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut failed = 0;
        let mut backoff = Duration::from_millis(1);
        loop {
            let failure = match attempt().await {
                Ok(done) => return Ok(Some(done)),
                Err(failure) if !failure.retryable => return Err(failure.error),
                Err(failure) => failure,
            };
            failed += 1;
            match retry {
                Retry::Times(tries) if failed >= tries => return Err(failure.error),
                Retry::Times(_) => {}
                // Out of time: a cancel is the timeout's answer; anything else the error's.
                Retry::Until(Some(deadline)) if Instant::now() >= deadline => {
                    if failure.error.is_cancel() {
                        return Ok(None);
                    }
                    return Err(failure.error);
                }
                Retry::Until(deadline) if failed > RETRIES_AT_ONCE => {
                    let soon = Instant::now() + backoff;
                    let pause = deadline.map_or(soon, |deadline| deadline.min(soon));
                    sleep_until(self.core.rt(), pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Retry::Until(_) => {}
            }
            tracing::debug!(lock = %self.name, key = self.key, error = %failure.error, failed, "pals: lock statement failed; trying again");
        }
    }
}
