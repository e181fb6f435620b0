//! The connections of one locker, and how locks share them.
//!
//! A lock that is taken at once (`pg_try_advisory_lock`, one round trip) sits on a
//! *carrier*: an open session shared by many held locks, so that thousands of locks need
//! only a few connections. A lock that must be waited for waits on a *dedicated* session
//! that nothing else uses meanwhile: a statement queued behind a wait (say, another lock's
//! release) would wait too. Once granted, the dedicated session becomes a carrier.
//!
//! Every open connection counts against the pool size until its connection task has ended,
//! including one that is closing.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio_postgres::Client;

use crate::connection::{self, ConnWatch, ConnectionSettings, PgConn};
use crate::runtime;
use crate::statement::Detached;
use crate::Error;

/// More connections than any PostgreSQL server accepts from one client in practice.
const MAX_POOL_SIZE: usize = 100_000;

/// The connection pool of one locker.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    settings: ConnectionSettings,
    rt: Handle,
    size: usize,
    state: Mutex<State>,
    /// Signalled when a connection closes, a carrier joins, or a carrier falls idle.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Connections open, opening or closing.
    open: usize,
    /// Open sessions shared by held locks and instant statements.
    carriers: Vec<Arc<Carrier>>,
    /// Carriers being opened.
    opening: usize,
    /// Where the next search for a carrier starts, to spread the load.
    next: usize,
}

/// An open session that carries held locks and instant statements.
pub(crate) struct Carrier {
    conn: PgConn,
    /// Locks held on this session.
    locks: AtomicUsize,
    /// Instant statements sent and not yet answered.
    in_flight: AtomicUsize,
    pool: Weak<Shared>,
}

impl Pool {
    pub(crate) fn new(
        settings: ConnectionSettings,
        size: usize,
        rt: Handle,
    ) -> Result<Pool, Error> {
        if size > MAX_POOL_SIZE {
            return Err(Error::InvalidConfig(format!(
                "pool_size {size} is more than {MAX_POOL_SIZE}"
            )));
        }
        Ok(Pool {
            shared: Arc::new(Shared {
                settings,
                rt,
                size,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
        })
    }

    pub(crate) fn max_size(&self) -> usize {
        self.shared.size
    }

    /// A carrier to run one instant statement on, with the statement counted as in flight.
    /// Waits until `deadline` (`None`: forever) when every connection is in use for a wait;
    /// `Ok(None)` if the deadline passed first.
    pub(crate) async fn carrier(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<InFlight>, Error> {
        let shared = &self.shared;
        self.wait_for(deadline, |state| {
            // A carrier with nothing in flight answers soonest; opening another connection
            // (while the pool has room) spreads the load; else pipeline on the least busy.
            if let Some(carrier) = state.pick(|c| c.in_flight() == 0) {
                return Pick::Ready(InFlight::new(carrier));
            }
            // Keep the last connection for lock waits, which cannot share one: a pool of
            // carriers that all hold locks would leave a wait no session to wait on.
            // (Unless every other connection is busy waiting: then there is no carrier at
            // all, and the last connection carries rather than leave callers stuck.)
            let room_for_carriers = shared.size.saturating_sub(1).max(1);
            let no_carrier_at_all = state.carriers.is_empty() && state.opening == 0;
            if state.open < room_for_carriers || no_carrier_at_all && state.open < shared.size {
                state.open += 1;
                state.opening += 1;
                return Pick::Open;
            }
            match state.least_busy() {
                Some(carrier) => Pick::Ready(InFlight::new(carrier)),
                None => Pick::Wait,
            }
        })
        .await
    }

    /// A session of its own for a lock wait. Waits until `deadline` (`None`: forever) for
    /// one to be free; `Ok(None)` if the deadline passed first.
    pub(crate) async fn dedicated(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<Dedicated>, Error> {
        let shared = &self.shared;
        let in_flight = self
            .wait_for(deadline, |state| {
                if let Some(index) = state
                    .carriers
                    .iter()
                    .position(|c| c.locks() == 0 && c.in_flight() == 0)
                {
                    return Pick::Ready(InFlight::new(state.carriers.swap_remove(index)));
                }
                if state.open < shared.size {
                    state.open += 1;
                    return Pick::OpenDedicated;
                }
                Pick::Wait
            })
            .await?;
        Ok(in_flight.map(|in_flight| Dedicated {
            carrier: Some(in_flight.take()),
            busy: false,
        }))
    }

    /// Runs `pick` under the pool's lock until it finds a connection, opening one when it
    /// says so, and waiting for changes (until `deadline`) when it says `Wait`.
    async fn wait_for(
        &self,
        deadline: Option<Instant>,
        mut pick: impl FnMut(&mut State) -> Pick,
    ) -> Result<Option<InFlight>, Error> {
        let shared = &self.shared;
        loop {
            let mut changed = pin!(shared.changed.notified());
            changed.as_mut().enable();
            let picked = {
                // Closed carriers go first: no pick ever lands on one.
                let mut state = shared.lock_state();
                state.drop_closed();
                pick(&mut state)
            };
            match picked {
                Pick::Ready(in_flight) => return Ok(Some(in_flight)),
                Pick::Open => return Ok(Some(self.open(true).await?)),
                Pick::OpenDedicated => return Ok(Some(self.open(false).await?)),
                Pick::Wait => match deadline {
                    None => changed.await,
                    Some(deadline) => {
                        if runtime::until(&shared.rt, deadline, changed)
                            .await
                            .is_none()
                        {
                            return Ok(None);
                        }
                    }
                },
            }
        }
    }

    /// Opens a connection on the library's runtime, its slot already counted in `open` (and
    /// in `opening` if it is to be `shared` as a carrier). The bookkeeping happens there
    /// too, so a caller that goes away mid-connect leaks nothing: the new connection then
    /// joins the carriers.
    async fn open(&self, shared_now: bool) -> Result<InFlight, Error> {
        let pool = Arc::clone(&self.shared);
        let (deliver, delivered) = oneshot::channel();
        self.shared.rt.spawn(async move {
            let opened = connection::open(pool.settings.clone()).await.map(|conn| {
                // The slot is free again when the connection ends, however it ends, even
                // while guards of the locks it lost still point to it: the one place where
                // an open connection stops counting.
                let mut dead = conn.watch.subscribe();
                let weak_pool = Arc::downgrade(&pool);
                tokio::spawn(async move {
                    let _ = dead.wait_for(|dead| *dead).await;
                    if let Some(pool) = weak_pool.upgrade() {
                        let mut state = pool.lock_state();
                        state.open -= 1;
                        state.drop_closed();
                        drop(state);
                        pool.changed.notify_waiters();
                    }
                });
                // Counted in flight before anyone else can see it: never idle for a wait.
                InFlight::new(Arc::new(Carrier {
                    conn,
                    locks: AtomicUsize::new(0),
                    in_flight: AtomicUsize::new(0),
                    pool: Arc::downgrade(&pool),
                }))
            });
            {
                let mut state = pool.lock_state();
                if shared_now {
                    state.opening -= 1;
                }
                if opened.is_err() {
                    state.open -= 1;
                }
            }
            match &opened {
                Ok(in_flight) if shared_now => pool.add_carrier(Arc::clone(in_flight.carrier())),
                _ => pool.changed.notify_waiters(),
            }
            if let Err(Ok(in_flight)) = deliver.send(opened) {
                // The opener went away mid-connect: the connection is shared all the same.
                if !shared_now {
                    pool.add_carrier(Arc::clone(in_flight.carrier()));
                }
            }
        });
        delivered
            .await
            .unwrap_or_else(|_| Err(Error::Runtime("the pals runtime thread is gone".into())))
    }

    /// Runs a read-only query on a carrier.
    pub(crate) async fn query_rows(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, Error> {
        let in_flight = self.carrier(None).await?.expect("no deadline");
        in_flight
            .client()
            .query(sql, &[])
            .await
            .map_err(Error::Database)
    }

    /// Runs `sql` on a carrier, for pals' own tests.
    pub(crate) async fn query(
        &self,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, Error> {
        let in_flight = self.carrier(None).await?.expect("no deadline");
        in_flight
            .client()
            .simple_query(sql)
            .await
            .map_err(Error::Database)
    }
}

enum Pick {
    Ready(InFlight),
    /// Open a connection and share it as a carrier.
    Open,
    /// Open a connection for a wait.
    OpenDedicated,
    Wait,
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shares `carrier` for instant statements (and, when idle, for waits).
    fn add_carrier(&self, carrier: Arc<Carrier>) {
        self.lock_state().carriers.push(carrier);
        self.changed.notify_waiters();
    }
}

impl State {
    /// The first carrier from the rotating start that `wanted` accepts.
    fn pick(&mut self, wanted: impl Fn(&Carrier) -> bool) -> Option<Arc<Carrier>> {
        let count = self.carriers.len();
        for offset in 0..count {
            let index = (self.next + offset) % count;
            if wanted(&self.carriers[index]) {
                self.next = index + 1;
                return Some(Arc::clone(&self.carriers[index]));
            }
        }
        None
    }

    /// Forgets carriers whose connection ended (their slots are given back when their
    /// connection task ends; see `Pool::open`).
    fn drop_closed(&mut self) {
        self.carriers.retain(|c| !c.is_closed());
    }

    fn least_busy(&self) -> Option<Arc<Carrier>> {
        self.carriers.iter().min_by_key(|c| c.in_flight()).cloned()
    }
}

impl Carrier {
    pub(crate) fn client(&self) -> &Client {
        &self.conn.client
    }

    /// The session's connection, for its prepared statements.
    pub(crate) fn conn(&self) -> &PgConn {
        &self.conn
    }

    pub(crate) fn watch(&self) -> &ConnWatch {
        &self.conn.watch
    }

    fn locks(&self) -> usize {
        self.locks.load(Ordering::Acquire)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn is_closed(&self) -> bool {
        self.conn.client.is_closed() || self.conn.watch.is_dead()
    }

    /// Awaits a statement on this session, for at most `limit`. A session that does not
    /// answer in time is as good as dead: it is closed (its guards see the loss, and the
    /// server frees what it holds once it notices), and the statement goes on detached.
    pub(crate) async fn answer<T: Send + 'static>(
        &self,
        rt: &Handle,
        limit: Duration,
        what: &str,
        statement: Detached<T>,
    ) -> Result<T, Error> {
        match runtime::within(rt, limit, statement).await {
            Some(answer) => Ok(answer),
            None => {
                self.conn
                    .watch
                    .mark_dead(&format!("{what} went unanswered"));
                self.conn.io_task.abort();
                Err(Error::no_answer(what, limit))
            }
        }
    }

    /// A lock was taken on this session.
    pub(crate) fn add_lock(&self) {
        self.locks.fetch_add(1, Ordering::AcqRel);
    }

    /// A lock was released on this session.
    pub(crate) fn remove_lock(&self) {
        if self.locks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.maybe_idle();
        }
    }

    /// Takes this session out of use: no new lock or statement goes to it, and it closes
    /// once the locks it still carries are released (closing frees whatever it holds).
    pub(crate) fn retire(self: &Arc<Self>) {
        if let Some(pool) = self.pool.upgrade() {
            pool.lock_state().carriers.retain(|c| !Arc::ptr_eq(c, self));
        }
    }

    /// Tells waiters for a dedicated session that this one may now be free.
    fn maybe_idle(&self) {
        if self.locks() == 0 && self.in_flight() == 0 {
            if let Some(pool) = self.pool.upgrade() {
                pool.changed.notify_waiters();
            }
        }
    }
}

/// A carrier with one statement counted in flight until this is dropped.
pub(crate) struct InFlight {
    carrier: Arc<Carrier>,
}

impl InFlight {
    pub(crate) fn new(carrier: Arc<Carrier>) -> InFlight {
        carrier.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { carrier }
    }

    pub(crate) fn carrier(&self) -> &Arc<Carrier> {
        &self.carrier
    }

    pub(crate) fn conn(&self) -> &PgConn {
        self.carrier.conn()
    }

    pub(crate) fn client(&self) -> &Client {
        self.carrier.client()
    }

    /// The carrier, the statement done.
    fn take(self) -> Arc<Carrier> {
        Arc::clone(&self.carrier)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.carrier.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.carrier.maybe_idle();
        }
    }
}

/// A session of its own for a lock wait. Dropped in the middle of a wait, it cancels the
/// wait and closes; otherwise it goes back to being shared.
pub(crate) struct Dedicated {
    carrier: Option<Arc<Carrier>>,
    /// A statement is running: the server may be waiting for (or have granted) a lock.
    busy: bool,
}

impl Dedicated {
    pub(crate) fn carrier(&self) -> &Arc<Carrier> {
        self.carrier
            .as_ref()
            .expect("a dedicated session is used until dropped")
    }

    /// Runs `statement` with the session marked busy: if the future is dropped before the
    /// answer, the session is cancelled and closed, never shared again.
    pub(crate) async fn run<T>(&mut self, statement: impl Future<Output = T>) -> T {
        self.busy = true;
        let output = statement.await;
        self.busy = false;
        output
    }

    /// The session holds nothing it should not: share it again.
    pub(crate) fn share(mut self) -> Arc<Carrier> {
        let carrier = self.carrier.take().expect("shared once");
        if let Some(pool) = carrier.pool.upgrade() {
            pool.add_carrier(Arc::clone(&carrier));
        }
        carrier
    }

    /// The session may hold something it should not: close it.
    pub(crate) fn close(mut self) {
        self.busy = false;
        if let Some(carrier) = self.carrier.take() {
            carrier.watch().let_go_all();
        }
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let Some(carrier) = self.carrier.take() else {
            return;
        };
        if !self.busy {
            // Not mid-statement: nothing unknown happened; share it again.
            if let Some(pool) = carrier.pool.upgrade() {
                pool.add_carrier(carrier);
            }
            return;
        }
        // The server does not notice a vanished client while it waits for a lock: cancel
        // the wait, then close, so that a lock granted meanwhile is freed with the session.
        let io_task = carrier.conn.io_task.clone();
        let Some(pool) = carrier.pool.upgrade() else {
            return;
        };
        pool.rt.spawn(async move {
            let cancel = connection::cancel(carrier.client(), &carrier.conn.tls);
            let cancelled = tokio::time::timeout(Duration::from_secs(5), cancel).await;
            if !matches!(cancelled, Ok(Ok(()))) {
                // The cancel did not reach the server: close the socket at once; the server
                // frees the session's locks when it next writes to it.
                io_task.abort();
            }
            drop(carrier);
        });
    }
}
