//! [`Background`]: the releases that go on after their caller has moved on (a dropped
//! guard, `LockGuard::release_at`, a handed-over lock whose taker went away), run on the
//! library's runtime and counted, so that `Locker::wait_for_releases` can wait for them.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Notify;

/// One locker's background releases: where they run, and how many are under way.
pub(crate) struct Background {
    rt: Handle,
    under_way: AtomicUsize,
    none_left: Notify,
}

/// One background release, counted while this lives.
pub(crate) struct Counted(Arc<Background>);

impl Background {
    /// Background releases that run on `rt` (the library's runtime).
    pub(crate) fn new(rt: Handle) -> Background {
        Background {
            rt,
            under_way: AtomicUsize::new(0),
            none_left: Notify::new(),
        }
    }

    /// The library's runtime.
    pub(crate) fn rt(&self) -> &Handle {
        &self.rt
    }

    /// Counts one release under way until the returned token is dropped.
    pub(crate) fn count(self: &Arc<Self>) -> Counted {
        self.under_way.fetch_add(1, Ordering::AcqRel);
        Counted(Arc::clone(self))
    }

    /// Runs `release` on the library's runtime, counted until it is done.
    pub(crate) fn spawn(self: &Arc<Self>, release: impl Future<Output = ()> + Send + 'static) {
        let counted = self.count();
        self.rt.spawn(async move {
            let _counted = counted;
            release.await;
        });
    }

    /// Completes once no background release is under way.
    pub(crate) async fn none_left(&self) {
        loop {
            let none_left = self.none_left.notified();
            let mut none_left = pin!(none_left);
            none_left.as_mut().enable(); // before the check: a last release is not missed
            if self.under_way.load(Ordering::Acquire) == 0 {
                return;
            }
            none_left.await;
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.under_way.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}
