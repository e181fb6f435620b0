//! Who holds which advisory lock? `cargo run --example holders -- --help`

const USAGE: &str = "\
Usage: holders [URL] [APP [NAME...]]

Prints every advisory lock on a bigint key (the kind pals and PALs use) held or awaited in
the database, with the session that holds or awaits it.

  URL    the database: postgresql://user@host:port/dbname, or libpq key=value pairs
         (default: PALS_DB_URL, else the docker-compose database). What it leaves out
         comes from the PG* variables and ~/.pgpass, as with psql.
  APP    an application name: with NAMEs, their keys are labelled in the table
  NAME   lock names of APP

Example: holders postgresql://user@db/prod my-app migrations";

fn main() -> Result<(), pals::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    if let Some(unknown) = args.iter().find(|a| a.starts_with('-')) {
        eprintln!("holders: unknown option {unknown}\n\n{USAGE}");
        std::process::exit(2);
    }
    let mut args = args.into_iter();
    let url = args.next().unwrap_or_else(pals_examples::db_url);
    let app = args.next().unwrap_or_else(|| "holders".to_string());
    // Shows as "pals-inspect" in pg_stat_activity, not as the application it inspects.
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = if url.contains("application_name=") || !url.contains("://") {
        url
    } else {
        format!("{url}{separator}application_name=pals-inspect")
    };
    let locker = pals::Locker::builder(&app)
        .url(&url)
        .pool_size(1)
        .heartbeat(None)
        .build()?;
    for name in args {
        let _ = locker.lock(&name); // teaches the locker the name of this key
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let holders = runtime.block_on(locker.holders())?;
    print!("{}", pals::inspect::table(&holders));
    println!("{} advisory lock(s) held or awaited", holders.len());
    Ok(())
}
