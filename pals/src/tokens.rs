//! [`Tokens`]: the fencing tokens a locker has seen, per lock, to notice a fence sequence
//! that went backwards.
//!
//! A sequence never goes back by itself, so a grant's token is greater than every token
//! drawn before it: an exclusive grant's than every earlier grant of the lock, a shared
//! grant's than every earlier exclusive one (shared holders hold together: their tokens do
//! not order each other). A token that breaks this says the sequence was set back (by
//! hand, or by a failover to a replica that lagged): fencing is broken, and the grant is
//! refused ([`Error::FenceWentBackwards`]).
//!
//! The memory is bounded: the [`REMEMBERED`] locks seen most recently. A lock not seen for
//! that long is checked again from its next grant on; so is every lock of a new process.
//! It is a tripwire for the common case (a `setval` or `RESTART` while the fleet runs), not
//! a proof: the grants that keep other roles from touching the sequence are the guard (see
//! `LockerBuilder::schema`).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::Error;
use crate::key::Mode;
use crate::loud;

/// How many locks a locker remembers tokens of: the most recently seen.
pub(crate) const REMEMBERED: usize = 10_000;

/// The highest tokens seen per key, of the locks seen most recently.
#[derive(Default)]
pub(crate) struct Tokens(Mutex<Memory>);

#[derive(Default)]
struct Memory {
    by_key: HashMap<i64, Seen>,
    /// Counts what is seen: the age of an entry.
    clock: u64,
}

/// What is known of one lock's tokens.
#[derive(Clone, Copy, Default)]
struct Seen {
    /// The highest token of an exclusive grant.
    exclusive: u64,
    /// The highest token of any grant.
    any: u64,
    /// The highest token of a leaders-table row believed (see [`Tokens::believe_row`]).
    row: u64,
    /// When it was last seen, by `Memory::clock`.
    last: u64,
}

/// A grant whose token is not above what it must exceed.
pub(crate) struct Backwards {
    pub(crate) token: u64,
    pub(crate) highest: u64,
}

impl Tokens {
    /// Checks the token of a grant of `key` in `mode`, and remembers it if it holds: an
    /// exclusive token must exceed every token seen for the key, a shared one every
    /// exclusive token.
    pub(crate) fn grant(&self, key: i64, mode: Mode, token: u64) -> Result<(), Backwards> {
        self.with(key, |seen| {
            let highest = match mode {
                Mode::Exclusive => seen.any,
                Mode::Shared => seen.exclusive,
            };
            if token <= highest {
                return Err(Backwards { token, highest });
            }
            seen.any = seen.any.max(token);
            if mode == Mode::Exclusive {
                seen.exclusive = token;
            }
            Ok(())
        })
    }

    /// Whether a leaders-table row of `key` with `token` may be believed: not older than
    /// the newest token seen for the key (a grant's, or a row's believed before). One that
    /// is believed is remembered. Rows never raise what a grant must exceed: a row written
    /// by hand with a huge token must not make every later grant look backwards.
    pub(crate) fn believe_row(&self, key: i64, token: u64) -> Result<(), Backwards> {
        self.with(key, |seen| {
            let highest = seen.exclusive.max(seen.row);
            if token < highest {
                return Err(Backwards { token, highest });
            }
            seen.row = token;
            Ok(())
        })
    }

    /// Runs `look` on the memory of `key` (made if new), which is then the newest seen;
    /// forgets the oldest half once more than [`REMEMBERED`] keys are known.
    fn with<T>(&self, key: i64, look: impl FnOnce(&mut Seen) -> T) -> T {
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memory.clock += 1;
        let now = memory.clock;
        let seen = memory.by_key.entry(key).or_default();
        seen.last = now;
        let answer = look(seen);
        if memory.by_key.len() > REMEMBERED {
            memory.forget_oldest_half();
        }
        answer
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().by_key.len()
    }
}

impl Memory {
    /// Keeps the half of the keys seen most recently: amortised, a constant per key seen.
    fn forget_oldest_half(&mut self) {
        let mut ages: Vec<u64> = self.by_key.values().map(|seen| seen.last).collect();
        let middle = ages.len() / 2;
        let (_, cut, _) = ages.select_nth_unstable(middle);
        let cut = *cut;
        self.by_key.retain(|_, seen| seen.last >= cut);
    }
}

/// Says, at error level (and on stderr when nothing subscribes: see `loud`), that the fence
/// sequence went backwards: a grant's token (or a leaders row's) was below one seen before.
pub(crate) fn report_backwards(lock: &str, what: &str, backwards: &Backwards) {
    let message = format!(
        "the fence sequence went backwards: was it reset? {what} of lock \"{lock}\" has \
         token {} after {} was seen for this lock",
        backwards.token, backwards.highest
    );
    loud::error(&format!("fence {lock}"), &message);
}

/// The error for a grant of `lock` whose token went backwards, on the sequence `sequence`.
pub(crate) fn backwards_error(lock: &str, sequence: &str, backwards: &Backwards) -> Error {
    Error::FenceWentBackwards {
        name: lock.to_string(),
        token: backwards.token,
        highest: backwards.highest,
        sequence: sequence.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_tokens_pass_every_token_and_shared_ones_every_exclusive_one() {
        let tokens = Tokens::default();
        assert!(tokens.grant(1, Mode::Shared, 5).is_ok());
        assert!(
            tokens.grant(1, Mode::Shared, 4).is_ok(),
            "shared holders share"
        );
        let backwards = tokens.grant(1, Mode::Exclusive, 5).unwrap_err();
        assert_eq!((backwards.token, backwards.highest), (5, 5));
        assert!(tokens.grant(1, Mode::Exclusive, 9).is_ok());
        assert!(tokens.grant(1, Mode::Shared, 8).is_err());
        assert!(tokens.grant(2, Mode::Exclusive, 1).is_ok(), "per lock");
        assert!(tokens.grant(1, Mode::Exclusive, 10).is_ok());
    }

    #[test]
    fn rows_must_not_be_older_than_what_was_seen_and_never_raise_grants() {
        let tokens = Tokens::default();
        assert!(tokens.grant(1, Mode::Exclusive, 7).is_ok());
        assert!(tokens.believe_row(1, 7).is_ok(), "the same term");
        assert!(tokens.believe_row(1, 6).is_err());
        assert!(tokens.believe_row(1, 1_000).is_ok());
        assert!(
            tokens.believe_row(1, 999).is_err(),
            "older than a row believed"
        );
        assert!(
            tokens.grant(1, Mode::Exclusive, 8).is_ok(),
            "rows do not raise grants"
        );
    }

    #[test]
    fn the_memory_is_bounded_and_keeps_what_was_seen_last() {
        let tokens = Tokens::default();
        for key in 0..(3 * REMEMBERED as i64) {
            assert!(tokens.grant(key, Mode::Exclusive, 10).is_ok());
        }
        assert!(tokens.len() <= REMEMBERED);
        let last = 3 * REMEMBERED as i64 - 1;
        assert!(
            tokens.grant(last, Mode::Exclusive, 10).is_err(),
            "remembered"
        );
        assert!(tokens.grant(0, Mode::Exclusive, 10).is_ok(), "forgotten");
    }
}
