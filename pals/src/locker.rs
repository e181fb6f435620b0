//! [`Locker`]: the lock factory, the façade of one application's locks. It hands out the
//! locks, semaphores and elections of its app; they share its `Core` (sessions, turns,
//! background releases) and its `Coordination` (schema objects, listening). Built by
//! `LockerBuilder` (in `builder`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::coordination::Coordination;
use crate::core::Core;
use crate::election::Election;
use crate::error::Error;
use crate::inspect::{self, Holder};
use crate::key::{full_name, key_of_full_name};
use crate::lock::Lock;
use crate::semaphore::{permit_name, Semaphore};
use crate::sql;

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
    core: Arc<Core>,
    coordination: Arc<Coordination>,
    /// How often a session that holds a lock is checked (`None`: never).
    heartbeat: Option<Duration>,
    names: Names,
}

/// The names of the keys a locker has made locks for, for `holders()`. Read-locked on the
/// hot path (a name is written once: a lock made again only reads).
#[derive(Default)]
struct Names(RwLock<HashMap<i64, Arc<str>>>);

/// How many names a locker remembers for `holders()`; beyond, keys show without a name.
const NAMES_REMEMBERED: usize = 100_000;

impl Names {
    /// Remembers `full_name` for `key`, unless it is known or the registry is full.
    fn register(&self, key: i64, full_name: &Arc<str>) {
        let known = {
            let names = self.0.read().unwrap_or_else(|e| e.into_inner());
            names.contains_key(&key) || names.len() >= NAMES_REMEMBERED
        };
        if !known {
            let mut names = self.0.write().unwrap_or_else(|e| e.into_inner());
            if names.len() < NAMES_REMEMBERED {
                names.entry(key).or_insert_with(|| Arc::clone(full_name));
            }
        }
    }

    /// `read` with the names known now (read-locked meanwhile: no copy of a registry of up
    /// to 100 000 names).
    fn with<T>(&self, read: impl FnOnce(&HashMap<i64, Arc<str>>) -> T) -> T {
        read(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Locker {
    /// A locker of these parts (see `LockerBuilder::build`).
    pub(crate) fn from_parts(
        core: Core,
        coordination: Coordination,
        heartbeat: Option<Duration>,
    ) -> Locker {
        Locker {
            inner: Arc::new(LockerInner {
                core: Arc::new(core),
                coordination: Arc::new(coordination),
                heartbeat,
                names: Names::default(),
            }),
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
        let inner = &self.inner;
        let full_name: Arc<str> = full_name(&inner.core.app, name).into();
        let key = key_of_full_name(&full_name);
        inner.names.register(key, &full_name);
        Lock::new(
            &inner.core,
            &inner.coordination,
            full_name,
            key,
            name.is_empty(),
        )
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
        let locks = (0..permits).map(|i| self.lock(&permit_name(name, i)));
        Semaphore::new(&self.inner.core, &self.inner.coordination, name, locks)
    }

    /// The leader election called `name` (held on the lock `name` of this app): see
    /// [`Election`].
    pub fn election(&self, name: &str) -> Election {
        Election::new(&self.inner.core, &self.inner.coordination, self.lock(name))
    }

    /// The advisory locks (on bigint keys) held or awaited in this locker's database right
    /// now, by anyone
    /// (pals, PALs, plain SQL): key, mode, granted or waiting, the session's pid,
    /// application_name, client address and start, and how long it has waited. Keys of
    /// locks this locker has made carry their names. Asked on the locker's coordination
    /// session, bounded by the connect timeout.
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
        let coordination = &self.inner.coordination;
        let answer = coordination.query(&sql::holders(), "holders()").await?;
        let names = &self.inner.names;
        Ok(names.with(|names| inspect::holders(&answer, names)))
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
        let inner = &self.inner;
        Lock::new(
            &inner.core,
            &inner.coordination,
            key.to_string().into(),
            key,
            false,
        )
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
        self.inner.core.background.none_left().await;
    }

    /// The application name that namespaces this locker's lock names.
    pub fn app(&self) -> &str {
        &self.inner.core.app
    }

    /// How long [`Lock::acquire`](crate::Lock::acquire) waits unless the lock sets its own timeout.
    pub fn default_timeout(&self) -> Duration {
        self.inner.core.default_timeout
    }

    /// How long opening a database connection may take.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.core.connect_timeout
    }

    /// How often a connection that holds a lock is checked (`None`: never).
    pub fn heartbeat(&self) -> Option<Duration> {
        self.inner.heartbeat
    }

    /// How far a lock is handed over within this process before it goes back to the
    /// database: at most this many handoffs in a row, within this time of the grant (see
    /// [`LockerBuilder::handoff_limit`](crate::LockerBuilder::handoff_limit)).
    pub fn handoff_limit(&self) -> (u32, Duration) {
        let limit = self.inner.core.handoff;
        (limit.in_a_row, limit.within)
    }

    /// The most database connections this locker opens at once.
    pub fn pool_size(&self) -> usize {
        self.inner.core.pool.max_size()
    }

    /// How long a pooled connection beyond the first may carry nothing before it is
    /// closed (`Duration::MAX`: never); see
    /// [`LockerBuilder::idle_timeout`](crate::LockerBuilder::idle_timeout).
    ///
    /// ```
    /// let locker = pals::Locker::new("my-app-name", "postgresql://localhost/db")?;
    /// assert_eq!(locker.idle_timeout(), pals::DEFAULT_IDLE_TIMEOUT);
    /// # Ok::<(), pals::Error>(())
    /// ```
    pub fn idle_timeout(&self) -> Duration {
        self.inner.core.pool.idle_timeout()
    }
}

/// What the attribute's run-time side counts.
impl Locker {
    /// A call of `#[pals::exclusive(on_busy = "skip")]` did not run its body: the lock
    /// `full_name` was busy.
    pub(crate) fn count_skip(&self, full_name: &str) {
        self.inner.core.meter.skipped(full_name);
    }
}

impl fmt::Debug for Locker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locker")
            .field("app", &self.app())
            .field("pool_size", &self.pool_size())
            .field("default_timeout", &self.default_timeout())
            .finish_non_exhaustive()
    }
}
