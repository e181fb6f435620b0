//! A singleton worker (leader election) in a replica fleet: `cargo run --example singleton_worker`.
//!
//! Three replicas each try to become the worker. `timeout = "forever"` makes the others
//! wait in line; when the worker stops (here: after a few jobs, as on a deploy), the next
//! replica takes over at once.

use std::time::Duration;

use pals::Locker;

#[pals::exclusive(name = "singleton-worker", timeout = "forever", on_lost = "cancel", locker = replica)]
async fn run_worker(replica: &Locker, who: &str, jobs: u32) -> Result<(), pals::Error> {
    println!("{who}: I am the worker now");
    for job in 1..=jobs {
        tokio::time::sleep(Duration::from_millis(30)).await; // process a job from the queue
        println!("{who}: processed job {job}");
    }
    println!("{who}: stepping down");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), pals::Error> {
    let url = pals_examples::db_url();
    let mut replicas = Vec::new();
    for who in ["replica-a", "replica-b", "replica-c"] {
        let locker = Locker::new("worker-demo", &url)?;
        replicas.push(tokio::spawn(
            async move { run_worker(&locker, who, 3).await },
        ));
    }
    for replica in replicas {
        replica.await.expect("replica task")?;
    }
    Ok(())
}
