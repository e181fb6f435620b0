//! Distributed locks on PostgreSQL advisory locks, compatible with Python's
//! [PALs](https://github.com/level12/pals).
//!
//! Teams that already run PostgreSQL get fleet-wide mutual exclusion without Redis,
//! ZooKeeper or etcd. A [`Locker`] names the application and owns a connection pool; its
//! [`Lock`]s hand out [`LockGuard`]s that are always released, by [`LockGuard::release`] or
//! in the background when dropped.
//!
//! ```
//! use std::time::Duration;
//! # #[tokio::main] async fn main() -> Result<(), pals::Error> {
//! # let url = std::env::var("PALS_DB_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into());
//! let locker = pals::Locker::new("my-app-name", &url)?;
//! let lock1 = locker.lock("my-lock");
//! let lock2 = locker.lock("my-lock");
//!
//! let guard = lock1.acquire().await?;          // waits up to the lock's timeout
//! assert!(lock2.try_acquire().await?.is_none()); // never waits
//! assert!(lock2.acquire_timeout(Duration::from_millis(300)).await?.is_none());
//! assert!(guard.release().await?);
//! # Ok(()) }
//! ```
//!
//! Lock keys are PALs' ([`key`]): a Rust service and a Python service using the same app
//! and lock names exclude each other.

#![warn(missing_docs)]

mod error;
mod global;
mod guard;
mod key;
mod lock;
mod locker;
mod pool;
mod queue;
mod runtime;

pub use error::Error;
pub use global::{global, init, APP_NAME_ENV, DATABASE_URL_ENV};
pub use guard::LockGuard;
pub use key::key;
pub use lock::Lock;
pub use locker::{
    Locker, LockerBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT,
};

#[cfg(test)]
mod tests {
    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<crate::Locker>();
        assert_send_sync::<crate::Lock>();
        assert_send_sync::<crate::LockGuard>();
        assert_send_sync::<crate::Error>();
    }
}
