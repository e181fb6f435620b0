//! [`LockGuard`]: a held lock that is always released.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

use crate::metrics::{Kind, Meter};
use crate::queue::{Chain, HandedOver, InProcessPermit};
use crate::session::Hold;
use crate::{runtime, Error, Lock, Mode};

/// A held lock. Release it with [`release`](LockGuard::release); if it is dropped instead
/// (scope end, `?`, panic, cancellation), the lock is released promptly in the background.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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
    held: Option<Held>,
    name: Arc<str>,
    key: i64,
    mode: Mode,
    /// The fencing token minted with the grant (a fenced lock's).
    token: Option<u64>,
    acquired_at: Instant,
    /// Reads `true` once the lock's session is known to be over.
    dead: watch::Receiver<bool>,
    rt: Handle,
    /// The locker's count of background releases (see `Locker::wait_for_releases`).
    releasing: Arc<Releases>,
    meter: Meter,
    kind: Kind,
    /// The name its figures go under, if not its own: its semaphore's.
    metric_name: Option<Arc<str>>,
}

/// A locker's background releases under way (see `Locker::wait_for_releases`): a count,
/// and a signal when it falls to zero.
#[derive(Default)]
pub(crate) struct Releases {
    count: AtomicUsize,
    none_left: Notify,
}

impl Releases {
    /// Completes once no background release is under way.
    pub(crate) async fn none_left(&self) {
        loop {
            let none_left = self.none_left.notified();
            let mut none_left = pin!(none_left);
            none_left.as_mut().enable(); // before the check: a last release is not missed
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            none_left.await;
        }
    }
}

/// One background release, counted while it lives.
pub(crate) struct Releasing(Arc<Releases>);

impl Releasing {
    pub(crate) fn new(releases: &Arc<Releases>) -> Releasing {
        releases.count.fetch_add(1, Ordering::AcqRel);
        Releasing(Arc::clone(releases))
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// What a guard owns while the lock is held.
pub(crate) struct Held {
    /// The lock on its session.
    pub(crate) hold: Hold,
    /// This process's turn at the key, given up once the unlock is settled (or with the
    /// lock, when it is handed over).
    pub(crate) permit: InProcessPermit,
    /// The run of in-process handoffs the lock is on.
    pub(crate) chain: Chain,
    /// Run once the guard has let go: its unlock settled, or the lock handed over, or the
    /// release dropped mid-way (a semaphore tells its waiters; a permit is never handed
    /// over).
    pub(crate) after_release: Option<AfterRelease>,
}

/// What runs once a guard's unlock is settled, however it was released.
pub(crate) type AfterRelease = Box<dyn FnOnce() + Send + Sync>;

impl Held {
    /// Lets go of the lock: hands it over to a caller of this process that waits for it,
    /// or unlocks it. `park` (a release nobody awaits: a dropped guard): even with nobody
    /// waiting yet, the lock is left, parked, for a caller of this process that asks at
    /// once (the thread that dropped the guard, say), until the library's runtime runs the
    /// rest of this release (microseconds): it then unlocks it unless taken.
    async fn release(self, park: bool) -> Result<bool, Error> {
        let Held {
            hold,
            permit,
            after_release,
            chain,
        } = self;
        // Runs when the release is done, or when this future is dropped mid-way (the
        // unlock is then reconciled in the background; waiters woken early try again).
        let _after = RunOnDrop(after_release);
        let (hold, permit) = match permit.hand_over(hold, chain, park) {
            // Another caller of this process waits for it: handed over, no statement.
            Ok(HandedOver::ToWaiter) => return Ok(true),
            Ok(HandedOver::Parked(reclaim)) => {
                runtime::yield_once().await;
                match reclaim.take_back() {
                    Some(both) => both,
                    None => return Ok(true), // taken by a caller of this process
                }
            }
            Err((permit, hold)) => (hold, permit),
        };
        let released = hold.release().await;
        // Only now may the next caller of this process go to the database.
        drop(permit);
        released
    }
}

impl LockGuard {
    pub(crate) fn new(held: Held, lock: &Lock) -> LockGuard {
        LockGuard {
            key: lock.key(),
            mode: lock.mode(),
            token: held.hold.token,
            acquired_at: Instant::now(),
            dead: held.hold.dead(),
            rt: lock.locker().rt().clone(),
            releasing: Arc::clone(lock.locker().releasing()),
            meter: lock.locker().meter().clone(),
            kind: lock.kind(),
            metric_name: None,
            held: Some(held),
            name: Arc::clone(lock.shared_name()),
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

    /// Completes when the lock is known to be lost (see [`is_held`](LockGuard::is_held)).
    ///
    /// Cancel-safe and cheap to poll: made for `select!` beside the guarded work. The
    /// future does not borrow the guard.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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

    /// The fencing token of this grant: `Some` for a [`fenced`](Lock::fenced) lock, a
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
        if let Some(held) = &mut self.held {
            held.hold.notify = Some(payload);
        }
    }

    /// Runs `after` once the guard lets go of its lock (see `Held::after_release`).
    pub(crate) fn after_release(&mut self, after: AfterRelease) {
        if let Some(held) = &mut self.held {
            held.after_release = Some(after);
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
        self.held.as_ref().map(|held| held.hold.pid())
    }

    /// Runs `body` unless the lock is found lost first: then `None`, and `body` is dropped
    /// where it stands. The body is polled first: work that finished as the loss was found
    /// stands.
    pub(crate) async fn unless_lost<F: Future>(&self, body: F) -> Option<F::Output> {
        let mut body = pin!(body);
        let mut lost = pin!(self.lost());
        poll_fn(|cx| {
            if let Poll::Ready(output) = body.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            lost.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    /// How long the lock has been held.
    pub fn held_for(&self) -> std::time::Duration {
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
        let held = self
            .held
            .take()
            .expect("a guard holds its lock until released");
        // Counted once the release is done, or if this future is dropped mid-way (the
        // release then goes on in the background).
        let _ended = HoldEnded(&self);
        let result = held.release(false).await;
        tracing::debug!(lock = %self.name, key = self.key, held = ?self.held_for(), ?result, "pals: lock released");
        result
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
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
    /// let locker = pals::Locker::new("doc-release-at", &url)?;
    /// let guard = locker.lock("report").acquire().await?;
    /// guard.release_at(Instant::now() + Duration::from_millis(200));
    /// assert!(locker.lock("report").try_acquire().await?.is_none()); // still held
    /// # Ok(()) }
    /// ```
    pub fn release_at(mut self, deadline: Instant) {
        let Some((rt, release)) = self.background_release(false) else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            release.await;
        });
    }

    /// The release of a guard nobody awaits: run on the library's runtime, and logged.
    /// `park`: see `Held::release`.
    fn background_release(
        &mut self,
        park: bool,
    ) -> Option<(Handle, impl Future<Output = ()> + Send + 'static)> {
        let held = self.held.take()?;
        let rt = self.rt.clone();
        let (name, key, acquired_at) = (self.name.clone(), self.key, self.acquired_at);
        let (meter, kind, metric_name) = (self.meter.clone(), self.kind, self.metric_name.clone());
        let releasing = Releasing::new(&self.releasing);
        let release = async move {
            let _releasing = releasing; // counted until the release is done (or dropped)
            let held_for = acquired_at.elapsed();
            match held.release(park).await {
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
            meter.released(kind, metric_name.as_deref().unwrap_or(&name), held_for);
        };
        Some((rt, release))
    }

    /// [`release`](LockGuard::release) for synchronous code: blocks the calling thread.
    pub fn blocking_release(self) -> Result<bool, Error> {
        runtime::block_on(self.release())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Released on the library's runtime: no runtime is needed on this thread, and this
        // works during a panic's unwinding too.
        let Some((rt, release)) = self.background_release(true) else {
            return;
        };
        let mut release = Box::pin(release);
        // One poll here hands the lock over to a caller of this process that waits for it,
        // or parks it for one that comes at once; else it sends the unlock (it only queues
        // the request for the connection). The runtime does the rest.
        if runtime::poll_once(release.as_mut()).is_pending() {
            rt.spawn(release);
        }
    }
}

/// Runs its hook when dropped.
struct RunOnDrop(Option<AfterRelease>);

impl Drop for RunOnDrop {
    fn drop(&mut self) {
        if let Some(hook) = self.0.take() {
            hook();
        }
    }
}

/// Tells the meter that a guard's hold ended, when dropped.
struct HoldEnded<'a>(&'a LockGuard);

impl Drop for HoldEnded<'_> {
    fn drop(&mut self) {
        let guard = self.0;
        let name = guard.metric_name.as_deref().unwrap_or(&guard.name);
        guard.meter.released(guard.kind, name, guard.held_for());
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
