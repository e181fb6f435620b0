//! A lock is released whatever way its guard ends, and a session that may still hold a lock
//! never goes back into the pool.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use pals_tests::{application_name, holders_of, locker, locker_with, probe_i64, unique_app};

const HANDOFF: Duration = Duration::from_millis(100);

/// Two lockers of `app`; the second has its connection open already, so that a 100 ms
/// handoff bound measures the release, not a connect.
fn two_lockers(app: &str) -> (pals::Locker, pals::Locker) {
    let (a, b) = (locker(app), locker(app));
    drop(b.lock("warm-up").blocking_try_acquire().unwrap());
    (a, b)
}

#[tokio::test]
async fn dropped_guard_releases_before_its_connection_is_reused() {
    let app = unique_app("reuse");
    // One connection: whatever runs next on this locker runs on the dropped guard's session.
    let a = locker_with(&app, |b| b.pool_size(1));
    let first = a.lock("first");
    let guard = first.acquire().await.unwrap();
    drop(guard);
    let second = a.lock("second").acquire().await.unwrap();
    assert_eq!(
        holders_of(&app, first.key(), true),
        0,
        "the reused session still holds the dropped lock"
    );
    assert_eq!(holders_of(&app, second.key(), true), 1);
    assert!(second.release().await.unwrap());
}

#[tokio::test]
async fn dropped_guard_is_free_for_another_session_within_100ms_async() {
    let app = unique_app("drop-async");
    let (a, b) = two_lockers(&app);
    let guard = a.lock("x").acquire().await.unwrap();
    drop(guard);
    assert!(b
        .lock("x")
        .acquire_timeout(HANDOFF)
        .await
        .unwrap()
        .is_some());
}

#[test]
fn dropped_guard_is_free_within_100ms_from_a_thread_without_runtime() {
    let app = unique_app("drop-thread");
    let (a, b) = two_lockers(&app);
    let lock = a.lock("x");
    std::thread::spawn(move || {
        assert!(tokio::runtime::Handle::try_current().is_err());
        let guard = lock.blocking_acquire().unwrap();
        drop(guard);
    })
    .join()
    .unwrap();
    assert!(b
        .lock("x")
        .blocking_acquire_timeout(HANDOFF)
        .unwrap()
        .is_some());
}

#[test]
fn lock_is_free_within_100ms_when_a_panic_unwinds_through_the_holder() {
    let app = unique_app("drop-panic");
    let (a, b) = two_lockers(&app);
    let lock = a.lock("x");
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _guard = lock.blocking_acquire().unwrap();
        panic!("the body failed while holding the lock");
    }));
    assert!(outcome.is_err());
    assert!(b
        .lock("x")
        .blocking_acquire_timeout(HANDOFF)
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_free_when_a_panicking_task_held_it() {
    let app = unique_app("drop-task-panic");
    let (a, b) = two_lockers(&app);
    let lock = a.lock("x");
    let task = tokio::spawn(async move {
        let _guard = lock.acquire().await.unwrap();
        panic!("the task failed while holding the lock");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(b
        .lock("x")
        .acquire_timeout(HANDOFF)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_lost_session_is_closed_and_the_pool_recovers() {
    let app = unique_app("lost");
    let a = locker_with(&app, |b| b.pool_size(1));
    let guard = a.lock("x").acquire().await.unwrap();
    let pid = probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(&app)
    ));
    // With a timeout, pg_terminate_backend waits until the backend is gone.
    probe_i64(&format!("SELECT pg_terminate_backend({pid}, 5000)::int"));
    // The lock went with the session; release says so instead of pretending.
    assert!(!guard.is_held());
    assert!(
        !guard.release().await.unwrap(),
        "a lost lock releases as Ok(false)"
    );
    // The broken session was not pooled: the next lock runs on a new one.
    let again = a.lock("x").acquire().await.unwrap();
    let new_pid = probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(&app)
    ));
    assert_ne!(pid, new_pid);
    assert!(again.release().await.unwrap());
}

/// `wait_for_releases` ends once the background releases are done: a dropped guard's, and
/// a `release_at`'s, whose time it waits for; a locker with none returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_releases_outlasts_dropped_guards_and_min_hold() {
    let app = unique_app("wait-releases");
    let (mine, other) = (locker(&app), locker(&app));
    mine.wait_for_releases().await; // nothing pending

    drop(mine.lock("dropped").acquire().await.unwrap());
    mine.wait_for_releases().await;
    // Free at once for this locker too, whose next caller is let in only once the unlock
    // is confirmed.
    let again = mine.lock("dropped").try_acquire().await.unwrap();
    assert!(again.is_some(), "the dropped guard's release was not done");
    assert!(again.unwrap().release().await.unwrap());

    let kept = mine.lock("kept").acquire().await.unwrap();
    let until = Instant::now() + Duration::from_millis(300);
    kept.release_at(until);
    mine.wait_for_releases().await;
    assert!(
        Instant::now() >= until,
        "returned before the kept lock's time"
    );
    assert!(
        other.lock("kept").try_acquire().await.unwrap().is_some(),
        "still held after wait_for_releases"
    );
}
