//! TLS on a lock session's shared socket: tokio-postgres negotiates it (`SSLRequest`, or
//! directly), then the handshake runs on the socket itself, taken out of the [`Mux`] and put
//! back wrapped, and tokio-postgres is given the shared stream above it ([`MuxTls`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, Connection};

use super::mux::{DriverSide, Mux, Socket};
use crate::error::PgError;

/// Starts a session over TLS on `mux`'s socket, with `make`'s TLS (see [`MuxTls`]).
pub(super) async fn start_tls<M>(
    config: &Config,
    mux: &Arc<Mux>,
    make: &M,
    hostname: &str,
) -> Result<(Client, Connection<DriverSide, MuxTlsStream>), PgError>
where
    M: MakeTlsConnect<Socket> + Clone,
    M::TlsConnect: Send + 'static,
    <M::TlsConnect as TlsConnect<Socket>>::Future: Send,
    M::Stream: Send + Unpin + 'static,
{
    let tls = MuxTls::new(&mut make.clone(), hostname, mux);
    config.connect_raw(mux.driver_side(), tls).await
}

/// A cancel request over TLS on `io`, with `make`'s TLS.
pub(super) async fn cancel_tls<M>(
    token: &tokio_postgres::CancelToken,
    io: Socket,
    make: &M,
    hostname: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    M: MakeTlsConnect<Socket> + Clone,
{
    let tls = make
        .clone()
        .make_tls_connect(hostname)
        .map_err(Into::into)?;
    Ok(token.cancel_query_raw(io, tls).await?)
}

/// TLS for a shared socket: tokio-postgres negotiates it (`SSLRequest`, or directly); the
/// handshake then runs on the socket, taken out of the [`Mux`] and put back wrapped, and
/// tokio-postgres is given the shared stream above it.
pub(crate) struct MuxTls {
    handshake: Pin<Box<dyn Future<Output = io::Result<MuxTlsStream>> + Send>>,
}

impl MuxTls {
    /// A TLS set-up that fails (a bad certificate file) fails the handshake: the driver
    /// reports it as a TLS error, as it does for its own connections.
    fn new<M>(make: &mut M, hostname: &str, mux: &Arc<Mux>) -> MuxTls
    where
        M: MakeTlsConnect<Socket>,
        M::TlsConnect: Send + 'static,
        <M::TlsConnect as TlsConnect<Socket>>::Future: Send,
        M::Stream: Send + Unpin + 'static,
    {
        let connect = make
            .make_tls_connect(hostname)
            .map_err(|error| io::Error::other(error.into()));
        let mux = Arc::clone(mux);
        let handshake = async move {
            let connect = connect?;
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
        MuxTls {
            handshake: Box::pin(handshake),
        }
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
