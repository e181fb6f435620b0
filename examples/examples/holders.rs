//! Who holds which advisory lock, and how did the last runs of a job go?
//! `cargo run --example holders -- --help`

const USAGE: &str = "\
Usage: holders [--runs [--limit N] [--schema S]] [URL] [APP [NAME...]]

Prints every advisory lock on a bigint key (the kind pals and PALs use) held or awaited in
the database, with the session that holds or awaits it. With --runs, prints instead the
last runs of each once_per job NAME of APP: its tick, when it started, how long it took,
the replica that ran it and how it ended.

  URL        the database: postgresql://user@host:port/dbname, or libpq key=value pairs
             (default: PALS_DB_URL, else the docker-compose database). What it leaves
             out comes from the PG* variables and ~/.pgpass, as with psql.
  APP        an application name: with NAMEs, their keys are labelled in the table
  NAME       lock names (job names) of APP
  --runs     the run history of each NAME (at least one) instead of the holders
  --limit N  with --runs: the last N runs of each job (default 10)
  --schema S with --runs: the schema of the runs table, as the jobs' LockerBuilder::schema
             (default public)

Exit codes: 0 done, 1 the database could not be asked, 2 bad arguments.

Examples: holders postgresql://user@db/prod my-app migrations
          holders --runs postgresql://user@db/prod my-app nightly-report";

/// What the command line asks for.
struct Request {
    runs: bool,
    limit: u32,
    schema: String,
    url: String,
    app: String,
    names: Vec<String>,
}

/// The request of `args`, or the message for arguments that cannot be used.
fn request(args: Vec<String>) -> Result<Request, String> {
    let (mut runs, mut limit, mut positional) = (false, 10, Vec::new());
    let mut schema = "public".to_string();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = true,
            "--schema" => {
                schema = args.next().ok_or("--schema needs the name of a schema")?;
            }
            "--limit" => {
                let value = args.next().unwrap_or_default();
                limit = value
                    .parse()
                    .map_err(|_| format!("--limit needs a whole number, not {value:?}"))?;
            }
            unknown if unknown.starts_with('-') => return Err(format!("unknown option {unknown}")),
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    let url = positional.next().unwrap_or_else(pals_examples::db_url);
    let app = positional.next().unwrap_or_else(|| "holders".to_string());
    let names: Vec<String> = positional.collect();
    if runs && names.is_empty() {
        return Err("--runs needs an APP and the NAME of a job".into());
    }
    Ok(Request {
        runs,
        limit,
        schema,
        url,
        app,
        names,
    })
}

fn main() -> Result<(), pals::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let request = request(args).unwrap_or_else(|why| {
        eprintln!("holders: {why}\n\n{USAGE}");
        std::process::exit(2);
    });
    // Shows as "pals-inspect" in pg_stat_activity, not as the application it inspects.
    let url = &request.url;
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = if url.contains("application_name=") || !url.contains("://") {
        url.clone()
    } else {
        format!("{url}{separator}application_name=pals-inspect")
    };
    let locker = pals::Locker::builder(&request.app)
        .url(&url)
        .pool_size(1)
        .heartbeat(None)
        .schema(&request.schema)
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answered = match request.runs {
        true => runtime.block_on(print_runs(&locker, &request)),
        false => runtime.block_on(print_holders(&locker, &request)),
    };
    if let Err(error) = answered {
        eprintln!("holders: {error}");
        std::process::exit(1);
    }
    Ok(())
}

/// Every advisory lock held or awaited, the keys of the request's names labelled.
async fn print_holders(locker: &pals::Locker, request: &Request) -> Result<(), pals::Error> {
    for name in &request.names {
        let _ = locker.lock(name); // teaches the locker the name of this key
    }
    let holders = locker.holders().await?;
    print!("{}", pals::inspect::table(&holders));
    println!("{} advisory lock(s) held or awaited", holders.len());
    Ok(())
}

/// The last runs of each job the request names.
async fn print_runs(locker: &pals::Locker, request: &Request) -> Result<(), pals::Error> {
    for name in &request.names {
        let runs = locker.runs(name, request.limit).await?;
        println!(
            "{}.{name}: {} run(s) shown, newest first",
            request.app,
            runs.len()
        );
        print!("{}", pals::inspect::runs_table(&runs));
    }
    Ok(())
}
