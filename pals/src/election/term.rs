//! [`Leader`] and [`Term`]: who leads an election, as anyone reads it and as the leader's
//! body sees its own term.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Who leads an election, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub(super) identity: String,
    pub(super) since: SystemTime,
    pub(super) fence: u64,
}

impl Leader {
    /// The leader's identity (see [`Election::identity`](super::Election::identity)).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// When it was elected (the database server's clock).
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// The fencing token of its term: greater for every later term.
    pub fn fence(&self) -> u64 {
        self.fence
    }
}

/// One term of leadership, as the body of [`Election::run`](crate::Election::run) sees it.
pub struct Term {
    pub(super) leader: Leader,
    pub(super) dead: watch::Receiver<bool>,
}

impl Term {
    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.leader.identity
    }

    /// The fencing token of this term (see [`Lock::fenced`](crate::Lock::fenced)): pass it with every write
    /// the leader makes, so that a deposed leader's late writes are refused.
    pub fn fence(&self) -> u64 {
        self.leader.fence
    }

    /// When this term began.
    pub fn since(&self) -> SystemTime {
        self.leader.since
    }

    /// False once leadership is known to be lost.
    pub fn is_leader(&self) -> bool {
        !*self.dead.borrow()
    }

    /// Completes when leadership is known to be lost (see [`LockGuard::lost`](crate::LockGuard::lost)).
    /// [`Election::run`](super::Election::run) already drops the body then; this is for work the body hands
    /// elsewhere.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut dead = self.dead.clone();
        async move {
            let _ = dead.wait_for(|dead| *dead).await;
        }
    }
}

impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Term")
            .field("leader", &self.leader)
            .field("is_leader", &self.is_leader())
            .finish()
    }
}

/// Microseconds since the epoch, as the leaders table and announcements write them.
pub(super) fn parse_micros(micros: &str) -> Option<SystemTime> {
    let micros: i64 = micros.parse().ok()?;
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}
