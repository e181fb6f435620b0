//! [`Lock`]: one named lock, and how it is acquired.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::guard::{Held, LockGuard};
use crate::metrics::Kind;
use crate::pool::Want;
use crate::queue::{Chain, Parked, Wait};
use crate::session::{Failure, Hold};
use crate::{runtime, Error, Locker};

/// A lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One holder at a time: `pg_advisory_lock` and friends.
    Exclusive,
    /// Any number of shared holders, and no exclusive one: `pg_advisory_lock_shared` and
    /// friends.
    Shared,
}

impl Mode {
    /// 0 for exclusive, 1 for shared: an index into per-mode tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Mode::Exclusive => 0,
            Mode::Shared => 1,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        })
    }
}

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
    mode: Mode,
    timeout: Option<Duration>,
    /// Each grant mints a fencing token.
    fenced: bool,
    /// What its figures count as, and whether its acquires are counted here (a semaphore
    /// counts its own, once for all the permits it tries).
    kind: Kind,
    count_acquires: bool,
    /// Made with an empty name: every acquire fails, saying so.
    unnamed: bool,
}

impl Lock {
    pub(crate) fn new(locker: Locker, name: Arc<str>, key: i64, unnamed: bool) -> Lock {
        Lock {
            locker,
            name,
            key,
            mode: Mode::Exclusive,
            timeout: None,
            fenced: false,
            kind: Kind::Lock,
            count_acquires: true,
            unnamed,
        }
    }

    /// This lock in shared (reader) mode: shared holders coexist; an exclusive holder
    /// excludes them all.
    #[must_use]
    pub fn shared(mut self) -> Lock {
        self.mode = Mode::Shared;
        self
    }

    /// This lock with a fencing token: every grant mints a number, read with
    /// [`LockGuard::fence`], that is strictly greater than the token of every earlier
    /// holder of the same lock, in any process, through any locker, and across restarts of
    /// the server. Hand it to what the lock protects, which remembers the highest token it
    /// has seen and refuses a smaller one: a holder that stalled (a long pause, a cut
    /// network) and lost its lock meanwhile cannot act on stale authority
    /// (Kleppmann, "How to do distributed locking").
    ///
    /// **How:** the token is `nextval` of the sequence `pals_fence` (in the locker's
    /// [`schema`](crate::LockerBuilder::schema), `public` by default), drawn in the same
    /// statement as the grant and only once the lock is granted: no extra round trip;
    /// measured, a fenced try-and-release cycle costs about 1.1x a plain one (9 to 16 µs
    /// more on loopback, benchmark row 1f). The holder before
    /// drew its token before it released, so the order follows the grants. A sequence
    /// never goes back: not on rollback, not on restart, not after a crash (its values are
    /// written ahead to the WAL), as long as `synchronous_commit` is on (the default) and
    /// nobody resets it (`ALTER SEQUENCE ... RESTART`, or a failover to a replica that
    /// lagged). One sequence serves every lock, so tokens of one lock grow by leaps.
    ///
    /// **The sequence** is created on the first fenced acquire of a locker if it is
    /// missing (logged at info level), which needs `CREATE` on the schema. For a role
    /// without it, an admin creates it once: `CREATE SEQUENCE public.pals_fence AS bigint;
    /// GRANT USAGE ON SEQUENCE public.pals_fence TO app_role;` Without either, the acquire
    /// fails with [`Error::InvalidConfig`] saying so.
    ///
    /// Python PALs has no fencing; its holders exclude fenced Rust holders all the same.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
    /// let locker = pals::Locker::new("doc-fenced", &url)?;
    /// let lock = locker.lock("ledger").fenced();
    /// let first = lock.acquire().await?;
    /// let token = first.fence().expect("a fenced lock has a token");
    /// first.release().await?;
    /// let second = lock.acquire().await?;
    /// assert!(second.fence().unwrap() > token);
    /// assert!(locker.lock("ledger").try_acquire().await?.is_none()); // held: `second`
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn fenced(mut self) -> Lock {
        self.fenced = true;
        self
    }

    /// This lock counted (with the `metrics` feature) as `kind`; its acquires counted here
    /// only if `count_acquires`.
    pub(crate) fn counted_as(mut self, kind: Kind, count_acquires: bool) -> Lock {
        self.kind = kind;
        self.count_acquires = count_acquires;
        self
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// True for a lock whose grants mint fencing tokens (see [`fenced`](Lock::fenced)).
    pub fn is_fenced(&self) -> bool {
        self.fenced
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

    /// The name as the lock shares it (with its guards, without a copy).
    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The PostgreSQL advisory-lock key.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// True for a shared (reader) lock.
    pub fn is_shared(&self) -> bool {
        self.mode == Mode::Shared
    }

    /// Exclusive, or shared (see [`shared`](Lock::shared)).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How long [`acquire`](Lock::acquire) waits: the lock's own timeout or the locker's default.
    pub fn acquire_timeout_value(&self) -> Duration {
        self.timeout.unwrap_or(self.locker.default_timeout())
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

    /// [`take_within`](Lock::take_within), counted: taken, busy or failed.
    async fn acquire_within(&self, wait: Wait) -> Result<Option<LockGuard>, Error> {
        let started = Instant::now();
        let result = self.take_within(wait, started).await;
        if self.count_acquires {
            self.locker
                .meter()
                .count(self.kind, &self.name, started, &result);
        }
        result
    }

    /// Takes the lock, for a caller that began at `started`.
    async fn take_within(&self, wait: Wait, started: Instant) -> Result<Option<LockGuard>, Error> {
        if self.unnamed {
            return Err(Error::InvalidConfig(format!(
                "a lock of app \"{}\" has an empty name: give each lock a name (with \
                 #[pals::exclusive], check the arguments its name = \"...\" formats in)",
                self.locker.app()
            )));
        }
        let locker = &self.locker;
        let fence = match self.fenced {
            true => Some(Arc::clone(locker.fence_sequence().await?)),
            false => None,
        };
        let fence = fence.as_ref();
        // Queue behind this process's other callers for the same lock before taking a
        // session: only the first in line goes to the database.
        // A try that finds a release of this process under way waits for it, within the
        // lock's timeout (the bound of a try's wait for a session too).
        let settle_within = self.acquire_timeout_value();
        let entered = locker
            .queues()
            .enter(self.key, self.mode, wait, settle_within);
        let Some((permit, parked)) = entered.await else {
            self.trace_busy(started);
            return Ok(None);
        };
        let (hold, chain) = match self.take_over(parked).await.map(|parked| *parked) {
            Some(Parked { hold, chain }) => {
                tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), handoffs = chain.handed(), "pals: lock handed over in process");
                (hold, chain)
            }
            None => match self.take_from_database(wait, fence).await? {
                Some(hold) => {
                    tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock acquired");
                    (hold, Chain::granted())
                }
                None => {
                    self.trace_busy(started);
                    return Ok(None);
                }
            },
        };
        let held = Held {
            hold,
            permit,
            after_release: None,
            chain,
        };
        Ok(Some(LockGuard::new(held, self)))
    }

    /// The lock its last holder in this process handed over with the turn, if this lock
    /// can use it; one it cannot (shared, or fenced: its grant needs a token) is unlocked
    /// first, and one lost with its session is dropped.
    async fn take_over(&self, parked: Option<Box<Parked>>) -> Option<Box<Parked>> {
        let parked = parked?;
        if parked.hold.is_lost() {
            return None;
        }
        if self.mode == Mode::Exclusive && !self.fenced {
            return Some(parked);
        }
        if let Err(error) = parked.hold.release().await {
            tracing::warn!(lock = %self.name, key = self.key, %error, "pals: unlocking a handed-over lock failed; its session was closed");
        }
        None
    }

    /// Takes the lock in the database: at once on a shared session, else (if `wait`
    /// allows) waiting on a session of its own. `Ok(None)`: busy.
    async fn take_from_database(
        &self,
        wait: Wait,
        fence: Option<&Arc<str>>,
    ) -> Result<Option<Hold>, Error> {
        // Waiting for a session, and opening one, is bounded by the wait, and for a try by
        // the lock's timeout; except opening one for a try with a zero timeout (its
        // deadline is now): a try needs a connection to try on, so the connect timeout
        // bounds that.
        let (session_deadline, open_by) = match wait {
            Wait::Never => {
                let timeout = self.acquire_timeout_value();
                let deadline = wait_for(timeout).deadline();
                (deadline, deadline.filter(|_| !timeout.is_zero()))
            }
            other => (other.deadline(), other.deadline()),
        };
        // First at once, on a shared session: one round trip when the lock is free.
        let now = retrying(NOW_TRIES, || {
            self.take_now(session_deadline, open_by, fence)
        })
        .await?;
        match now {
            Now::Taken(hold) => Ok(Some(hold)),
            // Busy: wait for it on a session of its own.
            Now::Busy if wait != Wait::Never => {
                retrying(WAIT_TRIES, || self.wait_once(wait, fence)).await
            }
            Now::Busy | Now::NoSession => Ok(None),
        }
    }

    /// What the pool is asked for; a new session may take until `open_by` to open
    /// (`None`: the connect timeout). `fence`: the sequence of a fenced lock.
    fn want<'a>(&'a self, open_by: Option<Instant>, fence: Option<&'a Arc<str>>) -> Want<'a> {
        Want {
            key: self.key,
            mode: self.mode,
            name: &self.name,
            open_by,
            fence,
        }
    }

    /// `pg_try_advisory_lock` on a shared session, waiting for one until `deadline` (and
    /// for a new one to open until `open_by`).
    async fn take_now(
        &self,
        deadline: Option<Instant>,
        open_by: Option<Instant>,
        fence: Option<&Arc<str>>,
    ) -> Result<Now, Failure> {
        let pool = self.locker.pool();
        let ticket = pool
            .for_now(self.want(open_by, fence), deadline)
            .await
            .map_err(Failure::fatal)?;
        let Some(ticket) = ticket else {
            return Ok(Now::NoSession);
        };
        Ok(match ticket.try_lock().await? {
            Some(hold) => Now::Taken(hold),
            None => Now::Busy,
        })
    }

    /// One wait for the lock, on a session of its own. `Ok(None)`: busy until the end.
    ///
    /// When no session is free for a wait (every one carries locks), the lock is tried
    /// again at once on a shared one, backing off up to 50 ms, until a session frees or
    /// time runs out; retryable failures of those tries count as busy, others end the acquire.
    async fn wait_once(
        &self,
        wait: Wait,
        fence: Option<&Arc<str>>,
    ) -> Result<Option<Hold>, Failure> {
        let locker = &self.locker;
        let deadline = wait.deadline();
        let mut poll_interval = Duration::from_millis(1);
        let ticket = loop {
            let soon = Instant::now() + poll_interval;
            let pick_by = deadline.map_or(soon, |d| d.min(soon));
            let ticket = locker
                .pool()
                .for_wait(self.want(deadline, fence), Some(pick_by))
                .await
                .map_err(Failure::fatal)?;
            if let Some(ticket) = ticket {
                break ticket;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            poll_interval = (poll_interval * 2).min(Duration::from_millis(50));
            match self.take_now(deadline, deadline, fence).await {
                Ok(Now::Taken(hold)) => return Ok(Some(hold)),
                Ok(Now::Busy | Now::NoSession) => {}
                Err(failure) if failure.retryable => {}
                Err(failure) => return Err(failure),
            }
        };
        // The server must answer by the end of the wait plus the connect timeout: a dead
        // connection must not hang the caller.
        let answer_by = deadline.and_then(|d| d.checked_add(locker.connect_timeout()));
        match wait_millis(wait) {
            Some(millis) => ticket.wait_lock(millis, answer_by).await,
            // Less than a millisecond left: one more try.
            None => ticket.try_lock().await,
        }
    }

    fn trace_busy(&self, started: Instant) {
        tracing::debug!(lock = %self.name, key = self.key, waited = ?started.elapsed(), "pals: lock busy");
    }
}

/// How many times a try at once is made when the first fails in a way another session may
/// not (its session ended, or a cancel cut it short).
const NOW_TRIES: usize = 2;
/// How many waits are begun when one fails that way.
const WAIT_TRIES: usize = 3;

/// Runs `attempt` until it succeeds, fails for good, or has failed `tries` times.
async fn retrying<T, F>(tries: usize, mut attempt: impl FnMut() -> F) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Failure>>,
{
    let mut failed = 0;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(failure) => {
                failed += 1;
                if !failure.retryable || failed >= tries {
                    return Err(failure.error);
                }
                tracing::debug!(error = %failure.error, "pals: lock statement failed; trying again");
            }
        }
    }
}

/// What a try at once found.
enum Now {
    Taken(Hold),
    Busy,
    /// No session could be had before the deadline.
    NoSession,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("timeout", &self.acquire_timeout_value())
            .field("fenced", &self.fenced)
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
        Wait::Until(deadline) => millis_for(deadline.saturating_duration_since(Instant::now())),
    }
}

/// The `lock_timeout` for `left` of a timeout: rounded up so that the whole timeout is
/// waited (never `0`, which would mean no limit); under a millisecond, `None` (try once).
fn millis_for(left: Duration) -> Option<u64> {
    let millis = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as u64;
    (left >= Duration::from_millis(1)).then_some(millis)
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
        assert_eq!(wait_millis(Wait::Until(Instant::now())), None);
        let ms = Duration::from_millis;
        assert_eq!(millis_for(ms(300)), Some(300));
        assert_eq!(millis_for(ms(300) - Duration::from_micros(1)), Some(300));
        assert_eq!(millis_for(ms(299) + Duration::from_nanos(1)), Some(300));
        assert_eq!(millis_for(ms(1)), Some(1));
        assert_eq!(millis_for(ms(1) - Duration::from_nanos(1)), None);
        assert_eq!(millis_for(Duration::ZERO), None);
        assert_eq!(millis_for(ms(u64::MAX / 2)), Some(i32::MAX as u64));
    }
}
