//! [`Stop`]: the signal of a graceful stop, remembered once it has come, as
//! `Election::run_until` races its campaign and notes it while a body runs.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

/// A stop signal that is remembered once it has come.
pub(super) struct Stop<S> {
    signal: Option<Pin<Box<S>>>,
}

impl<S: Future<Output = ()>> Stop<S> {
    pub(super) fn new(signal: S) -> Stop<S> {
        Stop {
            signal: Some(Box::pin(signal)),
        }
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.signal.is_none()
    }

    /// Ready once the stop has come (and from then on).
    fn poll_stopped(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &mut this.signal {
            None => Poll::Ready(()),
            Some(signal) => {
                ready!(signal.as_mut().poll(cx));
                this.signal = None;
                Poll::Ready(())
            }
        }
    }

    /// `work`'s output, or `None` if the stop comes first. The stop is looked at first: a
    /// stop that has come leaves `work` unpolled (a campaign never sent).
    pub(super) async fn unless_stopped<F: Future>(
        mut self: Pin<&mut Self>,
        work: F,
    ) -> Option<F::Output> {
        let mut work = pin!(work);
        poll_fn(|cx| {
            if self.as_mut().poll_stopped(cx).is_ready() {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Runs `work` to its end, noting a stop that comes meanwhile.
    pub(super) async fn noting<F: Future>(mut self: Pin<&mut Self>, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            let _ = self.as_mut().poll_stopped(cx);
            work.as_mut().poll(cx)
        })
        .await
    }
}
