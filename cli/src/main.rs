//! `pals`: who holds which PostgreSQL advisory lock, how the runs of a `once_per` job
//! went, and whether pals' configuration connects and logs in. `pals --help` says how.

mod answer;
mod args;
mod check;
mod connect;
mod help;
mod holders;
mod json;
mod runs;
mod time;

use std::process::ExitCode;

use crate::answer::{Answer, Exit};
use crate::args::{Command, Request};

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        return usage_error(&args::Usage {
            message: "an argument is not UTF-8 text".into(),
            topic: None,
        });
    };
    let env_app = std::env::var(pals::APP_NAME_ENV).ok();
    match args::parse(args, env_app) {
        Err(usage) => usage_error(&usage),
        Ok(Command::Help(None)) => said(help::OVERVIEW),
        Ok(Command::Help(Some(topic))) => said(topic.help()),
        Ok(Command::Version) => said(&help::version()),
        Ok(Command::Ask(request)) => ask(request),
    }
}

/// Prints `text` and a newline: exit code 0.
fn said(text: &str) -> ExitCode {
    answer::out(&format!("{text}\n"));
    Exit::Done.into()
}

/// What is wrong with the command line, and the usage of its command: exit code 2.
fn usage_error(usage: &args::Usage) -> ExitCode {
    let (line, more) = match usage.topic {
        Some(topic) => (topic.usage(), format!("pals help {}", topic.name())),
        None => (
            help::OVERVIEW.lines().next().unwrap_or_default(),
            "pals --help".into(),
        ),
    };
    eprintln!("pals: {}\n\n{line}\nRun '{more}' for more.", usage.message);
    Exit::Usage.into()
}

/// Asks the database what `request` asks, and prints the answer.
fn ask(request: Request) -> ExitCode {
    connect::name_sessions();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let answer = match runtime {
        Err(error) => Answer::failed(&format!("cannot start a tokio runtime: {error}")),
        Ok(runtime) => runtime.block_on(async {
            let answer = match &request {
                Request::Holders(request) => holders::holders(request).await,
                Request::Runs(request) => runs::runs(request).await,
                Request::Check(request) => Ok(check::check(request).await),
            };
            answer.unwrap_or_else(|error| Answer::failed(&error.to_string()))
        }),
    };
    answer.print(request.json())
}
