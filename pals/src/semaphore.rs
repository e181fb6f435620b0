//! [`Semaphore`]: at most `permits` holders fleet-wide, on advisory locks.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coordination::{Coordination, Event, Subscription};
use crate::core::Core;
use crate::deadline::sleep_until;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::key::full_name;
use crate::lock::Lock;
use crate::metrics::Primitive;
use crate::runtime::block_on;
use crate::sql::PERMIT_CHANNEL;

/// How often a waiter for a permit checks on its own, in case a permit was freed without a
/// word (a holder's process or session died, or a Python PALs holder released it).
pub const PERMIT_RECHECK: Duration = Duration::from_millis(500);

/// A fleet-wide counting semaphore: at most `permits` holders at once, in every process
/// that uses the same app and name. Made by [`Locker::semaphore`](crate::Locker::semaphore);
/// cheap to clone.
///
/// **Keys.** Permit `i` (`0 <= i < permits`) is the advisory lock named
/// `"{name}.permit-{i}"` in the same app, key `pals::key(app, "{name}.permit-{i}")`: a
/// holder holds exactly one of them. Python PALs takes a permit by locking one of those
/// names (`locker.lock(f"{name}.permit-{i}")`), and counts against the same limit. Every
/// process must agree on `permits`: one that says 4 where the others say 3 lets a fourth
/// holder in.
///
/// **Waiting** does not poll the database in a tight loop. A waiter tries the permits (one
/// try statement each, starting with the one that was freed last when it knows it), then
/// sleeps until it hears that a permit was given back: at once from a guard of the same
/// locker (which wakes the waiters of all its semaphores), through `LISTEN`/`NOTIFY` from
/// another process (the unlock statement of the releasing process carries the `NOTIFY`,
/// delivered once the unlock commits: no extra round trip; the waiter's
/// locker keeps one listening session), and otherwise tries again every
/// [`PERMIT_RECHECK`] (a holder that died frees its permit without a word): `permits`
/// statements every 500 ms per waiter at most. Waiters are not served in arrival order.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = pals_devdb::db_url().unwrap();
/// let locker = pals::Locker::new("doc-semaphore", &url)?;
/// let exports = locker.semaphore("heavy-export", 2);
/// let first = exports.acquire().await?;
/// let second = exports.acquire().await?;
/// assert!(exports.try_acquire().await?.is_none()); // both permits are taken
/// assert_ne!(first.permit(), second.permit());
/// first.release().await?;
/// let third = exports.try_acquire().await?.expect("a permit was freed");
/// # drop((second, third));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    core: Arc<Core>,
    coordination: Arc<Coordination>,
    name: Arc<str>,
    permits: Arc<[Lock]>,
    timeout: Option<Duration>,
    /// Where the next acquire starts trying, to spread holders over the permits.
    next: Arc<AtomicUsize>,
}

impl Semaphore {
    /// The semaphore `name` of the locker whose parts are `core` and `coordination`, with
    /// `permits`, the lock of each (made by the locker, so that it knows their names).
    pub(crate) fn new(
        core: &Arc<Core>,
        coordination: &Arc<Coordination>,
        name: &str,
        permits: impl Iterator<Item = Lock>,
    ) -> Semaphore {
        let permits: Arc<[Lock]> = permits
            .map(|lock| lock.counted_as(Primitive::Semaphore, false))
            .collect();
        Semaphore {
            name: full_name(&core.app, name).into(),
            core: Arc::clone(core),
            coordination: Arc::clone(coordination),
            permits,
            timeout: None,
            next: Arc::default(),
        }
    }

    /// This semaphore with its own acquire timeout instead of the locker's default.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Semaphore {
        self.timeout = Some(timeout);
        self
    }

    /// The full name, `"app.name"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// How many holders it admits at once.
    pub fn permits(&self) -> u32 {
        self.permits.len() as u32
    }

    /// The lock of each permit, in order (see the keys above).
    pub fn permit_locks(&self) -> &[Lock] {
        &self.permits
    }

    /// Takes a permit, waiting up to the timeout; none freed that long is `Err(Error::Timeout)`.
    pub async fn acquire(&self) -> Result<SemaphoreGuard, Error> {
        let timeout = self.timeout.unwrap_or(self.core.default_timeout);
        self.acquire_timeout(timeout)
            .await?
            .ok_or_else(|| Error::Timeout {
                name: self.name.to_string(),
            })
    }

    /// Takes a permit if one is free now; `Ok(None)` if all are taken.
    pub async fn try_acquire(&self) -> Result<Option<SemaphoreGuard>, Error> {
        self.acquire_timeout(Duration::ZERO).await
    }

    /// Takes a permit, waiting up to `timeout` for one; `Ok(None)` if none was freed that
    /// long. `Duration::MAX` waits forever.
    ///
    /// Cancel-safe: dropping the future leaves no permit behind.
    pub async fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<SemaphoreGuard>, Error> {
        let started = Instant::now();
        let result = self.take_within(timeout).await;
        let meter = &self.core.meter;
        meter.count(Primitive::Semaphore, &self.name, started, &result);
        result
    }

    async fn take_within(&self, timeout: Duration) -> Result<Option<SemaphoreGuard>, Error> {
        if self.permits.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "semaphore \"{}\" has 0 permits: nobody could ever hold it",
                self.name
            )));
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut freed = None;
        let mut subscription = None;
        loop {
            // Listen before trying: a permit given back after the try is heard.
            let local = self.coordination.permits_freed().notified();
            let mut local = std::pin::pin!(local);
            local.as_mut().enable();
            if let Some(guard) = self.try_each(freed.take(), deadline).await? {
                return Ok(Some(guard));
            }
            let now = Instant::now();
            if timeout.is_zero() || deadline.is_some_and(|deadline| now >= deadline) {
                return Ok(None);
            }
            // From now on, what other processes say reaches this waiter; until the listening
            // session is up (it says so with a resync, and the permits are tried again), the
            // recheck covers what it would hear.
            let events = subscription.get_or_insert_with(|| self.coordination.subscribe());
            let recheck = now + PERMIT_RECHECK;
            let wake_at = deadline.map_or(recheck, |deadline| deadline.min(recheck));
            tracing::debug!(semaphore = %self.name, permits = self.permits.len(), "pals: every permit is taken; waiting for one to be given back");
            tokio::select! {
                permit = self.heard(events) => freed = permit,
                _ = local => {}
                _ = sleep_until(self.core.rt(), wake_at) => {}
            }
        }
    }

    /// The next permit of this semaphore that another process says it gave back; `None`
    /// after a resync (what was missed cannot be known: try them all).
    async fn heard(&self, events: &mut Subscription) -> Option<usize> {
        let first_key = self.permits[0].key();
        loop {
            match events.next().await {
                Some(Event::Notified { channel, payload }) if &*channel == PERMIT_CHANNEL => {
                    if let Some(permit) = freed_permit(&payload, first_key) {
                        return Some(permit);
                    }
                }
                Some(Event::Notified { .. }) => {}
                Some(Event::Resync) => return None,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// One try of each permit, starting with `first` (a permit known to be free) or where
    /// the last acquire left off.
    /// A try waits for a pool session until `deadline` at most (`None`: the connect
    /// timeout bounds opening one).
    async fn try_each(
        &self,
        first: Option<usize>,
        deadline: Option<Instant>,
    ) -> Result<Option<SemaphoreGuard>, Error> {
        let count = self.permits.len();
        let start = first
            .filter(|permit| *permit < count)
            .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % count);
        for offset in 0..count {
            let permit = (start + offset) % count;
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let lock = self.permits[permit].clone().timeout(left);
            if let Some(guard) = lock.try_acquire().await? {
                return Ok(Some(self.guard(guard, permit)));
            }
        }
        Ok(None)
    }

    /// A permit's guard, which tells waiters when it is given back.
    fn guard(&self, mut guard: LockGuard, permit: usize) -> SemaphoreGuard {
        let coordination = Arc::clone(&self.coordination);
        // Other processes hear of it from the unlock itself (one statement); waiters of
        // this locker, once it is settled.
        let payload = format!("{}:{permit}", self.permits[0].key());
        guard.notify_on_release(payload.into());
        guard.after_release(Box::new(move || {
            coordination.permits_freed().notify_waiters()
        }));
        guard.count_as(&self.name);
        SemaphoreGuard {
            guard,
            permit: permit as u32,
        }
    }

    /// [`acquire`](Semaphore::acquire) for synchronous code: blocks the calling thread.
    pub fn blocking_acquire(&self) -> Result<SemaphoreGuard, Error> {
        block_on(self.acquire())
    }

    /// [`try_acquire`](Semaphore::try_acquire) for synchronous code.
    pub fn blocking_try_acquire(&self) -> Result<Option<SemaphoreGuard>, Error> {
        block_on(self.try_acquire())
    }

    /// [`acquire_timeout`](Semaphore::acquire_timeout) for synchronous code.
    pub fn blocking_acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<SemaphoreGuard>, Error> {
        block_on(self.acquire_timeout(timeout))
    }
}

/// The lock name of permit `i` of semaphore `name`.
pub(crate) fn permit_name(name: &str, i: u32) -> String {
    format!("{name}.permit-{i}")
}

/// The permit a `pals_permit` payload names, if it is one of the semaphore whose first
/// key is `first_key`.
fn freed_permit(payload: &str, first_key: i64) -> Option<usize> {
    let (key, permit) = payload.split_once(':')?;
    (key.parse::<i64>().ok()? == first_key).then_some(())?;
    permit.parse().ok()
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.name)
            .field("permits", &self.permits.len())
            .finish()
    }
}

/// A held permit of a [`Semaphore`]: a [`LockGuard`] on one permit's lock, with the same
/// guarantees (given back on drop, [`is_held`](SemaphoreGuard::is_held),
/// [`lost`](SemaphoreGuard::lost)); giving it back wakes the semaphore's waiters.
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard {
    guard: LockGuard,
    permit: u32,
}

impl SemaphoreGuard {
    /// Which permit is held, `0..permits`.
    pub fn permit(&self) -> u32 {
        self.permit
    }

    /// False once the permit is known to be lost with its session (see
    /// [`LockGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.guard.is_held()
    }

    /// Completes when the permit is known to be lost (see [`LockGuard::lost`]).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.guard.lost()
    }

    /// How long the permit has been held.
    pub fn held_for(&self) -> Duration {
        self.guard.held_for()
    }

    /// The permit's lock guard.
    pub fn lock_guard(&self) -> &LockGuard {
        &self.guard
    }

    /// The permit's lock guard, which still wakes the semaphore's waiters when released.
    pub fn into_lock_guard(self) -> LockGuard {
        self.guard
    }

    /// Gives the permit back and waits for the database to confirm it (see
    /// [`LockGuard::release`]).
    pub async fn release(self) -> Result<bool, Error> {
        self.guard.release().await
    }

    /// [`release`](SemaphoreGuard::release) for synchronous code.
    pub fn blocking_release(self) -> Result<bool, Error> {
        self.guard.blocking_release()
    }
}

impl fmt::Debug for SemaphoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("lock", &self.guard)
            .field("permit", &self.permit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_a_permit_of_one_semaphore() {
        assert_eq!(freed_permit("-42:2", -42), Some(2));
        assert_eq!(freed_permit("-42:2", 42), None);
        assert_eq!(freed_permit("garbage", 42), None);
        assert_eq!(permit_name("export", 0), "export.permit-0");
    }
}
