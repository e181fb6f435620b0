//! What a command found, for people and for programs, and the exit code it ends with.

use std::io::Write;
use std::process::ExitCode;

use crate::json::Value;

/// How a run of `pals` ends: its exit code (the help's "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done: the answer is yes, or a list (which may be empty).
    Done = 0,
    /// The database could not be asked, or (check) the configuration does not work.
    Failed = 1,
    /// The command line cannot be used.
    Usage = 2,
    /// Asked, and nothing is recorded: runs of a job that never ran.
    Nothing = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// A command's answer.
pub(crate) struct Answer {
    /// For people: a table, or a line.
    pub(crate) text: String,
    /// For programs (`--json`): one document.
    pub(crate) json: Value,
    pub(crate) exit: Exit,
}

impl Answer {
    /// Prints the answer (the document with `json`, else the text) and gives its exit code.
    pub(crate) fn print(self, json: bool) -> ExitCode {
        match json {
            true => out(&format!("{}\n", self.json)),
            false => out(&self.text),
        }
        self.exit.into()
    }

    /// The answer of a command that failed with `error`: exit code 1, the error on stderr
    /// (and, with `--json`, in the document).
    pub(crate) fn failed(error: &str) -> Answer {
        Answer {
            text: String::new(),
            json: Value::Object(vec![
                ("ok", Value::Bool(false)),
                ("error", Value::string(error)),
            ]),
            exit: Exit::Failed,
        }
        .with_stderr(error)
    }

    /// Writes `error` on stderr, now.
    pub(crate) fn with_stderr(self, error: &str) -> Answer {
        eprintln!("pals: {error}");
        self
    }
}

/// Writes `text` on stdout. A reader that went away (`pals holders | head -1`) is no
/// error: what it did not read, it did not want.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}
