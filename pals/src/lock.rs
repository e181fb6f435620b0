//! [`Lock`]: one named lock, and how it is acquired.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::guard::{Held, LockGuard};
use crate::pool::{Carrier, Dedicated, InFlight};
use crate::queue::{InProcessPermit, Wait};
use crate::statement::{self, Detached};
use crate::{runtime, Error, Locker};

/// One named lock of a [`Locker`]: a handle that takes [`LockGuard`]s.
///
/// Made by [`Locker::lock`]; cheap to clone. An exclusive lock has at most one holder in the
/// whole fleet; a [`shared`](Lock::shared) lock has any number of shared holders and no
/// exclusive one.
///
/// ```
/// # use std::time::Duration;
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
/// let locker = pals::Locker::new("doc-lock", &url)?;
/// let lock1 = locker.lock("my-lock");
/// let lock2 = locker.lock("my-lock");
///
/// let guard = lock1.acquire().await?;
/// assert!(lock2.try_acquire().await?.is_none());
/// assert!(lock2.acquire_timeout(Duration::from_millis(300)).await?.is_none());
/// assert!(guard.release().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lock {
    locker: Locker,
    name: Arc<str>,
    key: i64,
    shared: bool,
    timeout: Option<Duration>,
}

impl Lock {
    pub(crate) fn new(locker: Locker, name: Arc<str>, key: i64) -> Lock {
        Lock {
            locker,
            name,
            key,
            shared: false,
            timeout: None,
        }
    }

    /// This lock in shared (reader) mode: shared holders coexist; an exclusive holder
    /// excludes them all.
    #[must_use]
    pub fn shared(mut self) -> Lock {
        self.shared = true;
        self
    }

    /// This lock with its own acquire timeout instead of the locker's default.
    /// `Duration::ZERO` makes [`acquire`](Lock::acquire) try once; `Duration::MAX` waits forever.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Lock {
        self.timeout = Some(timeout);
        self
    }

    /// The full lock name, `"app.name"` (for [`Locker::lock_key`], the key in decimal).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PostgreSQL advisory-lock key.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// True for a shared (reader) lock.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// How long [`acquire`](Lock::acquire) waits: the lock's own timeout or the locker's default.
    pub fn acquire_timeout_value(&self) -> Duration {
        self.timeout.unwrap_or(self.locker.inner.default_timeout)
    }

    /// The locker this lock belongs to.
    pub fn locker(&self) -> &Locker {
        &self.locker
    }

    /// Acquires the lock, waiting up to its timeout; a busy lock is `Err(Error::Timeout)`.
    ///
    /// Cancel-safe: dropping the future while it waits leaves no lock behind.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        self.acquire_timeout(self.acquire_timeout_value())
            .await?
            .ok_or_else(|| self.timeout_error())
    }

    /// Acquires the lock if it is free now; `Ok(None)` if it is busy. Never waits for the
    /// lock (it may wait, up to the lock's timeout, for a free pool connection).
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        self.acquire_within(Wait::Never).await
    }

    /// Acquires the lock, waiting up to `timeout`; `Ok(None)` if it stayed busy that long.
    /// `Duration::MAX` waits forever.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        self.acquire_within(wait_for(timeout)).await
    }

    /// [`acquire`](Lock::acquire) for synchronous code: blocks the calling thread.
    ///
    /// Works on any thread, with or without a runtime (inside an async task it blocks that
    /// task's worker thread, as any blocking call does).
    pub fn blocking_acquire(&self) -> Result<LockGuard, Error> {
        runtime::block_on(self.acquire())
    }

    /// [`try_acquire`](Lock::try_acquire) for synchronous code.
    pub fn blocking_try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        runtime::block_on(self.try_acquire())
    }

    /// [`acquire_timeout`](Lock::acquire_timeout) for synchronous code.
    pub fn blocking_acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        runtime::block_on(self.acquire_timeout(timeout))
    }

    pub(crate) fn timeout_error(&self) -> Error {
        Error::Timeout {
            name: self.name.to_string(),
        }
    }

    async fn acquire_within(&self, wait: Wait) -> Result<Option<LockGuard>, Error> {
        let started = Instant::now();
        let inner = &self.locker.inner;
        // Queue behind this process's other callers for the same lock before taking a
        // connection: only the first in line goes to the database. This also keeps two
        // guards of one exclusive lock apart, which PostgreSQL would not do on a shared
        // session (its session locks are re-entrant).
        let Some(permit) = inner
            .queues
            .enter(self.key, self.shared, wait, &inner.rt)
            .await
        else {
            self.trace_busy(started);
            return Ok(None);
        };
        // Waiting for a connection is bounded by the lock's timeout even for a try.
        let connection_wait = match wait {
            Wait::Never => wait_for(self.acquire_timeout_value()),
            other => other,
        };
        // First at once, on a shared session: one round trip when the lock is free. A
        // connection the server closed while idle fails its statement; one more attempt
        // then runs on another connection.
        let mut retry = true;
        let carrier = loop {
            match self.try_on_carrier(connection_wait.deadline()).await {
                Ok(Attempt::Acquired(carrier)) => break Some(carrier),
                Ok(Attempt::Busy) => break None,
                Ok(Attempt::NoConnection) => return Ok(None),
                Err(Error::Database(error)) if retry && error.is_closed() => retry = false,
                Err(error) => return Err(error),
            }
        };
        if let Some(carrier) = carrier {
            return Ok(Some(self.guard(carrier, permit, started)));
        }
        if wait == Wait::Never {
            self.trace_busy(started);
            return Ok(None);
        }
        // Busy: wait for it on a session of its own.
        let mut retry = true;
        let mut poll_interval = Duration::from_millis(1);
        loop {
            // Every session may carry locks that were waited for (a session is never taken
            // for a wait while it carries any); then no wait can have one until some are
            // released. Rather than wait for a session, try the lock again at once on a
            // shared one, backing off up to 50 ms, until a session frees or time runs out.
            let deadline = connection_wait.deadline();
            let soon = Instant::now() + poll_interval;
            let Some(mut dedicated) = inner
                .pool
                .dedicated(Some(deadline.map_or(soon, |d| d.min(soon))))
                .await?
            else {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.trace_busy(started);
                    return Ok(None);
                }
                poll_interval = (poll_interval * 2).min(Duration::from_millis(50));
                match self.try_on_carrier(deadline).await? {
                    Attempt::Acquired(carrier) => {
                        return Ok(Some(self.guard(carrier, permit, started)))
                    }
                    Attempt::Busy => continue,
                    Attempt::NoConnection => return Ok(None),
                }
            };
            // The server must answer by the end of the wait plus the connect timeout; a
            // dead connection must not hang the caller (the session is then cancelled and
            // closed, since it is still busy).
            let answer_by = match wait {
                Wait::Forever => None,
                Wait::Never => Instant::now().checked_add(inner.connect_timeout),
                Wait::Until(deadline) => deadline.checked_add(inner.connect_timeout),
            };
            let waited = match answer_by {
                None => self.wait_on(&mut dedicated, wait).await,
                Some(by) => runtime::until(&inner.rt, by, self.wait_on(&mut dedicated, wait))
                    .await
                    .ok_or_else(|| Error::no_answer("the lock statement", inner.connect_timeout))?,
            };
            match waited {
                Ok(true) => {
                    // Counted before it is shared, so it is never taken for another wait.
                    dedicated.carrier().add_lock();
                    let carrier = dedicated.share();
                    return Ok(Some(self.guard(carrier, permit, started)));
                }
                Ok(false) => {
                    self.trace_busy(started);
                    return Ok(None); // the session holds nothing: shared again on drop
                }
                Err(error) => {
                    // Whatever went wrong, the session's state is unknown: close it.
                    dedicated.close();
                    if !(retry && error.is_closed()) {
                        return Err(Error::Database(error));
                    }
                    retry = false;
                }
            }
        }
    }

    /// `pg_try_advisory_lock` on a shared session. If this future is dropped mid-way, the
    /// statement still completes, and a lock it took for nobody is given back.
    async fn try_on_carrier(&self, deadline: Option<Instant>) -> Result<Attempt, Error> {
        let inner = &self.locker.inner;
        let Some(in_flight) = inner.pool.carrier(deadline).await? else {
            return Ok(Attempt::NoConnection);
        };
        let carrier = Arc::clone(in_flight.carrier());
        let (key, shared) = (self.key, self.shared);
        let statement = Detached::new(&inner.rt, async move {
            let answer = in_flight.conn().try_lock(key, shared).await;
            if matches!(answer, Ok(true)) {
                // Counted before the statement stops counting: never idle in between.
                in_flight.carrier().add_lock();
            }
            answer
        })
        .if_abandoned({
            let carrier = Arc::clone(&carrier);
            move |answer| {
                if matches!(answer, Ok(true)) {
                    let in_flight = InFlight::new(Arc::clone(&carrier));
                    tokio::spawn(async move {
                        let _ = in_flight.conn().unlock(key, shared).await;
                        drop(in_flight);
                        carrier.remove_lock();
                    });
                }
            }
        });
        let answer = carrier
            .answer(
                &inner.rt,
                inner.connect_timeout,
                "the lock statement",
                statement,
            )
            .await?;
        if answer.map_err(Error::Database)? {
            Ok(Attempt::Acquired(carrier))
        } else {
            Ok(Attempt::Busy)
        }
    }

    /// Waits for the lock on a dedicated session. `Ok(false)`: busy until the wait ended.
    async fn wait_on(
        &self,
        dedicated: &mut Dedicated,
        wait: Wait,
    ) -> Result<bool, tokio_postgres::Error> {
        let carrier = Arc::clone(dedicated.carrier());
        let Some(millis) = wait_millis(wait) else {
            // Less than a millisecond left: one more try.
            return dedicated
                .run(carrier.conn().try_lock(self.key, self.shared))
                .await;
        };
        let sql = statement::wait_lock(self.key, self.shared, millis);
        match dedicated.run(carrier.client().simple_query(&sql)).await {
            Ok(_) => Ok(true),
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                // lock_timeout fired, but the grant can race the timeout: the session may
                // hold the lock after all. It holds nothing else: clear it before reuse.
                let clear = carrier
                    .client()
                    .simple_query("SELECT pg_advisory_unlock_all()");
                dedicated.run(clear).await?;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn guard(&self, carrier: Arc<Carrier>, permit: InProcessPermit, started: Instant) -> LockGuard {
        let inner = &self.locker.inner;
        tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock acquired");
        let id = next_guard_id();
        carrier.watch().hold(id, self.name.clone(), self.key);
        let held = Held {
            carrier,
            permit,
            id,
            key: self.key,
            shared: self.shared,
            rt: inner.rt.clone(),
            answer_within: inner.connect_timeout,
        };
        LockGuard::new(held, self.name.clone())
    }

    fn trace_busy(&self, started: Instant) {
        tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock busy");
    }
}

/// What an attempt on a shared session found.
enum Attempt {
    Acquired(Arc<Carrier>),
    Busy,
    /// No connection could be had before the deadline.
    NoConnection,
}

fn next_guard_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("shared", &self.shared)
            .field("timeout", &self.acquire_timeout_value())
            .finish()
    }
}

/// The wait that a timeout allows, starting now.
fn wait_for(timeout: Duration) -> Wait {
    if timeout.is_zero() {
        return Wait::Never;
    }
    // PostgreSQL's lock_timeout is an int4 of milliseconds; longer waits are "forever".
    if timeout.as_millis() > i32::MAX as u128 {
        return Wait::Forever;
    }
    match Instant::now().checked_add(timeout) {
        Some(deadline) => Wait::Until(deadline),
        None => Wait::Forever,
    }
}

/// The `lock_timeout` for the database wait: `None` to try once, `Some(0)` for no limit.
fn wait_millis(wait: Wait) -> Option<u64> {
    match wait {
        Wait::Never => None,
        Wait::Forever => Some(0),
        Wait::Until(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up so that the whole timeout is waited; under a millisecond, try once.
            let millis = (left.as_micros().div_ceil(1000) as u64).min(i32::MAX as u64);
            (left >= Duration::from_millis(1)).then_some(millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_map_to_waits() {
        assert_eq!(wait_for(Duration::ZERO), Wait::Never);
        assert_eq!(wait_for(Duration::MAX), Wait::Forever);
        assert_eq!(wait_for(Duration::from_secs(30 * 24 * 3600)), Wait::Forever);
        assert!(matches!(
            wait_for(Duration::from_millis(300)),
            Wait::Until(_)
        ));
    }

    #[test]
    fn database_wait_rounds_up() {
        assert_eq!(wait_millis(Wait::Never), None);
        assert_eq!(wait_millis(Wait::Forever), Some(0));
        let millis = wait_millis(wait_for(Duration::from_millis(300))).unwrap();
        assert!((299..=300).contains(&millis), "{millis}");
        assert_eq!(wait_millis(Wait::Until(Instant::now())), None);
    }
}
