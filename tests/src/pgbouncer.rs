//! A pgbouncer of the test's own, in front of the test database, for the tests that check
//! what pals does behind a pooler. Debian's package (`apt-get install pgbouncer`); a
//! missing binary fails the test with that step, never skips it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{db_config, eventually, TempDir};

/// A pgbouncer process on a free port of 127.0.0.1; stopped on drop.
pub struct Pgbouncer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Pgbouncer {
    /// Starts pgbouncer in `pool_mode` (`"transaction"`, `"session"`) with `pool_size`
    /// server connections per database and user, in front of [`db_url`](crate::db_url)'s
    /// server, trusting its users; returns once it accepts connections.
    pub fn start(pool_mode: &str, pool_size: u32) -> Pgbouncer {
        let binary = binary();
        let dir = TempDir::new("pgbouncer");
        let config = db_config();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let server_port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres");
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
        if is_root() {
            // pgbouncer will not run as root: it switches to postgres itself.
            chown_postgres(dir.path());
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let bouncer = Pgbouncer {
            child,
            port,
            _dir: dir,
        };
        bouncer.wait_until_listening();
        bouncer
    }

    /// The URL of the test database through this pgbouncer.
    pub fn url(&self) -> String {
        crate::db_url_with(Some("127.0.0.1"), Some(self.port), None, "")
    }

    fn wait_until_listening(&self) {
        let address = ("127.0.0.1", self.port);
        let listening = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(address).is_ok()
        });
        assert!(listening, "pgbouncer did not listen on port {}", self.port);
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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn chown_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres"])
        .arg(dir)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R postgres {}", dir.display());
}
