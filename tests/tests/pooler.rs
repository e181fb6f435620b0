//! pals behind a real pgbouncer: in transaction mode, which cannot carry session locks, a
//! session found shared is closed and the caller told it is misconfigured; in session mode,
//! everything works as when connected straight to PostgreSQL.

use std::time::Duration;

use pals_tests::pgbouncer::Pgbouncer;
use pals_tests::{eventually, holders_of, locker_with, probe_query, unique_app};

fn locker_at(url: &str, app: &str) -> pals::Locker {
    locker_with(app, |b| {
        b.url(url).heartbeat(Some(Duration::from_millis(100)))
    })
}

fn assert_says_pooler(error: &pals::Error) {
    assert!(error.is_misconfiguration(), "{error}");
    let text = error.to_string();
    assert!(text.contains("transaction-mode pooler"), "{text}");
    assert!(
        text.contains("Next step:") && text.contains("pals::xact"),
        "{text}"
    );
}

/// Two lockers behind one server connection: the second one's set-up takes over the server
/// session the first one set up, and the first one's next statement finds it is not its own.
#[tokio::test]
async fn a_session_taken_over_through_a_transaction_pooler_is_refused() {
    let bouncer = Pgbouncer::start("transaction", 1);
    let (first_app, second_app) = (unique_app("pooled-a"), unique_app("pooled-b"));
    let first = locker_at(&bouncer.url(), &first_app);
    let second = locker_at(&bouncer.url(), &second_app);
    let guard = first.lock("x").try_acquire().await.unwrap().expect("free");
    assert!(guard.release().await.unwrap());
    // The second locker's session is set up on the same server session.
    let _ = second.lock("y").try_acquire().await;
    let error = first
        .lock("z")
        .try_acquire()
        .await
        .expect_err("a session shared with another client is refused");
    assert_says_pooler(&error);
    let z = first.lock("z").key();
    assert_eq!(
        holders_of(&first_app, z, true),
        0,
        "nothing held for nobody"
    );
    let rows = probe_query(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND \
         ((classid::bigint << 32) | objid::bigint) = {z}"
    ))
    .unwrap();
    assert_eq!(
        rows,
        vec![Some("0".to_string())],
        "z is not held by any session"
    );
}

/// The pooler drops the server connection under a holder (here: the backend is
/// terminated) while pals' own connection to the pooler stays up, so no close ever
/// arrives: the heartbeat, answered by another server session, finds it is not its own,
/// and the holder is told its lock is lost, while a client connected straight to
/// PostgreSQL takes the lock.
#[tokio::test]
async fn a_holder_behind_a_transaction_pooler_learns_its_server_session_is_gone() {
    let bouncer = Pgbouncer::start("transaction", 2);
    let app = unique_app("pooled-holder");
    let pooled = locker_at(&bouncer.url(), &app);
    let guard = pooled
        .lock("job")
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    let lost = guard.lost();
    let pid = guard.backend_pid().expect("a session lock has a backend");
    let terminated = std::time::Instant::now();
    probe_query(&format!("SELECT pg_terminate_backend({pid})")).unwrap();
    let direct = pals_tests::locker(&app);
    let taken = direct
        .lock("job")
        .acquire_timeout(Duration::from_secs(5))
        .await;
    assert!(taken.unwrap().is_some(), "the server freed the lock");
    tokio::time::timeout(Duration::from_secs(5), lost)
        .await
        .expect("the pooled holder is told within a few heartbeats");
    eprintln!(
        "terminated to lost: {:?} (heartbeat 100 ms)",
        terminated.elapsed()
    );
    assert!(!guard.is_held());
    assert!(
        !guard.release().await.unwrap(),
        "a lost lock is not released"
    );
}

/// A server session where another client prepared statements by the names pals gives its
/// lock statements (`pals1_try_x`, …, one set per try of the set-up): the set-up's prepares
/// collide, and the connect error says why, as a misconfiguration.
#[tokio::test]
async fn a_set_up_on_another_clients_server_session_is_refused() {
    let bouncer = Pgbouncer::start("transaction", 1);
    let prepares: String = (1..=3)
        .map(|try_| format!("PREPARE pals{try_}_try_x AS SELECT {try_}; "))
        .collect();
    pals_tests::probe_query_at(&bouncer.url(), &prepares).unwrap();
    let locker = locker_at(&bouncer.url(), &unique_app("pooled-setup"));
    let error = locker.lock("x").try_acquire().await.expect_err("refused");
    assert_says_pooler(&error);
}

/// Session mode gives each client a server session of its own: nothing to refuse.
#[tokio::test]
async fn a_session_mode_pooler_works_as_a_direct_connection() {
    let bouncer = Pgbouncer::start("session", 4);
    let app = unique_app("session-pooled");
    let locker = locker_at(&bouncer.url(), &app);
    let other = locker_at(&bouncer.url(), &app);
    for round in 0..20 {
        let name = format!("n{}", round % 3);
        let guard = locker
            .lock(&name)
            .try_acquire()
            .await
            .unwrap()
            .expect("free");
        assert!(other.lock(&name).try_acquire().await.unwrap().is_none());
        let fenced = locker.lock("f").fenced().try_acquire().await.unwrap();
        assert!(fenced.expect("free").fence().is_some());
        assert!(guard.release().await.unwrap());
    }
    assert!(eventually(Duration::from_secs(5), || {
        holders_of(&app, locker.lock("f").key(), true) == 0
    }));
}
