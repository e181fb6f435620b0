//! In-process queueing: callers in one process that want the same lock wait here, in
//! memory, instead of each holding a database connection while it waits.
//!
//! Each key has a fair (FIFO) semaphore: an exclusive lock takes every permit, a shared
//! lock takes one. Only a caller that holds the in-process permit goes to the database, so
//! 50 tasks contending for one lock use one connection, not 50.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{runtime, Mode};

/// Permits of a key's semaphore; an exclusive holder takes them all.
const ALL_PERMITS: u32 = 1 << 30;

/// The per-key queues of one locker.
#[derive(Default)]
pub(crate) struct Queues {
    by_key: Mutex<HashMap<i64, Weak<Semaphore>>>,
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

/// The right to go to the database for a key, held until the lock is released there.
pub(crate) struct InProcessPermit {
    // Field order matters: the permit must drop before the entry is checked for removal.
    _permit: OwnedSemaphorePermit,
    _entry: Entry,
}

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

impl Queues {
    fn semaphore(&self, key: i64) -> Arc<Semaphore> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = by_key.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let created = Arc::new(Semaphore::new(ALL_PERMITS as usize));
        by_key.insert(key, Arc::downgrade(&created));
        created
    }

    /// Waits for this process's turn at `key`. `None`: the wait ended before it came.
    pub(crate) async fn enter(
        self: &Arc<Self>,
        key: i64,
        mode: Mode,
        wait: Wait,
        rt: &Handle,
    ) -> Option<InProcessPermit> {
        let entry = Entry {
            key,
            queues: Arc::clone(self),
        };
        let semaphore = self.semaphore(key);
        let permits = match mode {
            Mode::Shared => 1,
            Mode::Exclusive => ALL_PERMITS,
        };
        let permit = match wait {
            Wait::Never => semaphore.try_acquire_many_owned(permits).ok(),
            Wait::Until(deadline) => {
                let acquire = semaphore.acquire_many_owned(permits);
                runtime::until(rt, deadline, acquire)
                    .await
                    .and_then(Result::ok)
            }
            Wait::Forever => semaphore.acquire_many_owned(permits).await.ok(),
        };
        Some(InProcessPermit {
            _permit: permit?,
            _entry: entry,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{block_on, handle};
    use std::time::Duration;

    #[test]
    fn exclusive_excludes_and_shared_share() {
        let rt = handle().unwrap();
        let queues = Arc::new(Queues::default());
        let held = block_on(queues.enter(1, Mode::Exclusive, Wait::Never, &rt)).unwrap();
        assert!(block_on(queues.enter(1, Mode::Exclusive, Wait::Never, &rt)).is_none());
        assert!(block_on(queues.enter(1, Mode::Shared, Wait::Never, &rt)).is_none());
        assert!(block_on(queues.enter(2, Mode::Exclusive, Wait::Never, &rt)).is_some());
        drop(held);
        let a = block_on(queues.enter(1, Mode::Shared, Wait::Never, &rt)).unwrap();
        let b = block_on(queues.enter(1, Mode::Shared, Wait::Never, &rt)).unwrap();
        assert!(block_on(queues.enter(1, Mode::Exclusive, Wait::Never, &rt)).is_none());
        drop((a, b));
        assert!(block_on(queues.enter(1, Mode::Exclusive, Wait::Never, &rt)).is_some());
    }

    #[test]
    fn waits_until_the_deadline() {
        let rt = handle().unwrap();
        let queues = Arc::new(Queues::default());
        let _held = block_on(queues.enter(1, Mode::Exclusive, Wait::Never, &rt)).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(40);
        let waited = block_on(queues.enter(1, Mode::Exclusive, Wait::Until(deadline), &rt));
        assert!(waited.is_none());
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn forgets_keys_nobody_uses() {
        let rt = handle().unwrap();
        let queues = Arc::new(Queues::default());
        let permits: Vec<_> = (0..100)
            .map(|key| block_on(queues.enter(key, Mode::Exclusive, Wait::Never, &rt)).unwrap())
            .collect();
        assert_eq!(queues.len(), 100);
        drop(permits);
        assert_eq!(queues.len(), 0);
    }
}
