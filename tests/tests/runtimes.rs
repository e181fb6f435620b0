//! One locker serves every kind of caller: several tokio runtimes that come and go,
//! current-thread runtimes, plain threads, and blocking calls inside async code.

use std::sync::LazyLock;
use std::time::Duration;

use pals_tests::{locker, unique_app};

static APP: LazyLock<String> = LazyLock::new(|| unique_app("runtimes"));
static SHARED: LazyLock<pals::Locker> = LazyLock::new(|| locker(&APP));

async fn cycle(name: &str) {
    let guard = SHARED.lock(name).acquire().await.expect("acquire");
    assert!(guard.release().await.expect("release"));
}

// Each #[tokio::test] has its own runtime, shut down when the test ends, and all share one
// locker. (Whether they overlap is up to the test harness; the ordered case, a runtime that
// ends before the next starts, is `runtimes_that_end_one_after_another`.)
#[tokio::test]
async fn first_test_runtime() {
    cycle("a").await;
}

#[tokio::test]
async fn second_test_runtime() {
    cycle("b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_test_runtime() {
    cycle("c").await;
}

#[test]
fn runtimes_that_end_one_after_another() {
    let app = unique_app("rt-seq");
    // One connection, so every round must reuse the session the first runtime opened.
    let locker = pals_tests::locker_with(&app, |b| b.pool_size(1));
    let backend = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let guard = locker.lock("pid").try_acquire().await.unwrap().unwrap();
            let pid = guard.backend_pid().unwrap();
            assert!(guard.release().await.unwrap());
            pid
        })
    };
    let mut backends = Vec::new();
    for _ in 0..3 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lock = locker.lock("x");
        // Acquired on this runtime, which then shuts down while the lock is held...
        let guard = rt.block_on(async move { lock.acquire().await.unwrap() });
        drop(rt);
        // ...and the session still answers: it never lived on that runtime.
        assert!(guard.blocking_release().unwrap());
        backends.push(backend());
    }
    backends.dedup();
    assert_eq!(
        backends.len(),
        1,
        "the pooled session was replaced: {backends:?}"
    );
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async {
        let guard = locker
            .lock("x")
            .acquire_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert!(guard.release().await.unwrap());
    });
    assert_eq!(backend(), backends[0]);
}

#[test]
fn plain_threads_without_a_runtime() {
    let locker = locker(&unique_app("rt-threads"));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let lock = locker.lock(&format!("t{n}"));
            std::thread::spawn(move || {
                let guard = lock.blocking_acquire().unwrap();
                guard.blocking_release().unwrap()
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_api_inside_a_multi_thread_worker_does_not_panic() {
    let locker = locker(&unique_app("rt-worker"));
    let lock = locker.lock("x");
    let guard = lock.blocking_acquire().unwrap();
    assert!(lock.blocking_try_acquire().unwrap().is_none());
    assert!(guard.blocking_release().unwrap());
}

#[tokio::test]
async fn blocking_api_inside_a_current_thread_runtime_does_not_panic_or_hang() {
    let locker = locker(&unique_app("rt-current"));
    let lock = locker.lock("x");
    let guard = lock.blocking_acquire().unwrap();
    assert!(lock
        .blocking_acquire_timeout(Duration::from_millis(20))
        .unwrap()
        .is_none());
    assert!(guard.blocking_release().unwrap());
    // Mixed: async acquire, blocking release in the same task.
    let guard = lock.acquire().await.unwrap();
    assert!(guard.blocking_release().unwrap());
}

#[tokio::test]
async fn blocking_api_inside_a_task_survives_tokios_cooperative_budget() {
    // Each blocking call polls tokio futures inside this task; tokio's budget per task
    // must not make one of them wait for a wake-up that only a yield would deliver.
    let locker = locker(&unique_app("rt-budget"));
    let lock = locker.lock("x");
    for _ in 0..400 {
        let guard = lock.blocking_try_acquire().unwrap().expect("free");
        assert!(guard.blocking_release().unwrap());
    }
}
