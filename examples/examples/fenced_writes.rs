//! Fencing tokens: the store refuses the late write of a holder that lost its lock without
//! knowing it: `cargo run --example fenced_writes`.
//!
//! A lock cannot stop a holder that stalls (a GC pause, a suspended VM, a slow network)
//! while its lock is lost and taken by another: when it wakes, it still believes it holds
//! the lock, and writes. Checking `is_held()` first does not help, since the pause can come
//! between the check and the write. What helps is a token: every grant of a fenced lock
//! draws a number greater than every earlier holder's, the holder sends it with each write,
//! and the store refuses a write whose token is lower than the highest it has seen.
//!
//! Here two lockers stand for two replicas, A and B, and a table stands for the store (any
//! store that can make a write conditional on the token will do). A takes the lock and
//! writes, then pauses; meanwhile its lock session really ends (the server terminates it,
//! as a restart or a failover would), so the lock is really free, and B takes it and
//! writes. A wakes and writes with its old token: refused. With the attribute, the same
//! lock is `#[pals::exclusive(name = "ledger", fenced = true)]` and the body reads its
//! token with `pals::current_fence()`.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `fenced-demo`; the table, made and
//! dropped by the example, is named after it).

use pals::tokio_postgres::{self, Client, NoTls};

/// Connects to the store, as a replica's own client would (not through pals).
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Writes `value` with `token`; false if the store refused it.
///
/// The check and the write are one statement. A `SELECT` of the row's token, then an
/// `UPDATE`, would reopen the gap that fencing closes: a newer holder could write between
/// the check and the write. In one `UPDATE`, PostgreSQL locks the row and, if another
/// writer changed it meanwhile, evaluates the condition again on the newest version; so
/// the highest token wins, whatever the order the writes arrive in. `<=`, not `<`: a holder
/// may write more than once with its token.
async fn write(
    store: &Client,
    table: &str,
    value: &str,
    token: u64,
) -> Result<bool, Box<dyn std::error::Error>> {
    let token = i64::try_from(token)?; // a PostgreSQL sequence: always fits
    let sql = format!("UPDATE {table} SET value = $1, fence = $2 WHERE id = 1 AND fence <= $2");
    Ok(store.execute(&sql, &[&value, &token]).await? == 1)
}

fn verdict(accepted: bool) -> &'static str {
    if accepted {
        "accepted"
    } else {
        "rejected (0 rows)"
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pals_examples::db_url();
    let app = std::env::var("PALS_APP_NAME").unwrap_or_else(|_| "fenced-demo".into());
    let suffix: String = (app.chars())
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    let table = format!("fenced_ledger_{suffix}");

    // Two replicas: each its own locker (its own lock sessions) and its own store client.
    let (locker_a, locker_b) = (
        pals::Locker::new(&app, &url)?,
        pals::Locker::new(&app, &url)?,
    );
    let (store_a, store_b) = (connect(&url).await?, connect(&url).await?);
    store_a
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; \
             CREATE TABLE {table} (id int PRIMARY KEY, value text NOT NULL, \
               fence bigint NOT NULL); \
             INSERT INTO {table} VALUES (1, 'initial', 0)"
        ))
        .await?;
    println!("store: table {table}, one row; it keeps the highest token written");

    let guard_a = locker_a.lock("ledger").fenced().acquire().await?;
    let token_a = guard_a.fence().expect("a fenced lock has a token");
    println!("A: acquired the lock, token {token_a}");
    let accepted = write(&store_a, &table, "written by A", token_a).await?;
    println!("A: writes with token {token_a}: {}", verdict(accepted));
    println!(
        "A: is_held() = {}; pauses (a GC pause, a suspended VM) before its next write",
        guard_a.is_held()
    );

    // While A is paused, its lock session ends: here the server terminates it, as a restart,
    // a failover or an administrator would. PostgreSQL frees the lock with the session.
    let holders = locker_b.holders().await?;
    let pid = (holders.iter())
        .find(|h| h.key == guard_a.key() && h.granted)
        .and_then(|h| h.pid)
        .expect("A's lock is listed with its session");
    let admin = connect(&url).await?;
    // The second argument waits (up to 5 s) until the backend is gone.
    admin
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .await?;
    println!("meanwhile: A's lock session (backend {pid}) is terminated; its lock is free");

    let guard_b = locker_b.lock("ledger").fenced().acquire().await?;
    let token_b = guard_b.fence().expect("a fenced lock has a token");
    println!("B: acquired the lock, token {token_b}");
    let accepted = write(&store_b, &table, "written by B", token_b).await?;
    println!("B: writes with token {token_b}: {}", verdict(accepted));

    // A wakes, still sure it holds the lock, and goes on with its write.
    let accepted = write(&store_a, &table, "written late by A", token_a).await?;
    println!(
        "A: wakes and writes late with token {token_a}: {}",
        verdict(accepted)
    );
    guard_a.lost().await; // pals learns it as the server closes the session
    let held = guard_a.is_held();
    let released = guard_a.release().await?;
    println!("A: is_held() = {held}; release() -> {released}: the lock had been lost");
    guard_b.release().await?;

    let row = store_a
        .query_one(
            &format!("SELECT value, fence FROM {table} WHERE id = 1"),
            &[],
        )
        .await?;
    let (value, fence): (String, i64) = (row.get(0), row.get(1));
    println!("store: the row is {value:?}, fence {fence}");
    store_a
        .batch_execute(&format!("DROP TABLE {table}"))
        .await?;
    Ok(())
}
