//! The private cluster: a data directory made by `initdb`, started and stopped by `pg_ctl`,
//! on a TCP port of 127.0.0.1 chosen when it was made. One process at a time works on it
//! (a lock file beside the data), so parallel test binaries and examples start it once.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::account::Account;
use crate::error::Error;
use crate::run::run;

/// The superuser `initdb` makes, and the user of the cluster's URL.
const USER: &str = "postgres";

/// Appended to the cluster's `postgresql.conf` when it is made.
const SETTINGS: &str = "
# pals-devdb: the private server of pals' examples and tests (devdb/ in the repository).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
";

/// A log longer than this is set aside (`server.log.old`) before the next start.
const LOG_LIMIT: u64 = 16 << 20;

/// A cluster in `dir` (`dir/data`, `dir/server.log`, `dir/lock`).
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    account: Account,
}

impl Cluster {
    /// The cluster in `dir`, run with the programs of `bindir` as `account`.
    pub fn new(dir: &Path, bindir: PathBuf, account: Account) -> Cluster {
        Cluster {
            dir: dir.to_path_buf(),
            bindir,
            account,
        }
    }

    /// Waits until no other process works on the cluster, and keeps it so until the file
    /// returned is dropped.
    pub fn lock(&self) -> Result<File, Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("create {}", self.dir.display())))?;
        let path = self.dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        file.lock()
            .map_err(Error::io(format!("lock {}", path.display())))?;
        Ok(file)
    }

    /// Whether the cluster has been made.
    pub fn exists(&self) -> bool {
        self.data().join("PG_VERSION").is_file()
    }

    /// Makes the cluster: `initdb` into a new directory, the settings, a certificate and a
    /// free port, then the directory renamed into place (a cluster half made by a process
    /// that was stopped is never taken for one).
    pub fn create(&self) -> Result<(), Error> {
        self.remove_unfinished()?;
        self.account.take(&self.dir)?;
        let new = self.dir.join(format!("data.new-{}", std::process::id()));
        run(self
            .program("initdb")
            .args(["--auth=trust", "--username", USER, "--no-locale"])
            .args(["--encoding=UTF8", "--no-sync", "--pgdata"])
            .arg(&new))?;
        append(&new.join("postgresql.conf"), SETTINGS)?;
        set_port(&new, free_port()?)?;
        crate::certificate::make(&new)?;
        self.account.take(&new)?;
        std::fs::rename(&new, self.data())
            .map_err(Error::io(format!("rename {} to data", new.display())))
    }

    /// Whether the server runs (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.program("pg_ctl")
            .arg("status")
            .arg("--pgdata")
            .arg(self.data())
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// Starts the server and waits until it takes connections. A port taken since the
    /// cluster was made is replaced by a free one, once.
    pub fn start(&self) -> Result<(), Error> {
        self.set_log_aside()?;
        let from = self.log_len();
        if self.pg_ctl_start().is_ok() {
            return Ok(());
        }
        let log = self.log_since(from);
        if log.contains("Address already in use") {
            set_port(&self.data(), free_port()?)?;
            let from = self.log_len();
            return self
                .pg_ctl_start()
                .map_err(|_| self.not_started(self.log_since(from)));
        }
        Err(self.not_started(log))
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions end, nothing is lost).
    pub fn stop(&self) -> Result<(), Error> {
        run(self
            .program("pg_ctl")
            .args(["stop", "--mode=fast", "--wait", "--pgdata"])
            .arg(self.data()))
        .map(drop)
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> Result<String, Error> {
        Ok(format!(
            "postgresql://{USER}@127.0.0.1:{}/postgres",
            port(&self.data())?
        ))
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn pg_ctl_start(&self) -> Result<(), Error> {
        run(self
            .program("pg_ctl")
            .args(["start", "--wait", "--timeout=60", "--log"])
            .arg(self.log())
            .arg("--pgdata")
            .arg(self.data()))
        .map(drop)
    }

    fn not_started(&self, log: String) -> Error {
        Error::NotStarted {
            dir: self.dir.clone(),
            log,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(self.log()).map_or(0, |meta| meta.len())
    }

    /// What the server logged from byte `from` on.
    fn log_since(&self, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log()) {
            let _ = file.seek(SeekFrom::Start(from));
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn set_log_aside(&self) -> Result<(), Error> {
        if self.log_len() <= LOG_LIMIT {
            return Ok(());
        }
        std::fs::rename(self.log(), self.dir.join("server.log.old"))
            .map_err(Error::io("set the private PostgreSQL's log aside"))
    }

    /// Removes what a `create` cut short left behind.
    fn remove_unfinished(&self) -> Result<(), Error> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(Error::io(format!("read {}", self.dir.display())))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("data.new-") {
                std::fs::remove_dir_all(entry.path())
                    .map_err(Error::io(format!("remove {}", entry.path().display())))?;
            }
        }
        Ok(())
    }

    fn program(&self, name: &str) -> Command {
        self.account.command(&self.bindir.join(name))
    }
}

fn append(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    File::options()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(Error::io(format!("write {}", path.display())))
}

/// Sets the port of the cluster in `data` (the last `port` line of its configuration).
fn set_port(data: &Path, port: u16) -> Result<(), Error> {
    append(&data.join("postgresql.conf"), &format!("port = {port}\n"))
}

/// The port of the cluster in `data`.
fn port(data: &Path) -> Result<u16, Error> {
    let path = data.join("postgresql.conf");
    let conf =
        std::fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))?;
    conf.lines()
        .filter_map(|line| line.strip_prefix("port = ")?.trim().parse().ok())
        .next_back()
        .ok_or_else(|| Error::Io {
            action: format!("find the port in {}", path.display()),
            source: std::io::ErrorKind::NotFound.into(),
        })
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(Error::io("find a free port"))
}
