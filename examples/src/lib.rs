//! Shared helpers for pals' examples.

/// Where the repository's docker-compose file publishes PostgreSQL.
const COMPOSE_ADDRESS: &str = "127.0.0.1:54321";

/// The database URL the examples use: `PALS_DB_URL`, or the docker-compose database (and,
/// if nothing answers there, a line on stderr that says how to start it).
pub fn db_url() -> String {
    if let Ok(url) = std::env::var("PALS_DB_URL") {
        return url;
    }
    let address = COMPOSE_ADDRESS.parse().expect("an address");
    let wait = std::time::Duration::from_secs(1);
    if std::net::TcpStream::connect_timeout(&address, wait).is_err() {
        eprintln!(
            "pals examples: nothing answers at {COMPOSE_ADDRESS}, the docker-compose database \
             the examples use unless PALS_DB_URL is set: start it with `docker compose up -d \
             --wait` in the repository root, or set PALS_DB_URL to a server you have"
        );
    }
    format!("postgresql://postgres@{COMPOSE_ADDRESS}/postgres")
}

/// Completes on SIGTERM (what a deploy or `kill` sends) or Ctrl-C.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
