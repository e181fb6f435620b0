//! A `tracing` subscriber for tests: it records every event as `LEVEL field=value ...`
//! (and prints it too, if asked), so that a test can check what pals logged, and at which
//! level.

use std::sync::{Arc, Mutex};

/// Records events; clones share the record.
#[derive(Clone, Default)]
pub struct Recorder {
    lines: Arc<Mutex<Vec<String>>>,
    print: bool,
}

impl Recorder {
    /// The process's recorder, installed as the global default subscriber on first use (a
    /// scoped one races with tracing's per-callsite cache when another test thread logs
    /// from the same line).
    pub fn global() -> &'static Recorder {
        static RECORDER: std::sync::OnceLock<Recorder> = std::sync::OnceLock::new();
        RECORDER.get_or_init(|| {
            let recorder = Recorder::default();
            tracing::subscriber::set_global_default(recorder.clone()).expect("no other subscriber");
            recorder
        })
    }

    /// A recorder that also prints each event to stdout (for a child process whose output
    /// a test reads).
    pub fn printing() -> Recorder {
        Recorder {
            print: true,
            ..Recorder::default()
        }
    }

    /// The events recorded so far at `level` (`"ERROR"`, `"DEBUG"`, ...) that mention
    /// `text`.
    pub fn lines(&self, level: &str, text: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.starts_with(level) && l.contains(text))
            .cloned()
            .collect()
    }
}

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
        if self.print {
            println!("{line}");
        }
        self.lines.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
