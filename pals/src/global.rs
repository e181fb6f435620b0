//! The process-wide locker that `#[pals::exclusive]` uses.

use std::sync::OnceLock;

use crate::error::Error;
use crate::locker::Locker;

static GLOBAL: OnceLock<Locker> = OnceLock::new();

/// Environment variable with the application name of the global locker: `PALS_APP_NAME`.
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
/// If [`init`] was never called, it is built once from the environment: `PALS_APP_NAME`
/// (required) and the URL of `PALS_DB_URL`, else `DATABASE_URL` (unset both, the `PG*`
/// variables and libpq's defaults apply: see
/// [`LockerBuilder::url_from_env`](crate::LockerBuilder::url_from_env)). Without
/// `PALS_APP_NAME` this is `Err(Error::NotConfigured)`, whose message says both ways to
/// configure it; a URL that cannot be used is `Err(Error::InvalidConfig)`. Does no I/O:
/// [`init_from_env`] checks the connection too.
pub fn global() -> Result<&'static Locker, Error> {
    if let Some(locker) = GLOBAL.get() {
        return Ok(locker);
    }
    let locker = from_env()?;
    // If init() won a race with us, its locker stays and ours is dropped unused.
    Ok(GLOBAL.get_or_init(|| locker))
}

/// Builds the process-wide locker from the environment and checks it now, so that a
/// mistake is found at startup rather than by the first annotated function: a bad URL, a
/// missing `PALS_APP_NAME`, and (by [`Locker::check`], which opens the locker's first
/// session and keeps it for the locks to come) a wrong password, an unknown database, a
/// TLS mismatch or a missing privilege, each with its next step. On success it logs (at
/// `info`, with `tracing`) where the locker connects and which variable gave the URL.
///
/// Returns the locker [`init`] set, if it was called; otherwise the environment's (see
/// [`global`]). Blocks the calling thread until the session is open, at most the connect
/// timeout (10 s unless the URL's `connect_timeout` says otherwise): call it at startup,
/// from `main`, async or not. Called again after an error, it checks again (a program may
/// retry while its database starts).
///
/// ```no_run
/// fn main() -> Result<(), pals::Error> {
///     let locker = pals::init_from_env()?; // PALS_APP_NAME; PALS_DB_URL or DATABASE_URL
///     println!("pals: locks of {} ready", locker.app());
///     Ok(())
/// }
/// ```
pub fn init_from_env() -> Result<&'static Locker, Error> {
    let locker = global()?;
    let checked = locker.blocking_check()?;
    tracing::info!("{checked}");
    Ok(locker)
}

fn from_env() -> Result<Locker, Error> {
    let app = std::env::var(APP_NAME_ENV).ok().filter(|v| !v.is_empty());
    let Some(app) = app else {
        return Err(Error::NotConfigured);
    };
    Locker::builder(app).url_from_env().build()
}
