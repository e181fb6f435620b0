//! Interop with the real Python PALs (from PyPI): a Python service and a Rust service with
//! the same app and lock names exclude each other, for exclusive and shared locks.
//!
//! The Python side runs in a virtualenv with `PALs` and `psycopg`: `PALS_PYTHON` names its
//! interpreter (`.ci/run` prepares one); without it, this test makes one in
//! `target/pals-venv` (it needs `python3` and PyPI). No Python is a failure that says so,
//! never a silent pass.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use pals_tests::{db_url, locker, unique_app};

fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(python) = std::env::var("PALS_PYTHON") {
            return PathBuf::from(python);
        }
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pals-venv");
        let python = venv.join("bin/python");
        let ready = Command::new(&python)
            .args(["-c", "import pals, psycopg"])
            .status()
            .is_ok_and(|status| status.success());
        if !ready {
            let _ = std::fs::remove_dir_all(&venv); // half-made by an earlier run
            let made = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status();
            assert!(
                matches!(made, Ok(status) if status.success()),
                "Python is not available: the PALs interop tests need python3 (with venv) \
                 to install PALs from PyPI, or PALS_PYTHON pointing at an interpreter that has \
                 `PALs` and `psycopg` installed"
            );
            let installed = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "PALs==0.4.0",
                    "psycopg[binary]>=3.1",
                ])
                .status();
            assert!(
                matches!(installed, Ok(status) if status.success()),
                "could not install PALs and psycopg from PyPI into {}",
                venv.display()
            );
        }
        python
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/pals_peer.py")
}

/// The test database's URL in SQLAlchemy's spelling, with the psycopg (3) driver.
fn sqlalchemy_url() -> String {
    let url = db_url();
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .expect("PALS_DB_URL is a postgresql:// URL");
    format!("postgresql+psycopg://{rest}")
}

fn peer(args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command.arg(script()).arg(sqlalchemy_url()).args(args);
    command
}

/// A Python process holding the lock until dropped.
struct PythonHolder(Child);

impl PythonHolder {
    fn start(app: &str, name: &str, mode: &str) -> PythonHolder {
        let mut child = peer(&[app, name, "hold", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held", "the Python peer did not take the lock");
        PythonHolder(child)
    }
}

impl Drop for PythonHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take()); // EOF: release and exit
        let _ = self.0.wait();
    }
}

/// Runs the Python peer to completion; what it printed.
fn peer_output(args: &[&str]) -> String {
    let output = peer(args).output().expect("run the Python peer");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn python_try(app: &str, name: &str, mode: &str) -> bool {
    match peer_output(&[app, name, "try", mode]).as_str() {
        "True" => true,
        "False" => false,
        other => panic!("unexpected answer from PALs: {other}"),
    }
}

#[test]
fn the_keys_are_the_same() {
    assert_eq!(
        peer_output(&["bench", "x", "key"]),
        pals::key("bench", "x").to_string()
    );
}

#[test]
fn python_holds_rust_sees_it_busy() {
    let app = unique_app("py-holds");
    let rust = locker(&app);
    {
        let _python = PythonHolder::start(&app, "job", "exclusive");
        assert!(rust.lock("job").blocking_try_acquire().unwrap().is_none());
        assert!(rust
            .lock("job")
            .shared()
            .blocking_try_acquire()
            .unwrap()
            .is_none());
    }
    assert!(
        rust.lock("job").blocking_acquire().is_ok(),
        "free once PALs released it"
    );
    {
        let _python = PythonHolder::start(&app, "table", "shared");
        assert!(rust.lock("table").blocking_try_acquire().unwrap().is_none());
        let reader = rust.lock("table").shared().blocking_try_acquire().unwrap();
        assert!(reader.is_some(), "shared holders share across languages");
    }
}

#[test]
fn rust_holds_python_sees_it_busy() {
    let app = unique_app("rust-holds");
    let rust = locker(&app);
    let guard = rust.lock("job").blocking_acquire().unwrap();
    assert!(!python_try(&app, "job", "exclusive"));
    assert!(!python_try(&app, "job", "shared"));
    assert!(guard.blocking_release().unwrap());
    assert!(python_try(&app, "job", "exclusive"));

    let reader = rust.lock("table").shared().blocking_acquire().unwrap();
    assert!(python_try(&app, "table", "shared"));
    assert!(!python_try(&app, "table", "exclusive"));
    assert!(reader.blocking_release().unwrap());
}

#[test]
fn semaphore_permits_are_shared_with_pals_on_the_documented_keys() {
    let app = unique_app("py-semaphore");
    let rust = locker(&app);
    let exports = rust.semaphore("export", 3);
    // Python PALs takes permits by their lock names: "{name}.permit-{i}".
    let first_python = PythonHolder::start(&app, "export.permit-0", "exclusive");
    let _second_python = PythonHolder::start(&app, "export.permit-1", "exclusive");
    let rust_permit = exports.blocking_try_acquire().unwrap();
    let rust_permit = rust_permit.expect("one of 3 permits is left");
    assert_eq!(rust_permit.permit(), 2);
    assert!(
        exports.blocking_try_acquire().unwrap().is_none(),
        "3 holders over both languages"
    );
    assert!(!python_try(&app, "export.permit-2", "exclusive"));
    // PALs sends no NOTIFY when it releases: a Rust waiter finds the permit at its
    // next recheck.
    drop(first_python);
    let waited = exports
        .blocking_acquire_timeout(pals::PERMIT_RECHECK * 4)
        .unwrap()
        .expect("the permit PALs gave back");
    assert_eq!(waited.permit(), 0);
    assert!(rust_permit.blocking_release().unwrap());
    assert!(python_try(&app, "export.permit-2", "exclusive"));
}
