//! A scheduled job that must run on one replica at a time, on tokio-cron-scheduler (the
//! Rust counterpart of Spring's `@Scheduled`, where ShedLock users come from):
//! `cargo run --example scheduled_task [TICKS]`.
//!
//! Every replica runs the same schedule: a cron job every 4 seconds. Whichever replica
//! takes the lock runs the report; the others skip that tick. `min_hold` keeps the lock for
//! 1.5 s after a fast run, so a replica whose scheduler fires a moment later (clock skew, a
//! busy machine) does not run the same tick again; it must stay shorter than the period
//! less the scheduler's lateness (a few hundred milliseconds, and up to a second and a half
//! for the tick it fires at start). Start it twice: each tick runs once.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `scheduler-demo`); TICKS (default 3):
//! how many ticks this replica sees before it exits.

use tokio_cron_scheduler::{Job, JobScheduler};

/// Seconds between ticks (the cron expression below).
const PERIOD: u64 = 4;

#[pals::exclusive(
    name = "nightly-report",
    timeout = "0",
    on_busy = "skip",
    min_hold = "1500ms"
)]
async fn nightly_report(tick: i64) -> Option<String> {
    // Build the report: fast, which is why min_hold matters.
    Some(format!("report for tick {tick}"))
}

/// The tick a firing is for: the last scheduled second. The scheduler fires a few hundred
/// milliseconds late, and once at start for a tick it just missed.
fn current_tick() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now - now % PERIOD as i64
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ticks: usize = match std::env::args().nth(1) {
        Some(ticks) => ticks.parse()?,
        None => 3,
    };
    let app = std::env::var("PALS_APP_NAME").unwrap_or_else(|_| "scheduler-demo".into());
    pals::init(pals::Locker::new(app, &pals_examples::db_url())?)?;

    let (fired, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut scheduler = JobScheduler::new().await?;
    let job = Job::new_async("*/4 * * * * *", move |_id, _scheduler| {
        let fired = fired.clone();
        Box::pin(async move {
            let tick = current_tick();
            match nightly_report(tick).await {
                Some(report) => println!("tick {tick}: ran: {report}"),
                None => println!("tick {tick}: skipped: another replica has the job"),
            }
            let _ = fired.send(());
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    for _ in 0..ticks {
        seen.recv().await;
    }
    scheduler.shutdown().await?;
    // min_hold lasts as long as the process: exiting now would free the lock at once, and a
    // replica that fires a moment later would run this tick again.
    pals::global()?.wait_for_releases().await;
    Ok(())
}
