//! In-process queueing and handoff: callers in one process that want the same lock wait
//! here, in memory, instead of each holding a database connection while it waits; and a
//! lock released while another caller of the process waits for it is handed over in memory.
//!
//! Each key has a fair (FIFO) semaphore: an exclusive lock takes every permit, a shared
//! lock takes one. Only a caller that holds the in-process turn goes to the database, so
//! 50 tasks contending for one lock use one connection, not 50.
//!
//! **Handoff (lock cohorting: Dice, Marathe, Shavit, PPoPP 2012).** An exclusive holder that
//! lets go while another exclusive caller of this locker waits for the key does not unlock:
//! it *parks* the database lock here and gives up its turn, and whoever gets the turn next
//! (the first waiter, by the semaphore's order) takes the parked lock: no statement at all.
//! A run of handoffs is bounded ([`HandoffLimit`]: a count and a time since the database
//! granted the lock); past it the lock is unlocked in the database, where a waiter of
//! another process is first in PostgreSQL's queue. Only plain exclusive locks are handed
//! over: a fenced grant needs a token from the database, a semaphore permit's unlock tells
//! other processes, and a shared holder has no single successor.
//!
//! **Who releases a parked lock.** Whoever takes the turn takes what is parked (a caller
//! that cannot use it, shared or fenced, unlocks it first). A parked lock and a free turn
//! with nobody waiting is an orphan (the waiter it was parked for went away in between);
//! each side checks for that after its own step, under the key's mutex, so one of them
//! always sees it and unlocks it in the background.
//!
//! **Drop, then take at once.** While an exclusive holder's unlock is in flight it keeps
//! its turn (the next caller of this process must not find the lock still held in the
//! database); a try that finds the turn taken by such a release waits for it to settle (a
//! round trip; at most the lock's timeout) instead of answering busy. A dropped guard's
//! lock is parked even with nobody waiting, until the library's runtime runs the rest of
//! its release: a caller that asks at once (the thread that dropped it) takes it.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::guard::{Releases, Releasing};
use crate::session::Hold;
use crate::{runtime, Mode};

/// Permits of a key's semaphore; an exclusive holder takes them all.
const ALL_PERMITS: u32 = 1 << 30;

/// How far a lock may be handed over within the process before it goes back to the
/// database: at most `in_a_row` handoffs, and none once `within` has passed since the
/// database granted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandoffLimit {
    pub(crate) in_a_row: u32,
    pub(crate) within: Duration,
}

/// The per-key queues of one locker.
pub(crate) struct Queues {
    by_key: Mutex<HashMap<i64, Weak<KeyQueue>>>,
    limit: HandoffLimit,
    /// Where an orphaned parked lock is unlocked...
    rt: Handle,
    /// ...counted among the locker's background releases.
    releases: Arc<Releases>,
}

/// One key's queue.
struct KeyQueue {
    semaphore: Arc<Semaphore>,
    state: Mutex<KeyState>,
    /// Signalled when an exclusive holder's unlock has settled and its turn is given up.
    settled: Notify,
}

#[derive(Default)]
struct KeyState {
    /// Exclusive callers waiting for the turn: someone to hand the lock to.
    exclusive_waiting: usize,
    /// A lock its last holder handed over, for whoever gets the turn next (boxed: every
    /// held lock has a queue, few have a lock parked in it).
    parked: Option<Box<Parked>>,
    /// The turn is kept by an exclusive holder whose unlock is in flight.
    releasing: bool,
}

/// A database lock handed over in memory, and the run it is on.
pub(crate) struct Parked {
    pub(crate) hold: Hold,
    pub(crate) chain: Chain,
}

/// The run of in-process handoffs a lock is on: how many since the database granted it,
/// and when that was.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chain {
    handed: u32,
    granted_at: Instant,
}

impl Chain {
    /// A lock the database has just granted.
    pub(crate) fn granted() -> Chain {
        Chain {
            handed: 0,
            granted_at: Instant::now(),
        }
    }

    /// How many times the lock has been handed over since its grant.
    pub(crate) fn handed(&self) -> u32 {
        self.handed
    }
}

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
    /// The deadline to wait for, `None` meaning forever; `Never` waits until now.
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Never => Some(Instant::now()),
            Wait::Until(deadline) => Some(deadline),
            Wait::Forever => None,
        }
    }
}

/// The right to go to the database for a key (this process's turn), held until the lock
/// is released there or handed over.
pub(crate) struct InProcessPermit {
    // Field order matters: the semaphore permit and the queue must drop before the entry
    // is checked for removal.
    permit: Option<OwnedSemaphorePermit>,
    queue: Arc<KeyQueue>,
    mode: Mode,
    entry: Entry,
}

#[derive(Clone)]
struct Entry {
    key: i64,
    queues: Arc<Queues>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut by_key = self.queues.by_key.lock().unwrap_or_else(|e| e.into_inner());
        // Created and upgraded only under this mutex, so a dead entry stays dead.
        if by_key.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            by_key.remove(&self.key);
        }
    }
}

impl KeyQueue {
    fn state(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl InProcessPermit {
    /// Hands `hold` (the lock this turn took, on the run `chain`) over to the next caller
    /// of this process, if the limit allows: parks it and gives up the turn. Without an
    /// exclusive caller waiting, only if `even_unawaited` (then the lock is for whoever
    /// comes first, this process or the [`Reclaim`] that unlocks it). Otherwise gives
    /// both back, to be unlocked in the database, the turn kept for that unlock (a try
    /// meanwhile waits for it to settle).
    pub(crate) fn hand_over(
        self,
        hold: Hold,
        chain: Chain,
        even_unawaited: bool,
    ) -> Result<HandedOver, (InProcessPermit, Hold)> {
        if self.mode != Mode::Exclusive {
            return Err((self, hold));
        }
        let limit = self.entry.queues.limit;
        // One lock of the key's state per release; the cheap tests first, the session's
        // books and the clock only when a handoff is wanted.
        let awaited = {
            let mut state = self.queue.state();
            let awaited = state.exclusive_waiting > 0;
            let allowed = (awaited || even_unawaited)
                && chain.handed < limit.in_a_row
                && hold.can_be_handed_over()
                && chain.granted_at.elapsed() < limit.within;
            if !allowed {
                state.releasing = true;
                drop(state);
                return Err((self, hold));
            }
            let chain = Chain {
                handed: chain.handed + 1,
                ..chain
            };
            // Only the turn's holder parks, and whoever had the turn before took what was
            // parked: nothing is there (else its hold would drop under this mutex).
            debug_assert!(state.parked.is_none(), "one parked lock per key");
            state.parked = Some(Box::new(Parked { hold, chain }));
            awaited
        };
        let reclaim = Reclaim {
            queue: Arc::clone(&self.queue),
            entry: self.entry.clone(),
        };
        drop(self); // the turn goes to the first waiter, if there is one
        if !awaited {
            return Ok(HandedOver::Parked(reclaim));
        }
        reclaim.in_background(); // unless it went away meanwhile
        Ok(HandedOver::ToWaiter)
    }
}

/// Where a handed-over lock went.
pub(crate) enum HandedOver {
    /// To a caller that waited for it (or, if it went away meanwhile, back to the database).
    ToWaiter,
    /// Parked for whoever comes first; nobody waited. Unlock it with the [`Reclaim`] unless
    /// someone takes it first.
    Parked(Reclaim),
}

/// The right to take back a parked lock of one key that nobody took, to unlock it.
pub(crate) struct Reclaim {
    // Field order matters: the queue must drop before the entry is checked for removal.
    queue: Arc<KeyQueue>,
    entry: Entry,
}

impl Reclaim {
    /// Takes back the key's parked lock, with the turn, if nobody has the turn (whoever has
    /// it takes the parked lock). Unlock it, then drop the turn; a try meanwhile waits for
    /// that to settle.
    pub(crate) fn take_back(&self) -> Option<(Hold, InProcessPermit)> {
        let queue = &self.queue;
        let (parked, permit) = {
            let mut state = queue.state();
            let parked = state.parked.take()?;
            let semaphore = Arc::clone(&queue.semaphore);
            let Ok(permit) = semaphore.try_acquire_many_owned(ALL_PERMITS) else {
                state.parked = Some(parked); // whoever has the turn takes it
                return None;
            };
            state.releasing = true;
            (parked, permit)
        };
        let permit = InProcessPermit {
            permit: Some(permit),
            queue: Arc::clone(queue),
            mode: Mode::Exclusive,
            entry: self.entry.clone(),
        };
        Some((parked.hold, permit))
    }

    /// [`take_back`](Reclaim::take_back), and the unlock on the library's runtime: for a
    /// lock parked for a waiter that went away.
    fn in_background(self) {
        let Some((hold, permit)) = self.take_back() else {
            return;
        };
        let key = self.entry.key;
        let queues = &self.entry.queues;
        let releasing = Releasing::new(&queues.releases);
        tracing::debug!(
            key,
            "pals: unlocking a lock handed over to a caller that went away"
        );
        queues.rt.spawn(async move {
            let _releasing = releasing; // counted until the unlock is done
            if let Err(error) = hold.release().await {
                tracing::warn!(key, %error, "pals: unlocking a handed-over lock failed; its session was closed");
            }
            drop(permit);
        });
    }
}

impl Drop for InProcessPermit {
    fn drop(&mut self) {
        if self.mode != Mode::Exclusive {
            return; // the semaphore permit drops with the fields
        }
        // Under the key's mutex, so that a try sees either the release under way or the
        // turn free.
        let was_releasing = {
            let mut state = self.queue.state();
            drop(self.permit.take());
            std::mem::take(&mut state.releasing)
        };
        if was_releasing {
            self.queue.settled.notify_waiters();
        }
    }
}

/// A caller waiting for the turn (an exclusive one counted, as someone to hand over to).
/// Made before its semaphore wait, so that a caller dropped mid-way drops the wait first
/// (giving back the permits assigned to it) and this then checks for a lock parked for it.
struct Waiting<'a> {
    queues: &'a Arc<Queues>,
    queue: &'a Arc<KeyQueue>,
    key: i64,
    exclusive: bool,
    admitted: bool,
}

impl<'a> Waiting<'a> {
    fn new(queues: &'a Arc<Queues>, queue: &'a Arc<KeyQueue>, key: i64, mode: Mode) -> Waiting<'a> {
        let exclusive = mode == Mode::Exclusive;
        if exclusive {
            queue.state().exclusive_waiting += 1;
        }
        Waiting {
            queues,
            queue,
            key,
            exclusive,
            admitted: false,
        }
    }

    /// The turn came: no longer waiting; takes what was handed over.
    fn admit(mut self) -> Option<Box<Parked>> {
        self.admitted = true;
        let mut state = self.queue.state();
        if self.exclusive {
            state.exclusive_waiting -= 1;
        }
        state.parked.take()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        if self.exclusive {
            self.queue.state().exclusive_waiting -= 1;
        }
        // A lock may have been parked for this caller (or for one behind it, whose turn it
        // had been given), which went away.
        let entry = Entry {
            key: self.key,
            queues: Arc::clone(self.queues),
        };
        let queue = Arc::clone(self.queue);
        Reclaim { queue, entry }.in_background();
    }
}

impl Queues {
    /// Queues whose locks are handed over within `limit`; orphaned handoffs are unlocked
    /// on `rt`, counted in `releases`.
    pub(crate) fn new(limit: HandoffLimit, rt: Handle, releases: Arc<Releases>) -> Queues {
        Queues {
            by_key: Mutex::default(),
            limit,
            rt,
            releases,
        }
    }

    pub(crate) fn limit(&self) -> HandoffLimit {
        self.limit
    }

    fn queue(&self, key: i64) -> Arc<KeyQueue> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = by_key.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let created = Arc::new(KeyQueue {
            semaphore: Arc::new(Semaphore::new(ALL_PERMITS as usize)),
            state: Mutex::default(),
            settled: Notify::new(),
        });
        by_key.insert(key, Arc::downgrade(&created));
        created
    }

    /// Waits for this process's turn at `key`. `None`: the wait ended before it came.
    /// With the turn comes the lock its last holder handed over, if it did. A try
    /// (`Wait::Never`) that finds the turn kept by an unlock in flight waits for it to
    /// settle, for `settle_within` at most.
    pub(crate) async fn enter(
        self: &Arc<Self>,
        key: i64,
        mode: Mode,
        wait: Wait,
        settle_within: Duration,
    ) -> Option<(InProcessPermit, Option<Box<Parked>>)> {
        let entry = Entry {
            key,
            queues: Arc::clone(self),
        };
        let queue = self.queue(key);
        let permits = match mode {
            Mode::Shared => 1,
            Mode::Exclusive => ALL_PERMITS,
        };
        let semaphore = &queue.semaphore;
        let (permit, parked) = match Arc::clone(semaphore).try_acquire_many_owned(permits) {
            Ok(permit) => (permit, queue.state().parked.take()),
            Err(_) if wait == Wait::Never => {
                let permit = queue
                    .after_release(permits, &self.rt, settle_within)
                    .await?;
                (permit, queue.state().parked.take())
            }
            Err(_) => {
                let waiting = Waiting::new(self, &queue, key, mode);
                let acquired = {
                    // Dropped before `waiting` when this future is: see `Waiting`.
                    let acquire = Arc::clone(semaphore).acquire_many_owned(permits);
                    match wait.deadline() {
                        Some(deadline) => runtime::until(&self.rt, deadline, acquire).await,
                        None => Some(acquire.await),
                    }
                };
                let permit = acquired.and_then(Result::ok)?;
                (permit, waiting.admit())
            }
        };
        let permit = InProcessPermit {
            permit: Some(permit),
            queue,
            mode,
            entry,
        };
        Some((permit, parked))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.lock().unwrap().len()
    }
}

impl KeyQueue {
    /// For a try that found the turn taken: if its holder is releasing the lock, waits
    /// for that to settle (our own unlock, not the lock), for `settle_within` at most, and
    /// tries once more.
    async fn after_release(
        &self,
        permits: u32,
        rt: &Handle,
        settle_within: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let settled = self.settled.notified();
        let mut settled = pin!(settled);
        settled.as_mut().enable(); // before the check: a settle in between is not missed
        {
            let state = self.state();
            // Under the key's mutex: a release that settles meanwhile frees the turn
            // under it too.
            if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_many_owned(permits) {
                return Some(permit);
            }
            if !state.releasing {
                return None;
            }
        }
        runtime::within(rt, settle_within, settled).await?;
        Arc::clone(&self.semaphore)
            .try_acquire_many_owned(permits)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{block_on, handle};

    fn queues() -> Arc<Queues> {
        let limit = HandoffLimit {
            in_a_row: 8,
            within: Duration::from_secs(1),
        };
        Arc::new(Queues::new(limit, handle().unwrap(), Arc::default()))
    }

    fn enter(queues: &Arc<Queues>, key: i64, mode: Mode, wait: Wait) -> Option<InProcessPermit> {
        block_on(queues.enter(key, mode, wait, Duration::MAX)).map(|(permit, parked)| {
            assert!(parked.is_none(), "nothing was handed over");
            permit
        })
    }

    #[test]
    fn exclusive_excludes_and_shared_share() {
        let queues = queues();
        let held = enter(&queues, 1, Mode::Exclusive, Wait::Never).unwrap();
        assert!(enter(&queues, 1, Mode::Exclusive, Wait::Never).is_none());
        assert!(enter(&queues, 1, Mode::Shared, Wait::Never).is_none());
        assert!(enter(&queues, 2, Mode::Exclusive, Wait::Never).is_some());
        drop(held);
        let a = enter(&queues, 1, Mode::Shared, Wait::Never).unwrap();
        let b = enter(&queues, 1, Mode::Shared, Wait::Never).unwrap();
        assert!(enter(&queues, 1, Mode::Exclusive, Wait::Never).is_none());
        drop((a, b));
        assert!(enter(&queues, 1, Mode::Exclusive, Wait::Never).is_some());
    }

    #[test]
    fn waits_until_the_deadline() {
        let queues = queues();
        let _held = enter(&queues, 1, Mode::Exclusive, Wait::Never).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(40);
        assert!(enter(&queues, 1, Mode::Exclusive, Wait::Until(deadline)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(
            queues.queue(1).state().exclusive_waiting,
            0,
            "no longer counted"
        );
    }

    #[test]
    fn a_try_waits_for_a_release_under_way_and_only_for_that() {
        let queues = queues();
        let held = enter(&queues, 1, Mode::Exclusive, Wait::Never).unwrap();
        assert!(
            enter(&queues, 1, Mode::Exclusive, Wait::Never).is_none(),
            "held, not releasing"
        );
        held.queue.state().releasing = true; // as a release that unlocks does
        let mut try_now = Box::pin(queues.enter(1, Mode::Exclusive, Wait::Never, Duration::MAX));
        assert!(
            runtime::poll_once(try_now.as_mut()).is_pending(),
            "waits for the settle"
        );
        drop(held);
        assert!(block_on(try_now).is_some());
    }

    #[test]
    fn forgets_keys_nobody_uses() {
        let queues = queues();
        let permits: Vec<_> = (0..100)
            .map(|key| enter(&queues, key, Mode::Exclusive, Wait::Never).unwrap())
            .collect();
        assert_eq!(queues.len(), 100);
        drop(permits);
        assert_eq!(queues.len(), 0);
    }
}
