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
