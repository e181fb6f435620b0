//! What `pals --help`, `pals help COMMAND` and `pals COMMAND --help` print.

/// A command, as the help names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topic {
    Holders,
    Runs,
    Check,
}

impl Topic {
    /// The command that `word` names, if it names one.
    pub(crate) fn of(word: &str) -> Option<Topic> {
        match word {
            "holders" => Some(Topic::Holders),
            "runs" => Some(Topic::Runs),
            "check" => Some(Topic::Check),
            _ => None,
        }
    }

    /// The command's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Topic::Holders => "holders",
            Topic::Runs => "runs",
            Topic::Check => "check",
        }
    }

    /// The command's usage line, shown with a usage error.
    pub(crate) fn usage(self) -> &'static str {
        match self {
            Topic::Holders => HOLDERS.lines().next().unwrap_or_default(),
            Topic::Runs => RUNS.lines().next().unwrap_or_default(),
            Topic::Check => CHECK.lines().next().unwrap_or_default(),
        }
    }

    /// The command's help.
    pub(crate) fn help(self) -> &'static str {
        match self {
            Topic::Holders => HOLDERS,
            Topic::Runs => RUNS,
            Topic::Check => CHECK,
        }
    }
}

/// `pals --version`.
pub(crate) fn version() -> String {
    format!("pals {}", env!("CARGO_PKG_VERSION"))
}

/// `pals --help`.
pub(crate) const OVERVIEW: &str = "\
Usage: pals [--url URL] COMMAND [OPTIONS]

Who holds which PostgreSQL advisory lock, how the runs of a once_per job went, and whether
pals' configuration connects and logs in: for pals (Rust) and PALs (Python) applications.

Commands:
  holders [--app APP | --all] [NAME...]          the advisory locks held or awaited
  runs NAME [--app APP] [--limit N] [--schema S]  the last runs of the once_per job NAME
  check [--app APP]                               connect and log in as the application
  help [COMMAND]                                  this help, or a command's

Options (every command):
  --url URL   the database: postgresql://user@host:port/dbname, or libpq key=value pairs.
              Default: PALS_DB_URL, else DATABASE_URL, else the PG* variables (PGHOST,
              PGPORT, PGUSER, PGDATABASE, ...) and ~/.pgpass, as psql reads them
  --app APP   the application whose locks (APP.NAME) to look at. Default: PALS_APP_NAME
  --json      one JSON document on stdout instead of the table
  -h, --help  the help of the command       -V, --version  the version

Exit codes:
  0  done
  1  the database could not be asked: the configuration, the connection, the login or a
     statement failed (the error, with its next step, is on stderr); for check: the
     configuration does not work
  2  the command line cannot be used (what is wrong is on stderr)
  3  runs: no run of the job is recorded
With --json, exit codes 0, 1 and 3 come with one JSON document on stdout: {\"ok\":true,...}
or {\"ok\":false,\"error\":\"...\"}.

Run 'pals help COMMAND' for a command's options and output.";

/// `pals holders --help`.
const HOLDERS: &str = "\
Usage: pals holders [--url URL] [--app APP | --all] [--json] [NAME...]

Every advisory lock on a bigint key (the kind pals and PALs take) held or awaited in the
database, by pals, PALs or plain SQL, with the session that holds or awaits it: key, mode,
state (held or waiting), pid, application_name (pals' sessions show pals:APP@HOST:PID),
client address, how long a waiter has waited, and the lock's name where it is known.

  --app APP  only APP's locks: those its pals sessions hold or await, and those on the
             key of a NAME. Default: PALS_APP_NAME; neither: every lock
  --all      every lock, whatever PALS_APP_NAME says
  NAME       lock names of APP: their keys show as APP.NAME (a key is a hash of the name:
             pals cannot tell the name from the key alone)
  --url URL  the database (default: PALS_DB_URL, DATABASE_URL, else the PG* variables)
  --json     {\"ok\":true,\"app\":APP or null,\"holders\":[{\"key\":\"-123...\",\"name\":...,
             \"mode\":\"exclusive\" or \"shared\",\"granted\":true,\"pid\":...,\"application_name\":...,
             \"client_addr\":...,\"backend_start\":\"2026-12-03T11:18:42.153000Z\",
             \"waiting_for\":seconds or null}]}: keys as strings (64 bits do not fit a
             JavaScript number), times in UTC (RFC 3339)

Exit codes: 0 done (no lock held is an answer too), 1 the database could not be asked,
2 bad arguments.

Examples: pals holders --url postgresql://user@db/prod
          pals holders --app my-app migrations nightly-report";

/// `pals runs --help`.
const RUNS: &str = "\
Usage: pals runs NAME [--url URL] [--app APP] [--limit N] [--schema S] [--json]

The last runs of the once_per job NAME of APP, newest first, from any replica: the tick
each was for, when it started, how long it took, the replica that ran it, and how it
ended (succeeded, failed, panicked, cancelled, lost, vanished, or running), with the
error's or the panic's text.

  NAME        the job's lock name (the lock is APP.NAME)
  --app APP   the application (default: PALS_APP_NAME; one of them is needed)
  --limit N   the last N runs (default 10)
  --schema S  the schema of the runs table, pals_runs, as the jobs' LockerBuilder::schema
              (default public)
  --url URL   the database (default: PALS_DB_URL, DATABASE_URL, else the PG* variables)
  --json      {\"ok\":true,\"app\":APP,\"name\":NAME,\"lock\":\"APP.NAME\",\"runs\":[{\"tick\":...,
              \"period\":seconds,\"started\":...,\"ended\":... or null,\"took\":seconds or
              null,\"replica\":...,\"outcome\":\"succeeded\",\"detail\":... or null}]}: times
              in UTC (RFC 3339)

Exit codes: 0 done, 1 the database could not be asked, 2 bad arguments, 3 no run of the
job is recorded (it never ran, or ran under another app name or schema).

Example: pals runs nightly-report --app my-app --limit 5";

/// `pals check --help`.
const CHECK: &str = "\
Usage: pals check [--url URL] [--app APP] [--json]

Connects and logs in as the application would, with the variables pals::init_from_env
reads, and sets a session up as pals does: the configuration, the network, TLS, the login,
the database and the privileges pals needs. Prints what it reached, or what failed and the
next step.

  --app APP  the application (default: PALS_APP_NAME; one of them is needed, as
             init_from_env needs it)
  --url URL  the database (default: PALS_DB_URL, DATABASE_URL, else the PG* variables)
  --json     {\"ok\":true,\"app\":APP,\"target\":...,\"user\":...,\"database\":...,
             \"server_version\":...,\"tls\":true,\"url_from\":\"PALS_DB_URL\" or null}, or
             {\"ok\":false,\"app\":APP,\"error\":\"...\"}

Exit codes: 0 the configuration works, 1 it does not (the error says why and what to
do), 2 bad arguments.

Example: PALS_APP_NAME=my-app PALS_DB_URL=postgresql://user@db/prod pals check";
