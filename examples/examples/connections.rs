//! How many server connections one replica uses, as `pg_stat_activity` counts them:
//! `cargo run --release --example connections [IDLE_TIMEOUT_SECS]`.
//!
//! One locker with the default pool (10) and idle timeout (60 s, or the argument), through
//! four phases: (a) at rest after one lock; (b) three scheduled jobs, each an
//! `#[pals::exclusive]` function fired every second, all three on the same tick; (c) a
//! burst of 200 tasks taking distinct locks at once and holding them 100 ms, then quiet
//! until the pool has shrunk; (b) again, with the jobs a third of a second apart; (d) a semaphore permit waited for, which opens the locker's
//! `LISTEN` session (it stays open as long as the locker). It takes a little over two idle
//! timeouts.
//!
//! Settings: `PALS_DB_URL`.

use std::time::{Duration, Instant};

use pals::tokio_postgres;

#[pals::exclusive(name = "job-{n}", timeout = "0", on_busy = "skip", locker = locker)]
async fn job(locker: &pals::Locker, n: u32) {
    tokio::time::sleep(Duration::from_millis(100)).await; // the job's work
}

/// Counts the server sessions of one app, on a connection of its own.
struct Probe {
    client: tokio_postgres::Client,
    name: String,
}

impl Probe {
    async fn sessions(&self) -> Result<i64, tokio_postgres::Error> {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1";
        Ok(self.client.query_one(sql, &[&self.name]).await?.get(0))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pals_examples::db_url();
    let app = format!("connections-{}", std::process::id());
    let mut builder = pals::Locker::builder(&app).url(&url);
    if let Some(secs) = std::env::args().nth(1) {
        builder = builder.idle_timeout(Duration::from_secs(secs.parse()?));
    }
    let locker = builder.build()?;
    let idle = locker.idle_timeout();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let probe = Probe {
        client,
        name: pals::application_name(&app),
    };
    println!("pool_size {}, idle_timeout {idle:?}", locker.pool_size());

    // (a) At rest.
    println!(
        "(a) new locker, before any lock: {}",
        probe.sessions().await?
    );
    let guard = locker.lock("one").acquire().await?;
    guard.release().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "(a) at rest, 5 s after one lock: {}",
        probe.sessions().await?
    );

    // (b) Three jobs every second, for a little more than an idle timeout.
    let started = Instant::now();
    let mut most = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < idle + Duration::from_secs(10) {
        tick.tick().await;
        let jobs: Vec<_> = (0..3)
            .map(|n| {
                let locker = locker.clone();
                tokio::spawn(async move { job(&locker, n).await })
            })
            .collect();
        for job in jobs {
            job.await?;
        }
        most = most.max(probe.sessions().await?);
    }
    println!(
        "(b) 3 jobs every second for {:?}: at most {most}, at the end {}",
        started.elapsed(),
        probe.sessions().await?
    );

    // (c) A burst, then quiet.
    let takes: Vec<_> = (0..200)
        .map(|n| {
            let lock = locker.lock(&format!("burst-{n}"));
            tokio::spawn(async move {
                let guard = lock.try_acquire().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                match guard {
                    Some(guard) => guard.release().await,
                    None => Ok(false),
                }
            })
        })
        .collect();
    let mut peak = 0;
    while !takes.iter().all(|take| take.is_finished()) {
        peak = peak.max(probe.sessions().await?);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for take in takes {
        take.await??;
    }
    let quiet = Instant::now();
    println!("(c) burst of 200 locks held 100 ms: at most {peak}");
    let mut last = probe.sessions().await?;
    println!("(c) burst over: {last}");
    while last > 1 && quiet.elapsed() < idle + Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = probe.sessions().await?;
        if now != last {
            println!("(c) {:?} after the burst: {now}", quiet.elapsed());
            last = now;
        }
    }

    // (b) again, the three jobs a third of a second apart (as separate schedules fire).
    let started = Instant::now();
    let mut most = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(333));
    for n in (0..3).cycle() {
        if started.elapsed() >= Duration::from_secs(15) {
            break;
        }
        tick.tick().await;
        job(&locker, n).await;
        most = most.max(probe.sessions().await?);
    }
    println!(
        "(b) the 3 jobs a third of a second apart for {:?}: at most {most}",
        started.elapsed()
    );

    // (d) A semaphore's waiters listen on a session of their own, outside the pool.
    let exports = locker.semaphore("export", 1);
    let permit = exports.acquire().await?;
    let waiter = {
        let exports = exports.clone();
        tokio::spawn(async move { exports.acquire_timeout(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "(d) a permit held, another waited for: {}",
        probe.sessions().await?
    );
    permit.release().await?;
    let second = waiter.await??.expect("the permit was given back");
    second.release().await?;
    println!("(d) permits given back: {}", probe.sessions().await?);
    Ok(())
}
