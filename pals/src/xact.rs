//! Transaction-scoped locks, for code that already holds a tokio-postgres transaction
//! (migrations): `pg_advisory_xact_lock` under the PALs key, released by commit or rollback.
//!
//! They are the only advisory locks that work behind pgbouncer in transaction-pooling mode:
//! the lock lives exactly as long as the transaction, on whichever server connection runs it.
//!
//! ```
//! use std::time::Duration;
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
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
use crate::key::{full_name, key_of_full_name, Mode};
use crate::sql;

/// Takes the exclusive lock `"{app}.{name}"` for the rest of `tx`, waiting up to `timeout`
/// (`Duration::MAX`: forever); a busy lock is `Err(Error::Timeout)`, and `tx` stays usable.
pub async fn acquire(
    tx: &Transaction<'_>,
    app: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    lock(tx, &full_name(app, name), Mode::Exclusive, timeout).await
}

/// [`acquire`] in shared (reader) mode.
pub async fn acquire_shared(
    tx: &Transaction<'_>,
    app: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    lock(tx, &full_name(app, name), Mode::Shared, timeout).await
}

/// Takes the exclusive lock `"{app}.{name}"` for the rest of `tx` if it is free now:
/// `Ok(false)` if it is busy. One round trip.
pub async fn try_acquire(tx: &Transaction<'_>, app: &str, name: &str) -> Result<bool, Error> {
    try_lock(tx, key_of_full_name(&full_name(app, name)), Mode::Exclusive).await
}

/// [`try_acquire`] in shared (reader) mode.
pub async fn try_acquire_shared(
    tx: &Transaction<'_>,
    app: &str,
    name: &str,
) -> Result<bool, Error> {
    try_lock(tx, key_of_full_name(&full_name(app, name)), Mode::Shared).await
}

async fn try_lock(tx: &Transaction<'_>, key: i64, mode: Mode) -> Result<bool, Error> {
    let row = tx
        .query_one(&sql::try_xact_lock(mode), &[&key])
        .await
        .map_err(Error::Database)?;
    row.try_get(0).map_err(Error::Database)
}

/// Waits for the lock (see `sql::wait_xact_lock`), then asks whether it is held.
async fn lock(
    tx: &Transaction<'_>,
    name: &str,
    mode: Mode,
    timeout: Duration,
) -> Result<(), Error> {
    let key = key_of_full_name(name);
    if timeout.is_zero() {
        return if try_lock(tx, key, mode).await? {
            Ok(())
        } else {
            Err(Error::Timeout { name: name.into() })
        };
    }
    let millis = if timeout.as_millis() > i32::MAX as u128 {
        0
    } else {
        timeout.as_millis().max(1) as u64
    };
    let sql = sql::wait_xact_lock(key, mode, millis);
    let messages = tx.simple_query(&sql).await.map_err(Error::Database)?;
    if sql::first_value(&messages) == Some("t") {
        Ok(())
    } else {
        Err(Error::Timeout { name: name.into() })
    }
}
