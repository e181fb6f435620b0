//! Panics caught where a body runs, so that what it was doing can be written down (a
//! `once_per` run's history says "panicked: ..."), and then let go on: every caught panic
//! is resumed by its catcher. The body is taken as unwind-safe for that reason: nothing it
//! touched is used between the catch and the resume, except to record the message.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A panic caught in a body, to be resumed once it is recorded.
pub struct Caught(Box<dyn Any + Send + 'static>);

impl Caught {
    /// The panic's message: its `&str` or `String` payload (what `panic!` makes), or a
    /// placeholder for another payload.
    pub(crate) fn message(&self) -> String {
        if let Some(text) = self.0.downcast_ref::<&str>() {
            return (*text).to_string();
        }
        match self.0.downcast_ref::<String>() {
            Some(text) => text.clone(),
            None => "a panic with a payload that is not text".to_string(),
        }
    }

    /// Goes on with the panic, where it was caught.
    pub(crate) fn resume(self) -> ! {
        std::panic::resume_unwind(self.0)
    }
}

impl std::fmt::Debug for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Caught").field(&self.message()).finish()
    }
}

/// Runs `body`, catching a panic.
pub fn caught_sync<T>(body: impl FnOnce() -> T) -> Result<T, Caught> {
    catch_unwind(AssertUnwindSafe(body)).map_err(Caught)
}

/// `body`, with a panic in any of its polls caught: the future then ends with it.
pub fn caught<F: Future>(body: F) -> CaughtFuture<F> {
    CaughtFuture(Box::pin(body))
}

/// See [`caught`]. Boxed: a body future may be large, and this moves.
pub struct CaughtFuture<F>(Pin<Box<F>>);

impl<F: Future> Future for CaughtFuture<F> {
    type Output = Result<F::Output, Caught>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let body = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| body.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(Caught(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_caught_panics() {
        let literal = caught_sync(|| panic!("plain")).unwrap_err();
        let formatted = caught_sync(|| panic!("{} {}", "with", 2)).unwrap_err();
        let other = caught_sync(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(literal.message(), "plain");
        assert_eq!(formatted.message(), "with 2");
        assert!(other.message().contains("not text"));
        assert_eq!(caught_sync(|| 5).unwrap(), 5);
    }
}
