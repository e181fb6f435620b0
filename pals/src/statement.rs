//! Every SQL text pals sends on its own sessions, in one place. (The transaction-level
//! locks of `xact` run on the caller's transaction, and keep their SQL there.)
//!
//! Instant statements ([`try_lock`], [`unlock`]) are prepared once per session (see
//! `connection`); the rest are simple queries, sent rarely. (The heartbeat's empty query
//! is in `connection`.)

use crate::Mode;

/// Run once on a new session, in the same round trip as the prepares: who the session is
/// (its backend pid, the server version), and the server settings that would end a
/// session holding locks turned off for it: `idle_session_timeout` (PostgreSQL 14+) ends
/// an idle session, `transaction_timeout` (17+) ends one whose lock wait runs long. Each is
/// set only where the server knows it (an unknown setting is an error).
/// `standard_conforming_strings` is set on (the default since 9.1, but a server or role
/// may turn it off): [`literal`] quotes for it, and a backslash must not escape a quote.
pub(crate) const SETUP: &str = "\
SELECT pg_backend_pid()::text, current_setting('server_version_num'), \
  set_config('standard_conforming_strings', 'on', false), \
  CASE WHEN current_setting('server_version_num')::int >= 140000 \
       THEN set_config('idle_session_timeout', '0', false) END, \
  CASE WHEN current_setting('server_version_num')::int >= 170000 \
       THEN set_config('transaction_timeout', '0', false) END";

/// `pg_try_advisory_lock`, by mode: whether the lock was taken.
pub(crate) fn try_lock(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "SELECT pg_try_advisory_lock($1)",
        Mode::Shared => "SELECT pg_try_advisory_lock_shared($1)",
    }
}

/// [`try_lock`] that mints a fencing token with the grant, in the same statement: the
/// token (`nextval` of the sequence named by `$2`) if the lock was taken, else NULL. `CASE`
/// evaluates `nextval` only after the lock is granted, so a holder's token is drawn after
/// every earlier holder's (which drew theirs before releasing): strictly greater. The
/// sequence is named by a parameter (cast to `regclass` when run) so that preparing the
/// statement does not need the sequence to exist.
pub(crate) fn try_lock_fenced(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => {
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN nextval($2::text::regclass) END"
        }
        Mode::Shared => {
            "SELECT CASE WHEN pg_try_advisory_lock_shared($1) THEN nextval($2::text::regclass) END"
        }
    }
}

/// `pg_advisory_unlock` of a semaphore permit (exclusive), telling other processes in the
/// same round trip: `NOTIFY pals_permit, $2` (see `listen`), sent when the statement's
/// implicit transaction commits, after the unlock.
pub(crate) const UNLOCK_AND_NOTIFY: &str =
    "SELECT pg_advisory_unlock($1), pg_notify('pals_permit', $2)";

/// `pg_advisory_unlock`, by mode: whether the session held the lock.
pub(crate) fn unlock(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "SELECT pg_advisory_unlock($1)",
        Mode::Shared => "SELECT pg_advisory_unlock_shared($1)",
    }
}

/// Waits for the lock, `lock_timeout_ms` at most (0: no limit), in one round trip.
///
/// `SET LOCAL` lasts only for the implicit transaction of this multi-statement query, so
/// the session keeps its own settings, while the session-level lock outlives that
/// transaction. `statement_timeout` is lifted so that a server or role default cannot cut
/// the wait short. `client_connection_check_interval` (14+) makes the server check the
/// client's socket once a second while it waits: a waiter whose client went away and whose
/// cancel request was lost leaves the queue within a second, instead of staying queued
/// (blocking others behind it) until the lock is granted.
///
/// `fence`: the sequence that mints a fencing token once the lock is granted, by a second
/// statement in the same query (its value is the query's last row).
pub(crate) fn wait_lock(
    key: i64,
    mode: Mode,
    lock_timeout_ms: u64,
    server_version: i32,
    fence: Option<&str>,
) -> String {
    let check = if server_version >= 140000 {
        "SET LOCAL client_connection_check_interval = 1000; "
    } else {
        ""
    };
    let function = match mode {
        Mode::Exclusive => "pg_advisory_lock",
        Mode::Shared => "pg_advisory_lock_shared",
    };
    let mint = match fence {
        Some(sequence) => format!("; SELECT nextval({})::text", literal(sequence)),
        None => String::new(),
    };
    format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {lock_timeout_ms}; \
         {check}SELECT {function}({key}){mint}"
    )
}

/// `text` as an SQL string literal (the session has `standard_conforming_strings` on: see
/// [`SETUP`]).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What the session holds: one row per advisory lock on a bigint key, its key and
/// whether it is shared. (pg_locks has one row per key and mode, however many times the
/// session took it: pals never takes a key twice on one session.) The statement timeout is
/// lifted: a role's timeout must not keep a session from learning what it holds.
pub(crate) const HELD: &str = "\
SET LOCAL statement_timeout = 0; \
SELECT ((classid::int8 << 32) | objid::int8)::text, (mode = 'ShareLock')::text \
FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND objsubid = 1 \
  AND granted";

/// Unlocks each of `locks` once; its one row counts the unlocks that found nothing held.
pub(crate) fn unlock_each(locks: &[(i64, Mode)]) -> String {
    let keys: Vec<String> = locks.iter().map(|(key, _)| key.to_string()).collect();
    let shared: Vec<&str> = locks
        .iter()
        .map(|(_, mode)| if *mode == Mode::Shared { "t" } else { "f" })
        .collect();
    format!(
        "SET LOCAL statement_timeout = 0; \
         SELECT count(*) FILTER (WHERE NOT CASE WHEN s THEN pg_advisory_unlock_shared(k) \
           ELSE pg_advisory_unlock(k) END)::text \
         FROM unnest('{{{}}}'::int8[], '{{{}}}'::bool[]) AS t(k, s)",
        keys.join(","),
        shared.join(",")
    )
}

/// Advisory locks on bigint keys (`objsubid = 1`; two-int4 keys are another key space), with
/// their sessions. The key is rebuilt from `classid` (high 32 bits) and `objid` (low 32
/// bits). How long a waiter has waited comes from `pg_locks.waitstart` (PostgreSQL 14+; read
/// through `to_jsonb` so older servers fall back to the start of its statement).
pub(crate) const HOLDERS: &str = "\
SELECT ((l.classid::int8 << 32) | l.objid::int8) AS key, l.mode, l.granted, l.pid, \
       coalesce(a.application_name, '') AS application_name, host(a.client_addr) AS client_addr, \
       extract(epoch FROM a.backend_start)::float8 AS backend_start, \
       CASE WHEN l.granted THEN NULL ELSE extract(epoch FROM now() - \
         coalesce((to_jsonb(l.*) ->> 'waitstart')::timestamptz, a.query_start))::float8 END AS waiting \
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.database = \
      (SELECT oid FROM pg_database WHERE datname = current_database()) \
ORDER BY l.granted DESC, key, l.pid";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_check_the_client_only_where_the_server_can() {
        let new = wait_lock(7, Mode::Shared, 300, 150000, None);
        assert!(new.contains("client_connection_check_interval"));
        assert!(new.ends_with("SELECT pg_advisory_lock_shared(7)"));
        let old = wait_lock(-7, Mode::Exclusive, 0, 130000, None);
        assert!(!old.contains("client_connection_check_interval"));
        assert!(old.contains("lock_timeout = 0;"));
        assert!(old.ends_with("SELECT pg_advisory_lock(-7)"));
    }

    #[test]
    fn a_fenced_wait_mints_its_token_after_the_grant() {
        let sql = wait_lock(
            7,
            Mode::Exclusive,
            0,
            150000,
            Some("\"o'k\".\"pals_fence\""),
        );
        assert!(
            sql.ends_with(
                "SELECT pg_advisory_lock(7); SELECT nextval('\"o''k\".\"pals_fence\"')::text"
            ),
            "{sql}"
        );
    }

    #[test]
    fn permits_are_announced_on_the_channel_waiters_listen_to() {
        let channel = format!("pg_notify('{}', $2)", crate::listen::PERMIT_CHANNEL);
        assert!(UNLOCK_AND_NOTIFY.contains(&channel));
    }

    #[test]
    fn unlock_each_lists_keys_and_modes_in_step() {
        let sql = unlock_each(&[(1, Mode::Exclusive), (-2, Mode::Shared)]);
        assert!(
            sql.contains("unnest('{1,-2}'::int8[], '{f,t}'::bool[])"),
            "{sql}"
        );
    }
}
