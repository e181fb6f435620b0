//! Shared helpers for pals' examples.

/// The database URL the examples use: `PALS_DB_URL`, or the docker-compose database.
pub fn db_url() -> String {
    std::env::var("PALS_DB_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".to_string())
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
