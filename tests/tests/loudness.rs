//! What must reach a person reaches stderr when the program installed no tracing
//! subscriber, once a minute per cause at most, and nothing goes there when one is
//! installed: a lock lost while held (a guard's, and one under `on_lost = "continue"`), and
//! an ignored password file. (Skips that failed: `exclusive_failures`.) Each case runs in a
//! child process (`pals_loud_child`): whether a subscriber is installed is per process.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use pals_tests::{unique_app, TempFile};

const CHILD: &str = env!("CARGO_BIN_EXE_pals_loud_child");

/// Runs the child in `mode` for `app` (`traced`: with a subscriber), with `env` set; its
/// output, stdout and stderr.
fn run(mode: &str, app: &str, traced: bool, env: &[(&str, &str)]) -> (Output, String, String) {
    let mut command = Command::new(CHILD);
    command.args([mode, app]);
    if traced {
        command.arg("traced");
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stdout.contains("done"),
        "the child failed:\n{stdout}\n{stderr}"
    );
    (output, stdout, stderr)
}

/// The lines pals printed to stderr.
fn printed(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("pals:")).collect()
}

#[test]
fn a_lost_lock_is_printed_once_a_minute_per_lock_without_a_subscriber() {
    let app = unique_app("loud-lost");
    let (_, _, stderr) = run("lost", &app, false, &[]);
    let lines = printed(&stderr);
    let about = |lock: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("lock \"{app}.{lock}\"")))
            .count()
    };
    // "a" was lost twice, "job" twice (each time told by its session's end and by the
    // function's): one line each within the minute; "b" has its own.
    assert_eq!(
        (about("a"), about("b"), about("job")),
        (1, 1, 1),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let a = lines
        .iter()
        .find(|l| l.contains(&format!("\"{app}.a\"")))
        .unwrap();
    assert!(
        a.contains("lost") && a.contains("guard.lost()") && a.contains("no tracing subscriber"),
        "{a}"
    );
}

#[test]
fn a_lost_lock_goes_to_the_subscriber_and_not_to_stderr_when_one_is_installed() {
    let app = unique_app("loud-lost-traced");
    let (_, stdout, stderr) = run("lost", &app, true, &[]);
    assert!(printed(&stderr).is_empty(), "printed: {stderr}");
    // Every event is emitted: the subscriber decides what to keep.
    let lost_a = stdout
        .lines()
        .filter(|l| {
            l.starts_with("ERROR")
                && l.contains("lock lost")
                && l.contains(&format!("lock={app}.a "))
        })
        .count();
    assert_eq!(lost_a, 2, "{stdout}");
}

/// A password file that others may read (ignored, as libpq does).
fn open_passfile() -> TempFile {
    let file = TempFile::new("loud-pgpass", "*:*:*:*:not-used\n");
    let mode = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(file.path(), mode).unwrap();
    file
}

#[test]
fn an_ignored_password_file_is_printed_once_without_a_subscriber() {
    let file = open_passfile();
    let path = file.path().to_str().unwrap();
    let app = unique_app("loud-passfile");
    let (_, _, stderr) = run("passfile", &app, false, &[("PGPASSFILE", path)]);
    let lines = printed(&stderr);
    // Read for each of two lockers: one line.
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(path) && lines[0].contains(&format!("chmod 0600 {path}")),
        "{}",
        lines[0]
    );
}

#[test]
fn an_ignored_password_file_goes_to_the_subscriber_when_one_is_installed() {
    let file = open_passfile();
    let path = file.path().to_str().unwrap();
    let app = unique_app("loud-passfile-traced");
    let (_, stdout, stderr) = run("passfile", &app, true, &[("PGPASSFILE", path)]);
    assert!(printed(&stderr).is_empty(), "printed: {stderr}");
    let warned = stdout
        .lines()
        .filter(|l| l.starts_with("WARN") && l.contains("password file") && l.contains(path))
        .count();
    assert_eq!(warned, 2, "{stdout}");
}
