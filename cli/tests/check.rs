//! `pals check` against the real server: the test database's configuration works (exit
//! code 0, what it reached); a database that does not exist does not (exit code 1, the
//! server's error and the next step).

mod common;

use common::{json_eval, pals, pals_in, pals_with, Ran};
use pals_tests::{db_config, db_url, db_url_with, unique_app};

/// The test database's URL with a database that does not exist.
fn wrong_database() -> (String, String) {
    let name = unique_app("no_such_db").replace('-', "_");
    let url = db_url_with(None, None, None, "");
    let (server, _) = url.rsplit_once('/').expect("a URL with a database");
    (format!("{server}/{name}"), name)
}

/// The user and database of the test database.
fn user_and_database() -> (String, String) {
    let config = db_config();
    let user = config.get_user().unwrap_or("postgres").to_string();
    let database = config.get_dbname().unwrap_or(&user).to_string();
    (user, database)
}

#[test]
fn the_test_database_s_configuration_works() {
    let app = unique_app("cli-check");
    let ran = pals_with(&["check"], &[("PALS_APP_NAME", &app)]);
    assert_eq!((ran.code, ran.stderr.as_str()), (0, ""));
    let (user, database) = user_and_database();
    let reached = format!("pals: app {app} uses ");
    assert!(ran.stdout.starts_with(&reached), "{}", ran.stdout);
    let login = format!(" as {user}, database {database} (PostgreSQL ");
    assert!(ran.stdout.contains(&login), "{}", ran.stdout);
    assert!(
        ran.stdout.ends_with("; URL from PALS_DB_URL)\n"),
        "{}",
        ran.stdout
    );

    let ran = pals_in(
        &["check", "--app", &app, "--json"],
        &[("DATABASE_URL", &db_url())],
        &["PALS_DB_URL"],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let fields = "[d['ok'], d['app'] == x, d['user'], d['database'], d['url_from'], \
                  type(d['tls']).__name__, d['server_version'].split('.')[0].isdigit(), \
                  ':' in d['target']]";
    assert_eq!(
        json_eval(&ran.stdout, fields, &app),
        format!("[true, true, \"{user}\", \"{database}\", \"DATABASE_URL\", \"bool\", true, true]")
    );
}

/// Asserts that `ran` is a check that failed on the database `name`, which does not exist.
fn failed_on(ran: &Ran, name: &str) {
    assert_eq!(ran.code, 1, "{} {}", ran.stdout, ran.stderr);
    let error = format!("database \"{name}\" does not exist");
    assert!(
        ran.stderr
            .starts_with("pals: cannot connect to the database: "),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains(&error), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Next step: create the database"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_database_that_does_not_exist_fails_with_the_error() {
    let app = unique_app("cli-check-wrong");
    let (url, name) = wrong_database();
    let ran = pals(&["check", "--app", &app, "--url", &url]);
    failed_on(&ran, &name);
    assert_eq!(ran.stdout, "");

    let ran = pals_with(
        &["check", "--json"],
        &[("PALS_APP_NAME", &app), ("PALS_DB_URL", &url)],
    );
    failed_on(&ran, &name);
    let fields =
        "[d['ok'], d['app'] == x, 'does not exist' in d['error'], 'Next step' in d['error']]";
    assert_eq!(
        json_eval(&ran.stdout, fields, &app),
        "[false, true, true, true]"
    );
}

#[test]
fn holders_and_runs_fail_with_exit_code_1_too() {
    let (url, name) = wrong_database();
    for args in [&["holders"][..], &["runs", "job", "--app", "a"]] {
        let ran = pals_with(args, &[("PALS_DB_URL", &url)]);
        failed_on(&ran, &name);
        let ran = pals_with(&[args, &["--json"]].concat(), &[("PALS_DB_URL", &url)]);
        failed_on(&ran, &name);
        assert_eq!(
            json_eval(&ran.stdout, "[d['ok'], 'does not exist' in d['error']]", ""),
            "[false, true]"
        );
    }
}
