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
    let (mut timeouts, mut checked) = (0, 0);
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
                // Unless the wait never began: when the first try (busy) ends after the
                // timeout, one more try is all there is, and a try that fails holds nothing
                // (the count below). Under load that happens now and then.
                let last = last[0].clone().unwrap_or_default();
                if last.contains("pg_catalog.pg_locks") || last.contains("unnest(") {
                    checked += 1;
                } else {
                    assert!(
                        last.contains("pg_try_advisory_lock"),
                        "round {round}: the last statement was neither the check nor a try: {last}"
                    );
                }
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
    assert!(
        checked > 0,
        "no timed-out wait was checked: {timeouts} timeouts"
    );
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

/// How a wait ended.
enum Ended {
    Granted(Box<pals::LockGuard>),
    TimedOut,
    Wrong,
}

/// What the waits under a cancel storm came to.
#[derive(Default)]
struct WaitFigures {
    calls: std::sync::atomic::AtomicU64,
    granted: std::sync::atomic::AtomicU64,
    timed_out: std::sync::atomic::AtomicU64,
    /// Calls that ended otherwise: an error, or a timeout that came early.
    wrong: std::sync::Mutex<Vec<String>>,
}

impl WaitFigures {
    /// Books a wait of `timeout` that took `took`: granted, timed out (no sooner than its
    /// timeout), or wrong (booked here).
    fn book(
        &self,
        what: &str,
        timeout: Duration,
        took: Duration,
        got: Result<Option<pals::LockGuard>, pals::Error>,
    ) -> Ended {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        match got {
            Ok(Some(guard)) => {
                self.granted.fetch_add(1, Relaxed);
                return Ended::Granted(Box::new(guard));
            }
            Ok(None) if took >= timeout => {
                self.timed_out.fetch_add(1, Relaxed);
                return Ended::TimedOut;
            }
            Ok(None) => self.wrong_call(format!("{what}: timed out after {took:?} of {timeout:?}")),
            Err(error) => self.wrong_call(format!("{what}: {error}")),
        }
        Ended::Wrong
    }

    fn wrong_call(&self, what: String) {
        self.wrong.lock().unwrap().push(what);
    }
}

/// Waits under a storm of cancels (another connection cancels the statements of the
/// locker's sessions non-stop): a cancel is not the caller's timeout. Waits for a lock held
/// by another process for a while are granted once it lets go, waits for one it keeps end
/// by their timeout and no sooner, waits for free locks are granted; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_outlast_a_cancel_storm() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    let app = unique_app("wait-storm");
    let mine = locker_with(&app, |b| b.pool_size(4));
    let other = locker(&unique_app("wait-storm-other"));
    let kept = other
        .lock_key(pals::key(&app, "kept"))
        .acquire()
        .await
        .unwrap();
    let storm = pals_tests::CancelStorm::start(&app);
    let figures = Arc::new(WaitFigures::default());
    let run_for = Duration::from_secs(4);
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for worker in 0..6u64 {
        let (mine, other, figures) = (mine.clone(), other.clone(), Arc::clone(&figures));
        workers.push(tokio::spawn(async move {
            let mut round = 0;
            while started.elapsed() < run_for {
                round += 1;
                let name = format!("w{worker}-{round}");
                let call = std::time::Instant::now();
                match worker % 3 {
                    // A lock another process holds for a while (the behaviour is the hold's
                    // length: the waits must outlast the cancels until it ends).
                    0 => {
                        let held = other.lock_key(pals::key(&app_of(&mine), &name));
                        let held = held.acquire().await.unwrap();
                        let release = tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            assert!(held.release().await.unwrap());
                        });
                        let timeout = Duration::from_secs(10);
                        let got = mine.lock(&name).acquire_timeout(timeout).await;
                        let what = format!("wait for {name} held 300 ms");
                        match figures.book(&what, timeout, call.elapsed(), got) {
                            Ended::Granted(guard) => assert!(guard.release().await.unwrap()),
                            Ended::TimedOut => figures.wrong_call(format!("{what}: not granted")),
                            Ended::Wrong => {}
                        }
                        release.await.unwrap();
                    }
                    // A lock another process keeps: the wait ends by its timeout.
                    1 => {
                        let timeout = Duration::from_millis(200);
                        let got = mine.lock("kept").acquire_timeout(timeout).await;
                        let ended = figures.book("wait for kept", timeout, call.elapsed(), got);
                        if let Ended::Granted(_) = ended {
                            figures.wrong_call("wait for kept: granted".into());
                        }
                    }
                    // Free locks, with the locker's default timeout.
                    _ => {
                        let timeout = mine.default_timeout();
                        let got = match mine.lock(&name).acquire().await.map(Some) {
                            Err(pals::Error::Timeout { .. }) => Ok(None),
                            other => other,
                        };
                        let what = "acquire of a free lock";
                        match figures.book(what, timeout, call.elapsed(), got) {
                            Ended::Granted(guard) => assert!(guard.release().await.unwrap()),
                            Ended::TimedOut => figures.wrong_call(format!("{what}: not granted")),
                            Ended::Wrong => {}
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let (cancels, stormed) = storm.stop();
    let f = &figures;
    println!(
        "wait storm: {} calls ({} granted, {} timed out) under {cancels} cancels in {stormed:?} \
         ({:.0} cancels/s)",
        f.calls.load(Relaxed),
        f.granted.load(Relaxed),
        f.timed_out.load(Relaxed),
        cancels as f64 / stormed.as_secs_f64(),
    );
    let wrong = f.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} calls went wrong: {wrong:#?}",
        wrong.len()
    );
    assert!(f.timed_out.load(Relaxed) > 0 && f.granted.load(Relaxed) > 0);
    assert!(cancels > 100, "the storm sent {cancels} cancels");
    // Nothing is held for nobody.
    let held = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.application_name = '{}' AND l.locktype = 'advisory'",
        application_name(&app)
    );
    assert!(eventually(Duration::from_secs(5), || {
        probe_query(&held).unwrap() == [Some("0".to_string())]
    }));
    assert!(kept.release().await.unwrap());
}

fn app_of(locker: &pals::Locker) -> String {
    locker.app().to_string()
}
