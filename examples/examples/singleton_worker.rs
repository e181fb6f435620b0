//! A singleton worker in a replica fleet, on leader election, stopped gracefully as a
//! rolling deploy stops it: `cargo run --example singleton_worker [JOBS]`.
//!
//! Every replica runs this. One is elected and works; the others wait in line (the
//! database queues them). On SIGTERM or Ctrl-C the leader finishes the job in hand, its
//! body returns, and `run` gives the lead up at once (not when the process ends, and not
//! when a keepalive notices): a standby takes over within milliseconds. A standby told to
//! stop leaves the line. With JOBS, the leader also steps down after that many jobs. A
//! leader that loses its lock (its session ended) has its body stopped where it stands, and
//! campaigns again.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `worker-demo`).

use std::time::Duration;

use tokio::sync::watch;

/// The leader's body: jobs, until told to stop or `jobs` are done.
async fn work(term: pals::Term, stop: watch::Receiver<bool>, jobs: u64) -> u64 {
    let pid = std::process::id();
    println!("pid {pid}: leading (fence {})", term.fence());
    let mut done = 0;
    // The stop is looked at between jobs: the job in hand is finished, never cut in half.
    while done < jobs && !*stop.borrow() {
        process_next_job(term.fence()).await;
        done += 1;
        println!("pid {pid}: processed job {done}");
    }
    println!("pid {pid}: stepping down after {done} job(s)");
    done
}

async fn process_next_job(_fence: u64) {
    // Take a job from the queue, do it; writes carry the fence (see `fenced_writes`).
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: u64 = match std::env::args().nth(1) {
        Some(jobs) => jobs.parse()?,
        None => 3,
    };
    let app = std::env::var("PALS_APP_NAME").unwrap_or_else(|_| "worker-demo".into());
    let locker = pals::Locker::new(app, &pals_examples::db_url())?;
    let election = locker.election("singleton-worker");
    println!("pid {}: standing by", std::process::id());

    let (stop, stopped) = watch::channel(false);
    let shutdown = async move {
        pals_examples::stop_requested().await;
        stop.send_replace(true); // the body sees it between jobs
    };
    // Stopped while in line: it leaves the line. While leading: the job in hand is
    // finished, the body returns, and the lead is given up at once. After JOBS jobs the
    // body returns too.
    election
        .run_until(shutdown, |term| work(term, stopped.clone(), jobs))
        .await?;
    println!("pid {}: exiting", std::process::id());
    Ok(())
}
