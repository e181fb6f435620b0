//! Test helper: a writer in a process of its own.
//!
//! `pals_write URL APP NAME TIMEOUT_MS` opens its session first, then takes the exclusive
//! lock NAME (waiting up to TIMEOUT_MS), releases it, and prints `acquired MS` (how long the
//! acquire took, in milliseconds) or `busy MS`.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, app, name, timeout_ms] = &args[..] else {
        eprintln!("usage: pals_write URL APP NAME TIMEOUT_MS");
        std::process::exit(2);
    };
    let timeout = Duration::from_millis(timeout_ms.parse().expect("TIMEOUT_MS"));
    let locker = pals::Locker::new(app.as_str(), url).expect("locker");
    // Connect before timing: the figure is the lock's wait, not process start-up.
    let warm = locker
        .lock("warm-up")
        .blocking_try_acquire()
        .expect("connect");
    drop(warm);
    let started = Instant::now();
    let got = locker
        .lock(name)
        .blocking_acquire_timeout(timeout)
        .expect("acquire");
    let millis = started.elapsed().as_millis();
    match got {
        Some(guard) => {
            println!("acquired {millis}");
            guard.blocking_release().expect("release");
        }
        None => println!("busy {millis}"),
    }
}
