//! Runs one of the programs the cluster needs, and makes its failure an [`Error`].

use std::process::{Command, Output};

use crate::error::Error;

/// Runs `command` to its end: its output, or an error with what it printed.
pub fn run(command: &mut Command) -> Result<Output, Error> {
    let output = command.output().map_err(|source| {
        let program = command.get_program().to_string_lossy().into_owned();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::Missing {
                program,
                purpose: purpose(command),
            }
        } else {
            Error::Io {
                action: format!("run {program}"),
                source,
            }
        }
    })?;
    if output.status.success() {
        return Ok(output);
    }
    Err(Error::Failed {
        command: format!("{command:?}"),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// What a program is needed for, as the end of a sentence.
fn purpose(command: &Command) -> &'static str {
    match command.get_program().to_str() {
        Some("openssl") => "makes the private PostgreSQL's certificate (its TLS tests need SSL on)",
        Some("runuser") => "starts the private PostgreSQL as the `postgres` user when run as root",
        _ => "the private PostgreSQL needs",
    }
}
