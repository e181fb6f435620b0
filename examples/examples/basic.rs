//! The PALs README flow, in Rust: `cargo run --example basic`.
//!
//! Uses `PALS_DB_URL`, else the docker-compose database, else the repository's own PostgreSQL
//! (started under `target/` from the machine's PostgreSQL programs: see `devdb/`).

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), pals::Error> {
    // A Locker is a lock factory: the app name namespaces lock names; it owns the pool.
    let locker = pals::Locker::new("my-app-name", &pals_examples::db_url())?;
    let lock1 = locker.lock("my-lock");
    let lock2 = locker.lock("my-lock");
    println!("lock {:?} has key {}", lock1.name(), lock1.key());

    let guard = lock1.acquire().await?;
    println!("lock1 acquired");

    assert!(lock2.try_acquire().await?.is_none());
    println!("lock2.try_acquire(): busy, returned at once");

    let started = Instant::now();
    assert!(lock2
        .acquire_timeout(Duration::from_millis(300))
        .await?
        .is_none());
    println!(
        "lock2.acquire_timeout(300 ms): busy after {:?}",
        started.elapsed()
    );

    assert!(guard.release().await?);
    println!("lock1 released");

    // A guard releases when it goes out of scope too, like PALs' `with locker.lock(...)`.
    {
        let _guard = lock2.acquire().await?;
        println!("lock2 acquired; doing the exclusive work");
    }

    // Shared (reader) locks coexist; an exclusive lock waits for all of them.
    let reader1 = locker.lock("my-lock").shared().acquire().await?;
    let reader2 = locker.lock("my-lock").shared().acquire().await?;
    let writer = locker.lock("my-lock").try_acquire().await?;
    println!(
        "two shared holders; exclusive try_acquire: {}",
        if writer.is_some() { "acquired" } else { "busy" }
    );
    reader1.release().await?;
    reader2.release().await?;

    // Synchronous code has blocking twins of every call.
    let sync_lock = locker.lock("my-lock");
    let guard = tokio::task::spawn_blocking(move || {
        let guard = sync_lock.blocking_acquire()?;
        println!("acquired with blocking_acquire() from a plain thread");
        guard.blocking_release()
    })
    .await
    .expect("the blocking task ran");
    println!("blocking_release() -> {:?}", guard?);

    // A failed acquire reads like PALs' AcquireFailure.
    let _held = locker.lock("my-lock").acquire().await?;
    let other = pals::Locker::new("my-app-name", &pals_examples::db_url())?;
    let err = other
        .lock("my-lock")
        .timeout(Duration::ZERO)
        .acquire()
        .await
        .unwrap_err();
    println!("another locker: {err}");
    Ok(())
}
