//! Test helper: events that must reach a person (see `pals::loud`), in a process that
//! installed no tracing subscriber, or (`traced`) one that prints every event to stdout.
//!
//! `pals_loud_child MODE APP [traced]`, on the database at `PALS_DB_URL`:
//! - `lost`: loses the lock `a` twice and `b` once (their session terminated from outside,
//!   each time heard through `guard.lost()`), then runs `job` twice, which loses its lock
//!   while it runs (`on_lost = "continue"`);
//! - `passfile`: builds a locker twice with the password file of `PGPASSFILE`, which the
//!   test made readable by others.
//!
//! Prints `done` at the end.

use std::time::Duration;

use pals::Locker;
use pals_tests::{application_name, locker, probe_i64};

/// Ends the sessions of `app` from outside, and returns once the server has ended them.
fn terminate_sessions_of(app: &str) {
    let ended = probe_i64(&format!(
        "SELECT count(pg_terminate_backend(pid, 5000))::int FROM pg_stat_activity \
         WHERE application_name = '{}'",
        application_name(app)
    ));
    assert!(ended > 0, "no session of {app} to end");
}

#[pals::exclusive(name = "job", locker = locker)]
fn job(locker: &Locker) -> Result<(), pals::Error> {
    terminate_sessions_of(locker.app());
    Ok(())
}

fn lose(locker: &Locker, name: &str, rt: &tokio::runtime::Runtime) {
    let guard = locker.lock(name).blocking_acquire().unwrap();
    terminate_sessions_of(locker.app());
    let lost =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), guard.lost()).await });
    lost.unwrap_or_else(|_| panic!("the loss of {name} was not heard"));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mode, app) = (args.next().unwrap(), args.next().unwrap());
    if args.next().as_deref() == Some("traced") {
        tracing::subscriber::set_global_default(pals_tests::events::Recorder::printing()).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "lost" => {
            let locker = locker(&app);
            for name in ["a", "a", "b"] {
                lose(&locker, name, &rt);
            }
            for _ in 0..2 {
                job(&locker).unwrap();
            }
        }
        "passfile" => {
            for _ in 0..2 {
                // The test URL names no password: the password file is read.
                pals_tests::locker(&app);
            }
        }
        other => panic!("unknown mode {other}"),
    }
    println!("done");
}
