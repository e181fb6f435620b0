//! How a `once_per` body's value says its run ended: an `Err` failed (with its text where
//! the error has one), anything else succeeded. Chosen by autoref specialisation at the
//! call site, where the return type is known:
//! `(&&&&Classify(&output)).ended()` tries `Result<_, E: Display>`, then
//! `Result<_, E: Debug>`, then any `Result`, then any value.

use std::fmt::{Debug, Display};

use crate::once::Ended;

/// A body's value, to be classified.
#[doc(hidden)]
pub struct Classify<'a, T>(pub &'a T);

#[doc(hidden)]
pub trait EndedDisplay {
    fn ended(&self) -> Ended;
}

impl<T, E: Display> EndedDisplay for &&&Classify<'_, Result<T, E>> {
    fn ended(&self) -> Ended {
        match self.0 {
            Ok(_) => Ended::Succeeded,
            Err(error) => Ended::Failed(Some(error.to_string())),
        }
    }
}

#[doc(hidden)]
pub trait EndedDebug {
    fn ended(&self) -> Ended;
}

impl<T, E: Debug> EndedDebug for &&Classify<'_, Result<T, E>> {
    fn ended(&self) -> Ended {
        match self.0 {
            Ok(_) => Ended::Succeeded,
            Err(error) => Ended::Failed(Some(format!("{error:?}"))),
        }
    }
}

#[doc(hidden)]
pub trait EndedErr {
    fn ended(&self) -> Ended;
}

impl<T, E> EndedErr for &Classify<'_, Result<T, E>> {
    fn ended(&self) -> Ended {
        match self.0 {
            Ok(_) => Ended::Succeeded,
            Err(_) => Ended::Failed(None),
        }
    }
}

#[doc(hidden)]
pub trait EndedAny {
    fn ended(&self) -> Ended;
}

impl<T> EndedAny for Classify<'_, T> {
    fn ended(&self) -> Ended {
        Ended::Succeeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct DebugOnly;
    struct Opaque;

    // The borrows choose the impl, as at the attribute's call site.
    #[allow(clippy::needless_borrow)]
    #[test]
    fn values_say_how_runs_ended() {
        let displayed: Result<(), &str> = Err("disk full");
        assert_eq!(
            (&&&&Classify(&displayed)).ended(),
            Ended::Failed(Some("disk full".into()))
        );
        let debugged: Result<(), DebugOnly> = Err(DebugOnly);
        assert_eq!(
            (&&&&Classify(&debugged)).ended(),
            Ended::Failed(Some("DebugOnly".into()))
        );
        let opaque: Result<(), Opaque> = Err(Opaque);
        assert_eq!((&&&&Classify(&opaque)).ended(), Ended::Failed(None));
        let fine: Result<u8, Opaque> = Ok(1);
        assert_eq!((&&&&Classify(&fine)).ended(), Ended::Succeeded);
        assert_eq!((&&&&Classify(&None::<u8>)).ended(), Ended::Succeeded);
        assert_eq!((&&&&Classify(&())).ended(), Ended::Succeeded);
    }
}
