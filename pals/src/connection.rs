//! One database connection: opened on the library's runtime ([`open`]), the statements a
//! lock session sends ([`LockConn`]), its heartbeat, and whether it is still alive.
//!
//! A lock session's socket is pals' own (`socket`): tokio-postgres starts the session on it
//! (TLS, authentication, set-up) and keeps its other uses (the heartbeat, cancel requests),
//! while the lock statements are framed by pals (`frame`) and written and answered on the
//! caller's own task (`mux`): no request channel to a connection task, no hop to another
//! thread but the read's wake-up. Layers, bottom up: `frame` (the wire format), `mux` (one
//! socket, two users), `socket` (opening it), `lock_statements` (the statements), `open`.
//!
//! PostgreSQL frees a session's locks when the session ends. The holder learns of it when
//! the connection task ends (the server closed the socket: a terminated backend, a
//! restart), when a heartbeat goes unanswered (a dead server or a black-holed network,
//! where no close ever arrives), or when pals closes the session itself. Each way, the
//! connection is marked dead, once, with the reason; `session` tells the guards.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::error::PgError;
use crate::tls::Connector;

mod frame;
mod heartbeat;
mod lock_statements;
mod mux;
mod open;
mod socket;
#[cfg(any(feature = "rustls", feature = "native-tls"))]
mod socket_tls;

pub(crate) use lock_statements::{LockConn, WaitFailed};
pub(crate) use open::{open, open_for_locks, open_listening};

/// How a connection is opened and watched.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) connect_timeout: Duration,
    /// Ping a session that holds a lock this often; `None`: never.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) tls: Connector,
    /// The sslmode and whether a client certificate is given, for messages.
    pub(crate) tls_summary: crate::tls::TlsSummary,
    /// Where connections go (`host:port`, or the socket's path), for messages.
    pub(crate) target: Arc<str>,
    /// The environment variable the URL came from (`LockerBuilder::url_from_env`), if any.
    pub(crate) url_from: Option<&'static str>,
}

/// One open database connection. Dropping it closes the connection.
pub(crate) struct PgConn {
    client: Arc<Client>,
    watch: Arc<ConnWatch>,
    io_task: AbortHandle,
    /// For cancel requests, which open a connection of their own.
    tls: Connector,
    /// A lock session's socket, shared with its statements; and where it goes (for cancel
    /// requests).
    shared: Option<(Arc<mux::Mux>, socket::Peer)>,
    /// The server process of this session.
    pub(crate) pid: i32,
    /// `server_version_num`, for the settings a statement may use.
    pub(crate) server_version: i32,
    /// Whether the session is TLS-encrypted, as the server sees it.
    pub(crate) encrypted: bool,
}

impl PgConn {
    /// Runs `sql` (one or more statements) as a simple query.
    pub(crate) async fn query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, PgError> {
        self.client.simple_query(sql).await
    }

    /// Asks the server to cancel the statement this session is running, on a connection of
    /// its own. A request that cannot be made is logged: the callers close the session
    /// anyway (the cancel only hurries the server).
    pub(crate) async fn cancel(&self) {
        let token = self.client.cancel_token();
        let sent: Result<(), Box<dyn std::error::Error + Send + Sync>> = match &self.shared {
            Some((_, peer)) => peer.cancel(&token, &self.tls).await,
            None => match &self.tls {
                Connector::Plain => token.cancel_query(NoTls).await.map_err(Into::into),
                #[cfg(feature = "rustls")]
                Connector::Rustls(tls) => token.cancel_query(tls.clone()).await.map_err(Into::into),
                #[cfg(feature = "native-tls")]
                Connector::Native(tls) => token.cancel_query(tls.clone()).await.map_err(Into::into),
            },
        };
        if let Err(error) = sent {
            tracing::debug!(%error, pid = self.pid, "pals: a cancel request could not be sent");
        }
    }

    /// Closes the connection now: marks it dead (with `why`) and drops its socket, which
    /// makes the server end the session and free its locks.
    pub(crate) fn close(&self, why: &str) {
        self.watch.mark_dead(why);
        self.io_task.abort();
        if let Some((mux, _)) = &self.shared {
            mux.shut();
        }
    }

    /// What the server told of this session when it opened.
    pub(crate) fn facts(&self) -> SessionFacts {
        SessionFacts {
            server_version: self.server_version,
            encrypted: self.encrypted,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed() || self.watch.is_dead()
    }

    pub(crate) fn watch(&self) -> &Arc<ConnWatch> {
        &self.watch
    }
}

/// What the server told of a session when it opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionFacts {
    /// `server_version_num`.
    pub(crate) server_version: i32,
    pub(crate) encrypted: bool,
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
