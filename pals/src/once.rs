//! [`OncePer`]: a job that runs at most once per tick of its schedule across the fleet, and
//! [`RunGuard`], one claimed run of it. A tick is claimed under the job's lock by writing
//! its row in the runs table (`pals_runs`, made on first use: see `coordination`), and the
//! run's end is written into the same row: the table is also the job's history
//! ([`Locker::runs`](crate::Locker::runs)).

use std::fmt::{self, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::SimpleQueryMessage;

use crate::coordination::Coordination;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::inspect::RunOutcome;
use crate::key::Mode;
use crate::lock::Lock;
use crate::outcome::Outcome;
use crate::panics::{caught, caught_sync};
use crate::runtime::block_on;
use crate::sql;

/// The longest detail (an error's or a panic's text) a run's row keeps, in bytes.
const DETAIL_LIMIT: usize = 2000;

impl Lock {
    /// This lock as a job that runs at most once per `period` across the fleet: each tick
    /// of the schedule runs once, whichever replica fires first, and a replica that fires
    /// for a tick already run skips it. For scheduled jobs (cron, intervals) on every
    /// replica: nothing to tune against clock skew or scheduler lateness.
    ///
    /// **The tick** of a call is the **database server's clock** when the call began,
    /// rounded to the nearest multiple of `period` since the Unix epoch (plus the
    /// [`offset`](OncePer::offset)): a replica firing up to half a period early or late
    /// counts for the same tick, and the replicas' own clocks do not matter. A schedule
    /// whose firings sit half a period away from a multiple of the period (a daily job at
    /// noon UTC with a 24 h period) needs the offset that centres its ticks: 12 h there.
    ///
    /// **The claim** is made under the lock: [`claim`](OncePer::claim) takes the lock, then
    /// writes the tick's row in the table `pals_runs` (in the locker's
    /// [`schema`](crate::LockerBuilder::schema); made on first use, which needs `CREATE` on
    /// the schema: without it, the error gives the SQL for an admin to run once). A tick
    /// whose row exists ran already (or is running): the call is skipped, and so is a call
    /// whose tick is older than the job's newest run (one that waited for the lock while
    /// the next tick ran). The row is durable: a replica that starts later, or a restarted
    /// one, skips the tick too.
    ///
    /// **At most once.** A run that fails (an `Err`, a panic, a lost lock, a killed process)
    /// is not run again in its tick: the next tick runs as usual. For retries, retry inside
    /// the body, let the scheduler fire again (each firing in a new tick), or use a shorter
    /// period.
    ///
    /// **The history** is the same table: each run's tick, when it started and ended, which
    /// replica ran it and how it ended ([`Locker::runs`](crate::Locker::runs),
    /// [`RunOutcome`]); the last [`runs_kept`](crate::LockerBuilder::runs_kept) runs of each
    /// job (100 by default) are kept, pruned as runs are claimed.
    ///
    /// **Waits.** A busy lock (another replica is running the job) is a skip at once,
    /// unless the lock has a [`timeout`](Lock::timeout) of its own: then the claim waits
    /// for it, and the call's tick is still that of the moment it began. The lock must be
    /// exclusive (a [`shared`](Lock::shared) one fails the claim with
    /// [`Error::InvalidConfig`]); it may be [`fenced`](Lock::fenced).
    ///
    /// **Cost.** A run is the lock's own statements plus two on the locker's coordination
    /// session: the claim, a durable commit (the server's write-ahead log reaches the disk
    /// before it answers), and the end, committed without waiting for the disk (a server
    /// crash a moment later may lose it: the run then reads vanished). Measured (benchmark
    /// row 7), a run costs 10x to 30x a plain try-and-release cycle, the server's commit:
    /// hundreds of runs a second for one job.
    ///
    /// Python PALs has no such thing: a Python job on the same lock excludes the Rust runs
    /// while it runs, but neither reads nor writes the runs table.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pals::Outcome;
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// # let app = format!("doc-once-per-{}-{:?}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    /// let locker = pals::Locker::new(&app, &url)?;
    /// let report = locker.lock("nightly-report").once_per(Duration::from_secs(24 * 3600));
    ///
    /// let first = report.run(async { Ok::<_, std::io::Error>("built") }).await?;
    /// assert!(matches!(first, Outcome::Ran(Ok("built"))));
    /// let again = report.run(async { Ok::<_, std::io::Error>("built") }).await?;
    /// assert!(again.is_skipped()); // this tick ran already
    ///
    /// let history = locker.runs("nightly-report", 10).await?;
    /// assert_eq!(history[0].outcome, pals::inspect::RunOutcome::Succeeded);
    /// # Ok(()) }
    /// ```
    pub fn once_per(self, period: Duration) -> OncePer {
        OncePer {
            lock: self,
            period,
            offset: Duration::ZERO,
        }
    }
}

/// A job that runs at most once per tick of its schedule across the fleet; made by
/// [`Lock::once_per`], which explains it. Cheap to clone.
#[derive(Clone)]
pub struct OncePer {
    lock: Lock,
    period: Duration,
    offset: Duration,
}

/// What a claim found.
// Matched once, right away: boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Claim {
    /// The tick is this caller's to run.
    Run(RunGuard),
    /// The lock was busy (within its timeout, if it has one).
    Busy,
    /// The tick ran already, or is running.
    Ran,
}

impl OncePer {
    /// The job with its ticks moved by `offset` from the multiples of the period (taken
    /// modulo the period): with a 24 h period, `offset` 12 h centres the ticks on noon UTC,
    /// for a schedule that fires then.
    #[must_use]
    pub fn offset(mut self, offset: Duration) -> OncePer {
        self.offset = offset;
        self
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The job's lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Claims the tick of now: `Some` if this caller is to run it, `None` if the lock is
    /// busy or the tick ran already (or is running). Run the job, then say how it ended
    /// with [`RunGuard::succeeded`] or [`RunGuard::failed`]; a guard dropped before is
    /// written down as cancelled (or panicked, during a panic).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// # let app = format!("doc-claim-{}-{:?}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    /// let locker = pals::Locker::new(&app, &url)?;
    /// let job = locker.lock("sync-invoices").once_per(Duration::from_secs(3600));
    /// if let Some(run) = job.claim().await? {
    ///     // ... the job, while run.is_held() ...
    ///     run.failed("the invoice service answered 503").await?; // not retried this hour
    /// }
    /// assert!(job.claim().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn claim(&self) -> Result<Option<RunGuard>, Error> {
        match self.claim_from(Instant::now()).await? {
            Claim::Run(run) => Ok(Some(run)),
            Claim::Busy | Claim::Ran => Ok(None),
        }
    }

    /// [`claim`](OncePer::claim) for synchronous code: blocks the calling thread.
    pub fn blocking_claim(&self) -> Result<Option<RunGuard>, Error> {
        block_on(self.claim())
    }

    /// Runs `body` if this caller claims the tick of now (see [`claim`](OncePer::claim)),
    /// and writes down how it ended: `Ok` succeeded, `Err` failed (with its text), a panic
    /// panicked (and goes on once written), a dropped future cancelled. `Outcome::Skipped`
    /// if the lock was busy or the tick ran already; `body` is then not polled.
    ///
    /// The body's value is returned even if its end could not be written (that failure is
    /// logged at error level); `Err` is for a claim that failed.
    pub async fn run<T, E: Display>(
        &self,
        body: impl Future<Output = Result<T, E>>,
    ) -> Result<Outcome<Result<T, E>>, Error> {
        let Some(run) = self.claim().await? else {
            return Ok(Outcome::Skipped);
        };
        match caught(body).await {
            Ok(output) => {
                run.end_logged(Ended::of_result(&output)).await;
                Ok(Outcome::Ran(output))
            }
            Err(panic) => {
                run.end_logged(Ended::Panicked(panic.message())).await;
                panic.resume()
            }
        }
    }

    /// [`run`](OncePer::run) for synchronous code: blocks the calling thread while it
    /// claims and writes down the end, and runs `body` on it.
    pub fn blocking_run<T, E: Display>(
        &self,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<Outcome<Result<T, E>>, Error> {
        let Some(run) = self.blocking_claim()? else {
            return Ok(Outcome::Skipped);
        };
        match caught_sync(body) {
            Ok(output) => {
                block_on(run.end_logged(Ended::of_result(&output)));
                Ok(Outcome::Ran(output))
            }
            Err(panic) => {
                block_on(run.end_logged(Ended::Panicked(panic.message())));
                panic.resume()
            }
        }
    }

    /// Claims the tick of `began` (the call's start, on this process's clock; read on the
    /// server's clock).
    pub(crate) async fn claim_from(&self, began: Instant) -> Result<Claim, Error> {
        let (period_ms, offset_ms) = self.schedule()?;
        let lock = &self.lock;
        let coordination = lock.coordination();
        let table = Arc::clone(coordination.runs_table().await?);
        let wait = lock.own_timeout().unwrap_or(Duration::ZERO);
        let Some(guard) = lock.acquire_timeout(wait).await? else {
            tracing::debug!(
                lock = lock.name(),
                "pals: once_per: the lock is busy; skipping"
            );
            return Ok(Claim::Busy);
        };
        let pid = guard.backend_pid().unwrap_or(0);
        let claiming = Claiming {
            guard: Some(guard),
            coordination: Arc::clone(coordination),
            table: Arc::clone(&table),
            key: lock.key(),
        };
        // How long ago the call began is read when the statement goes out: after the
        // session has opened, or its turn has come.
        let statement = || {
            sql::claim(&sql::Claim {
                table: &table,
                key: lock.key(),
                name: lock.name(),
                period_ms,
                offset_ms,
                elapsed_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                pid,
                keep: coordination.runs_kept(),
            })
        };
        let what = "the claim of a once_per tick";
        let answer = coordination.query_built(statement, what).await;
        let guard = claiming.settled();
        let tick_us = match self.claimed_tick(answer) {
            Ok(Some(tick_us)) => tick_us,
            claimed => {
                if let Some(guard) = guard {
                    let _ = guard.release().await;
                }
                return claimed.map(|_| Claim::Ran);
            }
        };
        let ticket = Ticket {
            coordination: Arc::clone(coordination),
            table,
            name: Arc::clone(lock.shared_name()),
            key: lock.key(),
            tick_us,
        };
        Ok(Claim::Run(RunGuard {
            guard,
            ticket,
            ending: None,
        }))
    }

    /// The tick the claim's `answer` claimed (µs since the epoch), or `None` if it ran
    /// already (or a later one did).
    fn claimed_tick(
        &self,
        answer: Result<Vec<SimpleQueryMessage>, Error>,
    ) -> Result<Option<i64>, Error> {
        let answer = answer?;
        let row = sql::rows(&answer).next();
        let column = |i| row.and_then(|row| row.get(i));
        let tick_us: i64 = column(0).and_then(|tick| tick.parse().ok()).unwrap_or(0);
        let lock = self.lock.name();
        if column(1) != Some("t") {
            tracing::debug!(
                lock,
                tick = tick_us,
                replica = column(2),
                outcome = column(3),
                "pals: once_per: this tick ran already (or a later one did); skipping"
            );
            return Ok(None);
        }
        tracing::debug!(lock, tick = tick_us, "pals: once_per: claimed the tick");
        Ok(Some(tick_us))
    }

    /// The period and the offset (within the period) in milliseconds; a period under a
    /// millisecond, or a shared lock, is refused.
    fn schedule(&self) -> Result<(u64, u64), Error> {
        let period_ms = u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX);
        if period_ms == 0 || period_ms > i64::MAX as u64 / 4 {
            return Err(Error::InvalidConfig(format!(
                "once_per of {:?} for lock \"{}\": the period must be from 1 ms to \
                 about 73 million years",
                self.period,
                self.lock.name()
            )));
        }
        if self.lock.mode() == Mode::Shared {
            return Err(Error::InvalidConfig(format!(
                "once_per on the shared lock \"{}\": a job's runs need the exclusive lock",
                self.lock.name()
            )));
        }
        let offset_ms = u64::try_from(self.offset.as_millis()).unwrap_or(u64::MAX);
        Ok((period_ms, offset_ms % period_ms))
    }
}

impl fmt::Debug for OncePer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OncePer")
            .field("lock", &self.lock.name())
            .field("period", &self.period)
            .field("offset", &self.offset)
            .finish()
    }
}

/// How a run's body ended, as the code that ran it saw it (whether the lock was held to
/// the end is added when it is written down).
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    /// With the error's text, where it has one.
    Failed(Option<String>),
    /// With the panic's message.
    Panicked(String),
    Cancelled,
}

impl Ended {
    /// `Succeeded` for `Ok`, `Failed` with the error's text for `Err`.
    fn of_result<T, E: Display>(result: &Result<T, E>) -> Ended {
        match result {
            Ok(_) => Ended::Succeeded,
            Err(error) => Ended::Failed(Some(error.to_string())),
        }
    }

    /// The outcome and the detail written for this end: as it is if the lock was `held`
    /// to the end, else lost, with how the body ended as the detail.
    fn written(&self, held: bool) -> (RunOutcome, Option<String>) {
        let (outcome, detail) = match self {
            Ended::Succeeded => (RunOutcome::Succeeded, None),
            Ended::Failed(detail) => (RunOutcome::Failed, detail.clone()),
            Ended::Panicked(message) => (RunOutcome::Panicked, Some(message.clone())),
            Ended::Cancelled => (RunOutcome::Cancelled, None),
        };
        if held {
            return (outcome, detail.map(bounded));
        }
        let then = match detail {
            Some(detail) => format!("{outcome}: {detail}"),
            None => outcome.to_string(),
        };
        let detail = format!("the lock was lost before the run ended; the body then {then}");
        (RunOutcome::Lost, Some(bounded(detail)))
    }
}

/// `text` cut to [`DETAIL_LIMIT`] bytes, on a character boundary, marked where cut.
fn bounded(mut text: String) -> String {
    if text.len() <= DETAIL_LIMIT {
        return text;
    }
    let mut end = DETAIL_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// Where a claimed run's row is, to write its end.
struct Ticket {
    coordination: Arc<Coordination>,
    table: Arc<str>,
    name: Arc<str>,
    key: i64,
    /// The tick, in µs since the epoch, as the claim read it back.
    tick_us: i64,
}

impl Ticket {
    /// Writes `ended` into the run's row (lost unless the lock was `held` to the end), and
    /// gives the outcome written.
    async fn write(&self, ended: &Ended, held: bool) -> Result<RunOutcome, Error> {
        let (outcome, detail) = ended.written(held);
        let statement = sql::record_end(
            &self.table,
            self.key,
            self.tick_us,
            outcome.as_str(),
            detail.as_deref(),
        );
        let what = "the end of a once_per run";
        self.coordination.query(&statement, what).await?;
        Ok(outcome)
    }
}

/// The lock of a claim whose answer has not come. Dropped so (the caller's future was
/// dropped mid-claim), the claim, if it was made, is written down as cancelled, and then
/// the lock released, in the background: the tick is not run, and its row must not read
/// as a replica that died.
struct Claiming {
    guard: Option<LockGuard>,
    coordination: Arc<Coordination>,
    table: Arc<str>,
    key: i64,
}

impl Claiming {
    /// The claim's answer came: the lock, for the caller to keep or release.
    fn settled(mut self) -> Option<LockGuard> {
        self.guard.take()
    }
}

impl Drop for Claiming {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let statement = sql::cancel_claim(&self.table, self.key, guard.backend_pid().unwrap_or(0));
        let coordination = Arc::clone(&self.coordination);
        let background = Arc::clone(&guard.core().background);
        background.spawn(async move {
            let what = "the end of a cancelled once_per claim";
            if let Err(error) = coordination.query(&statement, what).await {
                tracing::warn!(%error, "pals: once_per: a claim cancelled midway could not be written down");
            }
            drop(guard);
        });
    }
}

/// One claimed run of a [`OncePer`] job: the job's lock, held until the run ends, and its
/// row in the run history. Say how it ended with [`succeeded`](RunGuard::succeeded) or
/// [`failed`](RunGuard::failed), which write it down and then release the lock. Dropped
/// without either, it is written down as cancelled (panicked, during a panic) and the lock
/// released, in the background.
pub struct RunGuard {
    guard: Option<LockGuard>,
    ticket: Ticket,
    /// The end being written: what a drop meanwhile writes.
    ending: Option<Ended>,
}

impl RunGuard {
    /// The tick this run is for (see [`Lock::once_per`]).
    pub fn tick(&self) -> SystemTime {
        let micros = u64::try_from(self.ticket.tick_us).unwrap_or(0);
        UNIX_EPOCH + Duration::from_micros(micros)
    }

    /// The lock's full name, `"app.name"`.
    pub fn name(&self) -> &str {
        &self.ticket.name
    }

    /// False once the lock is known to be lost (see [`LockGuard::is_held`]): another
    /// replica may run meanwhile, though not this tick.
    pub fn is_held(&self) -> bool {
        self.guard.as_ref().is_some_and(LockGuard::is_held)
    }

    /// Completes when the lock is known to be lost (see [`LockGuard::lost`]).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lost = self.guard.as_ref().map(LockGuard::lost);
        async move {
            if let Some(lost) = lost {
                lost.await;
            }
        }
    }

    /// The fencing token of a [fenced](Lock::fenced) job's lock.
    pub fn fence(&self) -> Option<u64> {
        self.guard.as_ref().and_then(LockGuard::fence)
    }

    /// The lock held for the run.
    pub(crate) fn guard(&self) -> Option<&LockGuard> {
        self.guard.as_ref()
    }

    /// Writes down that the run succeeded (or was lost, if the lock was lost meanwhile),
    /// then releases the lock; gives the outcome written.
    pub async fn succeeded(self) -> Result<RunOutcome, Error> {
        self.end(Ended::Succeeded).await
    }

    /// Writes down that the run failed, with `error`'s text (or was lost, if the lock was
    /// lost meanwhile), then releases the lock; gives the outcome written. The tick is not
    /// run again.
    pub async fn failed(self, error: impl Display) -> Result<RunOutcome, Error> {
        self.end(Ended::Failed(Some(error.to_string()))).await
    }

    /// [`succeeded`](RunGuard::succeeded) for synchronous code.
    pub fn blocking_succeeded(self) -> Result<RunOutcome, Error> {
        block_on(self.succeeded())
    }

    /// [`failed`](RunGuard::failed) for synchronous code.
    pub fn blocking_failed(self, error: impl Display) -> Result<RunOutcome, Error> {
        block_on(self.failed(error))
    }

    /// Writes down `ended` while the lock is held, then releases it. A lock found lost at
    /// the release is written down as lost after all. Dropped while it writes, the guard
    /// writes `ended` in the background before the lock goes.
    pub(crate) async fn end(mut self, ended: Ended) -> Result<RunOutcome, Error> {
        self.ending = Some(ended.clone());
        let written = self.ticket.write(&ended, self.is_held()).await;
        let Some(guard) = self.guard.take() else {
            return written; // never: a run guard holds its lock until it ends
        };
        let released = guard.release().await;
        let outcome = written?;
        match released {
            Ok(false) if outcome != RunOutcome::Lost => self.ticket.write(&ended, false).await,
            Ok(_) => Ok(outcome),
            Err(error) => {
                // Its session was closed, which frees the lock: the run ended as written.
                tracing::warn!(lock = %self.ticket.name, %error, "pals: once_per: the release after the run failed; its session was closed");
                Ok(outcome)
            }
        }
    }

    /// [`end`](RunGuard::end), its failure logged: for a body whose value must be returned
    /// whatever happens to its record.
    pub(crate) async fn end_logged(self, ended: Ended) {
        let name = Arc::clone(&self.ticket.name);
        if let Err(error) = self.end(ended).await {
            tracing::error!(lock = %name, %error, "pals: once_per: the end of the run could not be written down");
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let ended = match (self.ending.take(), std::thread::panicking()) {
            (Some(ending), _) => ending,
            (None, true) => Ended::Panicked("(the panic's message was not caught)".into()),
            (None, false) => Ended::Cancelled,
        };
        let ticket = Ticket {
            coordination: Arc::clone(&self.ticket.coordination),
            table: Arc::clone(&self.ticket.table),
            name: Arc::clone(&self.ticket.name),
            key: self.ticket.key,
            tick_us: self.ticket.tick_us,
        };
        let background = Arc::clone(&guard.core().background);
        // Written down before the lock goes: the next claim must find the run ended.
        background.spawn(async move {
            if let Err(error) = ticket.write(&ended, guard.is_held()).await {
                tracing::warn!(lock = %ticket.name, %error, "pals: once_per: the end of a dropped run could not be written down");
            }
            drop(guard);
        });
    }
}

impl fmt::Debug for RunGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunGuard")
            .field("name", &self.ticket.name)
            .field("tick_us", &self.ticket.tick_us)
            .field("held", &self.is_held())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_as_written() {
        let failed = Ended::Failed(Some("503".into()));
        assert_eq!(
            failed.written(true),
            (RunOutcome::Failed, Some("503".into()))
        );
        let (outcome, detail) = failed.written(false);
        assert_eq!(outcome, RunOutcome::Lost);
        assert!(detail.unwrap().ends_with("the body then failed: 503"));
        let (_, detail) = Ended::Succeeded.written(false);
        assert!(detail.unwrap().ends_with("then succeeded"));
        assert_eq!(
            Ended::Cancelled.written(true),
            (RunOutcome::Cancelled, None)
        );
        let long = Ended::Panicked("é".repeat(DETAIL_LIMIT));
        let (_, detail) = long.written(true);
        assert!(detail.unwrap().len() <= DETAIL_LIMIT + '…'.len_utf8());
    }
}
