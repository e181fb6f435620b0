//! The worker side of the chaos test (tests/tests/chaos.rs): a worker process
//! (`pals_chaos_worker`) whose tasks take, hold and let go of a few locks, recording each
//! hold in a journal the test reads. What the workers and the test share is here.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pals::{Error, LockGuard, Locker};

use crate::{locker_with, micros_now};

/// The locks the workers take; [`FENCED`] is taken fenced.
pub const NAMES: [&str; 4] = ["a", "b", "c", "f"];
/// The one of [`NAMES`] taken fenced.
pub const FENCED: &str = "f";
/// Tasks per worker, each taking one lock at a time.
const TASKS: u64 = 4;
/// The workers' heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// The longest a hold lasts, and how often a holder looks at `is_held()` meanwhile.
const HOLD_MAX_MS: u64 = 20;
const LOOK_EVERY: Duration = Duration::from_millis(2);
/// What a worker prints once its tasks are done and it holds nothing.
pub const IDLE: &str = "chaos-worker-idle";

/// A worker process: `TASKS` tasks take turns on the locks until `PALS_CHAOS_UNTIL`, then it
/// prints [`IDLE`] and waits; it exits when its stdin closes (the test is done with it, or
/// gone).
pub fn worker() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let index = var("PALS_CHAOS_WORKER");
    let (app, schema) = (var("PALS_CHAOS_APP"), var("PALS_CHAOS_SCHEMA"));
    let until: i64 = var("PALS_CHAOS_UNTIL").parse().unwrap();
    let journal = Arc::new(Journal::create(
        &Path::new(&var("PALS_CHAOS_DIR")).join(format!("w{index}")),
    ));
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let locker = locker_with(&app, |b| {
        b.heartbeat(Some(HEARTBEAT))
            .default_timeout(Duration::from_secs(2))
            .schema(&schema)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let seed = u64::from(std::process::id()) << 8;
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let turns = take_turns(locker.clone(), Arc::clone(&journal), until, seed | task);
                tokio::spawn(turns)
            })
            .collect();
        for task in tasks {
            task.await.expect("a worker task panicked");
        }
    });
    println!("\n{IDLE}");
    loop {
        std::thread::park(); // until the stdin thread ends the process
    }
}

/// A worker's record, one line per event, written straight to its file (no buffer: what a
/// SIGKILLed worker wrote is there).
///
/// - `S id name backend_pid start fence` when a lock is granted;
/// - `E id end held|told confirmed` before it is let go: `held` if `is_held()` was true at
///   `end`; `told` if the holder was told of a loss, `confirmed` being the last instant it
///   saw `is_held()` true;
/// - `O id outcome` once let go; `X what` for an acquire that got no lock.
struct Journal {
    file: Mutex<std::fs::File>,
    holds: AtomicU64,
}

impl Journal {
    fn create(path: &Path) -> Journal {
        let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
        Journal {
            file: Mutex::new(file),
            holds: AtomicU64::new(0),
        }
    }

    fn line(&self, line: String) {
        let mut file = self.file.lock().unwrap();
        file.write_all(format!("{line}\n").as_bytes())
            .expect("the journal is written");
    }
}

/// xorshift64: which lock, which call, how long; no crate for that.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One task: a random lock by a random call, held a random while, let go at random, until
/// `until`.
async fn take_turns(locker: Locker, journal: Arc<Journal>, until: i64, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    while micros_now() < until {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let mut lock = locker.lock(name);
        if name == FENCED {
            lock = lock.fenced();
        }
        let got = match rng.below(3) {
            0 => lock.try_acquire().await,
            1 => {
                let timeout = Duration::from_millis(10 + rng.below(300));
                lock.acquire_timeout(timeout).await
            }
            _ => lock.acquire().await.map(Some),
        };
        match got {
            Ok(Some(guard)) => hold(guard, name, &journal, &mut rng).await,
            Ok(None) => journal.line("X busy".into()),
            Err(error) => journal.line(format!("X {}", what_failed(&error))),
        }
    }
}

/// Holds `guard` a while, looking at `is_held()` and `lost()`, then lets it go; journals it
/// all (see [`Journal`]).
async fn hold(guard: LockGuard, name: &str, journal: &Journal, rng: &mut Rng) {
    let id = journal.holds.fetch_add(1, Ordering::Relaxed);
    let start = micros_now();
    let pid = guard.backend_pid().unwrap_or(0);
    let fence = guard.fence().map_or("-".to_string(), |f| f.to_string());
    journal.line(format!("S {id} {name} {pid} {start} {fence}"));
    let hold_until = Instant::now() + Duration::from_millis(rng.below(HOLD_MAX_MS + 1));
    let lost = guard.lost();
    tokio::pin!(lost);
    let mut confirmed = start;
    let (end, told) = loop {
        let now = micros_now(); // before the look: held then, if held at the look
        if !guard.is_held() {
            break (now, true);
        }
        confirmed = now;
        if Instant::now() >= hold_until {
            break (now, false);
        }
        tokio::select! {
            () = &mut lost => break (micros_now(), true),
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    };
    let how = if told { "told" } else { "held" };
    journal.line(format!("E {id} {end} {how} {confirmed}"));
    let outcome = if rng.below(2) == 0 {
        drop(guard);
        "dropped".to_string()
    } else {
        match guard.release().await {
            Ok(held) => format!("released-{held}"),
            Err(error) => format!("release-failed {}", what_failed(&error)),
        }
    };
    journal.line(format!("O {id} {outcome}"));
}

/// A short word for an error, for the tally.
fn what_failed(error: &Error) -> String {
    if error.is_misconfiguration() {
        return format!("MISCONFIGURATION {error}");
    }
    match error {
        Error::Timeout { .. } => "busy".into(),
        Error::LockLost { .. } => "lost".into(),
        Error::Connect { .. } => "connect".into(),
        Error::Database(e) => e.code().map_or("connection".into(), |code| {
            format!("sqlstate {}", code.code())
        }),
        other => format!("other {other}"),
    }
}
