//! Many held locks share a few sessions, under rules that keep them independent: only
//! instant attempts share a session, waits get one of their own, one exclusive lock has one
//! guard per process, a lost session reports loss on every guard it carried, and releasing
//! one lock never disturbs the others.

use std::time::{Duration, Instant};

use pals_tests::proxy::{db_host_port, plain_url_via, Proxy};
use pals_tests::{
    application_name, eventually, locker, locker_with, probe_i64, probe_query, sessions_of,
    unique_app,
};

/// A try at once, and a wait, as the proxy sees them.
const TRY: &str = "pg_try_advisory_lock(";
const WAIT: &str = "pg_advisory_lock(";

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

/// Instant takes that all arrive at once, on a fresh locker, still leave the last
/// connection of the pool to waits: sessions being opened count as sessions to come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instant_takes_leave_the_last_connection_to_waits() {
    let app = unique_app("last-slot");
    let mine = locker_with(&app, |b| b.pool_size(4));
    let takes: Vec<_> = (0..64)
        .map(|n| {
            let lock = mine.lock(&format!("k{n}"));
            tokio::spawn(async move { lock.try_acquire().await })
        })
        .collect();
    let mut guards = Vec::new();
    for take in takes {
        guards.push(take.await.unwrap().unwrap().expect("free"));
    }
    assert!(sessions_of(&app) <= 3, "{} sessions", sessions_of(&app));
    // The last connection is there for a wait: it waits in the database, on a fourth
    // session of its own, instead of polling on a shared one.
    let (busy, waiter) = waiting_for_busy(&mine).await;
    assert_eq!(sessions_of(&app), 4);
    assert!(busy.release().await.unwrap());
    assert!(waiter.await.unwrap().unwrap().is_some());
    for guard in guards {
        assert!(guard.release().await.unwrap());
    }
}

/// A guard of another locker on `mine`'s lock `busy`, and a task of `mine` waiting for it
/// (up to 20 s), returned once that wait is queued in the database.
async fn waiting_for_busy(
    mine: &pals::Locker,
) -> (
    pals::LockGuard,
    tokio::task::JoinHandle<Result<Option<pals::LockGuard>, pals::Error>>,
) {
    let other = locker(&unique_app("busy-elsewhere"));
    let busy = other
        .lock_key(pals::key(mine.app(), "busy"))
        .acquire()
        .await
        .unwrap();
    let waiter = {
        let lock = mine.lock("busy");
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(20)).await })
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            pals_tests::holders_of(mine.app(), busy.key(), false) == 1
        }),
        "the wait never queued in the database"
    );
    (busy, waiter)
}

/// `try_acquire` never waits for the lock, but may wait for a connection: while the only
/// one waits for another lock, it gives up when the lock's timeout ends (`Ok(None)`), not
/// when the other wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_waits_for_a_connection_no_longer_than_the_lock_timeout() {
    let app = unique_app("try-bounded");
    let mine = locker_with(&app, |b| b.pool_size(1));
    let (busy, waiter) = waiting_for_busy(&mine).await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let got = mine.lock("free").timeout(timeout).try_acquire().await;
    let took = started.elapsed();
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "gave up after {took:?}"
    );
    assert!(!waiter.is_finished());
    assert!(busy.release().await.unwrap());
    assert!(waiter.await.unwrap().unwrap().is_some());
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
    let carried: Vec<_> = take_many(&mine, 5).await;

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
    // ...so releasing the carried locks does not queue behind the wait. (Behind it, they
    // could not end before `busy` is released, which comes after them.)
    let releases = async {
        for guard in carried {
            assert!(guard.release().await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), releases)
        .await
        .expect("the releases queued behind the wait");
    assert!(!waiter.is_finished(), "the waiter should still wait");
    assert!(busy.release().await.unwrap());
    assert!(waiter.await.unwrap().unwrap().is_some());
}

/// `count` locks taken at once by `locker` (`carried-0`, `carried-1`, ...).
async fn take_many(locker: &pals::Locker, count: usize) -> Vec<pals::LockGuard> {
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
    let held: Vec<_> = hold_for(&holder, &app, &["a", "b", "c"]).await;
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

/// The locks `names` of `app`, taken (waiting if need be) by `holder`, another app.
async fn hold_for(holder: &pals::Locker, app: &str, names: &[&str]) -> Vec<pals::LockGuard> {
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
    let guards = take_many(&locker, 10).await;
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
    let mut guards = take_many(&locker, 10).await;
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

// ----- regressions found in review -----------------------------------------------------------

fn pid_of(app: &str) -> i64 {
    probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    ))
}

/// A session that has just been opened for an instant attempt must not be taken for a wait
/// before that attempt runs: the wait's timeout clean-up (`pg_advisory_unlock_all`) would
/// free the attempt's lock while its guard still says it holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_never_shared_with_a_wait_before_its_opener_uses_it() {
    for round in 0..10 {
        let app = unique_app("fresh-session");
        let mine = locker_with(&app, |b| b.pool_size(1));
        let other = locker(&unique_app("fresh-session-other"));
        let busy = other
            .lock_key(pals::key(&app, "busy"))
            .acquire()
            .await
            .unwrap();
        // The only connection carries a lock, so a wait for a busy lock has no session:
        // it polls with tries on the shared one. (The carried lock is shared, so that
        // the exclusive try in the last query shows the waiter polling.)
        let carried = mine
            .lock("carried")
            .shared()
            .try_acquire()
            .await
            .unwrap()
            .unwrap();
        let waiter = {
            let lock = mine.lock("busy");
            tokio::spawn(async move { lock.acquire_timeout(Duration::from_millis(800)).await })
        };
        let last_query = format!(
            "SELECT query FROM pg_stat_activity WHERE application_name = '{}'",
            application_name(&app)
        );
        assert!(eventually(Duration::from_secs(2), || {
            let query = probe_query(&last_query).unwrap();
            let try_lock = "SELECT pg_catalog.pg_try_advisory_lock($1) WHERE";
            matches!(&query[..], [Some(query)] if query.starts_with(try_lock))
        }));
        // The carrier dies while the waiter polls; a try opens a new session in the freed
        // slot, which the waiter must not take for its wait before the try runs on it.
        probe_i64(&format!(
            "SELECT pg_terminate_backend({}, 5000)::int",
            pid_of(&app)
        ));
        assert!(eventually(Duration::from_secs(2), || !carried.is_held()));
        let fresh = mine
            .lock("fresh")
            .try_acquire()
            .await
            .unwrap()
            .expect("free");
        assert!(waiter.await.unwrap().unwrap().is_none());
        let stolen = other.lock_key(fresh.key()).try_acquire().await.unwrap();
        assert!(
            !(stolen.is_some() && fresh.is_held()),
            "round {round}: two holders of one lock"
        );
        drop((busy, carried, stolen));
    }
}

/// Once every session carries locks that were waited for, a wait still gets the lock when
/// it frees: it tries again on a shared session, backing off to 50 ms, instead of waiting
/// for a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_still_succeed_when_every_session_carries_locks() {
    let app = unique_app("starve");
    let proxy = Proxy::start(&db_host_port());
    let mine = locker_with(&app, |b| b.pool_size(2).url(&plain_url_via(proxy.port())));
    let other = locker(&unique_app("starve-other"));
    let [a, b, c] = ["a", "b", "c"].map(|name| other.lock_key(pals::key(&app, name)));
    let (a, b) = (a.acquire().await.unwrap(), b.acquire().await.unwrap());
    let wait_a = {
        let lock = mine.lock("a");
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(10)).await })
    };
    let wait_b = {
        let lock = mine.lock("b");
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(10)).await })
    };
    assert!(eventually(Duration::from_secs(5), || sessions_of(&app) == 2));
    drop((a, b));
    let held_a = wait_a.await.unwrap().unwrap().expect("a");
    let held_b = wait_b.await.unwrap().unwrap().expect("b");

    // Both sessions now carry a lock that was waited for; c is busy elsewhere.
    let c = c.acquire().await.unwrap();
    let before = proxy.statements().len();
    let waiting = {
        let lock = mine.lock("c");
        tokio::spawn(async move {
            let got = lock.acquire_timeout(Duration::from_secs(10)).await;
            (got, Instant::now())
        })
    };
    let tries_since = |before: usize| -> Vec<Instant> {
        proxy.timed_statements()[before..]
            .iter()
            .filter(|(_, s)| s.contains(TRY))
            .map(|(at, _)| *at)
            .collect()
    };
    // Enough tries to see the back-off settle: 1, 2, 4, ... 32 ms, then 50 ms apart.
    assert!(
        eventually(Duration::from_secs(10), || tries_since(before).len() >= 16),
        "the wait does not poll on a shared session"
    );
    assert!(c.release().await.unwrap());
    let released_at = Instant::now();
    let (got, got_at) = waiting.await.unwrap();
    assert!(
        got.unwrap().is_some(),
        "the wait did not get the freed lock"
    );
    let statements = &proxy.statements()[before..];
    assert!(
        !statements.iter().any(|s| s.contains(WAIT)),
        "the wait waited on a session: {statements:?}"
    );
    assert!(sessions_of(&app) <= 2);

    // The back-off: tries settle 50 ms apart (the median gap, robust to a loaded machine's
    // late wake-ups), and the freed lock is taken by the next try.
    let tries = tries_since(before);
    let mut gaps: Vec<Duration> = tries[6..].windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(40) && median < Duration::from_millis(100),
        "tries {median:?} apart: {gaps:?}"
    );
    let taken_after = got_at.saturating_duration_since(released_at);
    println!(
        "polling wait: tries {median:?} apart (median), lock taken {taken_after:?} after it freed"
    );
    assert!(
        taken_after < Duration::from_millis(250),
        "taken {taken_after:?} after it freed"
    );
    drop((held_a, held_b));
}

/// A dead session gives its slot back at once, even while guards of the locks it lost are
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_gives_its_slot_back() {
    let app = unique_app("dead-slot");
    // The lock timeout also bounds the connect of the new session: room for a loaded
    // machine. A slot kept by the dead session would still give `None` (g2 lives on).
    let mine = locker_with(&app, |b| {
        b.pool_size(1).default_timeout(Duration::from_secs(2))
    });
    let g1 = mine.lock("g1").try_acquire().await.unwrap().unwrap();
    let g2 = mine.lock("g2").try_acquire().await.unwrap().unwrap();
    let dead = pid_of(&app);
    probe_i64(&format!("SELECT pg_terminate_backend({dead}, 5000)::int"));
    assert!(eventually(Duration::from_secs(2), || !g1.is_held() && !g2.is_held()));
    assert!(
        matches!(g1.release().await, Ok(false)),
        "a lost lock releases as Ok(false)"
    );
    let free = mine.lock("free").try_acquire().await.unwrap();
    assert!(
        free.is_some(),
        "a free lock reported busy: the dead session kept its slot"
    );
    assert_ne!(pid_of(&app), dead, "taken on a new session");
    drop(g2);
}

#[tokio::test]
async fn a_huge_connect_timeout_is_no_limit_not_a_panic() {
    let app = unique_app("huge-timeout");
    let mine = locker_with(&app, |b| b.connect_timeout(Duration::MAX));
    let guard = mine.lock("x").try_acquire().await.unwrap().expect("free");
    assert!(guard.release().await.unwrap());
}
