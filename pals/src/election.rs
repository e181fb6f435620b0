//! [`Election`]: leader election on one lock, that every replica can observe. Who leads
//! and a term are in `term`, following the leader in `observe`.

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use crate::coordination::Coordination;
use crate::core::Core;
use crate::deadline::sleep_until;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::identity::host_name;
use crate::lock::Lock;
use crate::metrics::Primitive;
use crate::on_drop::OnDrop;
use crate::sql::{self, Announcement};
use crate::tokens::report_backwards;

mod observe;
mod stop;
mod term;

pub use observe::Observer;
pub use term::{Leader, Term};

use stop::Stop;
use term::parse_micros;

/// How long a candidate waits before campaigning again after its term ended by a loss or
/// a failure, by default.
pub const DEFAULT_CAMPAIGN_BACKOFF: Duration = Duration::from_millis(500);
/// How often an observer checks the leader on its own, by default (a leader that dies
/// says nothing; a new leader is heard at once).
pub const DEFAULT_OBSERVE_RECHECK: Duration = Duration::from_secs(1);

/// The longest identity a candidate may have: it travels in a `NOTIFY` payload.
const MAX_IDENTITY: usize = 1024;

/// A hook called with a leader.
type Hook = Arc<dyn Fn(&Leader) + Send + Sync>;

/// Leader election among the replicas of an app: one leader at a time runs the work, and
/// every replica (candidate or not) can ask who leads, or follow each change.
///
/// Made by [`Locker::election`](crate::Locker::election). The leader holds the lock `name`
/// of the app (the same lock as [`Locker::lock`](crate::Locker::lock)`(name)`, [fenced](Lock::fenced)); once it has it, it writes its
/// identity, the time and its fencing token to the table `pals_leaders` (in the locker's
/// [schema](crate::LockerBuilder::schema); made on first use, as the fencing sequence is)
/// and announces it with `NOTIFY`. [`leader`](Election::leader) reads that row, and trusts
/// it only while the session that wrote it still holds the lock: one round trip, and never
/// a leader that is gone.
///
/// **One leader at a time, as far as a leader can know.** A leader learns that it lost
/// the lock when its connection closes (at once for a terminated backend or a restart;
/// within two [heartbeats](crate::LockerBuilder::heartbeat) for a silent network), and
/// its body is dropped then; the server may grant the lock to the next candidate a moment
/// before. Pass [`Term::fence`] with every write that must not come from two leaders,
/// and have the store refuse a lower one (see [`Lock::fenced`]).
///
/// The anchors: Kubernetes client-go `leaderelection` (OnStartedLeading /
/// OnStoppedLeading, ReleaseOnCancel) and etcd `concurrency.Election` (Campaign, Leader,
/// Observe).
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
/// # let url = pals_devdb::db_url().unwrap();
/// let locker = pals::Locker::new("doc-election", &url)?;
/// let election = locker.election("scheduler").identity("replica-a");
/// let observer = locker.election("scheduler");
/// let led = election
///     .run(|term| {
///         // The body may run again (a new term after a loss): it is made per term.
///         let observer = observer.clone();
///         async move {
///             // Only the leader runs this. If leadership is lost, the body is dropped
///             // where it stands, and the candidate campaigns again.
///             let leader = observer.leader().await?.expect("someone leads");
///             assert_eq!(leader.identity(), "replica-a");
///             assert_eq!(leader.fence(), term.fence());
///             Ok::<_, pals::Error>(term.identity().to_string())
///         }
///     })
///     .await??;
/// assert_eq!(led, "replica-a");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Election {
    core: Arc<Core>,
    coordination: Arc<Coordination>,
    lock: Lock,
    identity: Arc<str>,
    backoff: Duration,
    recheck: Duration,
    started: Option<Hook>,
    stopped: Option<Hook>,
}

/// How a term ended.
enum Led<T> {
    /// The body returned this; leadership was given up.
    Finished(T),
    /// Leadership was lost; the body was dropped.
    Lost,
}

impl Election {
    /// The election held on `lock` (made by the locker, fenced, waiting forever).
    pub(crate) fn new(core: &Arc<Core>, coordination: &Arc<Coordination>, lock: Lock) -> Election {
        let lock = lock.fenced().timeout(Duration::MAX);
        Election {
            core: Arc::clone(core),
            coordination: Arc::clone(coordination),
            lock: lock.counted_as(Primitive::Election, true),
            identity: default_identity().into(),
            backoff: DEFAULT_CAMPAIGN_BACKOFF,
            recheck: DEFAULT_OBSERVE_RECHECK,
            started: None,
            stopped: None,
        }
    }

    /// This candidate's identity, as [`leader`](Election::leader) and observers show it
    /// (default: `host:pid`). At most 1024 bytes.
    #[must_use]
    pub fn identity(mut self, identity: impl Into<String>) -> Election {
        self.identity = identity.into().into();
        self
    }

    /// How long to wait before campaigning again after a term ended by a loss or a failure
    /// (default 500 ms).
    #[must_use]
    pub fn backoff(mut self, backoff: Duration) -> Election {
        self.backoff = backoff;
        self
    }

    /// How often an [`Observer`] checks the leader on its own (default 1 s): the longest
    /// it takes to see that a leader died while no other took over.
    #[must_use]
    pub fn observe_recheck(mut self, interval: Duration) -> Election {
        self.recheck = interval;
        self
    }

    /// Called when this candidate becomes leader, before the body runs.
    #[must_use]
    pub fn on_started_leading(
        mut self,
        hook: impl Fn(&Leader) + Send + Sync + 'static,
    ) -> Election {
        self.started = Some(Arc::new(hook));
        self
    }

    /// Called when this candidate's term ends: the body returned (before leadership is
    /// given up), leadership was lost (after the body was dropped), the `run` future was
    /// dropped, or the body panicked.
    #[must_use]
    pub fn on_stopped_leading(
        mut self,
        hook: impl Fn(&Leader) + Send + Sync + 'static,
    ) -> Election {
        self.stopped = Some(Arc::new(hook));
        self
    }

    /// The lock the election is held on.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Campaigns, then runs `body` as leader; returns the body's result when it returns.
    ///
    /// Waits (without polling: the database queues the candidates) until this candidate
    /// holds the election's lock, announces itself, and runs `body` with its [`Term`]. If
    /// leadership is lost while the body runs (the lock's session ended or stopped
    /// answering), the body is dropped where it stands, and the candidate campaigns again
    /// after the [`backoff`](Election::backoff); so does a campaign that failed for a
    /// passing reason (the database down or restarting, a cancel). It returns `Err` for a
    /// misconfiguration ([`Error::is_misconfiguration`]) or an error in what the server
    /// was asked (a privilege revoked on the leaders table), which waiting would not mend.
    ///
    /// When the body returns, leadership is given up (the lock released) and its result
    /// returned. Dropping this future gives leadership up too (client-go's
    /// ReleaseOnCancel). To stop a candidate gracefully, see
    /// [`run_until`](Election::run_until).
    pub async fn run<F, Fut, T>(&self, body: F) -> Result<T, Error>
    where
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = T>,
    {
        let ran = self.run_until(std::future::pending(), body).await?;
        Ok(ran.expect("never stopped"))
    }

    /// [`run`](Election::run) until `stop` completes, for a graceful shutdown:
    ///
    /// - stopped while campaigning (or backing off): it leaves the line at once, `Ok(None)`;
    /// - stopped while leading: the body goes on (it should watch the same signal, and
    ///   finish the work in hand), and its result is returned when it returns,
    ///   `Ok(Some(result))`, leadership given up; if leadership is lost meanwhile, it does
    ///   not campaign again: `Ok(None)`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// let locker = pals::Locker::new("doc-run-until", &url)?;
    /// let (stop, stopped) = tokio::sync::watch::channel(false);
    /// let shutdown = {
    ///     let mut stopped = stopped.clone();
    ///     async move { let _ = stopped.wait_for(|stop| *stop).await; }
    /// };
    /// stop.send_replace(true); // SIGTERM came (here: at once)
    /// let jobs = locker
    ///     .election("worker")
    ///     .run_until(shutdown, |_term| {
    ///         let stopped = stopped.clone();
    ///         async move {
    ///             let mut jobs = 0;
    ///             while !*stopped.borrow() {
    ///                 jobs += 1; // the job in hand is finished before the check
    ///             }
    ///             jobs
    ///         }
    ///     })
    ///     .await?;
    /// assert!(matches!(jobs, None | Some(0))); // stopped while campaigning, or at once
    /// # Ok(()) }
    /// ```
    pub async fn run_until<S, F, Fut, T>(&self, stop: S, mut body: F) -> Result<Option<T>, Error>
    where
        S: Future<Output = ()>,
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = T>,
    {
        self.check_names()?;
        let mut stop = pin!(Stop::new(stop));
        loop {
            let Some((guard, leader)) = self.campaign_until(stop.as_mut()).await? else {
                return Ok(None);
            };
            match self.lead(guard, leader, stop.as_mut(), &mut body).await {
                Led::Finished(output) => return Ok(Some(output)),
                Led::Lost if stop.is_stopped() => return Ok(None),
                Led::Lost => {
                    if stop
                        .as_mut()
                        .unless_stopped(self.back_off())
                        .await
                        .is_none()
                    {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// What a candidate writes to the leaders table must go into SQL text: an election
    /// name with a NUL is refused, as is an identity too long for a `NOTIFY` payload or
    /// with a NUL (a string literal cannot hold one: the announcement would fail at every
    /// campaign).
    fn check_names(&self) -> Result<(), Error> {
        let name = self.lock.name();
        if name.contains('\0') {
            return Err(Error::InvalidConfig(format!(
                "the election {name:?} has a NUL byte in its name, which PostgreSQL cannot \
                 store in the leaders table; name it without one"
            )));
        }
        if self.identity.len() <= MAX_IDENTITY && !self.identity.contains('\0') {
            return Ok(());
        }
        Err(Error::InvalidConfig(format!(
            "the identity of a candidate in election \"{name}\" must be at most \
             {MAX_IDENTITY} bytes, without NUL; it is {} bytes",
            self.identity.len()
        )))
    }

    /// Campaigns until elected (`Some`) or stopped (`None`), backing off after a failure
    /// that may pass; a failure waiting would not mend is returned.
    async fn campaign_until<S: Future<Output = ()>>(
        &self,
        mut stop: Pin<&mut Stop<S>>,
    ) -> Result<Option<(LockGuard, Leader)>, Error> {
        loop {
            match stop.as_mut().unless_stopped(self.campaign()).await {
                None => return Ok(None),
                Some(Ok(elected)) => return Ok(Some(elected)),
                Some(Err(error)) if !error.is_transient() => return Err(error),
                Some(Err(error)) => {
                    tracing::warn!(election = %self.lock.name(), %error, "pals: campaign failed; trying again");
                    if stop
                        .as_mut()
                        .unless_stopped(self.back_off())
                        .await
                        .is_none()
                    {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// One term: the hooks, and the body, dropped if leadership is lost. A stop is noted
    /// while the body runs, and the body goes on: it finishes its work in hand.
    async fn lead<S, F, Fut, T>(
        &self,
        guard: LockGuard,
        leader: Leader,
        stop: Pin<&mut Stop<S>>,
        body: &mut F,
    ) -> Led<T>
    where
        S: Future<Output = ()>,
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = T>,
    {
        tracing::info!(election = %self.lock.name(), identity = %leader.identity, fence = leader.fence, "pals: elected leader");
        if let Some(started) = &self.started {
            started(&leader);
        }
        let term = Term {
            leader: leader.clone(),
            dead: guard.dead_watch(),
        };
        // The stopped-leading hook runs when the term ends, however: the body returned,
        // leadership was lost, this future was dropped, or the body panicked.
        let term_end = OnDrop::new(|| {
            if let Some(stopped) = &self.stopped {
                stopped(&leader);
            }
        });
        // A lost term's body is dropped within, before anything else happens.
        let finished = guard.unless_lost(stop.noting(body(term))).await;
        drop(term_end);
        let Some(output) = finished else {
            tracing::error!(election = %self.lock.name(), identity = %leader.identity, "pals: leadership lost; the body was stopped");
            return Led::Lost;
        };
        if let Err(error) = guard.release().await {
            tracing::warn!(election = %self.lock.name(), %error, "pals: giving up leadership failed; its session was closed");
        }
        tracing::info!(election = %self.lock.name(), "pals: leader stepped down");
        Led::Finished(output)
    }

    /// Waits the backoff, on the library's timer.
    async fn back_off(&self) {
        if let Some(until) = std::time::Instant::now().checked_add(self.backoff) {
            sleep_until(self.core.rt(), until).await;
        }
    }

    /// Waits for the lock, then announces this leader: the row, and the `NOTIFY`, on the
    /// coordination session (never on the lock's own).
    async fn campaign(&self) -> Result<(LockGuard, Leader), Error> {
        let table = self.coordination.leaders_table(true).await?;
        loop {
            let guard = self.lock.acquire().await?;
            let (Some(token), Some(pid)) = (guard.fence(), guard.backend_pid()) else {
                continue; // not fenced: cannot happen (the lock is made fenced)
            };
            let announcement = Announcement {
                table,
                key: self.lock.key(),
                name: self.lock.name(),
                identity: &self.identity,
                token,
                pid,
            };
            let sql = sql::announce(&announcement);
            let answer = self
                .coordination
                .query(&sql, "the election's announcement")
                .await?;
            match sql::first_value(&answer).and_then(parse_micros) {
                Some(since) => {
                    let identity = self.identity.to_string();
                    let leader = Leader {
                        identity,
                        since,
                        fence: token,
                    };
                    return Ok((guard, leader));
                }
                // A later term holds the lock and wrote its row: this grant was lost
                // meanwhile. Campaign again, after the backoff.
                None => {
                    tracing::warn!(election = %self.lock.name(), "pals: elected, but a later leader had announced itself; campaigning again");
                    drop(guard);
                    self.back_off().await;
                }
            }
        }
    }

    /// Who leads now, in one round trip (after the first call of a locker, which makes
    /// sure the table exists), on the locker's coordination session and bounded by its
    /// connect timeout: `None` when nobody does, or the lock's holder has not
    /// announced itself yet (or is not a pals election: a plain lock holder, or PALs).
    ///
    /// A row of the leaders table is believed only while the session that wrote it holds
    /// the lock, and if its token is not older than the newest this locker has seen for
    /// the election (its own grants, and rows it believed before): a row set back to an
    /// older term by hand, or written after the fence sequence was set back, reads as
    /// `None`, logged at error level. A row edited by hand with its token kept cannot be
    /// told from the real one: keep other roles from writing the table (see
    /// [`LockerBuilder::schema`](crate::LockerBuilder::schema)).
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        let table = self.coordination.leaders_table(false).await?;
        let sql = sql::leader(table, self.lock.key());
        let answer = self.coordination.query(&sql, "the leader's lookup").await?;
        let leader = sql::rows(&answer).next().and_then(|row| {
            Some(Leader {
                identity: row.get(0)?.to_string(),
                since: parse_micros(row.get(1)?)?,
                fence: row.get(2)?.parse().ok()?,
            })
        });
        Ok(leader.filter(|leader| self.believed(leader)))
    }

    /// Whether a leaders row is not older than what this locker has seen (remembered if
    /// so); an older one is reported.
    fn believed(&self, leader: &Leader) -> bool {
        let tokens = &self.core.tokens;
        let Err(backwards) = tokens.believe_row(self.lock.key(), leader.fence) else {
            return true;
        };
        report_backwards(self.lock.name(), "the leaders table's row", &backwards);
        false
    }

    /// Follows the leader: [`Observer::changed`] yields the current leader first, then each
    /// change, in order. A new leader is heard at once (its `NOTIFY`); a leader that dies
    /// with nobody to take over is seen at the next [recheck](Election::observe_recheck).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// let locker = pals::Locker::new("doc-observe", &url)?;
    /// let election = locker.election("scheduler");
    /// let mut observer = election.clone().observe_recheck(Duration::from_millis(100)).observe();
    /// assert_eq!(observer.changed().await, None); // nobody leads yet
    ///
    /// let candidate = election.identity("replica-b");
    /// candidate.run(|_term| async {}).await?; // leads, then steps down
    /// let leader = observer.changed().await.expect("heard at once");
    /// assert_eq!(leader.identity(), "replica-b");
    /// assert_eq!(observer.changed().await, None); // seen at the next recheck
    /// # Ok(()) }
    /// ```
    pub fn observe(&self) -> Observer {
        Observer::start(self)
    }
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.lock.name())
            .field("identity", &self.identity)
            .finish()
    }
}

/// `host:pid`.
fn default_identity() -> String {
    format!("{}:{}", host_name(), std::process::id())
}
