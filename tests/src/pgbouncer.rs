//! A pgbouncer of the test's own, in front of the test database, for the tests that check
//! what pals does behind a pooler. Debian's package (`apt-get install pgbouncer`); a
//! missing binary fails the test with that step, never skips it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pals_devdb::Account;

use crate::{db_config, eventually, TempDir};

/// A pgbouncer process on a free port of 127.0.0.1; stopped on drop.
pub struct Pgbouncer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Pgbouncer {
    /// Starts pgbouncer in `pool_mode` (`"transaction"`, `"session"`) with `pool_size`
    /// server connections per database and user, in front of [`db_url`](crate::db_url)'s
    /// server, trusting its users; returns once it accepts connections.
    pub fn start(pool_mode: &str, pool_size: u32) -> Pgbouncer {
        let binary = binary();
        let dir = TempDir::new("pgbouncer");
        let upstream = crate::proxy::db_host_port();
        let (host, server_port) = upstream.rsplit_once(':').expect("host:port");
        let user = db_config().get_user().unwrap_or("postgres").to_string();
        let port = crate::free_port();
        let path = |file: &str| dir.path().join(file).display().to_string();
        std::fs::write(dir.path().join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let ini = format!(
            "[databases]\n* = host={host} port={server_port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\nlogfile = {}\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            path("users.txt"),
            path("pgbouncer.log"),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), ini).unwrap();
        let mut command = Command::new(&binary);
        let account = Account::for_this_process().unwrap_or_else(|error| panic!("{error}"));
        if account == Account::Postgres {
            // pgbouncer will not run as root: it switches to postgres itself.
            account
                .take(dir.path())
                .unwrap_or_else(|error| panic!("{error}"));
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut bouncer = Pgbouncer { child, port, dir };
        bouncer.wait_until_listening();
        bouncer
    }

    /// The URL of the test database through this pgbouncer.
    pub fn url(&self) -> String {
        crate::proxy::url_via(self.port)
    }

    /// Returns once pgbouncer accepts connections; panics with its log if it exits first
    /// or does not listen within 10 s.
    fn wait_until_listening(&mut self) {
        let address = ("127.0.0.1", self.port);
        let mut exited = None;
        let listening = eventually(Duration::from_secs(10), || {
            exited = self.child.try_wait().ok().flatten();
            exited.is_some() || std::net::TcpStream::connect(address).is_ok()
        });
        if listening && exited.is_none() {
            return;
        }
        let log = std::fs::read_to_string(self.dir.path().join("pgbouncer.log"));
        panic!(
            "pgbouncer did not listen on port {} ({}); its log:\n{}",
            self.port,
            exited.map_or("still running after 10 s".to_string(), |s| format!(
                "exited: {s}"
            )),
            log.unwrap_or_default()
        );
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pgbouncer binary: on `PATH`, or where Debian puts it.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|binary| binary.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "pgbouncer not found: the pooler tests need it. Install it \
             (`apt-get install -y pgbouncer`, `brew install pgbouncer`); .ci/run does"
        )
    })
}
