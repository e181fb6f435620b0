//! A throwaway PostgreSQL cluster for destructive tests (restarts), so that they never
//! touch the server the other tests share.

use std::path::PathBuf;
use std::process::Command;

use pals_devdb::{Account, Search};

/// A cluster in a temporary directory, on a free port; stopped and removed on drop.
pub struct TempCluster {
    dir: PathBuf,
    bindir: PathBuf,
    account: Account,
    port: u16,
}

impl TempCluster {
    /// Creates and starts a cluster (`initdb` + `pg_ctl start`), as the `postgres` user when
    /// running as root. Panics with a clear message if the server binaries are missing.
    pub fn start(tag: &str) -> TempCluster {
        TempCluster::start_with(tag, &["-A", "trust"])
    }

    /// [`start`](TempCluster::start), with TCP connections asking `postgres` for
    /// `password` (scram-sha-256); connections on its Unix socket are trusted.
    pub fn start_with_password(tag: &str, password: &str) -> TempCluster {
        let file = crate::TempFile::new("pwfile", password);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // initdb runs as the postgres user when the tests run as root.
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let pwfile = format!("--pwfile={}", file.path().display());
        TempCluster::start_with(
            tag,
            &["--auth-local=trust", "--auth-host=scram-sha-256", &pwfile],
        )
    }

    /// [`start`](TempCluster::start), with TLS on (the server certificate and key of `ca`,
    /// and `ca` as the CA of client certificates) and `hba` as the whole of pg_hba.conf.
    pub fn start_with_tls(tag: &str, ca: &crate::certs::TestCa, hba: &str) -> TempCluster {
        let cluster = TempCluster::create(tag, &["-A", "trust"]);
        let data = cluster.data();
        for (from, to) in [
            ("server.crt", "server.crt"),
            ("server.key", "server.key"),
            ("ca.crt", "root.crt"),
        ] {
            std::fs::copy(ca.path(from), data.join(to)).unwrap();
        }
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'root.crt'\n",
        );
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        cluster
            .account
            .take(&data)
            .unwrap_or_else(|e| panic!("{e}"));
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")));
        cluster.pg_ctl(&["start"]);
        cluster
    }

    fn start_with(tag: &str, auth: &[&str]) -> TempCluster {
        let cluster = TempCluster::create(tag, auth);
        cluster.pg_ctl(&["start"]);
        cluster
    }

    /// A new cluster's directory and `initdb`, not started.
    fn create(tag: &str, auth: &[&str]) -> TempCluster {
        let bindir = Search::usual().find().unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server programs (initdb, pg_ctl) not found (looked in {}): \
                 install PostgreSQL's server package",
                Search::usual().places()
            )
        });
        let account = Account::for_this_process().unwrap_or_else(|error| panic!("{error}"));
        let dir = std::env::temp_dir().join(format!("pals-cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        account.take(&dir).unwrap_or_else(|e| panic!("{e}"));
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let cluster = TempCluster {
            dir,
            bindir,
            account,
            port,
        };
        run(cluster
            .pg_command("initdb")
            .args(auth)
            .args(["-U", "postgres", "--no-sync", "-D"])
            .arg(cluster.data()));
        cluster
    }

    /// The cluster's TCP port on 127.0.0.1 (and its socket's number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the cluster's Unix socket.
    pub fn socket_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The URL of this cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every session ends.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, the
    /// next start recovers from the WAL) and starts it again.
    pub fn crash_and_restart(&self) {
        self.pg_ctl(&["stop", "-m", "immediate"]);
        self.pg_ctl(&["start"]);
    }

    /// Stops the server (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    /// Starts the stopped server again.
    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        run(self
            .pg_command("pg_ctl")
            .args(args)
            .args(["-w", "-t", "30", "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options]));
    }

    fn pg_command(&self, program: &str) -> Command {
        self.account.command(&self.bindir.join(program))
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
