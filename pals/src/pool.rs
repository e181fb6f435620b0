//! Database sessions: a deadpool pool whose connections run on the library's runtime, and
//! [`Session`], a checked-out connection that knows whether it is safe to pool again.
//!
//! deadpool recycles a connection when it is checked out again, not when it is returned,
//! so a connection that might still hold a lock must never go back: [`Session`] tracks
//! what the connection may hold and closes it, instead of pooling it, unless it is known
//! to hold nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls};

use crate::connection::{self, ConnWatch, ConnectionSettings, PgConn};
use crate::runtime;
use crate::Error;

/// Creates connections on the library's runtime and checks them cheaply on checkout.
pub(crate) struct Manager {
    settings: ConnectionSettings,
    rt: Handle,
}

impl managed::Manager for Manager {
    type Type = PgConn;
    type Error = Error;

    async fn create(&self) -> Result<PgConn, Error> {
        match self.rt.spawn(connection::open(self.settings.clone())).await {
            Ok(result) => result,
            Err(join_error) => Err(Error::Runtime(join_error.to_string())),
        }
    }

    async fn recycle(&self, conn: &mut PgConn, _: &Metrics) -> RecycleResult<Error> {
        // Only clean connections are ever returned (see `Session`), so no round trip is
        // needed here; a connection the server closed is replaced.
        if conn.client.is_closed() {
            Err(RecycleError::message("connection closed"))
        } else {
            Ok(())
        }
    }
}

/// More connections than any PostgreSQL server accepts from one client in practice.
const MAX_POOL_SIZE: usize = 100_000;

/// The connection pool of one locker.
///
/// Free slots are counted here, in front of deadpool, so that only the wait for a free slot
/// is bounded by the caller's deadline; opening a connection in a free slot is bounded by
/// the connect timeout alone (a `try_acquire` on a fresh locker must be able to connect).
pub(crate) struct Pool {
    pool: managed::Pool<Manager>,
    slots: Arc<Semaphore>,
    rt: Handle,
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
        let manager = Manager {
            settings,
            rt: rt.clone(),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(size)
            .build()
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(Pool {
            pool,
            slots: Arc::new(Semaphore::new(size)),
            rt,
        })
    }

    pub(crate) fn max_size(&self) -> usize {
        self.pool.status().max_size
    }

    /// Checks out a connection, waiting for a free slot until `deadline` (`None`: forever).
    /// Returns `Ok(None)` when the deadline passed first.
    pub(crate) async fn checkout(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<Session>, Error> {
        let slots = Arc::clone(&self.slots);
        let slot = match (slots.clone().try_acquire_owned(), deadline) {
            (Ok(slot), _) => slot,
            (Err(_), None) => slots.acquire_owned().await.expect("slots are never closed"),
            (Err(_), Some(deadline)) => {
                match runtime::until(&self.rt, deadline, slots.acquire_owned()).await {
                    Some(slot) => slot.expect("slots are never closed"),
                    None => return Ok(None),
                }
            }
        };
        // Holding a slot, deadpool has a free object or room to create one: this does not
        // wait for other callers, only (at most) for a new connection.
        match self.pool.get().await {
            Ok(conn) => Ok(Some(Session {
                conn: Some(conn),
                state: SessionState::Clean,
                rt: self.rt.clone(),
                slot: Some(slot),
            })),
            Err(managed::PoolError::Backend(error)) => Err(error),
            Err(other) => Err(Error::Connect {
                reason: other.to_string(),
                source: None,
            }),
        }
    }
}

/// What a checked-out connection may be holding, which decides its fate when dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// Holds no lock and runs no statement: goes back to the pool.
    Clean,
    /// May hold a lock: closed, which makes the server release everything it held.
    MayHoldLock,
    /// A statement may still be running on the server (a lock wait): cancelled, then closed.
    Busy,
}

/// A connection checked out of the pool, with what it may hold.
pub(crate) struct Session {
    conn: Option<Object<Manager>>,
    state: SessionState,
    rt: Handle,
    // Freed after `conn` has gone back to deadpool, or once a discarded connection is
    // closed: a closing connection still counts against the pool size. See `Pool`.
    slot: Option<OwnedSemaphorePermit>,
}

impl Session {
    pub(crate) fn client(&self) -> &Client {
        &self.conn().client
    }

    /// Whether the connection is alive, and which lock it holds.
    pub(crate) fn watch(&self) -> &ConnWatch {
        &self.conn().watch
    }

    fn conn(&self) -> &PgConn {
        self.conn.as_ref().expect("session used after close")
    }

    pub(crate) fn set_state(&mut self, state: SessionState) {
        self.state = state;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.state == SessionState::Clean {
            return; // dropping the Object returns it to the pool
        }
        let PgConn {
            client,
            watch,
            io_task,
        } = Object::take(conn);
        // Closing it on purpose: whatever it held was given up, not lost.
        watch.let_go();
        let cancel = (self.state == SessionState::Busy).then(|| client.cancel_token());
        let slot = self.slot.take();
        self.rt.spawn(async move {
            if let Some(token) = cancel {
                // The server does not notice a vanished client while it waits for a lock:
                // cancel the wait so the lock is never granted to a session nobody owns.
                let cancelled =
                    tokio::time::timeout(Duration::from_secs(5), token.cancel_query(NoTls)).await;
                if !matches!(cancelled, Ok(Ok(()))) {
                    // The cancel did not reach the server: close the socket at once; the
                    // server frees the session's locks when it next writes to it.
                    io_task.abort();
                }
            }
            // Dropping the client makes the connection send Terminate once the pending
            // statement (if any) has answered: the session ends and its locks go with it.
            drop(client);
            let mut dead = watch.subscribe();
            if tokio::time::timeout(Duration::from_secs(5), dead.wait_for(|d| *d))
                .await
                .is_err()
            {
                io_task.abort();
            }
            drop(slot);
        });
    }
}
