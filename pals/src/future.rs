//! The few future combinators pals uses everywhere: [`unless`] (work, unless a signal comes
//! first), [`poll_once`] (start work before handing it to a runtime) and [`yield_once`].

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// Runs `work` unless `signal` completes first: `Some(output)`, or `None` and `work` is
/// dropped where it stands. `work` is polled first at every wake-up, so work that finishes
/// as the signal comes stands, and a signal that is costly to start (a timer) is started
/// only if the work is not done at once.
pub(crate) async fn unless<W: Future, S: Future>(work: W, signal: S) -> Option<W::Output> {
    let mut work = pin!(work);
    let mut signal = pin!(signal);
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        signal.as_mut().poll(cx).map(|_| None)
    })
    .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_done_at_once_wins_over_a_signal_that_is_ready_too() {
        let both = unless(std::future::ready(1), std::future::ready(()));
        assert_eq!(poll_once(pin!(both)), Poll::Ready(Some(1)));
        let stopped = unless(std::future::pending::<u8>(), std::future::ready(()));
        assert_eq!(poll_once(pin!(stopped)), Poll::Ready(None));
        let neither = unless(std::future::pending::<u8>(), std::future::pending::<()>());
        assert_eq!(poll_once(pin!(neither)), Poll::Pending);
    }
}
