//! What an annotated function returns instead of running its body: the error (a busy lock
//! under `on_busy = "error"`, or a failure), or the type's skipped value.

use std::marker::PhantomData;

use super::report::skip_failure;
use super::LockSpec;
use crate::error::Error;
use crate::outcome::Outcome;

/// Return types that can carry a [`pals::Error`](crate::Error) out of a function annotated
/// with `#[pals::exclusive]` (`on_busy = "error"`, the default).
///
/// Implemented for `Result<T, E>` where `E: From<pals::Error>`; implement it for your own
/// return types if they have a way to report the error.
///
/// ```
/// use pals::LockErrorReturn;
/// let r: Result<(), pals::Error> = LockErrorReturn::from_lock_error(pals::Error::NotConfigured);
/// assert!(r.is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[pals::exclusive]` cannot return a lock error as `{Self}`",
    label = "this return type cannot carry a `pals::Error`",
    note = "with on_busy = \"error\" (the default), return `Result<T, E>` where `E: From<pals::Error>`",
    note = "or use on_busy = \"skip\" to skip the body when the lock is busy"
)]
pub trait LockErrorReturn {
    /// The value that returns `error` to the caller.
    fn from_lock_error(error: Error) -> Self;
}

impl<T, E: From<Error>> LockErrorReturn for Result<T, E> {
    fn from_lock_error(error: Error) -> Self {
        Err(E::from(error))
    }
}

/// Return types with a "skipped" value: what a function annotated with
/// `#[pals::exclusive(on_busy = "skip")]` (or `once_per`) returns when its body did not
/// run: the lock was busy, or lost under `on_lost = "cancel"`, or could not be taken for a
/// failure that is not a misconfiguration (logged), or a `once_per` tick ran already.
///
/// `()` for `()`, `None` for `Option<T>`, [`Outcome::Skipped`] for [`Outcome<T>`],
/// `Ok(T::skipped())` for `Result<T, E>`. Implement it for your own types:
///
/// ```
/// #[derive(Debug, PartialEq)]
/// enum Run { Done(u32), Skipped }
/// impl pals::Skippable for Run {
///     fn skipped() -> Self { Run::Skipped }
/// }
/// assert_eq!(<Result<Run, pals::Error> as pals::Skippable>::skipped().unwrap(), Run::Skipped);
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[pals::exclusive]` has no skipped value for `{Self}`",
    label = "no skipped value for this return type",
    note = "with on_busy = \"skip\" or once_per, a call that does not run its body returns the skipped value",
    note = "skipped values exist for `()`, `Option<T>`, `pals::Outcome<T>` and `Result<T, E>` whose `T` has one",
    note = "implement `pals::Skippable` for your type, or (without once_per) use on_busy = \"error\""
)]
pub trait Skippable {
    /// The value returned in place of running the body.
    fn skipped() -> Self;
}

impl Skippable for () {
    fn skipped() -> Self {}
}

impl<T> Skippable for Option<T> {
    fn skipped() -> Self {
        None
    }
}

impl<T: Skippable, E> Skippable for Result<T, E> {
    fn skipped() -> Self {
        Ok(T::skipped())
    }
}

impl<T> Skippable for Outcome<T> {
    fn skipped() -> Self {
        Outcome::Skipped
    }
}

/// The return value for a busy lock under `on_busy = "error"`, and for a failed acquire.
#[doc(hidden)]
pub fn error_return<R: LockErrorReturn>(error: Error) -> R {
    R::from_lock_error(error)
}

/// The return value for a busy lock under `on_busy = "skip"`.
#[doc(hidden)]
pub fn skipped_return<R: Skippable>() -> R {
    R::skipped()
}

/// A failed acquire under `on_busy = "skip"`: returned as an error where the return type
/// can carry one; else a misconfiguration panics and any other failure is logged and
/// skipped. Chosen by autoref specialisation at the call site:
/// `(&&OnFailure::<R>::new()).resolve(error, &lock, &spec)`.
#[doc(hidden)]
pub struct OnFailure<R>(PhantomData<fn() -> R>);

impl<R> OnFailure<R> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        OnFailure(PhantomData)
    }
}

/// What to do with a failed acquire under `on_busy = "skip"`.
#[doc(hidden)]
pub enum Resolved<R> {
    /// Return this (the error, carried by the return type).
    Return(R),
    /// Return the skipped value (the failure was logged).
    Skip,
}

#[doc(hidden)]
pub trait ReturnFailure<R> {
    fn resolve(&self, error: Error, lock: &str, spec: &LockSpec) -> Resolved<R>;
}

impl<R: LockErrorReturn> ReturnFailure<R> for &OnFailure<R> {
    fn resolve(&self, error: Error, _: &str, _: &LockSpec) -> Resolved<R> {
        Resolved::Return(R::from_lock_error(error))
    }
}

#[doc(hidden)]
pub trait SkipFailure<R> {
    fn resolve(&self, error: Error, lock: &str, spec: &LockSpec) -> Resolved<R>;
}

// No bound here: a return type without a skipped value is reported once, by the
// `skipped_return` call the skip path makes anyway.
impl<R> SkipFailure<R> for OnFailure<R> {
    // A misconfiguration's panic points at the annotated function.
    #[track_caller]
    fn resolve(&self, error: Error, lock: &str, spec: &LockSpec) -> Resolved<R> {
        skip_failure(&error, lock, spec.function);
        Resolved::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_tells_a_skip_from_a_value() {
        assert_eq!(Outcome::Ran(None::<u32>).ran(), Some(None));
        assert_eq!(<Outcome<Option<u32>> as Skippable>::skipped().ran(), None);
        assert!(<Outcome<()> as Skippable>::skipped().is_skipped());
        assert!(!Outcome::Ran(()).is_skipped());
        assert_eq!(
            <Result<Outcome<u8>, Error> as Skippable>::skipped().unwrap(),
            Outcome::Skipped
        );
    }
}
