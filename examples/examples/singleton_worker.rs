//! A singleton worker (leader election) in a replica fleet, stopped gracefully as a rolling
//! deploy stops it: `cargo run --example singleton_worker [JOBS]`.
//!
//! Every replica runs this. One holds the lock and works; the others wait in line
//! (`timeout = "forever"`). On SIGTERM or Ctrl-C the worker finishes the job in hand,
//! returns, and the attribute releases the lock at once (not when the process ends, and not
//! when a keepalive notices): a standby takes over within milliseconds. A standby told to
//! stop leaves the line. With JOBS, the worker also steps down after that many jobs.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `worker-demo`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Set once this replica holds the lock.
static LEADING: AtomicBool = AtomicBool::new(false);

#[pals::exclusive(name = "singleton-worker", timeout = "forever", on_lost = "cancel")]
async fn run_worker(stop: watch::Receiver<bool>, jobs: u64) -> Result<u64, pals::Error> {
    LEADING.store(true, Ordering::SeqCst);
    println!("pid {}: leading", std::process::id());
    let mut done = 0;
    // The stop is looked at between jobs: the job in hand is finished, never cut in half.
    while done < jobs && !*stop.borrow() {
        process_next_job().await;
        done += 1;
        println!("pid {}: processed job {done}", std::process::id());
    }
    println!(
        "pid {}: stepping down after {done} job(s)",
        std::process::id()
    );
    Ok(done)
}

async fn process_next_job() {
    tokio::time::sleep(Duration::from_millis(50)).await; // take a job from the queue, do it
}

/// Completes on SIGTERM (the deploy) or Ctrl-C.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: u64 = match std::env::args().nth(1) {
        Some(jobs) => jobs.parse()?,
        None => 3,
    };
    let app = std::env::var("PALS_APP_NAME").unwrap_or_else(|_| "worker-demo".into());
    pals::init(pals::Locker::new(app, &pals_examples::db_url())?)?;
    println!("pid {}: standing by", std::process::id());

    let (stop, stopped) = watch::channel(false);
    let worker = run_worker(stopped, jobs);
    tokio::pin!(worker);
    tokio::select! {
        done = &mut worker => {
            done?; // stepped down after its jobs: the lock is already released
        }
        () = stop_requested() => {
            // The worker finishes its job and returns, releasing the lock. A standby still
            // waiting for the lock leaves the line: dropping the wait cancels it.
            stop.send_replace(true);
            if LEADING.load(Ordering::SeqCst) {
                if let Err(error) = worker.await {
                    eprintln!("pid {}: {error}", std::process::id());
                }
            }
        }
    }
    println!("pid {}: exiting", std::process::id());
    Ok(())
}
