//! [`LockerBuilder`]: how a [`Locker`] is configured and put together: the database
//! configuration (`config`, `tls`), the settings pals gives its sessions, and the parts
//! (`Core`, `Coordination`) a locker is made of.

use std::sync::Arc;
use std::time::Duration;

use crate::background::Background;
use crate::config::{self, DbConfig, Environment, Keepalives};
use crate::connection::ConnectionSettings;
use crate::coordination::Coordination;
use crate::core::Core;
use crate::error::Error;
use crate::locker::Locker;
use crate::metrics::Meter;
use crate::pool::{Pool, PoolConfig};
use crate::release::HandoffLimit;
use crate::runtime;
use crate::tls::{self, TlsBackend, TlsSettings};
use crate::tokens::Tokens;
use crate::turn::Turns;

/// The acquire timeout PALs uses by default: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many database connections a locker opens at most, by default.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How long opening a database connection may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection that holds a lock is checked, by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How many times in a row a lock is handed over within a process, by default, before it
/// goes back to the database (see [`LockerBuilder::handoff_limit`]).
pub const DEFAULT_HANDOFFS_IN_A_ROW: u32 = 64;
/// How long after its database grant a lock may still be handed over within a process,
/// by default (see [`LockerBuilder::handoff_limit`]).
pub const DEFAULT_HANDOFF_WINDOW: Duration = Duration::from_millis(20);
/// How long a pooled connection beyond the first may stay idle before it is closed, by
/// default: one minute (see [`LockerBuilder::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many runs of each `once_per` job the run history keeps, by default (see
/// [`LockerBuilder::runs_kept`]).
pub const DEFAULT_RUNS_KEPT: u32 = 100;

/// The longest a fenced lock's `nextval` may wait for its sequence on a lock session.
const TOKEN_WITHIN: Duration = Duration::from_millis(500);

impl Locker {
    /// A locker for application `app` on the database at `url`
    /// (`postgresql://user:password@host:port/dbname`, or libpq's `key=value` pairs), with
    /// default settings.
    ///
    /// The URL is read as libpq reads it: what it leaves out comes from the `PG*` variables
    /// (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, ...), then
    /// libpq's defaults (the server's Unix socket in `/var/run/postgresql` or `/tmp` if
    /// there is one, else `localhost`; port 5432; the OS user; a database named after the
    /// user), and a missing password from `~/.pgpass` (or `PGPASSFILE`). So `""` works
    /// where `psql` with no arguments does. A Unix socket is a host that is a directory:
    /// `host=/var/run/postgresql`, or `postgresql://%2Fvar%2Frun%2Fpostgresql/db`.
    ///
    /// Fails only if the URL cannot be used, with a message that says which part and why
    /// (the password never shows); no connection is opened yet.
    ///
    /// ```
    /// let locker = pals::Locker::new("my-app-name", "postgresql://user:pass@server/dbname")?;
    /// assert_eq!(locker.app(), "my-app-name");
    /// assert!(pals::Locker::new("my-app-name", "not a url").is_err());
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn new(app: impl Into<String>, url: &str) -> Result<Locker, Error> {
        Locker::builder(app).url(url).build()
    }

    /// A builder to configure pool size, timeouts and the connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// let locker = pals::Locker::builder("my-app-name")
    ///     .url("postgresql://postgres@127.0.0.1:54321/postgres")
    ///     .pool_size(4)
    ///     .default_timeout(Duration::from_secs(5))
    ///     .connect_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// assert_eq!(locker.pool_size(), 4);
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn builder(app: impl Into<String>) -> LockerBuilder {
        LockerBuilder {
            app: app.into(),
            database: None,
            pool_size: DEFAULT_POOL_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            default_timeout: DEFAULT_TIMEOUT,
            connect_timeout: None,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            tls_backend: None,
            schema: "public".into(),
            metric_lock_names: false,
            runs_kept: DEFAULT_RUNS_KEPT,
            handoff: HandoffLimit {
                in_a_row: DEFAULT_HANDOFFS_IN_A_ROW,
                within: DEFAULT_HANDOFF_WINDOW,
            },
        }
    }
}

/// Configures a [`Locker`]; made by [`Locker::builder`].
#[derive(Debug)]
#[must_use]
pub struct LockerBuilder {
    app: String,
    database: Option<Database>,
    tls_backend: Option<TlsBackend>,
    pool_size: usize,
    idle_timeout: Duration,
    default_timeout: Duration,
    /// `None`: the URL's `connect_timeout`, else the default.
    connect_timeout: Option<Duration>,
    heartbeat: Option<Duration>,
    schema: String,
    metric_lock_names: bool,
    runs_kept: u32,
    handoff: HandoffLimit,
}

impl LockerBuilder {
    /// The database URL, `postgresql://user:password@host:port/dbname` (or the key=value
    /// form). A URL that cannot be parsed makes [`build`](Self::build) fail.
    ///
    /// `sslmode` is read as libpq reads it: `disable`, `prefer` (the default), `require`,
    /// `verify-ca`, `verify-full`, with `sslrootcert=/path/to/ca.pem` (else
    /// `~/.postgresql/root.crt`; `sslrootcert=system` trusts the platform's CAs), and a
    /// client certificate with `sslcert`, `sslkey` and `sslpassword` (else
    /// `~/.postgresql/postgresql.crt` and `.key`). See [`TlsBackend`].
    ///
    /// What the URL leaves out comes from its service (`service=`, `PGSERVICE`: a section of
    /// `pg_service.conf`), the `PG*` variables, libpq's defaults and the password file, read
    /// by [`build`](Self::build); see [`Locker::new`] and the README's "Connection
    /// parameters (libpq)" for the list of what is read.
    pub fn url(mut self, url: &str) -> Self {
        self.database = Some(Database::Url(url.to_string()));
        self
    }

    /// The URL of the environment, as the [global](crate::global) locker reads it:
    /// `PALS_DB_URL`, else `DATABASE_URL` (what sqlx and most Rust services set), else
    /// none: the `PG*` variables and libpq's defaults (see [`Locker::new`]). Read by
    /// [`build`](Self::build); [`Locker::check`] says which variable it was.
    ///
    /// ```
    /// # std::env::set_var("PALS_DB_URL", "postgresql://postgres@127.0.0.1:54321/postgres");
    /// let locker = pals::Locker::builder("my-app-name").url_from_env().build()?;
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn url_from_env(mut self) -> Self {
        self.database = Some(Database::FromEnv);
        self
    }

    /// A ready tokio-postgres configuration instead of a URL. Its `ssl_mode` (`disable`,
    /// `prefer`, `require`) applies.
    pub fn config(mut self, config: tokio_postgres::Config) -> Self {
        let mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => tls::SslMode::Disable,
            tokio_postgres::config::SslMode::Require => tls::SslMode::Require,
            _ => tls::SslMode::Prefer,
        };
        let settings = TlsSettings {
            mode,
            root_cert: None,
            client: None,
        };
        self.database = Some(Database::Config(Box::new(DbConfig {
            config,
            tls: settings,
            connect_timeout: None,
            keepalives: Keepalives::default(),
        })));
        self
    }

    /// Which TLS implementation to use when `sslmode` asks for TLS: rustls (the default,
    /// cargo feature `rustls`) or the platform's (cargo feature `native-tls`).
    pub fn tls_backend(mut self, backend: TlsBackend) -> Self {
        self.tls_backend = Some(backend);
        self
    }

    /// The most database connections to open at once (default 10). Locks taken at once
    /// share connections (thousands fit on a few); a lock wait takes one of its own while
    /// it waits. Instant attempts leave the last connection to waits; when every
    /// connection carries locks, a wait tries again on a shared one (backing off to 50 ms)
    /// until one frees or its timeout ends.
    ///
    /// A connection holds a given lock once at most (PostgreSQL would grant it again at
    /// once, ahead of other processes queued for it): shared holders of one lock in one
    /// process need a connection each, so at most `size` of them hold it at the same time;
    /// the others wait for a connection, within their timeout.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long a pooled connection beyond the first may carry nothing before it is
    /// closed (default 60 s); `Duration::MAX` keeps every connection open. A connection
    /// carries something while it holds a lock, runs a statement, waits for a lock or
    /// checks its locks: one that holds a lock is never closed, however long it is quiet.
    /// So a pool that grew in a burst shrinks back to one connection (plus those holding
    /// locks) once the burst is over, and a fleet of quiet replicas keeps about one server
    /// connection each, not `pool_size`. The first connection (the one open longest) stays
    /// open, so the next lock does not pay for a connect.
    ///
    /// Why a minute: a new connection costs milliseconds (a server process, the
    /// authentication, pals' setup: 6 ms on loopback, 12 ms with TLS, more across a
    /// network), so jobs that run every few seconds, or a steady trickle of locks, must
    /// not open and close connections all the time; and a minute is short next to how long
    /// a replica stays quiet, so a fleet gives connections back soon after a burst. Lower
    /// it for large fleets against a small `max_connections`; raise it where connects are
    /// slow. Zero is refused by [`build`](Self::build).
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// let locker = pals::Locker::builder("doc-idle-timeout")
    ///     .url(&url)
    ///     .pool_size(10)
    ///     .idle_timeout(Duration::from_secs(30))
    ///     .build()?;
    /// assert_eq!(locker.idle_timeout(), Duration::from_secs(30));
    /// let guard = locker.lock("report").acquire().await?;
    /// // ... a burst may open up to 10 connections; 30 s after it, those beyond the
    /// // first that hold nothing are closed; this guard's connection stays open ...
    /// assert!(guard.release().await?);
    /// # Ok(()) }
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long [`Lock::acquire`](crate::Lock::acquire) waits for a busy lock (default 30 s, as in PALs).
    /// `Duration::MAX` waits forever; `Duration::ZERO` tries once.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// How long opening a connection may take, from TCP connect to the end of
    /// authentication (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How often to check a connection that holds a lock (default 5 s); `None` turns the
    /// check off. A check that is not answered within the interval marks the lock lost
    /// ([`LockGuard::is_held`](crate::LockGuard::is_held) turns false) and closes the
    /// connection, so a holder behind a dead network learns of it within two intervals.
    /// A connection the server closes is noticed at once, heartbeat or not.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// The schema of the objects that fencing tokens and elections use (default `public`):
    /// the sequence `pals_fence` ([`Lock::fenced`](crate::Lock::fenced)) and the table `pals_leaders`
    /// ([`Locker::election`]). pals creates each on first use if it is missing; a role
    /// that may not create objects there needs an admin to make them first (the error
    /// says how). Every process that shares locks must use the same schema: tokens
    /// from two sequences do not compare.
    ///
    /// **Refused** (by [`build`](Self::build), as a misconfiguration): a temporary schema
    /// (`pg_temp`, `pg_temp_N`, in any case or quotes: each session has its own, so every
    /// process would mint tokens from 1) and the system's (`pg_catalog`, `pg_toast*`,
    /// `information_schema`, any name starting with `pg_`). A fence sequence that is
    /// unlogged (it starts over after a crash) is refused at the first fenced acquire.
    ///
    /// **Keeping other roles out.** Fencing and [`Election::leader`](crate::Election::leader)
    /// are only as good as pals' objects: a role that may `setval` or `ALTER` the sequence
    /// can send tokens backwards (each locker notices for the locks it has seen, see
    /// [`Lock::fenced`](crate::Lock::fenced); a new process cannot), and one that may write
    /// the leaders table can name an impostor. The owner of an object may do all of that,
    /// and pals' objects are owned by whoever made them: where that matters, have an admin
    /// role own them, and give the app's role only what pals uses (`USAGE` on the sequence
    /// lets it call `nextval`, not `setval`, which needs `UPDATE`; candidates must write
    /// the table, observers only read it):
    ///
    /// ```sql
    /// CREATE SCHEMA pals AUTHORIZATION pals_admin;  -- run as pals_admin from here on
    /// REVOKE ALL ON SCHEMA pals FROM PUBLIC;
    /// GRANT USAGE ON SCHEMA pals TO app_role, observer_role;  -- no CREATE
    /// CREATE SEQUENCE pals.pals_fence AS bigint;
    /// CREATE TABLE pals.pals_leaders (key bigint PRIMARY KEY, name text NOT NULL,
    ///   identity text NOT NULL, since timestamptz NOT NULL, token bigint NOT NULL,
    ///   pid int NOT NULL);
    /// REVOKE ALL ON pals.pals_fence, pals.pals_leaders FROM PUBLIC;
    /// GRANT USAGE ON SEQUENCE pals.pals_fence TO app_role;            -- nextval only
    /// GRANT SELECT, INSERT, UPDATE ON pals.pals_leaders TO app_role;  -- candidates
    /// GRANT SELECT ON pals.pals_leaders TO observer_role;             -- leader() only
    /// ```
    ///
    /// Then only `pals_admin` (and superusers) can set the sequence back or lock it by
    /// hand; the app's role can still write a leaders row, which
    /// [`leader`](crate::Election::leader) believes only while its writer holds the lock and
    /// its token is not older than one seen. (`LOCK TABLE` needs `UPDATE` on the table, so
    /// a candidate's role can also lock it: coordination statements then fail at their
    /// bound, never a held lock.)
    ///
    /// ```
    /// let locker = pals::Locker::builder("my-app-name")
    ///     .url("postgresql://localhost/db")
    ///     .schema("locks")
    ///     .build()?;
    /// let temporary = pals::Locker::builder("my-app-name")
    ///     .url("postgresql://localhost/db")
    ///     .schema("pg_temp")
    ///     .build();
    /// assert!(temporary.unwrap_err().is_misconfiguration());
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }

    /// With the cargo feature `metrics`: label each lock's figures with its full name
    /// (`lock = "app.name"`) as well as the app (default `false`: per-app figures).
    ///
    /// Every distinct name is a series of its own in the metrics backend: names formatted
    /// from arguments (`name = "tenant-{id}"`) are unbounded, and can overwhelm it. Turn
    /// this on for a locker with a few fixed names. Without the feature it changes nothing.
    pub fn metric_lock_names(mut self, on: bool) -> Self {
        self.metric_lock_names = on;
        self
    }

    /// How many runs of each [`once_per`](crate::Lock::once_per) job the run history keeps
    /// (default 100, at least 1): each claim of a tick deletes the job's runs beyond this
    /// many, oldest first, in the claim's own statement. The history is a table in the
    /// locker's [`schema`](Self::schema), `pals_runs`; a job's runs are kept until its next
    /// claims push them out (the runs of a job that stopped running stay).
    ///
    /// ```
    /// let locker = pals::Locker::builder("my-app-name")
    ///     .url("postgresql://localhost/db")
    ///     .runs_kept(1000)
    ///     .build()?;
    /// let none = pals::Locker::builder("my-app-name").url("postgresql://localhost/db").runs_kept(0).build();
    /// assert!(none.unwrap_err().is_misconfiguration());
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn runs_kept(mut self, runs: u32) -> Self {
        self.runs_kept = runs;
        self
    }

    /// How far an exclusive lock is handed over within this process before it goes back
    /// to the database (default: 64 handoffs, within 20 ms of the database's grant).
    ///
    /// When a guard is released (or dropped) while another caller of this locker waits for
    /// the same lock, pals hands the database lock over in memory: the waiter holds it at
    /// once, with no unlock and no lock statement (lock cohorting). A hot lock in one
    /// process then costs no round trip per holder. A run of handoffs ends after
    /// `in_a_row` handoffs or once `within` has passed since the database granted the
    /// lock, whichever comes first; the lock is then unlocked in the database, where a
    /// waiter in another process is first in PostgreSQL's queue. So `within` (plus the
    /// longest hold) bounds how long other processes wait behind this one's callers.
    ///
    /// A guard that is dropped (not released) with nobody waiting leaves its lock parked
    /// until the library's runtime runs its unlock (microseconds): a caller of this
    /// process that asks at once, such as the thread that dropped it, takes it there.
    ///
    /// Handed over, a lock keeps its guarantees: one holder at a time, and a lock whose
    /// session ends is lost for whoever holds it then ([`LockGuard::lost`]). Fenced locks
    /// and semaphore permits are never handed over (each grant needs its own token; a
    /// permit's unlock tells other processes), nor are shared locks. A release that hands
    /// over answers `Ok(true)` without a round trip: the lock was not known lost.
    ///
    /// `handoff_limit(0, Duration::ZERO)` turns handoffs off: every release unlocks in the
    /// database, and the callers of one process queue behind it there like any other.
    ///
    /// [`LockGuard::lost`]: crate::LockGuard::lost
    ///
    /// ```
    /// use std::time::Duration;
    /// let locker = pals::Locker::builder("my-app-name")
    ///     .url("postgresql://localhost/db")
    ///     .handoff_limit(16, Duration::from_millis(5))
    ///     .build()?;
    /// assert_eq!(locker.handoff_limit(), (16, Duration::from_millis(5)));
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn handoff_limit(mut self, in_a_row: u32, within: Duration) -> Self {
        self.handoff = HandoffLimit { in_a_row, within };
        self
    }

    /// Checks the configuration and makes the locker. Does no I/O.
    pub fn build(self) -> Result<Locker, Error> {
        let (
            DbConfig {
                mut config,
                tls: tls_settings,
                connect_timeout,
                keepalives,
            },
            url_from,
        ) = self.database()?;
        let connect_timeout = self
            .connect_timeout
            .or(connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        self.check(&config, connect_timeout)?;
        check_no_nul(&self.app, &config)?;
        let target = config::describe_target(&config);
        let backend = self.tls_backend.or_else(TlsBackend::default_available);
        let (tls, ssl_mode) = tls::connector(&tls_settings, backend)?;
        config.ssl_mode(ssl_mode);
        config::for_sessions(&mut config, &self.app, connect_timeout, keepalives);
        let connection = ConnectionSettings {
            config,
            connect_timeout,
            heartbeat: self.heartbeat,
            tls,
            tls_summary: tls_settings.summary(),
            target: target.into(),
            url_from,
        };
        self.assemble(connection)
    }

    /// The database configuration: the URL's, read with the process's environment, or
    /// the one given; and the environment variable the URL came from, if it did.
    fn database(&self) -> Result<(DbConfig, Option<&'static str>), Error> {
        match &self.database {
            None => Err(Error::InvalidConfig(
                "no database given: call .url(...) or .config(...)".into(),
            )),
            Some(Database::Url(url)) => config::read(url, &Environment::of_process())
                .map(|config| (config, None))
                .map_err(Error::InvalidConfig),
            Some(Database::FromEnv) => {
                let env = Environment::of_process();
                let (url, from) = config::url_of_env(&env).map_err(Error::InvalidConfig)?;
                let config = config::read(&url, &env).map_err(Error::InvalidConfig)?;
                Ok((config, from))
            }
            Some(Database::Config(config)) => Ok(((**config).clone(), None)),
        }
    }

    /// Refuses settings that cannot work.
    fn check(
        &self,
        config: &tokio_postgres::Config,
        connect_timeout: Duration,
    ) -> Result<(), Error> {
        let refuse = |why: &str| Err(Error::InvalidConfig(why.into()));
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return refuse("the database configuration names no host");
        }
        if self.pool_size == 0 {
            return refuse("pool_size must be at least 1");
        }
        if self.idle_timeout.is_zero() {
            return refuse(
                "idle_timeout must be more than zero (or Duration::MAX to keep connections)",
            );
        }
        if connect_timeout.is_zero() {
            return refuse("connect_timeout must be more than zero");
        }
        if self.runs_kept == 0 {
            return refuse(
                "runs_kept must be at least 1: a once_per job's claim is a run kept in the history",
            );
        }
        if self.heartbeat.is_some_and(|interval| interval.is_zero()) {
            return refuse("heartbeat must be more than zero (or None for no heartbeat)");
        }
        Ok(())
    }

    /// The locker's parts, on the library's runtime, connecting with `connection`.
    fn assemble(self, connection: ConnectionSettings) -> Result<Locker, Error> {
        let rt = runtime::handle()?;
        let meter = Meter::new(&self.app, self.metric_lock_names);
        let coordination = Coordination::new(
            &self.schema,
            connection.clone(),
            self.idle_timeout,
            self.runs_kept,
            rt.clone(),
        )?;
        let connect_timeout = connection.connect_timeout;
        let pool = Pool::new(
            PoolConfig {
                connection,
                size: self.pool_size,
                idle_timeout: self.idle_timeout,
                token_within_ms: token_within_ms(self.heartbeat),
                meter: meter.clone(),
            },
            rt.clone(),
        )?;
        let background = Arc::new(Background::new(rt));
        let core = Core {
            connect_timeout,
            app: self.app,
            pool,
            turns: Arc::new(Turns::new(Arc::clone(&background))),
            background,
            meter,
            default_timeout: self.default_timeout,
            handoff: self.handoff,
            tokens: Tokens::default(),
        };
        Ok(Locker::from_parts(core, coordination, self.heartbeat))
    }
}

/// Where the database comes from. Its `Debug` never shows a password.
enum Database {
    /// A URL or key=value pairs, read with the environment at `build`.
    Url(String),
    /// The URL of `PALS_DB_URL`, else `DATABASE_URL`, else the `PG*` variables, at `build`.
    FromEnv,
    /// A ready tokio-postgres configuration.
    Config(Box<DbConfig>),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Url(url) => f.debug_tuple("Url").field(&config::masked(url)).finish(),
            Database::FromEnv => f.write_str("FromEnv"),
            // tokio-postgres' own `Debug` redacts the password.
            Database::Config(config) => f.debug_tuple("Config").field(config).finish(),
        }
    }
}

/// Refuses a NUL byte in what goes into SQL text or the connection's start-up message:
/// the app (its election names, its sessions' `application_name`), and the user, database,
/// password, options and `application_name` of the configuration. PostgreSQL cannot take
/// one, and a connect that fails on it would look like a network error, not a mistake.
fn check_no_nul(app: &str, config: &tokio_postgres::Config) -> Result<(), Error> {
    let password = config.get_password().map(String::from_utf8_lossy);
    let fields = [
        ("the app name", Some(app)),
        ("the user", config.get_user()),
        ("the database name", config.get_dbname()),
        ("the password", password.as_deref()),
        ("the options", config.get_options()),
        ("the application_name", config.get_application_name()),
    ];
    let Some((what, _)) = fields
        .into_iter()
        .find(|(_, value)| value.is_some_and(|value| value.contains('\0')))
    else {
        return Ok(());
    };
    // The password is never shown; the others are, escaped.
    let shown = match what {
        "the app name" => format!(" ({app:?})"),
        _ => String::new(),
    };
    Err(Error::InvalidConfig(format!(
        "{what}{shown} has a NUL byte, which PostgreSQL cannot take in a name or a \
         connection setting: remove it"
    )))
}

/// How long a fenced lock's `nextval` may wait for its sequence on a lock session, in
/// milliseconds: half a heartbeat, so that the heartbeat's ping never waits behind it for
/// long, and 500 ms at most.
fn token_within_ms(heartbeat: Option<Duration>) -> u64 {
    let within = heartbeat.map_or(TOKEN_WITHIN, |interval| (interval / 2).min(TOKEN_WITHIN));
    (within.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_logged_shows_no_password() {
        for url in [
            "postgresql://u:hunter2@h/db?sslpassword=hunter2",
            "host=h password=hunter2",
        ] {
            let shown = format!("{:?}", Locker::builder("a").url(url));
            assert!(
                !shown.contains("hunter2") && shown.contains("***"),
                "{shown}"
            );
        }
        let config: tokio_postgres::Config = "postgresql://u:hunter2@h/db".parse().unwrap();
        let shown = format!("{:?}", Locker::builder("a").config(config));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn build_checks_its_input() {
        let err = |b: LockerBuilder| b.build().unwrap_err().to_string();
        assert!(err(Locker::builder("a")).contains("no database"));
        assert!(
            err(Locker::builder("a").url("postgresql://h/db").pool_size(0)).contains("pool_size")
        );
        assert!(err(Locker::builder("a").url("::::")).contains("cannot use the database URL"));
        assert!(err(Locker::builder("a")
            .url("postgresql://h/db")
            .pool_size(usize::MAX))
        .contains("pool_size"));
        assert!(
            err(Locker::builder("a").config(tokio_postgres::Config::new())).contains("no host")
        );
        assert!(err(Locker::builder("a")
            .url("postgresql://h/db")
            .connect_timeout(Duration::ZERO))
        .contains("connect_timeout"));
        assert!(err(Locker::builder("a")
            .url("postgresql://h/db")
            .idle_timeout(Duration::ZERO))
        .contains("idle_timeout"));
    }

    #[test]
    fn a_token_waits_at_most_half_a_heartbeat() {
        assert_eq!(token_within_ms(None), 500);
        assert_eq!(token_within_ms(Some(Duration::from_secs(5))), 500);
        assert_eq!(token_within_ms(Some(Duration::from_millis(300))), 150);
        assert_eq!(token_within_ms(Some(Duration::from_micros(1))), 1);
    }
}
