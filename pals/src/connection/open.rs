//! Opening a connection: TCP or a Unix socket, TLS, authentication and pals' set-up, all
//! within the connect timeout, on the library's runtime, which then drives it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

use super::lock_statements::LockConn;
use super::mux::Mux;
use super::socket::{self, ConnectError, Driven, Peer};
use super::{ConnWatch, ConnectionSettings, PgConn};
use crate::error::{is_cancel, Error, PgError};
use crate::on_drop::OnDrop;
use crate::sql::{self, Mark, Purpose};
use crate::tls::Connector;

/// How many times a set-up cut short by a cancel (a role's tiny `statement_timeout`, an
/// operator's `pg_cancel_backend`) is tried again before the connect fails.
const SETUP_TRIES: usize = 3;

/// Notifications (`NOTIFY`) that reach a connection opened with [`open_listening`].
pub(crate) type Notifications = mpsc::UnboundedReceiver<Notification>;

/// Opens a connection for `purpose` (not for locks: see [`open_for_locks`]); call it on the
/// library's runtime, which will drive it.
pub(crate) async fn open(settings: &ConnectionSettings, purpose: Purpose) -> Result<PgConn, Error> {
    Ok(open_with(settings, purpose, None).await?.0)
}

/// Opens a lock session whose statements wait on another session's lock (a fenced lock's
/// sequence) `lock_timeout_ms` at most; its lock statements are prepared, and its socket is
/// shared with them.
pub(crate) async fn open_for_locks(
    settings: &ConnectionSettings,
    lock_timeout_ms: u64,
) -> Result<LockConn, Error> {
    let mark = new_mark();
    let purpose = Purpose::Locks {
        lock_timeout_ms,
        mark,
    };
    let (conn, tries) = open_with(settings, purpose, None).await?;
    Ok(LockConn::new(conn, mark, tries))
}

/// A mark for a new lock session, unique to it: this process's id and a count (unique on
/// this host), and a random half (from the standard library's hash seeds), for other hosts.
fn new_mark() -> Mark {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u32(count);
    let local = (u64::from(std::process::id()) << 32) | u64::from(count);
    Mark((u128::from(random.finish()) << 64) | u128::from(local))
}

/// [`open`] for a session that `LISTEN`s: the notifications it receives, in order.
pub(crate) async fn open_listening(
    settings: &ConnectionSettings,
) -> Result<(PgConn, Notifications), Error> {
    let (tell, notifications) = mpsc::unbounded_channel();
    let (conn, _) = open_with(settings, Purpose::Listen, Some(tell)).await?;
    Ok((conn, notifications))
}

/// Opens and sets up a connection; with it, the set-up's try that worked (a lock session's
/// statements are named after it). The connect timeout covers the whole start-up (TCP,
/// TLS, authentication, set-up), not only the TCP connect that tokio-postgres' own
/// `connect_timeout` bounds: a server that accepts and then says nothing must not hang us.
async fn open_with(
    settings: &ConnectionSettings,
    purpose: Purpose,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<(PgConn, usize), Error> {
    let timeout = settings.connect_timeout;
    let watch = Arc::new(ConnWatch::new());
    let mut io_task = None;
    let mut shared = None;
    let opened = tokio::time::timeout(timeout, async {
        let failed = |error| Error::connect_failed(error, &settings.target, settings.tls_summary);
        let client = match purpose {
            Purpose::Locks { .. } => {
                let (client, task, mux, peer) = connect_shared(settings, &watch).await?;
                io_task = Some(task);
                shared = Some((mux, peer));
                client
            }
            _ => {
                let (client, task) = connect(settings, Arc::clone(&watch), notify)
                    .await
                    .map_err(failed)?;
                io_task = Some(task);
                client
            }
        };
        let mux = shared.as_ref().map(|(mux, _)| &**mux);
        set_up(&client, mux, purpose)
            .await
            .map(|setup| (client, setup))
            .map_err(failed)
    })
    .await;
    let (client, setup) = match opened {
        Ok(Ok(opened)) => opened,
        failed => {
            if let Some(io_task) = &io_task {
                io_task.abort();
            }
            return Err(match failed {
                Ok(Err(error)) => error,
                _ => Error::connect_timeout(timeout, &settings.target),
            });
        }
    };
    let conn = PgConn {
        client: Arc::new(client),
        watch,
        io_task: io_task.expect("set once connected"),
        tls: settings.tls.clone(),
        pid: setup.pid,
        server_version: setup.server_version,
        encrypted: setup.encrypted,
        shared,
    };
    Ok((conn, setup.tries))
}

/// What the set-up of a session found and made.
struct SetUp {
    pid: i32,
    server_version: i32,
    /// Whether the server sees the session as TLS-encrypted (`pg_stat_ssl`).
    encrypted: bool,
    /// The try that worked (a lock session's statements are named after it).
    tries: usize,
}

/// [`set_up_once`], tried again when a cancel cuts it short.
async fn set_up(client: &Client, mux: Option<&Mux>, purpose: Purpose) -> Result<SetUp, PgError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match set_up_once(client, mux, purpose, tries).await {
            Err(error) if is_cancel(&error) && tries < SETUP_TRIES => continue,
            done => return done,
        }
    }
}

/// The session's settings and, for a lock session (its shared socket `mux`), its prepared
/// statements, named after the try (a try cut short may leave some prepared); in one round
/// trip (the two requests are written together).
async fn set_up_once(
    client: &Client,
    mux: Option<&Mux>,
    purpose: Purpose,
    tries: usize,
) -> Result<SetUp, PgError> {
    let text = sql::setup(purpose);
    let setup = client.simple_query(&text);
    let answer = match mux {
        Some(mux) => {
            let (prepared, answer) = tokio::join!(LockConn::prepare(mux, tries), setup);
            prepared?;
            answer?
        }
        None => setup.await?,
    };
    let row = sql::rows(&answer).next();
    let column = |i: usize| row.and_then(|row| row.get(i)?.parse().ok()).unwrap_or(0);
    Ok(SetUp {
        pid: column(0),
        server_version: column(1),
        encrypted: row.and_then(|row| row.get(2)) == Some("t"),
        tries,
    })
}

/// Connects a lock session on a socket of pals' own, shared with its statements, and drives
/// the connection in a task of the current (the library's) runtime, as [`connect`] does.
async fn connect_shared(
    settings: &ConnectionSettings,
    watch: &Arc<ConnWatch>,
) -> Result<(Client, AbortHandle, Arc<Mux>, Peer), Error> {
    let (target, tls) = (&settings.target, settings.tls_summary);
    let opened = socket::connect(&settings.config, &settings.tls)
        .await
        .map_err(|error| match error {
            ConnectError::Pg(error) => Error::connect_failed(error, target, tls),
            ConnectError::Io(error) => Error::connect_io(&error, target, tls),
        })?;
    let task = match opened.connection {
        Driven::Plain(connection) => drive(connection, Arc::clone(watch), None),
        #[cfg(any(feature = "rustls", feature = "native-tls"))]
        Driven::Tls(connection) => drive(connection, Arc::clone(watch), None),
    };
    opened.mux.track();
    Ok((opened.client, task, opened.mux, opened.peer))
}

/// Connects with the TLS the settings ask for, and drives the connection in a task of the
/// current (the library's) runtime; the task marks the connection dead when it ends.
async fn connect(
    settings: &ConnectionSettings,
    watch: Arc<ConnWatch>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<(Client, AbortHandle), PgError> {
    let config = &settings.config;
    Ok(match &settings.tls {
        Connector::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, drive(connection, watch, notify))
        }
        #[cfg(feature = "rustls")]
        Connector::Rustls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, drive(connection, watch, notify))
        }
        #[cfg(feature = "native-tls")]
        Connector::Native(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, drive(connection, watch, notify))
        }
    })
}

/// Spawns the task that drives `connection`: what awaiting it does, keeping the
/// notifications for `notify`. The connection is marked dead when the task ends, however
/// it ends (the server closed it, an I/O error, or pals aborted it).
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    watch: Arc<ConnWatch>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> AbortHandle
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _mark_dead = OnDrop::new(move || watch.mark_dead("the connection ended"));
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
