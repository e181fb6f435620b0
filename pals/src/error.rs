//! The one error type of pals.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::sql::NOT_OURS;

/// Everything that can go wrong when taking or releasing a lock.
///
/// Busy locks are not errors for [`Lock::try_acquire`](crate::Lock::try_acquire) and
/// [`Lock::acquire_timeout`](crate::Lock::acquire_timeout), which return `Ok(None)`;
/// [`Lock::acquire`](crate::Lock::acquire) turns them into [`Error::Timeout`].
///
/// ```
/// let err = pals::Error::Timeout { name: "app.name".into() };
/// assert_eq!(err.to_string(), r#"Lock acquire failed for "app.name". Failed due to timeout."#);
/// assert!(err.is_timeout());
///
/// // A very long name is shortened in the message, and kept whole in the error.
/// let name = format!("app.{}", "x".repeat(10_000));
/// let err = pals::Error::Timeout { name: name.clone() };
/// assert!(err.to_string().len() < 200 && err.to_string().contains("(10004 bytes)"));
/// assert!(matches!(err, pals::Error::Timeout { name: ref n } if *n == name));
/// ```
///
/// `Debug` prints the same sentence as `Display`, so that `fn main() -> Result<(), pals::Error>`
/// and `unwrap()` show a message a person can act on.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock was busy: it was not acquired within the acquire timeout.
    #[error("Lock acquire failed for \"{}\". Failed due to timeout.", shorten(.name))]
    Timeout {
        /// The full lock name, `"app.name"`.
        name: String,
    },

    /// The lock was lost while held: its database session ended or stopped answering, so
    /// the server freed the lock and another holder may have it.
    #[error(
        "Lock \"{}\" was lost while held: its database session ended or stopped answering.",
        shorten(.name)
    )]
    LockLost {
        /// The full lock name, `"app.name"`.
        name: String,
    },

    /// No database connection could be opened within the connect timeout.
    #[error("cannot connect to the database: {reason}")]
    Connect {
        /// What went wrong, in words.
        reason: String,
        /// The driver's error, when there is one (there is none for a timeout).
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// The database answered a lock statement with an error, or the connection broke.
    #[error("database error: {}", describe(.0))]
    Database(#[source] tokio_postgres::Error),

    /// The database answered a statement of [`xact::sqlx`](crate::xact::sqlx) with an error,
    /// or the connection broke: sqlx's error, as [`Error::Database`] is tokio-postgres'.
    #[cfg(feature = "sqlx")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
    #[error("database error: {}", describe_sqlx(.0))]
    Sqlx(#[source] sqlx::Error),

    /// [`global()`](crate::global) was called but the global locker was never configured.
    #[error(
        "the global pals locker is not configured: call pals::init(locker) at startup, \
         or set PALS_APP_NAME (and PALS_DB_URL, or the PG* variables) in the environment"
    )]
    NotConfigured,

    /// [`init`](crate::init) was called when the global locker was already set.
    #[error(
        "the global pals locker is already set; pals::init may be called once, before first use"
    )]
    AlreadyInitialized,

    /// The locker's configuration is invalid (a bad URL, a zero pool size, ...).
    #[error("invalid pals configuration: {0}")]
    InvalidConfig(String),

    /// A fenced grant's token was not greater than a token this locker had seen for the
    /// same lock: the fence sequence went backwards (set back by hand with `setval` or
    /// `ALTER SEQUENCE ... RESTART`, or a failover to a replica that lagged). The grant was
    /// let go rather than returned: a token that goes backwards defeats fencing (see
    /// [`Lock::fenced`](crate::Lock::fenced)). Trying again will not mend it; moving the
    /// sequence past every token handed out will.
    #[error(
        "the fencing token of lock \"{}\" went backwards: {token} after {highest}, so the \
         fence sequence {sequence} was set back (setval, ALTER SEQUENCE ... RESTART, or a \
         failover to a replica that lagged). The lock was let go: a token that goes \
         backwards would let a stale holder's writes win. Next step: move the sequence past \
         every token handed out, e.g. SELECT pg_catalog.setval('{sequence}', {}), and keep \
         other roles from changing it (see LockerBuilder::schema)",
        shorten(.name),
        .highest.saturating_add(1_000_000)
    )]
    FenceWentBackwards {
        /// The full lock name, `"app.name"`.
        name: String,
        /// The token the grant came with.
        token: u64,
        /// The highest token this locker had seen that the grant's must exceed.
        highest: u64,
        /// The fence sequence, qualified.
        sequence: String,
    },

    /// The background thread that drives database connections could not be started.
    #[error("cannot start the pals runtime thread: {0}")]
    Runtime(String),
}

/// A lock name as messages show it: whole up to 120 bytes; longer, its start and end with
/// its length (the key is made from the whole name all the same).
fn shorten(name: &str) -> std::borrow::Cow<'_, str> {
    const KEEP_START: usize = 80;
    const KEEP_END: usize = 24;
    if name.len() <= 120 {
        return name.into();
    }
    let mut start = KEEP_START;
    while !name.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = name.len() - KEEP_END;
    while !name.is_char_boundary(end) {
        end += 1;
    }
    format!(
        "{}...{} ({} bytes)",
        &name[..start],
        &name[end..],
        name.len()
    )
    .into()
}

/// Whether the server or the driver refused the connection for a reason in its
/// configuration: authentication (SQLSTATE class 28), an unknown database (3D000), a
/// password the driver did not have, a TLS certificate or name that did not check out.
fn is_configuration_refusal(error: &tokio_postgres::Error) -> bool {
    if is_not_ours(error) {
        return true;
    }
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        // 42501 at connect: the role lacks CONNECT on the database.
        return code.starts_with("28") || code == "3D000" || code == "42501";
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text.contains("password missing")
        || text.contains("invalid configuration")
        || text.contains("TLS")
        || text.contains("tls")
}

/// The server's own words where there are some ("ERROR 57P01: terminating connection due
/// to administrator command"); tokio-postgres' Display says only "db error".
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// [`describe`] for sqlx: the server's own words where there are some; sqlx's Display
/// gives its message without the severity and the SQLSTATE.
#[cfg(feature = "sqlx")]
fn describe_sqlx(error: &sqlx::Error) -> String {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    let Some(db) = error
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<PgDatabaseError>())
    else {
        return error.to_string();
    };
    let severity = match db.severity() {
        PgSeverity::Panic => "PANIC",
        PgSeverity::Fatal => "FATAL",
        _ => "ERROR",
    };
    format!("{severity} {}: {}", db.code(), db.message())
}

impl Error {
    /// True for [`Error::Timeout`]: the lock is held by someone else.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for a mistake in the configuration, which trying again will not fix: pals not
    /// configured, a URL that cannot be used, a password missing or refused, a database or
    /// role that does not exist, a certificate that does not check out. (False for a server
    /// that is down or does not answer, which may pass.)
    ///
    /// ```
    /// assert!(pals::Error::NotConfigured.is_misconfiguration());
    /// assert!(!pals::Error::Timeout { name: "app.job".into() }.is_misconfiguration());
    /// ```
    pub fn is_misconfiguration(&self) -> bool {
        match self {
            Error::NotConfigured | Error::InvalidConfig(_) => true,
            Error::Connect {
                source: Some(source),
                ..
            } => is_configuration_refusal(source),
            _ => false,
        }
    }

    /// True for a statement cancelled (`pg_cancel_backend`, `statement_timeout`), a lock
    /// statement's or a new session's set-up.
    pub(crate) fn is_cancel(&self) -> bool {
        match self {
            Error::Database(error)
            | Error::Connect {
                source: Some(error),
                ..
            } => is_cancel(error),
            _ => false,
        }
    }

    /// Whether trying again later may succeed: the database unreachable or its session
    /// gone, a cancel, an operator's shutdown, a resource running short (SQLSTATE classes
    /// 08, 40, 53, 55, 57). Not a misconfiguration, nor an error in what the server was
    /// asked (a privilege revoked, a table altered by hand), which waiting would not mend.
    pub(crate) fn is_transient(&self) -> bool {
        if self.is_misconfiguration() {
            return false;
        }
        match self {
            Error::FenceWentBackwards { .. } => false,
            Error::Database(error) => match error.code() {
                None => true, // the connection, not the statement
                Some(code) => ["08", "40", "53", "55", "57"]
                    .iter()
                    .any(|class| code.code().starts_with(class)),
            },
            _ => true,
        }
    }

    pub(crate) fn connect_timeout(timeout: Duration, target: &str) -> Self {
        Error::Connect {
            reason: format!(
                "no answer from {target} within the connect timeout ({timeout:?}). Next \
                 step: check that this host can reach that address (a firewall or security \
                 group may drop the packets) and that PostgreSQL listens on that port; where \
                 connecting is slow, raise connect_timeout in the URL"
            ),
            source: None,
        }
    }

    /// An open connection that stopped answering (a dead server or a black-holed network).
    pub(crate) fn no_answer(statement: &str, waited: Duration) -> Self {
        Error::Connect {
            reason: format!("the server did not answer {statement} within {waited:?}"),
            source: None,
        }
    }

    /// A lock statement that ran on another client's session ([`is_not_ours`]).
    pub(crate) fn not_ours() -> Self {
        Error::InvalidConfig(format!("{NOT_OURS_WHY}. Next step: {NOT_OURS_STEP}"))
    }

    pub(crate) fn connect_failed(
        source: tokio_postgres::Error,
        target: &str,
        tls: crate::tls::TlsSummary,
    ) -> Self {
        // A server's refusal is its own source: described once. The driver's own errors
        // may or may not spell their cause out.
        let reason = match (source.as_db_error(), std::error::Error::source(&source)) {
            (Some(_), _) => describe(&source),
            (None, Some(cause)) if !source.to_string().contains(&cause.to_string()) => {
                format!("{source}: {cause}")
            }
            (None, _) => source.to_string(),
        };
        let hint = crate::tls::next_step(&source, &reason, tls)
            .unwrap_or_else(|| next_step(&source, &reason, target));
        Error::Connect {
            reason: format!("{target}: {reason}{hint}"),
            source: Some(source),
        }
    }
}

impl Error {
    /// [`connect_failed`](Error::connect_failed) for a socket that could not be opened
    /// (pals opens a lock session's socket itself): as the driver words it.
    pub(crate) fn connect_io(
        error: &std::io::Error,
        target: &str,
        _tls: crate::tls::TlsSummary,
    ) -> Self {
        let reason = format!("error connecting to server: {error}");
        let hint = step_for(None, &reason, target);
        Error::Connect {
            reason: format!("{target}: {reason}{hint}"),
            source: None,
        }
    }
}

/// What to do about a failed connect, where the error tells.
fn next_step(error: &tokio_postgres::Error, reason: &str, target: &str) -> String {
    let code = error.as_db_error().map(|db| db.code().code());
    if is_not_ours(error) {
        return format!(". {NOT_OURS_WHY}. Next step: {NOT_OURS_STEP}");
    }
    step_for(code, reason, target)
}

/// [`next_step`] for the server's SQLSTATE `code`, or the words of an error without one.
fn step_for(code: Option<&str>, reason: &str, target: &str) -> String {
    let step = match code {
        Some("28P01") => {
            "correct the user's password (in the URL, PGPASSWORD or ~/.pgpass), or the user \
             name"
        }
        Some("28000") => {
            "add a line for this user, database and client address to the server's \
             pg_hba.conf and reload it (or ask its administrator), or connect as a user it \
             lets in"
        }
        Some("3D000") => {
            "create the database (`createdb NAME`, or CREATE DATABASE), or name one that \
             exists in the URL"
        }
        Some("42501") => {
            "grant the user CONNECT on the database (GRANT CONNECT ON DATABASE name TO \
             user), or connect as a user that has it"
        }
        Some("53300") => {
            "lower pool_size (every replica's lockers count against the server), or raise \
             the server's max_connections"
        }
        Some("57P03") => "the server is starting or stopping: try again in a few seconds",
        Some(_) => return String::new(),
        None if reason.contains("password missing") => {
            "give the password the server asks for: in the URL, in PGPASSWORD or in ~/.pgpass"
        }
        None if reason.contains("refused") => {
            "start PostgreSQL at that address, or point the URL (PALS_DB_URL, DATABASE_URL, \
             or PGHOST and PGPORT) at the server that runs; `pg_isready -h HOST -p PORT` \
             tells whether one answers"
        }
        None if reason.contains("No such file") && target.contains(".s.PGSQL.") => {
            "start PostgreSQL, or give the port it listens on (its socket in that directory \
             is .s.PGSQL.PORT), or a host name for TCP"
        }
        None if reason.contains("lookup") || reason.contains("resolve") => {
            "correct the host name in the URL (it does not resolve from here), or give the \
             server's IP address as the host, or as hostaddr"
        }
        None => return String::new(),
    };
    format!(". Next step: {step}")
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A driver error, as the statements of a session return it.
pub(crate) type PgError = tokio_postgres::Error;

/// What a lock session found shared with other clients is, in words ([`is_not_ours`]).
const NOT_OURS_WHY: &str = "the database session was shared with other clients: a \
    transaction-mode pooler (pgbouncer, RDS Proxy, Supavisor in transaction mode) is between \
    pals and PostgreSQL, and it cannot carry the session-level advisory locks pals takes";

/// What to do about it.
const NOT_OURS_STEP: &str = "connect pals straight to PostgreSQL (the server's own port) or \
    through a session-mode pool, or take transaction-scoped locks with pals::xact";

/// True if `error` says that a lock session's statement ran on a server session other than
/// the one pals set up, which only a transaction-mode pooler does: the statement's own check
/// failed (`sql::ours`), or a prepared statement was missing (26000) or already there
/// (42P05) or of another shape ("bind message supplies …", 08P01) on the server session
/// the pooler picked. pals never deallocates its statements, nor prepares twice.
pub(crate) fn is_not_ours(error: &PgError) -> bool {
    error.as_db_error().is_some_and(|db| {
        let (code, message) = (db.code(), db.message());
        (*code == SqlState::UNDEFINED_OBJECT && message.contains(NOT_OURS))
            || *code == SqlState::INVALID_SQL_STATEMENT_NAME
            || *code == SqlState::DUPLICATE_PSTATEMENT
            || (*code == SqlState::PROTOCOL_VIOLATION && message.starts_with("bind message"))
    })
}

/// Why a session is closed after `error` ended `what`: the server's own words, or for a
/// session found shared ([`is_not_ours`]), that and what to do.
pub(crate) fn why_closed(what: &str, error: &PgError) -> String {
    if is_not_ours(error) {
        format!("{NOT_OURS_WHY}. Next step: {NOT_OURS_STEP}")
    } else {
        format!("{what}: {}", describe(error))
    }
}

/// True if `error` means the session is over: the connection closed, or the server sent a
/// FATAL error (`pg_terminate_backend`, a shutdown), after which it closes the connection.
/// Every lock of the session is then gone. A session found shared with other clients
/// ([`is_not_ours`]) is over too: pals closes it.
pub(crate) fn ends_session(error: &PgError) -> bool {
    if error.is_closed() || is_not_ours(error) {
        return true;
    }
    error.as_db_error().is_some_and(|db| {
        matches!(db.severity(), "FATAL" | "PANIC")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(db.code())
    })
}

/// True if `error` is a cancel: `pg_cancel_backend`, a cancel request, `statement_timeout`.
pub(crate) fn is_cancel(error: &PgError) -> bool {
    error.code() == Some(&SqlState::QUERY_CANCELED)
}

/// True if `error` is `lock_timeout` firing.
pub(crate) fn is_lock_timeout(error: &PgError) -> bool {
    error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}
