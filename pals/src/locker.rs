//! [`Locker`], the lock factory, and its builder.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::config::{self, DbConfig, Environment, Keepalives};
use crate::connection::ConnectionSettings;
use crate::guard::Releases;
use crate::key::{full_name, key_of_full_name};
use crate::listen::{Listener, Subscription};
use crate::metrics::Meter;
use crate::objects::Objects;
use crate::pool::Pool;
use crate::queue::{HandoffLimit, Queues};
use crate::tls::{self, TlsBackend, TlsSettings};
use crate::{runtime, Election, Error, Holder, Lock, Semaphore};

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

/// A lock factory: an application name that namespaces lock names, and a connection pool.
///
/// Create one per application (or use the process-wide [`global()`](crate::global) one)
/// and take locks from it. A `Locker` is cheap to clone; clones share the pool.
/// Creating it does no I/O: connections open on first use.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = pals_db_url();
/// let locker = pals::Locker::new("my-app-name", &url)?;
/// let guard = locker.lock("my-lock").acquire().await?;
/// // ... only one holder of "my-app-name.my-lock" in the whole fleet runs this ...
/// assert!(guard.release().await?);
/// # Ok(()) }
/// # fn pals_db_url() -> String { std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into()) }
/// ```
#[derive(Clone)]
pub struct Locker {
    inner: Arc<LockerInner>,
}

struct LockerInner {
    app: String,
    pool: Pool,
    queues: Arc<Queues>,
    default_timeout: Duration,
    connect_timeout: Duration,
    heartbeat: Option<Duration>,
    /// The library's runtime, which drives the connections.
    rt: Handle,
    /// The names of the keys this locker has made locks for, for `holders()`. Read-locked
    /// on the hot path (a name is written once: a lock made again only reads).
    names: RwLock<HashMap<i64, Arc<str>>>,
    /// How many of its locks are being released in the background.
    releasing: Arc<Releases>,
    /// The sequence and table for fencing tokens and elections, checked on first use.
    objects: Objects,
    /// The session that hears other processes give back permits and elect leaders.
    listener: Listener,
    /// Signalled when a semaphore permit of this locker is given back.
    permits_freed: Notify,
    meter: Meter,
}

/// How many names a locker remembers for `holders()`; beyond, keys show without a name.
const NAMES_REMEMBERED: usize = 100_000;

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
            handoff: HandoffLimit {
                in_a_row: DEFAULT_HANDOFFS_IN_A_ROW,
                within: DEFAULT_HANDOFF_WINDOW,
            },
        }
    }

    /// The lock called `name` in this locker's application: `"{app}.{name}"`.
    ///
    /// The name must not be empty: a lock made with `""` fails every acquire with
    /// [`Error::InvalidConfig`] (an empty name is almost always an argument that was
    /// meant to be formatted in, and would make every such caller share one lock).
    ///
    /// ```
    /// let locker = pals::Locker::new("my-app-name", "postgresql://localhost/db")?;
    /// let lock = locker.lock("my-lock");
    /// assert_eq!(lock.name(), "my-app-name.my-lock");
    /// assert_eq!(lock.key(), pals::key("my-app-name", "my-lock"));
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn lock(&self, name: &str) -> Lock {
        let full_name: Arc<str> = full_name(&self.inner.app, name).into();
        let key = key_of_full_name(&full_name);
        let names = &self.inner.names;
        let known = {
            let names = names.read().unwrap_or_else(|e| e.into_inner());
            names.contains_key(&key) || names.len() >= NAMES_REMEMBERED
        };
        if !known {
            let mut names = names.write().unwrap_or_else(|e| e.into_inner());
            if names.len() < NAMES_REMEMBERED {
                names.entry(key).or_insert_with(|| Arc::clone(&full_name));
            }
        }
        Lock::new(self.clone(), full_name, key, name.is_empty())
    }

    /// A fleet-wide semaphore called `name`: at most `permits` holders at once, across
    /// every process of this app (see [`Semaphore`] for its keys and how waiters wake).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
    /// let locker = pals::Locker::new("doc-locker-semaphore", &url)?;
    /// let permit = locker.semaphore("heavy-export", 3).acquire().await?;
    /// // ... at most 3 replicas run the export at once ...
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn semaphore(&self, name: &str, permits: u32) -> Semaphore {
        Semaphore::new(self, name, permits)
    }

    /// The leader election called `name` (held on the lock `name` of this app): see
    /// [`Election`].
    pub fn election(&self, name: &str) -> Election {
        Election::new(self, name)
    }

    /// The advisory locks (on bigint keys) held or awaited in this locker's database right
    /// now, by anyone
    /// (pals, PALs, plain SQL): key, mode, granted or waiting, the session's pid,
    /// application_name, client address and start, and how long it has waited. Keys of
    /// locks this locker has made carry their names.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
    /// let locker = pals::Locker::new("doc-holders", &url)?;
    /// let guard = locker.lock("migrations").acquire().await?;
    /// let holders = locker.holders().await?;
    /// let mine = holders.iter().find(|h| h.key == guard.key()).expect("listed");
    /// assert_eq!(mine.name.as_deref(), Some("doc-holders.migrations"));
    /// assert!(mine.granted);
    /// print!("{}", pals::inspect::table(&holders));
    /// # Ok(()) }
    /// ```
    pub async fn holders(&self) -> Result<Vec<Holder>, Error> {
        let turn = self.inner.pool.turn().await?;
        let rows = turn.query_rows(crate::statement::HOLDERS).await?;
        let names = self
            .inner
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        rows.iter()
            .map(|row| crate::inspect::holder(row, &names))
            .collect()
    }

    /// The lock with a raw advisory-lock key, for interoperating with SQL that calls
    /// `pg_advisory_lock(key)` directly. The lock's name is the key in decimal.
    ///
    /// ```
    /// let locker = pals::Locker::new("my-app-name", "postgresql://localhost/db")?;
    /// let lock = locker.lock_key(42);
    /// assert_eq!((lock.key(), lock.name()), (42, "42"));
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn lock_key(&self, key: i64) -> Lock {
        Lock::new(self.clone(), key.to_string().into(), key, false)
    }

    /// Completes once every lock of this locker that is released in the background has
    /// been released: dropped guards, and guards kept until a time by
    /// [`LockGuard::release_at`](crate::LockGuard::release_at) or the attribute's
    /// `min_hold`, whose time is waited for.
    ///
    /// Call it before the process exits. A lock lives only as long as its session: an exit
    /// frees every lock at once, `min_hold` included, and a replica whose scheduler fires a
    /// moment later could then run the same job again.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
    /// let locker = pals::Locker::new("doc-wait-releases", &url)?;
    /// let guard = locker.lock("report").acquire().await?;
    /// let until = Instant::now() + Duration::from_millis(100);
    /// guard.release_at(until);
    /// locker.wait_for_releases().await; // at the end of main
    /// assert!(Instant::now() >= until);
    /// assert!(locker.lock("report").try_acquire().await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_releases(&self) {
        self.inner.releasing.none_left().await;
    }

    pub(crate) fn releasing(&self) -> &Arc<Releases> {
        &self.inner.releasing
    }

    /// The application name that namespaces this locker's lock names.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// How long [`Lock::acquire`] waits unless the lock sets its own timeout.
    pub fn default_timeout(&self) -> Duration {
        self.inner.default_timeout
    }

    /// How long opening a database connection may take.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// How often a connection that holds a lock is checked (`None`: never).
    pub fn heartbeat(&self) -> Option<Duration> {
        self.inner.heartbeat
    }

    /// How far a lock is handed over within this process before it goes back to the
    /// database: at most this many handoffs in a row, within this time of the grant (see
    /// [`LockerBuilder::handoff_limit`]).
    pub fn handoff_limit(&self) -> (u32, Duration) {
        let limit = self.inner.queues.limit();
        (limit.in_a_row, limit.within)
    }

    /// The most database connections this locker opens at once.
    pub fn pool_size(&self) -> usize {
        self.inner.pool.max_size()
    }

    /// How long a pooled connection beyond the first may carry nothing before it is
    /// closed (`Duration::MAX`: never); see [`LockerBuilder::idle_timeout`].
    ///
    /// ```
    /// let locker = pals::Locker::new("my-app-name", "postgresql://localhost/db")?;
    /// assert_eq!(locker.idle_timeout(), pals::DEFAULT_IDLE_TIMEOUT);
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn idle_timeout(&self) -> Duration {
        self.inner.pool.idle_timeout()
    }

    /// Runs `sql` on an idle pooled connection and returns the first column of its rows.
    ///
    /// For pals' own tests, which must see what a pooled connection is like; not part of the
    /// public API.
    #[doc(hidden)]
    pub async fn __query_pooled(&self, sql: &str) -> Result<Vec<Option<String>>, Error> {
        let turn = self.inner.pool.turn().await?;
        let messages = turn.query(sql).await?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(String::from)),
                _ => None,
            })
            .collect())
    }
}

/// What locks and guards of this locker use.
impl Locker {
    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    pub(crate) fn queues(&self) -> &Arc<Queues> {
        &self.inner.queues
    }

    pub(crate) fn objects(&self) -> &Objects {
        &self.inner.objects
    }

    /// Events of the locker's listening session (started on first use).
    pub(crate) fn listener_subscription(&self) -> Subscription {
        let pool = &self.inner.pool;
        self.inner
            .listener
            .subscribe(pool.settings(), &self.inner.rt)
    }

    /// Signalled when a semaphore permit of this locker is given back.
    pub(crate) fn permits_freed(&self) -> &Notify {
        &self.inner.permits_freed
    }

    /// The fencing sequence's name, once it is known to exist (made on first use).
    pub(crate) async fn fence_sequence(&self) -> Result<&Arc<str>, Error> {
        self.inner.objects.fence(&self.inner.pool).await
    }

    pub(crate) fn rt(&self) -> &Handle {
        &self.inner.rt
    }

    pub(crate) fn meter(&self) -> &Meter {
        &self.inner.meter
    }
}

impl fmt::Debug for Locker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locker")
            .field("app", &self.inner.app)
            .field("pool_size", &self.pool_size())
            .field("default_timeout", &self.inner.default_timeout)
            .finish_non_exhaustive()
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
    handoff: HandoffLimit,
}

impl LockerBuilder {
    /// The database URL, `postgresql://user:password@host:port/dbname` (or the key=value
    /// form). A URL that cannot be parsed makes [`build`](Self::build) fail.
    ///
    /// `sslmode` is read as libpq reads it: `disable`, `prefer` (the default), `require`,
    /// `verify-ca`, `verify-full`, with `sslrootcert=/path/to/ca.pem` (without it, the
    /// verify modes trust the Mozilla root certificates). See [`TlsBackend`].
    ///
    /// What the URL leaves out comes from the `PG*` variables, libpq's defaults and the
    /// password file, read by [`build`](Self::build); see [`Locker::new`].
    pub fn url(mut self, url: &str) -> Self {
        self.database = Some(Database::Url(url.to_string()));
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
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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

    /// How long [`Lock::acquire`] waits for a busy lock (default 30 s, as in PALs).
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
    /// the sequence `pals_fence` ([`Lock::fenced`]) and the table `pals_leaders`
    /// ([`Locker::election`]). pals creates each on first use if it is missing; a role
    /// that may not create objects there needs an admin to make them first (the error
    /// says how). Every process that shares locks must use the same schema: tokens
    /// from two sequences do not compare.
    ///
    /// ```
    /// let locker = pals::Locker::builder("my-app-name")
    ///     .url("postgresql://localhost/db")
    ///     .schema("locks")
    ///     .build()?;
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
        let database = match self.database {
            None => {
                return Err(Error::InvalidConfig(
                    "no database given: call .url(...) or .config(...)".into(),
                ))
            }
            Some(Database::Url(url)) => {
                config::read(&url, &Environment::of_process()).map_err(Error::InvalidConfig)?
            }
            Some(Database::Config(config)) => *config,
        };
        let DbConfig {
            mut config,
            tls: tls_settings,
            connect_timeout,
            keepalives,
        } = database;
        let target = config::describe_target(&config);
        let connect_timeout = self
            .connect_timeout
            .or(connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let backend = self.tls_backend.or_else(TlsBackend::default_available);
        let (tls, ssl_mode) = tls::connector(&tls_settings, backend)?;
        config.ssl_mode(ssl_mode);
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(Error::InvalidConfig(
                "the database configuration names no host".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(Error::InvalidConfig("pool_size must be at least 1".into()));
        }
        if self.idle_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "idle_timeout must be more than zero (or Duration::MAX to keep connections)".into(),
            ));
        }
        if connect_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "connect_timeout must be more than zero".into(),
            ));
        }
        if self.heartbeat.is_some_and(|interval| interval.is_zero()) {
            return Err(Error::InvalidConfig(
                "heartbeat must be more than zero (or None for no heartbeat)".into(),
            ));
        }
        let objects = Objects::new(&self.schema)?;
        session_settings(&mut config, &self.app, connect_timeout, keepalives);
        let rt = runtime::handle()?;
        let meter = Meter::new(&self.app, self.metric_lock_names);
        let settings = ConnectionSettings {
            config,
            connect_timeout,
            heartbeat: self.heartbeat,
            tls,
            target: target.into(),
            meter: meter.clone(),
        };
        let releasing = Arc::<Releases>::default();
        let pool = Pool::new(settings, self.pool_size, self.idle_timeout, rt.clone())?;
        Ok(Locker {
            inner: Arc::new(LockerInner {
                app: self.app,
                pool,
                queues: Arc::new(Queues::new(
                    self.handoff,
                    rt.clone(),
                    Arc::clone(&releasing),
                )),
                default_timeout: self.default_timeout,
                connect_timeout,
                heartbeat: self.heartbeat,
                rt,
                names: RwLock::default(),
                releasing,
                objects,
                listener: Listener::new(),
                permits_freed: Notify::new(),
                meter,
            }),
        })
    }
}

/// Where the database comes from.
#[derive(Debug)]
enum Database {
    /// A URL or key=value pairs, read with the environment at `build`.
    Url(String),
    /// A ready tokio-postgres configuration.
    Config(Box<DbConfig>),
}

/// What pals sets on the configuration of every session of `app`: its name (unless the
/// URL gave one), the connect timeout, and TCP keepalives (30 s idle, 10 s interval, 3
/// probes, unless the URL says otherwise).
fn session_settings(
    config: &mut tokio_postgres::Config,
    app: &str,
    connect_timeout: Duration,
    keepalives: Keepalives,
) {
    if config.get_application_name().is_none() {
        // Shows in pg_stat_activity which application's sessions hold which locks.
        config.application_name(application_name(app));
    }
    config.connect_timeout(connect_timeout);
    // The server frees a dead client's locks only when TCP says the client is gone.
    config
        .keepalives(keepalives.on.unwrap_or(true))
        .keepalives_idle(keepalives.idle.unwrap_or(Duration::from_secs(30)))
        .keepalives_interval(keepalives.interval.unwrap_or(Duration::from_secs(10)))
        .keepalives_retries(keepalives.count.unwrap_or(3));
}

/// The `application_name` that pals gives the sessions of `app` from this process, unless
/// the URL names one: `pals:{app}@{host}:{pid}`, so that `pg_stat_activity` (and
/// [`Locker::holders`]) tell which replica holds what.
///
/// PostgreSQL keeps 63 bytes of it: the app comes first and is kept whole where it fits,
/// then the host name is shortened, then, for an app too long to leave room, the name is
/// cut to `pals:{app}` alone (on a character boundary).
///
/// ```
/// let name = pals::application_name("billing");
/// assert!(name.starts_with("pals:billing@"));
/// assert!(name.ends_with(&format!(":{}", std::process::id())));
/// ```
pub fn application_name(app: &str) -> String {
    name_within_limit(app, host_name(), std::process::id())
}

/// `pals:{app}@{host}:{pid}` within PostgreSQL's 63 bytes (see [`application_name`]).
fn name_within_limit(app: &str, host: &str, pid: u32) -> String {
    const LIMIT: usize = 63;
    let head = format!("pals:{app}");
    let tail = format!(":{pid}");
    // No room for a byte of the host: the app alone (never an empty host).
    let Some(room_for_host) = LIMIT
        .checked_sub(head.len() + 1 + tail.len())
        .filter(|room| *room > 0)
    else {
        return cut(head, LIMIT);
    };
    format!("{head}@{}{tail}", cut(host.to_string(), room_for_host))
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn cut(mut text: String, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// This machine's host name (the kernel's on Linux, else `HOSTNAME` or `COMPUTERNAME`).
pub(crate) fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown-host".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_names_the_replica_within_63_bytes() {
        assert_eq!(name_within_limit("app", "web-1", 42), "pals:app@web-1:42");
        // A long host name is shortened first; the app and the pid stay whole.
        let name = name_within_limit("billing", &"h".repeat(80), 123456);
        assert_eq!(name.len(), 63);
        assert!(
            name.starts_with("pals:billing@hhh") && name.ends_with(":123456"),
            "{name}"
        );
        // An app too long to leave room: the app alone, cut on a character boundary.
        let name = name_within_limit(&"é".repeat(100), "web-1", 42);
        assert!(name.len() <= 63 && name.starts_with("pals:é") && !name.contains('@'));
        // Exactly no room left for the host: the app alone, not an empty host.
        let app = "a".repeat(63 - "pals:".len() - "@:42".len());
        assert_eq!(name_within_limit(&app, "web-1", 42), format!("pals:{app}"));
        let app = &app[1..]; // one byte of room: one byte of the host
        assert_eq!(
            name_within_limit(app, "web-1", 42),
            format!("pals:{app}@w:42")
        );
        assert!(application_name("app").starts_with("pals:app@"));
    }

    #[test]
    fn sessions_keep_alive_and_name_themselves_unless_the_url_does() {
        let mut config: tokio_postgres::Config = "postgresql://h/db".parse().unwrap();
        session_settings(
            &mut config,
            "app",
            Duration::from_secs(3),
            Keepalives::default(),
        );
        assert_eq!(
            config.get_application_name(),
            Some(application_name("app").as_str())
        );
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));

        let mut config: tokio_postgres::Config = "postgresql://h/db?application_name=billing"
            .parse()
            .unwrap();
        let keepalives = Keepalives {
            idle: Some(Duration::from_secs(5)),
            ..Keepalives::default()
        };
        session_settings(&mut config, "app", Duration::from_secs(3), keepalives);
        assert_eq!(config.get_application_name(), Some("billing"));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));
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
}
