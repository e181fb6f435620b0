//! A fault-injection TCP proxy: forwards connections to a server until told to black-hole
//! them (stop forwarding, closing nothing), as a dead network or a hung server looks, or to
//! refuse new connections (a cancel request then never reaches the server). A connection
//! the client closes is closed towards the server too.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on 127.0.0.1 in front of `upstream`; it stops (closing everything) when dropped.
///
/// It runs on a thread and runtime of its own, so it can be used from sync and async tests.
pub struct Proxy {
    port: u16,
    blackhole: watch::Sender<bool>,
    refuse: watch::Sender<bool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (host:port).
    pub fn start(upstream: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let blackhole = watch::Sender::new(false);
        let state = blackhole.subscribe();
        let refuse = watch::Sender::new(false);
        let refusing = refuse.subscribe();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        if *refusing.borrow() {
                            drop(client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            continue;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::spawn(pump(client_read, server_write, state.clone()));
                        tokio::spawn(pump(server_read, client_write, state.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop => {}
                }
            });
            // Dropping the runtime drops every pump, closing every socket.
        });
        Proxy {
            port,
            blackhole,
            refuse,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, nothing more is forwarded either way, and nothing is closed.
    pub fn black_hole(&self) {
        self.blackhole.send_replace(true);
    }

    /// From now on, new connections are closed at once, never forwarded; those open go on.
    pub fn refuse_new(&self) {
        self.refuse.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blackhole: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = blackhole.wait_for(|on| *on) => break,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if *blackhole.borrow() || to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    // Black-holed: keep both sockets open and silent until the proxy is dropped.
    std::future::pending::<()>().await;
    drop((from, to));
}

/// The host:port of the test database, for putting a proxy in front of it.
pub fn db_host_port() -> String {
    let url: tokio_postgres::Config = crate::db_url_with(None, None, None, "").parse().unwrap();
    match (url.get_hosts().first(), url.get_ports().first()) {
        (Some(tokio_postgres::config::Host::Tcp(host)), Some(port)) => format!("{host}:{port}"),
        _ => unreachable!("db_url_with names a TCP host and a port"),
    }
}

/// The test database's URL through the proxy on `port`.
pub fn url_via(port: u16) -> String {
    crate::db_url_with(Some("127.0.0.1"), Some(port), None, "")
}
