//! Every SQL text pals sends, in one place: on its lock sessions, on its coordination
//! session (schema objects, elections, `holders()`, the run history of `once_per`), and on a
//! caller's transaction (`xact`).
//!
//! **Names.** Every function and relation of the system catalog is written
//! `pg_catalog.`-qualified: a role whose `search_path` lists a writable schema before
//! `pg_catalog` could otherwise shadow `pg_try_advisory_lock`, `nextval` or `pg_locks`
//! (the CVE-2018-1058 class) and make two holders of one lock. pals' own sessions also set
//! an empty `search_path` at set-up ([`setup`]), which covers operators and type names; the
//! statements of `xact`, which run on the caller's session, qualify their operators too.
//!
//! **Shapes.** The instant lock statements ([`try_lock`], [`unlock`]) are prepared once per
//! lock session; the rest are simple queries, sent rarely. [`function`] is the one mapping
//! of a mode to its advisory-lock function, [`pg_locks_key`] the one way a key is read from
//! `pg_locks`, and [`rows`] the one reader of a simple query's rows.
//!
//! **Whose session.** Every statement of a lock session, the heartbeat's ping included,
//! first checks that it runs on the session pals set up ([`ours`]): a transaction-mode
//! pooler (pgbouncer, RDS Proxy, Supavisor) hands each transaction to whichever server
//! session is free, so a lock taken by one statement could be held by a session that other
//! clients then use, and the next statement could run on another session altogether. The
//! check costs no round trip: it is part of the statement.

use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use crate::key::Mode;

/// The channel on which a process that gives back a semaphore permit says so; payload
/// `{first key}:{permit}`.
pub(crate) const PERMIT_CHANNEL: &str = "pals_permit";
/// The channel on which a newly elected leader says who it is; payload
/// `{key} {token} {since, µs since the epoch} {identity}`.
pub(crate) const LEADER_CHANNEL: &str = "pals_leader";

/// What an advisory-lock function does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Take it if free now (session level).
    Try,
    /// Wait for it (session level).
    Wait,
    /// Let it go (session level).
    Unlock,
    /// Take it if free now, until the end of the transaction.
    TryXact,
    /// Wait for it, until the end of the transaction.
    WaitXact,
}

/// The advisory-lock function that does `op` in `mode`.
pub(crate) fn function(op: Op, mode: Mode) -> &'static str {
    use Mode::{Exclusive as X, Shared as S};
    match (op, mode) {
        (Op::Try, X) => "pg_catalog.pg_try_advisory_lock",
        (Op::Try, S) => "pg_catalog.pg_try_advisory_lock_shared",
        (Op::Wait, X) => "pg_catalog.pg_advisory_lock",
        (Op::Wait, S) => "pg_catalog.pg_advisory_lock_shared",
        (Op::Unlock, X) => "pg_catalog.pg_advisory_unlock",
        (Op::Unlock, S) => "pg_catalog.pg_advisory_unlock_shared",
        (Op::TryXact, X) => "pg_catalog.pg_try_advisory_xact_lock",
        (Op::TryXact, S) => "pg_catalog.pg_try_advisory_xact_lock_shared",
        (Op::WaitXact, X) => "pg_catalog.pg_advisory_xact_lock",
        (Op::WaitXact, S) => "pg_catalog.pg_advisory_xact_lock_shared",
    }
}

/// How `pg_locks.mode` names an advisory lock of `mode`.
pub(crate) fn pg_locks_mode(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "ExclusiveLock",
        Mode::Shared => "ShareLock",
    }
}

/// The mode of an advisory lock as `pg_locks.mode` names it.
pub(crate) fn mode_of(pg_locks_mode: &str) -> Mode {
    match pg_locks_mode {
        "ShareLock" => Mode::Shared,
        _ => Mode::Exclusive,
    }
}

/// The bigint key of the `pg_locks` row `row`: `classid` holds its high 32 bits and
/// `objid` its low 32 bits (`objsubid = 1` marks the bigint key space; two-int4 keys are
/// another). Operators qualified: it runs on callers' sessions too.
pub(crate) fn pg_locks_key(row: &str) -> String {
    format!(
        "(({row}.classid::bigint OPERATOR(pg_catalog.<<) 32) \
         OPERATOR(pg_catalog.|) {row}.objid::bigint)"
    )
}

/// The setting in which a lock session keeps its [`Mark`].
const MARK_SETTING: &str = "pals.session";

/// The start of the error a lock statement raises when it runs on a session that is not
/// the one pals set up: `unrecognized configuration parameter "pals: …"` (42704), the one
/// error plain SQL can raise with words of its own (see [`ours`]).
pub(crate) const NOT_OURS: &str =
    "pals: this statement ran on a server session pals did not set up";

/// A lock session's mark: set on the session at set-up, and compared by each of its
/// statements with the session they run on. Unique per session (this process's id, a
/// count, and a random part), printable as hex without quoting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark(pub(crate) u128);

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A condition that is true when the statement runs on the session marked `mark` (an SQL
/// text expression: a parameter or a literal), and otherwise raises [`NOT_OURS`]: reading
/// a setting that does not exist is an error that carries its name. As a `WHERE` clause it
/// is a one-time filter, evaluated before the statement's own functions. `current_setting`
/// is stable, not immutable, so the error branch is never evaluated at planning.
pub(crate) fn ours(mark: &str) -> String {
    format!(
        "CASE WHEN pg_catalog.current_setting('{MARK_SETTING}', true) OPERATOR(pg_catalog.=) \
         {mark} THEN true ELSE pg_catalog.current_setting({})::pg_catalog.bool END",
        literal(NOT_OURS)
    )
}

/// [`ours`] for a statement sent as text: `mark` written in it.
fn ours_literal(mark: Mark) -> String {
    ours(&format!("'{mark}'"))
}

/// The heartbeat's ping on a lock session: checks, and answers, that it is the one marked
/// `mark`.
pub(crate) fn ping(mark: Mark) -> String {
    format!("SELECT WHERE {}", ours_literal(mark))
}

/// What a session is for, as its set-up sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Takes and holds advisory locks; a statement may wait on another session's lock (a
    /// sequence altered by hand, under a fenced lock's token) `lock_timeout_ms` at most.
    /// `mark`: set on the session, checked by its statements ([`ours`]).
    Locks { lock_timeout_ms: u64, mark: Mark },
    /// Runs coordination statements, each bounded by `timeout_ms` on the server.
    Coordination { timeout_ms: u64 },
    /// Listens for notifications.
    Listen,
}

/// Run once on a new session, in the same round trip as the prepares: who the session is
/// (its backend pid, the server version), and its settings: an empty `search_path` (see
/// the module doc), `standard_conforming_strings` on (the default since 9.1, but a server or
/// role may turn it off: [`literal`] quotes for it), and the server settings that would end
/// a session holding locks turned off: `idle_session_timeout` (14+) ends an idle session,
/// `transaction_timeout` (17+) one whose lock wait runs long (each set only where the server
/// knows it: an unknown setting is an error). Then the timeouts of its purpose.
pub(crate) fn setup(purpose: Purpose) -> String {
    let version = "pg_catalog.current_setting('server_version_num')::int";
    let since = |v: u32, setting: &str| {
        format!(
            "CASE WHEN {version} OPERATOR(pg_catalog.>=) {v} \
             THEN pg_catalog.set_config('{setting}', '0', false) END"
        )
    };
    let set = |setting: &str, value: u64| {
        format!(", pg_catalog.set_config('{setting}', '{value}', false)")
    };
    let timeouts = match purpose {
        Purpose::Locks {
            lock_timeout_ms,
            mark,
        } => {
            set("lock_timeout", lock_timeout_ms)
                + &format!(", pg_catalog.set_config('{MARK_SETTING}', '{mark}', false)")
        }
        Purpose::Coordination { timeout_ms } => {
            set("lock_timeout", timeout_ms) + &set("statement_timeout", timeout_ms)
        }
        Purpose::Listen => String::new(),
    };
    format!(
        "SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('server_version_num'), \
         (SELECT s.ssl FROM pg_catalog.pg_stat_ssl s WHERE s.pid = pg_catalog.pg_backend_pid()), \
         pg_catalog.set_config('search_path', '', false), \
         pg_catalog.set_config('standard_conforming_strings', 'on', false), {}, {}{timeouts}",
        since(140000, "idle_session_timeout"),
        since(170000, "transaction_timeout"),
    )
}

/// The try statement in `mode`: whether the lock was taken. `$2`: the session's [`Mark`].
/// (A parameter, not part of the text: a transaction-mode pooler may run another client's
/// statement of the same name, and the mark that statement is given is still the caller's.)
pub(crate) fn try_lock(mode: Mode) -> String {
    format!(
        "SELECT {}($1) WHERE {}",
        function(Op::Try, mode),
        ours("$2")
    )
}

/// [`try_lock`] that mints a fencing token with the grant, in the same statement: the
/// token (`nextval` of the sequence named by `$2`) if the lock was taken, else NULL. `CASE`
/// evaluates `nextval` only after the lock is granted, so a holder's token is drawn after
/// every earlier holder's (which drew theirs before releasing): strictly greater. The
/// sequence is named by a parameter (cast to `regclass` when run) so that preparing the
/// statement does not need the sequence to exist. `nextval` waits on a sequence that
/// another session altered or locked, up to the lock session's `lock_timeout` (see
/// [`Purpose::Locks`]): the error then says the lock was taken, its token not drawn.
/// `$3`: the session's [`Mark`].
pub(crate) fn try_lock_fenced(mode: Mode) -> String {
    format!(
        "SELECT CASE WHEN {}($1) THEN pg_catalog.nextval($2::text::regclass) END WHERE {}",
        function(Op::Try, mode),
        ours("$3")
    )
}

/// The unlock in `mode`: whether the session held the lock. `$2`: the session's [`Mark`].
pub(crate) fn unlock(mode: Mode) -> String {
    format!(
        "SELECT {}($1) WHERE {}",
        function(Op::Unlock, mode),
        ours("$2")
    )
}

/// The unlock of a semaphore permit (exclusive), telling other processes in the same round
/// trip: `NOTIFY` on [`PERMIT_CHANNEL`] with payload `$2`, sent when the statement's
/// implicit transaction commits, after the unlock. The commit takes the server's notify
/// lock, bounded by the lock session's `lock_timeout`: a notification that cannot be sent
/// then is an unknown outcome for the unlock (reconciled), and other processes' waiters find
/// the permit at their recheck.
/// `$3`: the session's [`Mark`].
pub(crate) fn unlock_and_notify() -> String {
    format!(
        "SELECT {}($1), pg_catalog.pg_notify('{PERMIT_CHANNEL}', $2) WHERE {}",
        function(Op::Unlock, Mode::Exclusive),
        ours("$3")
    )
}

/// The fencing token drawn with a waited-for grant: the sequence (its qualified, quoted
/// name) and how long `nextval` may wait for it, in milliseconds.
pub(crate) struct Mint<'a> {
    pub(crate) sequence: &'a str,
    pub(crate) within_ms: u64,
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
/// `mint`: a fenced lock's token, drawn by more statements in the same query once the lock
/// is granted, `nextval` bounded by its own `lock_timeout` (its value is the last row). The
/// lock statement's row comes first: an error after it means granted, token not drawn.
/// The lock statement checks first that it runs on the session marked `mark` ([`ours`]);
/// the `SET LOCAL`s before it end with their transaction, whichever session ran them.
pub(crate) fn wait_lock(
    key: i64,
    mode: Mode,
    lock_timeout_ms: u64,
    server_version: i32,
    mint: Option<Mint<'_>>,
    mark: Mark,
) -> String {
    let check = if server_version >= 140000 {
        "SET LOCAL client_connection_check_interval = 1000; "
    } else {
        ""
    };
    let mint = match mint {
        Some(Mint {
            sequence,
            within_ms,
        }) => format!(
            "; SET LOCAL lock_timeout = {within_ms}; SELECT pg_catalog.nextval({})",
            literal(sequence)
        ),
        None => String::new(),
    };
    format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {lock_timeout_ms}; \
         {check}SELECT {}(({key})::bigint) WHERE {}{mint}",
        function(Op::Wait, mode),
        ours_literal(mark)
    )
}

/// `text` as an SQL string literal (pals' sessions have `standard_conforming_strings` on:
/// see [`setup`]).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` as a quoted SQL identifier.
pub(crate) fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the session holds: one row per advisory lock on a bigint key, its key and mode.
/// (`pg_locks` has one row per key and mode, however many times the session took it: pals
/// never takes a key twice on one session.) The statement timeout is lifted: a role's
/// timeout must not keep a session from learning what it holds. Only on the session marked
/// `mark` ([`ours`]): another's locks are not this session's to read.
pub(crate) fn server_locks(mark: Mark) -> String {
    format!(
        "SET LOCAL statement_timeout = 0; SELECT {}, l.mode FROM pg_catalog.pg_locks l \
         WHERE {} AND l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory' \
           AND l.objsubid = 1 AND l.granted",
        pg_locks_key("l"),
        ours_literal(mark)
    )
}

/// Unlocks each of `locks` once; its one row counts the unlocks that found nothing held.
/// Only on the session marked `mark` ([`ours`]): another's locks are not its to unlock.
pub(crate) fn unlock_each(locks: &[(i64, Mode)], mark: Mark) -> String {
    let keys: Vec<String> = locks.iter().map(|(key, _)| key.to_string()).collect();
    let shared: Vec<&str> = locks
        .iter()
        .map(|(_, mode)| if *mode == Mode::Shared { "t" } else { "f" })
        .collect();
    format!(
        "SET LOCAL statement_timeout = 0; \
         SELECT count(*) FILTER (WHERE NOT CASE WHEN s THEN {}(k) ELSE {}(k) END) \
         FROM ROWS FROM (pg_catalog.unnest('{{{}}}'::int8[]), pg_catalog.unnest('{{{}}}'::bool[])) \
           AS t(k, s) WHERE {}",
        function(Op::Unlock, Mode::Shared),
        function(Op::Unlock, Mode::Exclusive),
        keys.join(","),
        shared.join(","),
        ours_literal(mark)
    )
}

/// Advisory locks on bigint keys in this database, with their sessions: key, mode, granted,
/// pid, application_name, client address, backend start and how long a waiter has waited
/// (both in seconds since the epoch or as a length). The wait comes from
/// `pg_locks.waitstart` (PostgreSQL 14+; read through `to_jsonb` so older servers fall back
/// to the start of its statement).
pub(crate) fn holders() -> String {
    format!(
        "SELECT {key} AS key, l.mode, l.granted, l.pid, \
           coalesce(a.application_name, ''), pg_catalog.host(a.client_addr), \
           extract(epoch FROM a.backend_start), \
           CASE WHEN l.granted THEN NULL ELSE extract(epoch FROM pg_catalog.now() - \
             coalesce((pg_catalog.to_jsonb(l.*) ->> 'waitstart')::timestamptz, a.query_start)) END \
         FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.database = \
           (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
         ORDER BY l.granted DESC, key, l.pid",
        key = pg_locks_key("l")
    )
}

/// The rows of a simple query's answer, of every statement it ran.
pub(crate) fn rows(messages: &[SimpleQueryMessage]) -> impl Iterator<Item = &SimpleQueryRow> {
    messages.iter().filter_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })
}

/// The first column of the first row of a simple query's answer.
pub(crate) fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    rows(messages).next().and_then(|row| row.get(0))
}

mod coordination;
mod runs;
mod xact;

pub(crate) use coordination::{
    announce, create_leaders_table, create_sequence, ensure_check, grant, leader, listen,
    sequence_usable, table_usable, Announcement,
};
pub(crate) use runs::{cancel_claim, claim, create_runs_table, record_end, runs, Claim, RUNNING};
pub(crate) use xact::{try_xact_lock, wait_xact_lock};

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: Mark = Mark(0xab);

    #[test]
    fn waits_check_the_client_only_where_the_server_can() {
        let new = wait_lock(7, Mode::Shared, 300, 150000, None, MARK);
        assert!(new.contains("client_connection_check_interval"));
        let lock = "SELECT pg_catalog.pg_advisory_lock_shared((7)::bigint) WHERE CASE";
        assert!(new.contains(lock), "{new}");
        let old = wait_lock(-7, Mode::Exclusive, 0, 130000, None, MARK);
        assert!(!old.contains("client_connection_check_interval"));
        assert!(old.contains("lock_timeout = 0;"));
        assert!(old.contains("SELECT pg_catalog.pg_advisory_lock((-7)::bigint) WHERE"));
    }

    #[test]
    fn every_lock_statement_checks_whose_session_it_runs_on() {
        let mark = "'000000000000000000000000000000ab'";
        let check = format!("current_setting('pals.session', true) OPERATOR(pg_catalog.=) {mark}");
        for text in [
            ping(MARK),
            wait_lock(7, Mode::Shared, 0, 150000, None, MARK),
            server_locks(MARK),
            unlock_each(&[(1, Mode::Exclusive)], MARK),
        ] {
            assert!(text.contains(&check), "{text}");
            assert!(text.contains(NOT_OURS), "{text}");
        }
        for (text, parameter) in [
            (try_lock(Mode::Exclusive), "$2"),
            (try_lock_fenced(Mode::Shared), "$3"),
            (unlock(Mode::Shared), "$2"),
            (unlock_and_notify(), "$3"),
        ] {
            let check = format!("OPERATOR(pg_catalog.=) {parameter} THEN true");
            assert!(text.contains(&check), "{text}");
        }
        let setup = setup(Purpose::Locks {
            lock_timeout_ms: 1,
            mark: MARK,
        });
        assert!(setup.ends_with(&format!("set_config('pals.session', {mark}, false)")));
    }

    #[test]
    fn a_fenced_wait_mints_its_token_after_the_grant_within_its_own_bound() {
        let sequence = "\"o'k\".\"pals_fence\"";
        let mint = Mint {
            sequence,
            within_ms: 250,
        };
        let sql = wait_lock(7, Mode::Exclusive, 0, 150000, Some(mint), MARK);
        assert!(
            sql.ends_with(
                "::pg_catalog.bool END; SET LOCAL lock_timeout = 250; \
                 SELECT pg_catalog.nextval('\"o''k\".\"pals_fence\"')"
            ),
            "{sql}"
        );
    }

    #[test]
    fn permits_are_announced_on_the_channel_waiters_listen_to() {
        assert!(unlock_and_notify().contains("pg_notify('pals_permit', $2)"));
        assert!(listen().contains(PERMIT_CHANNEL) && listen().contains(LEADER_CHANNEL));
    }

    #[test]
    fn unlock_each_lists_keys_and_modes_in_step() {
        let sql = unlock_each(&[(1, Mode::Exclusive), (-2, Mode::Shared)], MARK);
        assert!(
            sql.contains("unnest('{1,-2}'::int8[]), pg_catalog.unnest('{f,t}'::bool[])"),
            "{sql}"
        );
    }

    #[test]
    fn modes_map_to_functions_and_back() {
        for mode in [Mode::Exclusive, Mode::Shared] {
            assert_eq!(mode_of(pg_locks_mode(mode)), mode);
            assert!(function(Op::Try, mode).starts_with("pg_catalog."));
        }
        assert!(
            try_lock(Mode::Shared).starts_with("SELECT pg_catalog.pg_try_advisory_lock_shared($1)")
        );
        assert!(unlock(Mode::Exclusive).starts_with("SELECT pg_catalog.pg_advisory_unlock($1)"));
    }

    #[test]
    fn every_session_gets_an_empty_search_path_and_its_timeouts() {
        let locks = setup(Purpose::Locks {
            lock_timeout_ms: 500,
            mark: MARK,
        });
        assert!(locks.contains("set_config('search_path', '', false)"));
        assert!(locks.contains("set_config('lock_timeout', '500', false)"));
        let coordination = setup(Purpose::Coordination { timeout_ms: 10 });
        assert!(coordination.contains("set_config('statement_timeout', '10', false)"));
        assert!(!setup(Purpose::Listen).contains("lock_timeout"));
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(identifier("Ops \"x\""), "\"Ops \"\"x\"\"\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
