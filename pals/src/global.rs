//! The process-wide locker that `#[pals::exclusive]` uses.

use std::sync::OnceLock;

use crate::{Error, Locker};

static GLOBAL: OnceLock<Locker> = OnceLock::new();

/// Environment variable with the database URL of the global locker.
pub const DATABASE_URL_ENV: &str = "PALS_DATABASE_URL";
/// Environment variable with the application name of the global locker.
pub const APP_NAME_ENV: &str = "PALS_APP_NAME";

/// Sets the process-wide locker. Call it once, at startup, before anything uses
/// [`global()`]; a second call (or a call after `global()` configured itself from the
/// environment) is `Err(Error::AlreadyInitialized)` and changes nothing.
///
/// ```
/// let locker = pals::Locker::new("my-app", "postgresql://postgres@127.0.0.1:54321/postgres")?;
/// pals::init(locker)?;
/// assert_eq!(pals::global()?.app(), "my-app");
/// # Ok::<(), pals::Error>(())
/// ```
pub fn init(locker: Locker) -> Result<(), Error> {
    GLOBAL.set(locker).map_err(|_| Error::AlreadyInitialized)
}

/// The process-wide locker.
///
/// If [`init`] was never called, it is built once from the `PALS_DATABASE_URL` and
/// `PALS_APP_NAME` environment variables when both are set; otherwise this is
/// `Err(Error::NotConfigured)`, whose message says both ways to configure it.
pub fn global() -> Result<&'static Locker, Error> {
    if let Some(locker) = GLOBAL.get() {
        return Ok(locker);
    }
    let (Ok(url), Ok(app)) = (std::env::var(DATABASE_URL_ENV), std::env::var(APP_NAME_ENV)) else {
        return Err(Error::NotConfigured);
    };
    let locker = Locker::new(app, &url)?;
    // If init() won a race with us, its locker stays and ours is dropped unused.
    Ok(GLOBAL.get_or_init(|| locker))
}
