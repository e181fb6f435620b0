//! `Locker::semaphore`: at most `permits` holders across lockers and processes, waiters
//! woken when a permit is given back (in the process, and through NOTIFY from another),
//! and the guarantees of a lock guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals_tests::{application_name, eventually, locker, probe_i64, probe_query, unique_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_holders_than_permits() {
    let app = unique_app("sem-bound");
    let lockers = [locker(&app), locker(&app)];
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..10 {
        let semaphore = lockers[task % 2].semaphore("export", 3);
        let (holding, most) = (Arc::clone(&holding), Arc::clone(&most));
        tasks.push(tokio::spawn(async move {
            for round in 0..8 {
                let permit = semaphore.acquire_timeout(Duration::from_secs(30)).await;
                let permit = permit.unwrap().expect("a permit within 30 s");
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(now <= 3, "{now} holders of a 3-permit semaphore");
                tokio::time::sleep(Duration::from_millis(3)).await; // the work
                holding.fetch_sub(1, Ordering::SeqCst);
                if round % 2 == 0 {
                    assert!(permit.release().await.unwrap());
                } else {
                    drop(permit);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 3, "the permits were all used");
}

/// Whether `app`'s listening session is up (it LISTENs, and waits for notifications).
fn listening(app: &str) -> bool {
    probe_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
         AND query LIKE 'LISTEN %' AND state = 'idle'",
        application_name(app)
    )) == 1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_in_another_process_gets_a_freed_permit_at_once() {
    // The "other process" is a locker of its own: its own sessions and listening
    // session, as a process would have; the permit's release reaches it only by NOTIFY.
    let app = unique_app("sem-handoff");
    let holder = locker(&app).semaphore("export", 3);
    let waiting = locker(&app).semaphore("export", 3);
    let mut held = Vec::new();
    let mut figures = Vec::new();
    for _round in 0..5 {
        while held.len() < 3 {
            held.push(holder.acquire().await.unwrap());
        }
        let waiter = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let permit = waiting.acquire_timeout(Duration::from_secs(10)).await;
                let permit = permit.unwrap().expect("a freed permit");
                (Instant::now(), permit)
            })
        };
        // The waiter sleeps once its locker listens (it tries once more after that).
        assert!(eventually(Duration::from_secs(5), || listening(&app)));
        assert!(waiting.try_acquire().await.unwrap().is_none());
        let released = Instant::now();
        assert!(held.pop().unwrap().release().await.unwrap());
        let (taken, permit) = waiter.await.unwrap();
        let handoff = taken.duration_since(released);
        figures.push(handoff);
        assert!(
            handoff < Duration::from_millis(100),
            "a permit given back reached the waiter {handoff:?} later (the recheck is {:?})",
            pals::PERMIT_RECHECK
        );
        assert!(permit.release().await.unwrap());
    }
    println!("permit handoff across lockers (release to grant): {figures:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_in_the_same_locker_gets_a_dropped_permit_at_once() {
    let app = unique_app("sem-local");
    let locker = locker(&app);
    let semaphore = locker.semaphore("export", 1);
    let permit = semaphore.acquire().await.unwrap();
    let waiter = {
        let semaphore = semaphore.clone();
        tokio::spawn(async move { semaphore.acquire_timeout(Duration::from_secs(10)).await })
    };
    assert!(eventually(Duration::from_secs(5), || listening(&app)));
    let released = Instant::now();
    drop(permit); // the background release wakes the waiter
    let permit = waiter.await.unwrap().unwrap().expect("the freed permit");
    let handoff = released.elapsed();
    assert!(handoff < Duration::from_millis(100), "{handoff:?}");
    assert_eq!(permit.permit(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permit_lost_with_its_session_is_found_by_the_recheck() {
    let app = unique_app("sem-lost");
    let holder = locker(&app);
    let waiter_locker = locker(&app);
    let semaphore = holder.semaphore("export", 1);
    let permit = semaphore.acquire().await.unwrap();
    let pid = probe_i64(&format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND \
         ((classid::int8 << 32) | objid::int8) = {}",
        semaphore.permit_locks()[0].key()
    ));
    let waiter = {
        let semaphore = waiter_locker.semaphore("export", 1);
        tokio::spawn(async move { semaphore.acquire_timeout(Duration::from_secs(10)).await })
    };
    // The waiter sleeps once its locker listens (the holder's locker has no listener).
    assert!(eventually(Duration::from_secs(5), || listening(&app)));
    probe_query(&format!("SELECT pg_terminate_backend({pid})")).unwrap();
    let terminated = Instant::now();
    permit.lost().await;
    assert!(!permit.is_held());
    // Nobody said the permit was freed: the waiter's recheck finds it.
    let taken = waiter
        .await
        .unwrap()
        .unwrap()
        .expect("the permit freed by the server");
    let found = terminated.elapsed();
    assert!(found < pals::PERMIT_RECHECK * 2, "{found:?}");
    assert!(taken.is_held());
    assert!(!permit.release().await.unwrap(), "no longer held");
}

#[tokio::test]
async fn try_acquire_and_timeouts() {
    let app = unique_app("sem-try");
    let locker = locker(&app);
    let semaphore = locker.semaphore("export", 2);
    assert_eq!(semaphore.permits(), 2);
    assert_eq!(semaphore.name(), format!("{app}.export"));
    let a = semaphore.try_acquire().await.unwrap().unwrap();
    let b = semaphore.try_acquire().await.unwrap().unwrap();
    assert_ne!(a.permit(), b.permit());
    assert!(semaphore.try_acquire().await.unwrap().is_none());
    let started = Instant::now();
    let none = semaphore
        .acquire_timeout(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let error = semaphore
        .clone()
        .timeout(Duration::from_millis(50))
        .acquire()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("Lock acquire failed for \"{app}.export\". Failed due to timeout.")
    );
    // The permits are ordinary locks: the documented names.
    assert!(locker
        .lock("export.permit-0")
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert!(locker
        .lock("export.permit-2")
        .try_acquire()
        .await
        .unwrap()
        .is_some());
    let zero = locker.semaphore("none", 0).try_acquire().await.unwrap_err();
    assert!(zero.is_misconfiguration(), "{zero}");
    drop((a, b));
}

#[test]
fn blocking_twins() {
    let app = unique_app("sem-blocking");
    let locker = locker(&app);
    let semaphore = locker.semaphore("export", 1);
    let permit = semaphore.blocking_acquire().unwrap();
    assert!(semaphore.blocking_try_acquire().unwrap().is_none());
    assert!(semaphore
        .blocking_acquire_timeout(Duration::from_millis(20))
        .unwrap()
        .is_none());
    assert!(permit.blocking_release().unwrap());
    assert!(semaphore.blocking_try_acquire().unwrap().is_some());
}

mod attribute {
    use std::sync::LazyLock;

    use tokio::sync::{mpsc, watch};

    use super::*;

    static LOCKER: LazyLock<pals::Locker> = LazyLock::new(|| locker(&unique_app("sem-attr")));

    /// Tells `entered` it runs, then waits for `go`.
    #[pals::exclusive(name = "export", permits = 2, timeout = "0", on_busy = "skip", locker = &LOCKER)]
    async fn export(
        entered: mpsc::UnboundedSender<()>,
        mut go: watch::Receiver<bool>,
    ) -> Option<u32> {
        entered.send(()).unwrap();
        go.wait_for(|go| *go).await.unwrap();
        Some(1)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_attribute_admits_as_many_bodies_as_permits() {
        let (entered, mut inside) = mpsc::unbounded_channel();
        let (go, wait) = watch::channel(false);
        let first = tokio::spawn(export(entered.clone(), wait.clone()));
        let second = tokio::spawn(export(entered.clone(), wait.clone()));
        // (Bounded: a body that never runs fails the test instead of hanging it.)
        let within = Duration::from_secs(10);
        for _ in 0..2 {
            let entered = tokio::time::timeout(within, inside.recv()).await;
            assert!(matches!(entered, Ok(Some(()))), "two bodies run at once");
        }
        // Both permits are taken: a third call skips its body.
        assert_eq!(export(entered.clone(), wait.clone()).await, None);
        go.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(second.await.unwrap(), Some(1));
        assert_eq!(export(entered, wait).await, Some(1), "permits given back");
    }
}

#[tokio::test]
async fn a_waiter_does_not_poll_the_database_in_a_loop() {
    use pals_tests::proxy::{db_host_port, plain_url_via, Proxy};
    let app = unique_app("sem-quiet");
    let holder = locker(&app).semaphore("export", 2);
    let _held = [
        holder.acquire().await.unwrap(),
        holder.acquire().await.unwrap(),
    ];
    let proxy = Proxy::start(&db_host_port());
    let url = plain_url_via(proxy.port());
    let waiter = pals_tests::locker_with(&app, |b| b.url(&url)).semaphore("export", 2);
    let waited = Duration::from_secs(2);
    assert!(waiter.acquire_timeout(waited).await.unwrap().is_none());
    // One try of each permit at first, once more when the listening session is up, once
    // per recheck, and a last one at the deadline: a handful of statements in 2 s.
    let tries = proxy.count("pg_try_advisory_lock");
    let rounds = 3 + (waited.as_millis() / pals::PERMIT_RECHECK.as_millis()) as usize;
    println!("a waiter for 2 s sent {tries} try statements");
    assert!(tries <= rounds * 2, "{tries} tries in {waited:?}");
    assert!(tries >= 4, "it tried, and tried again: {tries}");
}

#[tokio::test]
async fn a_waiter_in_the_same_locker_is_woken_even_when_notify_cannot_reach_it() {
    use pals_tests::events::Recorder;
    use pals_tests::proxy::{db_host_port, plain_url_via, Proxy};
    // The waiter runs on this thread (a current-thread runtime): its events are recorded.
    let recorder = Recorder::default();
    let _recording = tracing::subscriber::set_default(recorder.clone());
    // tracing caches per log statement whether anyone listens, and another test thread
    // registering the waiter's log statement as this recorder registers can leave it
    // cached as "nobody" (see exclusive_unit.rs); asking again counts this recorder.
    tracing::callsite::rebuild_interest_cache();
    let app = unique_app("sem-local-only");
    let proxy = Proxy::start(&db_host_port());
    let url = plain_url_via(proxy.port());
    let locker = pals_tests::locker_with(&app, |b| b.url(&url));
    // Sessions enough for what follows (three tries at once open three), opened before
    // new connections are refused.
    let warm: Vec<_> = ["a", "b", "c"].map(|name| locker.lock(name)).into();
    let (a, b, c) = tokio::join!(
        warm[0].try_acquire(),
        warm[1].try_acquire(),
        warm[2].try_acquire()
    );
    drop((a.unwrap(), b.unwrap(), c.unwrap()));
    locker.wait_for_releases().await;
    let semaphore = locker.semaphore("export", 1);
    let permit = semaphore.acquire().await.unwrap();
    // From now on no new connection gets through: the listening session never opens, so
    // no NOTIFY can reach the waiter; only its own locker can wake it.
    proxy.refuse_new();
    let waiter = {
        let semaphore = semaphore.clone();
        tokio::spawn(async move {
            let permit = semaphore.acquire_timeout(Duration::from_secs(30)).await;
            (Instant::now(), permit.unwrap().expect("the freed permit"))
        })
    };
    // Let the waiter run until it sleeps (its wake-up is armed before it tries), within a
    // bound that holds on a loaded machine. The rebuild above can lose a race: another
    // test thread registering the same log statement with no subscriber can store "nobody"
    // after it (seen under load: the line never came, and the waiter timed out unheard). A
    // rebuild after that registration ends is right, and the waiter says it again at each
    // recheck: so the cache is rebuilt until the line is heard.
    let asleep_by = Instant::now() + Duration::from_secs(10);
    while recorder.lines("DEBUG", "waiting for one").is_empty() {
        assert!(Instant::now() < asleep_by, "the waiter never went to sleep");
        tracing::callsite::rebuild_interest_cache();
        tokio::time::sleep(Duration::from_millis(1)).await; // lets the waiter run
    }
    let released = Instant::now();
    assert!(permit.release().await.unwrap());
    let (taken, _permit) = waiter.await.unwrap();
    let handoff = taken.duration_since(released);
    assert!(
        handoff < Duration::from_millis(100),
        "woken {handoff:?} after the release (the recheck is {:?})",
        pals::PERMIT_RECHECK
    );
}
