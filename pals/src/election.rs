//! [`Election`]: leader election on one lock, that every replica can observe.

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::listen::{Event, LEADER_CHANNEL};
use crate::metrics::Kind;
use crate::statement::literal;
use crate::{runtime, Error, Lock, LockGuard, Locker};

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
/// Made by [`Locker::election`]. The leader holds the lock `name` of the app (the same
/// lock as [`Locker::lock`]`(name)`, [fenced](Lock::fenced)); once it has it, it writes its
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
/// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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
    locker: Locker,
    lock: Lock,
    identity: Arc<str>,
    backoff: Duration,
    recheck: Duration,
    started: Option<Hook>,
    stopped: Option<Hook>,
}

/// Who leads an election, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    identity: String,
    since: SystemTime,
    fence: u64,
}

impl Leader {
    /// The leader's identity (see [`Election::identity`]).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// When it was elected (the database server's clock).
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// The fencing token of its term: greater for every later term.
    pub fn fence(&self) -> u64 {
        self.fence
    }
}

/// One term of leadership, as the body of [`Election::run`] sees it.
pub struct Term {
    leader: Leader,
    dead: watch::Receiver<bool>,
}

impl Term {
    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.leader.identity
    }

    /// The fencing token of this term (see [`Lock::fenced`]): pass it with every write
    /// the leader makes, so that a deposed leader's late writes are refused.
    pub fn fence(&self) -> u64 {
        self.leader.fence
    }

    /// When this term began.
    pub fn since(&self) -> SystemTime {
        self.leader.since
    }

    /// False once leadership is known to be lost.
    pub fn is_leader(&self) -> bool {
        !*self.dead.borrow()
    }

    /// Completes when leadership is known to be lost (see [`LockGuard::lost`]).
    /// [`Election::run`] already drops the body then; this is for work the body hands
    /// elsewhere.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut dead = self.dead.clone();
        async move {
            let _ = dead.wait_for(|dead| *dead).await;
        }
    }
}

impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Term")
            .field("leader", &self.leader)
            .field("is_leader", &self.is_leader())
            .finish()
    }
}

impl Election {
    pub(crate) fn new(locker: &Locker, name: &str) -> Election {
        Election {
            locker: locker.clone(),
            lock: (locker.lock(name).fenced().timeout(Duration::MAX))
                .counted_as(Kind::Election, true),
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
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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
        if self.identity.len() > MAX_IDENTITY || self.identity.contains('\0') {
            return Err(Error::InvalidConfig(format!(
                "the identity of a candidate in election \"{}\" must be at most \
                 {MAX_IDENTITY} bytes, without NUL; it is {} bytes",
                self.lock.name(),
                self.identity.len()
            )));
        }
        let mut stop = pin!(Stop::new(stop));
        loop {
            let campaign = stop.as_mut().unless_stopped(self.campaign()).await;
            let (guard, leader) = match campaign {
                None => return Ok(None),
                Some(Ok(elected)) => elected,
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
                    continue;
                }
            };
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
            let term_end = TermEnd {
                hook: self.stopped.as_ref(),
                leader: &leader,
            };
            // A stop is noted while the body runs, and the body goes on: it finishes its
            // work in hand.
            let body = body(term);
            let noting_stop = async {
                let mut body = pin!(body);
                std::future::poll_fn(|cx| {
                    let _ = stop.as_mut().poll_stopped(cx);
                    body.as_mut().poll(cx)
                })
                .await
            };
            // A lost term's body is dropped within, before anything else happens.
            let finished = guard.unless_lost(noting_stop).await;
            drop(term_end);
            match finished {
                Some(output) => {
                    if let Err(error) = guard.release().await {
                        tracing::warn!(election = %self.lock.name(), %error, "pals: giving up leadership failed; its session was closed");
                    }
                    tracing::info!(election = %self.lock.name(), "pals: leader stepped down");
                    return Ok(Some(output));
                }
                None => {
                    tracing::error!(election = %self.lock.name(), identity = %leader.identity, "pals: leadership lost; the body was stopped");
                    drop(guard);
                    if stop.is_stopped() {
                        return Ok(None);
                    }
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

    /// Waits the backoff, on the library's timer.
    async fn back_off(&self) {
        let rt = self.locker.rt();
        if let Some(until) = std::time::Instant::now().checked_add(self.backoff) {
            runtime::sleep_until(rt, until).await;
        }
    }

    /// Waits for the lock, then announces this leader: the row, and the `NOTIFY`.
    async fn campaign(&self) -> Result<(LockGuard, Leader), Error> {
        let objects = self.locker.objects();
        let table = Arc::clone(objects.leaders(self.locker.pool(), true).await?);
        loop {
            let guard = self.lock.acquire().await?;
            let (Some(token), Some(pid)) = (guard.fence(), guard.backend_pid()) else {
                continue; // not fenced: cannot happen (the lock is made fenced)
            };
            let sql = announce(
                &table,
                self.lock.key(),
                self.lock.name(),
                &self.identity,
                token,
                pid,
            );
            let turn = self.locker.pool().turn().await?;
            let answer = turn.query(&sql).await?;
            let since = crate::connection::first_value(&answer).and_then(parse_micros);
            match since {
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
    /// sure the table exists): `None` when nobody does, or the lock's holder has not
    /// announced itself yet (or is not a pals election: a plain lock holder, or PALs).
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        let table = self
            .locker
            .objects()
            .leaders(self.locker.pool(), false)
            .await?;
        let sql = format!(
            "SELECT l.identity, (extract(epoch FROM l.since) * 1000000)::int8::text, l.token::text \
             FROM {table} l WHERE l.key = {key} AND {HOLDS}",
            key = self.lock.key()
        );
        let turn = self.locker.pool().turn().await?;
        let answer = turn.query(&sql).await?;
        let leader = answer.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(Leader {
                identity: row.get(0)?.to_string(),
                since: parse_micros(row.get(1)?)?,
                fence: row.get(2)?.parse().ok()?,
            }),
            _ => None,
        });
        Ok(leader)
    }

    /// Follows the leader: [`Observer::changed`] yields the current leader first, then each
    /// change, in order. A new leader is heard at once (its `NOTIFY`); a leader that dies
    /// with nobody to take over is seen at the next [recheck](Election::observe_recheck).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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
        let (tell, changes) = mpsc::unbounded_channel();
        let election = self.clone();
        let task = self.locker.rt().spawn(observe(election, tell));
        Observer {
            changes,
            task: task.abort_handle(),
        }
    }
}

/// Follows one election for an [`Observer`]; ends when the observer is dropped.
async fn observe(election: Election, tell: mpsc::UnboundedSender<Option<Leader>>) {
    let key = election.lock.key();
    let mut events = election.locker.listener_subscription();
    let rt = election.locker.rt().clone();
    events.up(&rt, election.locker.connect_timeout()).await;
    let mut seen = Seen::default();
    loop {
        match election.leader().await {
            Ok(leader) => {
                if let Some(change) = seen.change(leader, true) {
                    if tell.send(change).is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "pals: an observer could not read the leader"),
        }
        let recheck = tokio::time::sleep(election.recheck);
        let mut recheck = pin!(recheck);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Event::Notified { channel, payload }) if &*channel == LEADER_CHANNEL => {
                        let Some(leader) = parse_announcement(&payload, key) else { continue };
                        if let Some(change) = seen.change(Some(leader), false) {
                            if tell.send(change).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Event::Notified { .. }) => {}
                    Some(Event::Resync) => break,
                    None => recheck.as_mut().await,
                },
                _ = recheck.as_mut() => break,
                _ = tell.closed() => return,
            }
        }
    }
}

/// Calls the stopped-leading hook when dropped.
struct TermEnd<'a> {
    hook: Option<&'a Hook>,
    leader: &'a Leader,
}

impl Drop for TermEnd<'_> {
    fn drop(&mut self) {
        if let Some(hook) = self.hook {
            hook(self.leader);
        }
    }
}

/// A stop signal that is remembered once it has come.
struct Stop<S> {
    signal: Option<Pin<Box<S>>>,
}

impl<S: Future<Output = ()>> Stop<S> {
    fn new(signal: S) -> Stop<S> {
        Stop {
            signal: Some(Box::pin(signal)),
        }
    }

    fn is_stopped(&self) -> bool {
        self.signal.is_none()
    }

    /// Ready once the stop has come (and from then on).
    fn poll_stopped(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &mut this.signal {
            None => Poll::Ready(()),
            Some(signal) => {
                ready!(signal.as_mut().poll(cx));
                this.signal = None;
                Poll::Ready(())
            }
        }
    }

    /// `work`'s output, or `None` if the stop comes first.
    async fn unless_stopped<F: Future>(mut self: Pin<&mut Self>, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if self.as_mut().poll_stopped(cx).is_ready() {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx).map(Some)
        })
        .await
    }
}

/// What an observer has told: changes only.
#[derive(Default)]
struct Seen {
    told: bool,
    current: Option<Leader>,
    /// The highest fencing token told: an announcement of an older term is stale.
    highest: u64,
}

impl Seen {
    /// `leader` as the database says it now (`read`), or as an announcement says it (which
    /// may come late: one older than the highest told is ignored). A read is the truth,
    /// even with a lower token than told before (the sequence was reset by hand).
    fn change(&mut self, leader: Option<Leader>, read: bool) -> Option<Option<Leader>> {
        let changed = match &leader {
            _ if !self.told => true,
            Some(new) if !read => new.fence > self.highest,
            _ => leader != self.current,
        };
        if !changed {
            return None;
        }
        self.told = true;
        if let Some(new) = &leader {
            self.highest = if read {
                new.fence
            } else {
                self.highest.max(new.fence)
            };
        }
        self.current = leader.clone();
        Some(leader)
    }
}

/// Each change of an election's leader; made by [`Election::observe`].
pub struct Observer {
    changes: mpsc::UnboundedReceiver<Option<Leader>>,
    task: AbortHandle,
}

impl Observer {
    /// The leader after the next change: the current one on the first call, then each new
    /// leader in order, and `None` when a leader is gone and nobody has taken over (yet).
    /// Waits for the next change, forever if none comes (it is not a stream that ends:
    /// `while let Some(..)` would stop at the first "nobody leads"); cancel-safe.
    pub async fn changed(&mut self) -> Option<Leader> {
        match self.changes.recv().await {
            Some(change) => change,
            None => std::future::pending().await, // the task is aborted only on drop
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
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

/// Whether the session that wrote row `l` of the leaders table holds its election's lock.
const HOLDS: &str = "EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' \
    AND p.objsubid = 1 AND p.granted AND p.mode = 'ExclusiveLock' AND p.pid = l.pid \
    AND ((p.classid::int8 << 32) | p.objid::int8) = l.key \
    AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database()))";

/// The statement that records a new leader and notifies observers, unless a later term
/// has written its row and still holds the lock (then it returns no row). A row whose
/// writer no longer holds the lock, or is this session (an earlier term of it), is
/// overwritten whatever its token: a sequence reset by hand must not keep every later
/// leader from announcing itself.
fn announce(table: &str, key: i64, name: &str, identity: &str, token: u64, pid: i32) -> String {
    format!(
        "WITH announced AS (\
           INSERT INTO {table} AS l (key, name, identity, since, token, pid) \
           VALUES ({key}, {name}, {identity}, now(), {token}, {pid}) \
           ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name, identity = EXCLUDED.identity, \
             since = EXCLUDED.since, token = EXCLUDED.token, pid = EXCLUDED.pid \
           WHERE l.token < EXCLUDED.token OR l.pid = EXCLUDED.pid OR NOT {HOLDS} \
           RETURNING key, token, (extract(epoch FROM since) * 1000000)::int8 AS micros, identity) \
         SELECT micros::text, pg_notify('{LEADER_CHANNEL}', \
           key || ' ' || token || ' ' || micros || ' ' || identity)::text FROM announced",
        name = literal(name),
        identity = literal(identity),
    )
}

/// A leader from a `pals_leader` payload, if it is of the election on `key`.
fn parse_announcement(payload: &str, key: i64) -> Option<Leader> {
    let mut parts = payload.splitn(4, ' ');
    (parts.next()?.parse::<i64>().ok()? == key).then_some(())?;
    let fence = parts.next()?.parse().ok()?;
    let since = parse_micros(parts.next()?)?;
    let identity = parts.next()?.to_string();
    Some(Leader {
        identity,
        since,
        fence,
    })
}

/// Microseconds since the epoch, as the statements above write them.
fn parse_micros(micros: &str) -> Option<SystemTime> {
    let micros: i64 = micros.parse().ok()?;
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// `host:pid`.
fn default_identity() -> String {
    format!("{}:{}", crate::locker::host_name(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(fence: u64) -> Leader {
        Leader {
            identity: format!("l{fence}"),
            since: UNIX_EPOCH,
            fence,
        }
    }

    #[test]
    fn observers_are_told_changes_in_term_order() {
        let mut seen = Seen::default();
        assert_eq!(
            seen.change(None, true),
            Some(None),
            "the first state is told"
        );
        assert_eq!(seen.change(None, true), None);
        assert_eq!(seen.change(Some(leader(5)), false), Some(Some(leader(5))));
        assert_eq!(seen.change(Some(leader(5)), true), None, "no change");
        assert_eq!(
            seen.change(Some(leader(3)), false),
            None,
            "a late announcement"
        );
        assert_eq!(seen.change(None, true), Some(None));
        assert_eq!(
            seen.change(Some(leader(5)), false),
            None,
            "gone leaders stay gone"
        );
        assert_eq!(seen.change(Some(leader(9)), false), Some(Some(leader(9))));
        // The sequence was reset: the database's word stands, and later terms count.
        assert_eq!(seen.change(Some(leader(1)), true), Some(Some(leader(1))));
        assert_eq!(seen.change(Some(leader(2)), false), Some(Some(leader(2))));
    }

    #[test]
    fn announcements_are_read_back() {
        let parsed = parse_announcement("-7 12 1700000000000000 host a:1", -7).unwrap();
        assert_eq!(parsed.identity(), "host a:1");
        assert_eq!(parsed.fence(), 12);
        assert_eq!(
            parsed.since(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert!(parse_announcement("-7 12 1700000000000000 x", 7).is_none());
        assert!(announce("t", 1, "a.b", "it's", 3, 4).contains("'it''s'"));
    }
}
