//! What can stop the examples and tests from getting a server, each with what to do.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why no server could be found or started. Its text ends with what to do.
#[derive(Debug)]
pub enum Error {
    /// Nothing answers, and PostgreSQL's server programs are not installed.
    NothingToStart {
        /// The default address, where nothing answers.
        address: SocketAddr,
        /// Where the programs were looked for.
        places: String,
    },
    /// A program the private cluster needs is missing (`openssl`, `runuser`).
    Missing {
        /// The program.
        program: String,
        /// What it is needed for.
        purpose: &'static str,
    },
    /// Running as root, with no `postgres` user to run PostgreSQL as.
    RootWithoutPostgresUser,
    /// Running as root, the `postgres` user cannot write to the cluster's directory.
    Unreachable {
        /// The cluster's directory.
        dir: PathBuf,
    },
    /// A program failed (`initdb`, `pg_ctl`, `openssl`, `chown`).
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The server did not start.
    NotStarted {
        /// The cluster's directory.
        dir: PathBuf,
        /// The end of the server's log.
        log: String,
    },
    /// A file of the cluster could not be read or written.
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NothingToStart { address, places } => write!(
                f,
                "no PostgreSQL answers at {address} (the default address) and PALS_DB_URL is \
                 unset, and PostgreSQL's server programs (initdb, pg_ctl) are not installed \
                 (looked in {places}). Any one of these gives the examples and tests a server:\n\
                 - set PALS_DB_URL to a PostgreSQL you have, e.g. \
                 PALS_DB_URL=postgresql://postgres@127.0.0.1:5432/postgres\n\
                 - install PostgreSQL's server package (Debian, Ubuntu: `apt-get install \
                 postgresql`; Fedora: `dnf install postgresql-server`; macOS: `brew install \
                 postgresql`): the examples and tests then start a private server under target/\n\
                 - start the repository's Docker database: `docker compose up -d --wait` in \
                 the repository's root"
            ),
            Error::Missing { program, purpose } => write!(
                f,
                "cannot run `{program}`, which {purpose}: install it, or set PALS_DB_URL to a \
                 PostgreSQL you have"
            ),
            Error::RootWithoutPostgresUser => write!(
                f,
                "running as root, and PostgreSQL refuses to run as root: there is no \
                 `postgres` user to start the private server as. Run the examples and tests \
                 as a user other than root, create that user (`useradd --system postgres`), \
                 or set PALS_DB_URL to a PostgreSQL you have"
            ),
            Error::Unreachable { dir } => write!(
                f,
                "running as root, the private server runs as the `postgres` user, who cannot \
                 write to {dir}: a directory above it is closed to other users. Run as a user \
                 other than root, let others enter the directories above it (`chmod o+x` on \
                 each), or set PALS_DB_URL to a PostgreSQL you have",
                dir = dir.display()
            ),
            Error::Failed { command, output } => write!(f, "{command} failed:\n{output}"),
            Error::NotStarted { dir, log } => write!(
                f,
                "the private PostgreSQL in {dir} did not start; the end of its log \
                 ({dir}/server.log):\n{log}\nFix what it says, or remove {dir} to start \
                 afresh",
                dir = dir.display()
            ),
            Error::Io { action, source } => write!(f, "cannot {action}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
