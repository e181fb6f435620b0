//! Test helper: runs critical sections on one lock from several tasks, each an unsafe
//! read-sleep-write increment of a counter file, and logs when each section ran.
//!
//! `pals_contend URL APP SECTIONS TASKS COUNTER_FILE LOG_FILE`: runs SECTIONS sections in
//! all, spread over TASKS tasks, and writes one `start_ns end_ns` line per section to
//! LOG_FILE (wall-clock nanoseconds, comparable across processes on one machine).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pals::Locker;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[pals::exclusive(name = "counter", timeout = "60s", locker = locker)]
async fn increment(
    locker: &Locker,
    counter: &Path,
    log: &Mutex<Vec<(u128, u128)>>,
) -> Result<(), pals::Error> {
    let start = now_ns();
    let value: u64 = std::fs::read_to_string(counter)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    // The window in which an unprotected increment would lose updates.
    tokio::time::sleep(Duration::from_millis(1)).await;
    std::fs::write(counter, (value + 1).to_string()).expect("write counter");
    log.lock().unwrap().push((start, now_ns()));
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, app, sections, tasks, counter, log_file] = &args[..] else {
        eprintln!("usage: pals_contend URL APP SECTIONS TASKS COUNTER_FILE LOG_FILE");
        std::process::exit(2);
    };
    let (sections, tasks): (usize, usize) = (sections.parse().unwrap(), tasks.parse().unwrap());
    let locker = Locker::new(app.as_str(), url).expect("locker");
    let counter = Arc::new(PathBuf::from(counter));
    let log = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            // Spread the sections: the first (sections % tasks) tasks do one more.
            let mine = sections / tasks + usize::from(task < sections % tasks);
            let (locker, counter, log) = (locker.clone(), counter.clone(), log.clone());
            tokio::spawn(async move {
                for _ in 0..mine {
                    increment(&locker, &counter, &log)
                        .await
                        .expect("critical section");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let lines: String = log
        .lock()
        .unwrap()
        .iter()
        .map(|(start, end)| format!("{start} {end}\n"))
        .collect();
    std::fs::write(log_file, lines).expect("write log");
}
