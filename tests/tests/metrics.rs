//! The `metrics` feature against a real server: a known sequence of calls, and the exact
//! figures a recorder got for it (counters, histogram samples, the held-locks gauge), their
//! labels (`lock` only where the locker opted in), units and descriptions.
//!
//! Its own test binary: it installs metrics-util's `DebuggingRecorder` as the process's
//! global recorder, before any pals call. Each test reads only the figures of its own app.

use std::collections::{BTreeSet, HashMap};
use std::future::{poll_fn, Future};
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pals::Locker;
use pals_tests::{application_name, eventually, locker, locker_with, probe_i64, unique_app};

const ACQUIRED: &str = "pals_acquired_total";
const BUSY: &str = "pals_busy_total";
const SKIPPED: &str = "pals_skipped_total";
const ERRORS: &str = "pals_errors_total";
const LOST: &str = "pals_lost_total";
const WAIT: &str = "pals_wait_seconds";
const HOLD: &str = "pals_hold_seconds";
const HELD: &str = "pals_held_locks";

/// Label pairs, sorted by key.
type Labels = Vec<(String, String)>;

/// One series: a counter's count, a gauge's net change, a histogram's samples.
#[derive(Clone, Debug, Default)]
struct Series {
    count: u64,
    gauge: f64,
    samples: Vec<f64>,
}

/// Everything recorded in this process so far. A snapshot empties the recorder (counters and
/// gauges back to 0, histograms cleared), and the tests of this binary share it: every
/// snapshot is folded in here, so that no test loses what another one's snapshot took.
struct Recorded {
    snapshotter: Snapshotter,
    folded: Mutex<Folded>,
}

#[derive(Default)]
struct Folded {
    series: HashMap<(String, Labels), Series>,
    /// Per name: the unit (`"count"`, `"seconds"`) and the description.
    described: HashMap<String, (Option<String>, Option<String>)>,
}

/// The recorder, installed as the global one on the first call: call it first in each test.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the first recorder of this process");
        Recorded {
            snapshotter,
            folded: Mutex::default(),
        }
    })
}

impl Recorded {
    /// The figures of `app` recorded so far.
    fn of(&self, app: &str) -> Figures {
        let mut folded = self.folded.lock().unwrap();
        for (key, unit, description, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let name = key.name().to_string();
            let mut labels: Labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            let unit = unit.map(|u| u.as_str().to_string());
            let description = description.map(|d| d.to_string());
            folded.described.insert(name.clone(), (unit, description));
            let series = folded.series.entry((name, labels)).or_default();
            match value {
                DebugValue::Counter(n) => series.count += n,
                DebugValue::Gauge(change) => series.gauge += change.into_inner(),
                DebugValue::Histogram(samples) => series
                    .samples
                    .extend(samples.into_iter().map(|s| s.into_inner())),
            }
        }
        let app_label = ("app".to_string(), app.to_string());
        Figures {
            series: folded
                .series
                .iter()
                .filter(|((_, labels), _)| labels.contains(&app_label))
                .map(|((name, labels), series)| (name.clone(), labels.clone(), series.clone()))
                .collect(),
            described: folded.described.clone(),
        }
    }
}

/// One app's figures.
struct Figures {
    series: Vec<(String, Labels, Series)>,
    described: HashMap<String, (Option<String>, Option<String>)>,
}

impl Figures {
    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Series> + 'a {
        self.series
            .iter()
            .filter(move |(n, _, _)| n == name)
            .map(|(_, _, s)| s)
    }

    fn count(&self, name: &str) -> u64 {
        self.named(name).map(|s| s.count).sum()
    }

    fn gauge(&self, name: &str) -> f64 {
        self.named(name).map(|s| s.gauge).sum()
    }

    fn samples(&self, name: &str) -> Vec<f64> {
        self.named(name)
            .flat_map(|s| s.samples.iter().copied())
            .collect()
    }

    /// The label sets `name` was recorded with.
    fn labels(&self, name: &str) -> BTreeSet<Labels> {
        self.series
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, labels, _)| labels.clone())
            .collect()
    }

    /// Every label key of every series.
    fn label_keys(&self) -> BTreeSet<String> {
        self.series
            .iter()
            .flat_map(|(_, labels, _)| labels.iter().map(|(k, _)| k.clone()))
            .collect()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeSet<Labels> {
    let mut labels: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    BTreeSet::from([labels])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_holds_and_releases_are_counted() {
    let recorded = recorded();
    let app = unique_app("metrics");
    let locker = locker(&app);

    for _ in 0..3 {
        let guard = locker.lock("a").acquire().await.unwrap();
        assert!(guard.release().await.unwrap());
    }
    let figures = recorded.of(&app);
    assert_eq!(figures.count(ACQUIRED), 3);
    assert_eq!(figures.samples(WAIT).len(), 3);
    assert_eq!(figures.samples(HOLD).len(), 3);
    assert_eq!(figures.gauge(HELD), 0.0);
    for name in [BUSY, SKIPPED, ERRORS, LOST] {
        assert_eq!(figures.count(name), 0, "{name}");
    }
    let app_and_kind = labels(&[("app", &app), ("kind", "lock")]);
    for name in [ACQUIRED, WAIT, HOLD, HELD] {
        assert_eq!(figures.labels(name), app_and_kind, "{name}");
    }

    // Held: the gauge shows it.
    let held = locker.lock("b").acquire().await.unwrap();
    assert_eq!(recorded.of(&app).gauge(HELD), 1.0);

    // Busy: a try behind the holder in this process, and a wait on another pool that the
    // database turns down when its timeout ends.
    assert!(locker.lock("b").try_acquire().await.unwrap().is_none());
    let other = pals_tests::locker(&app);
    let timeout = Duration::from_millis(50);
    assert!(other
        .lock("b")
        .acquire_timeout(timeout)
        .await
        .unwrap()
        .is_none());
    let figures = recorded.of(&app);
    assert_eq!(figures.count(BUSY), 2);
    assert_eq!(figures.labels(BUSY), app_and_kind);
    assert_eq!(figures.count(ACQUIRED), 4);
    let waits = figures.samples(WAIT);
    assert_eq!(
        waits.len(),
        6,
        "3 acquires, then 1 more and 2 busy: {waits:?}"
    );
    assert!(
        waits.iter().any(|&w| w >= timeout.as_secs_f64()),
        "the busy wait lasted its timeout: {waits:?}"
    );
    assert_eq!(figures.gauge(HELD), 1.0);
    assert_eq!(figures.samples(HOLD).len(), 3, "b is still held");

    // Dropped: released in the background, counted once that release is done.
    drop(held);
    locker.wait_for_releases().await;
    let figures = recorded.of(&app);
    let holds = figures.samples(HOLD);
    assert_eq!(holds.len(), 4);
    assert!(
        holds.iter().any(|&h| h >= timeout.as_secs_f64()),
        "b was held through the busy wait: {holds:?}"
    );
    assert_eq!(figures.gauge(HELD), 0.0);

    // Kept until a time: counted when that time has come and the release is done.
    let guard = locker.lock("c").acquire().await.unwrap();
    let until = Instant::now() + Duration::from_millis(30);
    guard.release_at(until);
    assert_eq!(recorded.of(&app).gauge(HELD), 1.0, "held until {until:?}");
    locker.wait_for_releases().await;
    let figures = recorded.of(&app);
    assert_eq!(figures.count(ACQUIRED), 5);
    let holds = figures.samples(HOLD);
    assert_eq!(holds.len(), 5);
    assert_eq!(figures.gauge(HELD), 0.0);

    // A release whose future is dropped mid-way (after sending the unlock, before its
    // answer) ends the hold too; the session settles the unlock in the background. (One
    // poll rarely sees the answer of a local server: then it is a plain release; tried
    // again until a poll leaves it pending.)
    let mut tries = 0;
    let cut = loop {
        tries += 1;
        let guard = locker.lock("d").acquire().await.unwrap();
        let mut release = Box::pin(guard.release());
        let pending = poll_fn(|cx| Poll::Ready(release.as_mut().poll(cx).is_pending())).await;
        drop(release);
        if pending || tries == 20 {
            break pending;
        }
    };
    assert!(
        cut,
        "no release was pending after one poll in {tries} tries"
    );
    let figures = recorded.of(&app);
    assert_eq!(figures.count(ACQUIRED), 5 + tries);
    assert_eq!(figures.samples(HOLD).len(), 5 + tries as usize);
    assert_eq!(figures.gauge(HELD), 0.0);

    // Not opted in: no series of this app names a lock.
    assert_eq!(
        figures.label_keys(),
        BTreeSet::from(["app".to_string(), "kind".to_string()])
    );
    assert_eq!(figures.count(BUSY), 2);
    for name in [SKIPPED, ERRORS, LOST] {
        assert_eq!(figures.count(name), 0, "{name}");
    }

    // Units and help reach the recorder.
    for (name, unit) in [
        (ACQUIRED, "count"),
        (BUSY, "count"),
        (WAIT, "seconds"),
        (HOLD, "seconds"),
        (HELD, "count"),
    ] {
        let (recorded_unit, help) = &figures.described[name];
        assert_eq!(recorded_unit.as_deref(), Some(unit), "{name}");
        assert!(
            help.as_deref().is_some_and(|h| h.starts_with("pals: ")),
            "{name}: {help:?}"
        );
    }
}

#[pals::exclusive(name = "job", timeout = "0", on_busy = "skip", locker = locker)]
async fn skip_async(locker: &Locker) -> Option<u32> {
    Some(1)
}

#[pals::exclusive(name = "job", timeout = "0", on_busy = "skip", locker = locker)]
fn skip_sync(locker: &Locker) -> Option<u32> {
    Some(1)
}

#[pals::exclusive(name = "job", timeout = "0", locker = locker)]
async fn error_when_busy(locker: &Locker) -> Result<u32, pals::Error> {
    Ok(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_call_is_counted_once() {
    let recorded = recorded();
    let app = unique_app("metrics-skip");
    let locker = locker(&app);
    let sync = |locker: &Locker| {
        let locker = locker.clone();
        tokio::task::spawn_blocking(move || skip_sync(&locker))
    };

    // Free: the bodies run.
    assert_eq!(skip_async(&locker).await, Some(1));
    assert_eq!(sync(&locker).await.unwrap(), Some(1));
    let figures = recorded.of(&app);
    assert_eq!(figures.count(ACQUIRED), 2);
    assert_eq!(figures.count(SKIPPED), 0);

    // Busy: skipped, async and sync, once each; an error is no skip.
    let holder = locker.lock("job").acquire().await.unwrap();
    assert_eq!(skip_async(&locker).await, None);
    assert_eq!(sync(&locker).await.unwrap(), None);
    assert!(matches!(
        error_when_busy(&locker).await,
        Err(pals::Error::Timeout { .. })
    ));
    assert!(holder.release().await.unwrap());

    let figures = recorded.of(&app);
    assert_eq!(figures.count(SKIPPED), 2);
    assert_eq!(figures.labels(SKIPPED), labels(&[("app", &app)]));
    assert_eq!(figures.count(BUSY), 3);
    assert_eq!(figures.count(ACQUIRED), 3);
    assert_eq!(figures.samples(HOLD).len(), 3);
    assert_eq!(figures.gauge(HELD), 0.0);
    assert_eq!(figures.count(ERRORS), 0);
    let (unit, help) = &figures.described[SKIPPED];
    assert_eq!(unit.as_deref(), Some("count"));
    assert!(help.is_some());
}

#[pals::exclusive(name = "job", timeout = "0", on_busy = "skip", locker = locker)]
async fn skip_on_failure(locker: &Locker) -> Option<u32> {
    Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_acquires_are_errors_not_busy_nor_skips() {
    let recorded = recorded();
    let app = unique_app("metrics-error");
    let unreachable = Locker::builder(&app)
        .url(&pals_tests::unreachable_url())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    let error = unreachable.lock("x").acquire().await.unwrap_err();
    assert!(matches!(error, pals::Error::Connect { .. }), "{error:?}");
    // The attribute logs an unreachable database and skips: an error, not a skip.
    assert_eq!(skip_on_failure(&unreachable).await, None);
    // A lock without a name fails before any connection.
    let error = unreachable.lock("").try_acquire().await.unwrap_err();
    assert!(matches!(error, pals::Error::InvalidConfig(_)), "{error:?}");

    let figures = recorded.of(&app);
    assert_eq!(figures.count(ERRORS), 3);
    assert_eq!(
        figures.labels(ERRORS),
        labels(&[("app", &app), ("kind", "lock")])
    );
    for name in [ACQUIRED, BUSY, SKIPPED, LOST] {
        assert_eq!(figures.count(name), 0, "{name}");
    }
    assert!(figures.samples(WAIT).is_empty());
    assert!(figures.labels(HELD).is_empty());
    let (unit, help) = &figures.described[ERRORS];
    assert_eq!(unit.as_deref(), Some("count"));
    assert!(help.is_some());
}

fn backend_of(app: &str) -> i64 {
    probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_is_counted_with_its_name_where_names_are_opted_in() {
    let recorded = recorded();
    let app = unique_app("metrics-lost");
    // No heartbeat: the loss is found by the socket closing.
    let locker = locker_with(&app, |b| b.heartbeat(None).metric_lock_names(true));
    let name = format!("{app}.leader");
    let guard = locker.lock("leader").acquire().await.unwrap();
    assert!(locker.lock("leader").try_acquire().await.unwrap().is_none());

    let pid = backend_of(&app);
    // With a timeout, pg_terminate_backend waits until the backend is gone.
    assert_eq!(
        probe_i64(&format!("SELECT pg_terminate_backend({pid}, 5000)::int")),
        1
    );
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the loss is seen");
    // The session's watcher counts it, woken by the same end as the guard.
    let counted = || recorded.of(&app).count(LOST) > 0;
    assert!(eventually(Duration::from_secs(5), counted));
    assert!(!guard.release().await.unwrap(), "it was lost");

    let figures = recorded.of(&app);
    assert_eq!(figures.count(LOST), 1);
    assert_eq!(
        figures.labels(LOST),
        labels(&[("app", &app), ("lock", &name)])
    );
    let named = labels(&[("app", &app), ("kind", "lock"), ("lock", &name)]);
    for name in [ACQUIRED, BUSY, WAIT, HOLD, HELD] {
        assert_eq!(figures.labels(name), named, "{name}");
    }
    assert_eq!(figures.count(ACQUIRED), 1);
    assert_eq!(figures.count(BUSY), 1);
    assert_eq!(figures.samples(WAIT).len(), 2);
    assert_eq!(
        figures.samples(HOLD).len(),
        1,
        "the lost guard's hold ended"
    );
    assert_eq!(figures.gauge(HELD), 0.0);
    let (unit, help) = &figures.described[LOST];
    assert_eq!(unit.as_deref(), Some("count"));
    assert!(help.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphores_and_elections_are_counted_as_their_kind() {
    let recorded = recorded();
    let app = unique_app("metrics-kinds");
    let locker = locker(&app);
    let exports = locker.semaphore("export", 3);
    let mut permits = Vec::new();
    for _ in 0..3 {
        permits.push(exports.acquire().await.unwrap());
    }
    // A try of a full semaphore tries 3 permits: one busy, not three.
    assert!(exports.try_acquire().await.unwrap().is_none());
    let figures = recorded.of(&app);
    let semaphore = labels(&[("app", &app), ("kind", "semaphore")]);
    assert_eq!(figures.labels(ACQUIRED), semaphore);
    assert_eq!(figures.count(ACQUIRED), 3);
    assert_eq!(figures.count(BUSY), 1);
    assert_eq!(figures.gauge(HELD), 3.0);
    for permit in permits {
        assert!(permit.release().await.unwrap());
    }
    let figures = recorded.of(&app);
    assert_eq!(figures.gauge(HELD), 0.0);
    assert_eq!(figures.samples(HOLD).len(), 3);

    let election = locker.election("leader");
    election.run(|_term| async {}).await.unwrap();
    let figures = recorded.of(&app);
    let kinds: BTreeSet<String> = figures
        .labels(ACQUIRED)
        .iter()
        .flat_map(|labels| {
            labels
                .iter()
                .filter(|(k, _)| k == "kind")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["election".into(), "semaphore".into()])
    );
    assert_eq!(figures.count(ACQUIRED), 4);
    assert_eq!(figures.gauge(HELD), 0.0);
}
