//! The lock wait, the one statement pals sends as text (the instant ones are prepared per
//! connection: see `connection`), and a way to run a statement on a shared session so that
//! a caller who goes away mid-statement cannot leave a lock behind.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

fn mode(shared: bool) -> &'static str {
    if shared {
        "_shared"
    } else {
        ""
    }
}

/// Waits for the lock, `lock_timeout_ms` at most (0: no limit), in one round trip. SET
/// LOCAL lasts only for the implicit transaction of this multi-statement query, so the
/// session keeps its own settings, and the session-level lock outlives that transaction.
/// statement_timeout is lifted so that a server or role default cannot cut the wait short.
pub(crate) fn wait_lock(key: i64, shared: bool, lock_timeout_ms: u64) -> String {
    format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {lock_timeout_ms}; \
         SELECT pg_advisory_lock{}({key})",
        mode(shared)
    )
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A statement that runs to completion even if the future awaiting it is dropped: the rest
/// of it then runs on the library's runtime, and `if_abandoned` gets its result.
///
/// On a session shared by many locks, a statement cut off mid-way would leave the session
/// in an unknown state that closing it cannot fix without dropping every other lock on it.
pub(crate) struct Detached<T: Send + 'static> {
    future: Option<BoxFuture<T>>,
    if_abandoned: Option<Box<dyn FnOnce(T) + Send>>,
    rt: Handle,
}

impl<T: Send + 'static> Detached<T> {
    pub(crate) fn new(rt: &Handle, future: impl Future<Output = T> + Send + 'static) -> Self {
        Detached {
            future: Some(Box::pin(future)),
            if_abandoned: None,
            rt: rt.clone(),
        }
    }

    /// What to do with the result if nobody is waiting for it any more.
    pub(crate) fn if_abandoned(mut self, handle: impl FnOnce(T) + Send + 'static) -> Self {
        self.if_abandoned = Some(Box::new(handle));
        self
    }
}

impl<T: Send + 'static> Future for Detached<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let future = self.future.as_mut().expect("polled after completion");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        let if_abandoned = self.if_abandoned.take();
        self.rt.spawn(async move {
            let output = future.await;
            if let Some(handle) = if_abandoned {
                handle(output);
            }
        });
    }
}
