//! libpq's connection service file: `service=name` or `PGSERVICE`, found through
//! `PGSERVICEFILE`, reaches the test server. A test binary of its own, with one test: it
//! sets `PGSERVICEFILE`, `PGSERVICE`, `PGHOST` and `PGPORT`, which no other thread may read at once.

use pals_tests::{db_config, TempDir};
use tokio_postgres::config::Host;

/// Takes and lets go a lock through `url`.
fn lock_through(url: &str) -> Result<(), pals::Error> {
    pals_tests::lock_through(url, None)
}

#[test]
fn a_service_file_reaches_the_server() {
    let config = db_config();
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or("postgres");
    let dir = TempDir::new("services");
    let file = dir.path().join("pg_service.conf");
    std::fs::write(
        &file,
        format!(
            "# the test server\n[pals_test]\nhost={host}\nport={port}\nuser={user}\n\
             dbname={dbname}\n\n[wrong_port]\nhost={host}\nport=1\nuser={user}\n"
        ),
    )
    .unwrap();
    // Every variable is set before the first locker starts pals' runtime thread (which
    // may read the environment, in the resolver, while another thread sets it).
    std::env::set_var("PGSERVICEFILE", &file);
    // The service wins over the PG* variables, which lead nowhere.
    std::env::set_var("PGHOST", "127.0.0.1");
    std::env::set_var("PGPORT", "1");
    // PGSERVICE names the service when the URL names none (a URL's service wins).
    std::env::set_var("PGSERVICE", "pals_test");
    lock_through("service=pals_test").unwrap();
    lock_through("postgresql://?service=pals_test").unwrap();
    // The URL wins over the service: the right port mends the wrong one.
    lock_through(&format!("service=wrong_port port={port} dbname={dbname}")).unwrap();
    let err = lock_through("service=wrong_port connect_timeout=5").unwrap_err();
    assert!(err.to_string().contains(":1:"), "the service's port: {err}");
    // PGSERVICE names the service when the URL is empty.
    lock_through("").unwrap();
    // An unknown service names the files looked in.
    let err = lock_through("service=nope").unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, pals::Error::InvalidConfig(_))
            && message.contains("service `nope` is not defined")
            && message.contains(&file.display().to_string()),
        "{message}"
    );
}
