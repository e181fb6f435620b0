//! The in-process turn: callers of one locker that want the same lock wait here, in
//! memory, instead of each holding a database connection while it waits; only the caller
//! that has the turn at a key goes to the database (50 tasks contending for one lock use one
//! connection, not 50).
//!
//! Each key has a fair (FIFO) semaphore: an exclusive caller takes every permit, a shared
//! caller takes one. A [`Turn`] is held until its lock is unlocked in the database or
//! handed over. Beside the semaphore, each key has one slot where a holder may *park* its
//! database lock for whoever gets the turn next (the handoff: when and which locks are
//! handed over is `release`'s to decide; this module keeps the slot and its invariants):
//!
//! - whoever takes the turn takes what is parked ([`Turns::enter`]);
//! - a parked lock with the turn free and nobody waiting is an orphan (the waiter it was
//!   parked for went away in between): each side checks for that after its own step, under
//!   the key's mutex, so one of them always sees it, and unlocks it in the background
//!   ([`Reclaim`]);
//! - while an exclusive holder's unlock is in flight it keeps its turn (the next caller of
//!   this process must not find the lock still held in the database); a try that finds the
//!   turn kept so waits for the unlock to end instead of answering busy.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::background::Background;
use crate::deadline::{until, within, Wait};
use crate::key::Mode;
use crate::session::SessionLock;

/// Permits of a key's semaphore; an exclusive holder takes them all.
const ALL_PERMITS: u32 = 1 << 30;

/// The per-key turns of one locker.
pub(crate) struct Turns {
    by_key: Mutex<HashMap<i64, Weak<KeyQueue>>>,
    /// Where an orphaned parked lock is unlocked, counted.
    background: Arc<Background>,
}

/// One key's queue.
struct KeyQueue {
    semaphore: Arc<Semaphore>,
    state: Mutex<KeyState>,
    /// Signalled when an exclusive holder's unlock has ended and its turn is given up.
    release_ended: Notify,
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
    pub(crate) lock: SessionLock,
    pub(crate) chain: Chain,
}

/// The run of in-process handoffs a lock is on: how many since the database granted it,
/// and when that was.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chain {
    pub(crate) handed: u32,
    pub(crate) granted_at: Instant,
}

impl Chain {
    /// A lock the database has just granted.
    pub(crate) fn granted() -> Chain {
        Chain {
            handed: 0,
            granted_at: Instant::now(),
        }
    }
}

/// The right to go to the database for a key (this process's turn), held until the lock
/// is unlocked there or handed over.
pub(crate) struct Turn {
    // Field order matters: the semaphore permit and the queue must drop before the key is
    // checked for removal.
    permit: Option<OwnedSemaphorePermit>,
    queue: Arc<KeyQueue>,
    mode: Mode,
    listed: Listed,
}

/// A user of a key's queue; the last to go takes the key out of the map.
#[derive(Clone)]
struct Listed {
    key: i64,
    turns: Arc<Turns>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut by_key = self.turns.by_key.lock().unwrap_or_else(|e| e.into_inner());
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

/// What [`Turn::park_if`] did.
// Matched at once by its one caller: boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Parking {
    /// Parked for a caller that waited for it (or, if it went away meanwhile, back to the
    /// database).
    ToWaiter,
    /// Parked for whoever comes first; nobody waited. Unlock it with the [`Reclaim`] unless
    /// someone takes it first.
    ForWhoeverComes(Reclaim),
    /// Not parked: both given back, the turn kept for the unlock.
    Refused(Turn, Parked),
}

impl Turn {
    /// Exclusive, or shared.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Parks `parked` at the key and gives up the turn, if `allowed` says so: it is asked,
    /// under the key's mutex, whether an exclusive caller waits. Otherwise gives both back,
    /// to be unlocked in the database, the turn kept for that unlock (a try meanwhile waits
    /// for it to end).
    pub(crate) fn park_if(
        self,
        parked: Parked,
        allowed: impl FnOnce(bool, &Parked) -> bool,
    ) -> Parking {
        let awaited = {
            let mut state = self.queue.state();
            let awaited = state.exclusive_waiting > 0;
            if !allowed(awaited, &parked) {
                state.releasing = true;
                drop(state);
                return Parking::Refused(self, parked);
            }
            // Only the turn's holder parks, and whoever had the turn before took what was
            // parked: nothing is there (else its lock would drop under this mutex).
            debug_assert!(state.parked.is_none(), "one parked lock per key");
            state.parked = Some(Box::new(parked));
            awaited
        };
        let reclaim = Reclaim {
            queue: Arc::clone(&self.queue),
            listed: self.listed.clone(),
        };
        drop(self); // the turn goes to the first waiter, if there is one
        if !awaited {
            return Parking::ForWhoeverComes(reclaim);
        }
        reclaim.in_background(); // unless it went away meanwhile
        Parking::ToWaiter
    }

    /// Keeps the turn for an unlock in flight: a try meanwhile waits for it to end.
    #[cfg(test)]
    fn mark_releasing(&self) {
        self.queue.state().releasing = true;
    }
}

impl Drop for Turn {
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
            self.queue.release_ended.notify_waiters();
        }
    }
}

/// The right to take back a parked lock of one key that nobody took, to unlock it.
pub(crate) struct Reclaim {
    // Field order matters: the queue must drop before the key is checked for removal.
    queue: Arc<KeyQueue>,
    listed: Listed,
}

impl Reclaim {
    /// Takes back the key's parked lock, with the turn, if nobody has the turn (whoever has
    /// it takes the parked lock). Unlock it, then drop the turn; a try meanwhile waits for
    /// that to end.
    pub(crate) fn take_back(&self) -> Option<(SessionLock, Turn)> {
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
        let turn = Turn {
            permit: Some(permit),
            queue: Arc::clone(queue),
            mode: Mode::Exclusive,
            listed: self.listed.clone(),
        };
        Some((parked.lock, turn))
    }

    /// [`take_back`](Reclaim::take_back), and the unlock in the background: for a lock
    /// parked for a waiter that went away.
    fn in_background(self) {
        let Some((lock, turn)) = self.take_back() else {
            return;
        };
        let key = self.listed.key;
        tracing::debug!(
            key,
            "pals: unlocking a lock handed over to a caller that went away"
        );
        self.listed.turns.background.spawn(async move {
            if let Err(error) = lock.release().await {
                tracing::warn!(key, %error, "pals: unlocking a handed-over lock failed; its session was closed");
            }
            drop(turn);
        });
    }
}

/// A caller waiting for the turn (an exclusive one counted, as someone to hand over to).
/// Made before its semaphore wait, so that a caller dropped mid-way drops the wait first
/// (giving back the permits assigned to it) and this then checks for a lock parked for it.
struct Waiting<'a> {
    turns: &'a Arc<Turns>,
    queue: &'a Arc<KeyQueue>,
    key: i64,
    exclusive: bool,
    admitted: bool,
}

impl<'a> Waiting<'a> {
    fn new(turns: &'a Arc<Turns>, queue: &'a Arc<KeyQueue>, key: i64, mode: Mode) -> Waiting<'a> {
        let exclusive = mode == Mode::Exclusive;
        if exclusive {
            queue.state().exclusive_waiting += 1;
        }
        Waiting {
            turns,
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
        let listed = Listed {
            key: self.key,
            turns: Arc::clone(self.turns),
        };
        let queue = Arc::clone(self.queue);
        Reclaim { queue, listed }.in_background();
    }
}

impl Turns {
    /// The turns of a locker whose orphaned handoffs are unlocked by `background`.
    pub(crate) fn new(background: Arc<Background>) -> Turns {
        Turns {
            by_key: Mutex::default(),
            background,
        }
    }

    fn queue(&self, key: i64) -> Arc<KeyQueue> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = by_key.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let created = Arc::new(KeyQueue {
            semaphore: Arc::new(Semaphore::new(ALL_PERMITS as usize)),
            state: Mutex::default(),
            release_ended: Notify::new(),
        });
        by_key.insert(key, Arc::downgrade(&created));
        created
    }

    /// Waits for this process's turn at `key`. `None`: the wait ended before it came.
    /// With the turn comes the lock its last holder handed over, if it did. A try
    /// (`Wait::Never`) that finds the turn kept by an unlock in flight waits for it to
    /// end, for `release_wait` at most.
    pub(crate) async fn enter(
        self: &Arc<Self>,
        key: i64,
        mode: Mode,
        wait: Wait,
        release_wait: Duration,
    ) -> Option<(Turn, Option<Box<Parked>>)> {
        let listed = Listed {
            key,
            turns: Arc::clone(self),
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
                let rt = self.background.rt();
                let permit = queue.after_release(permits, rt, release_wait).await?;
                (permit, queue.state().parked.take())
            }
            Err(_) => {
                let waiting = Waiting::new(self, &queue, key, mode);
                let acquired = {
                    // Dropped before `waiting` when this future is: see `Waiting`.
                    let acquire = Arc::clone(semaphore).acquire_many_owned(permits);
                    match wait.deadline() {
                        Some(deadline) => until(self.background.rt(), deadline, acquire).await,
                        None => Some(acquire.await),
                    }
                };
                let permit = acquired.and_then(Result::ok)?;
                (permit, waiting.admit())
            }
        };
        let turn = Turn {
            permit: Some(permit),
            queue,
            mode,
            listed,
        };
        Some((turn, parked))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.lock().unwrap().len()
    }
}

impl KeyQueue {
    /// For a try that found the turn taken: if its holder is releasing the lock, waits
    /// for that unlock to end (our own unlock, not the lock), for `release_wait` at most,
    /// and tries once more.
    async fn after_release(
        &self,
        permits: u32,
        rt: &tokio::runtime::Handle,
        release_wait: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let ended = self.release_ended.notified();
        let mut ended = pin!(ended);
        ended.as_mut().enable(); // before the check: an end in between is not missed
        {
            let state = self.state();
            // Under the key's mutex: a release that ends meanwhile frees the turn under
            // it too.
            if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_many_owned(permits) {
                return Some(permit);
            }
            if !state.releasing {
                return None;
            }
        }
        within(rt, release_wait, ended).await?;
        Arc::clone(&self.semaphore)
            .try_acquire_many_owned(permits)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::poll_once;
    use crate::runtime::{block_on, handle};

    fn turns() -> Arc<Turns> {
        Arc::new(Turns::new(Arc::new(Background::new(handle().unwrap()))))
    }

    fn enter(turns: &Arc<Turns>, key: i64, mode: Mode, wait: Wait) -> Option<Turn> {
        block_on(turns.enter(key, mode, wait, Duration::MAX)).map(|(turn, parked)| {
            assert!(parked.is_none(), "nothing was handed over");
            turn
        })
    }

    #[test]
    fn exclusive_excludes_and_shared_share() {
        let turns = turns();
        let held = enter(&turns, 1, Mode::Exclusive, Wait::Never).unwrap();
        assert!(enter(&turns, 1, Mode::Exclusive, Wait::Never).is_none());
        assert!(enter(&turns, 1, Mode::Shared, Wait::Never).is_none());
        assert!(enter(&turns, 2, Mode::Exclusive, Wait::Never).is_some());
        drop(held);
        let a = enter(&turns, 1, Mode::Shared, Wait::Never).unwrap();
        let b = enter(&turns, 1, Mode::Shared, Wait::Never).unwrap();
        assert!(enter(&turns, 1, Mode::Exclusive, Wait::Never).is_none());
        drop((a, b));
        assert!(enter(&turns, 1, Mode::Exclusive, Wait::Never).is_some());
    }

    #[test]
    fn waits_until_the_deadline() {
        let turns = turns();
        let _held = enter(&turns, 1, Mode::Exclusive, Wait::Never).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(40);
        assert!(enter(&turns, 1, Mode::Exclusive, Wait::Until(deadline)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(40));
        let waiting = turns.queue(1).state().exclusive_waiting;
        assert_eq!(waiting, 0, "no longer counted");
    }

    #[test]
    fn a_try_waits_for_a_release_under_way_and_only_for_that() {
        let turns = turns();
        let held = enter(&turns, 1, Mode::Exclusive, Wait::Never).unwrap();
        let busy = enter(&turns, 1, Mode::Exclusive, Wait::Never);
        assert!(busy.is_none(), "held, not releasing");
        held.mark_releasing(); // as a release that unlocks does
        let mut try_now = Box::pin(turns.enter(1, Mode::Exclusive, Wait::Never, Duration::MAX));
        let first = poll_once(try_now.as_mut());
        assert!(first.is_pending(), "waits for the unlock to end");
        drop(held);
        assert!(block_on(try_now).is_some());
    }

    #[test]
    fn forgets_keys_nobody_uses() {
        let turns = turns();
        let held: Vec<_> = (0..100)
            .map(|key| enter(&turns, key, Mode::Exclusive, Wait::Never).unwrap())
            .collect();
        assert_eq!(turns.len(), 100);
        drop(held);
        assert_eq!(turns.len(), 0);
    }
}
