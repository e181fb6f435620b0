//! The sessions of one locker: how many may be open, and which one a statement goes to.
//!
//! Why not deadpool (or bb8): their checkout is exclusive, one user per connection until it
//! is returned, while pals shares one session among thousands of held locks and the instant
//! statements of many callers; and a returned connection is recycled only at its next
//! checkout, while a pals session must be kept in step with the server at every statement
//! (see `session`). What is left here is small: slots, picking, and closing idle sessions.
//!
//! A lock taken at once (`pg_try_advisory_lock`) goes to a shared session: one with nothing
//! in flight; else one with only unlocks in flight (an unlock never waits: the statement is
//! answered right behind it), or, when the one thing in the way is an unlock of the same key
//! in flight, that session once the unlock's answer is in; else a new one while there is
//! room; else the least busy. Unlocks in flight are what one caller leaves behind when it
//! drops its guards (they are released in the background): counted as load, they would grow
//! the pool for a caller that never runs two statements at once. A lock that must be
//! waited for waits on an idle session taken for it alone (a statement queued behind a wait
//! would wait too); once the wait ends the session is shared again. One slot is kept for
//! waits: instant statements open at most `size - 1` sessions, unless no open or opening
//! session could take the statement. Among sessions equally fit, the one open longest is
//! picked: light load stays on the first sessions, and the others fall idle.
//!
//! Sessions beyond the first (the one open longest) that stay idle (`Session::is_idle`:
//! no entry, nothing in flight, no wait, no reconcile) for the idle timeout are closed, so a
//! quiet pool keeps one session, and a session that carries a lock is never closed. One
//! task per pool does it while the pool has more than one session (`close_idle_sessions`):
//! it decides and takes a session out under the pool's lock, where pickers reserve, so no
//! picker can take a session that is being closed; and it sleeps until the earliest time a
//! session could be due (a session busy now falls idle no sooner than now).
//!
//! Every open connection counts against the pool size until its connection task has ended,
//! including one that is closing.

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};

use crate::connection::{self, ConnectionSettings, SessionFacts};
use crate::deadline::until;
use crate::error::Error;
use crate::key::Mode;
use crate::metrics::Meter;
use crate::session::{Fit, Limits, Session, Ticket};

/// More connections than any PostgreSQL server accepts from one client in practice.
const MAX_POOL_SIZE: usize = 100_000;

/// The sessions of one locker.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

/// How a pool opens and keeps its sessions.
pub(crate) struct PoolConfig {
    pub(crate) connection: ConnectionSettings,
    /// The most sessions open at once.
    pub(crate) size: usize,
    /// How long a session beyond the first may stay idle; `Duration::MAX`: forever.
    pub(crate) idle_timeout: Duration,
    /// How long a fenced lock's `nextval` may wait for its sequence, in milliseconds (the
    /// sessions' own `lock_timeout`).
    pub(crate) token_within_ms: u64,
    /// Counts the locks lost with a session.
    pub(crate) meter: Meter,
}

struct Shared {
    config: PoolConfig,
    rt: Handle,
    slots: Mutex<Slots>,
    /// Signalled when a session opens, closes, falls idle or settles a key.
    changed: Arc<Notify>,
    /// Dropped with the pool: ends its closer at once (it holds no strong reference).
    alive: watch::Sender<()>,
}

#[derive(Default)]
struct Slots {
    /// Connections open, opening or closing.
    open: usize,
    /// Connections being opened (not in `sessions` yet).
    opening: usize,
    /// In the order they opened: the first is the one open longest.
    sessions: Vec<Arc<Session>>,
    /// The closer of idle sessions is running (`close_idle_sessions`).
    closer: bool,
}

/// What a lock statement is for.
#[derive(Clone, Copy)]
pub(crate) struct Want<'a> {
    pub(crate) key: i64,
    pub(crate) mode: Mode,
    pub(crate) name: &'a Arc<str>,
    /// How long a new session may take to open for this caller (`None`: the connect
    /// timeout); one still opening then is left to the next caller.
    pub(crate) open_by: Option<Instant>,
    /// The sequence that mints a fencing token with the grant; `None`: not fenced.
    pub(crate) fence: Option<&'a Arc<str>>,
}

enum Pick {
    /// The session at this index.
    Ready(usize),
    /// Open a session (there is room).
    Open,
    /// None now: look again when something changes.
    Later,
}

impl Want<'_> {
    /// Reserves a session for this statement; `dedicated`: for a wait.
    fn reserve(self, dedicated: bool) -> impl Fn(&Arc<Session>) -> Ticket + Send + 'static {
        let (key, mode, name) = (self.key, self.mode, Arc::clone(self.name));
        let fence = self.fence.cloned();
        move |session: &Arc<Session>| session.reserve(key, mode, &name, dedicated, fence.as_ref())
    }
}

impl Pool {
    pub(crate) fn new(config: PoolConfig, rt: Handle) -> Result<Pool, Error> {
        let size = config.size;
        if size > MAX_POOL_SIZE {
            return Err(Error::InvalidConfig(format!(
                "pool_size {size} is more than {MAX_POOL_SIZE}"
            )));
        }
        Ok(Pool {
            shared: Arc::new(Shared {
                config,
                rt,
                slots: Mutex::default(),
                changed: Arc::new(Notify::new()),
                alive: watch::Sender::new(()),
            }),
        })
    }

    pub(crate) fn max_size(&self) -> usize {
        self.shared.config.size
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.shared.config.idle_timeout
    }

    /// How the pool's sessions connect.
    pub(crate) fn connection(&self) -> &ConnectionSettings {
        &self.shared.config.connection
    }

    /// The facts of an open session, opening one (within the connect timeout) if none is
    /// open: a start-up check. The session reserves nothing and stays open (the first is
    /// never closed for idleness), so the first lock does not pay for a connect.
    pub(crate) async fn any_session(&self) -> Result<SessionFacts, Error> {
        let size = self.shared.config.size;
        let choose = |slots: &mut Slots| match slots.sessions.first() {
            Some(_) => Pick::Ready(0),
            None if slots.open < size => Pick::Open,
            None => Pick::Later, // every slot is opening: one of them will do
        };
        let opened = self.pick(None, None, choose, |session| session.facts());
        // With no deadline, `pick` ends with a session or an error.
        opened
            .await?
            .ok_or_else(|| Error::Runtime("no session and no error from the pool".into()))
    }

    /// A shared session reserved for an instant statement on `want.key`. Waits until
    /// `deadline` (`None`: forever) when none may take it; `Ok(None)` if the deadline passed.
    pub(crate) async fn for_now(
        &self,
        want: Want<'_>,
        deadline: Option<Instant>,
    ) -> Result<Option<Ticket>, Error> {
        let size = self.shared.config.size;
        let choose = |slots: &mut Slots| {
            // Nothing in flight answers soonest; a new session spreads the load; else
            // pipeline on the least busy.
            let scan = slots.scan(|session| session.fit_for(want.key));
            if let Some(index) = scan.idle {
                return Pick::Ready(index);
            }
            // Unlocks in flight are no reason to open a session: a statement sent behind
            // them is answered about as soon, and far sooner than a new session opens. So
            // one caller that lets its locks go in the background keeps to one session.
            if let Some(index) = scan.behind_unlocks {
                return Pick::Ready(index);
            }
            // Nor is this key's unlock in flight, while there is time to wait for its
            // answer (a try with no time left opens instead, bounded by the connect timeout).
            if scan.after_unlock && deadline.map_or(true, |d| Instant::now() < d) {
                return Pick::Later;
            }
            // The last slot is for waits, unless no session could take this statement at
            // all (none is open, or every one waits or has an entry for the key) and none
            // is on its way.
            let eligible = scan.least_busy.is_some() || slots.opening > 0;
            if slots.open < size.saturating_sub(1) || !eligible && slots.open < size {
                return Pick::Open;
            }
            scan.least_busy.map_or(Pick::Later, Pick::Ready)
        };
        let open_by = want.open_by;
        self.pick(deadline, open_by, choose, want.reserve(false))
            .await
    }

    /// An idle session reserved for a lock wait on `want.key`, taken for it alone. Waits
    /// until `deadline` (`None`: forever) for one; `Ok(None)` if the deadline passed.
    pub(crate) async fn for_wait(
        &self,
        want: Want<'_>,
        deadline: Option<Instant>,
    ) -> Result<Option<Ticket>, Error> {
        let size = self.shared.config.size;
        let choose = |slots: &mut Slots| {
            let scan = slots.scan(Session::fit_for_wait);
            if let Some(index) = scan.idle {
                return Pick::Ready(index);
            }
            if slots.open < size {
                return Pick::Open;
            }
            Pick::Later
        };
        let open_by = want.open_by;
        self.pick(deadline, open_by, choose, want.reserve(true))
            .await
    }

    /// Picks under the pool's lock until `choose` finds a session, and `take`s it there (so
    /// that no other picker can take it in between); opens one when `choose` says so, and
    /// waits for changes (until `deadline`) when it says `Wait`. A caller waits for the
    /// session it opens until `open_by` (`None`: the connect timeout).
    async fn pick<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        open_by: Option<Instant>,
        mut choose: impl FnMut(&mut Slots) -> Pick,
        take: impl Fn(&Arc<Session>) -> T + Send + 'static,
    ) -> Result<Option<T>, Error> {
        let shared = &self.shared;
        loop {
            let mut changed = pin!(shared.changed.notified());
            changed.as_mut().enable();
            let open = {
                let mut slots = shared.slots();
                slots.sessions.retain(|s| !s.is_dead());
                match choose(&mut slots) {
                    Pick::Ready(index) => return Ok(Some(take(&slots.sessions[index]))),
                    Pick::Open => {
                        slots.open += 1;
                        slots.opening += 1;
                        true
                    }
                    Pick::Later => false,
                }
            };
            if open {
                let opening = self.open(take);
                let Some(open_by) = open_by else {
                    return opening.await.map(Some);
                };
                // The caller's timeout bounds the connect too; a connection still being
                // opened when it ends is published for the next caller.
                return match until(&shared.rt, open_by, opening).await {
                    Some(opened) => opened.map(Some),
                    None => {
                        tracing::debug!("pals: the caller's timeout ended while its connection was being opened");
                        Ok(None)
                    }
                };
            }
            match deadline {
                None => changed.await,
                Some(deadline) => {
                    if until(&shared.rt, deadline, changed).await.is_none() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Opens a session on the library's runtime, its slot already counted, and publishes
    /// it with `take`'s reservation made first (so that no other picker can take it
    /// before the opener uses it). Done there, so a caller that goes away mid-connect
    /// leaks nothing: its reservation is then dropped, which gives it back.
    async fn open<T: Send + 'static>(
        &self,
        take: impl FnOnce(&Arc<Session>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let pool = Arc::clone(&self.shared);
        let (deliver, delivered) = oneshot::channel();
        self.shared.rt.spawn(async move {
            let config = &pool.config;
            let token_within_ms = config.token_within_ms;
            let opened = match connection::open_for_locks(&config.connection, token_within_ms).await {
                Ok(conn) => {
                    let changed = Arc::clone(&pool.changed);
                    let limits = Limits {
                        answer_within: config.connection.connect_timeout,
                        token_within_ms,
                    };
                    let session = Session::start(
                        conn,
                        changed,
                        limits,
                        config.connection.heartbeat,
                        config.meter.clone(),
                    );
                    tokio::spawn(free_slot_when_dead(Arc::downgrade(&pool), session.dead()));
                    let mut slots = pool.slots();
                    slots.opening -= 1;
                    slots.sessions.push(Arc::clone(&session));
                    pool.start_closer(&mut slots);
                    Ok(take(&session))
                }
                Err(error) => {
                    let mut slots = pool.slots();
                    slots.open -= 1;
                    slots.opening -= 1;
                    Err(error)
                }
            };
            pool.changed.notify_waiters();
            // If the opener went away, its reservation is dropped here: given back; and a
            // failure nobody waits for any more is still told.
            if let Err(Err(error)) = deliver.send(opened) {
                tracing::warn!(%error, "pals: a connection opened for a caller that stopped waiting failed");
            }
        });
        delivered
            .await
            .unwrap_or_else(|_| Err(Error::Runtime("the pals runtime thread is gone".into())))
    }
}

/// Gives the slot of a session back when its connection has ended, however it ended: the
/// one place where an open connection stops counting.
async fn free_slot_when_dead(pool: Weak<Shared>, mut dead: tokio::sync::watch::Receiver<bool>) {
    let _ = dead.wait_for(|dead| *dead).await;
    if let Some(pool) = pool.upgrade() {
        let mut slots = pool.slots();
        slots.open -= 1;
        slots.sessions.retain(|s| !s.is_dead());
        drop(slots);
        pool.changed.notify_waiters();
    }
}

/// Closes the pool's sessions beyond the first once they have been idle for its idle
/// timeout, sleeping in between until the earliest time one could be due. Ends when the
/// pool is dropped, or when no session beyond the first is left (the next to open starts
/// it again). Holds the pool only while it looks.
async fn close_idle_sessions(pool: Weak<Shared>, mut alive: watch::Receiver<()>) {
    loop {
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let timeout = shared.config.idle_timeout;
        let (closing, wake) = shared.slots().close_idle(timeout);
        drop(shared);
        // Out of the pool already: no picker can reach them. Their slots are given back
        // when their connections end (`free_slot_when_dead`).
        for (session, idle) in closing {
            session.close(&format!(
                "idle for {idle:?} (idle_timeout {timeout:?}), beyond the first session of its pool"
            ));
        }
        let Some(wake) = wake else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            // Only ever an error: the pool is gone.
            _ = alive.changed() => return,
        }
    }
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the closer of idle sessions (on the library's runtime, where this runs) if
    /// there is something it may close and it is not running.
    fn start_closer(self: &Arc<Self>, slots: &mut Slots) {
        if slots.sessions.len() > 1 && !slots.closer && self.config.idle_timeout != Duration::MAX {
            slots.closer = true;
            let alive = self.alive.subscribe();
            self.rt
                .spawn(close_idle_sessions(Arc::downgrade(self), alive));
        }
    }
}

impl Slots {
    /// Reads each session's fit once, oldest first: the first with nothing in flight, the
    /// first with only unlocks in flight, the least busy (the oldest of those), and whether
    /// one may take the statement once its unlock of the key ends. Oldest first, so that
    /// light load keeps to the first sessions and the others fall idle and close.
    fn scan(&self, fit: impl Fn(&Session) -> Fit) -> Scan {
        let mut scan = Scan::default();
        let mut least: Option<usize> = None;
        for (index, session) in self.sessions.iter().enumerate() {
            let (in_flight, unlocks) = match fit(session) {
                Fit::Now { in_flight, unlocks } => (in_flight, unlocks),
                Fit::AfterUnlock => {
                    scan.after_unlock = true;
                    continue;
                }
                Fit::No => continue,
            };
            if in_flight == 0 {
                scan.idle = Some(index);
                scan.least_busy = Some(index);
                return scan;
            }
            if in_flight == unlocks && scan.behind_unlocks.is_none() {
                scan.behind_unlocks = Some(index);
            }
            if least.map_or(true, |least| in_flight < least) {
                least = Some(in_flight);
                scan.least_busy = Some(index);
            }
        }
        scan
    }

    /// Takes out of the pool the sessions beyond the first that have been idle for
    /// `timeout`, each with how long it was idle; and says when to look again: the earliest
    /// time another could be due, or `None` when none could (no session beyond the first
    /// is left, or the timeout is too long to ever end), and the closer stops.
    ///
    /// Runs under the pool's lock, where pickers reserve: a session found idle here stays
    /// idle until it is out of the pool (only a picker makes an idle session busy).
    fn close_idle(
        &mut self,
        timeout: Duration,
    ) -> (Vec<(Arc<Session>, Duration)>, Option<Instant>) {
        let now = Instant::now();
        self.sessions.retain(|s| !s.is_dead());
        // A session busy now falls idle no sooner than now.
        let mut wake = now.checked_add(timeout);
        let mut closing = Vec::new();
        let mut first = true;
        self.sessions.retain(|session| {
            if std::mem::take(&mut first) {
                return true; // the one open longest stays
            }
            let Some(since) = session.idle_since() else {
                return true;
            };
            match since.checked_add(timeout) {
                Some(due) if due <= now => {
                    closing.push((Arc::clone(session), now.saturating_duration_since(since)));
                    false
                }
                Some(due) => {
                    wake = wake.map(|wake| wake.min(due));
                    true
                }
                None => true,
            }
        });
        if self.sessions.len() <= 1 || wake.is_none() {
            self.closer = false;
            wake = None;
        }
        (closing, wake)
    }
}

/// What [`Slots::scan`] found, by index.
#[derive(Default)]
struct Scan {
    /// A session with nothing in flight.
    idle: Option<usize>,
    /// A session with only unlocks in flight.
    behind_unlocks: Option<usize>,
    /// The session with the fewest statements in flight.
    least_busy: Option<usize>,
    /// A session may take the statement once its unlock of the key in flight ends.
    after_unlock: bool,
}
