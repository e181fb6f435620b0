//! `#[pals::exclusive]` on functions that return nothing (they skip a busy lock by default,
//! logged at debug level), `pals::Outcome` (a skip told apart from the body's own `None`),
//! inner attributes kept in the body, a crate that has pals under another name
//! (`crate = ...`), and an expansion that is clean under `clippy::pedantic` and
//! `clippy::nursery`: the module `pedantic` below denies both, and CI runs clippy on all
//! targets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use pals::{Locker, Outcome};
use pals_tests::events::Recorder;
use pals_tests::{locker, unique_app};

static APP: LazyLock<String> = LazyLock::new(|| unique_app("unit"));
static LOCKER: LazyLock<Locker> = LazyLock::new(|| locker(&APP));
static OTHER: LazyLock<Locker> = LazyLock::new(|| locker(&APP));

/// Whether another session sees `name` held right now.
fn held(name: &str) -> bool {
    OTHER.lock(name).blocking_try_acquire().unwrap().is_none()
}

/// Every annotated form, in a module that denies clippy's pedantic and nursery lints: a
/// lint that the generated code trips fails `cargo clippy --all-targets -- -D warnings`.
mod pedantic {
    #![deny(clippy::pedantic, clippy::nursery)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use pals::{Locker, Outcome};

    use super::held;

    pub static RUNS: AtomicU32 = AtomicU32::new(0);
    pub static CANCEL_RUNS: AtomicU32 = AtomicU32::new(0);

    /// The defaults on a function that returns nothing: a busy lock skips it.
    #[pals::exclusive(name = "unit-sync", timeout = "0", locker = locker)]
    pub fn unit_sync(locker: &Locker) {
        assert!(held("unit-sync"));
        RUNS.fetch_add(1, Ordering::SeqCst);
    }

    #[pals::exclusive(name = "unit-async", timeout = "0", locker = locker)]
    pub async fn unit_async(locker: &Locker) {
        assert!(held("unit-async"));
        RUNS.fetch_add(1, Ordering::SeqCst);
    }

    #[pals::exclusive(name = "unit-skip", timeout = "0", on_busy = "skip", locker = locker)]
    pub fn unit_explicit_skip(locker: &Locker) {
        RUNS.fetch_add(1, Ordering::SeqCst);
    }

    /// Never called: the global locker is not configured in this test binary.
    #[pals::exclusive]
    pub fn global_default() {}

    #[pals::exclusive]
    pub async fn global_default_async() {}

    #[pals::exclusive(name = "result-{id}", locker = locker)]
    pub fn result_sync(locker: &Locker, id: u32) -> Result<bool, pals::Error> {
        Ok(held(&format!("result-{id}")))
    }

    #[pals::exclusive(name = "option", timeout = "0", on_busy = "skip", locker = locker)]
    pub async fn option_async(locker: &Locker) -> Option<bool> {
        Some(held("option"))
    }

    #[pals::exclusive(name = "outcome", timeout = "0", on_busy = "skip", locker = locker)]
    pub async fn outcome_async(locker: &Locker, value: Option<u32>) -> Outcome<Option<u32>> {
        assert!(held("outcome"));
        Outcome::Ran(value)
    }

    #[pals::exclusive(name = "outcome-sync", timeout = "0", on_busy = "skip", locker = locker)]
    pub fn outcome_in_result(locker: &Locker) -> Result<Outcome<bool>, pals::Error> {
        Ok(Outcome::Ran(held("outcome-sync")))
    }

    #[pals::exclusive(name = "cancel", on_lost = "cancel", locker = locker)]
    pub async fn cancel_on_lost(locker: &Locker) -> Result<bool, pals::Error> {
        Ok(held("cancel"))
    }

    #[pals::exclusive(name = "cancel-skip", on_lost = "cancel", on_busy = "skip", locker = locker)]
    pub async fn cancel_on_lost_unit(locker: &Locker) {
        CANCEL_RUNS.fetch_add(1, Ordering::SeqCst);
    }

    #[pals::exclusive(name = "shared", shared = true, min_hold = "1ms", locker = locker)]
    pub fn shared_min_hold(locker: &Locker) -> Result<bool, pals::Error> {
        Ok(held("shared"))
    }

    #[pals::exclusive(name = "generic-{value}", timeout = "forever", locker = locker)]
    pub fn generic<T: std::fmt::Display + Send>(
        locker: &Locker,
        value: T,
    ) -> Result<bool, pals::Error> {
        Ok(held(&format!("generic-{value}")))
    }

    #[pals::exclusive(name = "opaque", locker = locker)]
    pub async fn opaque(locker: &Locker) -> Result<impl std::fmt::Display, pals::Error> {
        Ok(held("opaque"))
    }

    #[pals::exclusive(name = "inner", locker = locker)]
    pub fn inner_attribute(locker: &Locker) -> Result<bool, pals::Error> {
        #![allow(clippy::items_after_statements)]
        let held = held("inner");
        const ANSWER: u32 = 42;
        Ok(held && ANSWER == 42)
    }

    #[pals::exclusive(name = "once-sync", once_per = "24h", locker = locker)]
    pub fn once_sync(locker: &Locker, fail: bool) -> Result<Option<bool>, String> {
        if fail {
            return Err("failed".into());
        }
        Ok(Some(held("once-sync")))
    }

    #[pals::exclusive(name = "once-async", once_per = "24h", offset = "1h", fenced = true, locker = locker)]
    pub async fn once_async(locker: &Locker) -> Option<bool> {
        Some(held("once-async") && pals::current_fence().is_some())
    }

    pub struct Service {
        pub locker: Locker,
        pub runs: u32,
    }

    impl Service {
        #[pals::exclusive(name = "by-ref", locker = &self.locker)]
        pub async fn by_ref(&self) -> Result<bool, pals::Error> {
            Ok(held("by-ref"))
        }

        #[pals::exclusive(name = "by-mut", locker = &self.locker)]
        pub fn by_mut(&mut self) {
            assert!(held("by-mut"));
            self.runs += 1;
        }

        #[pals::exclusive(name = "by-value", locker = &self.locker)]
        pub async fn by_value(self) -> Result<u32, pals::Error> {
            assert!(held("by-value"));
            Ok(self.runs)
        }
    }
}

/// `-> ()` written out is a unit return too (outside `pedantic`: clippy's `unused_unit`).
#[allow(clippy::unused_unit)]
#[pals::exclusive(name = "unit-written", timeout = "0", locker = locker)]
fn unit_written(locker: &Locker) -> () {
    pedantic::RUNS.fetch_add(1, Ordering::SeqCst);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn functions_that_return_nothing_run_when_free_and_skip_when_busy() {
    let rt = runtime();
    let runs = || pedantic::RUNS.load(Ordering::SeqCst);
    let start = runs();
    pedantic::unit_sync(&LOCKER);
    rt.block_on(pedantic::unit_async(&LOCKER));
    pedantic::unit_explicit_skip(&LOCKER);
    unit_written(&LOCKER);
    assert_eq!(runs(), start + 4, "a free lock did not run every body");

    let names = ["unit-sync", "unit-async", "unit-skip", "unit-written"];
    let guards: Vec<_> = names
        .iter()
        .map(|name| OTHER.lock(name).blocking_acquire().unwrap())
        .collect();
    let skips = [
        ("unit-sync", "exclusive_unit::pedantic::unit_sync"),
        ("unit-async", "exclusive_unit::pedantic::unit_async"),
        ("unit-skip", "exclusive_unit::pedantic::unit_explicit_skip"),
        ("unit-written", "exclusive_unit::unit_written"),
    ];
    let skip_logged = |recorder: &Recorder, (name, function): (&str, &str)| {
        let lines = recorder.lines("DEBUG", &format!("{}.{name}", *APP));
        let function = format!("function=\"{function}\"");
        lines
            .iter()
            .any(|l| l.contains("skipping") && l.contains(&function))
    };
    // tracing caches, per log statement, whether any subscriber wants it, and that cache
    // races: another test thread of this binary that registers the skip's log statement
    // (with no subscriber) as this recorder is registered can store "nobody" after the
    // recorder's rebuild of the cache (seen under load, a few runs in a hundred). A rebuild
    // after that registration ends is right, so a call whose skip went unheard is made
    // again, after one; the bodies must stay skipped every time.
    let mut recorder = Recorder::default();
    for _attempt in 0..3 {
        recorder = Recorder::default();
        tracing::subscriber::with_default(recorder.clone(), || {
            tracing::callsite::rebuild_interest_cache();
            pedantic::unit_sync(&LOCKER);
            rt.block_on(pedantic::unit_async(&LOCKER));
            pedantic::unit_explicit_skip(&LOCKER);
            unit_written(&LOCKER);
        });
        assert_eq!(runs(), start + 4, "a body ran while its lock was busy");
        if skips.iter().all(|&skip| skip_logged(&recorder, skip)) {
            break;
        }
    }
    // Each skip is logged at debug level, with the lock and the function.
    for (name, function) in skips {
        assert!(
            skip_logged(&recorder, (name, function)),
            "no debug line for the skip of {function}: {:?}",
            recorder.lines("DEBUG", &format!("{}.{name}", *APP))
        );
    }
    drop(guards);
}

#[test]
fn outcome_tells_a_skip_from_the_bodys_own_none() {
    let rt = runtime();
    assert_eq!(
        rt.block_on(pedantic::outcome_async(&LOCKER, None)),
        Outcome::Ran(None)
    );
    assert_eq!(
        rt.block_on(pedantic::outcome_async(&LOCKER, Some(3))).ran(),
        Some(Some(3))
    );
    assert!(matches!(
        pedantic::outcome_in_result(&LOCKER),
        Ok(Outcome::Ran(true))
    ));
    let busy = OTHER.lock("outcome").blocking_acquire().unwrap();
    let skipped = rt.block_on(pedantic::outcome_async(&LOCKER, None));
    assert!(skipped.is_skipped(), "{skipped:?}");
    assert_eq!(skipped.ran(), None);
    let busy_too = OTHER.lock("outcome-sync").blocking_acquire().unwrap();
    assert!(matches!(
        pedantic::outcome_in_result(&LOCKER),
        Ok(Outcome::Skipped)
    ));
    drop((busy, busy_too));
}

#[test]
fn every_form_of_the_pedantic_module_runs_under_its_lock() {
    let rt = runtime();
    assert!(pedantic::result_sync(&LOCKER, 7).unwrap());
    assert_eq!(rt.block_on(pedantic::option_async(&LOCKER)), Some(true));
    assert!(rt.block_on(pedantic::cancel_on_lost(&LOCKER)).unwrap());
    rt.block_on(pedantic::cancel_on_lost_unit(&LOCKER));
    assert!(pedantic::shared_min_hold(&LOCKER).unwrap());
    assert!(pedantic::generic(&LOCKER, "x").unwrap());
    assert_eq!(
        rt.block_on(pedantic::opaque(&LOCKER)).unwrap().to_string(),
        "true"
    );
    assert!(pedantic::inner_attribute(&LOCKER).unwrap());
    // A tick that straddles a day's edge at 12:00 UTC (or 13:00) runs twice: allow it.
    let once = pedantic::once_sync(&LOCKER, false);
    assert!(matches!(once, Ok(Some(true))), "{once:?}");
    let again = pedantic::once_sync(&LOCKER, true);
    assert!(matches!(again, Ok(None) | Err(_)), "{again:?}");
    assert_eq!(rt.block_on(pedantic::once_async(&LOCKER)), Some(true));
    let mut service = pedantic::Service {
        locker: LOCKER.clone(),
        runs: 0,
    };
    assert!(rt.block_on(service.by_ref()).unwrap());
    service.by_mut();
    assert_eq!(rt.block_on(service.by_value()).unwrap(), 1);
    assert_eq!(pedantic::CANCEL_RUNS.load(Ordering::SeqCst), 1);
    // Typed, not called: the global locker is not configured here.
    let _: fn() = pedantic::global_default;
    drop(pedantic::global_default_async());
}

#[test]
fn a_crate_with_pals_under_another_name_uses_that_name() {
    let rt = runtime();
    assert!(pals_renamed_dependency::sync_job(&LOCKER, &OTHER).unwrap());
    assert!(rt
        .block_on(pals_renamed_dependency::async_job(&LOCKER, "t", &OTHER))
        .unwrap());
    let ran = AtomicBool::new(false);
    pals_renamed_dependency::unit_job(&LOCKER, &ran);
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(
        rt.block_on(pals_renamed_dependency::outcome_job(&LOCKER)),
        Outcome::Ran(())
    );
    let busy = OTHER.lock("renamed-unit").blocking_acquire().unwrap();
    let ran = AtomicBool::new(false);
    pals_renamed_dependency::unit_job(&LOCKER, &ran);
    assert!(!ran.load(Ordering::SeqCst), "ran while busy");
    assert_eq!(
        rt.block_on(pals_renamed_dependency::outcome_job(&LOCKER)),
        Outcome::Skipped
    );
    drop(busy);
}
