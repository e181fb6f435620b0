//! A scheduled task that must run on one replica at a time: `cargo run --example scheduled_task`.
//!
//! Two "replicas" (two lockers, as two processes would have) fire the same job on the same
//! schedule. Whichever takes the lock runs the report; the other skips that tick. `min_hold`
//! keeps the lock for a while after a fast run, so a replica whose clock fires a moment late
//! does not run the job a second time.

use std::time::Duration;

use pals::Locker;

#[pals::exclusive(name = "nightly-report", timeout = "0", on_busy = "skip", min_hold = "300ms", locker = replica)]
async fn nightly_report(replica: &Locker, who: &str, tick: u32) -> Option<String> {
    tokio::time::sleep(Duration::from_millis(20)).await; // build the report
    Some(format!("tick {tick}: report built by {who}"))
}

#[tokio::main]
async fn main() -> Result<(), pals::Error> {
    let url = pals_examples::db_url();
    let replicas = [
        ("replica-a", Locker::new("scheduler-demo", &url)?),
        ("replica-b", Locker::new("scheduler-demo", &url)?),
    ];
    for tick in 1..=3 {
        // Both schedulers fire; the second one's clock is 60 ms late. The report took 20 ms,
        // so without min_hold the late replica would find the lock free and run it again.
        let (a, b) = tokio::join!(nightly_report(&replicas[0].1, replicas[0].0, tick), async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            nightly_report(&replicas[1].1, replicas[1].0, tick).await
        });
        for (outcome, (who, _)) in [a, b].into_iter().zip(&replicas) {
            match outcome {
                Some(report) => println!("{report}"),
                None => println!("tick {tick}: {who} skipped: another replica has the job"),
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await; // until the next tick
    }
    Ok(())
}
