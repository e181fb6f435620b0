//! The PostgreSQL of pals' examples, tests and benchmark, found or started for them:
//!
//! 1. `PALS_DB_URL`, when it is set;
//! 2. else the server at the default address, 127.0.0.1:54321 (where the repository's
//!    `docker compose up -d --wait` publishes one), when something answers there;
//! 3. else a private cluster of the repository's own, in `target/pals-postgres`: made by
//!    `initdb` on first use (trust authentication for the `postgres` user, SSL on with a
//!    certificate made for it, a free port of 127.0.0.1), started by `pg_ctl`, and left
//!    running for the next runs, with one line on stderr when it starts that says how to
//!    stop it (`cargo run -p pals-devdb -- stop`).
//!
//! PostgreSQL's programs are found in `PATH`, then through `pg_config --bindir`, then in the
//! usual installation directories. Run as root, the server runs as the `postgres` user
//! (PostgreSQL refuses root); when that user cannot enter `target/` (a clone under `/root`),
//! the cluster lives in the temporary directory instead, named after `target/`.
//! When neither a server nor the programs are found, the error names the three ways to
//! get one.
//!
//! This is the repository's tool, not pals': the library never starts a server.

mod account;
mod binaries;
mod certificate;
mod cluster;
mod error;
mod run;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use account::Account;
pub use binaries::Search;
pub use error::Error;

use cluster::Cluster;

/// Where the repository's docker-compose file publishes PostgreSQL: the default address.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:54321";

/// The variable that names the server, when set (and not empty).
pub const URL_ENV: &str = "PALS_DB_URL";

/// The URL of the server for the examples and tests: `PALS_DB_URL`, else the server at
/// [`DEFAULT_ADDRESS`], else the repository's private cluster, started if it is not running
/// (once per process; the line that says so goes straight to stderr, so that a test
/// harness that captures output shows it too).
pub fn db_url() -> Result<String, &'static Error> {
    if let Some(url) = std::env::var(URL_ENV).ok().filter(|url| !url.is_empty()) {
        return Ok(url);
    }
    static FOUND: OnceLock<Result<String, Error>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let server = DevDb::for_repository().server()?;
        if server.how == How::Started {
            let _ = std::io::stderr().write_all(started_line(&server).as_bytes());
        }
        Ok(server.url)
    });
    match found {
        Ok(url) => Ok(url.clone()),
        Err(error) => Err(error),
    }
}

/// Finds or starts a server: where the private cluster lives, the default address, and
/// where PostgreSQL's programs are looked for.
#[derive(Debug, Clone)]
pub struct DevDb {
    dir: PathBuf,
    default_address: SocketAddr,
    search: Search,
}

/// A server the examples and tests can use, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its URL (user `postgres`, database `postgres`).
    pub url: String,
    /// How it was found.
    pub how: How,
    /// The private cluster's directory (`None` for the server at the default address).
    pub dir: Option<PathBuf>,
}

/// How a [`Server`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Something answers at the default address.
    Answering,
    /// The private cluster, already running.
    Running,
    /// The private cluster, started now.
    Started,
}

impl DevDb {
    /// The repository's: `target/pals-postgres` (or `$CARGO_TARGET_DIR/pals-postgres`),
    /// [`DEFAULT_ADDRESS`], and the usual [`Search`].
    pub fn for_repository() -> DevDb {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("devdb/ is in the workspace");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
        DevDb::new(
            target.join("pals-postgres"),
            DEFAULT_ADDRESS.parse().expect("an address"),
        )
    }

    /// A private cluster in `dir`, used when nothing answers at `default_address`.
    pub fn new(dir: impl Into<PathBuf>, default_address: SocketAddr) -> DevDb {
        DevDb {
            dir: dir.into(),
            default_address,
            search: Search::usual(),
        }
    }

    /// Looks for PostgreSQL's programs as `search` says.
    pub fn search(mut self, search: Search) -> DevDb {
        self.search = search;
        self
    }

    /// The server at the default address, else the private cluster, made and started as
    /// needed. Parallel callers (threads or processes) make and start it once.
    pub fn server(&self) -> Result<Server, Error> {
        if answers(self.default_address) {
            return Ok(Server {
                url: format!("postgresql://postgres@{}/postgres", self.default_address),
                how: How::Answering,
                dir: None,
            });
        }
        let cluster = self.cluster()?;
        let _lock = cluster.lock()?;
        if !cluster.exists() {
            cluster.create()?;
        }
        let how = if cluster.is_running() {
            How::Running
        } else {
            cluster.start()?;
            How::Started
        };
        Ok(Server {
            url: cluster.url()?,
            how,
            dir: Some(cluster.dir().to_path_buf()),
        })
    }

    /// Stops the private cluster if it runs; whether it ran.
    pub fn stop(&self) -> Result<bool, Error> {
        let cluster = self.cluster()?;
        let _lock = cluster.lock()?;
        let running = cluster.exists() && cluster.is_running();
        if running {
            cluster.stop()?;
        }
        Ok(running)
    }

    fn cluster(&self) -> Result<Cluster, Error> {
        let bindir = self.search.find().ok_or_else(|| Error::NothingToStart {
            address: self.default_address,
            places: self.search.places(),
        })?;
        let account = Account::for_this_process()?;
        Ok(Cluster::new(&self.place(account), bindir, account))
    }

    /// The cluster's directory: `dir`, or, when the server's account cannot enter the
    /// directory above it, one in the temporary directory named after it.
    fn place(&self, account: Account) -> PathBuf {
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        if account == Account::Current || account.can_enter(parent) {
            return self.dir.clone();
        }
        let name = format!("pals-postgres-{:016x}", fnv1a(self.dir.as_os_str()));
        std::env::temp_dir().join(name)
    }
}

/// The line that says the repository's private cluster was started, and how to stop it.
fn started_line(server: &Server) -> String {
    let dir = server.dir.as_deref().unwrap_or(Path::new("?"));
    format!(
        "pals-devdb: nothing answers at {DEFAULT_ADDRESS} and {URL_ENV} is unset: started a \
         private PostgreSQL for the examples and tests at {url} (in {dir}). It keeps running \
         for the next runs; stop it with `cargo run -p pals-devdb -- stop`.\n",
        url = server.url,
        dir = dir.display()
    )
}

/// Whether something accepts TCP connections at `address` within a second.
fn answers(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

/// FNV-1a of a path's bytes: a stable name for its stand-in directory.
fn fnv1a(path: &std::ffi::OsStr) -> u64 {
    path.as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}
