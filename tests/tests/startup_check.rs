//! The start-up check: `Locker::check` and `pals::init_from_env()` open a session and
//! return a login, database or TLS mistake at start-up, with its next step.

use std::process::{Command, Output};

use pals_tests::{cluster::TempCluster, db_url, sessions_of, unique_app};

/// `pals_init` (a program's start-up: `pals::init_from_env()`) with these variables (and no
/// other PALS_*/DATABASE_URL variable): its exit code and what it printed.
fn start_up(vars: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pals_init"));
    for variable in [
        "PALS_DB_URL",
        "DATABASE_URL",
        "PALS_DATABASE_URL",
        "PALS_APP_NAME",
    ] {
        command.env_remove(variable);
    }
    command.envs(vars.iter().copied());
    let Output { status, stdout, .. } = command.output().expect("pals_init runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
    )
}

/// `url` with its database replaced by `dbname`.
fn with_database(url: &str, dbname: &str) -> String {
    let base = url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{dbname}")
}

#[test]
fn a_good_configuration_starts_and_says_where_from() {
    pals_tests::ensure_server();
    let app = unique_app("start-ok");
    let (code, out) = start_up(&[("PALS_APP_NAME", &app), ("DATABASE_URL", &db_url())]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok {app}")), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("INFO"))
        .expect("a log line");
    assert!(line.contains(&format!("pals: app {app} uses ")), "{line}");
    assert!(line.contains("URL from DATABASE_URL"), "{line}");

    // PALS_DB_URL wins over DATABASE_URL.
    let unknown = with_database(&db_url(), "pals_no_such_database");
    let (code, out) = start_up(&[
        ("PALS_APP_NAME", &app),
        ("PALS_DB_URL", &db_url()),
        ("DATABASE_URL", &unknown),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("URL from PALS_DB_URL"), "{out}");

    // The old variable's name is an error even where DATABASE_URL is set: it may name a
    // database of its own, which DATABASE_URL would silently replace.
    let (code, out) = start_up(&[
        ("PALS_APP_NAME", &app),
        ("PALS_DATABASE_URL", &unknown),
        ("DATABASE_URL", &db_url()),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rename the variable"), "{out}");
}

#[test]
fn an_unknown_database_fails_at_start_up() {
    pals_tests::ensure_server();
    let unknown = with_database(&db_url(), "pals_no_such_database");
    let app = unique_app("start-db");
    let (code, out) = start_up(&[("PALS_APP_NAME", &app), ("PALS_DB_URL", &unknown)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("3D000"), "{out}");
    assert!(out.contains("Next step: create the database"), "{out}");
    // The same from DATABASE_URL alone.
    let (code, out) = start_up(&[("PALS_APP_NAME", &app), ("DATABASE_URL", &unknown)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pals_no_such_database"), "{out}");
}

#[test]
fn a_wrong_password_and_a_tls_mismatch_fail_at_start_up() {
    let cluster = TempCluster::start_with_password("startup", "right");
    let port = cluster.port();
    let app = unique_app("start-login");
    let url = format!("postgresql://postgres:wrong@127.0.0.1:{port}/postgres?sslmode=disable");
    let (code, out) = start_up(&[("PALS_APP_NAME", &app), ("PALS_DB_URL", &url)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("28P01"), "{out}");
    assert!(
        out.contains("Next step: correct the user's password"),
        "{out}"
    );
    assert!(!out.contains("wrong"), "the password never shows: {out}");

    let right = format!("postgresql://postgres:right@127.0.0.1:{port}/postgres");
    let (code, out) = start_up(&[("PALS_APP_NAME", &app), ("PALS_DB_URL", &right)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no TLS"), "this cluster has no TLS: {out}");

    // The cluster has no TLS: a URL that requires it is refused at start-up.
    let tls = format!("{right}?sslmode=require");
    let (code, out) = start_up(&[("PALS_APP_NAME", &app), ("PALS_DB_URL", &tls)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TLS"), "{out}");
}

#[tokio::test]
async fn the_check_keeps_its_session_for_the_locks() {
    pals_tests::ensure_server();
    let app = unique_app("check-session");
    let locker = pals::Locker::new(app.as_str(), &db_url()).unwrap();
    assert_eq!(sessions_of(&app), 0, "building a locker does no I/O");
    let checked = locker.check().await.unwrap();
    assert_eq!(checked.app(), app);
    let config = pals_tests::db_config();
    assert_eq!(Some(checked.user()), config.get_user());
    assert_eq!(Some(checked.database()), config.get_dbname());
    assert_eq!(checked.url_from(), None, "a URL given in code");
    let version = pals_tests::probe_query("SHOW server_version").unwrap()[0]
        .clone()
        .unwrap();
    assert!(version.starts_with(checked.server_version()), "{version}");
    assert_eq!(sessions_of(&app), 1, "the check opened one session");

    // The locks use it: no second connection.
    let guard = locker.lock("job").try_acquire().await.unwrap().unwrap();
    assert_eq!(sessions_of(&app), 1);
    // And a second check reports on it.
    assert_eq!(locker.check().await.unwrap(), checked);
    assert_eq!(sessions_of(&app), 1);
    assert!(guard.release().await.unwrap());
}

#[test]
fn check_reports_tls_as_the_server_sees_it() {
    pals_tests::ensure_server();
    let app = unique_app("check-tls");
    // sslmode=prefer (the default) encrypts where the server offers TLS.
    let server_ssl = pals_tests::probe_query("SHOW ssl").unwrap()[0].as_deref() == Some("on");
    let prefer = pals_tests::db_url_with(None, None, None, "sslmode=prefer");
    let locker = pals::Locker::new(app.as_str(), &prefer).unwrap();
    let checked = locker.blocking_check().unwrap();
    assert_eq!(checked.tls(), server_ssl, "{checked}");
    let plain = pals_tests::db_url_with(None, None, None, "sslmode=disable");
    let locker = pals::Locker::new(app.as_str(), &plain).unwrap();
    assert!(!locker.blocking_check().unwrap().tls());
}
