//! The database settings as libpq reads them, against a real server that asks for a
//! password over TCP (a throwaway cluster): Unix sockets, `PGPASSWORD`, the password file,
//! the `PG*` variables with an empty URL, and the errors of a missing or wrong password.
//!
//! One test in a binary of its own: it sets environment variables, which are process-wide.

use pals::Locker;
use pals_tests::cluster::TempCluster;
use pals_tests::TempFile;

const PASSWORD: &str = "s3cret:with\\colon";

/// Takes and releases a lock with `locker`: the connection works.
fn works(locker: &Locker) -> Result<(), pals::Error> {
    let guard = locker.lock("x").blocking_try_acquire()?.expect("free");
    assert!(guard.blocking_release()?);
    Ok(())
}

fn clear_pg_variables() {
    for name in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
    ] {
        std::env::remove_var(name);
    }
}

#[test]
fn settings_come_from_the_url_the_pg_variables_and_the_password_file() {
    clear_pg_variables();
    let cluster = TempCluster::start_with_password("libpq", PASSWORD);
    let port = cluster.port();
    let tcp = format!("postgresql://postgres@127.0.0.1:{port}/postgres");

    // A Unix socket: a host that is a directory, in key=value form and in a URL.
    let dir = cluster.socket_dir().display().to_string();
    let key_value = format!("host={dir} port={port} user=postgres dbname=postgres");
    works(&Locker::new("socket", &key_value).unwrap()).expect("Unix socket, key=value");
    let encoded = dir.replace('/', "%2F");
    let url = format!("postgresql://postgres@{encoded}:{port}/postgres");
    works(&Locker::new("socket", &url).unwrap()).expect("Unix socket, URL");

    // TCP without a password: an error that says where to put one.
    let err = works(&Locker::new("tcp", &tcp).unwrap()).unwrap_err();
    let message = err.to_string();
    assert!(err.is_misconfiguration(), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("PGPASSWORD"),
        "{message}"
    );

    // A wrong password, in the URL.
    let wrong = format!("postgresql://postgres:nope@127.0.0.1:{port}/postgres");
    let err = works(&Locker::new("wrong", &wrong).unwrap()).unwrap_err();
    assert!(err.is_misconfiguration(), "{err}");
    assert!(err.to_string().contains("28P01"), "{err}");
    let said = err
        .to_string()
        .matches("password authentication failed")
        .count();
    assert_eq!(said, 1, "the server's message once: {err}");
    assert!(
        !err.to_string().contains("nope"),
        "the password shows: {err}"
    );

    // PGPASSWORD fills in what the URL leaves out.
    std::env::set_var("PGPASSWORD", PASSWORD);
    works(&Locker::new("pgpassword", &tcp).unwrap()).expect("PGPASSWORD");
    std::env::remove_var("PGPASSWORD");

    // The password file: used when only its owner may read it, as libpq.
    let escaped = PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    let passfile = TempFile::new(
        "pgpass",
        &format!("127.0.0.1:{port}:*:postgres:{escaped}\n"),
    );
    std::env::set_var("PGPASSFILE", passfile.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(passfile.path(), mode(0o600)).unwrap();
        works(&Locker::new("pgpass", &tcp).unwrap()).expect("the password file");
        std::fs::set_permissions(passfile.path(), mode(0o644)).unwrap();
        let err = works(&Locker::new("pgpass-open", &tcp).unwrap()).unwrap_err();
        assert!(
            err.is_misconfiguration(),
            "a file others can read is ignored: {err}"
        );
        std::fs::set_permissions(passfile.path(), mode(0o600)).unwrap();
    }

    // An empty URL: everything from the PG* variables (and the password file).
    std::env::set_var("PGHOST", "127.0.0.1");
    std::env::set_var("PGPORT", port.to_string());
    std::env::set_var("PGUSER", "postgres");
    std::env::set_var("PGDATABASE", "postgres");
    works(&Locker::new("empty-url", "").unwrap()).expect("PG* variables and the password file");
    clear_pg_variables();
}
