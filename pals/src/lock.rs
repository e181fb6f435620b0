//! [`Lock`]: one named lock, and how it is acquired.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use crate::guard::{Held, LockGuard};
use crate::pool::{Session, SessionState};
use crate::queue::Wait;
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
        // connection: only the first in line waits in the database.
        let Some(permit) = inner
            .queues
            .enter(self.key, self.shared, wait, &inner.rt)
            .await
        else {
            return Ok(None);
        };
        // Waiting for a free connection is bounded by the lock's timeout even for a try.
        let connection_wait = match wait {
            Wait::Never => wait_for(self.acquire_timeout_value()),
            other => other,
        };
        // A connection the server closed while it sat idle fails its first statement;
        // one more attempt then runs on a fresh connection.
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let Some(mut session) = inner.pool.checkout(connection_wait.deadline()).await? else {
                return Ok(None);
            };
            // The server must answer by the end of the wait plus the connect timeout; a
            // dead connection must not hang the caller (the session is then cancelled and
            // closed, since it is still marked busy).
            let answer_by = match wait {
                Wait::Forever => None,
                Wait::Never => Some(Instant::now() + inner.connect_timeout),
                Wait::Until(deadline) => Some(deadline + inner.connect_timeout),
            };
            let locked = match answer_by {
                None => self.lock_on(&mut session, wait).await,
                Some(by) => runtime::until(&inner.rt, by, self.lock_on(&mut session, wait))
                    .await
                    .ok_or_else(|| Error::no_answer("the lock statement", inner.connect_timeout))?,
            };
            match locked {
                Ok(true) => {
                    tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock acquired");
                    session.watch().hold(self.name.clone(), self.key);
                    let held = Held::new(
                        session,
                        permit,
                        self.key,
                        self.shared,
                        inner.rt.clone(),
                        inner.connect_timeout,
                    );
                    return Ok(Some(LockGuard::new(held, self.name.clone())));
                }
                Ok(false) => {
                    tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock busy");
                    return Ok(None);
                }
                Err(error) if attempts_left > 0 && error.is_closed() => {
                    tracing::debug!(%error, "pals: pooled connection was closed; retrying on a new one");
                }
                Err(error) => return Err(Error::Database(error)),
            }
        }
    }

    /// Takes the lock on `session`. `Ok(false)`: busy until the wait ended.
    async fn lock_on(
        &self,
        session: &mut Session,
        wait: Wait,
    ) -> Result<bool, tokio_postgres::Error> {
        let shared = if self.shared { "_shared" } else { "" };
        let key = self.key;
        // One round trip either way. SET LOCAL lasts only for the implicit transaction of
        // this multi-statement query, so the pooled session keeps its own settings, and the
        // session-level advisory lock outlives that transaction. statement_timeout is lifted
        // so that a server or role default cannot cut the wait short with another error.
        let lock_timeout = wait_millis(wait);
        let sql = match lock_timeout {
            None => format!("SELECT pg_try_advisory_lock{shared}({key})"),
            Some(millis) => format!(
                "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {millis}; \
                 SELECT pg_advisory_lock{shared}({key})"
            ),
        };
        // Until the answer is in, the server may be waiting for (or have granted) the lock:
        // if this future is dropped, the session is cancelled and closed, never reused.
        session.set_state(SessionState::Busy);
        match session.client().simple_query(&sql).await {
            Ok(messages) => {
                let acquired = match lock_timeout {
                    None => parse_bool(&messages),
                    Some(_) => true,
                };
                session.set_state(if acquired {
                    SessionState::MayHoldLock
                } else {
                    SessionState::Clean
                });
                Ok(acquired)
            }
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                // lock_timeout fired, but the grant can race the timeout: the session may
                // hold the lock after all. Release whatever it holds before it is reused.
                session.set_state(SessionState::MayHoldLock);
                session
                    .client()
                    .simple_query("SELECT pg_advisory_unlock_all()")
                    .await?;
                session.set_state(SessionState::Clean);
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
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
            let millis = left.as_micros().div_ceil(1000) as u64;
            (left >= Duration::from_millis(1)).then_some(millis)
        }
    }
}

fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

pub(crate) fn parse_bool(messages: &[SimpleQueryMessage]) -> bool {
    first_value(messages) == Some("t")
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
