//! In-process handoff (lock cohorting): a lock let go while another caller of the same
//! locker waits for it is handed over in memory, within a bound, and keeps its guarantees:
//! one holder at a time, other processes served, lost with its session, cancellation safe.
//!
//! What went over the wire is read from a recording proxy, not guessed from timings.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals_tests::proxy::{db_host_port, plain_url_via, Proxy};
use pals_tests::{eventually, holders_of, locker, poll_once, probe_query, unique_app};

/// A locker of `app` whose sessions go through `proxy`.
fn locker_via(app: &str, proxy: &Proxy) -> pals::Locker {
    let url = plain_url_via(proxy.port());
    pals_tests::locker_with(app, |b| b.url(&url))
}

/// Statements that take or give back an advisory lock, so far.
fn lock_statements(proxy: &Proxy) -> (usize, usize) {
    let statements = proxy.statements();
    let takes = statements
        .iter()
        .filter(|s| s.contains("pg_try_advisory_lock") || s.contains("pg_advisory_lock("))
        .count();
    let unlocks = statements
        .iter()
        .filter(|s| s.contains("pg_advisory_unlock"))
        .count();
    (takes, unlocks)
}

/// Holds `lock` with an overlap check: fails if anyone else is inside meanwhile.
async fn hold_once(lock: &pals::Lock, inside: &AtomicUsize, holds: &AtomicUsize) {
    let guard = lock.acquire().await.expect("acquired within the timeout");
    assert_eq!(
        inside.fetch_add(1, Ordering::SeqCst),
        0,
        "two holders at once"
    );
    tokio::task::yield_now().await; // give any other holder the chance to overlap
    assert_eq!(
        inside.fetch_sub(1, Ordering::SeqCst),
        1,
        "two holders at once"
    );
    holds.fetch_add(1, Ordering::Relaxed);
    assert!(guard.release().await.expect("released"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_exclude_each_other_and_hand_over_in_memory() {
    let app = unique_app("handoff-64");
    let proxy = Proxy::start(&db_host_port());
    let hot = locker_via(&app, &proxy);
    // A second locker is another process as far as the server knows: its callers queue in
    // the database, and must be excluded by a lock handed over in memory too.
    let other = locker(&app);
    let inside = Arc::new(AtomicUsize::new(0));
    let holds = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..72 {
        let lock = match task < 64 {
            true => hot.lock("hot"),
            false => other.lock("hot"),
        };
        let (inside, holds) = (Arc::clone(&inside), Arc::clone(&holds));
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                hold_once(&lock, &inside, &holds).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("no overlap, no failure");
    }
    let holds = holds.load(Ordering::Relaxed);
    let hot_holds = 64 * 40;
    let (takes, unlocks) = lock_statements(&proxy);
    println!("{holds} holds; the hot locker's {hot_holds} took {takes} lock and {unlocks} unlock statements");
    assert_eq!(holds, 72 * 40);
    // Handed over in memory for most holds: far fewer statements than holds.
    assert!(
        takes * 4 <= hot_holds,
        "{takes} lock statements for {hot_holds} holds"
    );
    assert!(
        unlocks * 4 <= hot_holds,
        "{unlocks} unlocks for {hot_holds} holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_in_another_process_is_served_while_sixty_four_tasks_hammer() {
    let app = unique_app("handoff-remote");
    let hot = locker(&app);
    let remote = locker(&app);
    // The remote locker's sessions are open before its waits are timed: a shared one for
    // its first try, one of its own for the wait (opening them is a connect, which a
    // loaded machine can take hundreds of milliseconds for, and is not what is measured).
    let held = hot.lock("warm-up").acquire().await.unwrap();
    let waiter = remote.lock("warm-up");
    let waiting = tokio::spawn(async move { waiter.acquire().await });
    let (app_name, key) = (app.clone(), held.key());
    let queued = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), || {
            holders_of(&app_name, key, false) == 1
        })
    });
    assert!(
        queued.await.unwrap(),
        "the remote locker waits for the lock"
    );
    assert!(held.release().await.unwrap());
    let warmed = waiting.await.unwrap().unwrap();
    assert!(warmed.release().await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (inside, holds) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let lock = hot.lock("hot");
        let (stop, inside, holds) = (stop.clone(), inside.clone(), holds.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                hold_once(&lock, &inside, &holds).await;
            }
        }));
    }
    let hammering = holds.clone();
    let started = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), || {
            hammering.load(Ordering::Relaxed) > 1000
        })
    });
    assert!(
        started.await.unwrap(),
        "the 64 tasks hold the lock over and over"
    );
    let mut waits = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let guard = remote.lock("hot").acquire().await.expect("served");
        waits.push(asked.elapsed());
        assert_eq!(
            inside.fetch_add(1, Ordering::SeqCst),
            0,
            "held with a hot task"
        );
        tokio::task::yield_now().await;
        inside.fetch_sub(1, Ordering::SeqCst);
        assert!(guard.release().await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("no overlap, no failure");
    }
    println!(
        "remote waits while 64 tasks hammered ({} holds): {waits:?}",
        holds.load(Ordering::Relaxed)
    );
    // The run of handoffs ends 20 ms after the database's grant (the default limit); then
    // the lock is unlocked there and PostgreSQL grants it to the remote waiter.
    let longest = waits.iter().max().unwrap();
    assert!(*longest < Duration::from_millis(200), "waited {longest:?}");
}

#[tokio::test]
async fn a_handed_over_lock_is_lost_with_its_session() {
    let app = unique_app("handoff-lost");
    let proxy = Proxy::start(&db_host_port());
    let locker = locker_via(&app, &proxy);
    let first = locker.lock("job").acquire().await.unwrap();
    let pid = first.backend_pid().unwrap();
    let lock = locker.lock("job");
    let mut next = Box::pin(lock.acquire());
    assert!(poll_once(&mut next).await.is_none(), "waits in the process");
    let before = lock_statements(&proxy);
    assert!(first.release().await.unwrap());
    let next = next.await.unwrap();
    assert_eq!(lock_statements(&proxy), before, "handed over: no statement");
    assert_eq!(next.backend_pid(), Some(pid), "the same database lock");
    assert!(next.is_held());

    probe_query(&format!("SELECT pg_terminate_backend({pid})")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), next.lost())
        .await
        .expect("the new holder learns the lock is lost");
    assert!(!next.is_held());
    let other = pals_tests::locker(&app);
    assert!(other.lock("job").try_acquire().await.unwrap().is_some());
    assert!(!next.release().await.unwrap(), "no longer held");
}

#[tokio::test]
async fn a_dropped_guard_is_free_at_once_for_a_try_of_the_same_process() {
    let app = unique_app("handoff-drop-try");
    let proxy = Proxy::start(&db_host_port());
    let locker = locker_via(&app, &proxy);
    let lock = locker.lock("job");
    for _ in 0..20 {
        let guard = lock.try_acquire().await.unwrap().expect("free");
        drop(guard);
        let again = lock.try_acquire().await.unwrap();
        assert!(
            again.is_some(),
            "the dropped guard's lock is free for the next try"
        );
    }
    // Mostly taken back in memory: a try that came after the unlock went out takes the
    // lock in the database again (with handoffs off, every one of the 40 tries would).
    let (takes, _) = lock_statements(&proxy);
    println!("40 tries after drops: {takes} lock statements");
    assert!(takes < 40, "{takes} lock statements for 40 tries");
    // The same from blocking code.
    let lock = lock.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..5 {
            drop(lock.blocking_try_acquire().unwrap().expect("free"));
        }
    })
    .await
    .unwrap();
    // The last one was dropped with nobody to take it: unlocked in the database.
    locker.wait_for_releases().await;
    let other = pals_tests::locker(&app);
    assert!(other.lock("job").try_acquire().await.unwrap().is_some());
}

/// Takes `lock` `times` times, each while the previous holder still holds it: each
/// release finds a waiter.
async fn chain(lock: &pals::Lock, times: usize) -> pals::LockGuard {
    let mut guard = lock.acquire().await.unwrap();
    for _ in 0..times {
        let mut next = Box::pin(lock.acquire());
        assert!(poll_once(&mut next).await.is_none());
        assert!(guard.release().await.unwrap());
        guard = next.await.unwrap();
    }
    guard
}

#[tokio::test]
async fn handoffs_stop_at_the_limit_and_can_be_turned_off() {
    let app = unique_app("handoff-limit");
    let proxy = Proxy::start(&db_host_port());
    let url = plain_url_via(proxy.port());
    let limited = pals_tests::locker_with(&app, |b| {
        b.url(&url).handoff_limit(3, Duration::from_secs(60))
    });
    let guard = chain(&limited.lock("a"), 4).await;
    // Three handoffs, then the fourth release unlocked in the database, and the waiter
    // took the lock there.
    assert_eq!(lock_statements(&proxy), (2, 1));
    assert!(guard.release().await.unwrap());

    let off = pals_tests::locker_with(&app, |b| b.url(&url).handoff_limit(0, Duration::ZERO));
    let before = lock_statements(&proxy);
    let guard = chain(&off.lock("b"), 3).await;
    let after = lock_statements(&proxy);
    assert!(
        after.0 - before.0 >= 4 && after.1 - before.1 == 3,
        "{before:?} {after:?}"
    );
    assert!(guard.release().await.unwrap());

    // The time limit: a lock granted longer ago than `within` goes back to the database.
    let brief = pals_tests::locker_with(&app, |b| {
        b.url(&url).handoff_limit(100, Duration::from_millis(50))
    });
    let lock = brief.lock("c");
    let held = lock.acquire().await.unwrap();
    let mut next = Box::pin(lock.acquire());
    assert!(poll_once(&mut next).await.is_none());
    let before = lock_statements(&proxy);
    tokio::time::sleep(Duration::from_millis(60)).await; // the behaviour is a time
    assert!(held.release().await.unwrap());
    let next = next.await.unwrap();
    let after = lock_statements(&proxy);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
    assert!(next.release().await.unwrap());
}

#[tokio::test]
async fn a_fenced_waiter_gets_its_own_grant_and_token() {
    let app = unique_app("handoff-fenced");
    let locker = locker(&app);
    let plain = locker.lock("ledger");
    let fenced = locker.lock("ledger").fenced();
    // The fencing sequence is checked once per locker, before the queue: done here, so
    // that the waiters below wait in the queue.
    drop(fenced.acquire().await.unwrap());
    let held = plain.acquire().await.unwrap();
    let mut next = Box::pin(fenced.acquire());
    assert!(poll_once(&mut next).await.is_none());
    assert!(held.release().await.unwrap());
    let first = next.await.unwrap();
    let token = first.fence().expect("a fenced grant has a token");
    // Fenced holders do not hand over either: each grant draws a greater token.
    let mut next = Box::pin(fenced.acquire());
    assert!(poll_once(&mut next).await.is_none());
    assert!(first.release().await.unwrap());
    let second = next.await.unwrap();
    assert!(second.fence().unwrap() > token);
    assert!(second.release().await.unwrap());
}

#[tokio::test]
async fn a_waiter_that_goes_away_after_the_handoff_leaves_no_lock_behind() {
    let app = unique_app("handoff-cancel");
    let proxy = Proxy::start(&db_host_port());
    let locker = locker_via(&app, &proxy);
    let other = pals_tests::locker(&app);
    for _ in 0..10 {
        let lock = locker.lock("job");
        let held = lock.acquire().await.unwrap();
        let mut next = Box::pin(lock.acquire());
        assert!(poll_once(&mut next).await.is_none());
        // Handed over (the waiter counts: no statement), then the waiter goes away
        // before it runs.
        let before = lock_statements(&proxy);
        assert!(held.release().await.unwrap());
        assert_eq!(lock_statements(&proxy), before, "handed over");
        drop(next);
        // The orphaned lock is unlocked in the background: another process gets it.
        let taken = other
            .lock("job")
            .acquire_timeout(Duration::from_secs(10))
            .await;
        let taken = taken.unwrap().expect("unlocked");
        assert!(taken.release().await.unwrap());
        // And this process still can.
        let again = locker.lock("job").try_acquire().await.unwrap();
        assert!(again.expect("free").release().await.unwrap());
    }
    // Unlocked as a handed-over lock nobody took (one unlock), not found later as a
    // lock held for nobody (which asks the server what the session holds).
    assert_eq!(proxy.count("pg_locks"), 0);
}
