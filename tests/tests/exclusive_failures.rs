//! `#[pals::exclusive]` when the lock cannot be taken because something failed (not because
//! it is busy), on functions whose return type cannot carry the error. A misconfiguration
//! is never a skip: it panics, naming the lock and the function and saying how to fix it. A
//! database that cannot be reached is a skip, logged at error level with the lock and the
//! function, and printed to stderr (at most once a minute per lock) when no tracing
//! subscriber is installed. Each case runs in a child process (`pals_exclusive_child`),
//! whose global locker is configured by its environment alone.

use std::process::{Command, Output};

use pals_tests::{db_url_with, unreachable_url};

const CHILD: &str = env!("CARGO_BIN_EXE_pals_exclusive_child");

/// Runs the child in `mode`, with `PALS_APP_NAME` and `PALS_DB_URL` as given (removed
/// when `None`).
fn run(mode: &str, app: Option<&str>, url: Option<&str>) -> (Output, String, String) {
    let mut command = Command::new(CHILD);
    command
        .arg(mode)
        .env_remove("PALS_DATABASE_URL")
        .env("RUST_BACKTRACE", "0");
    for (name, value) in [("PALS_APP_NAME", app), ("PALS_DB_URL", url)] {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = command.output().expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The child panicked (exit code 101) before any body ran, with a message that names the
/// lock and the function and says it is a configuration mistake.
fn assert_misconfiguration_panic(
    mode: &str,
    app: Option<&str>,
    url: Option<&str>,
    lock: &str,
    function: &str,
) -> String {
    let (output, stdout, stderr) = run(mode, app, url);
    assert_eq!(
        output.status.code(),
        Some(101),
        "not a panic: {stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("body ran") && !stdout.contains("returned"),
        "{stdout}"
    );
    let message = format!("pals: cannot run `{function}`: lock \"{lock}\" cannot be taken: ");
    assert!(stderr.contains(&message), "no `{message}` in:\n{stderr}");
    assert!(
        stderr.contains("configuration mistake, not a busy lock")
            && stderr.contains("pals::init_from_env()"),
        "{stderr}"
    );
    stderr
}

#[test]
fn an_unconfigured_global_locker_panics_instead_of_skipping() {
    // A sync unit function (skip by default), then an `Option` under on_busy = "skip".
    let stderr =
        assert_misconfiguration_panic("sync", None, None, "job", "pals_exclusive_child::job");
    // The error itself says how to configure pals.
    assert!(stderr.contains("PALS_APP_NAME"), "{stderr}");
    assert_misconfiguration_panic(
        "option",
        None,
        None,
        "option-job",
        "pals_exclusive_child::option_job",
    );
}

#[test]
fn a_refused_login_panics_instead_of_skipping() {
    // A server that answers but refuses the role: a configuration mistake too.
    let url = db_url_with(None, None, Some("pals_no_such_role"), "");
    assert_misconfiguration_panic(
        "sync",
        Some("app"),
        Some(&url),
        "app.job",
        "pals_exclusive_child::job",
    );
}

#[test]
fn a_misconfiguration_is_returned_by_a_result() {
    let (output, stdout, stderr) = run("result", None, None);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("result_job returned Err(NotConfigured)"),
        "{stdout}"
    );
    assert!(!stdout.contains("body ran"), "{stdout}");
}

#[test]
fn an_unreachable_database_is_a_skip_printed_once_per_lock_without_a_subscriber() {
    let url = unreachable_url();
    let (output, stdout, stderr) = run("sync", Some("app"), Some(&url));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("returned") && !stdout.contains("body ran"),
        "{stdout}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("pals:")).collect();
    // `job` and `async_job` were called twice: one line each; `other_job` has its own.
    for (lock, function) in [
        ("app.job", "pals_exclusive_child::job"),
        ("app.async-job", "pals_exclusive_child::async_job"),
        ("app.other-job", "pals_exclusive_child::other_job"),
    ] {
        let about: Vec<&&str> = lines
            .iter()
            .filter(|l| {
                l.contains(&format!(
                    "`{function}`: lock \"{lock}\" cannot be taken: cannot connect"
                ))
            })
            .collect();
        assert_eq!(about.len(), 1, "lines about {lock}: {lines:#?}");
    }
    assert_eq!(lines.len(), 3, "{lines:#?}");
}

#[test]
fn an_unreachable_database_is_logged_at_error_level_and_not_printed_with_a_subscriber() {
    let url = unreachable_url();
    let (output, stdout, stderr) = run("traced", Some("app"), Some(&url));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("pals:"),
        "printed although a subscriber is installed: {stderr}"
    );
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("ERROR")
                && l.contains("skipping")
                && l.contains("lock=\"app.job\"")
                && l.contains("function=\"pals_exclusive_child::job\"")
                && l.contains("cannot connect")
        })
        .collect();
    // Logged on every call: the subscriber decides what to keep.
    assert_eq!(errors.len(), 2, "{stdout}");
}
