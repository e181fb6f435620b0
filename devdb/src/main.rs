//! `cargo run -p pals-devdb [-- stop]`: the URL of the examples' and tests' PostgreSQL
//! (starting the repository's private cluster if nothing answers), or stop that cluster.

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo run -p pals-devdb [-- COMMAND]

  (none)  print the URL of the examples' and tests' PostgreSQL: PALS_DB_URL, else the server
          at 127.0.0.1:54321 (docker compose), else the repository's private cluster in
          target/pals-postgres, started if it is not running
  stop    stop the private cluster (it keeps its data; the next run starts it again)
  help    print this";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => pals_devdb::db_url()
            .map(|url| println!("{url}"))
            .map_err(ToString::to_string),
        ["stop"] => stop(),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pals-devdb: {message}");
            ExitCode::FAILURE
        }
    }
}

fn stop() -> Result<(), String> {
    let devdb = pals_devdb::DevDb::for_repository();
    let stopped = match devdb.stop() {
        // No programs: nothing of this repository's was started from this machine's.
        Err(pals_devdb::Error::NothingToStart { .. }) => {
            println!("pals-devdb: no PostgreSQL programs here: no private PostgreSQL to stop");
            return Ok(());
        }
        other => other.map_err(|e| e.to_string())?,
    };
    match stopped {
        true => println!("pals-devdb: stopped the private PostgreSQL"),
        false => println!("pals-devdb: the private PostgreSQL is not running"),
    }
    Ok(())
}
