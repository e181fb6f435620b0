//! A failure that `#[pals::exclusive(on_busy = "skip")]` cannot return is logged.
//!
//! In a test binary of its own: tracing caches, per process, whether each log call site is
//! enabled. A test elsewhere that reaches the same call site with no subscriber, at the
//! moment this one installs its recorder, can leave the site cached as disabled.

use std::sync::Arc;

use pals::Locker;

#[pals::exclusive(name = "job", on_busy = "skip", locker = locker)]
fn skip_mode_option_on_failure(locker: &Locker) -> Option<u32> {
    unreachable!("the lock cannot be taken")
}

/// Records the messages of the events it sees.
struct Recorder(std::sync::Mutex<Vec<String>>);

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
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let mut line = format!("{} ", event.metadata().level());
        event.record(&mut Message(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_failure_that_the_return_type_cannot_carry_is_logged() {
    let down = pals::Locker::new("down", &pals_tests::unreachable_url()).unwrap();
    let recorder = Arc::new(Recorder(std::sync::Mutex::new(Vec::new())));
    let skipped =
        tracing::subscriber::with_default(recorder.clone(), || skip_mode_option_on_failure(&down));
    assert_eq!(skipped, None);
    let lines = recorder.0.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("ERROR")
            && l.contains("skipping")
            && l.contains("cannot connect")),
        "{lines:?}"
    );
}
