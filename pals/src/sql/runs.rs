//! The run history of `once_per` jobs: the table `pals_runs`, one row per tick run. A
//! tick is claimed by inserting its row (the table's key, lock key and tick, refuses a
//! second), its end is written into the same row, and the history is read back from it.
//! They run on the coordination session, whose `search_path` is empty.

use super::{literal, pg_locks_key, pg_locks_mode};
use crate::key::Mode;

/// `text` as an SQL string literal, a NUL byte (which PostgreSQL's text cannot hold, and a
/// simple query would end at) written as U+FFFD: lock names may hold one, and so may an
/// error's text.
fn text_literal(text: &str) -> String {
    literal(&text.replace('\0', "\u{fffd}"))
}

/// The outcome a row has while its run is under way.
pub(crate) const RUNNING: &str = "running";

/// Creates the runs table `name` unless it exists: one row per run, by lock key and tick.
pub(crate) fn create_runs_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\
           key bigint NOT NULL, tick timestamptz NOT NULL, name text NOT NULL, \
           period_ms bigint NOT NULL, started timestamptz NOT NULL, ended timestamptz, \
           replica text NOT NULL, pid int NOT NULL, outcome text NOT NULL, detail text, \
           PRIMARY KEY (key, tick))"
    )
}

/// What a claim writes.
pub(crate) struct Claim<'a> {
    pub(crate) table: &'a str,
    pub(crate) key: i64,
    pub(crate) name: &'a str,
    pub(crate) period_ms: u64,
    pub(crate) offset_ms: u64,
    /// How long ago (on this process's clock) the call began: its tick is that of the
    /// moment it began, read on the server's clock.
    pub(crate) elapsed_ms: u64,
    /// The backend pid of the session that holds the lock.
    pub(crate) pid: i32,
    /// How many runs of the lock to keep, this one included.
    pub(crate) keep: u32,
}

/// Claims the tick of the call (the server's clock when it began, rounded to the nearest
/// multiple of the period, plus the offset), unless its row exists or a later tick's does
/// (a call that waited for the lock while a later tick ran: its own tick's row may have
/// been pruned since); prunes the lock's runs beyond `keep` when it claims. One row: the tick (µs since the epoch), whether it was
/// claimed, and for a tick run already, by which replica and how it went.
pub(crate) fn claim(c: &Claim<'_>) -> String {
    let (table, key, period, offset) = (c.table, c.key, c.period_ms, c.offset_ms);
    format!(
        "WITH t AS (SELECT pg_catalog.to_timestamp(({offset} + {period} * pg_catalog.round(\
             (pg_catalog.floor(extract(epoch FROM pg_catalog.statement_timestamp()) * 1000) \
               - {elapsed} - {offset}) / {period}::numeric))::float8 / 1000) AS tick), \
         claimed AS (\
           INSERT INTO {table} (key, tick, name, period_ms, started, replica, pid, outcome) \
           SELECT {key}, t.tick, {name}, {period}, pg_catalog.clock_timestamp(), \
             pg_catalog.current_setting('application_name'), {pid}, '{RUNNING}' FROM t \
           WHERE NOT EXISTS (SELECT 1 FROM {table} n WHERE n.key = {key} AND n.tick > t.tick) \
           ON CONFLICT (key, tick) DO NOTHING RETURNING tick), \
         pruned AS (\
           DELETE FROM {table} r WHERE r.key = {key} AND EXISTS (SELECT 1 FROM claimed) \
             AND r.tick <= (SELECT o.tick FROM {table} o WHERE o.key = {key} \
               ORDER BY o.tick DESC OFFSET {older} LIMIT 1)) \
         SELECT (extract(epoch FROM t.tick) * 1000000)::int8, \
           EXISTS (SELECT 1 FROM claimed), r.replica, r.outcome \
         FROM t LEFT JOIN {table} r ON r.key = {key} AND r.tick = t.tick",
        elapsed = c.elapsed_ms,
        name = text_literal(c.name),
        pid = c.pid,
        // The runs kept besides the one claimed now.
        older = c.keep.saturating_sub(1),
    )
}

/// Writes how the run of `key` at `tick_us` (µs since the epoch) ended. Committed without
/// waiting for the disk: what makes "at most once" is the claim, committed as usual; a
/// crash of the server in the next fraction of a second may lose the end alone, and the
/// run then reads `vanished`. It halves a run's cost (one flush instead of two).
pub(crate) fn record_end(
    table: &str,
    key: i64,
    tick_us: i64,
    outcome: &str,
    detail: Option<&str>,
) -> String {
    let detail = detail.map_or_else(|| "NULL".to_string(), text_literal);
    format!(
        "SET LOCAL synchronous_commit = off; \
         UPDATE {table} SET ended = pg_catalog.clock_timestamp(), outcome = {outcome}, \
           detail = {detail} \
         WHERE key = {key} AND (extract(epoch FROM tick) * 1000000)::int8 = {tick_us}",
        outcome = literal(outcome),
    )
}

/// Writes down as cancelled the run that the session `pid` was claiming for `key`, if the
/// claim was made: its newest row, still running. (The call was dropped while it claimed;
/// statements on the coordination session run in order, so this one comes after the
/// claim.)
pub(crate) fn cancel_claim(table: &str, key: i64, pid: i32) -> String {
    format!(
        "SET LOCAL synchronous_commit = off; \
         UPDATE {table} r SET ended = pg_catalog.clock_timestamp(), outcome = 'cancelled', \
           detail = 'the call was dropped while it claimed its tick' \
         WHERE r.key = {key} AND r.pid = {pid} AND r.outcome = '{RUNNING}' \
           AND r.tick = (SELECT max(n.tick) FROM {table} n WHERE n.key = {key})"
    )
}

/// The last `limit` runs of `key`, newest first: tick, period, started and ended (µs since
/// the epoch), replica, outcome and detail. A row still `running` reads so only while its
/// session holds the lock and it is the newest; else its run ended without a word (the
/// process died, its session was cut), and it reads `vanished`.
pub(crate) fn runs(table: &str, key: i64, limit: u32) -> String {
    let micros = |column: &str| format!("(extract(epoch FROM r.{column}) * 1000000)::int8");
    format!(
        "SELECT r.name, {tick}, r.period_ms, {started}, {ended}, r.replica, \
           CASE WHEN r.outcome <> '{RUNNING}' THEN r.outcome \
             WHEN r.tick = (SELECT max(n.tick) FROM {table} n WHERE n.key = {key}) \
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_locks p WHERE p.locktype = 'advisory' \
                 AND p.objsubid = 1 AND p.granted AND p.mode = '{mode}' AND p.pid = r.pid \
                 AND {p_key} = r.key AND p.database = (SELECT oid FROM pg_catalog.pg_database \
                   WHERE datname = pg_catalog.current_database())) THEN '{RUNNING}' \
             ELSE 'vanished' END, r.detail \
         FROM {table} r WHERE r.key = {key} ORDER BY r.tick DESC LIMIT {limit}",
        tick = micros("tick"),
        started = micros("started"),
        ended = micros("ended"),
        mode = pg_locks_mode(Mode::Exclusive),
        p_key = pg_locks_key("p"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_quoted() {
        let sql = claim(&Claim {
            table: "t",
            key: 1,
            name: "a.it's",
            period_ms: 2000,
            offset_ms: 0,
            elapsed_ms: 5,
            pid: 4,
            keep: 1,
        });
        assert!(sql.contains("'a.it''s'") && sql.contains("OFFSET 0 LIMIT 1"));
        let sql = record_end("t", 1, 2, "failed", Some("no 'quote'"));
        assert!(sql.contains("'no ''quote'''"));
        assert!(record_end("t", 1, 2, "succeeded", None).contains("detail = NULL"));
        let nul = record_end("t", 1, 2, "failed", Some("a\0b"));
        assert!(nul.contains("'a\u{fffd}b'") && !nul.contains('\0'));
    }
}
