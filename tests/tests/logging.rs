//! What pals logs at error level: a failure that `#[pals::exclusive(on_busy = "skip")]`
//! cannot return, a lock lost while its guard lives, and a lock lost under
//! `on_lost = "continue"` (the default), whose body runs on.
//!
//! In a test binary of its own, with one recorder installed for the whole process: the loss
//! is logged on pals' own runtime thread, which a thread-local subscriber would not see, and
//! tracing caches per process whether each call site is enabled.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pals::Locker;
use pals_tests::{application_name, locker, probe_i64, unique_app};

/// Records every event of the process as `LEVEL field=value ...`.
struct Recorder(Mutex<Vec<String>>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields<'a>(&'a mut String);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let mut line = format!("{} ", event.metadata().level());
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The process's recorder, installed on first use.
fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<&'static Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder: &'static Recorder = Box::leak(Box::new(Recorder(Mutex::new(Vec::new()))));
        tracing::subscriber::set_global_default(Forward(recorder)).expect("no other subscriber");
        recorder
    })
}

/// The error-level lines recorded so far that mention `text`.
fn errors_about(text: &str) -> Vec<String> {
    recorder()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.starts_with("ERROR") && line.contains(text))
        .cloned()
        .collect()
}

/// The global subscriber must be owned; this one forwards to the leaked recorder.
struct Forward(&'static Recorder);

impl tracing::Subscriber for Forward {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.0.new_span(span)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.0.record(span, values)
    }
    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        self.0.record_follows_from(span, follows)
    }
    fn event(&self, event: &tracing::Event<'_>) {
        self.0.event(event)
    }
    fn enter(&self, span: &tracing::span::Id) {
        self.0.enter(span)
    }
    fn exit(&self, span: &tracing::span::Id) {
        self.0.exit(span)
    }
}

/// Ends the server session of `app`'s only session, and returns once it is gone.
fn terminate_session_of(app: &str) {
    let pid = probe_i64(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    ));
    assert_eq!(
        probe_i64(&format!("SELECT pg_terminate_backend({pid}, 5000)::int")),
        1
    );
}

#[pals::exclusive(name = "job", on_busy = "skip", locker = locker)]
fn skip_mode_option_on_failure(locker: &Locker) -> Option<u32> {
    unreachable!("the lock cannot be taken")
}

#[test]
fn a_failure_that_the_return_type_cannot_carry_is_logged() {
    recorder();
    let app = unique_app("down");
    let down = pals::Locker::new(&app, &pals_tests::unreachable_url()).unwrap();
    assert_eq!(skip_mode_option_on_failure(&down), None);
    let lines = errors_about("skipping");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("skipping") && l.contains("cannot connect")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_is_logged_at_error_level_as_it_is_found() {
    recorder();
    let app = unique_app("lost-log");
    let holder = pals_tests::locker_with(&app, |b| b.heartbeat(None));
    let guard = holder.lock("leader").acquire().await.unwrap();
    terminate_session_of(&app);
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the loss was not noticed");
    // Logged with the lock's name while the guard still lives: nobody had to release it.
    let lines = errors_about(&format!("{app}.leader"));
    assert!(lines.iter().any(|l| l.contains("lost")), "{lines:?}");
    drop(guard);
}

#[pals::exclusive(name = "job", locker = locker)]
fn job_that_loses_its_lock(locker: &Locker, other: &Locker) -> Result<&'static str, pals::Error> {
    terminate_session_of(locker.app());
    // The lock is free for others now; the body runs on to the end (on_lost = "continue").
    let taken = other
        .lock("job")
        .blocking_acquire_timeout(Duration::from_secs(5))?;
    assert!(
        taken.is_some(),
        "the lost lock was not free for another holder"
    );
    Ok("finished")
}

#[test]
fn on_lost_continue_runs_the_body_on_and_logs_the_loss_at_error_level() {
    recorder();
    let app = unique_app("continue");
    let (mine, other) = (locker(&app), locker_for_same_lock(&app));
    assert_eq!(job_that_loses_its_lock(&mine, &other).unwrap(), "finished");
    let lines = errors_about(&format!("{app}.job"));
    // Its end says so: the lock was found gone at release (or the release found the
    // session closed, if pals had not yet seen it end).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no longer held") || l.contains("releasing the lock failed")),
        "the function's end does not say the lock was lost: {lines:?}"
    );
}

/// A second locker of `app`, on sessions of an app name of its own (so that terminating
/// the sessions of `app` leaves it alone), taking the same locks.
fn locker_for_same_lock(app: &str) -> Locker {
    let url = pals_tests::db_url_with(
        None,
        None,
        None,
        &format!("application_name={}", unique_app("other-sessions")),
    );
    pals_tests::locker_with(app, |b| b.url(&url))
}
