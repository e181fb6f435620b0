//! Who holds which advisory lock, and how the runs of a `once_per` job went: the answers
//! an operator needs at 3 a.m.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use crate::key::Mode;
use crate::sql;

mod runs;

pub(crate) use runs::runs;
pub use runs::{runs_table, RunOutcome, RunRecord};

/// One advisory lock held or awaited in the database, as
/// [`Locker::holders`](crate::Locker::holders) reports it.
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
    /// The session's `application_name` (pals sets `pals:{app}@{host}:{pid}`: see
    /// [`application_name`](crate::application_name)).
    pub application_name: String,
    /// The client's address, when it connected over TCP.
    pub client_addr: Option<String>,
    /// When the session started.
    pub backend_start: Option<SystemTime>,
    /// How long the session has been waiting for the lock (only when not granted).
    pub waiting_for: Option<Duration>,
}

/// The holders in the answer to `sql::holders()`, named where `names` knows their keys.
pub(crate) fn holders(
    answer: &[SimpleQueryMessage],
    names: &HashMap<i64, Arc<str>>,
) -> Vec<Holder> {
    sql::rows(answer)
        .filter_map(|row| holder(row, names))
        .collect()
}

/// One row of the answer to `sql::holders()`; `None` for a row without a key (the key is
/// computed from two columns that are never NULL: it cannot happen).
fn holder(row: &SimpleQueryRow, names: &HashMap<i64, Arc<str>>) -> Option<Holder> {
    let text = |i: usize| row.get(i);
    let key: i64 = text(0)?.parse().ok()?;
    let seconds = |i: usize| text(i).and_then(|s| s.parse::<f64>().ok());
    Some(Holder {
        key,
        name: names.get(&key).map(|name| name.to_string()),
        mode: sql::mode_of(text(1).unwrap_or("")),
        granted: text(2) == Some("t"),
        pid: text(3).and_then(|pid| pid.parse().ok()),
        application_name: text(4).unwrap_or("").to_string(),
        client_addr: text(5).map(str::to_string),
        backend_start: seconds(6)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(|since_epoch| UNIX_EPOCH + since_epoch),
        waiting_for: seconds(7).and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
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
