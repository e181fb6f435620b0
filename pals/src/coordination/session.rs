//! [`CoordinationSession`]: the one session of a locker for statements that take no
//! advisory lock: checking and making schema objects, announcing and reading leaders,
//! `holders()`. It holds no lock, so what blocks it (a DBA's `LOCK TABLE pals_leaders`, an
//! `ALTER SEQUENCE pals_fence` left open) costs no held lock: a lock session's heartbeat
//! never queues behind such a statement.
//!
//! Every statement is bounded: opening the session by the connect timeout; the session's
//! own `statement_timeout` and `lock_timeout` (the connect timeout) make the server cancel
//! a statement; and the caller gives up after twice that, plus the bound of each statement
//! sent before it that is still in flight (they run one after another), cancelling it and
//! closing the session (a server that stopped answering). The session opens on first use,
//! and one task per open session closes it once it has been idle for the locker's idle
//! timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{oneshot, Mutex};
use tokio_postgres::SimpleQueryMessage;

use crate::connection::{self, ConnectionSettings, PgConn};
use crate::deadline::within;
use crate::error::Error;
use crate::on_drop::OnDrop;
use crate::sql::Purpose;

/// A locker's coordination session, opened when first needed.
pub(crate) struct CoordinationSession {
    shared: Arc<Shared>,
}

struct Shared {
    settings: ConnectionSettings,
    idle_timeout: Duration,
    rt: Handle,
    conn: Mutex<Option<Arc<PgConn>>>,
    /// Statements sent and not yet answered.
    in_flight: AtomicUsize,
    /// When the last statement ended.
    last_used: StdMutex<Instant>,
}

impl CoordinationSession {
    pub(crate) fn new(settings: ConnectionSettings, idle_timeout: Duration, rt: Handle) -> Self {
        let shared = Shared {
            settings,
            idle_timeout,
            rt,
            conn: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            last_used: StdMutex::new(Instant::now()),
        };
        CoordinationSession {
            shared: Arc::new(shared),
        }
    }

    /// Runs `sql`, bounded; `what` names the statement in an error.
    pub(crate) async fn query(
        &self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.query_built(|| sql, what).await
    }

    /// Runs the statement `build` makes once the session is open and the statement's turn
    /// has come (for a statement that says how long ago something happened), bounded;
    /// `what` names it in an error.
    pub(crate) async fn query_built<S: AsRef<str>>(
        &self,
        build: impl FnOnce() -> S,
        what: &str,
    ) -> Result<Vec<SimpleQueryMessage>, Error> {
        let shared = &self.shared;
        let bound = shared.settings.connect_timeout;
        let Some(opened) = within(&shared.rt, bound, shared.connection()).await else {
            return Err(Error::connect_timeout(bound, &shared.settings.target));
        };
        let (conn, ahead) = opened?;
        // However the statement ends (this future may be dropped mid-way).
        let _ended = OnDrop::new(|| {
            *shared.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        let limit = bound.saturating_mul(2 + ahead as u32);
        let sql = build();
        match within(&shared.rt, limit, conn.query(sql.as_ref())).await {
            Some(answer) => answer.map_err(Error::Database),
            None => {
                conn.close(&format!("{what} went unanswered"));
                shared.rt.spawn(async move {
                    let _ = tokio::time::timeout(bound, conn.cancel()).await;
                });
                Err(Error::no_answer(what, limit))
            }
        }
    }
}

impl Shared {
    /// The open session, opened now (on the library's runtime) if there is none, counted
    /// in flight; and how many statements were in flight on it before this one.
    async fn connection(self: &Arc<Self>) -> Result<(Arc<PgConn>, usize), Error> {
        let mut conn = self.conn.lock().await;
        let open = match conn.as_ref().filter(|c| !c.is_closed()) {
            Some(open) => Arc::clone(open),
            None => {
                let opened = self.open().await?;
                *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                *conn = Some(Arc::clone(&opened));
                self.rt.spawn(close_when_idle(
                    Arc::downgrade(self),
                    Arc::downgrade(&opened),
                ));
                opened
            }
        };
        Ok((open, self.in_flight.fetch_add(1, Ordering::AcqRel)))
    }

    /// Opens the session on the library's runtime.
    async fn open(&self) -> Result<Arc<PgConn>, Error> {
        let settings = self.settings.clone();
        let timeout_ms = settings
            .connect_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128) as u64;
        let (deliver, delivered) = oneshot::channel();
        self.rt.spawn(async move {
            let purpose = Purpose::Coordination { timeout_ms };
            let _ = deliver.send(connection::open(&settings, purpose).await);
        });
        let opened = delivered
            .await
            .unwrap_or_else(|_| Err(Error::Runtime("the pals runtime thread is gone".into())))?;
        Ok(Arc::new(opened))
    }
}

/// Closes `conn` once nothing has been sent on it for the idle timeout; ends when it is
/// closed or replaced, or the locker is gone. Sleeps until the earliest time it could be
/// due: the last statement's end plus the timeout, or, while a statement is in flight, a
/// timeout from now.
async fn close_when_idle(shared: Weak<Shared>, conn: Weak<PgConn>) {
    let mut busy_until = None;
    loop {
        let Some(due) = shared.upgrade().and_then(|shared| {
            let last = *shared.last_used.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.checked_add(shared.idle_timeout)?;
            Some(busy_until.map_or(due, |busy: Instant| busy.max(due)))
        }) else {
            return; // gone, or kept for ever
        };
        tokio::time::sleep_until(due.into()).await;
        let (Some(shared), Some(this)) = (shared.upgrade(), conn.upgrade()) else {
            return;
        };
        let mut current = shared.conn.lock().await;
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &this)) || this.is_closed() {
            return; // replaced: its own task closes the new one
        }
        if shared.in_flight.load(Ordering::Acquire) > 0 {
            busy_until = Instant::now().checked_add(shared.idle_timeout);
            continue;
        }
        let last = *shared.last_used.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .checked_add(shared.idle_timeout)
            .is_some_and(|due| due <= Instant::now())
        {
            current.take();
            this.close("the coordination session was idle");
            return;
        }
    }
}
