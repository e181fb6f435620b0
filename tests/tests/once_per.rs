//! `once_per`: each tick of a job runs once across replicas (lockers of one app), its runs
//! are written down with how they ended, and a busy skip does not wait. The multi-process
//! ticking tests are in `once_per_fleet.rs`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pals::inspect::{RunOutcome, RunRecord};
use pals::{Locker, Outcome};
use pals_tests::{eventually, holders_of, locker, probe_query, unique_app};

/// A period long enough that a test never crosses a tick.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The offset that puts now in the middle of a tick of `period`: the tick's edges are half
/// a period away, whatever the time of day the test runs.
fn centred(period: Duration) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Duration::from_millis((now.as_millis() % period.as_millis()) as u64)
}

/// The job `name` of `locker` on a day's period, now in the middle of its tick.
fn daily(locker: &Locker, name: &str) -> pals::OncePer {
    locker.lock(name).once_per(DAY).offset(centred(DAY))
}

/// Holds the runs table of `schema` as a DBA would (`LOCK TABLE`); the function returned
/// gives the DBA's lock back once a statement of `app` whose text contains `statement`
/// waits for it on the server.
fn hold_runs_table(
    schema: &pals_tests::TestSchema,
    app: &str,
    statement: &str,
) -> impl FnOnce() -> pals_tests::DbaLock {
    let table = schema.object("pals_runs");
    let dba = pals_tests::DbaLock::hold(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"));
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
         AND wait_event_type = 'Lock' AND query LIKE '%{statement}%'",
        pals_tests::application_name(app)
    );
    let statement = statement.to_string();
    move || {
        let waits = || pals_tests::probe_i64(&waiting) == 1;
        assert!(
            eventually(Duration::from_secs(10), waits),
            "{statement} never waited"
        );
        dba
    }
}

/// The runs of `name`, newest first.
async fn runs(locker: &Locker, name: &str) -> Vec<RunRecord> {
    locker.runs(name, 100).await.expect("runs")
}

#[tokio::test]
async fn a_tick_runs_once_and_a_replica_that_starts_later_skips_it() {
    let app = unique_app("once-later");
    let (first, later) = (locker(&app), locker(&app));
    let offset = centred(DAY);
    let job = |l: &Locker| l.lock("report").once_per(DAY).offset(offset);
    let ran = job(&first).run(async { Ok::<_, String>(1) }).await.unwrap();
    assert!(matches!(ran, Outcome::Ran(Ok(1))), "{ran:?}");
    // A replica that starts later (a new process, a new locker) finds the tick run.
    let again = job(&later).run(async { Ok::<_, String>(2) }).await.unwrap();
    assert!(again.is_skipped(), "{again:?}");
    let history = runs(&later, "report").await;
    assert_eq!(history.len(), 1, "{history:?}");
    let run = &history[0];
    assert_eq!(run.outcome, RunOutcome::Succeeded);
    assert_eq!(run.name, format!("{app}.report"));
    assert_eq!(run.replica, pals_tests::application_name(&app));
    assert_eq!(run.period, DAY);
    let ended = run.ended.expect("ended");
    assert!(run.started <= ended);
    // The tick is the multiple of the period (plus the offset) nearest the call.
    let tick = run.tick.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(tick % DAY.as_millis(), offset.as_millis());
}

/// Calls made one after the other within moments ran once: one run, or two if the calls
/// straddled a tick's edge, their ticks one `period` apart; and as many runs in the
/// history as calls that ran.
fn each_tick_ran_once(history: &[RunRecord], ran: usize, period: Duration) {
    assert_eq!(history.len(), ran, "{history:?}");
    match history {
        [_] => {}
        [newer, older] => assert_eq!(newer.tick.duration_since(older.tick).unwrap(), period),
        _ => panic!("{ran} runs of calls made within moments: {history:?}"),
    }
}

#[tokio::test]
async fn the_attribute_runs_each_tick_once() {
    let app = unique_app("once-attr");
    let (a, b) = (locker(&app), locker(&app));
    #[pals::exclusive(name = "hourly", once_per = "1h", locker = locker)]
    async fn hourly(locker: &Locker) -> Option<&'static str> {
        Some("ran")
    }
    let results = [hourly(&a).await, hourly(&b).await, hourly(&a).await];
    let ran = results.iter().filter(|r| r.is_some()).count();
    assert!(ran >= 1, "{results:?}");
    each_tick_ran_once(&runs(&b, "hourly").await, ran, Duration::from_secs(3600));
}

#[test]
fn a_sync_job_writes_its_error_and_is_not_retried_in_its_tick() {
    let app = unique_app("once-error");
    let locker = locker(&app);
    #[pals::exclusive(name = "sync-error", once_per = "24h", locker = locker)]
    fn fails(locker: &Locker, calls: &mut u32) -> Result<(), std::io::Error> {
        *calls += 1;
        std::fs::read("/nonexistent/pals-once-per")?; // a `?` returns from the body
        Ok(())
    }
    let mut calls = 0;
    let results = [fails(&locker, &mut calls), fails(&locker, &mut calls)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = rt.block_on(runs(&locker, "sync-error"));
    each_tick_ran_once(&history, calls as usize, DAY);
    assert!(results[0].is_err());
    if calls == 1 {
        assert!(results[1].is_ok(), "skipped: Ok(())");
    }
    assert_eq!(history[0].outcome, RunOutcome::Failed, "{history:?}");
    let detail = history[0].detail.as_deref().unwrap();
    assert!(detail.contains("No such file"), "{detail}");
}

#[tokio::test]
async fn a_panic_is_written_down_with_its_message_and_goes_on() {
    let app = unique_app("once-panic");
    let locker = locker(&app);
    #[pals::exclusive(name = "panics", once_per = "24h", locker = &locker)]
    async fn panics(locker: Locker) -> Result<(), pals::Error> {
        panic!("the report template is missing");
    }
    let task = tokio::spawn(panics(locker.clone()));
    let panic = task.await.unwrap_err().into_panic();
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"the report template is missing")
    );
    // Written down before the panic went on.
    let history = runs(&locker, "panics").await;
    assert_eq!(history[0].outcome, RunOutcome::Panicked);
    assert_eq!(
        history[0].detail.as_deref(),
        Some("the report template is missing")
    );
}

#[test]
fn a_sync_panic_is_written_down_too() {
    let app = unique_app("once-sync-panic");
    let locker = locker(&app);
    #[pals::exclusive(name = "panics", once_per = "24h", locker = locker)]
    fn panics(locker: &Locker, what: &str) {
        panic!("sync: {what}");
    }
    let call = std::panic::AssertUnwindSafe(|| panics(&locker, "boom"));
    let panic = std::panic::catch_unwind(call).unwrap_err();
    assert_eq!(panic.downcast_ref::<String>().unwrap(), "sync: boom");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = rt.block_on(runs(&locker, "panics"));
    assert_eq!(history[0].outcome, RunOutcome::Panicked);
    assert_eq!(history[0].detail.as_deref(), Some("sync: boom"));
}

/// Ends the session that holds `key` (as a server restart or a DBA would), from outside.
fn terminate_holder(key: i64) {
    let ended = probe_query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND granted AND ((classid::bigint << 32) | objid::bigint) = {key}"
    ))
    .unwrap();
    assert_eq!(ended.len(), 1, "one holder");
}

#[tokio::test]
async fn a_lost_lock_is_written_down_as_lost_with_how_the_body_ended() {
    let app = unique_app("once-lost");
    let locker = locker(&app);
    let job = daily(&locker, "lost");
    let run = job.claim().await.unwrap().expect("claimed");
    terminate_holder(job.lock().key());
    run.lost().await;
    assert!(!run.is_held());
    assert_eq!(run.succeeded().await.unwrap(), RunOutcome::Lost);
    let history = runs(&locker, "lost").await;
    assert_eq!(history[0].outcome, RunOutcome::Lost);
    let detail = history[0].detail.as_deref().unwrap();
    assert!(detail.ends_with("the body then succeeded"), "{detail}");
    // The tick is not run again, even so.
    assert!(job.claim().await.unwrap().is_none());
}

#[tokio::test]
async fn a_cancelled_run_is_written_down_once_dropped() {
    let app = unique_app("once-cancel");
    let locker = locker(&app);
    #[pals::exclusive(name = "slow", once_per = "24h", locker = &locker)]
    async fn slow(locker: Locker, started: tokio::sync::oneshot::Sender<()>) {
        let _ = started.send(());
        std::future::pending::<()>().await;
    }
    let (started, has_started) = tokio::sync::oneshot::channel();
    let call = tokio::spawn(slow(locker.clone(), started));
    has_started.await.unwrap();
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    locker.wait_for_releases().await; // the end is written down before the release
    let history = runs(&locker, "slow").await;
    assert_eq!(history[0].outcome, RunOutcome::Cancelled, "{history:?}");
    assert!(history[0].ended.is_some());
}

#[tokio::test]
async fn a_run_whose_replica_vanished_reads_so() {
    let app = unique_app("once-vanished");
    let locker = locker(&app);
    let job = daily(&locker, "vanishes");
    let run = job.claim().await.unwrap().expect("claimed");
    assert_eq!(
        runs(&locker, "vanishes").await[0].outcome,
        RunOutcome::Running
    );
    // A process killed mid-run writes nothing: its run is left as it was, and its session
    // ends. (Forgotten here: nothing is written; the session is ended from outside.)
    std::mem::forget(run);
    terminate_holder(job.lock().key());
    // Read once the server has ended the session (pg_terminate_backend only signals it).
    let key = job.lock().key();
    assert!(eventually(Duration::from_secs(10), || holders_of(
        &app, key, true
    ) == 0));
    let history = runs(&locker, "vanishes").await;
    assert_eq!(history[0].outcome, RunOutcome::Vanished, "{history:?}");
    assert_eq!(history[0].ended, None);
}

#[tokio::test]
async fn a_busy_skip_without_a_timeout_returns_at_once() {
    let app = unique_app("once-busy");
    // A locker whose default timeout is long: a skip that waited would show.
    let long = |b: pals::LockerBuilder| b.default_timeout(Duration::from_secs(30));
    let (holder, caller) = (
        pals_tests::locker_with(&app, long),
        pals_tests::locker_with(&app, long),
    );
    let held = holder.lock("busy").acquire().await.unwrap();

    #[pals::exclusive(name = "busy", locker = locker)]
    async fn unit_job(locker: &Locker) {
        unreachable!("the lock is held");
    }
    #[pals::exclusive(name = "busy", once_per = "24h", locker = locker)]
    async fn scheduled(locker: &Locker) -> Option<()> {
        Some(())
    }
    #[pals::exclusive(name = "busy", on_busy = "skip", timeout = "300ms", locker = locker)]
    async fn waits(locker: &Locker) -> Option<()> {
        Some(())
    }
    let started = Instant::now();
    unit_job(&caller).await;
    assert_eq!(scheduled(&caller).await, None);
    let at_once = started.elapsed();
    assert!(at_once < Duration::from_secs(5), "{at_once:?}");
    let started = Instant::now();
    assert_eq!(waits(&caller).await, None);
    assert!(started.elapsed() >= Duration::from_millis(300));
    held.release().await.unwrap();
    assert!(runs(&caller, "busy").await.is_empty());
}

#[tokio::test]
async fn the_history_keeps_the_last_runs() {
    let app = unique_app("once-kept");
    let locker = pals_tests::locker_with(&app, |b| b.runs_kept(3));
    // A 1 ms period: each claim is its own tick (or, within one millisecond, a skip).
    let job = locker.lock("often").once_per(Duration::from_millis(1));
    let mut ran = 0;
    while ran < 5 {
        if let Some(run) = job.claim().await.unwrap() {
            run.succeeded().await.unwrap();
            ran += 1;
        }
    }
    let history = runs(&locker, "often").await;
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history.windows(2).all(|w| w[0].tick > w[1].tick),
        "newest first"
    );
    assert_eq!(locker.runs("often", 2).await.unwrap().len(), 2);
    assert!(locker.runs("never-ran", 5).await.unwrap().is_empty());
}

#[tokio::test]
async fn mistakes_are_configuration_errors() {
    let app = unique_app("once-mistakes");
    let shared = locker(&app).lock("job").shared().once_per(DAY);
    let error = shared.claim().await.unwrap_err();
    assert!(
        error.is_misconfiguration() && error.to_string().contains("exclusive"),
        "{error}"
    );
    let zero = locker(&app).lock("job").once_per(Duration::ZERO);
    assert!(zero.claim().await.unwrap_err().is_misconfiguration());
    let missing = pals_tests::locker_with(&app, |b| b.schema("pals_no_such_schema"));
    let error = missing.lock("job").once_per(DAY).claim().await.unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
}

#[tokio::test]
async fn a_role_without_create_is_given_the_sql_and_an_unlogged_table_is_refused() {
    let schema = pals_tests::TestSchema::new("once-role");
    let role = format!("{}_r", schema.name());
    probe_query(&format!(
        "CREATE ROLE \"{role}\" LOGIN; GRANT USAGE ON SCHEMA \"{}\" TO \"{role}\"",
        schema.name()
    ))
    .unwrap();
    let url = pals_tests::db_url().replacen("postgres@", &format!("{role}@"), 1);
    let app = unique_app("once-role");
    let locker = pals_tests::locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let job = daily(&locker, "job");
    let error = job.claim().await.unwrap_err();
    let message = error.to_string();
    assert!(
        error.is_misconfiguration() && message.contains("once_per jobs"),
        "{message}"
    );
    let sql = message
        .split_once("ask an admin to run once: ")
        .map(|(_, sql)| sql)
        .expect("the SQL to run");
    // The lock is free: nothing is left held for nobody.
    assert!(locker.lock("job").try_acquire().await.unwrap().is_some());
    // An admin makes the table unlogged (its runs would vanish in a crash): refused, with
    // the statement that mends it. (Each locker checks its objects once: a new one checks.)
    let unlogged = sql.replacen("CREATE TABLE", "CREATE UNLOGGED TABLE", 1);
    probe_query(&unlogged).unwrap();
    let locker = pals_tests::locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let job = daily(&locker, "job");
    let message = job.claim().await.unwrap_err().to_string();
    let mend = message
        .split_once("ask an admin to run: ")
        .map(|(_, sql)| sql)
        .expect("the statement that mends it");
    assert!(mend.starts_with("ALTER TABLE"), "{message}");
    probe_query(mend).unwrap();
    let locker = pals_tests::locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let job = daily(&locker, "job");
    let run = job
        .claim()
        .await
        .unwrap()
        .expect("claimed once the admin ran the SQL");
    assert_eq!(run.succeeded().await.unwrap(), RunOutcome::Succeeded);
    drop(locker);
    let _ = probe_query(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""));
}

#[tokio::test]
async fn a_run_cancelled_by_a_lost_lock_is_written_down_as_lost() {
    let app = unique_app("once-lost-cancel");
    let locker = locker(&app);
    #[pals::exclusive(name = "long", once_per = "24h", on_lost = "cancel", locker = &locker)]
    async fn long(locker: Locker, started: tokio::sync::oneshot::Sender<()>) -> Option<()> {
        let _ = started.send(());
        std::future::pending().await
    }
    let (started, has_started) = tokio::sync::oneshot::channel();
    let call = tokio::spawn(long(locker.clone(), started));
    has_started.await.unwrap();
    terminate_holder(locker.lock("long").key());
    assert_eq!(call.await.unwrap(), None, "cancelled: the skipped value");
    locker.wait_for_releases().await;
    let history = runs(&locker, "long").await;
    assert_eq!(history[0].outcome, RunOutcome::Lost, "{history:?}");
    let detail = history[0].detail.as_deref().unwrap();
    assert!(detail.ends_with("the body then cancelled"), "{detail}");
}

#[tokio::test]
async fn a_tick_older_than_the_newest_run_is_not_claimed() {
    let app = unique_app("once-older");
    let locker = locker(&app);
    let job = daily(&locker, "job");
    job.claim()
        .await
        .unwrap()
        .expect("made")
        .succeeded()
        .await
        .unwrap();
    // A later tick ran meanwhile (as when this call waited for the lock while it did, and
    // its own tick's row was pruned since): the call's tick is not run late.
    let key = job.lock().key();
    probe_query(&format!(
        "UPDATE pals_runs SET tick = tick + interval '1 day' WHERE key = {key}"
    ))
    .unwrap();
    assert!(job.claim().await.unwrap().is_none());
    assert_eq!(runs(&locker, "job").await.len(), 1);
}

// Multi-thread: the claim runs on a worker while this thread waits for the server to show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_it_claims_is_written_down_as_cancelled() {
    let schema = pals_tests::TestSchema::new("once-dropped");
    let app = unique_app("once-dropped");
    let locker = pals_tests::locker_with(&app, |b| b.schema(schema.name()));
    // The table is made (and known to this locker) by another job's run.
    let warm = daily(&locker, "warm");
    warm.claim()
        .await
        .unwrap()
        .expect("made")
        .succeeded()
        .await
        .unwrap();
    // A DBA holds the table: the claim's insert waits.
    let waited_on = hold_runs_table(&schema, &app, "claimed AS");
    let job = daily(&locker, "job");
    let claim = tokio::spawn(async move { job.claim().await.map(|run| run.is_some()) });
    let dba = waited_on();
    claim.abort(); // the caller's future is dropped mid-claim
    assert!(claim.await.unwrap_err().is_cancelled());
    drop(dba);
    locker.wait_for_releases().await; // the end, then the lock
    let history = runs(&locker, "job").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].outcome, RunOutcome::Cancelled, "{history:?}");
    assert!(history[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("dropped while it claimed"));
    assert!(locker.lock("job").try_acquire().await.unwrap().is_some());
}

// Multi-thread: the end is written on a worker while this thread waits for the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_dropped_while_it_is_written_is_written_before_the_lock_goes() {
    let schema = pals_tests::TestSchema::new("once-end-dropped");
    let app = unique_app("once-end-dropped");
    let locker = pals_tests::locker_with(&app, |b| b.schema(schema.name()));
    let job = daily(&locker, "job");
    let run = job.claim().await.unwrap().expect("claimed");
    // A DBA holds the table: the end's update waits.
    let waited_on = hold_runs_table(&schema, &app, "UPDATE");
    let end = tokio::spawn(run.failed("disk full"));
    let dba = waited_on();
    end.abort(); // the caller's future is dropped while the end is written
    assert!(end.await.unwrap_err().is_cancelled());
    // The lock is still held: the end has not been written yet.
    let key = locker.lock("job").key();
    assert_eq!(holders_of(&app, key, true), 1);
    drop(dba);
    locker.wait_for_releases().await; // the end, then the lock
    let history = runs(&locker, "job").await;
    assert_eq!(history[0].outcome, RunOutcome::Failed, "{history:?}");
    assert_eq!(history[0].detail.as_deref(), Some("disk full"));
    assert!(locker.lock("job").try_acquire().await.unwrap().is_some());
}
