//! Distributed locks on PostgreSQL advisory locks, compatible with Python's
//! [PALs](https://github.com/level12/pals).
//!
//! Teams that already run PostgreSQL get fleet-wide mutual exclusion without Redis,
//! ZooKeeper or etcd: scheduled jobs that must run on one replica at a time, migrations that
//! must never run twice at once, a singleton worker (leader) in a fleet.
//!
//! ```sh
//! cargo add pals-pg
//! cargo add tokio --features macros,rt-multi-thread
//! ```
//!
//! # A scheduled job that runs once per tick across the fleet
//!
//! Every replica runs the same schedule; each tick of the job runs on one of them, once.
//! [`#[pals::exclusive]`](macro@exclusive) with `once_per` claims the tick (the database
//! server's clock, rounded to the nearest multiple of the period) under a lock, and writes
//! down how the run ended ([`Locker::runs`] reads the history). Without `locker =`, it uses
//! the process-wide [`global()`] locker, configured by [`init`] or by the environment:
//! `PALS_APP_NAME` (required) and `PALS_DB_URL`.
//!
//! ```no_run
//! #[pals::exclusive(name = "nightly-report", once_per = "24h")]
//! async fn nightly_report() -> Option<u32> {
//!     Some(42) // None where this tick ran already (or runs now) on another replica
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), pals::Error> {
//!     pals::init_from_env()?; // PALS_APP_NAME=my-app PALS_DB_URL=postgresql://...
//!     // ... from the scheduler, on every replica, each night:
//!     if let Some(rows) = nightly_report().await {
//!         println!("report built: {rows} rows");
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A tick that fails is not run again (at most once per tick); a job that must not run
//! twice *at once* but may run many times (a migration, a queue drain) leaves `once_per`
//! out. [`Lock::once_per`] explains ticks, offsets and the history.
//!
//! ```
//! # std::env::set_var("PALS_APP_NAME", format!("doc-crate-{}-{:?}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()));
//! # std::env::set_var("PALS_DB_URL", pals_devdb::db_url().unwrap());
//! # #[pals::exclusive(name = "nightly-report", once_per = "24h")]
//! # async fn nightly_report() -> Option<u32> { Some(42) }
//! # #[tokio::main] async fn main() -> Result<(), pals::Error> {
//! pals::init_from_env()?; // at startup: a configuration mistake shows here, not later
//! assert_eq!(nightly_report().await, Some(42)); // this replica ran the tick
//! assert_eq!(nightly_report().await, None); // the tick ran: skipped
//! let runs = pals::global()?.runs("nightly-report", 10).await?;
//! assert_eq!(runs[0].outcome, pals::inspect::RunOutcome::Succeeded);
//! # Ok(()) }
//! ```
//!
//! # Locks by hand
//!
//! A [`Locker`] names the application and owns a connection pool; its [`Lock`]s hand out
//! [`LockGuard`]s that are always released, by [`LockGuard::release`] or in the background
//! when dropped.
//!
//! ```
//! use std::time::Duration;
//! # #[tokio::main] async fn main() -> Result<(), pals::Error> {
//! # let url = pals_devdb::db_url().unwrap();
//! let locker = pals::Locker::new("my-app-name", &url)?;
//! let lock1 = locker.lock("my-lock");
//! let lock2 = locker.lock("my-lock");
//!
//! let guard = lock1.acquire().await?;          // waits up to the lock's timeout
//! assert!(lock2.try_acquire().await?.is_none()); // never waits for the lock
//! assert!(lock2.acquire_timeout(Duration::from_millis(300)).await?.is_none());
//! assert!(guard.release().await?);
//! # Ok(()) }
//! ```
//!
//! Lock keys are PALs' ([`key`]): a Rust service and a Python service using the same app
//! and lock names exclude each other. Locks held within a transaction are in [`xact`];
//! who holds what is [`Locker::holders`] ([`inspect`]).
//!
//! # Configuration
//!
//! The database is a URL (`postgresql://user:password@host:port/dbname?sslmode=...`) or
//! libpq's `key=value` pairs, read as libpq reads it: what it leaves out comes from the
//! `PG*` variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//! `PGSSLMODE`, ...), then libpq's defaults (the local Unix socket, port 5432, the OS
//! user), and a missing password from `~/.pgpass`. A host that is a directory is a Unix
//! socket. `sslmode` goes from `disable` to `verify-full` ([`TlsBackend`]). A URL that cannot
//! be used fails [`Locker::new`] with a message that says which part is wrong; the password
//! never shows.
//!
//! | variable | read by | meaning |
//! |---|---|---|
//! | `PALS_APP_NAME` | [`global()`] | the application name: lock `job` is `"{app}.job"` |
//! | `PALS_DB_URL` | [`global()`] | the database; unset, the `PG*` variables and defaults |
//! | `PGHOST`, `PGPORT`, ... | every [`Locker`] | what the URL leaves out, as libpq |
//!
//! Sessions show in `pg_stat_activity` as `pals:{app}@{host}:{pid}`
//! ([`application_name`]), unless the URL names them.
//!
//! # Fencing tokens, leader election, semaphores
//!
//! - [`Lock::fenced`]: every grant mints a token ([`LockGuard::fence`]) greater than every
//!   earlier holder's, in the grant's own statement; the resource refuses a lower one, so a
//!   holder that stalled and lost its lock cannot act late.
//! - [`Locker::election`]: [`Election::run`] campaigns and runs the body as leader (dropped
//!   if leadership is lost); [`Election::leader`] and [`Election::observe`] tell any replica
//!   who leads.
//! - [`Locker::semaphore`]: at most `permits` holders fleet-wide; waiters wake when a
//!   permit is given back, without polling in a loop.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), pals::Error> {
//! # let url = pals_devdb::db_url().unwrap();
//! let locker = pals::Locker::new("doc-features", &url)?;
//!
//! let guard = locker.lock("ledger").fenced().acquire().await?;
//! let token = guard.fence().expect("a fenced lock has a token");
//! guard.release().await?;
//!
//! let exports = locker.semaphore("heavy-export", 3);
//! let permit = exports.acquire().await?;
//!
//! let election = locker.election("scheduler").identity("replica-a");
//! let fence = election.run(|term| async move { term.fence() }).await?;
//! assert!(fence > token);
//! permit.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! With the cargo feature `metrics`, pals records through the
//! [`metrics`](https://docs.rs/metrics) facade, for whichever exporter the application
//! installs: `pals_acquired_total`, `pals_busy_total`, `pals_skipped_total`,
//! `pals_errors_total`, `pals_lost_total` (counters), `pals_wait_seconds`,
//! `pals_hold_seconds` (histograms) and `pals_held_locks` (a gauge), labelled by `app` and
//! `kind`; lock names too only where a locker opts in
//! ([`LockerBuilder::metric_lock_names`]). The README has the table.
//!
//! # Good to know
//!
//! - **Not re-entrant.** A holder that asks for the same lock again (a recursive annotated
//!   function, or another function with the same lock name) waits for itself, until its
//!   timeout.
//! - **Default names** of the attribute are per module and function name:
//!   `module::run` of two types' methods in one module is one lock; give methods a `name`.
//! - **Mistakes are loud.** A configuration mistake ([`Error::is_misconfiguration`]) is never
//!   taken for a busy lock; a lock timeout bounds the whole call, the connect included.
//! - **Many locks, few connections.** Locks taken at once share a session (thousands on the
//!   default pool of 10); a wait takes a session of its own while it waits. At most
//!   `pool_size` shared holders of one lock per process hold it at once.
//! - **A transaction-mode pooler** (pgbouncer, RDS Proxy, Supavisor in transaction mode)
//!   cannot carry session locks. pals checks, with every lock statement and heartbeat, that
//!   its session is its own; one found shared is closed (its guards report the loss) and
//!   the call fails with a misconfiguration error. Connect straight to PostgreSQL (or
//!   through session pooling), or use [`xact`].
//!
//! # Failure modes
//!
//! PostgreSQL frees a session's locks the moment the session ends: a crashed holder's lock
//! is free in milliseconds, and a live holder can lose its lock. pals makes sure the holder
//! learns of it: [`LockGuard::is_held`] turns false and [`LockGuard::lost`] completes at once
//! when the server closes the session (a terminated backend, a restart), and within two
//! heartbeats ([`LockerBuilder::heartbeat`], 5 s by default) when the network goes silent.
//! TCP keepalives are on (30 s idle, 10 s interval, 3 probes; the URL's `keepalives_*`
//! settings change them); the *server's* keepalives decide how soon it frees the lock of a
//! holder that vanished without a word. Query cancels (`pg_cancel_backend`, a role's
//! `statement_timeout`) never leave a lock held for nobody: the session checks `pg_locks`
//! for itself before the call returns. Use `on_lost = "cancel"` or `select!` on
//! [`LockGuard::lost`] for long holders, and make side effects idempotent for the short
//! window between the server freeing a lock and the holder noticing.

#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::too_many_lines))]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, from the bottom up (each imports only from below it; see the README's "How it
// is built"):
// vocabulary: what every part says and waits with
mod background;
mod config;
mod deadline;
mod error;
mod future;
mod identity;
mod key;
mod loud;
mod metrics;
mod on_drop;
mod outcome;
mod panics;
mod runtime;
mod sql;
mod tls;
mod tokens;
// one connection, one session and its books, the sessions of a locker
mod connection;
mod pool;
mod session;
// the lock path: the in-process turn, letting go, the shared core, taking
mod acquire;
mod core;
mod release;
mod turn;
// coordination: schema objects, the coordination session, listening
mod coordination;
// the handles users hold
mod election;
mod guard;
pub mod inspect;
mod lock;
mod once;
mod semaphore;
pub mod xact;
// the façade: the locker, its builder, the global one, the attribute's run-time side
mod builder;
mod check;
mod exclusive;
mod global;
mod locker;

pub use builder::{
    LockerBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDOFFS_IN_A_ROW, DEFAULT_HANDOFF_WINDOW,
    DEFAULT_HEARTBEAT, DEFAULT_IDLE_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_RUNS_KEPT, DEFAULT_TIMEOUT,
};
pub use check::Checked;
pub use config::{DATABASE_URL_ENV, FALLBACK_DATABASE_URL_ENV};
pub use election::{
    Election, Leader, Observer, Term, DEFAULT_CAMPAIGN_BACKOFF, DEFAULT_OBSERVE_RECHECK,
};
pub use error::Error;
pub use exclusive::{current_fence, LockErrorReturn, Skippable};
pub use global::{global, init, init_from_env, APP_NAME_ENV};
pub use guard::LockGuard;
pub use identity::application_name;
pub use key::{key, Mode};
pub use lock::Lock;
pub use locker::Locker;
pub use once::{OncePer, RunGuard};
pub use outcome::Outcome;
/// Makes a sync or async function fleet-exclusive: it takes a lock before its body runs and
/// releases it however the body ends (return, `?`, panic, or, for async functions, the
/// future being dropped). With `once_per`, it also runs the body at most once per tick of a
/// schedule across the fleet.
///
/// ```
/// # use std::sync::LazyLock;
/// # static LOCKER: LazyLock<pals::Locker> = LazyLock::new(|| pals::Locker::new(
/// #     format!("doc-exclusive-{}-{:?}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()),
/// #     &pals_devdb::db_url().unwrap()).unwrap());
/// // A scheduled job: every replica's scheduler fires it; each tick runs once, on one.
/// #[pals::exclusive(name = "nightly-report", once_per = "24h", locker = &LOCKER)]
/// async fn nightly_report() -> Option<u32> {
///     Some(42) // None where the tick ran already, or runs now, on another replica
/// }
///
/// #[derive(Debug)]
/// enum MigrationError { Lock(pals::Error) }
/// impl From<pals::Error> for MigrationError {
///     fn from(e: pals::Error) -> Self { MigrationError::Lock(e) }
/// }
///
/// // A migration: never twice at once; the others wait, then find nothing to do.
/// #[pals::exclusive(timeout = "forever", locker = &LOCKER)] // name: module_path::migrate
/// fn migrate() -> Result<(), MigrationError> {
///     Ok(())
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(nightly_report().await, Some(42));
///     assert_eq!(nightly_report().await, None); // this tick ran
///     migrate().unwrap();
/// }
/// ```
///
/// | argument | meaning |
/// |---|---|
/// | `name = "..."` | lock name; default `concat!(module_path!(), "::", fn_name)`. `{ident}` placeholders format the function's arguments in (`name = "tenant-{tenant_id}"`); `{{` and `}}` are literal braces. |
/// | `timeout = "..."` | how long to wait: `"0"` tries once, `"300ms"`, `"5s"`, `"2m"`, `"1h"`, `"forever"`; default: see the table below. |
/// | `on_busy = "error"` or `"skip"` | when the lock is not acquired within the timeout: `"error"` (the default for functions that return a value) returns `Err(pals::Error::Timeout)` converted with `From` (the return type must implement [`LockErrorReturn`]); `"skip"` (the default for functions that return nothing, and with `once_per`) does not run the body and returns the type's [`Skippable`] value: `()`, `None`, [`Outcome::Skipped`], `Ok(skipped)`; the skip is logged at debug level (and counted, with the `metrics` feature). |
/// | `once_per = "24h"` | run the body at most once per tick across the fleet: the tick is the database server's clock at the call, rounded to the nearest multiple of the period; a call whose tick ran already (or runs now) returns the skipped value. Each run is written down (see [`Lock::once_per`], [`Locker::runs`]). A failed run is not retried in its tick. Not with `shared`, `permits` or `min_hold`. |
/// | `offset = "12h"` | with `once_per`: the ticks fall this far after the multiples of the period (a daily job at noon UTC: `once_per = "24h", offset = "12h"`). Less than the period. |
/// | `shared = true` | take the shared (reader) lock. |
/// | `fenced = true` | take a [fenced](Lock::fenced) lock; the body reads its token with [`current_fence()`]. |
/// | `permits = N` | take one of `N` permits of the [semaphore](Locker::semaphore) `name` instead of the lock: at most `N` bodies run at once, fleet-wide (not with `shared` or `fenced`). |
/// | `on_lost = "cancel"` | async functions only: if the lock is lost while the body runs, the body is dropped and the function returns `Err(pals::Error::LockLost)` converted with `From` (or the skipped value with `on_busy = "skip"`). Default `"continue"`. |
/// | `locker = EXPR` | use this `&Locker` (a static, an argument, a call) instead of [`global()`]. |
/// | `min_hold = "30s"` | keep the lock at least this long after it was acquired; the function returns at once and the lock is released in the background when the time is up (for a job that must not run again soon after; a scheduled job wants `once_per`). |
/// | `crate = path` | the path of the pals crate in the generated code, for a crate that has pals under another name or through a re-export (`crate = pals_renamed`, or `crate = "pals_renamed"`); default `::pals`. |
///
/// What a busy lock does, by the arguments given:
///
/// | arguments | a busy lock | waits |
/// |---|---|---|
/// | none, on a function that returns nothing | skips | no: tries once |
/// | none, on a function that returns a value | returns `Err(Timeout)` | the locker's default timeout (30 s) |
/// | `on_busy = "skip"` | skips | no: tries once |
/// | `once_per = "..."` | skips (and a tick that ran skips) | no: tries once |
/// | any of these with `timeout = "..."` | as above | that long |
///
/// A skip does not wait unless told to: for a scheduled job, "busy" means another replica is
/// doing it, and running after it would run the job twice.
///
/// When the acquire fails (not because the lock is busy), `on_busy = "error"` returns the
/// error; `on_busy = "skip"` returns it where the return type is a `Result` whose error
/// converts from `pals::Error`. Otherwise a misconfiguration
/// ([`Error::is_misconfiguration`]: pals not configured, a bad URL, a refused login, an
/// unknown database, TLS) panics with a message naming the lock and the function: it is
/// never a skip. Any other failure (the database down or unreachable) is logged (`tracing`,
/// error level, with the lock and the function; printed to stderr at most once a minute per
/// lock when no subscriber is installed) and the call skipped. Sync functions use the
/// blocking API and release before they return; async functions take the lock when first
/// polled and await the release. A `once_per` run is written down (succeeded; failed for
/// an `Err`, with its text; panicked, with the message, before the panic goes on;
/// cancelled; lost) before its lock is released.
pub use pals_macros::exclusive;
pub use semaphore::{Semaphore, SemaphoreGuard, PERMIT_RECHECK};
pub use tls::TlsBackend;
/// The tokio-postgres that pals is built on, for [`LockerBuilder::config`] and [`xact`].
pub use tokio_postgres;

/// Generated code of `#[pals::exclusive]`; not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::exclusive::{
        acquire, blocking_acquire, blocking_claim, claim, error_return, log_busy_skip,
        log_tick_ran, skipped_return, unless_lost, with_fence, Acquired, Claimed, Classify,
        EndedAny, EndedDebug, EndedDisplay, EndedErr, LockSpec, OnFailure, Resolved, ReturnFailure,
        Scope, SkipFailure, SyncFence,
    };
    pub use crate::global::global;
    pub use crate::once::Ended;
    pub use crate::panics::{caught, caught_sync, Caught};
    pub use std::format;
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<crate::Locker>();
        assert_send_sync::<crate::Lock>();
        assert_send_sync::<crate::LockGuard>();
        assert_send_sync::<crate::Error>();
    }
}
