//! Who holds which advisory lock: the answer an operator needs at 3 a.m.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Row;

use crate::Error;

/// One advisory lock held or awaited in the database, as [`Locker::holders`] reports it.
///
/// [`Locker::holders`]: crate::Locker::holders
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Holder {
    /// The advisory-lock key.
    pub key: i64,
    /// The lock's name (`"app.name"`) where the locker knows it: a lock it has made.
    pub name: Option<String>,
    /// Shared or exclusive.
    pub mode: Mode,
    /// True if held; false if the session is waiting for it.
    pub granted: bool,
    /// The server process id of the session (`None` for a prepared transaction).
    pub pid: Option<i32>,
    /// The session's `application_name` (pals sets `pals:{app}`).
    pub application_name: String,
    /// The client's address, when it connected over TCP.
    pub client_addr: Option<String>,
    /// When the session started.
    pub backend_start: Option<SystemTime>,
    /// How long the session has been waiting for the lock (only when not granted).
    pub waiting_for: Option<Duration>,
}

/// A lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `pg_advisory_lock` and friends.
    Exclusive,
    /// `pg_advisory_lock_shared` and friends.
    Shared,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        })
    }
}

/// Advisory locks on bigint keys (`objsubid = 1`; two-int4 keys are another key space), with
/// their sessions. The key is rebuilt from `classid` (high 32 bits) and `objid` (low 32
/// bits). How long a waiter has waited comes from `pg_locks.waitstart` (PostgreSQL 14+; read
/// through `to_jsonb` so older servers fall back to the start of its statement).
pub(crate) const HOLDERS_SQL: &str = "\
SELECT ((l.classid::int8 << 32) | l.objid::int8) AS key, l.mode, l.granted, l.pid, \
       coalesce(a.application_name, '') AS application_name, a.client_addr::text AS client_addr, \
       extract(epoch FROM a.backend_start)::float8 AS backend_start, \
       CASE WHEN l.granted THEN NULL ELSE extract(epoch FROM now() - \
         coalesce((to_jsonb(l.*) ->> 'waitstart')::timestamptz, a.query_start))::float8 END AS waiting \
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.database = \
      (SELECT oid FROM pg_database WHERE datname = current_database()) \
ORDER BY l.granted DESC, key, l.pid";

pub(crate) fn holder(row: &Row, names: &HashMap<i64, Arc<str>>) -> Result<Holder, Error> {
    let get_err = Error::Database;
    let key: i64 = row.try_get("key").map_err(get_err)?;
    let mode: String = row.try_get("mode").map_err(get_err)?;
    let seconds = |column: &str| -> Result<Option<f64>, Error> {
        row.try_get(column).map_err(Error::Database)
    };
    Ok(Holder {
        key,
        name: names.get(&key).map(|name| name.to_string()),
        mode: if mode == "ShareLock" {
            Mode::Shared
        } else {
            Mode::Exclusive
        },
        granted: row.try_get("granted").map_err(get_err)?,
        pid: row.try_get("pid").map_err(get_err)?,
        application_name: row.try_get("application_name").map_err(get_err)?,
        client_addr: row.try_get("client_addr").map_err(get_err)?,
        backend_start: seconds("backend_start")?
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(|since_epoch| UNIX_EPOCH + since_epoch),
        waiting_for: seconds("waiting")?.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
    })
}

/// The holders as a table, one line each, for people.
///
/// ```
/// let table = pals::inspect::table(&[]);
/// assert!(table.starts_with("key"));
/// ```
pub fn table(holders: &[Holder]) -> String {
    let mut out = format!(
        "{:<21} {:<9} {:<8} {:>7} {:<24} {:<16} {:>10}  {}\n",
        "key", "mode", "state", "pid", "application", "client", "waiting", "name"
    );
    for h in holders {
        let waiting = h
            .waiting_for
            .map_or(String::new(), |d| format!("{:.1}s", d.as_secs_f64()));
        out.push_str(&format!(
            "{:<21} {:<9} {:<8} {:>7} {:<24} {:<16} {:>10}  {}\n",
            h.key,
            h.mode,
            if h.granted { "held" } else { "waiting" },
            h.pid.map_or_else(|| "-".to_string(), |pid| pid.to_string()),
            h.application_name,
            h.client_addr.as_deref().unwrap_or("local"),
            waiting,
            h.name.as_deref().unwrap_or("")
        ));
    }
    out
}
