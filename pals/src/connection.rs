//! One database connection: opened on the library's runtime, its statements, and whether it
//! is still alive.
//!
//! PostgreSQL frees a session's locks when the session ends. The holder learns of it when
//! the connection task ends (the server closed the socket: a terminated backend, a
//! restart), when a heartbeat goes unanswered (a dead server or a black-holed network,
//! where no close ever arrives), or when pals closes the session itself. Each way, the
//! connection is marked dead, once, with the reason; `session` tells the guards.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage, Statement};

use crate::metrics::Meter;
use crate::tls::Connector;
use crate::{statement, Error, Mode};

/// How a connection is opened and watched.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) connect_timeout: Duration,
    /// Ping a session that holds a lock this often; `None`: never.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) tls: Connector,
    /// Where connections go (`host:port`, or the socket's path), for messages.
    pub(crate) target: Arc<str>,
    /// Counts the locks lost with a session.
    pub(crate) meter: Meter,
}

/// A driver error, as the statements below return it.
pub(crate) type PgError = tokio_postgres::Error;

/// One open database connection. Dropping it closes the connection.
pub(crate) struct PgConn {
    client: Arc<Client>,
    watch: Arc<ConnWatch>,
    io_task: AbortHandle,
    /// For cancel requests, which open a connection of their own.
    tls: Connector,
    prepared: Prepared,
    /// The server process of this session, for logs.
    pub(crate) pid: i32,
    /// `server_version_num`, for the settings a statement may use.
    pub(crate) server_version: i32,
}

/// The instant statements, prepared once per connection: each use is then one Bind and
/// Execute, with nothing for the server to parse or plan. Indexed by `Mode::index`.
struct Prepared {
    try_lock: [Statement; 2],
    try_lock_fenced: [Statement; 2],
    unlock: [Statement; 2],
    unlock_and_notify: Statement,
}

impl PgConn {
    /// `pg_try_advisory_lock(key)` in `mode`: whether the lock was taken.
    pub(crate) async fn try_lock(&self, key: i64, mode: Mode) -> Result<bool, PgError> {
        let statement = &self.prepared.try_lock[mode.index()];
        self.client.query_one(statement, &[&key]).await?.try_get(0)
    }

    /// [`try_lock`](PgConn::try_lock) that mints a fencing token from `sequence` with the
    /// grant: `Some(token)` if the lock was taken.
    pub(crate) async fn try_lock_fenced(
        &self,
        key: i64,
        mode: Mode,
        sequence: &str,
    ) -> Result<Option<i64>, PgError> {
        let statement = &self.prepared.try_lock_fenced[mode.index()];
        self.client
            .query_one(statement, &[&key, &sequence])
            .await?
            .try_get(0)
    }

    /// `pg_advisory_unlock(key)` in `mode`: whether the session held the lock. With
    /// `notify` (a semaphore permit's, exclusive), `NOTIFY pals_permit` with that payload
    /// in the same statement.
    pub(crate) async fn unlock(
        &self,
        key: i64,
        mode: Mode,
        notify: Option<&str>,
    ) -> Result<bool, PgError> {
        let row = match notify {
            None => {
                let statement = &self.prepared.unlock[mode.index()];
                self.client.query_one(statement, &[&key]).await?
            }
            Some(payload) => {
                debug_assert_eq!(mode, Mode::Exclusive, "permits are exclusive locks");
                let statement = &self.prepared.unlock_and_notify;
                self.client.query_one(statement, &[&key, &payload]).await?
            }
        };
        row.try_get(0)
    }

    /// Waits for the lock in one statement, `lock_timeout_ms` at most (0: no limit).
    /// `Ok(_)`: granted, with a fencing token from `fence` (the sequence) if one is given.
    pub(crate) async fn wait_lock(
        &self,
        key: i64,
        mode: Mode,
        lock_timeout_ms: u64,
        fence: Option<&str>,
    ) -> Result<Option<i64>, PgError> {
        let sql = statement::wait_lock(key, mode, lock_timeout_ms, self.server_version, fence);
        let messages = self.client.simple_query(&sql).await?;
        let token = messages.iter().rev().find_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|token| token.parse().ok()),
            _ => None,
        });
        Ok(token)
    }

    /// The advisory locks the server holds for this session, by key and mode; `Ok(None)`
    /// if the answer cannot be read (which cannot happen with a PostgreSQL server).
    pub(crate) async fn held(&self) -> Result<Option<Vec<(i64, Mode)>>, PgError> {
        let messages = self.client.simple_query(statement::HELD).await?;
        let rows = messages.iter().filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        Ok(rows
            .map(|row| {
                let key = row.get(0)?.parse().ok()?;
                let mode = if row.get(1)? == "t" {
                    Mode::Shared
                } else {
                    Mode::Exclusive
                };
                Some((key, mode))
            })
            .collect())
    }

    /// Unlocks each of `locks` once; how many of those unlocks found nothing held
    /// (`Ok(None)`: an unreadable answer).
    pub(crate) async fn unlock_each(&self, locks: &[(i64, Mode)]) -> Result<Option<u64>, PgError> {
        let messages = self
            .client
            .simple_query(&statement::unlock_each(locks))
            .await?;
        Ok(first_value(&messages).and_then(|n| n.parse().ok()))
    }

    /// The client, for queries that neither take nor release a lock.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Asks the server to cancel the statement this session is running, on a connection of
    /// its own.
    pub(crate) async fn cancel(&self) -> Result<(), PgError> {
        let token = self.client.cancel_token();
        match &self.tls {
            Connector::Plain => token.cancel_query(NoTls).await,
            #[cfg(feature = "rustls")]
            Connector::Rustls(tls) => token.cancel_query(tls.clone()).await,
            #[cfg(feature = "native-tls")]
            Connector::Native(tls) => token.cancel_query(tls.clone()).await,
        }
    }

    /// Closes the connection now: marks it dead (with `why`) and drops its socket, which
    /// makes the server end the session and free its locks.
    pub(crate) fn close(&self, why: &str) {
        self.watch.mark_dead(why);
        self.io_task.abort();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed() || self.watch.is_dead()
    }

    pub(crate) fn watch(&self) -> &Arc<ConnWatch> {
        &self.watch
    }

    /// Pings the connection every `interval` while `holding()` says it holds a lock; one
    /// that does not answer within `interval` is closed. Ends when the connection dies or
    /// `holding()` returns `None` (its session is gone). Spawn it on the library's runtime.
    pub(crate) fn heartbeat(
        &self,
        interval: Duration,
        holding: impl Fn() -> Option<bool> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        heartbeat(
            Arc::downgrade(&self.client),
            Arc::clone(&self.watch),
            self.io_task.clone(),
            interval,
            holding,
        )
    }
}

/// Whether a connection is dead, and why.
pub(crate) struct ConnWatch {
    dead: watch::Sender<bool>,
    why: OnceLock<String>,
}

impl ConnWatch {
    fn new() -> ConnWatch {
        ConnWatch {
            dead: watch::Sender::new(false),
            why: OnceLock::new(),
        }
    }

    /// A receiver that reads `true` once the connection is dead.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.dead.subscribe()
    }

    pub(crate) fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    /// Why the connection died (the first reason given), once it has.
    pub(crate) fn why(&self) -> &str {
        self.why.get().map_or("", String::as_str)
    }

    pub(crate) fn mark_dead(&self, why: &str) {
        let _ = self.why.set(why.to_string());
        self.dead.send_replace(true);
    }
}

/// The first column of the first row of a simple query's answer.
pub(crate) fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

/// True if `error` means the session is over: the connection closed, or the server sent a
/// FATAL error (`pg_terminate_backend`, a shutdown), after which it closes the connection.
/// Every lock of the session is then gone.
pub(crate) fn ends_session(error: &PgError) -> bool {
    if error.is_closed() {
        return true;
    }
    error.as_db_error().is_some_and(|db| {
        matches!(db.severity(), "FATAL" | "PANIC")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(db.code())
    })
}

/// True if `error` is a cancel: `pg_cancel_backend`, a cancel request, `statement_timeout`.
pub(crate) fn is_cancel(error: &PgError) -> bool {
    error.code() == Some(&SqlState::QUERY_CANCELED)
}

/// True if `error` is `lock_timeout` firing.
pub(crate) fn is_lock_timeout(error: &PgError) -> bool {
    error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

/// Marks the connection dead when the task that drives it ends, however it ends (the
/// server closed it, an I/O error, or pals aborted it).
struct MarkDeadOnDrop(Arc<ConnWatch>);

impl Drop for MarkDeadOnDrop {
    fn drop(&mut self) {
        self.0.mark_dead("the connection ended");
    }
}

/// How many times a setup cut short by a cancel (a role's tiny `statement_timeout`, an
/// operator's `pg_cancel_backend`) is tried again before the connect fails.
const SETUP_TRIES: usize = 3;

/// Opens a connection; call it on the library's runtime, which will drive it.
pub(crate) async fn open(settings: ConnectionSettings) -> Result<PgConn, Error> {
    open_with(settings, None).await
}

/// Notifications (`NOTIFY`) that reach a connection opened with [`open_listening`].
pub(crate) type Notifications = mpsc::UnboundedReceiver<tokio_postgres::Notification>;

/// [`open`] for a session that `LISTEN`s: the notifications it receives, in order.
pub(crate) async fn open_listening(
    settings: ConnectionSettings,
) -> Result<(PgConn, Notifications), Error> {
    let (tell, notifications) = mpsc::unbounded_channel();
    Ok((open_with(settings, Some(tell)).await?, notifications))
}

async fn open_with(
    settings: ConnectionSettings,
    notify: Option<mpsc::UnboundedSender<tokio_postgres::Notification>>,
) -> Result<PgConn, Error> {
    let timeout = settings.connect_timeout;
    // The timeout covers the whole startup (TCP, TLS, authentication, setup), not only the
    // TCP connect that tokio-postgres' own connect_timeout bounds: a server that accepts and
    // then says nothing must not hang us.
    let watch = Arc::new(ConnWatch::new());
    let marker = MarkDeadOnDrop(Arc::clone(&watch));
    let mut io_task = None;
    let opened = tokio::time::timeout(timeout, async {
        let (client, task) = connect(&settings, marker, notify)
            .await
            .map_err(|error| Error::connect_failed(error, &settings.target))?;
        io_task = Some(task);
        let mut tries = 0;
        loop {
            tries += 1;
            match setup(&client).await {
                Ok(setup) => return Ok((client, setup)),
                Err(error) if is_cancel(&error) && tries < SETUP_TRIES => continue,
                Err(error) => return Err(Error::connect_failed(error, &settings.target)),
            }
        }
    })
    .await;
    let (client, (prepared, pid, server_version)) = match opened {
        Ok(Ok(opened)) => opened,
        failed => {
            if let Some(io_task) = io_task {
                io_task.abort();
            }
            return Err(match failed {
                Ok(Err(error)) => error,
                _ => Error::connect_timeout(timeout, &settings.target),
            });
        }
    };
    let io_task = io_task.expect("set once connected");
    Ok(PgConn {
        client: Arc::new(client),
        watch,
        io_task,
        tls: settings.tls,
        prepared,
        pid,
        server_version,
    })
}

/// The session's setup and prepared statements, in one round trip (tokio-postgres
/// pipelines requests polled together).
async fn setup(client: &Client) -> Result<(Prepared, i32, i32), PgError> {
    let (setup, try_lock, try_lock_shared, fenced, fenced_shared, unlock, unlock_shared, notify) = tokio::join!(
        client.simple_query(statement::SETUP),
        client.prepare(statement::try_lock(Mode::Exclusive)),
        client.prepare(statement::try_lock(Mode::Shared)),
        client.prepare(statement::try_lock_fenced(Mode::Exclusive)),
        client.prepare(statement::try_lock_fenced(Mode::Shared)),
        client.prepare(statement::unlock(Mode::Exclusive)),
        client.prepare(statement::unlock(Mode::Shared)),
        client.prepare(statement::UNLOCK_AND_NOTIFY),
    );
    let (pid, server_version) = setup?
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((
                row.get(0).and_then(|pid| pid.parse().ok()).unwrap_or(0),
                row.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            )),
            _ => None,
        })
        .unwrap_or((0, 0));
    let prepared = Prepared {
        try_lock: [try_lock?, try_lock_shared?],
        try_lock_fenced: [fenced?, fenced_shared?],
        unlock: [unlock?, unlock_shared?],
        unlock_and_notify: notify?,
    };
    Ok((prepared, pid, server_version))
}

/// Connects with the TLS the settings ask for, and drives the connection in a task of the
/// current (the library's) runtime; the task marks the connection dead when it ends.
async fn connect(
    settings: &ConnectionSettings,
    marker: MarkDeadOnDrop,
    notify: Option<mpsc::UnboundedSender<tokio_postgres::Notification>>,
) -> Result<(Client, AbortHandle), PgError> {
    fn drive<S, T>(
        mut connection: tokio_postgres::Connection<S, T>,
        marker: MarkDeadOnDrop,
        notify: Option<mpsc::UnboundedSender<tokio_postgres::Notification>>,
    ) -> AbortHandle
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let _marker = marker;
            // What awaiting the connection does, keeping the notifications.
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        if let Some(notify) = &notify {
                            let _ = notify.send(notification);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::debug!(%error, "pals: database connection ended with an error");
                        return;
                    }
                    None => return,
                }
            }
        })
        .abort_handle()
    }
    let config = &settings.config;
    Ok(match &settings.tls {
        Connector::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, drive(connection, marker, notify))
        }
        #[cfg(feature = "rustls")]
        Connector::Rustls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, drive(connection, marker, notify))
        }
        #[cfg(feature = "native-tls")]
        Connector::Native(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, drive(connection, marker, notify))
        }
    })
}

/// See [`PgConn::heartbeat`]. The ping is an empty query: nothing to parse or plan, and it
/// never shows as a running query. Any answer, an error included (a cancel, say), shows the
/// server is there; only silence or a closed connection does not.
async fn heartbeat(
    client: Weak<Client>,
    watch: Arc<ConnWatch>,
    io_task: AbortHandle,
    interval: Duration,
    holding: impl Fn() -> Option<bool>,
) {
    let mut dead = watch.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = dead.wait_for(|dead| *dead) => return,
        }
        match holding() {
            None => return, // the session is gone
            Some(false) => continue,
            Some(true) => {}
        }
        let Some(client) = client.upgrade() else {
            return;
        };
        let answered = tokio::time::timeout(interval, client.simple_query("")).await;
        let alive = match answered {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => !ends_session(&error),
            Err(_) => false,
        };
        if !alive {
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
