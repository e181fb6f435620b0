//! [`Observer`]: following an election's leader, from any replica. A new leader is heard at
//! once (its `NOTIFY`); a leader that dies with nobody to take over is seen at the next
//! recheck, since a process that dies says nothing.

use std::fmt;
use std::pin::pin;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::term::{parse_micros, Leader};
use super::Election;
use crate::coordination::Event;
use crate::sql::LEADER_CHANNEL;

impl Observer {
    /// Starts following `election` on the library's runtime.
    pub(super) fn start(election: &Election) -> Observer {
        let (tell, changes) = mpsc::unbounded_channel();
        let task = election.core.rt().spawn(observe(election.clone(), tell));
        Observer {
            changes,
            task: task.abort_handle(),
        }
    }
}

/// Follows one election for an [`Observer`]; ends when the observer is dropped.
async fn observe(election: Election, tell: mpsc::UnboundedSender<Option<Leader>>) {
    let key = election.lock.key();
    let mut events = election.coordination.subscribe();
    let rt = election.core.rt().clone();
    events.up(&rt, election.core.connect_timeout).await;
    let mut seen = Seen::default();
    loop {
        match election.leader().await {
            Ok(leader) => {
                if let Some(change) = seen.change(leader, true) {
                    if tell.send(change).is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "pals: an observer could not read the leader"),
        }
        let recheck = tokio::time::sleep(election.recheck);
        let mut recheck = pin!(recheck);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Event::Notified { channel, payload }) if &*channel == LEADER_CHANNEL => {
                        let Some(leader) = parse_announcement(&payload, key) else { continue };
                        if let Some(change) = seen.change(Some(leader), false) {
                            if tell.send(change).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Event::Notified { .. }) => {}
                    Some(Event::Resync) => break,
                    None => recheck.as_mut().await,
                },
                _ = recheck.as_mut() => break,
                _ = tell.closed() => return,
            }
        }
    }
}

/// What an observer has told: changes only.
#[derive(Default)]
struct Seen {
    told: bool,
    current: Option<Leader>,
    /// The highest fencing token told: an announcement of an older term is stale.
    highest: u64,
}

impl Seen {
    /// `leader` as the database says it now (`read`), or as an announcement says it (which
    /// may come late: one older than the highest told is ignored). A read is the truth,
    /// even with a lower token than told before (the sequence was reset by hand).
    fn change(&mut self, leader: Option<Leader>, read: bool) -> Option<Option<Leader>> {
        let changed = match &leader {
            _ if !self.told => true,
            Some(new) if !read => new.fence > self.highest,
            _ => leader != self.current,
        };
        if !changed {
            return None;
        }
        self.told = true;
        if let Some(new) = &leader {
            self.highest = if read {
                new.fence
            } else {
                self.highest.max(new.fence)
            };
        }
        self.current = leader.clone();
        Some(leader)
    }
}

/// Each change of an election's leader; made by [`Election::observe`].
pub struct Observer {
    changes: mpsc::UnboundedReceiver<Option<Leader>>,
    task: AbortHandle,
}

impl Observer {
    /// The leader after the next change: the current one on the first call, then each new
    /// leader in order, and `None` when a leader is gone and nobody has taken over (yet).
    /// Waits for the next change, forever if none comes (it is not a stream that ends:
    /// `while let Some(..)` would stop at the first "nobody leads"); cancel-safe.
    pub async fn changed(&mut self) -> Option<Leader> {
        match self.changes.recv().await {
            Some(change) => change,
            None => std::future::pending().await, // the task is aborted only on drop
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

/// A leader from a `pals_leader` payload, if it is of the election on `key`.
fn parse_announcement(payload: &str, key: i64) -> Option<Leader> {
    let mut parts = payload.splitn(4, ' ');
    (parts.next()?.parse::<i64>().ok()? == key).then_some(())?;
    let fence = parts.next()?.parse().ok()?;
    let since = parse_micros(parts.next()?)?;
    let identity = parts.next()?.to_string();
    Some(Leader {
        identity,
        since,
        fence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn leader(fence: u64) -> Leader {
        Leader {
            identity: format!("l{fence}"),
            since: UNIX_EPOCH,
            fence,
        }
    }

    #[test]
    fn observers_are_told_changes_in_term_order() {
        let mut seen = Seen::default();
        assert_eq!(
            seen.change(None, true),
            Some(None),
            "the first state is told"
        );
        assert_eq!(seen.change(None, true), None);
        assert_eq!(seen.change(Some(leader(5)), false), Some(Some(leader(5))));
        assert_eq!(seen.change(Some(leader(5)), true), None, "no change");
        assert_eq!(
            seen.change(Some(leader(3)), false),
            None,
            "a late announcement"
        );
        assert_eq!(seen.change(None, true), Some(None));
        assert_eq!(
            seen.change(Some(leader(5)), false),
            None,
            "gone leaders stay gone"
        );
        assert_eq!(seen.change(Some(leader(9)), false), Some(Some(leader(9))));
        // The sequence was reset: the database's word stands, and later terms count.
        assert_eq!(seen.change(Some(leader(1)), true), Some(Some(leader(1))));
        assert_eq!(seen.change(Some(leader(2)), false), Some(Some(leader(2))));
    }

    #[test]
    fn announcements_are_read_back() {
        let parsed = parse_announcement("-7 12 1700000000000000 host a:1", -7).unwrap();
        assert_eq!(parsed.identity(), "host a:1");
        assert_eq!(parsed.fence(), 12);
        assert_eq!(
            parsed.since(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert!(parse_announcement("-7 12 1700000000000000 x", 7).is_none());
    }
}
