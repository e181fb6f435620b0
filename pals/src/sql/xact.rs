//! The statements of `xact`: transaction-level locks, run on the caller's transaction. The
//! caller's session keeps its own `search_path`, so operators are qualified here too.

use super::{function, pg_locks_key, pg_locks_mode, Op};
use crate::key::Mode;

/// The try statement in `mode`, for the rest of the transaction: whether it was taken.
pub(crate) fn try_xact_lock(mode: Mode) -> String {
    format!("SELECT {}($1)", function(Op::TryXact, mode))
}

/// Waits up to `millis` (0: no limit) for the lock on `key` in `mode`, for the rest of the
/// transaction, in one statement that cannot fail on a busy lock; its one row says `t` if
/// the transaction holds the lock then.
///
/// The wait runs in a PL/pgSQL block whose exception handler catches the lock timeout
/// (rolling back its subtransaction, which releases a grant that raced the timeout), and
/// `lock_timeout` is put back in any case. So neither a timeout nor a dropped future leaves
/// the caller's transaction aborted, inside a savepoint, or with another `lock_timeout`.
pub(crate) fn wait_xact_lock(key: i64, mode: Mode, millis: u64) -> String {
    let eq = "OPERATOR(pg_catalog.=)";
    format!(
        "DO $pals$ DECLARE previous pg_catalog.text := \
           pg_catalog.current_setting('lock_timeout'); BEGIN \
           PERFORM pg_catalog.set_config('lock_timeout', '{millis}', true); \
           BEGIN PERFORM {function}(({key})::bigint); \
           EXCEPTION WHEN lock_not_available THEN NULL; END; \
           PERFORM pg_catalog.set_config('lock_timeout', previous, true); \
         END $pals$; \
         SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l \
           WHERE l.pid {eq} pg_catalog.pg_backend_pid() AND l.locktype {eq} 'advisory' \
           AND l.objsubid {eq} 1 AND l.granted AND l.mode {eq} '{mode}' \
           AND {key_of} {eq} ({key})::bigint)",
        function = function(Op::WaitXact, mode),
        mode = pg_locks_mode(mode),
        key_of = pg_locks_key("l"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_key_is_cast_with_its_sign() {
        let sql = wait_xact_lock(i64::MIN, Mode::Exclusive, 10);
        assert!(sql.contains("((-9223372036854775808)::bigint)"), "{sql}");
        assert!(!sql.contains(" -9223372036854775808::bigint"), "{sql}");
    }
}
