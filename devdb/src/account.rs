//! Who runs the server: the current user; or, since PostgreSQL refuses to run as root,
//! the `postgres` user (through `runuser`) when the tests run as root.

use std::path::Path;
use std::process::Command;

use crate::error::Error;

/// The user PostgreSQL's programs run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// The user this process runs as.
    Current,
    /// The `postgres` user: this process runs as root.
    Postgres,
}

impl Account {
    /// The account for this process: [`Account::Postgres`] when it runs as root and that
    /// user exists, else an error that says what to do.
    pub fn for_this_process() -> Result<Account, Error> {
        if !is_root() {
            return Ok(Account::Current);
        }
        let exists = Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|output| output.status.success());
        if exists {
            Ok(Account::Postgres)
        } else {
            Err(Error::RootWithoutPostgresUser)
        }
    }

    /// `program` run as this account.
    pub fn command(self, program: &Path) -> Command {
        match self {
            Account::Current => Command::new(program),
            Account::Postgres => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
        }
    }

    /// Whether this account can enter `dir` (and every directory above it).
    pub fn can_enter(self, dir: &Path) -> bool {
        self == Account::Current || self.test(&["-x"], dir)
    }

    /// Gives `dir` (and all in it) to this account, and checks that the account can reach
    /// it: a root-owned parent that others cannot enter stops the `postgres` user.
    pub fn take(self, dir: &Path) -> Result<(), Error> {
        if self == Account::Current {
            return Ok(());
        }
        crate::run::run(Command::new("chown").arg("-R").arg("postgres:").arg(dir))?;
        if self.test(&["-w"], dir) {
            Ok(())
        } else {
            Err(Error::Unreachable {
                dir: dir.to_path_buf(),
            })
        }
    }
}

impl Account {
    /// Whether `test OPTIONS dir` succeeds as this account.
    fn test(self, options: &[&str], dir: &Path) -> bool {
        self.command(Path::new("test"))
            .args(options)
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success())
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}
