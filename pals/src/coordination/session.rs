//! [`CoordinationSession`]: the one session of a locker for statements that take no
//! advisory lock: checking and making schema objects, announcing and reading leaders,
//! `holders()`. It holds no lock, so what blocks it (a DBA's `LOCK TABLE pals_leaders`, an
//! `ALTER SEQUENCE pals_fence` left open) costs no held lock: a lock session's heartbeat
//! never queues behind such a statement.
//!
//! Every statement is bounded: the session's own `statement_timeout` and `lock_timeout`
//! (the connect timeout) make the server cancel it, and the caller gives up after twice
//! that (a server that stopped answering), cancelling it and closing the session. The
//! session opens on first use and closes once it has been idle for the locker's idle
//! timeout.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// Counts the statements sent: a session still idle at the same count is closed.
    sent: AtomicU64,
    /// Statements sent and not yet answered.
    in_flight: AtomicUsize,
}

impl CoordinationSession {
    pub(crate) fn new(settings: ConnectionSettings, idle_timeout: Duration, rt: Handle) -> Self {
        let shared = Shared {
            settings,
            idle_timeout,
            rt,
            conn: Mutex::new(None),
            sent: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
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
        let shared = &self.shared;
        let (conn, count) = shared.connection().await?;
        // However the statement ends (this future may be dropped mid-way).
        let _ended = OnDrop::new(|| {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            shared.close_when_idle(count);
        });
        let bound = shared.settings.connect_timeout;
        let answer = within(&shared.rt, bound.saturating_mul(2), conn.query(sql)).await;
        match answer {
            Some(answer) => answer.map_err(Error::Database),
            None => {
                conn.close(&format!("{what} went unanswered"));
                shared.rt.spawn(async move {
                    let _ = tokio::time::timeout(bound, conn.cancel()).await;
                });
                Err(Error::no_answer(what, bound.saturating_mul(2)))
            }
        }
    }
}

impl Shared {
    /// The open session, opened now (on the library's runtime) if there is none, counted
    /// in flight; and the number of the statement about to be sent.
    async fn connection(&self) -> Result<(Arc<PgConn>, u64), Error> {
        let mut conn = self.conn.lock().await;
        let open = match conn.as_ref().filter(|c| !c.is_closed()) {
            Some(open) => Arc::clone(open),
            None => {
                let opened = self.open().await?;
                *conn = Some(Arc::clone(&opened));
                opened
            }
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok((open, self.sent.fetch_add(1, Ordering::AcqRel) + 1))
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

    /// Closes the session once `idle_timeout` has passed with no statement after the
    /// `count`th.
    fn close_when_idle(self: &Arc<Self>, count: u64) {
        let Some(due) = tokio::time::Instant::now().checked_add(self.idle_timeout) else {
            return; // kept for ever
        };
        let shared = Arc::downgrade(self);
        self.rt.spawn(async move {
            tokio::time::sleep_until(due).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut conn = shared.conn.lock().await;
            // Used since (its own timer closes it), or in use now.
            let used = shared.sent.load(Ordering::Acquire) != count;
            if used || shared.in_flight.load(Ordering::Acquire) > 0 {
                return;
            }
            if let Some(conn) = conn.take() {
                conn.close("the coordination session was idle");
            }
        });
    }
}
