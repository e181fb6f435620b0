//! `Locker::holders()`: who holds which lock, who waits, for how long.

use std::time::Duration;

use pals_tests::{application_name, eventually, locker, unique_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_lists_holders_waiters_and_names() {
    let app = unique_app("inspect");
    let (mine, other) = (locker(&app), locker(&app));
    let exclusive = mine.lock("migrations").acquire().await.unwrap();
    let shared = mine.lock("table").shared().acquire().await.unwrap();
    let waiter = {
        let lock = other.lock("migrations");
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(10)).await })
    };
    let key = exclusive.key();
    assert!(eventually(Duration::from_secs(5), || {
        pals_tests::holders_of(&app, key, false) == 1
    }));

    // A lock taken by plain SQL, in a session we keep, shows too, without a name.
    let (raw, connection) = tokio_postgres::connect(&pals_tests::db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let raw_key = pals::key(&app, "plain-sql");
    raw.execute("SELECT pg_advisory_lock($1)", &[&raw_key])
        .await
        .unwrap();

    let holders = mine.holders().await.unwrap();
    let plain = holders
        .iter()
        .find(|h| h.key == raw_key)
        .expect("the plain SQL lock is listed");
    assert!(plain.granted && plain.name.is_none());
    let ours: Vec<_> = holders
        .iter()
        .filter(|h| h.application_name == application_name(&app))
        .collect();
    let held = ours
        .iter()
        .find(|h| h.key == key && h.granted)
        .expect("the holder is listed");
    assert_eq!(
        held.name.as_deref(),
        Some(format!("{app}.migrations").as_str())
    );
    assert_eq!(held.mode, pals::Mode::Exclusive);
    assert!(held.waiting_for.is_none());
    assert!(held.backend_start.is_some());
    let waiting = ours
        .iter()
        .find(|h| h.key == key && !h.granted)
        .expect("the waiter is listed");
    assert!(waiting.waiting_for.is_some());
    assert_ne!(waiting.pid, held.pid);
    let reader = ours
        .iter()
        .find(|h| h.key == shared.key())
        .expect("the shared holder is listed");
    assert_eq!(reader.mode, pals::Mode::Shared);
    assert_eq!(
        reader.name.as_deref(),
        Some(format!("{app}.table").as_str())
    );

    let table = pals::inspect::table(&holders);
    assert!(
        table.contains(&format!("{app}.migrations")) && table.contains("waiting"),
        "{table}"
    );

    drop(exclusive);
    assert!(waiter.await.unwrap().unwrap().is_some());
}

/// `holders()` never runs behind a lock wait: a session waiting for a lock answers nothing
/// else until the wait ends, so the question goes to another session (a new one if need be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_answers_while_the_locker_waits_for_a_lock() {
    let app = unique_app("inspect-wait");
    let mine = pals_tests::locker_with(&app, |b| b.pool_size(2));
    let other = locker(&unique_app("inspect-wait-other"));
    let key = pals::key(&app, "busy");
    let busy = other.lock_key(key).acquire().await.unwrap();
    let waiter = {
        let lock = mine.lock("busy");
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(30)).await })
    };
    // The waiter's session is the locker's only one, and it waits in the server.
    assert!(eventually(Duration::from_secs(5), || {
        pals_tests::holders_of(&app, key, false) == 1
    }));
    let holders = tokio::time::timeout(Duration::from_secs(5), mine.holders())
        .await
        .expect("holders() queued behind the lock wait")
        .unwrap();
    assert!(holders.iter().any(|h| h.key == key && !h.granted));
    assert!(busy.release().await.unwrap());
    assert!(waiter.await.unwrap().unwrap().is_some());
}
