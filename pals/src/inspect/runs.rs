//! The run history of `once_per` jobs, as [`Locker::runs`](crate::Locker::runs) reads it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use crate::sql;

/// How a run of a [`once_per`](crate::Lock::once_per) job ended, as its history says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunOutcome {
    /// Under way: its replica's session still holds the lock.
    Running,
    /// The body returned, and not an `Err`.
    Succeeded,
    /// The body returned an `Err` (its text is the run's detail).
    Failed,
    /// The body panicked (the panic's message is the run's detail).
    Panicked,
    /// The body was dropped before it ended (an async caller cancelled, a timeout, `select!`).
    Cancelled,
    /// The lock was lost while the run went on (its session ended, or stopped answering);
    /// another replica could have run meanwhile. The detail says how the body ended.
    Lost,
    /// Its replica went away without saying how the run ended: the process was killed or
    /// crashed, or its session was cut before the end could be written.
    Vanished,
}

impl RunOutcome {
    /// As the runs table writes it: `running`, `succeeded`, `failed`, `panicked`,
    /// `cancelled`, `lost`, `vanished`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => sql::RUNNING,
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Panicked => "panicked",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Lost => "lost",
            RunOutcome::Vanished => "vanished",
        }
    }

    /// The outcome the table's text names, if it names one.
    pub(crate) fn of_text(text: &str) -> Option<RunOutcome> {
        [
            RunOutcome::Running,
            RunOutcome::Succeeded,
            RunOutcome::Failed,
            RunOutcome::Panicked,
            RunOutcome::Cancelled,
            RunOutcome::Lost,
            RunOutcome::Vanished,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One run of a [`once_per`](crate::Lock::once_per) job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunRecord {
    /// The lock's full name, `"app.name"`.
    pub name: String,
    /// The tick the run was for: the server's clock when the call began, rounded to the
    /// nearest multiple of the period (plus the offset).
    pub tick: SystemTime,
    /// The job's period when it ran.
    pub period: Duration,
    /// When the run began (the server's clock, once the tick was claimed).
    pub started: SystemTime,
    /// When it ended, if its end was written.
    pub ended: Option<SystemTime>,
    /// The `application_name` of the replica that ran it (pals sets
    /// `pals:{app}@{host}:{pid}`: see [`application_name`](crate::application_name)).
    pub replica: String,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The error's or the panic's text, or for a lost run how the body ended.
    pub detail: Option<String>,
}

/// The runs in the answer to `sql::runs()`.
pub(crate) fn runs(answer: &[SimpleQueryMessage]) -> Vec<RunRecord> {
    sql::rows(answer).filter_map(run).collect()
}

/// One row of the answer to `sql::runs()`; `None` for a row that cannot be read (never:
/// pals writes every column it reads).
fn run(row: &SimpleQueryRow) -> Option<RunRecord> {
    let at = |i: usize| -> Option<SystemTime> {
        let micros: i64 = row.get(i)?.parse().ok()?;
        let micros = u64::try_from(micros).ok()?;
        Some(UNIX_EPOCH + Duration::from_micros(micros))
    };
    let period_ms: u64 = row.get(2)?.parse().ok()?;
    Some(RunRecord {
        name: row.get(0)?.to_string(),
        tick: at(1)?,
        period: Duration::from_millis(period_ms),
        started: at(3)?,
        ended: at(4),
        replica: row.get(5)?.to_string(),
        outcome: RunOutcome::of_text(row.get(6)?)?,
        detail: row.get(7).map(str::to_string),
    })
}

/// The runs as a table, one line each, for people: times in UTC.
///
/// ```
/// let table = pals::inspect::runs_table(&[]);
/// assert!(table.starts_with("tick"));
/// ```
pub fn runs_table(runs: &[RunRecord]) -> String {
    let mut out = format!(
        "{:<24} {:<24} {:>8}  {:<28} {:<10} {}\n",
        "tick", "started", "took", "replica", "outcome", "detail"
    );
    for run in runs {
        let took = run.ended.map_or_else(
            || "-".to_string(),
            |ended| {
                let took = ended.duration_since(run.started).unwrap_or_default();
                format!("{:.3}s", took.as_secs_f64())
            },
        );
        let line = format!(
            "{:<24} {:<24} {:>8}  {:<28} {:<10} {}",
            utc(run.tick),
            utc(run.started),
            took,
            run.replica,
            run.outcome,
            run.detail.as_deref().unwrap_or("")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `at` as `YYYY-MM-DD HH:MM:SS.mmmZ` (UTC).
fn utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, rest) = (since.as_secs() / 86_400, since.as_secs() % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The date of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        let at =
            |secs: u64, millis: u64| utc(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis));
        assert_eq!(at(0, 0), "1970-01-01 00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29 00:00:00.005Z");
        assert_eq!(at(1_796_145_328, 999), "2026-12-01 17:15:28.999Z");
        assert_eq!(at(4_102_444_799, 0), "2099-12-31 23:59:59.000Z");
    }

    #[test]
    fn outcomes_read_back_from_their_text() {
        for outcome in [RunOutcome::Running, RunOutcome::Lost, RunOutcome::Vanished] {
            assert_eq!(RunOutcome::of_text(outcome.as_str()), Some(outcome));
        }
        assert_eq!(RunOutcome::of_text("ok"), None);
    }
}
