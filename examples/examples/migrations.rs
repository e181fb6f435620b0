//! A migration routine that must never run twice at once: `cargo run --example migrations`.
//!
//! Several "instances" start at the same time and each calls `migrate()`. The attribute makes
//! them take turns (`timeout = "forever"`): the first applies the migrations, the others wait,
//! then find nothing left to do. The function is sync and uses the global locker, configured
//! once with `pals::init`.

use std::sync::Mutex;
use std::time::Duration;

/// Stands in for the schema_migrations table of a real database.
static APPLIED: Mutex<Vec<&str>> = Mutex::new(Vec::new());
const MIGRATIONS: [&str; 3] = ["001_create_users", "002_add_email", "003_index_email"];

#[derive(Debug)]
enum MigrationError {
    Lock(pals::Error),
}

impl std::fmt::Display for MigrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationError::Lock(error) => write!(f, "migration lock: {error}"),
        }
    }
}

impl std::error::Error for MigrationError {}

impl From<pals::Error> for MigrationError {
    fn from(error: pals::Error) -> Self {
        MigrationError::Lock(error)
    }
}

#[pals::exclusive(timeout = "forever")] // lock name: migrations::migrate
fn migrate(instance: u32) -> Result<usize, MigrationError> {
    let mut applied = 0;
    for migration in MIGRATIONS {
        if APPLIED.lock().unwrap().contains(&migration) {
            continue;
        }
        std::thread::sleep(Duration::from_millis(50)); // run the DDL
        APPLIED.lock().unwrap().push(migration);
        println!("instance {instance}: applied {migration}");
        applied += 1;
    }
    Ok(applied)
}

fn main() -> Result<(), MigrationError> {
    pals::init(pals::Locker::new(
        "migrations-demo",
        &pals_examples::db_url(),
    )?)?;
    let instances: Vec<_> = (1..=3)
        .map(|n| std::thread::spawn(move || (n, migrate(n))))
        .collect();
    for instance in instances {
        let (n, applied) = instance.join().expect("instance thread");
        println!(
            "instance {n}: done, {} migration(s) applied by this instance",
            applied?
        );
    }
    assert_eq!(APPLIED.lock().unwrap().len(), MIGRATIONS.len());
    Ok(())
}
