//! [`LockGuard`]: a held lock that is always released.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use tokio::runtime::Handle;

use crate::pool::{Carrier, InFlight};
use crate::queue::InProcessPermit;
use crate::statement::Detached;
use crate::{runtime, Error};

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
    shared: bool,
    acquired_at: Instant,
    /// Reads `true` once the lock's connection is known dead.
    dead: watch::Receiver<bool>,
}

/// What a guard owns while the lock is held.
pub(crate) struct Held {
    pub(crate) carrier: Arc<Carrier>,
    pub(crate) permit: InProcessPermit,
    /// This guard's entry in its carrier's list of held locks.
    pub(crate) id: u64,
    pub(crate) key: i64,
    pub(crate) shared: bool,
    pub(crate) rt: Handle,
    /// How long the server may take to answer the unlock: the connect timeout.
    pub(crate) answer_within: Duration,
}

impl Held {
    /// Unlocks on the session that holds the lock. The unlock completes even if this future
    /// is dropped mid-way (the session is shared: it must neither be cut off nor unlocked
    /// twice, which on a re-entrant session could release another guard's hold).
    async fn release(self) -> Result<bool, Error> {
        let Held {
            carrier,
            permit,
            id,
            key,
            shared,
            rt,
            answer_within,
        } = self;
        let on = Arc::clone(&carrier);
        let in_flight = InFlight::new(carrier);
        let unlock = Detached::new(&rt, async move {
            let answer = in_flight.conn().unlock(key, shared).await;
            let carrier = Arc::clone(in_flight.carrier());
            drop(in_flight);
            carrier.watch().let_go(id);
            let released = matches!(answer, Ok(true));
            if !released {
                // The session did not hold what it should have: take it out of use; it
                // closes (freeing whatever it holds) once its other locks are released.
                carrier.retire();
            }
            carrier.remove_lock();
            // Only now may the next caller of this process go to the database.
            drop(permit);
            answer.map_err(Error::Database)
        });
        on.answer(&rt, answer_within, "the unlock", unlock).await?
    }
}

impl LockGuard {
    pub(crate) fn new(held: Held, name: Arc<str>) -> LockGuard {
        LockGuard {
            key: held.key,
            shared: held.shared,
            acquired_at: Instant::now(),
            dead: held.carrier.watch().subscribe(),
            held: Some(held),
            name,
        }
    }

    /// False once the lock is known to be lost: its database session ended (the server
    /// closed it, a restart, `pg_terminate_backend`) or stopped answering the heartbeat.
    /// Cheap: no round trip.
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
        self.shared
    }

    /// Releases the lock and waits for the database to confirm it.
    ///
    /// `Ok(true)`: it was held and is now released. `Ok(false)`: the session no longer held
    /// it (it was lost); the session is closed. `Err`: the connection failed; it is closed,
    /// which releases the lock on the server.
    pub async fn release(mut self) -> Result<bool, Error> {
        let held = self
            .held
            .take()
            .expect("a guard holds its lock until released");
        let result = held.release().await;
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
        let Some((rt, release)) = self.background_release() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            release.await;
        });
    }

    /// The release of a guard nobody awaits: run on the library's runtime, and logged.
    fn background_release(
        &mut self,
    ) -> Option<(Handle, impl Future<Output = ()> + Send + 'static)> {
        let held = self.held.take()?;
        let rt = held.rt.clone();
        let (name, key, acquired_at) = (self.name.clone(), self.key, self.acquired_at);
        let release = async move {
            let held_for = acquired_at.elapsed();
            match held.release().await {
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
        let Some((rt, release)) = self.background_release() else {
            return;
        };
        let mut release = Box::pin(release);
        // One poll here sends the unlock at once (it only queues the request for the
        // connection); the runtime then waits for the answer. The next caller for this lock
        // is let in when the answer is in.
        if runtime::poll_once(release.as_mut()).is_pending() {
            rt.spawn(release);
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("shared", &self.shared)
            .finish()
    }
}
