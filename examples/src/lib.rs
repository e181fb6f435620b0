//! Shared helpers for pals' examples.

/// The database URL the examples use: `PALS_DB_URL`, else the docker-compose database when
/// it answers, else the repository's own, started under `target/` if need be
/// ([`pals_devdb::db_url`]). With none of them, says the three ways to get one and exits.
pub fn db_url() -> String {
    pals_devdb::db_url().unwrap_or_else(|error| {
        eprintln!("pals examples: {error}");
        std::process::exit(1)
    })
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
