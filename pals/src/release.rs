//! How a held lock is let go: handed over in memory to the next caller of this process, or
//! unlocked in the database; and how the next caller takes a lock handed over to it.
//!
//! **The handoff (lock cohorting: Dice, Marathe, Shavit, PPoPP 2012).** An exclusive holder
//! that lets go while another exclusive caller of its locker waits for the same key does not
//! unlock: it parks its database lock with the key's turn (see `turn`) and gives the turn
//! up; whoever gets the turn next (the first waiter, in FIFO order) takes the parked lock:
//! no statement at all. These rules decide it, and are told here only:
//!
//! - **Which locks.** Only plain exclusive locks, held on a live session. A fenced grant
//!   needs a token from the database; a semaphore permit's unlock tells other processes; a
//!   shared holder has no single successor.
//! - **How far.** A run of handoffs is bounded ([`HandoffLimit`]): at most `in_a_row`
//!   handoffs, and none once `within` has passed since the database granted the lock. Past
//!   it, the lock is unlocked in the database, where a waiter of another process is first
//!   in PostgreSQL's queue.
//! - **Drop, then take at once.** A dropped guard's lock is parked even with nobody waiting,
//!   until the library's runtime runs the rest of its release: a caller that asks at once
//!   (the thread that dropped it) takes it; else it is taken back and unlocked.
//! - **Unlocking keeps the turn.** A lock that is not handed over is unlocked with the turn
//!   kept until the unlock's answer is in, so the next caller of this process never finds
//!   it still held in the database.
//! - **Taking over.** The next caller takes what was parked if it can use it; a shared or
//!   fenced caller unlocks it first, and one lost with its session is dropped.
//!
//! Handed over, a lock keeps its guarantees: one holder at a time, and a lock whose session
//! ends is lost for whoever holds it then.

use std::time::Duration;

use crate::error::Error;
use crate::future::yield_once;
use crate::key::Mode;
use crate::on_drop::OnDrop;
use crate::session::SessionLock;
use crate::turn::{Chain, Parked, Parking, Turn};

/// How far a lock may be handed over within the process before it goes back to the
/// database: at most `in_a_row` handoffs, and none once `within` has passed since the
/// database granted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandoffLimit {
    pub(crate) in_a_row: u32,
    pub(crate) within: Duration,
}

/// What runs once a guard has let go of its lock, however it was let go.
pub(crate) type AfterRelease = Box<dyn FnOnce() + Send + Sync>;

/// What a guard owns while the lock is held.
pub(crate) struct Owned {
    /// The lock on its session.
    pub(crate) lock: SessionLock,
    /// This process's turn at the key, given up once the unlock has ended (or with the
    /// lock, when it is handed over).
    pub(crate) turn: Turn,
    /// The run of handoffs the lock is on.
    pub(crate) chain: Chain,
    /// Run once the guard has let go: its unlock ended, or the lock handed over, or the
    /// release dropped mid-way (a semaphore tells its waiters; a permit is never handed
    /// over).
    pub(crate) after_release: Option<AfterRelease>,
}

impl Owned {
    /// Lets go of the lock: hands it over to a caller of this process that waits for it,
    /// or unlocks it. `park`: a release nobody awaits (a dropped guard), whose lock is
    /// parked even with nobody waiting yet (see the module doc).
    pub(crate) async fn release(self, limit: HandoffLimit, park: bool) -> Result<bool, Error> {
        let Owned {
            lock,
            turn,
            chain,
            after_release,
        } = self;
        // Runs when the release is done, or when this future is dropped mid-way (the
        // unlock is then reconciled in the background; waiters woken early try again).
        let _after = OnDrop::new(move || {
            if let Some(after) = after_release {
                after();
            }
        });
        let (lock, turn) = match hand_over(lock, turn, chain, limit, park) {
            Parking::ToWaiter => return Ok(true),
            Parking::Refused(turn, parked) => (parked.lock, turn),
            Parking::ForWhoeverComes(reclaim) => {
                yield_once().await;
                match reclaim.take_back() {
                    Some(both) => both,
                    None => return Ok(true), // taken by a caller of this process
                }
            }
        };
        let released = lock.release().await;
        // Only now may the next caller of this process go to the database.
        drop(turn);
        released
    }
}

/// Hands `lock` over if the rules allow (see the module doc): to an exclusive caller that
/// waits, or, with `park`, to whoever comes first. A shared turn is refused without being
/// marked releasing (it is never waited for).
fn hand_over(
    lock: SessionLock,
    turn: Turn,
    chain: Chain,
    limit: HandoffLimit,
    park: bool,
) -> Parking {
    let parked = Parked {
        lock,
        chain: Chain {
            handed: chain.handed.saturating_add(1),
            ..chain
        },
    };
    if turn.mode() != Mode::Exclusive {
        return Parking::Refused(turn, parked);
    }
    // Asked under the key's mutex: the cheap tests first, the session's books and the
    // clock only when a handoff is wanted.
    let allowed = |awaited: bool, parked: &Parked| {
        (awaited || park)
            && parked.chain.handed <= limit.in_a_row
            && parked.lock.can_be_handed_over()
            && parked.chain.granted_at.elapsed() < limit.within
    };
    turn.park_if(parked, allowed)
}

/// The lock its last holder in this process handed over with the turn, if a caller in
/// `mode` (`fenced`: its grant needs a token) can use it; one it cannot is unlocked first,
/// and one lost with its session is dropped.
pub(crate) async fn take_over(
    parked: Option<Box<Parked>>,
    mode: Mode,
    fenced: bool,
) -> Option<Parked> {
    let parked = *parked?;
    if parked.lock.is_lost() {
        return None;
    }
    if mode == Mode::Exclusive && !fenced {
        return Some(parked);
    }
    if let Err(error) = parked.lock.release().await {
        tracing::warn!(%error, "pals: unlocking a handed-over lock failed; its session was closed");
    }
    None
}
