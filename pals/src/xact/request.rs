//! What the transaction-scoped locks of every driver share: the lock's full name and key,
//! the one statement that asks for it (a try, or a bounded wait), and what its answer means.
//! A driver's adapter only runs that statement on its connection and reads one boolean.

use std::time::Duration;

use crate::error::Error;
use crate::key::{full_name, key_of_full_name, Mode};
use crate::sql;

/// A transaction-scoped lock asked for: the statement to run, and the name a busy answer
/// reports.
pub(crate) struct Request {
    /// The full name, `"{app}.{name}"`.
    name: String,
    /// The PALs key of the name: the try statement's parameter `$1`.
    pub(crate) key: i64,
    pub(crate) statement: Statement,
}

/// The one statement that asks for the lock. Its answer is one boolean: whether the
/// transaction holds the lock now.
pub(crate) enum Statement {
    /// A prepared statement with the key as `$1` ([`sql::try_xact_lock`]): the lock if it
    /// is free now, its one row says whether it was taken.
    Try(String),
    /// A simple query that waits a bounded time without aborting the transaction
    /// ([`sql::wait_xact_lock`]): its first row says `t` if the transaction holds the lock.
    Wait(String),
}

impl Request {
    /// The lock `"{app}.{name}"` in `mode` if it is free now.
    pub(crate) fn try_now(app: &str, name: &str, mode: Mode) -> Self {
        let name = full_name(app, name);
        Request {
            key: key_of_full_name(&name),
            name,
            statement: Statement::Try(sql::try_xact_lock(mode)),
        }
    }

    /// The lock `"{app}.{name}"` in `mode`, waiting up to `timeout`: zero tries once, and
    /// more than the server's limit for `lock_timeout` (`i32::MAX` ms, about 24 days;
    /// `Duration::MAX`) waits forever.
    pub(crate) fn wait(app: &str, name: &str, mode: Mode, timeout: Duration) -> Self {
        let mut request = Request::try_now(app, name, mode);
        if !timeout.is_zero() {
            let millis = if timeout.as_millis() > i32::MAX as u128 {
                0 // no limit
            } else {
                timeout.as_millis().max(1) as u64
            };
            request.statement = Statement::Wait(sql::wait_xact_lock(request.key, mode, millis));
        }
        request
    }

    /// What the answer `held` means for an acquire: a lock not held is busy.
    pub(crate) fn acquired(self, held: bool) -> Result<(), Error> {
        if held {
            Ok(())
        } else {
            Err(Error::Timeout { name: self.name })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_tries_and_a_longer_one_waits_within_the_servers_limit() {
        let zero = Request::wait("app", "job", Mode::Shared, Duration::ZERO);
        assert!(matches!(zero.statement, Statement::Try(ref sql) if sql.contains("_shared($1)")));
        assert_eq!(zero.key, crate::key::key("app", "job"));
        let wait = |timeout| match Request::wait("app", "job", Mode::Exclusive, timeout).statement {
            Statement::Wait(sql) => sql,
            Statement::Try(sql) => panic!("a try: {sql}"),
        };
        assert!(wait(Duration::from_micros(10)).contains("'lock_timeout', '1', true"));
        assert!(wait(Duration::from_secs(2)).contains("'lock_timeout', '2000', true"));
        assert!(wait(Duration::MAX).contains("'lock_timeout', '0', true"));
    }

    #[test]
    fn a_busy_answer_names_the_full_lock() {
        let request = Request::try_now("app", "job", Mode::Exclusive);
        let err = request.acquired(false).unwrap_err();
        assert!(
            matches!(err, Error::Timeout { ref name } if name == "app.job"),
            "{err}"
        );
        assert!(Request::try_now("app", "job", Mode::Exclusive)
            .acquired(true)
            .is_ok());
    }
}
