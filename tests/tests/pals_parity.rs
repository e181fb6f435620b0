//! Twins of the tests in PALs' own suite (pals/tests/test_core.py), against a real server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals_tests::proxy::{db_host_port, plain_url_via, Proxy};
use pals_tests::{locker, locker_with, unique_app};

const MS_300: Duration = Duration::from_millis(300);
/// A try at once, and a wait, as the proxy sees them.
const TRY: &str = "pg_try_advisory_lock(";
const WAIT: &str = "pg_advisory_lock(";

fn assert_waited_300ms(started: Instant) {
    let waited = started.elapsed();
    assert!(
        waited >= MS_300 && waited < Duration::from_millis(350),
        "waited {waited:?}, expected 300..350 ms"
    );
}

#[test]
fn lock_keys_are_unique_over_5000_random_names() {
    // xorshift: random enough names, no dependency, a fresh seed every run (std's
    // RandomState is seeded from the operating system's randomness).
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let names: HashSet<String> = (0..5000)
        .map(|i| {
            let len = 6.max(i % 25) + 5;
            (0..len)
                .map(|_| char::from(b' ' + (next() % 95) as u8))
                .collect()
        })
        .collect();
    assert_eq!(names.len(), 5000, "seed {seed}");
    let keys: HashSet<i64> = names.iter().map(|n| pals::key("TestLocker", n)).collect();
    assert_eq!(keys.len(), 5000, "seed {seed}");
}

#[test]
fn locker_defaults() {
    let locker = pals::Locker::new("foo", &pals_tests::db_url()).unwrap();
    assert_eq!(locker.default_timeout(), Duration::from_secs(30));
    assert_eq!(locker.pool_size(), pals::DEFAULT_POOL_SIZE);
    let lock = locker.lock("a");
    assert_eq!(lock.effective_timeout(), Duration::from_secs(30));
    assert!(!lock.is_shared());

    let locker = pals::Locker::builder("bar")
        .url(&pals_tests::db_url())
        .default_timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    assert_eq!(
        locker.lock("a").effective_timeout(),
        Duration::from_millis(1000)
    );
}

#[tokio::test]
async fn same_lock_fails_acquire_in_one_locker() {
    let locker = locker(&unique_app("same1"));
    let lock1 = locker.lock("test_it");
    let lock2 = locker.lock("test_it");

    let guard = lock1.acquire().await.unwrap();
    assert!(lock2.try_acquire().await.unwrap().is_none());
    let started = Instant::now();
    assert!(lock2.acquire_timeout(MS_300).await.unwrap().is_none());
    assert_waited_300ms(started);
    assert!(guard.release().await.unwrap());
}

#[tokio::test]
async fn same_lock_fails_acquire_across_lockers() {
    // Two lockers are two pools: the exclusion happens in the database, as between replicas.
    let app = unique_app("same2");
    let (a, b) = (locker(&app), locker(&app));
    let guard = a.lock("test_it").acquire().await.unwrap();
    let lock2 = b.lock("test_it");
    assert!(lock2.try_acquire().await.unwrap().is_none());
    let started = Instant::now();
    assert!(lock2.acquire_timeout(MS_300).await.unwrap().is_none());
    assert_waited_300ms(started);
    assert!(guard.release().await.unwrap());
    assert!(lock2.try_acquire().await.unwrap().is_some());
}

#[test]
fn same_lock_fails_acquire_blocking() {
    let app = unique_app("same3");
    let (a, b) = (locker(&app), locker(&app));
    let guard = a.lock("test_it").blocking_acquire().unwrap();
    assert!(b.lock("test_it").blocking_try_acquire().unwrap().is_none());
    let started = Instant::now();
    assert!(b
        .lock("test_it")
        .blocking_acquire_timeout(MS_300)
        .unwrap()
        .is_none());
    assert_waited_300ms(started);
    assert!(guard.blocking_release().unwrap());
}

#[tokio::test]
async fn different_lock_names_both_acquire() {
    let locker = locker(&unique_app("diff"));
    let g1 = locker.lock("test_it").acquire().await.unwrap();
    let g2 = locker.lock("test_it2").acquire().await.unwrap();
    assert!(g1.release().await.unwrap());
    assert!(g2.release().await.unwrap());
}

#[tokio::test]
async fn lock_after_release_acquires() {
    let app = unique_app("after");
    let (a, b) = (locker(&app), locker(&app));
    let g1 = a.lock("test_it").acquire().await.unwrap();
    assert!(g1.release().await.unwrap());
    let g2 = b
        .lock("test_it")
        .timeout(Duration::ZERO)
        .acquire()
        .await
        .unwrap();
    assert!(g2.release().await.unwrap());
}

#[tokio::test]
async fn per_lock_options_are_applied() {
    let app = unique_app("opts");
    let (a, b) = (locker(&app), locker(&app));
    let guard = a.lock("test_it").acquire().await.unwrap();

    // Timeout zero: acquire tries once (PALs' blocking=False), and never waits. The proxy
    // sees what went to the server.
    let proxy = Proxy::start(&db_host_port());
    let watched = locker_with(&app, |builder| builder.url(&plain_url_via(proxy.port())));
    let err = watched
        .lock("test_it")
        .timeout(Duration::ZERO)
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(proxy.count(TRY), 1, "{:?}", proxy.statements());
    assert_eq!(proxy.count(WAIT), 0, "{:?}", proxy.statements());

    // Its own timeout instead of the locker's 5 s default.
    let started = Instant::now();
    let err = b
        .lock("test_it")
        .timeout(MS_300)
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_waited_300ms(started);
    assert!(guard.release().await.unwrap());
}

#[tokio::test]
async fn shared_locks_block_an_exclusive_until_all_release() {
    let app = unique_app("shared");
    let (a, b, c) = (locker(&app), locker(&app), locker(&app));
    let shared1 = a.lock("test_it").shared().acquire().await.unwrap();
    let shared2 = b.lock("test_it").shared().acquire().await.unwrap();
    // A shared lock in the same process as another shared holder coexists too.
    let shared3 = a
        .lock("test_it")
        .shared()
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    assert!(shared3.is_shared());
    let exclusive = c.lock("test_it");

    assert!(exclusive.try_acquire().await.unwrap().is_none());
    assert!(shared1.release().await.unwrap());
    assert!(exclusive.try_acquire().await.unwrap().is_none());
    assert!(shared3.release().await.unwrap());
    assert!(exclusive.try_acquire().await.unwrap().is_none());
    assert!(shared2.release().await.unwrap());
    let held = exclusive
        .try_acquire()
        .await
        .unwrap()
        .expect("free after both released");

    // And the exclusive holder keeps shared ones out, in its process and in others.
    assert!(c
        .lock("test_it")
        .shared()
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert!(a
        .lock("test_it")
        .shared()
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert!(held.release().await.unwrap());
}

#[tokio::test]
async fn scoped_use_releases_at_scope_end() {
    let app = unique_app("scope");
    let (a, b) = (locker(&app), locker(&app));
    let other = b.lock("test_it");
    {
        let _guard = a.lock("test_it").acquire().await.unwrap();
        assert!(other.try_acquire().await.unwrap().is_none());
    }
    // The drop released it in the background; the database hands it over the moment it does.
    let guard = other
        .acquire_timeout(Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        guard.is_some(),
        "not released within 100 ms of the scope end"
    );
}

#[tokio::test]
async fn failed_scoped_acquire_is_an_error() {
    let app = unique_app("scopefail");
    let (a, b) = (locker(&app), locker(&app));
    let _held = a.lock("test_it").try_acquire().await.unwrap().unwrap();
    let err = b
        .lock("test_it")
        .timeout(Duration::ZERO)
        .acquire()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(r#"Lock acquire failed for "{app}.test_it". Failed due to timeout."#)
    );
    assert!(matches!(err, pals::Error::Timeout { ref name } if *name == format!("{app}.test_it")));
}

#[tokio::test]
async fn dropped_guard_is_released() {
    let app = unique_app("gc");
    let (a, b) = (locker(&app), locker(&app));
    let guard = a.lock("test_it").acquire().await.unwrap();
    drop(guard);
    let again = b
        .lock("test_it")
        .acquire_timeout(Duration::from_millis(100))
        .await
        .unwrap();
    assert!(again.is_some());
}

/// PALs issue 40: with a pool of N, N + 1 callers each taking a different lock all succeed
/// (PALs needed a connection per held lock; pals shares them), on at most N connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_on_the_connection_pool_tasks() {
    const N: usize = 3;
    let app = unique_app("pool40");
    let locker = locker_with(&app, |b| b.pool_size(N));
    // The N + 1 holders and the test meet twice: once all hold, and once it has looked.
    let barrier = Arc::new(tokio::sync::Barrier::new(N + 2));
    let tasks: Vec<_> = (0..=N)
        .map(|n| {
            let (lock, barrier) = (locker.lock(&format!("example-{n}")), barrier.clone());
            tokio::spawn(async move {
                // An error too meets the others, so that the test reports it, not hangs.
                let guard = lock.acquire().await;
                barrier.wait().await; // all N + 1 held at once
                barrier.wait().await; // the test has counted
                guard?.release().await
            })
        })
        .collect();
    barrier.wait().await;
    let seen = all_held_on_the_pool(&app, N);
    barrier.wait().await;
    seen.unwrap();
    for task in tasks {
        assert!(task.await.unwrap().unwrap());
    }
}

#[test]
fn contention_on_the_connection_pool_threads() {
    const N: usize = 3;
    let app = unique_app("pool40t");
    let locker = locker_with(&app, |b| b.pool_size(N));
    let barrier = Arc::new(std::sync::Barrier::new(N + 2));
    let threads: Vec<_> = (0..=N)
        .map(|n| {
            let (lock, barrier) = (locker.lock(&format!("example-{n}")), barrier.clone());
            std::thread::spawn(move || {
                // An error too meets the others, so that the test reports it, not hangs.
                let guard = lock.blocking_acquire();
                barrier.wait(); // all N + 1 held at once
                barrier.wait(); // the test has counted
                guard?.blocking_release()
            })
        })
        .collect();
    barrier.wait();
    let seen = all_held_on_the_pool(&app, N);
    barrier.wait();
    seen.unwrap();
    for thread in threads {
        assert!(thread.join().unwrap().unwrap());
    }
}

/// While `example-0` to `example-N` of `app` are held: each is held in the database, and
/// by at most `pool_size` sessions. (Returned, not asserted, so that the holders are let go
/// either way.)
fn all_held_on_the_pool(app: &str, pool_size: usize) -> Result<(), String> {
    for n in 0..=pool_size {
        let key = pals::key(app, &format!("example-{n}"));
        if pals_tests::holders_of(app, key, true) != 1 {
            return Err(format!("example-{n} is not held in the database"));
        }
    }
    match pals_tests::sessions_of(app) {
        sessions if sessions <= pool_size as i64 => Ok(()),
        sessions => Err(format!("{sessions} sessions for a pool of {pool_size}")),
    }
}
