//! `#[pals::exclusive]` on every kind of function: methods (`&self`, `&mut self`, `self`),
//! generics, `impl Trait` returns, and beside other attributes, in either order.

use std::fmt::Display;
use std::sync::LazyLock;

use pals::Locker;
use pals_tests::{locker, unique_app};

static APP: LazyLock<String> = LazyLock::new(|| unique_app("forms"));
static LOCKER: LazyLock<Locker> = LazyLock::new(|| locker(&APP));
static OTHER: LazyLock<Locker> = LazyLock::new(|| locker(&APP));

/// Whether another session sees `name` held right now.
fn held(name: &str) -> bool {
    OTHER.lock(name).blocking_try_acquire().unwrap().is_none()
}

struct Service {
    locker: Locker,
    runs: u32,
}

impl Service {
    /// Doc comments and other attributes are kept.
    #[must_use]
    #[pals::exclusive(name = "by-ref", locker = &self.locker)]
    fn by_ref(&self) -> Result<bool, pals::Error> {
        Ok(held("by-ref"))
    }

    #[pals::exclusive(name = "by-mut", locker = &self.locker)]
    fn by_mut(&mut self) -> Result<(u32, bool), pals::Error> {
        self.runs += 1;
        Ok((self.runs, held("by-mut")))
    }

    #[pals::exclusive(name = "by-value", locker = &self.locker)]
    fn by_value(self) -> Result<(u32, bool), pals::Error> {
        Ok((self.runs, held("by-value")))
    }

    #[pals::exclusive(name = "async-by-ref", locker = &self.locker)]
    async fn async_by_ref(&self) -> Result<(&str, bool), pals::Error> {
        Ok((self.locker.app(), held("async-by-ref")))
    }

    #[pals::exclusive(name = "async-by-mut", locker = &self.locker)]
    pub async fn async_by_mut(&mut self, add: u32) -> Result<(u32, bool), pals::Error> {
        self.runs += add;
        Ok((self.runs, held("async-by-mut")))
    }
}

#[pals::exclusive(name = "generic-{value}", locker = &LOCKER)]
fn generic<T>(value: T) -> Result<(String, bool), pals::Error>
where
    T: Display + Send,
{
    Ok((format!("{value}"), held(&format!("generic-{value}"))))
}

#[pals::exclusive(name = "opaque", locker = &LOCKER)]
fn opaque_iter(limit: u32) -> Result<impl Iterator<Item = (u32, bool)>, pals::Error> {
    let held = held("opaque");
    Ok((0..limit).filter(|n| n % 2 == 0).map(move |n| (n, held)))
}

#[pals::exclusive(name = "opaque-async", locker = &LOCKER)]
async fn opaque_async() -> Result<impl Display, pals::Error> {
    Ok(format!("42 held: {}", held("opaque-async")))
}

#[pals::exclusive(locker = &LOCKER)]
fn default_name() -> Result<bool, pals::Error> {
    Ok(held(concat!(module_path!(), "::default_name")))
}

#[tracing::instrument(skip_all)]
#[pals::exclusive(name = "instrumented-outer", locker = &LOCKER)]
async fn instrumented_outer() -> Result<bool, pals::Error> {
    Ok(held("instrumented-outer"))
}

#[pals::exclusive(name = "instrumented-inner", locker = &LOCKER)]
#[tracing::instrument(skip_all)]
fn instrumented_inner() -> Result<bool, pals::Error> {
    Ok(held("instrumented-inner"))
}

#[test]
fn methods_keep_their_receivers() {
    let mut service = Service {
        locker: LOCKER.clone(),
        runs: 0,
    };
    assert!(service.by_ref().unwrap());
    assert_eq!(service.by_mut().unwrap(), (1, true));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(service.async_by_ref()).unwrap(),
        (APP.as_str(), true)
    );
    assert_eq!(rt.block_on(service.async_by_mut(2)).unwrap(), (3, true));
    assert_eq!(service.by_value().unwrap(), (3, true));
    for name in [
        "by-ref",
        "by-mut",
        "by-value",
        "async-by-ref",
        "async-by-mut",
    ] {
        assert!(!held(name), "{name} still held after return");
    }
}

#[test]
fn generics_and_impl_trait_returns() {
    assert_eq!(generic(5u8).unwrap(), ("5".to_string(), true));
    assert_eq!(generic("x").unwrap(), ("x".to_string(), true));
    assert_eq!(
        opaque_iter(7).unwrap().collect::<Vec<_>>(),
        [(0, true), (2, true), (4, true), (6, true)]
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(opaque_async()).unwrap().to_string(),
        "42 held: true"
    );
    for name in ["generic-5", "generic-x", "opaque", "opaque-async"] {
        assert!(!held(name), "{name} still held after return");
    }
}

#[test]
fn the_default_name_is_the_function_path() {
    assert!(default_name().unwrap());
}

#[tokio::test]
async fn beside_tracing_instrument_in_either_order() {
    assert!(
        tokio::task::spawn_blocking(|| instrumented_inner().unwrap())
            .await
            .unwrap()
    );
    let outer = instrumented_outer();
    assert!(tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(outer)
    })
    .await
    .unwrap()
    .unwrap());
}

// The attribute under and over the test attribute. Under it, tokio::test expands first and
// hands the attribute a sync function: the blocking path takes the lock.
#[tokio::test]
#[pals::exclusive(name = "test-under", locker = &LOCKER)]
async fn under_tokio_test() -> Result<(), pals::Error> {
    assert!(OTHER.lock("test-under").try_acquire().await?.is_none());
    Ok(())
}

#[pals::exclusive(name = "test-over", locker = &LOCKER)]
#[tokio::test]
async fn over_tokio_test() -> Result<(), pals::Error> {
    // The attribute expanded first, on the async function: the async path took the lock.
    assert!(OTHER.lock("test-over").try_acquire().await?.is_none());
    Ok(())
}

#[pals::exclusive(name = "one-line", locker = &LOCKER)]
pub fn one_line() -> Result<bool, pals::Error> {
    Ok(held("one-line"))
}

/// Checks, as it is dropped, that the lock is still held.
struct ChecksOnDrop(&'static str, std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ChecksOnDrop {
    fn value(&self) -> u32 {
        7
    }
}

impl Drop for ChecksOnDrop {
    fn drop(&mut self) {
        self.1
            .store(held(self.0), std::sync::atomic::Ordering::SeqCst);
    }
}

#[pals::exclusive(name = "tail", locker = &LOCKER)]
fn tail_temporary(seen: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<u32, pals::Error> {
    Ok(ChecksOnDrop("tail", seen).value())
}

#[test]
fn one_line_bodies_and_tail_temporaries() {
    assert!(one_line().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    assert_eq!(tail_temporary(seen.clone()).unwrap(), 7);
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        "released before the body's temporaries dropped"
    );
    assert!(!held("tail"), "still held after return");
}

macro_rules! per_tenant_job {
    ($name:ident, $arg:ident) => {
        #[pals::exclusive(name = "job-{tenant}", locker = &LOCKER)]
        fn $name($arg: u32) -> Result<bool, pals::Error> {
            Ok(held(&format!("job-{}", $arg)))
        }
    };
}

per_tenant_job!(tenant_job, tenant);

#[derive(Debug)]
struct TenantId(#[allow(dead_code)] u32);

#[pals::exclusive(name = "debug-{id:?}-{n:03}", locker = &LOCKER)]
fn formatted(id: TenantId, n: u32) -> Result<bool, pals::Error> {
    Ok(held(&format!("debug-{id:?}-{n:03}")))
}

#[test]
fn placeholders_from_macros_and_with_format_specs() {
    assert!(tenant_job(4).unwrap());
    assert!(formatted(TenantId(9), 5).unwrap());
    assert!(!held("debug-TenantId(9)-005"), "released after return");
}
