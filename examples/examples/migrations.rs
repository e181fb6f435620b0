//! Migrations that must never run twice at once, on the libraries a service already has:
//! `cargo run --example migrations [xact]`.
//!
//! refinery applies the SQL files of `examples/migrations/` (embedded at build time) over the
//! application's own deadpool-postgres pool; pals guards the run. Start it on four replicas
//! at once: the first applies the migrations, the others wait for the lock, then find
//! nothing left to do.
//!
//! - By default, `#[pals::exclusive(timeout = "forever")]` around the runner: a session lock
//!   from pals' own connections, held while refinery works on a pooled connection.
//! - With `xact`, a transaction-scoped lock (`pals::xact`) taken in a transaction of a pooled
//!   connection, and held until that transaction ends. refinery runs on a `Client` and opens
//!   its own transactions, so it cannot run inside the caller's: it applies the migrations as
//!   one group on a second pooled connection while the first holds the lock.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `migrations-demo`), and `PALS_SCHEMA`, the
//! schema migrated (default `pals_example`).

use std::time::Duration;

use deadpool_postgres::{Manager, Pool};
use pals::tokio_postgres::{self, NoTls};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Whatever went wrong, told in words: the lock (it converts from `pals::Error`, as the
/// attribute needs), the pool, the database, or a migration.
type MigrationError = Box<dyn std::error::Error + Send + Sync>;

/// The session-lock way: pals holds the lock while refinery runs on a pooled connection.
#[pals::exclusive(name = "migrations-{schema}", timeout = "forever")]
async fn migrate(pool: &Pool, schema: &str) -> Result<refinery::Report, MigrationError> {
    let mut client = pool.get().await?;
    // Under the lock: two replicas creating the schema at once would collide.
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await?;
    Ok(embedded::migrations::runner()
        .run_async(&mut **client)
        .await?)
}

/// The transaction-scoped way: the lock lives as long as a transaction of a pooled
/// connection.
async fn migrate_under_xact(
    pool: &Pool,
    app: &str,
    schema: &str,
) -> Result<refinery::Report, MigrationError> {
    let mut holder = pool.get().await?;
    let lock = holder.transaction().await?;
    // deadpool-postgres' transaction derefs to tokio-postgres', which pals::xact takes.
    let name = format!("migrations-{schema}");
    pals::xact::acquire(&lock, app, &name, Duration::MAX).await?;
    let mut client = pool.get().await?;
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await?;
    let report = embedded::migrations::runner()
        .set_grouped(true)
        .run_async(&mut **client)
        .await?;
    lock.commit().await?; // ends the transaction: the lock is free
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), MigrationError> {
    let url = pals_examples::db_url();
    let app = std::env::var("PALS_APP_NAME").unwrap_or_else(|_| "migrations-demo".into());
    let schema = std::env::var("PALS_SCHEMA").unwrap_or_else(|_| "pals_example".into());
    let under_xact = std::env::args().nth(1).as_deref() == Some("xact");

    // The application's pool, its sessions working in the schema.
    let mut config: tokio_postgres::Config = url.parse()?;
    config.options(format!("-c search_path={schema}"));
    let pool = Pool::builder(Manager::new(config, NoTls))
        .max_size(4)
        .build()?;
    // pals' own locker, for the attribute.
    pals::init(pals::Locker::new(&app, &url)?)?;

    let report = if under_xact {
        migrate_under_xact(&pool, &app, &schema).await?
    } else {
        migrate(&pool, &schema).await?
    };
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    match applied.len() {
        0 => println!("pid {}: nothing to apply, up to date", std::process::id()),
        n => println!(
            "pid {}: applied {n} migration(s): {}",
            std::process::id(),
            applied.join(", ")
        ),
    }
    Ok(())
}
