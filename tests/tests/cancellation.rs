//! Cancelled acquires and lock timeouts leave nothing behind, and sessions come back to the
//! pool exactly as the server made them.

use std::time::Duration;

use pals_tests::{
    application_name, eventually, holders_of, locker, locker_with, probe_query, unique_app,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_acquire_stops_waiting_in_the_database_and_leaves_no_lock() {
    let app = unique_app("cancel");
    let (holder, waiter, third) = (
        locker(&app),
        locker_with(&app, |b| b.pool_size(1)),
        locker(&app),
    );
    let guard = holder.lock("x").acquire().await.unwrap();
    let lock = waiter.lock("x").timeout(Duration::MAX);
    let key = lock.key();

    let waiting = tokio::spawn(async move { lock.acquire().await.map(|_| ()) });
    assert!(
        eventually(Duration::from_secs(5), || holders_of(&app, key, false) == 1),
        "the waiter never showed up waiting in pg_locks"
    );
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());

    // The server-side wait is cancelled: nobody of this app awaits the lock any more.
    assert!(
        eventually(Duration::from_secs(2), || holders_of(&app, key, false) == 0),
        "the dropped acquire still waits in the database"
    );
    // When the holder lets go, the abandoned session does not get the lock.
    assert!(guard.release().await.unwrap());
    let taken = third
        .lock("x")
        .acquire_timeout(Duration::from_millis(200))
        .await
        .unwrap();
    assert!(taken.is_some());
    assert_eq!(
        holders_of(&app, key, true),
        1,
        "only the third locker holds it"
    );
    // And the waiter's locker still works, on a new session.
    drop(taken);
    assert!(waiter.lock("y").try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn a_timed_out_acquire_leaves_a_session_that_holds_nothing() {
    let app = unique_app("race");
    let waiter = locker_with(&app, |b| b.pool_size(1));
    let lock = waiter.lock("x");
    // The holder is another app on the same key, so the waiter's session is the only one
    // with the waiter's application_name.
    let holder = locker(&unique_app("race-holder"));
    // Warm the pool so that every round waits in the database for the full timeout.
    let warm = waiter.lock("warm").try_acquire().await.unwrap().unwrap();
    assert!(warm.release().await.unwrap());
    // Release around the moment the waiter's lock_timeout fires, sweeping from well before
    // to well after it: when the grant wins the waiter gets the lock; when the timeout wins
    // (or both happen at once) its session must hold nothing afterwards.
    let timeout = Duration::from_millis(30);
    let mut timeouts = 0;
    for round in 0..40u64 {
        let guard = holder.lock_key(lock.key()).acquire().await.unwrap();
        let release_after = Duration::from_micros(20_000 + round * 500);
        let release = tokio::spawn(async move {
            tokio::time::sleep(release_after).await; // aim the release, not synchronisation
            guard.release().await.unwrap()
        });
        let got = lock.acquire_timeout(timeout).await.unwrap();
        assert!(release.await.unwrap());
        match got {
            Some(guard) => assert!(guard.release().await.unwrap()),
            None => {
                timeouts += 1;
                // Whether or not the grant raced the timeout this time, the session
                // checked what it holds (and unlocked what nobody owns) before the
                // acquire returned.
                let last = probe_query(&format!(
                    "SELECT query FROM pg_stat_activity WHERE application_name = '{}'",
                    application_name(&app)
                ))
                .unwrap();
                let last = last[0].clone().unwrap_or_default();
                assert!(
                    last.contains("pg_catalog.pg_locks") || last.contains("unnest("),
                    "round {round}: the last statement was not the check: {last}"
                );
            }
        }
        let held = probe_query(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE a.application_name = '{}' AND l.locktype = 'advisory'",
            application_name(&app)
        ))
        .unwrap();
        assert_eq!(
            held,
            vec![Some("0".to_string())],
            "round {round}: pooled session holds a lock"
        );
    }
    // Releases at 30 ms and later come after the timeout (later still, under load).
    assert!(timeouts > 0, "the sweep never reached the timeout");
}

#[tokio::test]
async fn a_statement_timeout_does_not_cut_the_wait_short() {
    let app = unique_app("stmt-timeout");
    let url = format!(
        "{}?options=-c%20statement_timeout%3D100",
        pals_tests::db_url()
    );
    let waiter = pals::Locker::builder(&app).url(&url).build().unwrap();
    let _held = locker(&unique_app("stmt-holder"))
        .lock_key(pals::key(&app, "x"))
        .acquire()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let got = waiter
        .lock("x")
        .acquire_timeout(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(got.is_none());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_session_timeout_does_not_free_a_held_lock() {
    let app = unique_app("idle-timeout");
    let url = format!(
        "{}?options=-c%20idle_session_timeout%3D100",
        pals_tests::db_url()
    );
    let holder = pals::Locker::builder(&app).url(&url).build().unwrap();
    let guard = holder.lock("x").acquire().await.unwrap();
    // The behaviour under test is a time: hold the lock idle well past the server's limit.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let other = locker(&unique_app("idle-other"));
    assert!(
        other
            .lock_key(guard.key())
            .try_acquire()
            .await
            .unwrap()
            .is_none(),
        "the lock was freed"
    );
    assert!(guard.release().await.unwrap());
}

/// A wait's own `lock_timeout` (and lifted `statement_timeout`) end with its statement: the
/// session keeps the `lock_timeout` pals gave it, which bounds a fenced lock's `nextval`.
/// Seen through that bound: after a wait that timed out (50 ms) and one with no limit (0),
/// a fenced try on the same session, its sequence locked by hand, fails after the session's
/// own bound (500 ms), neither sooner nor never.
#[tokio::test]
async fn waits_leave_the_session_its_own_lock_timeout() {
    let app = unique_app("settings");
    let schema = pals_tests::TestSchema::new("settings");
    let holder = locker(&app);
    let a = locker_with(&app, |b| b.pool_size(1).schema(schema.name()));

    let busy = holder.lock("x").acquire().await.unwrap();
    let timed_out = a.lock("x").acquire_timeout(Duration::from_millis(50)).await;
    assert!(timed_out.unwrap().is_none());
    drop(busy);
    let forever = a.lock("y").timeout(Duration::MAX).acquire().await.unwrap();
    assert!(forever.release().await.unwrap());
    // The sequence exists (made by the first fenced lock), then is locked by hand.
    let first = a.lock("f").fenced().try_acquire().await.unwrap().unwrap();
    assert!(first.release().await.unwrap());
    let sequence = schema.object("pals_fence");
    let dba = pals_tests::DbaLock::hold(&format!("ALTER SEQUENCE {sequence} INCREMENT BY 1"));
    let started = std::time::Instant::now();
    let blocked = a.lock("f").fenced().try_acquire().await;
    let took = started.elapsed();
    drop(dba);
    assert!(blocked.is_err(), "a token it could not draw: {blocked:?}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "the session's own bound: {took:?}"
    );
}

#[tokio::test]
async fn no_transaction_stays_open_while_a_lock_is_held() {
    let app = unique_app("idle");
    let a = locker(&app);
    let waited = a
        .lock("w")
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let tried = a.lock("t").try_acquire().await.unwrap().unwrap();
    let states = probe_query(&format!(
        "SELECT coalesce(state, '?') FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(&app)
    ))
    .unwrap();
    // (Both locks may share one session: they were taken at once.)
    assert!(!states.is_empty());
    assert!(
        states.iter().all(|s| s.as_deref() == Some("idle")),
        "{states:?}"
    );
    assert!(waited.release().await.unwrap());
    assert!(tried.release().await.unwrap());
}
