//! Transaction-scoped locks on a caller's own sqlx transaction (`pals::xact::sqlx`, the
//! cargo feature `sqlx`): the tests of tests/xact.rs, and that sqlx's and tokio-postgres'
//! transactions take the same locks.

use std::time::{Duration, Instant};

use pals::xact::sqlx as xact;
use pals_tests::pgbouncer::Pgbouncer;
use pals_tests::{db_url, eventually, holders_of, locker, unique_app};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

/// A sqlx connection to the test database, named as pals names the sessions of `app` (so
/// that `holders_of` sees it).
async fn connection(app: &str) -> PgConnection {
    options(app).connect().await.unwrap()
}

fn options(app: &str) -> PgConnectOptions {
    pals_tests::ensure_server();
    let options: PgConnectOptions = db_url().parse().unwrap();
    options.application_name(&pals::application_name(app))
}

async fn tokio_postgres_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The first column of `sql`'s one row, as text, on `conn`.
async fn text(conn: &mut PgConnection, sql: &str) -> String {
    sqlx::query(sql)
        .fetch_one(conn)
        .await
        .unwrap()
        .get::<String, _>(0)
}

/// How many advisory locks the session of `conn` holds.
async fn advisory_locks(conn: &mut PgConnection) -> i64 {
    let sql = "SELECT count(*) FROM pg_locks \
               WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted";
    sqlx::query(sql).fetch_one(conn).await.unwrap().get(0)
}

#[tokio::test]
async fn a_transaction_lock_lasts_until_commit_or_rollback() {
    let app = unique_app("xact-sqlx");
    let (mut a, mut b) = (connection(&app).await, connection(&app).await);
    let other = locker(&app);

    let mut tx = a.begin().await.unwrap();
    xact::acquire(&mut tx, &app, "migrations", Duration::from_secs(5))
        .await
        .unwrap();
    // The same key as a session lock of pals: they exclude each other.
    assert!(other
        .lock("migrations")
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    let mut tx_b = b.begin().await.unwrap();
    assert!(!xact::try_acquire(&mut tx_b, &app, "migrations")
        .await
        .unwrap());
    tx.commit().await.unwrap();
    assert!(xact::try_acquire(&mut tx_b, &app, "migrations")
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
async fn sqlx_and_tokio_postgres_transactions_take_the_same_locks() {
    let app = unique_app("xact-sqlx-tp");
    let mut sqlx_conn = connection(&app).await;
    let mut client = tokio_postgres_client().await;

    // A sqlx holder keeps tokio-postgres' transactions out, in either mode.
    let mut tx = sqlx_conn.begin().await.unwrap();
    xact::acquire(&mut tx, &app, "schema", Duration::from_secs(5))
        .await
        .unwrap();
    let tp = client.transaction().await.unwrap();
    assert!(!pals::xact::try_acquire(&tp, &app, "schema").await.unwrap());
    assert!(!pals::xact::try_acquire_shared(&tp, &app, "schema")
        .await
        .unwrap());
    tx.commit().await.unwrap();

    // And the other way round: a tokio-postgres holder keeps sqlx's out.
    assert!(pals::xact::try_acquire(&tp, &app, "schema").await.unwrap());
    let mut tx = sqlx_conn.begin().await.unwrap();
    assert!(!xact::try_acquire(&mut tx, &app, "schema").await.unwrap());
    let err = xact::acquire_shared(&mut tx, &app, "schema", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    tp.rollback().await.unwrap();
    assert!(xact::try_acquire(&mut tx, &app, "schema").await.unwrap());
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_timed_out_wait_leaves_the_transaction_usable_and_its_settings_alone() {
    let app = unique_app("xact-sqlx-timeout");
    let mut a = connection(&app).await;
    let holder = locker(&app);
    let held = holder.lock("migrations").acquire().await.unwrap();

    let mut tx = a.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '7s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    let err = xact::acquire(&mut tx, &app, "migrations", Duration::from_millis(300))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, pals::Error::Timeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(r#"Lock acquire failed for "{app}.migrations". Failed due to timeout."#)
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // Still usable, with its own lock_timeout, and holding nothing.
    let setting = "SELECT current_setting('lock_timeout')";
    assert_eq!(text(&mut tx, setting).await, "7s");
    assert_eq!(advisory_locks(&mut tx).await, 0);

    // Once free, a wait succeeds, and the setting is still the transaction's.
    drop(held);
    xact::acquire(&mut tx, &app, "migrations", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(advisory_locks(&mut tx).await, 1);
    assert_eq!(text(&mut tx, setting).await, "7s");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn shared_transaction_locks_share_and_exclude_the_exclusive_one() {
    let app = unique_app("xact-sqlx-shared");
    let (mut a, mut b) = (connection(&app).await, connection(&app).await);
    let (mut tx_a, mut tx_b) = (a.begin().await.unwrap(), b.begin().await.unwrap());
    xact::acquire_shared(&mut tx_a, &app, "table", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(xact::try_acquire_shared(&mut tx_b, &app, "table")
        .await
        .unwrap());
    let writer = locker(&app);
    assert!(writer.lock("table").try_acquire().await.unwrap().is_none());
    tx_a.commit().await.unwrap();
    tx_b.commit().await.unwrap();

    // An exclusive holder keeps a shared one out.
    let (mut tx_a, mut tx_b) = (a.begin().await.unwrap(), b.begin().await.unwrap());
    assert!(xact::try_acquire(&mut tx_a, &app, "table").await.unwrap());
    assert!(!xact::try_acquire_shared(&mut tx_b, &app, "table")
        .await
        .unwrap());
    tx_a.commit().await.unwrap();
    tx_b.commit().await.unwrap();
    assert!(writer.lock("table").try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn a_dropped_wait_leaves_the_transaction_as_it_was() {
    let app = unique_app("xact-sqlx-dropped");
    let mut a = connection(&app).await;
    let holder = locker(&app);
    let held = holder.lock("migrations").acquire().await.unwrap();
    let mut tx = a.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '7s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let wait = xact::acquire(&mut tx, &app, "migrations", Duration::from_millis(600));
    assert!(tokio::time::timeout(Duration::from_millis(100), wait)
        .await
        .is_err());
    // sqlx reads the abandoned wait's answer first (it ends on the server, timing out);
    // then the transaction goes on with its own setting, no savepoint of pals' open, and
    // not aborted.
    let setting = "SELECT current_setting('lock_timeout')";
    assert_eq!(text(&mut tx, setting).await, "7s");
    assert!(sqlx::query("RELEASE SAVEPOINT pals_xact_lock")
        .execute(&mut *tx)
        .await
        .is_err());
    drop(tx);
    drop(held);
}

#[tokio::test]
async fn an_aborted_transaction_reports_its_own_error() {
    let app = unique_app("xact-sqlx-aborted");
    let mut a = connection(&app).await;
    let mut tx = a.begin().await.unwrap();
    assert!(sqlx::query("SELECT 1/0").execute(&mut *tx).await.is_err());
    for timeout in [Duration::from_secs(1), Duration::ZERO] {
        let err = xact::acquire(&mut tx, &app, "x", timeout)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "database error: ERROR 25P02: current transaction is aborted, commands ignored"
            ),
            "{err}"
        );
        match err {
            pals::Error::Sqlx(sqlx::Error::Database(e)) => {
                assert_eq!(e.code().as_deref(), Some("25P02"))
            }
            other => panic!("expected the transaction's own error, got {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forever_waits_until_the_lock_frees() {
    let app = unique_app("xact-sqlx-forever");
    let holder = locker(&app);
    let held = holder.lock("migrations").acquire().await.unwrap();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut a = connection(&app).await;
            let mut tx = a.begin().await.unwrap();
            xact::acquire(&mut tx, &app, "migrations", Duration::MAX).await?;
            tx.commit().await.unwrap();
            Ok::<_, pals::Error>(())
        })
    };
    // Released only once the sqlx transaction is seen waiting for it.
    let key = pals::key(&app, "migrations");
    let seen = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), || {
            holders_of(&app, key, false) == 1
        })
    });
    assert!(seen.await.unwrap(), "the sqlx transaction never waited");
    assert!(held.release().await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter got the lock once it was free")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_pools_transaction_and_connection_fit() {
    let app = unique_app("xact-sqlx-pool");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options(&app))
        .await
        .unwrap();
    let other = locker(&app);

    let mut tx = pool.begin().await.unwrap();
    assert!(xact::try_acquire(&mut tx, &app, "job").await.unwrap());
    assert!(other.lock("job").try_acquire().await.unwrap().is_none());
    tx.commit().await.unwrap();

    // Outside a transaction, PostgreSQL lets the lock go at the end of the statement.
    let mut conn = pool.acquire().await.unwrap();
    assert!(xact::try_acquire(&mut conn, &app, "job").await.unwrap());
    assert_eq!(advisory_locks(&mut conn).await, 0);
    assert!(other.lock("job").try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn no_statement_stays_prepared_on_the_server_session() {
    // Behind a transaction-mode pooler the session goes to other clients after the
    // transaction: a statement left prepared there (sqlx keeps them by default) collides
    // with theirs.
    let app = unique_app("xact-sqlx-unprepared");
    let mut a = connection(&app).await;
    let mut tx = a.begin().await.unwrap();
    assert!(xact::try_acquire_shared(&mut tx, &app, "x").await.unwrap());
    xact::acquire(&mut tx, &app, "y", Duration::from_secs(1))
        .await
        .unwrap();
    xact::acquire(&mut tx, &app, "z", Duration::ZERO)
        .await
        .unwrap();
    let prepared = "SELECT count(*)::text FROM pg_prepared_statements";
    let count = sqlx::raw_sql(prepared).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(count.get::<String, _>(0), "0");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn clients_behind_a_transaction_pooler_take_turns_on_one_server_session() {
    // pgbouncer in transaction mode with one server connection: each transaction of either
    // client runs on the same server session.
    let bouncer = Pgbouncer::start("transaction", 1);
    let app = unique_app("xact-sqlx-pooler");
    let options: PgConnectOptions = bouncer.url().parse().unwrap();
    let mut a = options.connect().await.unwrap();
    let mut b = options.connect().await.unwrap();
    for round in 0..2 {
        for conn in [&mut a, &mut b] {
            let mut tx = conn.begin().await.unwrap();
            let taken = xact::try_acquire(&mut tx, &app, "job").await;
            assert!(taken.unwrap(), "round {round}");
            xact::acquire_shared(&mut tx, &app, "table", Duration::from_secs(5))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}
