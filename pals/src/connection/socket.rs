//! A lock session's socket, opened by pals so that it can share it ([`Mux`]): the hosts,
//! ports, `hostaddr`, keepalives and `target_session_attrs` of the configuration, tried in
//! turn as tokio-postgres' `Config::connect` tries them; then TLS, authentication and
//! start-up by tokio-postgres (`connect_raw`) over the shared socket. With TLS, the
//! handshake runs on the socket itself ([`MuxTls`]) and the session's bytes are shared
//! above it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use super::mux::{DriverSide, Mux, Socket};
use crate::error::PgError;
use crate::tls::Connector;

/// Where a session's socket goes: for cancel requests, which open one of their own.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    addr: Addr,
    /// The host name TLS checks the certificate against.
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
    let stream = mux.driver_side();
    let hostname = peer.hostname.as_deref().unwrap_or("");
    let pg = ConnectError::Pg;
    let (client, mut connection) = match tls {
        Connector::Plain => {
            let (client, connection) = config.connect_raw(stream, NoTls).await.map_err(pg)?;
            (client, Driven::Plain(connection))
        }
        #[cfg(feature = "rustls")]
        Connector::Rustls(make) => {
            let mut make = make.clone();
            let tls = MuxTls::new(&mut make, hostname, &mux)?;
            let (client, connection) = config.connect_raw(stream, tls).await.map_err(pg)?;
            (client, Driven::Tls(connection))
        }
        #[cfg(feature = "native-tls")]
        Connector::Native(make) => {
            let mut make = make.clone();
            let tls = MuxTls::new(&mut make, hostname, &mux)?;
            let (client, connection) = config.connect_raw(stream, tls).await.map_err(pg)?;
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
    ) -> Result<(), PgError> {
        let io = match open_socket(&self.config, &self.addr).await {
            Ok(io) => io,
            // The driver's error for a socket that cannot be opened: its own attempt's.
            Err(_) => return token.cancel_query(NoTls).await,
        };
        let hostname = self.hostname.as_deref().unwrap_or("");
        match tls {
            Connector::Plain => token.cancel_query_raw(io, NoTls).await,
            #[cfg(feature = "rustls")]
            Connector::Rustls(make) => {
                let mut make = make.clone();
                let tls = MakeTlsConnect::<Socket>::make_tls_connect(&mut make, hostname);
                match tls {
                    Ok(tls) => token.cancel_query_raw(io, tls).await,
                    Err(_) => token.cancel_query(NoTls).await,
                }
            }
            #[cfg(feature = "native-tls")]
            Connector::Native(make) => {
                let mut make = make.clone();
                let tls = MakeTlsConnect::<Socket>::make_tls_connect(&mut make, hostname);
                match tls {
                    Ok(tls) => token.cancel_query_raw(io, tls).await,
                    Err(_) => token.cancel_query(NoTls).await,
                }
            }
        }
    }
}

/// TLS for a shared socket: tokio-postgres negotiates it (`SSLRequest`, or directly); the
/// handshake then runs on the socket, taken out of the [`Mux`] and put back wrapped, and
/// tokio-postgres is given the shared stream above it.
pub(crate) struct MuxTls {
    handshake: Pin<Box<dyn Future<Output = io::Result<MuxTlsStream>> + Send>>,
}

impl MuxTls {
    fn new<M>(make: &mut M, hostname: &str, mux: &Arc<Mux>) -> Result<MuxTls, ConnectError>
    where
        M: MakeTlsConnect<Socket>,
        M::TlsConnect: Send + 'static,
        <M::TlsConnect as TlsConnect<Socket>>::Future: Send,
        M::Stream: Send + Unpin + 'static,
    {
        let connect = make
            .make_tls_connect(hostname)
            .map_err(|error| ConnectError::Io(io::Error::other(error.into())))?;
        let mux = Arc::clone(mux);
        let handshake = async move {
            let socket = mux
                .take_io()
                .ok_or_else(|| io::Error::other("the socket is in use"))?;
            let stream = connect
                .connect(socket)
                .await
                .map_err(|error| io::Error::other(error.into()))?;
            let binding = Mutex::new(Some(stream.channel_binding()));
            mux.put_io(Socket(Box::new(stream)));
            Ok(MuxTlsStream {
                side: mux.driver_side(),
                binding,
            })
        };
        Ok(MuxTls {
            handshake: Box::pin(handshake),
        })
    }
}

impl TlsConnect<DriverSide> for MuxTls {
    type Stream = MuxTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<MuxTlsStream>> + Send>>;

    fn connect(self, _plain: DriverSide) -> Self::Future {
        // `_plain` is the shared socket's own side: the handshake takes the socket itself.
        self.handshake
    }
}

/// The shared stream over TLS, as tokio-postgres sees it, with the TLS session's channel
/// binding (for SCRAM-SHA-256-PLUS).
pub(crate) struct MuxTlsStream {
    side: DriverSide,
    /// Asked for once, by the authentication (`ChannelBinding` is not `Clone`).
    binding: Mutex<Option<ChannelBinding>>,
}

impl TlsStream for MuxTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let mut binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        binding.take().unwrap_or_else(ChannelBinding::none)
    }
}

impl AsyncRead for MuxTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.side).poll_read(cx, buf)
    }
}

impl AsyncWrite for MuxTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.side).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.side).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.side).poll_shutdown(cx)
    }
}
