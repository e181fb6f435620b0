//! Many held locks share a few sessions, under rules that keep them independent: only
//! instant attempts share a session, waits get one of their own, one exclusive lock has one
//! guard per process, a lost session reports loss on every guard it carried, and releasing
//! one lock never disturbs the others.

use std::time::{Duration, Instant};

use pals_tests::{
    application_name, eventually, locker, locker_with, probe_i64, sessions_of, unique_app,
};

/// How many advisory locks the sessions of `app` hold.
fn locks_held_by(app: &str) -> i64 {
    probe_i64(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.application_name = '{}' AND l.locktype = 'advisory' AND l.granted",
        application_name(app)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_locks_share_a_few_sessions() {
    let app = unique_app("many");
    let locker = locker_with(&app, |b| b.pool_size(4));
    let mut guards = Vec::new();
    for n in 0..1000 {
        guards.push(
            locker
                .lock(&format!("tenant-{n}"))
                .try_acquire()
                .await
                .unwrap()
                .expect("free"),
        );
    }
    // acquire() takes a free lock at once too, on a shared session.
    for n in 0..100 {
        guards.push(locker.lock(&format!("job-{n}")).acquire().await.unwrap());
    }
    assert_eq!(locks_held_by(&app), 1100);
    assert!(sessions_of(&app) <= 4, "{} sessions", sessions_of(&app));
    assert!(guards.iter().all(|g| g.is_held()));
    for guard in guards {
        assert!(guard.release().await.unwrap());
    }
    assert_eq!(locks_held_by(&app), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_never_sits_on_a_session_that_carries_other_locks() {
    let app = unique_app("dedicated");
    let mine = locker_with(&app, |b| b.pool_size(3));
    let holder = locker(&unique_app("dedicated-holder"));
    let busy = holder
        .lock_key(pals::key(&app, "busy"))
        .acquire()
        .await
        .unwrap();
    let carried: Vec<_> = futures(&mine, 5).await;

    let waiter = {
        let lock = mine.lock("busy");
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(10)).await })
    };
    let waiting_pid = format!(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.application_name = '{}' AND l.locktype = 'advisory' AND NOT l.granted",
        application_name(&app)
    );
    assert!(eventually(
        Duration::from_secs(5),
        || pals_tests::probe_query(&waiting_pid).unwrap().len() == 1
    ));
    let pid = probe_i64(&waiting_pid);
    // The waiting session carries nothing else...
    let others = probe_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE pid = {pid} AND granted AND locktype = 'advisory'"
    ));
    assert_eq!(others, 0);
    // ...so releasing the carried locks does not queue behind the wait.
    let started = Instant::now();
    for guard in carried {
        assert!(guard.release().await.unwrap());
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "releases took {:?}",
        started.elapsed()
    );
    assert!(!waiter.is_finished(), "the waiter should still wait");
    assert!(busy.release().await.unwrap());
    assert!(waiter.await.unwrap().unwrap().is_some());
}

async fn futures(locker: &pals::Locker, count: usize) -> Vec<pals::LockGuard> {
    let mut guards = Vec::new();
    for n in 0..count {
        guards.push(
            locker
                .lock(&format!("carried-{n}"))
                .try_acquire()
                .await
                .unwrap()
                .unwrap(),
        );
    }
    guards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_bounded_by_the_pool_too() {
    let app = unique_app("wait-pool");
    let mine = locker_with(&app, |b| b.pool_size(2));
    let holder = locker(&unique_app("wait-pool-holder"));
    let held: Vec<_> = futures_of(&holder, &app, &["a", "b", "c"]).await;
    let waiters: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let lock = mine.lock(name);
            tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(10)).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || sessions_of(&app) == 2));
    // Both connections wait: a third wait finds none within its timeout.
    assert!(mine
        .lock("c")
        .acquire_timeout(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    assert_eq!(sessions_of(&app), 2);
    for guard in held {
        assert!(guard.release().await.unwrap());
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap().unwrap().is_some());
    }
}

async fn futures_of(holder: &pals::Locker, app: &str, names: &[&str]) -> Vec<pals::LockGuard> {
    let mut guards = Vec::new();
    for name in names {
        guards.push(
            holder
                .lock_key(pals::key(app, name))
                .acquire()
                .await
                .unwrap(),
        );
    }
    guards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exclusive_lock_has_one_guard_per_process() {
    let app = unique_app("one-guard");
    let locker = locker_with(&app, |b| b.pool_size(1)); // one session: PostgreSQL would re-enter
    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let lock = locker.lock("x");
            tokio::spawn(async move { lock.try_acquire().await.unwrap() })
        })
        .collect();
    let mut guards = Vec::new();
    for attempt in attempts {
        guards.extend(attempt.await.unwrap());
    }
    assert_eq!(
        guards.len(),
        1,
        "{} guards for one exclusive lock",
        guards.len()
    );
    assert!(locker.lock("x").try_acquire().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_reports_loss_on_every_guard_it_carried() {
    let app = unique_app("lost-all");
    let locker = locker_with(&app, |b| b.pool_size(1));
    let guards = futures(&locker, 10).await;
    let pid = probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(&app)
    ));
    probe_i64(&format!("SELECT pg_terminate_backend({pid}, 5000)::int"));
    for guard in &guards {
        assert!(tokio::time::timeout(Duration::from_secs(2), guard.lost())
            .await
            .is_ok());
        assert!(!guard.is_held());
    }
    // And the locker goes on with a new session.
    assert!(locker.lock("after").try_acquire().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_one_lock_never_disturbs_the_others() {
    let app = unique_app("independent");
    let locker = locker_with(&app, |b| b.pool_size(1));
    let other = locker_with(&unique_app("independent-other"), |b| b);
    let mut guards = futures(&locker, 10).await;
    let kept = guards.split_off(5);
    for guard in guards {
        assert!(guard.release().await.unwrap());
    }
    assert_eq!(locks_held_by(&app), 5);
    for guard in &kept {
        assert!(guard.is_held());
        assert!(other
            .lock_key(guard.key())
            .try_acquire()
            .await
            .unwrap()
            .is_none());
    }
    // A dropped guard, released in the background, leaves the rest alone as well.
    let mut kept = kept;
    drop(kept.pop());
    assert!(eventually(Duration::from_secs(2), || locks_held_by(&app) == 4));
    assert!(kept.iter().all(|g| g.is_held()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquires_cancelled_mid_flight_leave_no_lock_behind() {
    let app = unique_app("abandoned");
    let locker = locker_with(&app, |b| b.pool_size(1));
    drop(locker.lock("warm").try_acquire().await.unwrap());
    for n in 0..200 {
        let lock = locker.lock(&format!("abandoned-{n}"));
        let attempt = tokio::spawn(async move { lock.try_acquire().await });
        if n % 2 == 0 {
            tokio::task::yield_now().await;
        }
        attempt.abort(); // mid-flight, or before or after: all must leave nothing behind
        let _ = attempt.await;
    }
    assert!(
        eventually(Duration::from_secs(5), || locks_held_by(&app) == 0),
        "{} locks left behind",
        locks_held_by(&app)
    );
}
