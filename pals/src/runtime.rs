//! The runtime pals owns: one background thread that drives every database connection, and
//! [`block_on`] for the blocking API.
//!
//! A `tokio_postgres::Connection` dies with the runtime that polls it. Callers come from
//! `#[tokio::test]`s (one runtime each, shut down at the end of the test), from
//! current-thread runtimes and from plain threads, so connections must not live on the
//! caller's runtime. They live here; callers only talk to them through channels, which
//! work from anywhere. Timers used by the acquire path are registered here too (see
//! `deadline`), so the async API needs no timer driver from the caller.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::runtime::Handle;

use crate::error::Error;

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

/// Runs `fut` on the calling thread, parking it between polls.
///
/// Unlike `Runtime::block_on`, this never panics inside a runtime's worker thread: the
/// blocking API may be called from anywhere. (Inside a current-thread runtime it blocks that
/// runtime: a lock held by another task of the same runtime cannot be released meanwhile.)
/// The futures it runs only wait on channels and timers served by the library's runtime, so
/// parking this thread cannot stall them.
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
