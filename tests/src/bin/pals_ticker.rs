//! Test helper: a replica of a service with a scheduled `once_per` job, for the fleet tests
//! (tests/tests/once_per_fleet.rs). The job runs on the global locker (`PALS_DB_URL`,
//! `PALS_APP_NAME`), as in a real service; the replica's scheduler fires it at set times.
//!
//! `pals_ticker PERIOD_MS FIRST_MS INDEXES SHIFT_MS JITTER_MS`: PERIOD_MS is the job's
//! period (2000 or 4000: the attribute's period is fixed when it is compiled), FIRST_MS the
//! first tick (ms since the epoch, a multiple of the period), INDEXES the ticks to fire for
//! (`0,1,2`: tick k is FIRST_MS + k * PERIOD_MS). Each firing is meant for FIRST_MS +
//! k * PERIOD_MS + SHIFT_MS (negative: a replica whose clock is ahead, positive: behind)
//! plus a random jitter within ±JITTER_MS; the replica sleeps until then and calls the job.
//! A replica started late that fires once is this with one index.
//!
//! Prints `replica NAME` (its `application_name`, as the run history names it), then one
//! line per firing, `fire index=K ran|skipped jitter_ms=J late_ms=L` (L: how much later
//! than meant the call began, on this machine's clock), or `fire index=K failed ... error=E`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[pals::exclusive(name = "every-2s", once_per = "2s")]
async fn every_2s() -> Result<Option<()>, pals::Error> {
    Ok(Some(()))
}

#[pals::exclusive(name = "every-4s", once_per = "4s")]
async fn every_4s() -> Result<Option<()>, pals::Error> {
    Ok(Some(()))
}

/// The time of day in microseconds since the epoch.
fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros() as i64
}

/// A random offset within ±`bound` ms for firing `index`. No rand crate: `RandomState` is
/// seeded afresh in each process, and the pid and the time are hashed in too.
fn jitter_ms(bound: i64, index: u64) -> i64 {
    if bound <= 0 {
        return 0;
    }
    let hash = RandomState::new().hash_one((std::process::id(), micros_now(), index));
    (hash % (2 * bound + 1) as u64) as i64 - bound
}

/// The arguments, parsed; exits with a usage message if they do not parse.
fn arguments() -> (i64, i64, Vec<u64>, i64, i64) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: pals_ticker PERIOD_MS FIRST_MS INDEXES SHIFT_MS JITTER_MS");
        std::process::exit(2);
    };
    if args.len() != 5 {
        usage();
    }
    let number = |i: usize| args[i].parse::<i64>().unwrap_or_else(|_| usage());
    let indexes = args[2]
        .split(',')
        .map(|index| index.parse().unwrap_or_else(|_| usage()))
        .collect();
    (number(0), number(1), indexes, number(3), number(4))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (period_ms, first_ms, indexes, shift_ms, jitter_bound) = arguments();
    let locker = pals::init_from_env().expect("PALS_APP_NAME and PALS_DB_URL configure pals");
    println!("replica {}", pals::application_name(locker.app()));
    for index in indexes {
        let jitter = jitter_ms(jitter_bound, index);
        let meant_us = (first_ms + index as i64 * period_ms + shift_ms + jitter) * 1000;
        let wait = u64::try_from(meant_us - micros_now()).unwrap_or(0);
        // Scheduling the firing: the replica's own scheduler, as a cron would.
        tokio::time::sleep(Duration::from_micros(wait)).await;
        let began_us = micros_now();
        let returned = match period_ms {
            2000 => every_2s().await,
            4000 => every_4s().await,
            other => panic!("no job with a period of {other} ms"),
        };
        let late_ms = (began_us - meant_us).div_euclid(1000);
        let timing = format!("jitter_ms={jitter} late_ms={late_ms}");
        match returned {
            Ok(Some(())) => println!("fire index={index} ran {timing}"),
            Ok(None) => println!("fire index={index} skipped {timing}"),
            Err(error) => println!("fire index={index} failed {timing} error={error}"),
        }
    }
}
