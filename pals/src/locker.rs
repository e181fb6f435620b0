//! [`Locker`]: the lock factory, the façade of one application's locks. It hands out the
//! locks, semaphores and elections of its app; they share its `Core` (sessions, turns,
//! background releases) and its `Coordination` (schema objects, listening). Built by
//! `LockerBuilder` (in `builder`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::coordination::Coordination;
use crate::core::Core;
use crate::election::Election;
use crate::error::Error;
use crate::inspect::{self, Holder, RunRecord};
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
/// # fn pals_db_url() -> String { pals_devdb::db_url().unwrap() }
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

/// The names of the locks in use that a locker made, by key, for `holders()`: a name is
/// kept while a `Lock`, a guard or a waiter has it, and forgotten after, so that memory
/// follows the locks in use, not every name ever made (names formatted from requests,
/// `"tenant-{id}"`, are unbounded). Each name is shared: locks made again with it get the
/// registry's copy. Read-locked on the hot path (a name already known only reads).
#[derive(Default)]
struct Names(RwLock<Registry>);

#[derive(Default)]
struct Registry {
    by_key: HashMap<i64, Arc<str>>,
    /// The bytes of the names in `by_key`.
    bytes: usize,
    /// A sweep (forgetting names nobody else has) comes once the registry holds more than
    /// this many names, or bytes: twice what the last sweep kept, and a floor.
    sweep_at_len: usize,
    sweep_at_bytes: usize,
    /// Names not remembered since the last sweep, the registry being full.
    refused: usize,
}

/// How many names a locker remembers for `holders()`; beyond, keys show without a name.
const NAMES_REMEMBERED: usize = 100_000;
/// The registry sweeps once it holds more names than this, or twice what it kept after
/// the last sweep.
const NAMES_SWEEP_FLOOR: usize = 1024;
/// The registry sweeps once its names take more bytes than this, or twice what it kept
/// after the last sweep: names nobody uses take at most this much, or as much as those in
/// use.
const NAMES_SWEEP_BYTES: usize = 1 << 20;

impl Names {
    /// The registry's copy of `full_name` (the name of `key`), remembered if it was not:
    /// unless the registry is full of names in use, or `key` is another name's (a 64-bit
    /// collision).
    fn intern(&self, key: i64, full_name: String) -> Arc<str> {
        {
            let names = self.0.read().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = names.by_key.get(&key).filter(|n| ***n == *full_name) {
                return Arc::clone(known);
            }
        }
        let full_name: Arc<str> = full_name.into();
        let mut names = self.0.write().unwrap_or_else(|e| e.into_inner());
        names.remember(key, &full_name)
    }

    /// `read` with the names known now (read-locked meanwhile: no copy of a registry of up
    /// to 100 000 names).
    fn with<T>(&self, read: impl FnOnce(&HashMap<i64, Arc<str>>) -> T) -> T {
        read(&self.0.read().unwrap_or_else(|e| e.into_inner()).by_key)
    }
}

impl Registry {
    /// Remembers `full_name` for `key` (swept first if due), or gives back the copy that
    /// came meanwhile.
    fn remember(&mut self, key: i64, full_name: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.by_key.get(&key) {
            if **known == **full_name {
                return Arc::clone(known);
            }
            if Arc::strong_count(known) > 1 {
                return Arc::clone(full_name); // a collision with a name in use
            }
        }
        if self.sweep_due(full_name.len()) {
            self.sweep();
        }
        if self.by_key.len() >= NAMES_REMEMBERED {
            self.refused += 1;
            return Arc::clone(full_name);
        }
        self.bytes += full_name.len();
        if let Some(old) = self.by_key.insert(key, Arc::clone(full_name)) {
            self.bytes -= old.len();
        }
        Arc::clone(full_name)
    }

    /// Whether to sweep before adding a name of `adding` bytes: past twice what the last
    /// sweep kept (in names or bytes), or, full, once a sixteenth of it was refused since.
    /// Either way a sweep's cost is spread over as many names added: a constant each.
    fn sweep_due(&self, adding: usize) -> bool {
        if self.by_key.len() >= NAMES_REMEMBERED {
            return self.refused >= NAMES_REMEMBERED / 16;
        }
        self.by_key.len() >= self.sweep_at_len.max(NAMES_SWEEP_FLOOR)
            || self.bytes + adding > self.sweep_at_bytes.max(NAMES_SWEEP_BYTES)
    }

    /// Forgets the names that only the registry has: no lock, guard or waiter uses them.
    /// (Under the write lock, so no one can take a copy meanwhile.)
    fn sweep(&mut self) {
        self.by_key.retain(|_, name| Arc::strong_count(name) > 1);
        self.bytes = self.by_key.values().map(|name| name.len()).sum();
        self.sweep_at_len = 2 * self.by_key.len();
        self.sweep_at_bytes = 2 * self.bytes;
        self.refused = 0;
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
    /// Any other name works, of any length and with any bytes (a NUL too: the name only
    /// feeds the key's hash, as in PALs; an [election](Locker::election)'s name is written
    /// to the database, and may not hold a NUL). The key is hashed once, here. **Memory:**
    /// the name is kept once per locker, shared by every `Lock` and guard made with it, and
    /// given back once none is left: a locker keeps the names of the locks in use, not of
    /// every name it has seen, so names formatted from requests (`"tenant-{id}"`) cost
    /// memory only while their locks are used (the names of up to 1 MiB of unused locks
    /// may linger until the next sweep).
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
        let full_name = full_name(&inner.core.app, name);
        let key = key_of_full_name(&full_name);
        let full_name = inner.names.intern(key, full_name);
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
    /// # let url = pals_devdb::db_url().unwrap();
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
    /// locks this locker has made and still uses (a `Lock`, a guard or a waiter has them)
    /// carry their names; see [`lock`](Locker::lock) for why others may not. Asked on the
    /// locker's coordination session, bounded by the connect timeout.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
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

    /// The last `limit` runs of the [`once_per`](crate::Lock::once_per) job `name` of this
    /// locker's app, newest first, from any replica: which tick each was for, when it
    /// started and ended, which replica ran it, and how it ended. Empty if the job never
    /// ran (or the runs table was never made). [`inspect::runs_table`] prints them.
    ///
    /// A run still written down as running reads [`Running`](inspect::RunOutcome::Running)
    /// while its replica's session holds the job's lock and it is the newest run; else
    /// [`Vanished`](inspect::RunOutcome::Vanished): its replica died (or its session was
    /// cut) before it could write the end.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// # let app = format!("doc-runs-{}-{:?}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    /// let locker = pals::Locker::new(&app, &url)?;
    /// let job = locker.lock("cleanup").once_per(Duration::from_secs(60));
    /// job.run(async { Err::<(), _>("disk full") }).await?;
    ///
    /// let runs = locker.runs("cleanup", 5).await?;
    /// assert_eq!(runs[0].outcome, pals::inspect::RunOutcome::Failed);
    /// assert_eq!(runs[0].detail.as_deref(), Some("disk full"));
    /// print!("{}", pals::inspect::runs_table(&runs));
    /// # Ok(()) }
    /// ```
    pub async fn runs(&self, name: &str, limit: u32) -> Result<Vec<RunRecord>, Error> {
        let coordination = &self.inner.coordination;
        let key = key_of_full_name(&full_name(&self.inner.core.app, name));
        let statement = sql::runs(&coordination.runs_table_name(), key, limit);
        match coordination.query(&statement, "runs()").await {
            Ok(answer) => Ok(inspect::runs(&answer)),
            Err(Error::Database(error)) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                Ok(Vec::new())
            }
            Err(error) => Err(error),
        }
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
    /// # let url = pals_devdb::db_url().unwrap();
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

/// What the attribute's run-time side counts, and what the start-up check reads.
impl Locker {
    /// The shared parts of this locker's lock path.
    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// A call of `#[pals::exclusive(on_busy = "skip")]` did not run its body: the lock
    /// `full_name` was busy (or, with `once_per`, its tick ran already).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize, len: usize) -> String {
        format!("app.{i}-{}", "x".repeat(len))
    }

    #[test]
    fn a_name_is_shared_while_in_use_and_forgotten_after() {
        let names = Names::default();
        let kept = names.intern(1, name(1, 10));
        assert!(
            Arc::ptr_eq(&kept, &names.intern(1, name(1, 10))),
            "one copy"
        );
        for i in 2..(3 * NAMES_SWEEP_FLOOR) {
            drop(names.intern(i as i64, name(i, 10)));
        }
        names.with(|by_key| {
            assert!(by_key.len() <= NAMES_SWEEP_FLOOR, "{}", by_key.len());
            assert_eq!(by_key.get(&1), Some(&kept), "the name in use is kept");
        });
    }

    #[test]
    fn unused_names_take_a_bounded_number_of_bytes() {
        let names = Names::default();
        let in_use: Vec<_> = (0..4)
            .map(|i| names.intern(i, name(i as usize, 1 << 16)))
            .collect();
        for i in 4..400 {
            drop(names.intern(i, name(i as usize, 1 << 16)));
        }
        let bytes = names.0.read().unwrap().bytes;
        assert!(bytes <= 2 * NAMES_SWEEP_BYTES, "{bytes}");
        names.with(|by_key| assert!(in_use.iter().all(|n| by_key.values().any(|k| k == n))));
    }

    #[test]
    fn a_key_of_another_name_in_use_is_not_taken_over() {
        let names = Names::default();
        let first = names.intern(7, "app.a".into());
        let second = names.intern(7, "app.b".into());
        assert_eq!((&*first, &*second), ("app.a", "app.b"));
        names.with(|by_key| assert_eq!(by_key.get(&7), Some(&first)));
        drop(first);
        let third = names.intern(7, "app.b".into());
        // No longer in use: taken over by the other name.
        names.with(|by_key| assert_eq!(by_key.get(&7), Some(&third)));
    }
}
