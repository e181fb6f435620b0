//! A database restart while locks are held and awaited, on a throwaway cluster of this
//! test's own (a restart would break every other test's sessions on the shared server).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pals_tests::cluster::TempCluster;
use pals_tests::{eventually, probe_query_at};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_see_the_loss_waiters_end_and_the_locker_recovers() {
    let cluster = Arc::new(TempCluster::start("restart"));
    let url = cluster.url();
    let connect_timeout = Duration::from_secs(2);
    let build = || {
        pals::Locker::builder("restart")
            .url(&url)
            .heartbeat(Some(Duration::from_millis(200)))
            .connect_timeout(connect_timeout)
            .build()
            .unwrap()
    };
    let (holder, waiter) = (build(), build());
    let guard = holder.lock("leader").acquire().await.unwrap();
    let lost = guard.lost();
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move {
            waiter
                .lock("leader")
                .acquire_timeout(Duration::from_secs(20))
                .await
        })
    };
    let waiters = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
    assert!(eventually(Duration::from_secs(5), || {
        probe_query_at(&url, waiters).unwrap() == vec![Some("1".to_string())]
    }));

    let restarted_at = Instant::now();
    let restarting = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), lost)
            .await
            .is_ok(),
        "the holder never saw the loss"
    );
    println!("restart to lost(): within {:?}", restarted_at.elapsed());
    assert!(!guard.is_held());
    assert!(!matches!(guard.release().await, Ok(true)));

    // The waiter's session died too: it either got an error or, retrying on a new
    // connection, the lock (nobody holds it after the restart). It never hangs.
    let outcome = tokio::time::timeout(Duration::from_secs(25), waiting)
        .await
        .unwrap()
        .unwrap();
    match outcome {
        Ok(Some(guard)) => assert!(guard.release().await.unwrap()),
        Ok(None) => panic!("the waiter waited out its timeout across the restart"),
        Err(error) => println!("the waiter ended with: {error}"),
    }

    // The same lockers work again without a restart of the application.
    let again = holder
        .lock("leader")
        .acquire()
        .await
        .expect("the pool recovered");
    assert!(again.is_held());
    assert!(waiter.lock("leader").try_acquire().await.unwrap().is_none());
    assert!(again.release().await.unwrap());

    // A server that is down is an error within the connect timeout, then recovery.
    let stopping = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    let started = Instant::now();
    let err = holder.lock("leader").acquire().await.unwrap_err();
    assert!(
        matches!(err, pals::Error::Connect { .. } | pals::Error::Database(_)),
        "{err}"
    );
    assert!(started.elapsed() < connect_timeout + Duration::from_secs(1));
    let starting = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap();
    let back = holder
        .lock("leader")
        .acquire()
        .await
        .expect("the pool recovered after the outage");
    assert!(back.release().await.unwrap());
}
