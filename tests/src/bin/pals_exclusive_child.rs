//! Test helper: calls functions annotated with `#[pals::exclusive]` on the global locker
//! (configured, or not, by the environment), for tests that look at how the process ends
//! and what it prints.
//!
//! `pals_exclusive_child MODE`: `sync` calls the sync unit function `job` twice, then the
//! async `async_job` twice and `other_job` once; `option` calls a skip function returning
//! `Option`; `result` one returning `Result` (and prints what it returned); `traced` is
//! `sync` with a tracing subscriber that prints every event to stdout. Each body prints
//! `body ran: NAME`; `returned` is printed at the end.

use std::io::Write;

#[pals::exclusive(name = "job", timeout = "0")]
fn job() {
    println!("body ran: job");
}

#[pals::exclusive(name = "async-job", timeout = "0")]
async fn async_job() {
    println!("body ran: async_job");
}

#[pals::exclusive(name = "other-job", timeout = "0")]
fn other_job() {
    println!("body ran: other_job");
}

#[pals::exclusive(name = "option-job", timeout = "0", on_busy = "skip")]
fn option_job() -> Option<u32> {
    println!("body ran: option_job");
    Some(1)
}

#[pals::exclusive(name = "result-job", timeout = "0", on_busy = "skip")]
async fn result_job() -> Result<Option<u32>, pals::Error> {
    println!("body ran: result_job");
    Ok(Some(1))
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "sync" | "traced" => {
            if mode == "traced" {
                tracing::subscriber::set_global_default(pals_tests::events::Recorder::printing())
                    .unwrap();
            }
            job();
            job();
            rt.block_on(async_job());
            rt.block_on(async_job());
            other_job();
        }
        "option" => println!("option_job returned {:?}", option_job()),
        "result" => match rt.block_on(result_job()) {
            Err(pals::Error::NotConfigured) => println!("result_job returned Err(NotConfigured)"),
            Err(error) => println!("result_job returned another error: {error}"),
            Ok(value) => println!("result_job returned Ok({value:?})"),
        },
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
    println!("returned");
    std::io::stdout().flush().unwrap();
}
