//! [`Locker::check`]: a start-up check that opens a session, so that a login, database, TLS
//! or privilege mistake shows when the program starts rather than at its first lock.

use std::fmt;

use crate::error::Error;
use crate::locker::Locker;
use crate::runtime::block_on;

/// What [`Locker::check`] found: where the locker's sessions go and what the server said.
///
/// Its `Display` is one line for a start-up log:
/// `pals: app my-app uses 127.0.0.1:5432 as postgres, database postgres (PostgreSQL 16.4, TLS; URL from DATABASE_URL)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checked {
    app: String,
    target: String,
    user: String,
    database: String,
    server_version: String,
    tls: bool,
    url_from: Option<&'static str>,
}

impl Checked {
    /// The application name of the locker.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Where the sessions connect: `host:port` (with the address `hostaddr` gave), or the
    /// Unix socket's path, and how many more hosts the URL lists.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The user the sessions log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database the sessions use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The server's PostgreSQL version, `major.minor` (`9.6.24` before 10).
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Whether the session is TLS-encrypted, as the server sees it (`pg_stat_ssl`; behind
    /// a pooler, the pooler's connection to the server).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The environment variable the URL came from (`PALS_DB_URL` or `DATABASE_URL`), for a
    /// locker built with [`url_from_env`](crate::LockerBuilder::url_from_env) (the global
    /// one is); `None` for a URL given in code, or none at all (the `PG*` variables).
    pub fn url_from(&self) -> Option<&str> {
        self.url_from
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pals: app {} uses {} as {}, database {} (PostgreSQL {}, {}",
            self.app,
            self.target,
            self.user,
            self.database,
            self.server_version,
            if self.tls { "TLS" } else { "no TLS" },
        )?;
        match self.url_from {
            Some(variable) => write!(f, "; URL from {variable})"),
            None => f.write_str(")"),
        }
    }
}

/// `server_version_num` as people write it: 160004 → `16.4`, 90624 → `9.6.24`.
fn version_text(num: i32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

impl Locker {
    /// Checks that this locker's sessions can be opened: connects (within the connect
    /// timeout), logs in and runs pals' set-up of a lock session, so that a wrong password,
    /// an unknown database, a TLS mismatch or a missing privilege is an error now, with its
    /// next step, rather than at the first lock. The session stays open for the locks to
    /// come (a locker keeps its first session): the check costs no extra connection. If a
    /// session is open already, it reports on that one.
    ///
    /// [`init_from_env`](crate::init_from_env) runs it for the global locker.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), pals::Error> {
    /// # let url = pals_devdb::db_url().unwrap();
    /// let locker = pals::Locker::new("my-app-name", &url)?;
    /// let checked = locker.check().await?;
    /// println!("{checked}"); // pals: app my-app-name uses 127.0.0.1:5432 as postgres, ...
    ///
    /// // Nothing listens on port 1: an error now, with what to do about it.
    /// let wrong = pals::Locker::new("my-app-name", "postgresql://postgres@127.0.0.1:1/postgres")?;
    /// let error = wrong.check().await.unwrap_err();
    /// assert!(error.to_string().contains("Next step: start PostgreSQL"), "{error}");
    /// # Ok(()) }
    /// ```
    pub async fn check(&self) -> Result<Checked, Error> {
        let pool = &self.core().pool;
        let facts = pool.any_session().await?;
        let connection = pool.connection();
        let config = &connection.config;
        Ok(Checked {
            app: self.app().to_string(),
            target: connection.target.to_string(),
            user: config.get_user().unwrap_or_default().to_string(),
            database: config.get_dbname().unwrap_or_default().to_string(),
            server_version: version_text(facts.server_version),
            tls: facts.encrypted,
            url_from: connection.url_from,
        })
    }

    /// [`check`](Locker::check) for synchronous code.
    pub fn blocking_check(&self) -> Result<Checked, Error> {
        block_on(self.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_people_write_them() {
        assert_eq!(version_text(160_004), "16.4");
        assert_eq!(version_text(150_019), "15.19");
        assert_eq!(version_text(90_624), "9.6.24");
    }

    #[test]
    fn the_line_names_the_variable_the_url_came_from() {
        let mut checked = Checked {
            app: "my-app".into(),
            target: "db:5432".into(),
            user: "svc".into(),
            database: "orders".into(),
            server_version: "16.4".into(),
            tls: true,
            url_from: Some("DATABASE_URL"),
        };
        assert_eq!(
            checked.to_string(),
            "pals: app my-app uses db:5432 as svc, database orders (PostgreSQL 16.4, TLS; URL from DATABASE_URL)"
        );
        checked.url_from = None;
        checked.tls = false;
        assert!(checked.to_string().ends_with("(PostgreSQL 16.4, no TLS)"));
    }
}
