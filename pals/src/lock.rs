//! [`Lock`]: one named lock, a handle that takes guards.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::acquire::Request;
use crate::coordination::Coordination;
use crate::core::Core;
use crate::deadline::Wait;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::key::Mode;
use crate::metrics::Primitive;
use crate::release::Owned;
use crate::runtime::block_on;
use crate::tokens::{backwards_error, report_backwards};

/// One named lock of a [`Locker`](crate::Locker): a handle that takes [`LockGuard`]s.
///
/// Made by [`Locker::lock`](crate::Locker::lock); cheap to clone. An exclusive lock has at most one holder in the
/// whole fleet; a [`shared`](Lock::shared) lock has any number of shared holders and no
/// exclusive one.
///
/// ```
/// # use std::time::Duration;
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = pals_devdb::db_url().unwrap();
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
    core: Arc<Core>,
    coordination: Arc<Coordination>,
    name: Arc<str>,
    key: i64,
    mode: Mode,
    timeout: Option<Duration>,
    /// Each grant mints a fencing token.
    fenced: bool,
    /// What its figures count as, and whether its acquires are counted here (a semaphore
    /// counts its own, once for all the permits it tries).
    primitive: Primitive,
    count_acquires: bool,
    /// Made with an empty name: every acquire fails, saying so.
    unnamed: bool,
}

impl Lock {
    pub(crate) fn new(
        core: &Arc<Core>,
        coordination: &Arc<Coordination>,
        name: Arc<str>,
        key: i64,
        unnamed: bool,
    ) -> Lock {
        Lock {
            core: Arc::clone(core),
            coordination: Arc::clone(coordination),
            name,
            key,
            mode: Mode::Exclusive,
            timeout: None,
            fenced: false,
            primitive: Primitive::Lock,
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
    /// **A sequence locked by hand** (`ALTER SEQUENCE` or `LOCK` left open in another
    /// session) cannot hold up the lock's session for long: `nextval` waits at most half a
    /// heartbeat (500 ms at most), then the acquire fails with the server's lock-timeout
    /// error and the lock, granted meanwhile, is let go. It never answers "busy" for a lock
    /// that nobody holds.
    ///
    /// **A sequence set back** (`setval`, `ALTER SEQUENCE ... RESTART`, a failover to a
    /// replica that lagged) is noticed where it can be: each locker remembers the highest
    /// token it has seen for each of the 10 000 locks it used last, and a grant whose token
    /// is not above it (an exclusive grant: above every token seen; a shared one: above
    /// every exclusive token) is let go and fails with [`Error::FenceWentBackwards`],
    /// logged at error level ("the fence sequence went backwards: was it reset?"). Why not
    /// return the grant with a warning: fencing works only if tokens grow. After a reset,
    /// the store that checks tokens has seen, say, 18 997; the new holder's 2 is refused
    /// there, while a stale holder still carrying 18 996 is let through, the very write
    /// fencing exists to stop. Refusing the grant keeps the two from running at all until
    /// the sequence is moved past every token handed out (the error gives the `setval`).
    /// A process that has seen no token of the lock yet (a new one) cannot notice: keep
    /// other roles from changing the sequence (see
    /// [`LockerBuilder::schema`](crate::LockerBuilder::schema)).
    ///
    /// Python PALs has no fencing; its holders exclude fenced Rust holders all the same.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
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

    /// This lock counted (with the `metrics` feature) as `primitive`; its acquires counted
    /// here only if `count_acquires`.
    pub(crate) fn counted_as(mut self, primitive: Primitive, count_acquires: bool) -> Lock {
        self.primitive = primitive;
        self.count_acquires = count_acquires;
        self
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

    /// The full lock name, `"app.name"` (for [`Locker::lock_key`](crate::Locker::lock_key),
    /// the key in decimal).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock's own timeout, if it was given one (see [`timeout`](Lock::timeout)).
    pub(crate) fn own_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The coordination part of the lock's locker.
    pub(crate) fn coordination(&self) -> &Arc<Coordination> {
        &self.coordination
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

    /// How long [`acquire`](Lock::acquire) waits: the lock's own
    /// [`timeout`](Lock::timeout), or the locker's default.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let locker = pals::Locker::new("my-app-name", "postgresql://localhost/db")?;
    /// assert_eq!(locker.lock("a").effective_timeout(), pals::DEFAULT_TIMEOUT);
    /// let short = locker.lock("a").timeout(Duration::from_millis(300));
    /// assert_eq!(short.effective_timeout(), Duration::from_millis(300));
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.core.default_timeout)
    }

    /// Acquires the lock, waiting up to its timeout; a busy lock is `Err(Error::Timeout)`.
    ///
    /// Cancel-safe: dropping the future while it waits leaves no lock behind.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        self.acquire_timeout(self.effective_timeout())
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
        self.acquire_within(Wait::of_timeout(timeout)).await
    }

    /// [`acquire`](Lock::acquire) for synchronous code: blocks the calling thread.
    ///
    /// Works on any thread, with or without a runtime (inside an async task it blocks that
    /// task's worker thread, as any blocking call does).
    pub fn blocking_acquire(&self) -> Result<LockGuard, Error> {
        block_on(self.acquire())
    }

    /// [`try_acquire`](Lock::try_acquire) for synchronous code.
    pub fn blocking_try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        block_on(self.try_acquire())
    }

    /// [`acquire_timeout`](Lock::acquire_timeout) for synchronous code.
    pub fn blocking_acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        block_on(self.acquire_timeout(timeout))
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
            let meter = &self.core.meter;
            meter.count(self.primitive, &self.name, started, &result);
        }
        result
    }

    /// Takes the lock, for a caller that began at `started`.
    async fn take_within(&self, wait: Wait, started: Instant) -> Result<Option<LockGuard>, Error> {
        if self.unnamed {
            return Err(Error::InvalidConfig(format!(
                "a lock of app \"{}\" has an empty name: give each lock a name (with \
                 #[pals::exclusive], check the arguments its name = \"...\" formats in)",
                self.core.app
            )));
        }
        let fence = match self.fenced {
            true => Some(self.coordination.fence_sequence().await?),
            false => None,
        };
        let request = Request {
            core: &self.core,
            name: &self.name,
            key: self.key,
            mode: self.mode,
            timeout: self.effective_timeout(),
            fence,
        };
        let Some(owned) = request.acquire(wait, started).await? else {
            return Ok(None);
        };
        let owned = self.token_checked(owned, fence).await?;
        let guard = LockGuard::new(
            owned,
            &self.core,
            &self.name,
            self.key,
            self.mode,
            self.primitive,
        );
        Ok(Some(guard))
    }

    /// `owned`, if its fencing token (if any) is above every token this locker has seen
    /// for the lock (see `tokens`); else it is let go, and the error says so.
    async fn token_checked(&self, owned: Owned, fence: Option<&Arc<str>>) -> Result<Owned, Error> {
        let (Some(token), Some(sequence)) = (owned.lock.token, fence) else {
            return Ok(owned);
        };
        let Err(backwards) = self.core.tokens.grant(self.key, self.mode, token) else {
            return Ok(owned);
        };
        report_backwards(&self.name, "a grant", &backwards);
        if let Err(error) = owned.release(self.core.handoff, false).await {
            tracing::warn!(lock = %self.name, %error, "pals: letting go of a grant whose token went backwards failed; its session was closed");
        }
        Err(backwards_error(&self.name, sequence, &backwards))
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("timeout", &self.effective_timeout())
            .field("fenced", &self.fenced)
            .finish()
    }
}
