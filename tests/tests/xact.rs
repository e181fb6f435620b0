//! Transaction-scoped locks on a caller's own transaction.

use std::time::{Duration, Instant};

use pals_tests::{db_url, locker, unique_app};
use tokio_postgres::{Client, NoTls};

async fn client() -> Client {
    pals_tests::ensure_server();
    let (client, connection) = tokio_postgres::connect(&db_url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn a_transaction_lock_lasts_until_commit_or_rollback() {
    let app = unique_app("xact");
    let (mut a, mut b) = (client().await, client().await);
    let other = locker(&app);

    let tx = a.transaction().await.unwrap();
    pals::xact::acquire(&tx, &app, "migrations", Duration::from_secs(5))
        .await
        .unwrap();
    // The same key as a session lock of pals: they exclude each other.
    assert!(other
        .lock("migrations")
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    let tx_b = b.transaction().await.unwrap();
    assert!(!pals::xact::try_acquire(&tx_b, &app, "migrations")
        .await
        .unwrap());
    tx.commit().await.unwrap();
    assert!(pals::xact::try_acquire(&tx_b, &app, "migrations")
        .await
        .unwrap());
    tx_b.rollback().await.unwrap();
    assert!(
        other
            .lock("migrations")
            .try_acquire()
            .await
            .unwrap()
            .is_some(),
        "rollback released it"
    );
}

#[tokio::test]
async fn a_timed_out_wait_leaves_the_transaction_usable_and_its_settings_alone() {
    let app = unique_app("xact-timeout");
    let mut a = client().await;
    let holder = locker(&app);
    let held = holder.lock("migrations").acquire().await.unwrap();

    let tx = a.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL lock_timeout = '7s'")
        .await
        .unwrap();
    let started = Instant::now();
    let err = pals::xact::acquire(&tx, &app, "migrations", Duration::from_millis(300))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(r#"Lock acquire failed for "{app}.migrations". Failed due to timeout."#)
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // Still usable, with its own lock_timeout, and holding nothing.
    let row = tx
        .query_one("SELECT current_setting('lock_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "7s");
    let locks: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);

    // Once free, a wait succeeds, and the setting is still the transaction's.
    drop(held);
    pals::xact::acquire(&tx, &app, "migrations", Duration::from_secs(5))
        .await
        .unwrap();
    let row = tx
        .query_one("SELECT current_setting('lock_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "7s");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn shared_transaction_locks_share() {
    let app = unique_app("xact-shared");
    let (mut a, mut b) = (client().await, client().await);
    let (tx_a, tx_b) = (
        a.transaction().await.unwrap(),
        b.transaction().await.unwrap(),
    );
    pals::xact::acquire_shared(&tx_a, &app, "table", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(pals::xact::try_acquire_shared(&tx_b, &app, "table")
        .await
        .unwrap());
    let writer = locker(&app);
    assert!(writer.lock("table").try_acquire().await.unwrap().is_none());
    tx_a.commit().await.unwrap();
    tx_b.commit().await.unwrap();
    assert!(writer.lock("table").try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn a_dropped_wait_leaves_the_transaction_as_it_was() {
    let app = unique_app("xact-dropped");
    let mut a = client().await;
    let holder = locker(&app);
    let held = holder.lock("migrations").acquire().await.unwrap();
    let tx = a.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL lock_timeout = '7s'")
        .await
        .unwrap();
    let wait = pals::xact::acquire(&tx, &app, "migrations", Duration::from_millis(600));
    assert!(tokio::time::timeout(Duration::from_millis(100), wait)
        .await
        .is_err());
    // The abandoned wait ends on the server (timing out); then the transaction goes on
    // with its own setting, no savepoint of pals' open, and not aborted.
    let row = tx
        .query_one("SELECT current_setting('lock_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "7s");
    assert!(tx
        .batch_execute("RELEASE SAVEPOINT pals_xact_lock")
        .await
        .is_err());
    drop(tx);
    drop(held);
}

#[tokio::test]
async fn an_aborted_transaction_reports_its_own_error() {
    let app = unique_app("xact-aborted");
    let mut a = client().await;
    let tx = a.transaction().await.unwrap();
    assert!(tx.batch_execute("SELECT 1/0").await.is_err());
    let err = pals::xact::acquire(&tx, &app, "x", Duration::from_secs(1))
        .await
        .unwrap_err();
    match err {
        pals::Error::Database(e) => assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
        ),
        other => panic!("expected the transaction's own error, got {other}"),
    }
}

#[tokio::test]
async fn forever_waits_until_the_lock_frees() {
    let app = unique_app("xact-forever");
    let mut a = client().await;
    let holder = locker(&app);
    let held = holder.lock("migrations").acquire().await.unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await; // the holder's work
        held.release().await.unwrap()
    });
    let tx = a.transaction().await.unwrap();
    let started = Instant::now();
    pals::xact::acquire(&tx, &app, "migrations", Duration::MAX)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(releaser.await.unwrap());
    tx.commit().await.unwrap();
}
