//! One database connection: opened on the library's runtime, and watched while it holds a
//! lock, so that a lost lock is known at once instead of silently.
//!
//! PostgreSQL frees a session's locks when the session ends. The holder learns of it when
//! the connection task ends (the server closed the socket: a terminated backend, a
//! restart) or when a heartbeat goes unanswered (a dead server or a black-holed network,
//! where no close ever arrives). Either way the connection is marked dead, and every guard
//! of it sees `is_held() == false` and its `lost()` future completes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_postgres::{Client, NoTls, Statement};

use crate::tls::Connector;
use crate::Error;

/// How a connection is opened and watched.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) connect_timeout: Duration,
    /// Ping a connection that holds a lock this often; `None`: never.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) tls: Connector,
}

/// One open database connection. Dropping it closes the connection.
pub(crate) struct PgConn {
    pub(crate) client: Arc<Client>,
    pub(crate) watch: Arc<ConnWatch>,
    pub(crate) io_task: AbortHandle,
    /// For cancel requests, which open a connection of their own.
    pub(crate) tls: Connector,
    prepared: Prepared,
}

/// The instant statements, prepared once per connection: each use is then one Bind and
/// Execute, with nothing for the server to parse or plan. Indexed by `shared as usize`.
struct Prepared {
    try_lock: [Statement; 2],
    unlock: [Statement; 2],
}

impl PgConn {
    /// `pg_try_advisory_lock(key)` (or `_shared`): whether the lock was taken.
    pub(crate) async fn try_lock(
        &self,
        key: i64,
        shared: bool,
    ) -> Result<bool, tokio_postgres::Error> {
        let statement = &self.prepared.try_lock[usize::from(shared)];
        self.client.query_one(statement, &[&key]).await?.try_get(0)
    }

    /// `pg_advisory_unlock(key)` (or `_shared`): whether the session held the lock.
    pub(crate) async fn unlock(
        &self,
        key: i64,
        shared: bool,
    ) -> Result<bool, tokio_postgres::Error> {
        let statement = &self.prepared.unlock[usize::from(shared)];
        self.client.query_one(statement, &[&key]).await?.try_get(0)
    }
}

/// Whether the connection is alive, and which locks it holds (by guard id).
pub(crate) struct ConnWatch {
    dead: watch::Sender<bool>,
    holding: Mutex<HashMap<u64, Holding>>,
}

struct Holding {
    name: Arc<str>,
    key: i64,
    since: Instant,
}

impl ConnWatch {
    /// A receiver that reads `true` once the connection is dead.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.dead.subscribe()
    }

    /// Records that the connection now holds the lock `name` (`key`) for guard `id`.
    pub(crate) fn hold(&self, id: u64, name: Arc<str>, key: i64) {
        let since = Instant::now();
        self.holding().insert(id, Holding { name, key, since });
    }

    /// Records that guard `id` gave its lock up (released, or closing on purpose).
    pub(crate) fn let_go(&self, id: u64) {
        self.holding().remove(&id);
    }

    /// Records that the connection is being closed on purpose: nothing it held is lost.
    pub(crate) fn let_go_all(&self) {
        self.holding().clear();
    }

    pub(crate) fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    fn is_holding(&self) -> bool {
        !self.holding().is_empty()
    }

    fn holding(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Holding>> {
        self.holding.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn mark_dead(&self, why: &str) {
        if self.dead.send_replace(true) {
            return; // already dead
        }
        for (_, lost) in self.holding().drain() {
            tracing::error!(
                lock = %lost.name,
                key = lost.key,
                held = ?lost.since.elapsed(),
                why,
                "pals: lock lost: its database session ended while the lock was held"
            );
        }
    }
}

/// Marks the connection dead when the task that drives it ends, however it ends (the
/// server closed it, an I/O error, or the task was aborted after a failed heartbeat).
struct MarkDeadOnDrop(Arc<ConnWatch>);

impl Drop for MarkDeadOnDrop {
    fn drop(&mut self) {
        self.0.mark_dead("the connection ended");
    }
}

/// Opens a connection; call it on the library's runtime, which will drive it.
pub(crate) async fn open(settings: ConnectionSettings) -> Result<PgConn, Error> {
    let timeout = settings.connect_timeout;
    // The timeout covers the whole startup (TCP, TLS, authentication), not only the TCP
    // connect that tokio-postgres' own connect_timeout bounds: a server that accepts and
    // then says nothing must not hang us.
    let watch = Arc::new(ConnWatch {
        dead: watch::Sender::new(false),
        holding: Mutex::new(HashMap::new()),
    });
    let marker = MarkDeadOnDrop(Arc::clone(&watch));
    let (client, io_task) = tokio::time::timeout(timeout, connect(&settings, marker))
        .await
        .map_err(|_| Error::connect_timeout(timeout))?
        .map_err(Error::connect_failed)?;
    // A session that holds a lock sits idle: a server-wide idle_session_timeout
    // (PostgreSQL 14+) would end it and free the lock behind the holder's back.
    // All in one round trip: tokio-postgres pipelines requests polled together.
    let setup = async {
        let (settings, try_lock, try_lock_shared, unlock, unlock_shared) = tokio::join!(
            client.simple_query(
                "SELECT set_config('idle_session_timeout', '0', false) \
                 WHERE current_setting('server_version_num')::int >= 140000",
            ),
            client.prepare("SELECT pg_try_advisory_lock($1)"),
            client.prepare("SELECT pg_try_advisory_lock_shared($1)"),
            client.prepare("SELECT pg_advisory_unlock($1)"),
            client.prepare("SELECT pg_advisory_unlock_shared($1)"),
        );
        settings?;
        Ok(Prepared {
            try_lock: [try_lock?, try_lock_shared?],
            unlock: [unlock?, unlock_shared?],
        })
    };
    let prepared = match tokio::time::timeout(timeout, setup).await {
        Ok(Ok(prepared)) => prepared,
        failed => {
            io_task.abort();
            return Err(match failed {
                Ok(Err(error)) => Error::connect_failed(error),
                _ => Error::connect_timeout(timeout),
            });
        }
    };
    let client = Arc::new(client);
    if let Some(interval) = settings.heartbeat {
        tokio::spawn(heartbeat(
            Arc::downgrade(&client),
            Arc::clone(&watch),
            io_task.clone(),
            interval,
        ));
    }
    Ok(PgConn {
        client,
        watch,
        io_task,
        tls: settings.tls,
        prepared,
    })
}

/// Connects with the TLS the settings ask for, and drives the connection in a task of the
/// current (the library's) runtime; the task marks the connection dead when it ends.
async fn connect(
    settings: &ConnectionSettings,
    marker: MarkDeadOnDrop,
) -> Result<(Client, AbortHandle), tokio_postgres::Error> {
    async fn drive<S, T>(
        connection: tokio_postgres::Connection<S, T>,
        marker: MarkDeadOnDrop,
    ) -> AbortHandle
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let _marker = marker;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "pals: database connection ended with an error");
            }
        })
        .abort_handle()
    }
    let config = &settings.config;
    Ok(match &settings.tls {
        Connector::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, drive(connection, marker).await)
        }
        #[cfg(feature = "rustls")]
        Connector::Rustls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, drive(connection, marker).await)
        }
        #[cfg(feature = "native-tls")]
        Connector::Native(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, drive(connection, marker).await)
        }
    })
}

/// Asks the server to cancel the statement `client` is running (on a connection of its own).
pub(crate) async fn cancel(client: &Client, tls: &Connector) -> Result<(), tokio_postgres::Error> {
    let token = client.cancel_token();
    match tls {
        Connector::Plain => token.cancel_query(NoTls).await,
        #[cfg(feature = "rustls")]
        Connector::Rustls(tls) => token.cancel_query(tls.clone()).await,
        #[cfg(feature = "native-tls")]
        Connector::Native(tls) => token.cancel_query(tls.clone()).await,
    }
}

/// Pings the connection every `interval` while it holds a lock; one that does not answer
/// within `interval` is closed and so marked dead. The ping is an empty query: nothing to
/// parse or plan, and it never shows as a running query.
async fn heartbeat(
    client: std::sync::Weak<Client>,
    watch: Arc<ConnWatch>,
    io_task: AbortHandle,
    interval: Duration,
) {
    let mut dead = watch.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = dead.wait_for(|dead| *dead) => return,
        }
        let Some(client) = client.upgrade() else {
            return;
        }; // the connection was dropped
        if !watch.is_holding() {
            continue;
        }
        let answered = tokio::time::timeout(interval, client.simple_query("")).await;
        if !matches!(answered, Ok(Ok(_))) {
            tracing::warn!(
                ?interval,
                "pals: heartbeat unanswered; closing the lock's connection"
            );
            watch.mark_dead("the heartbeat went unanswered");
            io_task.abort();
            return;
        }
    }
}
