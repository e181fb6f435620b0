//! Transaction-scoped locks, for code that already holds a tokio-postgres transaction
//! (migrations): `pg_advisory_xact_lock` under the PALs key, released by commit or rollback.
//! With the cargo feature `sqlx`, [`xact::sqlx`](crate::xact::sqlx) has the same functions
//! for a sqlx transaction or connection; the two take the same locks.
//!
//! They are the only advisory locks that work behind pgbouncer in transaction-pooling mode:
//! the lock lives exactly as long as the transaction, on whichever server connection runs it.
//!
//! ```
//! use std::time::Duration;
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = pals_devdb::db_url().unwrap();
//! let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let tx = client.transaction().await?;
//! pals::xact::acquire(&tx, "my-app", "migrations", Duration::from_secs(30)).await?;
//! // ... migrate; no other transaction holding "my-app.migrations" runs meanwhile ...
//! tx.commit().await?; // releases the lock
//! # Ok(()) }
//! ```

use std::time::Duration;

use tokio_postgres::Transaction;

use crate::error::Error;
use crate::key::Mode;
use crate::sql;

mod request;
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
pub mod sqlx;

use request::{Request, Statement};

/// Takes the exclusive lock `"{app}.{name}"` for the rest of `tx`, waiting up to `timeout`
/// (`Duration::MAX`: forever); a busy lock is `Err(Error::Timeout)`, and `tx` stays usable.
pub async fn acquire(
    tx: &Transaction<'_>,
    app: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let request = Request::wait(app, name, Mode::Exclusive, timeout);
    let held = ask(tx, &request).await?;
    request.acquired(held)
}

/// [`acquire`] in shared (reader) mode.
pub async fn acquire_shared(
    tx: &Transaction<'_>,
    app: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let request = Request::wait(app, name, Mode::Shared, timeout);
    let held = ask(tx, &request).await?;
    request.acquired(held)
}

/// Takes the exclusive lock `"{app}.{name}"` for the rest of `tx` if it is free now:
/// `Ok(false)` if it is busy. One round trip.
pub async fn try_acquire(tx: &Transaction<'_>, app: &str, name: &str) -> Result<bool, Error> {
    ask(tx, &Request::try_now(app, name, Mode::Exclusive)).await
}

/// [`try_acquire`] in shared (reader) mode.
pub async fn try_acquire_shared(
    tx: &Transaction<'_>,
    app: &str,
    name: &str,
) -> Result<bool, Error> {
    ask(tx, &Request::try_now(app, name, Mode::Shared)).await
}

/// Runs the request's statement on `tx`: whether `tx` holds the lock now.
async fn ask(tx: &Transaction<'_>, request: &Request) -> Result<bool, Error> {
    match &request.statement {
        Statement::Try(text) => tx
            .query_one(text, &[&request.key])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(Error::Database),
        Statement::Wait(text) => {
            let messages = tx.simple_query(text).await.map_err(Error::Database)?;
            Ok(sql::first_value(&messages) == Some("t"))
        }
    }
}
