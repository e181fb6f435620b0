//! Callers in one process that want the same lock queue in memory, not in the database, and
//! get it in the order they asked.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pals_tests::{locker, poll_once, sessions_of, unique_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tasks_on_one_lock_use_at_most_two_connections() {
    let app = unique_app("queue50");
    let locker = locker(&app);
    let lock = locker.lock("one");
    // Someone else holds it at first, so one of our tasks really waits in the database.
    let other = pals_tests::locker(&app);
    let blocker = other.lock("one").acquire().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (stop, most, app) = (stop.clone(), most.clone(), app.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) || samples == 0 {
                most.fetch_max(sessions_of(&app), Ordering::Relaxed);
                samples += 1;
            }
            samples
        })
    };

    let running = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (lock, running) = (lock.clone(), running.clone());
            tokio::spawn(async move {
                let guard = lock
                    .timeout(Duration::from_secs(30))
                    .acquire()
                    .await
                    .unwrap();
                assert_eq!(
                    running.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.unwrap()
            })
        })
        .collect();
    // Let the tasks pile up behind the other holder, then let go.
    while sessions_of(&app) < 2 {
        tokio::task::yield_now().await;
    }
    assert!(blocker.release().await.unwrap());
    for task in tasks {
        assert!(task.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let most = most.load(Ordering::Relaxed);
    // The other locker's session counts in; ours should be one.
    assert!(
        most <= 2,
        "saw {most} sessions of the app at once ({samples} samples)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_in_one_process_get_the_lock_in_the_order_they_asked() {
    let app = unique_app("fifo");
    let locker = locker(&app);
    let first = locker.lock("one").acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for n in 0..8 {
        let (lock, order) = (locker.lock("one"), order.clone());
        let mut caller = Box::pin(async move {
            let guard = lock.acquire_timeout(Duration::from_secs(20)).await?;
            let guard = guard.expect("the lock within 20 s");
            order.lock().unwrap().push(n);
            guard.release().await
        });
        // Its first poll puts the caller in the queue, before the next one asks.
        assert!(
            poll_once(&mut caller).await.is_none(),
            "caller {n} did not queue"
        );
        callers.push(tokio::spawn(caller));
    }
    assert!(first.release().await.unwrap());
    for caller in callers {
        assert!(caller.await.unwrap().unwrap());
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}
