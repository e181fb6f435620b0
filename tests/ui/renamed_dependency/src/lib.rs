//! A crate that depends on pals under another name, `pals_renamed`, and has no `pals`:
//! `#[pals_renamed::exclusive(crate = pals_renamed)]` compiles here only if the generated
//! code names the crate by that path. The integration tests run these functions.
#![deny(clippy::pedantic, clippy::nursery)]

pub use pals_renamed;
use pals_renamed::{Locker, Outcome};

/// Whether another session sees `name` held right now.
fn held_elsewhere(other: &Locker, name: &str) -> bool {
    other
        .lock(name)
        .blocking_try_acquire()
        .is_ok_and(|guard| guard.is_none())
}

/// Takes "renamed-sync" and says whether `other` sees it held while the body runs.
///
/// # Errors
/// The lock's error, if it cannot be taken.
#[pals_renamed::exclusive(crate = pals_renamed, name = "renamed-sync", locker = locker)]
pub fn sync_job(locker: &Locker, other: &Locker) -> Result<bool, pals_renamed::Error> {
    Ok(held_elsewhere(other, "renamed-sync"))
}

/// The same, async, with the path written as a string (as serde and tokio take it).
///
/// # Errors
/// The lock's error, if it cannot be taken.
#[pals_renamed::exclusive(crate = "pals_renamed", name = "renamed-{tag}", locker = locker)]
pub async fn async_job(
    locker: &Locker,
    tag: &str,
    other: &Locker,
) -> Result<bool, pals_renamed::Error> {
    let (other, name) = (other.clone(), format!("renamed-{tag}"));
    Ok(std::thread::spawn(move || held_elsewhere(&other, &name))
        .join()
        .unwrap_or(false))
}

/// A unit function (skips when busy) and an `Outcome`, through the renamed path.
#[pals_renamed::exclusive(crate = pals_renamed, name = "renamed-unit", timeout = "0", locker = locker)]
pub fn unit_job(locker: &Locker, ran: &std::sync::atomic::AtomicBool) {
    ran.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `Outcome::Ran(held)` when it ran, `Outcome::Skipped` when "renamed-unit" was busy.
#[pals_renamed::exclusive(crate = pals_renamed, name = "renamed-unit", timeout = "0", on_busy = "skip", locker = locker)]
pub async fn outcome_job(locker: &Locker) -> Outcome<()> {
    Outcome::Ran(())
}
