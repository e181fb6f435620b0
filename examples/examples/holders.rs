//! Who holds which advisory lock? `cargo run --example holders -- [URL] [APP NAME...]`
//!
//! Prints every advisory lock held or awaited in the database at URL (default: `PALS_DB_URL`
//! or the docker-compose database), with the session that holds or awaits it. Given an app
//! and lock names, it labels their keys: `cargo run --example holders -- URL my-app migrations`.

fn main() -> Result<(), pals::Error> {
    let mut args = std::env::args().skip(1);
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
