//! The coordination statements: the schema objects pals keeps beside its locks, leader
//! election, and listening. They run on the coordination session (never on a session that
//! holds locks), whose `search_path` is empty.

use super::{identifier, literal, pg_locks_key, pg_locks_mode, LEADER_CHANNEL, PERMIT_CHANNEL};
use crate::key::Mode;

/// Starts listening on both channels.
pub(crate) fn listen() -> String {
    format!("LISTEN {PERMIT_CHANNEL}; LISTEN {LEADER_CHANNEL}")
}

/// One row: `missing`, `ready` or `denied` for the object `name` (qualified, quoted), by
/// `usable` (a condition: the role may use it as pals does), the role's name, and the
/// object's persistence (`pg_class.relpersistence`: `p` permanent, `u` unlogged, `t`
/// temporary; NULL when missing).
pub(crate) fn ensure_check(name: &str, usable: &str) -> String {
    let name = literal(name);
    format!(
        "SELECT CASE WHEN pg_catalog.to_regclass({name}) IS NULL THEN 'missing' \
         WHEN {usable} THEN 'ready' ELSE 'denied' END, current_user, \
         (SELECT c.relpersistence FROM pg_catalog.pg_class c \
           WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass({name}))"
    )
}

/// Creates the fencing sequence `name` unless it exists.
pub(crate) fn create_sequence(name: &str) -> String {
    format!("CREATE SEQUENCE IF NOT EXISTS {name} AS bigint")
}

/// The role may draw from the sequence `name`: `nextval` needs USAGE or UPDATE.
pub(crate) fn sequence_usable(name: &str) -> String {
    let name = literal(name);
    format!(
        "(pg_catalog.has_sequence_privilege({name}, 'USAGE') \
         OR pg_catalog.has_sequence_privilege({name}, 'UPDATE'))"
    )
}

/// Creates the leaders table `name` unless it exists.
pub(crate) fn create_leaders_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\
           key bigint PRIMARY KEY, name text NOT NULL, identity text NOT NULL, \
           since timestamptz NOT NULL, token bigint NOT NULL, pid int NOT NULL)"
    )
}

/// The role has each of `privileges` on the table `name`.
pub(crate) fn table_usable(name: &str, privileges: &[&str]) -> String {
    let name = literal(name);
    let each: Vec<String> = privileges
        .iter()
        .map(|privilege| format!("pg_catalog.has_table_privilege({name}, '{privilege}')"))
        .collect();
    each.join(" AND ")
}

/// The start of the statement an admin runs to let `role` use an object: `GRANT ... TO`.
pub(crate) fn grant(privileges: &str, on: &str, name: &str, role: &str) -> String {
    format!("GRANT {privileges} ON {on}{name} TO {}", identifier(role))
}

/// Whether the session that wrote row `l` of the leaders table holds its election's lock.
fn writer_holds() -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_locks p WHERE p.locktype = 'advisory' \
           AND p.objsubid = 1 AND p.granted AND p.mode = '{}' AND p.pid = l.pid \
           AND {} = l.key AND p.database = (SELECT oid FROM pg_catalog.pg_database \
             WHERE datname = pg_catalog.current_database()))",
        pg_locks_mode(Mode::Exclusive),
        pg_locks_key("p")
    )
}

/// Who leads the election on `key`: identity, since (µs since the epoch) and token, from
/// the leaders table `table`, trusted only while the row's writer holds the lock.
pub(crate) fn leader(table: &str, key: i64) -> String {
    format!(
        "SELECT l.identity, (extract(epoch FROM l.since) * 1000000)::int8, l.token \
         FROM {table} l WHERE l.key = {key} AND {}",
        writer_holds()
    )
}

/// What a new leader writes and tells.
pub(crate) struct Announcement<'a> {
    pub(crate) table: &'a str,
    pub(crate) key: i64,
    pub(crate) name: &'a str,
    pub(crate) identity: &'a str,
    pub(crate) token: u64,
    /// The backend pid of the session that holds the lock.
    pub(crate) pid: i32,
}

/// Records a new leader and notifies observers (one row: since, in µs), unless a later
/// term has written its row and still holds the lock (then no row). A row whose writer no
/// longer holds the lock, or is this session (an earlier term of it), is overwritten
/// whatever its token: a sequence reset by hand must not keep every later leader from
/// announcing itself.
pub(crate) fn announce(a: &Announcement<'_>) -> String {
    format!(
        "WITH announced AS (\
           INSERT INTO {table} AS l (key, name, identity, since, token, pid) \
           VALUES ({key}, {name}, {identity}, pg_catalog.now(), {token}, {pid}) \
           ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name, identity = EXCLUDED.identity, \
             since = EXCLUDED.since, token = EXCLUDED.token, pid = EXCLUDED.pid \
           WHERE l.token < EXCLUDED.token OR l.pid = EXCLUDED.pid OR NOT {holds} \
           RETURNING key, token, (extract(epoch FROM since) * 1000000)::int8 AS micros, identity) \
         SELECT micros, pg_catalog.pg_notify('{LEADER_CHANNEL}', \
           key || ' ' || token || ' ' || micros || ' ' || identity) FROM announced",
        table = a.table,
        key = a.key,
        name = literal(a.name),
        identity = literal(a.identity),
        token = a.token,
        pid = a.pid,
        holds = writer_holds(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_quote_what_they_write() {
        let sql = announce(&Announcement {
            table: "t",
            key: 1,
            name: "a.b",
            identity: "it's",
            token: 3,
            pid: 4,
        });
        assert!(sql.contains("'it''s'") && sql.contains("pg_catalog.pg_locks"));
        assert!(grant("USAGE", "SEQUENCE ", "s", "r\"x").ends_with("TO \"r\"\"x\""));
    }
}
