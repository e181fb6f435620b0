//! Functions that return nothing compile with the defaults (a busy lock skips them), sync
//! and async, with `-> ()` written out or not, and with `on_busy = "skip"` written.
use std::sync::LazyLock;

static LOCKER: LazyLock<pals::Locker> =
    LazyLock::new(|| pals::Locker::new("app", "postgresql://127.0.0.1:1/db").unwrap());

#[pals::exclusive(name = "job")]
fn job() {}

#[pals::exclusive(name = "job")]
async fn async_job() {}

#[pals::exclusive]
#[allow(clippy::unused_unit)]
fn written_unit() -> () {}

#[pals::exclusive(name = "job", on_busy = "skip", locker = &LOCKER)]
pub async fn explicit_skip(n: u32) -> () {
    let _ = n;
}

#[pals::exclusive(name = "job-{n}", timeout = "0", locker = &LOCKER)]
fn with_locker(n: u32) {
    let _ = n;
}

#[pals::exclusive(name = "outcome", on_busy = "skip", locker = &LOCKER)]
async fn outcome() -> pals::Outcome<Option<u32>> {
    pals::Outcome::Ran(None)
}

fn main() {
    // Typed, not called: calling would connect.
    let _: fn() = job;
    let _: fn() = written_unit;
    let _: fn(u32) = with_locker;
    fn future_of<F: std::future::Future<Output = T>, T>(_: F) {}
    future_of::<_, ()>(async_job());
    future_of::<_, ()>(explicit_skip(1));
    future_of::<_, pals::Outcome<Option<u32>>>(outcome());
}
