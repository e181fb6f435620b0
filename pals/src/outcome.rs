//! [`Outcome`]: the body's value, or word that it did not run.

/// What a function annotated with `#[pals::exclusive(on_busy = "skip")]` (or `once_per`)
/// returns when a skip must be told apart from a value of the body, and what
/// [`OncePer::run`](crate::OncePer::run) returns: [`Ran`](Outcome::Ran) with the body's
/// value, or [`Skipped`](Outcome::Skipped) when the body did not run (another holder had the
/// lock, its tick ran already; or see [`Skippable`](crate::Skippable) for the other cases).
///
/// With `Option<T>` as the return type, a skip and the body's own `None` look the same;
/// with `Outcome<Option<T>>` they do not. Inside a `Result`, a skip is `Ok(Outcome::Skipped)`.
///
/// ```
/// use pals::Outcome;
/// # use std::sync::LazyLock;
/// # static LOCKER: LazyLock<pals::Locker> = LazyLock::new(|| pals::Locker::new("doc-outcome",
/// #     &pals_devdb::db_url().unwrap()).unwrap());
///
/// #[pals::exclusive(name = "next-invoice", timeout = "0", on_busy = "skip", locker = &LOCKER)]
/// fn next_invoice() -> Outcome<Option<u32>> {
///     Outcome::Ran(None) // ran, and found nothing to do
/// }
///
/// let outcome = next_invoice();
/// assert_eq!(outcome, Outcome::Ran(None)); // not Outcome::Skipped: nobody else held the lock
/// assert!(!outcome.is_skipped());
/// assert_eq!(outcome.ran(), Some(None));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Outcome<T> {
    /// The lock was taken and the body ran; this is its value.
    Ran(T),
    /// The body did not run: the lock was busy (or its tick ran, with `once_per`; or see
    /// [`Skippable`](crate::Skippable)).
    Skipped,
}

impl<T> Outcome<T> {
    /// The body's value, `None` if the call was skipped.
    pub fn ran(self) -> Option<T> {
        match self {
            Outcome::Ran(value) => Some(value),
            Outcome::Skipped => None,
        }
    }

    /// True if the body did not run.
    pub const fn is_skipped(&self) -> bool {
        matches!(self, Outcome::Skipped)
    }
}
