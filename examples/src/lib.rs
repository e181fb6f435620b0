//! Shared helpers for pals' examples.

/// The database URL the examples use: `PALS_DB_URL`, or the docker-compose database.
pub fn db_url() -> String {
    std::env::var("PALS_DB_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".to_string())
}
