//! [`OnDrop`]: the one drop guard, for work that must run however a scope ends (return,
//! `?`, panic, a future dropped mid-way).

/// Runs its closure when dropped.
pub(crate) struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    /// Runs `f` when this is dropped.
    pub(crate) fn new(f: F) -> OnDrop<F> {
        OnDrop(Some(f))
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn runs_once_when_dropped() {
        let runs = Cell::new(0);
        let guard = OnDrop::new(|| runs.set(runs.get() + 1));
        assert_eq!(runs.get(), 0);
        drop(guard);
        assert_eq!(runs.get(), 1);
    }
}
