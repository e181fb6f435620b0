//! Never two holders: a crashed holder's lock is free in milliseconds, and a live holder
//! learns at once when its lock is gone. Against the shared server; nothing here disturbs
//! other tests' sessions (the restart test has a cluster of its own: `restart.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals::Locker;
use pals_tests::proxy::{db_host_port, url_via, Proxy};
use pals_tests::{
    application_name, db_url, eventually, holders_of, locker, locker_with, probe_i64, probe_query,
    unique_app,
};

fn backend_of(app: &str) -> i64 {
    probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    ))
}

fn terminate(pid: i64) {
    // With a timeout, pg_terminate_backend waits until the backend is gone.
    assert_eq!(
        probe_i64(&format!("SELECT pg_terminate_backend({pid}, 5000)::int")),
        1
    );
}

#[test]
fn a_killed_holders_lock_is_free_in_milliseconds() {
    let app = unique_app("crash");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pals_hold"))
        .args([db_url().as_str(), app.as_str(), "job"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start pals_hold");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held", "the child did not take the lock");

    // A standby replica already waits in the database when the holder dies.
    let standby = locker(&app);
    let key = standby.lock("job").key();
    let waiting = std::thread::spawn(move || {
        let got = standby
            .lock("job")
            .blocking_acquire_timeout(Duration::from_secs(10))
            .unwrap();
        (Instant::now(), got.is_some())
    });
    assert!(eventually(Duration::from_secs(5), || holders_of(
        &app, key, false
    ) == 1));

    let killed_at = Instant::now();
    child.kill().unwrap(); // SIGKILL: no cleanup runs in the child
    child.wait().unwrap();
    let (acquired_at, acquired) = waiting.join().unwrap();
    let failover = acquired_at.duration_since(killed_at);
    println!("crash failover: SIGKILL to acquire in another process: {failover:?}");
    assert!(acquired, "the standby never got the lock");
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_is_reported_lost_at_once() {
    let app = unique_app("terminate");
    // No heartbeat: the loss can only be found by the connection seeing its socket close.
    let holder = locker_with(&app, |b| b.heartbeat(None));
    let guard = holder.lock("leader").acquire().await.unwrap();
    assert!(guard.is_held());
    let lost = guard.lost();
    let pid = backend_of(&app);

    terminate(pid); // returns once the backend is gone
    let terminated_at = Instant::now();
    // "At once": the socket closes with the backend. The bound leaves room for a loaded
    // machine's scheduling, and none for a timer or a poll.
    let bound = Duration::from_millis(100);
    assert!(
        tokio::time::timeout(bound, lost).await.is_ok(),
        "lost() did not complete within {bound:?} of the backend ending"
    );
    let noticed = terminated_at.elapsed();
    println!("backend terminated to lost(): {noticed:?}");
    assert!(!guard.is_held());
    // The lock really is free: another replica takes it.
    let other = locker(&unique_app("terminate-other"));
    let taken = other.lock_key(guard.key()).try_acquire().await.unwrap();
    assert!(taken.is_some());
    // Releasing the lost guard says so (`Ok(false)`), without going to the server.
    let released = tokio::time::timeout(Duration::from_millis(100), guard.release()).await;
    assert!(
        matches!(released, Ok(Ok(false))),
        "release of a lost lock: {released:?}"
    );
}

#[pals::exclusive(name = "leader", on_lost = "cancel", locker = locker)]
async fn lead(
    locker: &Locker,
    started: &tokio::sync::Notify,
    steps: &AtomicUsize,
) -> Result<(), pals::Error> {
    started.notify_one();
    loop {
        steps.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await; // a step of the singleton's work
    }
}

#[pals::exclusive(name = "leader", on_lost = "cancel", on_busy = "skip", locker = locker)]
async fn lead_or_skip(locker: &Locker, started: &tokio::sync::Notify) -> Option<u32> {
    started.notify_one();
    std::future::pending::<()>().await;
    Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_lost_cancel_stops_the_body() {
    let app = unique_app("on-lost");
    let leader = locker(&app);
    let (started, steps) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(AtomicUsize::new(0)),
    );
    let running = {
        let (leader, started, steps) = (leader.clone(), started.clone(), steps.clone());
        tokio::spawn(async move { lead(&leader, &started, &steps).await })
    };
    started.notified().await;
    terminate(backend_of(&app));
    let outcome = tokio::time::timeout(Duration::from_secs(2), running)
        .await
        .expect("the body kept running");
    match outcome.unwrap() {
        Err(pals::Error::LockLost { name }) => assert_eq!(name, format!("{app}.leader")),
        other => panic!("expected LockLost, got {other:?}"),
    }
    // (The body loops for ever: that the function returned at all means it was dropped.)
    assert!(steps.load(Ordering::SeqCst) > 0, "the body never ran");

    // With on_busy = "skip", a lost lock returns the skipped value.
    let running = {
        let (leader, started) = (leader.clone(), started.clone());
        tokio::spawn(async move { lead_or_skip(&leader, &started).await })
    };
    started.notified().await;
    terminate(backend_of(&app));
    let outcome = tokio::time::timeout(Duration::from_secs(2), running)
        .await
        .expect("the body kept running");
    assert_eq!(outcome.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_network_is_noticed_within_the_heartbeat_bounds() {
    let app = unique_app("blackhole");
    let proxy = Proxy::start(&db_host_port());
    let heartbeat = Duration::from_millis(200);
    let connect_timeout = Duration::from_secs(1);
    let holder = pals::Locker::builder(&app)
        .url(&url_via(proxy.port()))
        .heartbeat(Some(heartbeat))
        .connect_timeout(connect_timeout)
        .build()
        .unwrap();
    let guard = holder.lock("leader").acquire().await.unwrap();
    let lost = guard.lost();

    proxy.black_hole();
    let cut_at = Instant::now();
    // Found by the next heartbeat that goes unanswered: within two intervals.
    let bound = 2 * heartbeat + Duration::from_millis(500);
    assert!(
        tokio::time::timeout(bound, lost).await.is_ok(),
        "loss not noticed within {bound:?}"
    );
    println!("network black-hole to lost(): {:?}", cut_at.elapsed());
    assert!(!guard.is_held());

    // Nothing hangs: the release and a new acquire end within their bounds.
    let started = Instant::now();
    assert!(!matches!(guard.release().await, Ok(true)));
    let err = holder.lock("other").acquire().await.unwrap_err();
    assert!(matches!(err, pals::Error::Connect { .. }), "{err}");
    assert!(
        started.elapsed() < 2 * connect_timeout + Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // The server still holds the black-holed session's lock (it cannot know better) until
    // the connection really closes; then another replica gets it.
    let key = pals::key(&app, "leader");
    let other = locker(&unique_app("blackhole-other"));
    assert!(other.lock_key(key).try_acquire().await.unwrap().is_none());
    drop(proxy);
    assert!(other
        .lock_key(key)
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .is_some());
}

#[test]
fn processes_racing_for_one_lock_never_overlap() {
    const PROCESSES: usize = 4;
    const TASKS: usize = 8;
    const SECTIONS: usize = 200;
    const _: () = assert!(SECTIONS.is_multiple_of(PROCESSES));
    let app = unique_app("load");
    let dir = pals_tests::TempDir::new("load");
    let counter = dir.path().join("counter");
    let children: Vec<_> = (0..PROCESSES)
        .map(|n| {
            let log = dir.path().join(format!("log-{n}"));
            let sections = SECTIONS / PROCESSES; // 50 each; the constants divide evenly
            let child = Command::new(env!("CARGO_BIN_EXE_pals_contend"))
                .arg(db_url())
                .arg(&app)
                .arg(sections.to_string())
                .arg(TASKS.to_string())
                .arg(&counter)
                .arg(&log)
                .spawn()
                .expect("start pals_contend");
            (child, log)
        })
        .collect();
    let mut sections = Vec::new();
    for (mut child, log) in children {
        assert!(
            child.wait().unwrap().success(),
            "a contending process failed"
        );
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let (start, end) = line.split_once(' ').unwrap();
            sections.push((start.parse::<u128>().unwrap(), end.parse::<u128>().unwrap()));
        }
    }
    // No lost update: every unsafe read-sleep-write increment ran alone.
    let count: usize = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, SECTIONS);
    // And no two sections overlapped in time.
    assert_eq!(sections.len(), SECTIONS);
    sections.sort();
    for pair in sections.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "sections overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test]
async fn an_idle_session_killer_on_the_role_does_not_lose_a_lock_silently() {
    let app = unique_app("idle-role");
    let role = format!("pals_idle_{}", std::process::id());
    probe_query(&format!("DROP ROLE IF EXISTS {role}")).unwrap();
    probe_query(&format!("CREATE ROLE {role} LOGIN")).unwrap();
    probe_query(&format!(
        "ALTER ROLE {role} SET idle_session_timeout = '200ms'"
    ))
    .unwrap();
    let url = pals_tests::db_url_with(None, None, Some(&role), "");
    let holder = locker_with(&app, |b| b.url(&url));
    let guard = holder.lock("x").acquire().await.unwrap();
    // The behaviour under test is a time: stay idle well past the role's limit.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let other = locker(&unique_app("idle-role-other"));
    let free = other
        .lock_key(guard.key())
        .try_acquire()
        .await
        .unwrap()
        .is_some();
    // Either it survived, and says so, or it is gone, and says so; never gone silently.
    assert_eq!(
        free,
        !guard.is_held(),
        "the lock's state and the guard disagree"
    );
    assert!(!free, "pals sessions should survive the idle killer");
    assert!(guard.release().await.unwrap());
    drop((holder, other));
    let _ = probe_query(&format!("DROP ROLE IF EXISTS {role}"));
}
