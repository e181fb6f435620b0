//! `#[pals::exclusive]` against a real server: busy handling, mutual exclusion, release on
//! every way out, templated names (literal braces too), shared readers, min_hold on every
//! way out, the `locker =` override (a call too), a user type's skipped value, and no
//! re-entry.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals::Locker;
use pals_tests::proxy::{db_host_port, plain_url_via, Proxy};
use pals_tests::{locker, unique_app};

const HANDOFF: Duration = Duration::from_millis(100);

/// The lock named `name` is free right now, for `mine` (the in-process queue, which lets
/// the next caller in only once the database confirmed the release) and for another
/// session, and is then released again.
async fn is_free(mine: &Locker, other: &Locker, name: &str) -> bool {
    for locker in [mine, other] {
        match locker.lock(name).try_acquire().await.unwrap() {
            Some(guard) => assert!(guard.release().await.unwrap()),
            None => return false,
        }
    }
    true
}

/// The lock is free for another session within the 100 ms a background release may take
/// (after a panic or a cancellation, when nobody awaits the release), and is then released.
async fn is_free_soon(other: &Locker, name: &str) -> bool {
    match other.lock(name).acquire_timeout(HANDOFF).await.unwrap() {
        Some(guard) => guard.release().await.unwrap(),
        None => false,
    }
}

async fn is_held(other: &Locker, name: &str) -> bool {
    other.lock(name).try_acquire().await.unwrap().is_none()
}

#[derive(Debug)]
enum JobError {
    Lock(pals::Error),
    Failed,
}

impl From<pals::Error> for JobError {
    fn from(error: pals::Error) -> Self {
        JobError::Lock(error)
    }
}

// ----- busy: skip vs error ----------------------------------------------------------------

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[pals::exclusive(name = "job", timeout = "0", on_busy = "skip", locker = locker)]
async fn skip_unit(locker: &Locker) {
    RUNS.fetch_add(1, Ordering::SeqCst);
}

#[pals::exclusive(name = "job", timeout = "0", on_busy = "skip", locker = locker)]
async fn skip_option(locker: &Locker) -> Option<u32> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Some(1)
}

#[pals::exclusive(name = "job", timeout = "0", on_busy = "skip", locker = locker)]
fn skip_result_sync(locker: &Locker) -> Result<Option<u32>, JobError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(Some(1))
}

#[pals::exclusive(name = "job", timeout = "50ms", locker = locker)]
async fn error_when_busy(locker: &Locker) -> Result<u32, JobError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(1)
}

#[pals::exclusive(name = "job", timeout = "0", on_busy = "error", locker = locker)]
fn error_when_busy_sync(locker: &Locker) -> Result<u32, pals::Error> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_lock_skips_or_errors_without_running_the_body() {
    let app = unique_app("busy");
    let (mine, holder) = (locker(&app), locker(&app));
    // Free: each runs its body.
    skip_unit(&mine).await;
    assert_eq!(skip_option(&mine).await, Some(1));
    assert!(matches!(error_when_busy(&mine).await, Ok(1)));
    let before = RUNS.load(Ordering::SeqCst);

    let guard = holder.lock("job").acquire().await.unwrap();
    skip_unit(&mine).await;
    assert_eq!(skip_option(&mine).await, None);
    let sync = mine.clone();
    let skipped = tokio::task::spawn_blocking(move || skip_result_sync(&sync))
        .await
        .unwrap();
    assert!(matches!(skipped, Ok(None)));
    let started = Instant::now();
    match error_when_busy(&mine).await {
        Err(JobError::Lock(pals::Error::Timeout { name })) => {
            assert_eq!(name, format!("{app}.job"))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(50));
    let sync = mine.clone();
    let err = tokio::task::spawn_blocking(move || error_when_busy_sync(&sync))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(r#"Lock acquire failed for "{app}.job". Failed due to timeout."#)
    );
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        before,
        "a body ran while the lock was busy"
    );
    assert!(guard.release().await.unwrap());
}

// ----- the database failing is not "busy" -------------------------------------------------

#[pals::exclusive(name = "job", locker = locker)]
async fn error_mode_on_failure(locker: &Locker) -> Result<(), pals::Error> {
    unreachable!("the lock cannot be taken")
}

#[pals::exclusive(name = "job", on_busy = "skip", locker = locker)]
async fn skip_mode_result_on_failure(locker: &Locker) -> Result<Option<u32>, JobError> {
    unreachable!("the lock cannot be taken")
}

#[pals::exclusive(name = "job", on_busy = "skip", locker = locker)]
fn skip_mode_option_on_failure(locker: &Locker) -> Option<u32> {
    unreachable!("the lock cannot be taken")
}

#[tokio::test]
async fn a_failing_database_is_an_error_or_a_logged_skip() {
    let down = pals::Locker::new("down", &pals_tests::unreachable_url()).unwrap();
    assert!(matches!(
        error_mode_on_failure(&down).await,
        Err(pals::Error::Connect { .. })
    ));
    assert!(matches!(
        skip_mode_result_on_failure(&down).await,
        Err(JobError::Lock(pals::Error::Connect { .. }))
    ));
    // Option cannot carry the error: it is logged and the call skipped.
    assert_eq!(skip_mode_option_on_failure(&down), None);
}

// ----- mutual exclusion between lockers (replicas) ------------------------------------------

#[pals::exclusive(name = "counter", timeout = "30s", locker = locker)]
async fn critical_section(
    locker: &Locker,
    inside: &AtomicUsize,
    runs: &AtomicUsize,
) -> Result<(), pals::Error> {
    assert_eq!(
        inside.fetch_add(1, Ordering::SeqCst),
        0,
        "two bodies ran at once"
    );
    tokio::time::sleep(Duration::from_millis(1)).await; // the work done under the lock
    runs.fetch_add(1, Ordering::SeqCst);
    inside.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[pals::exclusive(name = "counter", timeout = "30s", locker = locker)]
fn critical_section_sync(
    locker: &Locker,
    inside: &AtomicUsize,
    runs: &AtomicUsize,
) -> Result<(), pals::Error> {
    assert_eq!(
        inside.fetch_add(1, Ordering::SeqCst),
        0,
        "two bodies ran at once"
    );
    std::thread::sleep(Duration::from_millis(1)); // the work done under the lock
    runs.fetch_add(1, Ordering::SeqCst);
    inside.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_lockers_never_run_the_body_concurrently() {
    let app = unique_app("race");
    let lockers = [locker(&app), locker(&app)];
    let (inside, runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let locker = lockers[task % 2].clone();
        let (inside, runs) = (inside.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                critical_section(&locker, &inside, &runs).await.unwrap();
            }
        }));
    }
    // Sync callers on plain threads race the async ones for the same lock.
    let threads: Vec<_> = (0..2)
        .map(|n| {
            let locker = lockers[n].clone();
            let (inside, runs) = (inside.clone(), runs.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    critical_section_sync(&locker, &inside, &runs).unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 100);
}

// ----- released on every way out ------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Exit {
    Normal,
    EarlyReturn,
    QuestionMark,
    Panic,
}

#[pals::exclusive(name = "exit", locker = locker)]
async fn leave_async(locker: &Locker, other: &Locker, exit: Exit) -> Result<u32, JobError> {
    assert!(is_held(other, "exit").await, "held while the body runs");
    match exit {
        Exit::Normal => {}
        Exit::EarlyReturn => return Ok(2),
        Exit::QuestionMark => Err(JobError::Failed)?,
        Exit::Panic => panic!("body panicked"),
    }
    Ok(1)
}

#[pals::exclusive(name = "exit", locker = locker)]
fn leave_sync(locker: &Locker, other: &Locker, exit: Exit) -> Result<u32, JobError> {
    let held = pals_tests::holders_of(other.app(), pals::key(other.app(), "exit"), true);
    assert_eq!(held, 1, "held while the body runs");
    match exit {
        Exit::Normal => {}
        Exit::EarlyReturn => return Ok(2),
        Exit::QuestionMark => Err(JobError::Failed)?,
        Exit::Panic => panic!("body panicked"),
    }
    Ok(1)
}

#[pals::exclusive(name = "exit", locker = locker)]
async fn never_finishes(locker: &Locker) -> Result<(), pals::Error> {
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_function_releases_on_every_way_out() {
    let app = unique_app("exit-async");
    let (mine, other) = (locker(&app), locker(&app));
    assert!(matches!(
        leave_async(&mine, &other, Exit::Normal).await,
        Ok(1)
    ));
    assert!(
        is_free(&mine, &other, "exit").await,
        "after a normal return"
    );
    assert!(matches!(
        leave_async(&mine, &other, Exit::EarlyReturn).await,
        Ok(2)
    ));
    assert!(
        is_free(&mine, &other, "exit").await,
        "after an early return"
    );
    assert!(matches!(
        leave_async(&mine, &other, Exit::QuestionMark).await,
        Err(JobError::Failed)
    ));
    assert!(is_free(&mine, &other, "exit").await, "after `?`");
    let (m, o) = (mine.clone(), other.clone());
    let panicked = tokio::spawn(async move { leave_async(&m, &o, Exit::Panic).await }).await;
    assert!(panicked.unwrap_err().is_panic());
    assert!(is_free_soon(&other, "exit").await, "after a panic");

    // Cancellation: the future is dropped mid-body.
    let timed_out = tokio::time::timeout(Duration::from_millis(200), async {
        let running = never_finishes(&mine);
        running.await
    })
    .await;
    assert!(timed_out.is_err());
    assert!(
        is_free_soon(&other, "exit").await,
        "after the future was dropped"
    );
    // select! drops the losing branch the same way.
    tokio::select! {
        _ = never_finishes(&mine) => unreachable!(),
        _ = async { while !is_held(&other, "exit").await { tokio::task::yield_now().await } } => {}
    }
    assert!(
        is_free_soon(&other, "exit").await,
        "after select! dropped it"
    );
}

#[test]
fn sync_function_releases_on_every_way_out_before_returning() {
    let app = unique_app("exit-sync");
    let (mine, other) = (locker(&app), locker(&app));
    let free_now = || other.lock("exit").blocking_try_acquire().unwrap().is_some();
    assert!(matches!(leave_sync(&mine, &other, Exit::Normal), Ok(1)));
    // A sync function releases before it returns: free at once, no waiting.
    assert!(free_now(), "after a normal return");
    assert!(matches!(
        leave_sync(&mine, &other, Exit::EarlyReturn),
        Ok(2)
    ));
    assert!(free_now(), "after an early return");
    assert!(matches!(
        leave_sync(&mine, &other, Exit::QuestionMark),
        Err(JobError::Failed)
    ));
    assert!(free_now(), "after `?`");
    let panicked = catch_unwind(AssertUnwindSafe(|| leave_sync(&mine, &other, Exit::Panic)));
    assert!(panicked.is_err());
    assert!(
        other
            .lock("exit")
            .blocking_acquire_timeout(HANDOFF)
            .unwrap()
            .is_some(),
        "after a panic"
    );
}

// ----- templated names ----------------------------------------------------------------------

#[pals::exclusive(name = "tenant-{tenant_id}", timeout = "0", on_busy = "skip", locker = locker)]
async fn per_tenant(locker: &Locker, tenant_id: u32, other: &Locker) -> Option<u32> {
    assert!(is_held(other, &format!("tenant-{tenant_id}")).await);
    let neighbour = tenant_id + 1;
    assert!(!is_held(other, &format!("tenant-{neighbour}")).await);
    Some(tenant_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_names_lock_per_argument_value() {
    let app = unique_app("tenant");
    let (mine, other) = (locker(&app), locker(&app));
    assert_eq!(per_tenant(&mine, 1, &other).await, Some(1));
    let tenant_7 = other.lock("tenant-7").acquire().await.unwrap();
    assert_eq!(per_tenant(&mine, 7, &other).await, None, "tenant 7 is busy");
    assert_eq!(
        per_tenant(&mine, 3, &other).await,
        Some(3),
        "tenant 3 is not"
    );
    assert!(tenant_7.release().await.unwrap());
}

// ----- shared readers, exclusive writer -----------------------------------------------------

#[pals::exclusive(name = "table", shared = true, timeout = "5s", locker = locker)]
async fn read(
    locker: &Locker,
    together: &tokio::sync::Barrier,
    other: &Locker,
) -> Result<bool, pals::Error> {
    // Both readers must be inside at once to pass the barrier.
    let met = tokio::time::timeout(Duration::from_secs(5), together.wait())
        .await
        .is_ok();
    // While they are, a writer is kept out.
    let writer_ran = write(other).await;
    together.wait().await;
    Ok(met && writer_ran.is_none())
}

#[pals::exclusive(name = "table", timeout = "0", on_busy = "skip", locker = locker)]
async fn write(locker: &Locker) -> Option<()> {
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_readers_run_together_while_a_writer_waits() {
    let app = unique_app("readers");
    let (a, b, w) = (locker(&app), locker(&app), locker(&app));
    let together = Arc::new(tokio::sync::Barrier::new(2));
    let readers: Vec<_> = [a, b]
        .into_iter()
        .map(|reader| {
            let (together, w) = (together.clone(), w.clone());
            tokio::spawn(async move { read(&reader, &together, &w).await })
        })
        .collect();
    for reader in readers {
        assert!(
            reader.await.unwrap().unwrap(),
            "readers did not run together, or the writer got in"
        );
    }
    assert_eq!(
        write(&w).await,
        Some(()),
        "the writer runs once the readers are done"
    );
}

// ----- min_hold -----------------------------------------------------------------------------

#[pals::exclusive(name = "short-job", min_hold = "400ms", locker = locker)]
async fn short_job(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "short-sync-job", min_hold = "400ms", locker = locker)]
fn short_sync_job(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_hold_keeps_the_lock_but_returns_at_once() {
    let app = unique_app("min-hold");
    let (mine, other) = (locker(&app), locker(&app));
    let called = Instant::now();
    short_job(&mine).await.unwrap();
    assert!(
        called.elapsed() < Duration::from_millis(300),
        "returned after {:?}",
        called.elapsed()
    );
    assert!(
        is_held(&other, "short-job").await,
        "released before min_hold"
    );
    let guard = other
        .lock("short-job")
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(guard.is_some());
    let held_for = called.elapsed();
    assert!(
        held_for >= Duration::from_millis(400),
        "free after {held_for:?}"
    );
    assert!(
        held_for < Duration::from_millis(400) + Duration::from_secs(1),
        "free after {held_for:?}"
    );

    let m = mine.clone();
    let called = Instant::now();
    tokio::task::spawn_blocking(move || short_sync_job(&m))
        .await
        .unwrap()
        .unwrap();
    assert!(called.elapsed() < Duration::from_millis(300));
    assert!(is_held(&other, "short-sync-job").await);
    assert!(other
        .lock("short-sync-job")
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .is_some());
    assert!(called.elapsed() >= Duration::from_millis(400));
}

// ----- nothing is acquired until the future is polled --------------------------------------

#[tokio::test]
async fn async_function_takes_the_lock_when_first_polled() {
    let app = unique_app("lazy");
    let (mine, other) = (locker(&app), locker(&app));
    let future = leave_async(&mine, &other, Exit::Normal);
    assert!(
        !is_held(&other, "exit").await,
        "taken before the first poll"
    );
    assert!(matches!(future.await, Ok(1)));
}

#[test]
fn annotated_async_functions_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let locker = pals::Locker::new("send", "postgresql://localhost/db").unwrap();
    let inside = AtomicUsize::new(0);
    assert_send(&critical_section(&locker, &inside, &inside));
    assert_send(&never_finishes(&locker));
}

// ----- timeouts: "0", the locker's default, "forever" ---------------------------------------

#[pals::exclusive(name = "wait", timeout = "0", locker = locker)]
fn wait_zero(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "wait", locker = locker)]
fn wait_default(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "wait", timeout = "forever", locker = locker)]
fn wait_forever(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

#[test]
fn timeouts_zero_default_and_forever() {
    let app = unique_app("timeouts");
    let mine = pals_tests::locker_with(&app, |b| b.default_timeout(Duration::from_millis(200)));
    let holder = locker(&app);
    let guard = holder.lock("wait").blocking_acquire().unwrap();

    // "0" tries once and never waits: the proxy sees one try and no wait.
    let proxy = Proxy::start(&db_host_port());
    let watched = pals_tests::locker_with(&app, |b| b.url(&plain_url_via(proxy.port())));
    assert!(wait_zero(&watched).unwrap_err().is_timeout());
    assert_eq!(
        proxy.count("pg_try_advisory_lock("),
        1,
        "{:?}",
        proxy.statements()
    );
    assert_eq!(
        proxy.count("pg_advisory_lock("),
        0,
        "{:?}",
        proxy.statements()
    );

    let started = Instant::now();
    assert!(wait_default(&mine).unwrap_err().is_timeout());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(1),
        "default waited {waited:?}"
    );

    // "forever" outwaits the locker's 200 ms default: the holder lets go after 500 ms.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500)); // the holder's work
        guard.blocking_release().unwrap()
    });
    let started = Instant::now();
    wait_forever(&mine).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(releaser.join().unwrap());
}

// ----- README promises: braces, Skippable, `locker =` as a call, not re-entrant ------------

#[pals::exclusive(name = "{{set}}-{id}-{{", timeout = "0", locker = locker)]
fn braces(locker: &Locker, id: u32, other: &Locker) -> Result<bool, pals::Error> {
    Ok(pals_tests::holders_of(other.app(), pals::key(other.app(), "{set}-7-{"), true) == 1)
}

#[test]
fn doubled_braces_are_literal_braces_in_the_lock_name() {
    let app = unique_app("braces");
    let (mine, other) = (locker(&app), locker(&app));
    assert!(
        braces(&mine, 7, &other).unwrap(),
        "the lock \"{{set}}-7-{{\" was not held while the body ran"
    );
}

/// A job's own outcome type, with its own skipped value.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ran(u32),
    NotMyTurn,
}

impl pals::Skippable for Outcome {
    fn skipped() -> Self {
        Outcome::NotMyTurn
    }
}

#[pals::exclusive(name = "outcome", timeout = "0", on_busy = "skip", locker = locker)]
async fn job_with_outcome(locker: &Locker) -> Outcome {
    Outcome::Ran(1)
}

#[tokio::test]
async fn a_user_type_gives_its_own_skipped_value() {
    let app = unique_app("skippable");
    let (mine, other) = (locker(&app), locker(&app));
    assert_eq!(job_with_outcome(&mine).await, Outcome::Ran(1));
    let busy = other.lock("outcome").acquire().await.unwrap();
    assert_eq!(job_with_outcome(&mine).await, Outcome::NotMyTurn);
    assert!(busy.release().await.unwrap());
}

/// The locker of a service, found by a function call.
fn locker_of(service: &Service) -> &Locker {
    &service.locker
}

struct Service {
    locker: Locker,
    other: Locker,
}

impl Service {
    fn locker(&self) -> &Locker {
        &self.locker
    }

    #[pals::exclusive(name = "method-call", locker = self.locker())]
    async fn by_method_call(&self) -> Result<bool, pals::Error> {
        Ok(is_held(&self.other, "method-call").await)
    }
}

#[pals::exclusive(name = "fn-call", locker = locker_of(service))]
async fn by_function_call(service: &Service) -> Result<bool, pals::Error> {
    Ok(is_held(&service.other, "fn-call").await)
}

#[tokio::test]
async fn the_locker_can_be_given_as_a_call() {
    let app = unique_app("locker-call");
    let service = Service {
        locker: locker(&app),
        other: locker(&app),
    };
    assert!(service.by_method_call().await.unwrap(), "a method call");
    assert!(by_function_call(&service).await.unwrap(), "a function call");
    assert!(is_free(&service.locker, &service.other, "method-call").await);
    assert!(is_free(&service.locker, &service.other, "fn-call").await);
}

#[pals::exclusive(name = "recursive", timeout = "300ms", locker = locker)]
fn recurse(locker: &Locker, depth: u32) -> Result<u32, pals::Error> {
    if depth == 0 {
        return Ok(0);
    }
    Ok(recurse(locker, depth - 1)? + 1)
}

#[pals::exclusive(name = "recursive", timeout = "300ms", locker = locker)]
fn same_name_elsewhere(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "recursive", timeout = "300ms", locker = locker)]
fn calls_same_name(locker: &Locker) -> Result<(), pals::Error> {
    same_name_elsewhere(locker)
}

#[test]
fn annotated_functions_are_not_re_entrant() {
    let app = unique_app("reentrant");
    let mine = locker(&app);
    assert_eq!(recurse(&mine, 0).unwrap(), 0, "no recursion: runs");
    let err = recurse(&mine, 1).unwrap_err();
    assert!(
        err.is_timeout(),
        "the inner call waits for its own lock: {err}"
    );
    let err = calls_same_name(&mine).unwrap_err();
    assert!(err.is_timeout(), "another function, same name: {err}");
    // And the outer call released on its way out.
    assert!(mine
        .lock("recursive")
        .blocking_try_acquire()
        .unwrap()
        .is_some());
}

// ----- min_hold holds on every way out ------------------------------------------------------

#[pals::exclusive(name = "min-hold-panic", min_hold = "400ms", locker = locker)]
fn min_hold_panics(locker: &Locker) -> Result<(), pals::Error> {
    panic!("the job failed");
}

#[pals::exclusive(name = "min-hold-cancel", min_hold = "400ms", locker = locker)]
async fn min_hold_never_finishes(
    locker: &Locker,
    started: &tokio::sync::Notify,
) -> Result<(), pals::Error> {
    started.notify_one();
    std::future::pending::<()>().await;
    Ok(())
}

/// The lock `name` stays held until `min_hold` after `since`, then frees.
async fn held_until_min_hold(other: &Locker, name: &str, since: Instant) {
    const MIN_HOLD: Duration = Duration::from_millis(400);
    assert!(is_held(other, name).await, "{name}: released at once");
    let guard = other
        .lock(name)
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(guard.is_some(), "{name}: never released");
    let free_after = since.elapsed();
    assert!(free_after >= MIN_HOLD, "{name}: free after {free_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_hold_holds_after_a_panic_and_a_cancellation() {
    let app = unique_app("min-hold-ways");
    let (mine, other) = (locker(&app), locker(&app));
    // Connections open first: the 400 ms hold must not be spent connecting.
    assert!(is_free(&mine, &other, "warm-up").await);

    let m = mine.clone();
    let called = Instant::now();
    let panicked = tokio::task::spawn_blocking(move || min_hold_panics(&m)).await;
    assert!(panicked.unwrap_err().is_panic());
    held_until_min_hold(&other, "min-hold-panic", called).await;

    let started = tokio::sync::Notify::new();
    let called = Instant::now();
    tokio::select! {
        _ = min_hold_never_finishes(&mine, &started) => unreachable!(),
        _ = started.notified() => {} // the body runs: drop it there
    }
    held_until_min_hold(&other, "min-hold-cancel", called).await;
}
