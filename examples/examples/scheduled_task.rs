//! A scheduled job that every replica runs, and that runs once per tick across the fleet,
//! on tokio-cron-scheduler (the Rust counterpart of Spring's `@Scheduled`, where ShedLock
//! users come from): `cargo run --example scheduled_task [TICKS]`.
//!
//! Every replica runs the same schedule, a cron job every 4 seconds, and each tick of the
//! report must run once, not once per replica. A lock alone does not do that: a report that
//! takes a few milliseconds is over when another replica's scheduler fires a moment later,
//! and that replica would run the tick again. `once_per = "4s"` claims the tick itself (the
//! database server's clock, rounded to the nearest 4 seconds) under the lock: the first
//! replica to fire runs it; the others, and any replica that fires for it later, skip it.
//! Nothing to tune against the scheduler's lateness (a few hundred milliseconds, and up to a
//! second and a half for the tick it fires at start) or against clock skew: up to half the
//! period either way counts for the tick.
//!
//! Start it twice with the same `PALS_APP_NAME`: each tick runs once. At exit, it prints the
//! job's last runs, from any replica.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `scheduler-demo`); TICKS (default 3):
//! how many firings this replica sees before it exits.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_cron_scheduler::{Job, JobScheduler};

#[pals::exclusive(name = "nightly-report", once_per = "4s")]
async fn nightly_report() -> Option<String> {
    Some(format!("report built by process {}", std::process::id()))
}

/// Now, in milliseconds since the epoch, and as `HH:MM:SS.mmm` (UTC).
fn now() -> (u128, String) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let of_day = ms % 86_400_000;
    let shown = format!(
        "{:02}:{:02}:{:02}.{:03}",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    );
    (ms, shown)
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
            let (ms, at) = now();
            match nightly_report().await {
                Some(report) => println!("fired {at} ({ms}): ran: {report}"),
                None => println!("fired {at} ({ms}): skipped: this tick ran on another replica"),
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
    let runs = pals::global()?.runs("nightly-report", 5).await?;
    print!("{}", pals::inspect::runs_table(&runs));
    Ok(())
}
