//! What pals logs at error level: a failure that `#[pals::exclusive(on_busy = "skip")]`
//! cannot return, a lock lost while its guard lives, and a lock lost under
//! `on_lost = "continue"` (the default), whose body runs on.
//!
//! In a test binary of its own, with one recorder installed for the whole process: the loss
//! is logged on pals' own runtime thread, which a thread-local subscriber would not see, and
//! tracing caches per process whether each call site is enabled.

use std::time::Duration;

use pals::Locker;
use pals_tests::events::Recorder;
use pals_tests::{application_name, locker, probe_i64, unique_app};

/// The error-level events recorded so far that mention `text`.
fn errors_about(text: &str) -> Vec<String> {
    Recorder::global().lines("ERROR", text)
}

/// Ends the server session of `app`'s only session, and returns once it is gone.
fn terminate_session_of(app: &str) {
    let pid = probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    ));
    assert_eq!(
        probe_i64(&format!("SELECT pg_terminate_backend({pid}, 5000)::int")),
        1
    );
}

#[pals::exclusive(name = "job", on_busy = "skip", locker = locker)]
fn skip_mode_option_on_failure(locker: &Locker) -> Option<u32> {
    unreachable!("the lock cannot be taken")
}

#[test]
fn a_failure_that_the_return_type_cannot_carry_is_logged() {
    Recorder::global();
    let app = unique_app("down");
    let down = pals::Locker::new(&app, &pals_tests::unreachable_url()).unwrap();
    assert_eq!(skip_mode_option_on_failure(&down), None);
    let lines = errors_about(&format!("{app}.job"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("skipping") && l.contains("cannot connect")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_is_logged_at_error_level_as_it_is_found() {
    Recorder::global();
    let app = unique_app("lost-log");
    let holder = pals_tests::locker_with(&app, |b| b.heartbeat(None));
    let guard = holder.lock("leader").acquire().await.unwrap();
    terminate_session_of(&app);
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the loss was not noticed");
    // Logged with the lock's name while the guard still lives: nobody had to release it.
    let lines = errors_about(&format!("{app}.leader"));
    assert!(lines.iter().any(|l| l.contains("lost")), "{lines:?}");
    drop(guard);
}

#[pals::exclusive(name = "job", locker = locker)]
fn job_that_loses_its_lock(locker: &Locker, other: &Locker) -> Result<&'static str, pals::Error> {
    terminate_session_of(locker.app());
    // The lock is free for others now; the body runs on to the end (on_lost = "continue").
    let taken = other
        .lock("job")
        .blocking_acquire_timeout(Duration::from_secs(5))?;
    assert!(
        taken.is_some(),
        "the lost lock was not free for another holder"
    );
    Ok("finished")
}

#[test]
fn on_lost_continue_runs_the_body_on_and_logs_the_loss_at_error_level() {
    Recorder::global();
    let app = unique_app("continue");
    let (mine, other) = (locker(&app), locker_for_same_lock(&app));
    assert_eq!(job_that_loses_its_lock(&mine, &other).unwrap(), "finished");
    let lines = errors_about(&format!("{app}.job"));
    // Its end says so: the lock was found gone at release (or the release found the
    // session closed, if pals had not yet seen it end).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no longer held") || l.contains("releasing the lock failed")),
        "the function's end does not say the lock was lost: {lines:?}"
    );
}

/// A second locker of `app`, on sessions of an app name of its own (so that terminating
/// the sessions of `app` leaves it alone), taking the same locks.
fn locker_for_same_lock(app: &str) -> Locker {
    let url = pals_tests::db_url_with(
        None,
        None,
        None,
        &format!("application_name={}", unique_app("other-sessions")),
    );
    pals_tests::locker_with(app, |b| b.url(&url))
}

/// When a guard hears that its lock is lost, the loss has been reported already: a program
/// that ends as soon as it hears does not end before the report. Many sessions end at once
/// (their connections' ends queue on pals' runtime thread beside the reports), and each
/// guard looks for its report the moment it hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_is_reported_before_its_guard_hears_of_it() {
    Recorder::global();
    let app = unique_app("told-first");
    let mut guards = Vec::new();
    for n in 0..30 {
        let holder = pals_tests::locker_with(&app, |b| b.heartbeat(None));
        guards.push(holder.lock(&format!("lock-{n}")).acquire().await.unwrap());
    }
    let heard: Vec<_> = guards
        .into_iter()
        .map(|guard| {
            tokio::spawn(async move {
                let lost = tokio::time::timeout(Duration::from_secs(10), guard.lost()).await;
                lost.expect("the loss was not noticed");
                let lines = errors_about(&format!("lock={} ", guard.name()));
                lines.iter().any(|l| l.contains("lock lost"))
            })
        })
        .collect();
    let ended = probe_i64(&format!(
        "SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity \
         WHERE application_name = '{}'",
        application_name(&app)
    ));
    assert_eq!(ended, 30);
    let mut unreported = 0;
    for heard in heard {
        if !heard.await.unwrap() {
            unreported += 1;
        }
    }
    assert_eq!(
        unreported, 0,
        "guards heard of their loss before it was reported"
    );
}
