//! A lock session's socket, opened by pals so that it can share it ([`Mux`]): the hosts,
//! ports, `hostaddr`, keepalives and `target_session_attrs` of the configuration, tried in
//! turn as tokio-postgres' `Config::connect` tries them; then TLS, authentication and
//! start-up by tokio-postgres (`connect_raw`) over the shared socket. With TLS, the
//! handshake runs on the socket itself (`socket_tls`) and the session's bytes are shared
//! above it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use super::mux::{DriverSide, Mux, Socket};
#[cfg(any(feature = "rustls", feature = "native-tls"))]
use super::socket_tls::{cancel_tls, start_tls, MuxTlsStream};
use crate::error::PgError;
use crate::tls::Connector;

/// Where a session's socket goes: for cancel requests, which open one of their own.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    addr: Addr,
    /// The host name TLS checks the certificate against.
    #[cfg_attr(not(any(feature = "rustls", feature = "native-tls")), allow(dead_code))]
    hostname: Option<String>,
    /// The socket settings (connect timeout, keepalives).
    config: Config,
}

#[derive(Clone, Debug)]
enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Why no session could be opened: the socket could not be (`Io`), or the driver failed.
pub(crate) enum ConnectError {
    Io(io::Error),
    Pg(PgError),
}

/// A session started on a socket of pals': its client, its connection (to be driven), the
/// shared socket, and where it goes.
pub(crate) struct Opened {
    pub(crate) client: Client,
    pub(crate) connection: Driven,
    pub(crate) mux: Arc<Mux>,
    pub(crate) peer: Peer,
}

/// The connection tokio-postgres drives, plain or over TLS.
pub(crate) enum Driven {
    Plain(tokio_postgres::Connection<DriverSide, tokio_postgres::tls::NoTlsStream>),
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    Tls(tokio_postgres::Connection<DriverSide, MuxTlsStream>),
}

/// Opens a session on the first host (in the configuration's order) that takes one.
pub(crate) async fn connect(config: &Config, tls: &Connector) -> Result<Opened, ConnectError> {
    let (hosts, addrs, ports) = (
        config.get_hosts(),
        config.get_hostaddrs(),
        config.get_ports(),
    );
    let count = hosts.len().max(addrs.len());
    let mut order: Vec<usize> = (0..count).collect();
    if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
        shuffle(&mut order);
    }
    let mut last = None;
    for i in order {
        let port = match ports {
            [one] => *one,
            _ => ports.get(i).copied().unwrap_or(5432),
        };
        let hostname = match hosts.get(i) {
            Some(Host::Tcp(host)) => Some(host.clone()),
            _ => None,
        };
        let candidates = match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => vec![Addr::Tcp(SocketAddr::new(*ip, port))],
            (None, Some(Host::Tcp(host))) => match resolve(host, port, config).await {
                Ok(candidates) => candidates,
                Err(error) => {
                    last = Some(ConnectError::Io(error));
                    continue;
                }
            },
            (None, Some(Host::Unix(dir))) => {
                vec![Addr::Unix(dir.join(format!(".s.PGSQL.{port}")))]
            }
            (None, None) => continue,
        };
        for addr in candidates {
            let peer = Peer {
                addr,
                hostname: hostname.clone(),
                config: config.clone(),
            };
            match connect_once(config, tls, peer).await {
                Ok(opened) => return Ok(opened),
                Err(error) => last = Some(error),
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ConnectError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no host to connect to",
        ))
    }))
}

async fn resolve(host: &str, port: u16, config: &Config) -> io::Result<Vec<Addr>> {
    let mut found: Vec<Addr> = tokio::net::lookup_host((host, port))
        .await?
        .map(Addr::Tcp)
        .collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve any addresses",
        ));
    }
    if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
        let mut order: Vec<usize> = (0..found.len()).collect();
        shuffle(&mut order);
        let mut shuffled = Vec::with_capacity(found.len());
        for i in order {
            shuffled.push(found[i].clone());
        }
        found = shuffled;
    }
    Ok(found)
}

/// Shuffles `items` (with the standard library's random hash seeds).
fn shuffle(items: &mut [usize]) {
    use std::hash::{BuildHasher, Hasher};
    for i in (1..items.len()).rev() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        let j = (hasher.finish() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Opens the socket to `peer` and starts a session on it.
async fn connect_once(
    config: &Config,
    tls: &Connector,
    peer: Peer,
) -> Result<Opened, ConnectError> {
    let io = open_socket(config, &peer.addr)
        .await
        .map_err(ConnectError::Io)?;
    let mux = Mux::new(io);
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    let hostname = peer.hostname.as_deref().unwrap_or("");
    let (client, mut connection) = match tls {
        Connector::Plain => {
            let started = config.connect_raw(mux.driver_side(), NoTls).await;
            let (client, connection) = started.map_err(ConnectError::Pg)?;
            (client, Driven::Plain(connection))
        }
        #[cfg(feature = "rustls")]
        Connector::Rustls(make) => {
            let started = start_tls(config, &mux, make, hostname).await;
            let (client, connection) = started.map_err(ConnectError::Pg)?;
            (client, Driven::Tls(connection))
        }
        #[cfg(feature = "native-tls")]
        Connector::Native(make) => {
            let started = start_tls(config, &mux, make, hostname).await;
            let (client, connection) = started.map_err(ConnectError::Pg)?;
            (client, Driven::Tls(connection))
        }
    };
    check_attrs(config, &client, &mut connection).await?;
    Ok(Opened {
        client,
        connection,
        mux,
        peer,
    })
}

/// Opens a socket to `addr`, within the configuration's connect timeout, with its TCP
/// settings.
async fn open_socket(config: &Config, addr: &Addr) -> io::Result<Socket> {
    let timeout = config.get_connect_timeout().copied();
    match addr {
        Addr::Tcp(addr) => {
            let stream = within(timeout, TcpStream::connect(*addr)).await?;
            stream.set_nodelay(true)?;
            let socket = socket2::SockRef::from(&stream);
            #[cfg(target_os = "linux")]
            if let Some(limit) = config.get_tcp_user_timeout() {
                socket.set_tcp_user_timeout(Some(*limit))?;
            }
            if config.get_keepalives() {
                let mut keepalive =
                    socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
                if let Some(interval) = config.get_keepalives_interval() {
                    keepalive = keepalive.with_interval(interval);
                }
                #[cfg(not(target_os = "openbsd"))]
                if let Some(retries) = config.get_keepalives_retries() {
                    keepalive = keepalive.with_retries(retries);
                }
                socket.set_tcp_keepalive(&keepalive)?;
            }
            Ok(Socket(Box::new(stream)))
        }
        Addr::Unix(path) => {
            let stream = within(timeout, UnixStream::connect(path.clone())).await?;
            Ok(Socket(Box::new(stream)))
        }
    }
}

/// `connect`, given up after `timeout` (the configuration's `connect_timeout`, per socket).
async fn within<T>(
    timeout: Option<Duration>,
    connect: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => connect.await,
        Some(timeout) => tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                ))
            }),
    }
}

/// `target_session_attrs`: a `read-write` session must not be read-only, and the reverse.
async fn check_attrs(
    config: &Config,
    client: &Client,
    connection: &mut Driven,
) -> Result<(), ConnectError> {
    let want_writes = match config.get_target_session_attrs() {
        TargetSessionAttrs::ReadWrite => true,
        TargetSessionAttrs::ReadOnly => false,
        _ => return Ok(()),
    };
    let query = client.simple_query("SHOW transaction_read_only");
    tokio::pin!(query);
    let answer = std::future::poll_fn(|cx| {
        let closed = match connection {
            Driven::Plain(connection) => Pin::new(connection).poll(cx),
            #[cfg(any(feature = "rustls", feature = "native-tls"))]
            Driven::Tls(connection) => Pin::new(connection).poll(cx),
        };
        if let Poll::Ready(result) = closed {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed");
            return Poll::Ready(
                result
                    .map_err(ConnectError::Pg)
                    .and(Err(ConnectError::Io(error))),
            );
        }
        query.as_mut().poll(cx).map_err(ConnectError::Pg)
    })
    .await?;
    let read_only = answer.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).map(|value| value == "on"),
        _ => None,
    });
    if read_only == Some(want_writes) {
        let what = if want_writes {
            "database does not allow writes"
        } else {
            "database is not read only"
        };
        return Err(ConnectError::Io(io::Error::new(
            io::ErrorKind::PermissionDenied,
            what,
        )));
    }
    Ok(())
}

impl Peer {
    /// Opens a socket to the same server, for a cancel request (with `tls`, as the session).
    pub(crate) async fn cancel(
        &self,
        token: &tokio_postgres::CancelToken,
        tls: &Connector,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let io = open_socket(&self.config, &self.addr).await?;
        #[cfg(any(feature = "rustls", feature = "native-tls"))]
        let hostname = self.hostname.as_deref().unwrap_or("");
        match tls {
            Connector::Plain => Ok(token.cancel_query_raw(io, NoTls).await?),
            #[cfg(feature = "rustls")]
            Connector::Rustls(make) => cancel_tls(token, io, make, hostname).await,
            #[cfg(feature = "native-tls")]
            Connector::Native(make) => cancel_tls(token, io, make, hostname).await,
        }
    }
}
