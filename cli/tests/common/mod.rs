//! Running the `pals` binary as a user would, and reading its JSON with Python's parser.
// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// What a run of `pals` printed, and its exit code.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `pals ARGS`, with the test database in `PALS_DB_URL` and no `PALS_APP_NAME`.
pub fn pals(args: &[&str]) -> Ran {
    pals_with(args, &[])
}

/// `pals ARGS` with the environment variables `vars` set too.
pub fn pals_with(args: &[&str], vars: &[(&str, &str)]) -> Ran {
    pals_in(args, vars, &[])
}

/// `pals ARGS` with the environment variables `vars` set too, and those of `unset` unset.
pub fn pals_in(args: &[&str], vars: &[(&str, &str)], unset: &[&str]) -> Ran {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pals"));
    command
        .args(args)
        .env("PALS_DB_URL", pals_tests::db_url())
        .env_remove("PALS_APP_NAME")
        .env_remove("DATABASE_URL")
        .envs(vars.iter().copied());
    for variable in unset {
        command.env_remove(variable);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("pals runs");
    Ran {
        code: status.code().expect("pals exited, not killed"),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

/// The value of the Python expression `expression` over the JSON document `document`
/// (bound to `d`; `x` is bound to the string `x`), as JSON: the document is parsed by
/// Python's `json` module, strictly (one document, nothing after it, no raw control
/// character in a string). Panics if it is not JSON.
pub fn json_eval(document: &str, expression: &str, x: &str) -> String {
    let program = "import json, sys\n\
                   d = json.loads(sys.stdin.read(), parse_constant=lambda c: sys.exit('not JSON: ' + c))\n\
                   x = sys.argv[2]\n\
                   print(json.dumps(eval(sys.argv[1]), ensure_ascii=False))";
    let mut python = Command::new("python3")
        .args(["-c", program, expression, x])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = python.stdin.take().expect("python's stdin");
    stdin
        .write_all(document.as_bytes())
        .expect("the document is written");
    drop(stdin);
    let output = python.wait_with_output().expect("python3 ends");
    assert!(
        output.status.success(),
        "python3 could not read {document:?} as JSON, or `{expression}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim_end()
        .to_string()
}
