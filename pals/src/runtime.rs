//! The runtime pals owns: one background thread that drives every database connection.
//!
//! A `tokio_postgres::Connection` dies with the runtime that polls it. Callers come from
//! `#[tokio::test]`s (one runtime each, shut down at the end of the test), from
//! current-thread runtimes and from plain threads, so connections must not live on the
//! caller's runtime. They live here; callers only talk to them through channels, which
//! work from anywhere. Timers used by the acquire path are registered here too, so the
//! async API needs no timer driver from the caller.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::Error;

static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();

/// The handle of the library's runtime, starting its thread on first use.
pub(crate) fn handle() -> Result<Handle, Error> {
    RUNTIME.get_or_init(start).clone().map_err(Error::Runtime)
}

fn start() -> Result<Handle, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("pals-runtime")
        .build()
        .map_err(|e| e.to_string())?;
    let handle = runtime.handle().clone();
    thread::Builder::new()
        .name("pals-runtime".into())
        // The thread drives spawned connection tasks and timers forever; the process
        // exit closes the sockets, which frees every lock they hold.
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| e.to_string())?;
    Ok(handle)
}

/// Runs `fut` to completion, returning `None` if `deadline` passes first.
///
/// The timer belongs to the library's runtime, so this works under any executor.
pub(crate) async fn until<F: Future>(rt: &Handle, deadline: Instant, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    // The timer is made only if `fut` is not ready at once: the uncontended path skips it.
    let mut sleep = pin!(None::<tokio::time::Sleep>);
    poll_fn(|cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if sleep.is_none() {
            let _entered = rt.enter();
            sleep.set(Some(tokio::time::sleep_until(deadline.into())));
        }
        let sleep = sleep.as_mut().as_pin_mut().expect("the timer was just set");
        sleep.poll(cx).map(|()| None)
    })
    .await
}

/// Runs `fut` to completion, returning `None` if `limit` passes first (a limit too far to
/// reach is none).
pub(crate) async fn within<F: Future>(rt: &Handle, limit: Duration, fut: F) -> Option<F::Output> {
    match Instant::now().checked_add(limit) {
        Some(deadline) => until(rt, deadline, fut).await,
        None => Some(fut.await),
    }
}

/// Sleeps until `deadline` on the library's runtime's timer (so under any executor).
pub(crate) async fn sleep_until(rt: &Handle, deadline: Instant) {
    until(rt, deadline, std::future::pending::<()>()).await;
}

/// Returns `Pending` once (waking its task at once), then `Ready`. Polled first by
/// [`poll_once`] in a drop, it ends that poll: the rest of the future runs where it is
/// spawned (the library's runtime), after whatever the dropping thread does next.
pub(crate) async fn yield_once() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Polls `fut` once, with a waker that does nothing: for starting work (sending a request)
/// before handing the future to a runtime, whose first poll registers its own waker.
pub(crate) fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    static NOOP: OnceLock<Waker> = OnceLock::new();
    let waker = NOOP.get_or_init(|| Waker::from(Arc::new(Noop)));
    fut.poll(&mut Context::from_waker(waker))
}

/// Runs `fut` on the calling thread, parking it between polls.
///
/// Unlike `Runtime::block_on`, this never panics inside a runtime's worker thread: the
/// blocking API may be called from anywhere. (Inside a current-thread runtime it blocks that
/// runtime: a lock held by another task of the same runtime cannot be released meanwhile.) The futures it runs only wait on channels and
/// timers served by the library's runtime, so parking this thread cannot stall them.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    // Inside a tokio task, tokio's cooperative budget would make its futures return
    // Pending once the task's budget is spent and defer the wake-up until the task yields
    // to its scheduler, which this loop never does: the thread would park forever.
    let mut fut = pin!(tokio::task::unconstrained(fut));
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_times_out_without_a_caller_runtime() {
        let rt = handle().unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(30);
        let out = block_on(until(&rt, deadline, std::future::pending::<()>()));
        assert!(out.is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn until_returns_the_output_when_ready() {
        let rt = handle().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(block_on(until(&rt, deadline, async { 7 })), Some(7));
    }
}
