//! The transaction-scoped locks of [`xact`](crate::xact) for sqlx: the same functions, on a
//! sqlx 0.8 PostgreSQL connection. They take the same locks (the PALs key) as the
//! tokio-postgres ones and as a [`Locker`](crate::Locker)'s: each excludes the others.
//!
//! Each function takes `&mut PgConnection`, so a transaction (`&mut tx`, a
//! `sqlx::Transaction<'_, Postgres>`) and a pool's connection (`&mut conn`, a
//! `PoolConnection<Postgres>`) both fit. On a transaction the lock lasts until its commit or
//! rollback; on a connection outside a transaction, PostgreSQL releases it at the end of the
//! statement, so take it in a transaction. pals runs its statements on the caller's
//! connection and needs no runtime feature of sqlx's. Its errors are [`Error::Sqlx`], and a
//! busy lock is [`Error::Timeout`], after which the transaction stays usable.
//!
//! ```
//! use std::time::Duration;
//! use sqlx::Connection;
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = pals_devdb::db_url().unwrap();
//! # let app = &*format!("doc-xact-sqlx-{}-{:?}", std::process::id(), std::time::UNIX_EPOCH.elapsed()?.as_nanos());
//! let mut connection = sqlx::PgConnection::connect(&url).await?;
//! let mut tx = connection.begin().await?;
//! pals::xact::sqlx::acquire(&mut tx, app, "migrations", Duration::from_secs(30)).await?;
//! // ... migrate on `&mut *tx`; no other transaction holding "{app}.migrations" runs meanwhile ...
//! tx.commit().await?; // releases the lock
//! # Ok(()) }
//! ```
//!
//! A dropped `acquire` future leaves its statement running; sqlx reads the rest of its answer
//! at the connection's next use, which therefore waits for the wait to end on the server
//! (within its timeout). The transaction is not aborted, and may hold the lock then.

use std::time::Duration;

use ::sqlx::{Executor, PgConnection, Row};

use crate::error::Error;
use crate::key::Mode;
use crate::xact::request::{Request, Statement};

/// Takes the exclusive lock `"{app}.{name}"` for the rest of the transaction on `conn`,
/// waiting up to `timeout` (`Duration::MAX`: forever); a busy lock is `Err(Error::Timeout)`,
/// and the transaction stays usable.
pub async fn acquire(
    conn: &mut PgConnection,
    app: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let request = Request::wait(app, name, Mode::Exclusive, timeout);
    let held = ask(conn, &request).await?;
    request.acquired(held)
}

/// [`acquire`] in shared (reader) mode.
pub async fn acquire_shared(
    conn: &mut PgConnection,
    app: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let request = Request::wait(app, name, Mode::Shared, timeout);
    let held = ask(conn, &request).await?;
    request.acquired(held)
}

/// Takes the exclusive lock `"{app}.{name}"` for the rest of the transaction on `conn` if it
/// is free now: `Ok(false)` if it is busy. One round trip.
pub async fn try_acquire(conn: &mut PgConnection, app: &str, name: &str) -> Result<bool, Error> {
    ask(conn, &Request::try_now(app, name, Mode::Exclusive)).await
}

/// [`try_acquire`] in shared (reader) mode.
pub async fn try_acquire_shared(
    conn: &mut PgConnection,
    app: &str,
    name: &str,
) -> Result<bool, Error> {
    ask(conn, &Request::try_now(app, name, Mode::Shared)).await
}

/// Runs the request's statement on `conn`: whether its transaction holds the lock now. The
/// try is not kept prepared on the server session (`persistent(false)`): behind a
/// transaction-mode pooler, that session goes to other clients after the transaction.
async fn ask(conn: &mut PgConnection, request: &Request) -> Result<bool, Error> {
    // `Executor`'s methods box their futures: sqlx's generic `Query::fetch_one(executor)`
    // would make the caller's future one that `tokio::spawn` refuses (not general enough).
    let answer = match &request.statement {
        Statement::Try(text) => {
            let query = ::sqlx::query(text).bind(request.key).persistent(false);
            conn.fetch_optional(query).await
        }
        Statement::Wait(text) => conn.fetch_optional(::sqlx::raw_sql(text)).await,
    };
    match answer.map_err(Error::Sqlx)? {
        Some(row) => row.try_get(0).map_err(Error::Sqlx),
        None => Ok(false),
    }
}
