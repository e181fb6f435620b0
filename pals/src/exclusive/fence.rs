//! The fencing token of `#[pals::exclusive(fenced = true)]`, as the body reads it:
//! [`current_fence`].

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;

use super::Scope;

thread_local! {
    /// The token of the sync fenced function running on this thread.
    static SYNC_FENCE: Cell<Option<u64>> = const { Cell::new(None) };
}

tokio::task_local! {
    /// The token of the async fenced function running in this task.
    static TASK_FENCE: Option<u64>;
}

/// The fencing token of the lock held by the innermost `#[pals::exclusive(fenced = true)]`
/// function running here: on this thread for a sync function, in this task for an async
/// one (a task it spawns does not inherit it: pass the number on). `None` anywhere else.
///
/// ```
/// # fn url() -> String { pals_devdb::db_url().unwrap() }
/// static LOCKER: std::sync::LazyLock<pals::Locker> =
///     std::sync::LazyLock::new(|| pals::Locker::new("doc-current-fence", &url()).unwrap());
///
/// #[pals::exclusive(name = "ledger", fenced = true, locker = &LOCKER)]
/// async fn append(entry: &str) -> Result<u64, pals::Error> {
///     let token = pals::current_fence().expect("set for the body");
///     // ... write `entry` where the store refuses tokens lower than the highest seen ...
///     Ok(token)
/// }
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// let first = append("a").await?;
/// assert!(append("b").await? > first);
/// assert_eq!(pals::current_fence(), None);
/// # Ok(()) }
/// ```
pub fn current_fence() -> Option<u64> {
    SYNC_FENCE
        .with(Cell::get)
        .or_else(|| TASK_FENCE.try_with(|token| *token).ok().flatten())
}

/// A sync body's fencing token, set while this lives (the previous one is restored).
#[doc(hidden)]
pub struct SyncFence(Option<u64>);

impl SyncFence {
    pub fn enter(scope: &Scope) -> SyncFence {
        SyncFence(SYNC_FENCE.with(|fence| fence.replace(scope.fence())))
    }
}

impl Drop for SyncFence {
    fn drop(&mut self) {
        SYNC_FENCE.with(|fence| fence.set(self.0));
    }
}

/// Runs an async body with its fencing token readable by [`current_fence`]. While it is
/// polled, a sync fenced function's token (one that blocks on this body) is hidden: the
/// innermost function's token is the one read.
#[doc(hidden)]
pub async fn with_fence<F: Future>(scope: &Scope, body: F) -> F::Output {
    let mut body = pin!(TASK_FENCE.scope(scope.fence(), body));
    poll_fn(|cx| {
        let outer = SYNC_FENCE.with(|fence| fence.replace(None));
        let polled = body.as_mut().poll(cx);
        SYNC_FENCE.with(|fence| fence.set(outer));
        polled
    })
    .await
}
