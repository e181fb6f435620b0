//! libpq's default certificate files: `~/.postgresql/root.crt`, `postgresql.crt` and
//! `postgresql.key`, used when the URL names none. A test binary of its own, with one
//! test: it points `HOME` at a temporary directory, which no other thread may read at once.

use pals_tests::certs::TestCa;
use pals_tests::cluster::TempCluster;
use pals_tests::TempDir;

/// Takes and lets go a lock through `url`.
fn lock_through(url: &str) -> Result<(), pals::Error> {
    pals_tests::lock_through(url, None)
}

#[test]
fn the_certificates_in_dot_postgresql_are_used_when_the_url_names_none() {
    let ca = TestCa::new("defaults");
    ca.issue("client", "postgres", None);
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 cert\n";
    let cluster = TempCluster::start_with_tls("defaults", &ca, hba);
    let home = TempDir::new("home");
    let dir = home.path().join(".postgresql");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("ca.crt", "root.crt"),
        ("client.crt", "postgresql.crt"),
        ("client.key", "postgresql.key"),
    ] {
        std::fs::copy(ca.path(from), dir.join(to)).unwrap();
    }
    std::env::set_var("HOME", home.path());
    let url = |mode: &str| {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode={mode}",
            cluster.port()
        )
    };
    // root.crt checks the server, postgresql.crt and .key log in.
    lock_through(&url("verify-full")).unwrap();
    // As libpq: with a root.crt, require checks the chain (verify-ca).
    let stranger = TestCa::new("defaults-stranger");
    std::fs::copy(stranger.path("ca.crt"), dir.join("root.crt")).unwrap();
    let message = lock_through(&url("require")).unwrap_err().to_string();
    assert!(
        message.contains("With sslmode=require (checked as verify-ca")
            && message.contains("not signed by a CA"),
        "{message}"
    );
    // No root.crt: the verify modes say what to give.
    std::fs::remove_file(dir.join("root.crt")).unwrap();
    let message = lock_through(&url("verify-full")).unwrap_err().to_string();
    assert!(
        message.contains(".postgresql/root.crt does not exist")
            && message.contains("sslrootcert=system"),
        "{message}"
    );
    lock_through(&url("require")).unwrap();
    // A certificate without its key.
    std::fs::remove_file(dir.join("postgresql.key")).unwrap();
    let message = lock_through(&url("require")).unwrap_err().to_string();
    assert!(message.contains("has no key"), "{message}");
}
