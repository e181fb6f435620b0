//! [`LockGuard`]: a held lock that is always released.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::core::Core;
use crate::error::Error;
use crate::future::{poll_once, unless};
use crate::key::Mode;
use crate::metrics::Primitive;
use crate::on_drop::OnDrop;
use crate::release::{AfterRelease, Owned};
use crate::runtime::block_on;

/// A held lock. Release it with [`release`](LockGuard::release); if it is dropped instead
/// (scope end, `?`, panic, cancellation), the lock is released promptly in the background.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = pals_devdb::db_url().unwrap();
/// let locker = pals::Locker::new("doc-guard", &url)?;
/// {
///     let guard = locker.lock("nightly-report").acquire().await?;
///     assert_eq!(guard.name(), "doc-guard.nightly-report");
/// } // dropped: released in the background
/// let guard = locker.lock("nightly-report").acquire().await?;
/// assert!(guard.release().await?);
/// # Ok(()) }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    owned: Option<Owned>,
    name: Arc<str>,
    key: i64,
    mode: Mode,
    /// The fencing token minted with the grant (a fenced lock's).
    token: Option<u64>,
    acquired_at: Instant,
    /// Reads `true` once the lock's session is known to be over.
    dead: watch::Receiver<bool>,
    core: Arc<Core>,
    primitive: Primitive,
    /// The name its figures go under, if not its own: its semaphore's.
    metric_name: Option<Arc<str>>,
}

impl LockGuard {
    /// The guard of `owned`, the lock `name` (`key`, in `mode`) of the locker whose core
    /// is `core`, counted as `primitive`.
    pub(crate) fn new(
        owned: Owned,
        core: &Arc<Core>,
        name: &Arc<str>,
        key: i64,
        mode: Mode,
        primitive: Primitive,
    ) -> LockGuard {
        LockGuard {
            key,
            mode,
            token: owned.lock.token,
            acquired_at: Instant::now(),
            dead: owned.lock.dead(),
            core: Arc::clone(core),
            primitive,
            metric_name: None,
            owned: Some(owned),
            name: Arc::clone(name),
        }
    }

    /// False once the lock is known to be lost: its database session ended (the server
    /// closed it, a restart, `pg_terminate_backend`), stopped answering the heartbeat, or
    /// was closed by pals because what it holds could not be confirmed after a statement
    /// with an unknown outcome (see [`release`](LockGuard::release)). Cheap: no round trip.
    ///
    /// PostgreSQL frees a lock when its session ends, and another holder may take it at
    /// once: work guarded by a lost lock is no longer exclusive.
    pub fn is_held(&self) -> bool {
        !*self.dead.borrow()
    }

    /// Completes when the lock is known to be lost (see [`is_held`](LockGuard::is_held)),
    /// once the loss has been reported (logged, or printed to stderr when no `tracing`
    /// subscriber is installed): a program may exit as soon as it hears.
    ///
    /// Cancel-safe and cheap to poll: made for `select!` beside the guarded work. The
    /// future does not borrow the guard.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// # async fn do_the_work() {}
    /// let locker = pals::Locker::new("doc-lost", &url)?;
    /// let guard = locker.lock("leader").acquire().await?;
    /// tokio::select! {
    ///     _ = guard.lost() => eprintln!("lost the lock: stop, another replica may take over"),
    ///     _ = do_the_work() => {}
    /// }
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut dead = self.dead.clone();
        async move {
            // An error means the connection's state is gone with it: lost too.
            let _ = dead.wait_for(|dead| *dead).await;
        }
    }

    /// The fencing token of this grant: `Some` for a [`fenced`](crate::Lock::fenced) lock, a
    /// number strictly greater than that of every earlier holder of the lock; `None` for
    /// a lock that is not fenced. Pass it with every write to what the lock protects, and
    /// have that refuse a token lower than the highest it has seen (see the
    /// `fenced_writes` example).
    pub fn fence(&self) -> Option<u64> {
        self.token
    }

    /// Counts this guard's figures under `name` (a semaphore's, for its permits).
    pub(crate) fn count_as(&mut self, name: &Arc<str>) {
        self.metric_name = Some(Arc::clone(name));
    }

    /// Has the unlock `NOTIFY` other processes (a semaphore permit's `payload`).
    pub(crate) fn notify_on_release(&mut self, payload: Arc<str>) {
        if let Some(owned) = &mut self.owned {
            owned.lock.notify = Some(payload);
        }
    }

    /// Runs `after` once the guard lets go of its lock (see `Owned::after_release`).
    pub(crate) fn after_release(&mut self, after: AfterRelease) {
        if let Some(owned) = &mut self.owned {
            owned.after_release = Some(after);
        }
    }

    /// Reads `true` once the lock is known to be lost.
    pub(crate) fn dead_watch(&self) -> watch::Receiver<bool> {
        self.dead.clone()
    }

    /// The PostgreSQL backend pid of the session that holds the lock: its `pid` in
    /// `pg_locks` and `pg_stat_activity` (what `pg_terminate_backend` takes). `None` once
    /// released.
    pub fn backend_pid(&self) -> Option<i32> {
        self.owned.as_ref().map(|owned| owned.lock.pid())
    }

    /// Runs `body` unless the lock is found lost first: then `None`, and `body` is dropped
    /// where it stands. The body is polled first: work that finished as the loss was found
    /// stands.
    pub(crate) async fn unless_lost<F: Future>(&self, body: F) -> Option<F::Output> {
        unless(body, self.lost()).await
    }

    /// How long the lock has been held.
    pub fn held_for(&self) -> Duration {
        self.acquired_at.elapsed()
    }

    /// The full lock name, `"app.name"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PostgreSQL advisory-lock key.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// True if this is a shared (reader) lock.
    pub fn is_shared(&self) -> bool {
        self.mode == Mode::Shared
    }

    /// Releases the lock and waits for the database to confirm it; or, when another caller
    /// of this locker waits for the same lock, hands it over to that caller in memory (see
    /// [`LockerBuilder::handoff_limit`](crate::LockerBuilder::handoff_limit)).
    ///
    /// - `Ok(true)`: it was held until now, and is released; or it was handed over, with
    ///   no round trip: its session was not known to be lost (a session lost and not yet
    ///   noticed is found by the heartbeat, and the new holder's guard reports it).
    /// - `Ok(false)`: it was no longer held: it was lost with its session (see
    ///   [`is_held`](LockGuard::is_held)), and another holder may have had it meanwhile.
    /// - `Err`: the server did not confirm the release (it did not answer, or the unlock
    ///   failed and what the session holds could not be read back). The session is then
    ///   closed, which frees the lock on the server: either way, no lock is left held for
    ///   nobody.
    ///
    /// An unlock whose outcome is unknown (cut short by a query cancel, which PostgreSQL
    /// may act on after the lock was released) is settled before this returns: pals asks
    /// the server what the session holds and unlocks what no guard owns, then answers
    /// `Ok(true)`. Dropping this future mid-way loses nothing either: the same check runs
    /// in the background.
    pub async fn release(mut self) -> Result<bool, Error> {
        let Some(owned) = self.owned.take() else {
            return Ok(false); // never: a guard owns its lock until released
        };
        // Counted once the release is done, or if this future is dropped mid-way (the
        // release then goes on in the background).
        let this = &self;
        let _ended = OnDrop::new(|| this.count_released());
        let result = owned.release(self.core.handoff, false).await;
        tracing::debug!(lock = %self.name, key = self.key, held = ?self.held_for(), ?result, "pals: lock released");
        result
    }

    /// The shared parts of the guard's locker.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Tells the meter that this guard's hold ended.
    fn count_released(&self) {
        let name = self.metric_name.as_deref().unwrap_or(&self.name);
        let meter = &self.core.meter;
        meter.released(self.primitive, name, self.held_for());
    }

    /// Keeps the lock until `deadline`, then releases it in the background; returns at once.
    ///
    /// For work that must not run again too soon (ShedLock's `lockAtLeastFor`): a short job
    /// that finishes early keeps the lock, so a replica whose scheduler fires a moment later
    /// finds it busy.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// let locker = pals::Locker::new("doc-release-at", &url)?;
    /// let guard = locker.lock("report").acquire().await?;
    /// guard.release_at(Instant::now() + Duration::from_millis(200));
    /// assert!(locker.lock("report").try_acquire().await?.is_none()); // still held
    /// # Ok(()) }
    /// ```
    pub fn release_at(mut self, deadline: Instant) {
        let Some(release) = self.background_release(false) else {
            return;
        };
        self.core.rt().spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            release.await;
        });
    }

    /// The release of a guard nobody awaits, to run on the library's runtime, counted
    /// among the background releases, and logged. `park`: see `Owned::release`.
    fn background_release(
        &mut self,
        park: bool,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let owned = self.owned.take()?;
        let (name, key, acquired_at) = (self.name.clone(), self.key, self.acquired_at);
        let (core, primitive, metric_name) = (
            Arc::clone(&self.core),
            self.primitive,
            self.metric_name.clone(),
        );
        let counted = core.background.count();
        Some(async move {
            let _counted = counted; // until the release is done (or dropped)
            let held_for = acquired_at.elapsed();
            match owned.release(core.handoff, park).await {
                Ok(true) => {
                    tracing::debug!(lock = %name, key, held = ?held_for, "pals: lock released in the background")
                }
                Ok(false) => {
                    tracing::warn!(lock = %name, key, held = ?held_for, "pals: lock was no longer held at release")
                }
                Err(error) => {
                    tracing::warn!(lock = %name, key, held = ?held_for, %error, "pals: background release failed; its session was closed")
                }
            }
            let name = metric_name.as_deref().unwrap_or(&name);
            core.meter.released(primitive, name, held_for);
        })
    }

    /// [`release`](LockGuard::release) for synchronous code: blocks the calling thread.
    pub fn blocking_release(self) -> Result<bool, Error> {
        block_on(self.release())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Released on the library's runtime: no runtime is needed on this thread, and this
        // works during a panic's unwinding too.
        let Some(release) = self.background_release(true) else {
            return;
        };
        let mut release = Box::pin(release);
        // One poll here hands the lock over to a caller of this process that waits for it,
        // or parks it for one that comes at once; else it sends the unlock (it only queues
        // the request for the connection). The runtime does the rest.
        if poll_once(release.as_mut()).is_pending() {
            self.core.rt().spawn(release);
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("fence", &self.token)
            .finish()
    }
}
