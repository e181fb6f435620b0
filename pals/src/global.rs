//! The process-wide locker that `#[pals::exclusive]` uses.

use std::sync::OnceLock;

use crate::error::Error;
use crate::locker::Locker;

static GLOBAL: OnceLock<Locker> = OnceLock::new();

/// Environment variable with the database URL of the global locker (and of the tests and
/// examples): `PALS_DB_URL`. Unset or empty, the connection comes from the `PG*` variables
/// and libpq's defaults.
pub const DATABASE_URL_ENV: &str = "PALS_DB_URL";
/// Environment variable with the application name of the global locker: `PALS_APP_NAME`.
pub const APP_NAME_ENV: &str = "PALS_APP_NAME";
/// The name pals read before 0.2; set alone, it is an error that names the new one.
const OLD_DATABASE_URL_ENV: &str = "PALS_DATABASE_URL";

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
/// If [`init`] was never called, it is built once from the environment: `PALS_APP_NAME`
/// (required) and `PALS_DB_URL` (optional: unset, the `PG*` variables and libpq's defaults
/// apply). Without `PALS_APP_NAME` this is `Err(Error::NotConfigured)`, whose message says
/// both ways to configure it; a URL that cannot be used is `Err(Error::InvalidConfig)`.
pub fn global() -> Result<&'static Locker, Error> {
    if let Some(locker) = GLOBAL.get() {
        return Ok(locker);
    }
    let locker = from_env()?;
    // If init() won a race with us, its locker stays and ours is dropped unused.
    Ok(GLOBAL.get_or_init(|| locker))
}

/// Builds the process-wide locker from the environment now, so that a configuration
/// mistake is found at startup rather than by the first annotated function. Does no I/O.
///
/// Returns the locker [`init`] set, if it was called; otherwise the environment's (see
/// [`global`]), or the error that the first use would have met.
///
/// ```no_run
/// fn main() -> Result<(), pals::Error> {
///     let locker = pals::init_from_env()?; // PALS_APP_NAME, PALS_DB_URL
///     println!("pals: locks of {} ready", locker.app());
///     Ok(())
/// }
/// ```
pub fn init_from_env() -> Result<&'static Locker, Error> {
    global()
}

fn from_env() -> Result<Locker, Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let url = var(DATABASE_URL_ENV);
    if url.is_none() && var(OLD_DATABASE_URL_ENV).is_some() {
        return Err(Error::InvalidConfig(format!(
            "{OLD_DATABASE_URL_ENV} is set, but pals reads the URL from {DATABASE_URL_ENV}: \
             rename the variable"
        )));
    }
    let Some(app) = var(APP_NAME_ENV) else {
        return Err(Error::NotConfigured);
    };
    Locker::new(app, url.as_deref().unwrap_or(""))
}
