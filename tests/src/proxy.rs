//! A fault-injection TCP proxy: forwards connections to a server until told to black-hole
//! them (stop forwarding, closing nothing), as a dead network or a hung server looks, or to
//! refuse new connections (a cancel request then never reaches the server). A connection
//! the client closes is closed towards the server too.
//!
//! It also reads what clients send (plain connections: `sslmode=disable`) and records each
//! statement they run, so that a test can check what went over the wire instead of how long
//! it took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    statements: Statements,
}

/// The statements run through the proxy, in the order they reached it, with when.
type Statements = Arc<Mutex<Vec<(Instant, String)>>>;

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
        let statements = Statements::default();
        let recorded = statements.clone();
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
                        let reader = Frontend::new(recorded.clone());
                        tokio::spawn(pump(client_read, server_write, state.clone(), Some(reader)));
                        tokio::spawn(pump(server_read, client_write, state.clone(), None));
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
            statements,
        }
    }

    /// Every statement run through the proxy so far, in order: the text of each simple
    /// query, and of each prepared statement each time it is bound to run.
    pub fn statements(&self) -> Vec<String> {
        self.timed_statements()
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    /// [`statements`](Proxy::statements), each with when it reached the proxy.
    pub fn timed_statements(&self) -> Vec<(Instant, String)> {
        self.statements.lock().unwrap().clone()
    }

    /// How many statements run so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.statements()
            .iter()
            .filter(|s| s.contains(text))
            .count()
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
    mut frontend: Option<Frontend>,
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
                if let Some(frontend) = &mut frontend {
                    frontend.read(&buffer[..n]);
                }
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

/// Reads the frontend side of PostgreSQL's wire protocol (what a client sends) and records
/// the statements it runs. Gives up on a connection that turns to TLS.
struct Frontend {
    pending: Vec<u8>,
    phase: Phase,
    /// Prepared statements of this connection, by name (`""`: the unnamed one).
    prepared: HashMap<String, String>,
    recorded: Statements,
}

#[derive(PartialEq)]
enum Phase {
    /// Before the startup message: messages without a type byte.
    Startup,
    /// After an SSL or GSS request: the next byte tells whether the connection stays plain.
    Negotiating,
    /// Typed messages.
    Running,
    /// Encrypted, or a cancel request: nothing more to read.
    Done,
}

impl Frontend {
    fn new(recorded: Statements) -> Frontend {
        Frontend {
            pending: Vec::new(),
            phase: Phase::Startup,
            prepared: HashMap::new(),
            recorded,
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        self.pending.extend_from_slice(bytes);
        loop {
            if self.phase == Phase::Negotiating {
                match self.pending.first() {
                    None => return,
                    Some(0x16) => self.phase = Phase::Done, // a TLS handshake
                    Some(_) => self.phase = Phase::Startup,
                }
            }
            let (header, typed) = match self.phase {
                Phase::Startup => (0, false),
                Phase::Running => (1, true),
                _ => return,
            };
            let Some(length) = self.pending.get(header..header + 4) else {
                return;
            };
            let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
            let total = header + length;
            if self.pending.len() < total {
                return;
            }
            let message: Vec<u8> = self.pending.drain(..total).collect();
            if typed {
                self.message(message[0], &message[5..]);
            } else {
                let code = message
                    .get(4..8)
                    .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
                self.phase = match code {
                    Some(80877103 | 80877104) => Phase::Negotiating, // SSL or GSS request
                    Some(80877102) => Phase::Done,                   // a cancel request
                    _ => Phase::Running,                             // the startup message
                };
            }
        }
    }

    fn message(&mut self, kind: u8, body: &[u8]) {
        let mut strings = body
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned());
        let statement = match kind {
            b'Q' => strings.next(),
            b'P' => {
                let (name, text) = (strings.next().unwrap_or_default(), strings.next());
                self.prepared.insert(name, text.unwrap_or_default());
                None
            }
            b'B' => {
                let _portal = strings.next();
                let name = strings.next().unwrap_or_default();
                self.prepared.get(&name).cloned()
            }
            _ => None,
        };
        if let Some(statement) = statement {
            self.recorded
                .lock()
                .unwrap()
                .push((Instant::now(), statement));
        }
    }
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

/// The test database's URL through the proxy on `port`, unencrypted, so that the proxy can
/// read the statements.
pub fn plain_url_via(port: u16) -> String {
    crate::db_url_with(Some("127.0.0.1"), Some(port), None, "sslmode=disable")
}
