//! pals beside sqlx's `PgAdvisoryLock`, alone: `cargo bench -p pals-bench --bench side_by_side
//! [-- --quick]`.
//!
//! One uncontended cycle each way (try + release, acquire + release; and pals' fenced try +
//! release beside its plain one), over plain TCP to `PALS_DB_URL` (default: the repository's
//! database). The two sides take turns in blocks of 100 cycles, ten blocks each per round;
//! each round gives both sides' times and their ratio, so that a machine whose speed drifts
//! between rounds (this one's does, 2x over minutes) still compares like with like. Printed:
//! the medians over the rounds, and the median ratio with its lowest and highest round.

use std::time::{Duration, Instant};

use pals::Locker;
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey, PgConnection};
use sqlx::{Connection, Either};

mod common;
use common::{cycle, with_sslmode, Cycle};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 15 };
    let url = pals_devdb::db_url().unwrap_or_else(|error| panic!("{error}"));
    let url = with_sslmode(&url, "disable");
    // As the locking benchmark runs: a 2-worker runtime, the callers in its block_on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&url, rounds));
}

async fn run(url: &str, rounds: usize) {
    let app = format!("side-by-side-{}", std::process::id());
    let locker = Locker::builder(&app).url(url).build().expect("locker");
    let lock = locker.lock("one");
    let fenced = locker.lock("fenced").fenced();
    drop(fenced.acquire().await.unwrap()); // the sequence is made once, not timed
    locker.wait_for_releases().await;
    let sqlx_conn = tokio::sync::Mutex::new(PgConnection::connect(url).await.expect("sqlx"));
    let sqlx_lock = PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(pals::key(&app, "sqlx")));

    let pals_try = || async {
        let guard = lock.try_acquire().await.unwrap().expect("free");
        assert!(guard.release().await.unwrap());
    };
    let sqlx_try = || async {
        let mut conn = sqlx_conn.lock().await;
        let Either::Left(guard) = sqlx_lock.try_acquire(&mut *conn).await.unwrap() else {
            panic!("the sqlx lock was busy");
        };
        guard.release_now().await.unwrap();
    };
    let pals_acquire = || async {
        let guard = lock.acquire().await.unwrap();
        assert!(guard.release().await.unwrap());
    };
    let sqlx_acquire = || async {
        let mut conn = sqlx_conn.lock().await;
        let guard = sqlx_lock.acquire(&mut *conn).await.unwrap();
        guard.release_now().await.unwrap();
    };
    let fenced_try = || async {
        let guard = fenced.try_acquire().await.unwrap().expect("free");
        assert!(guard.release().await.unwrap());
    };

    println!("pals beside sqlx, {rounds} rounds (ratio: pals / the other, per round)");
    println!(
        "{:<38} {:>10} {:>10} {:>7} {:>14}",
        "cycle", "pals µs", "other µs", "ratio", "ratio spread"
    );
    let pairs: [(&str, Cycle<'_>, Cycle<'_>); 3] = [
        (
            "try_acquire + release vs sqlx",
            cycle(pals_try),
            cycle(sqlx_try),
        ),
        (
            "acquire + release vs sqlx",
            cycle(pals_acquire),
            cycle(sqlx_acquire),
        ),
        (
            "fenced vs plain try + release",
            cycle(fenced_try),
            cycle(pals_try),
        ),
    ];
    for (name, pals_side, other_side) in pairs {
        let (pals_side, other) = side_by_side(rounds, pals_side, other_side).await;
        let mut ratios: Vec<f64> = pals_side.iter().zip(&other).map(|(p, o)| p / o).collect();
        let (ratio, low, high) = spread(&mut ratios);
        println!(
            "{name:<38} {:>10.1} {:>10.1} {ratio:>7.2} {:>14}",
            spread(&mut pals_side.clone()).0,
            spread(&mut other.clone()).0,
            format!("{low:.2}..{high:.2}"),
        );
    }
    sqlx_conn.into_inner().close().await.unwrap();
}

/// Median, lowest and highest of `values`.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

/// Both sides' times per round (µs per cycle), taking turns in blocks (after a warm-up).
async fn side_by_side<'a>(
    rounds: usize,
    mut a: Cycle<'a>,
    mut b: Cycle<'a>,
) -> (Vec<f64>, Vec<f64>) {
    const BLOCK: usize = 100;
    const BLOCKS: usize = 10;
    for _ in 0..500 {
        a().await;
        b().await;
    }
    let mut sides = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        let mut times = [Duration::ZERO; 2];
        for _ in 0..BLOCKS {
            for (side, time) in [&mut a, &mut b].into_iter().zip(&mut times) {
                let started = Instant::now();
                for _ in 0..BLOCK {
                    side().await;
                }
                *time += started.elapsed();
            }
        }
        for (side, time) in sides.iter_mut().zip(times) {
            side.push(time.as_secs_f64() * 1e6 / (BLOCK * BLOCKS) as f64);
        }
    }
    let [a, b] = sides;
    (a, b)
}
