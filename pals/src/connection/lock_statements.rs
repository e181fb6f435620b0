//! [`LockConn`]: a lock session's connection and the lock statements it sends. The instant
//! statements are prepared once per connection: each use is then one Bind and Execute, with
//! nothing for the server to parse or plan. Each statement checks that it runs on the
//! session pals set up (`sql::ours`), given the session's [`Mark`]: else it fails with an
//! error that [`is_not_ours`](crate::error::is_not_ours) tells.

use std::future::poll_fn;
use std::ops::Deref;
use std::pin::pin;

use futures_core::Stream;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use super::PgConn;
use crate::error::PgError;
use crate::key::Mode;
use crate::sql::{self, Mark, Mint};

/// A lock session's connection: a [`PgConn`] with its lock statements prepared.
pub(crate) struct LockConn {
    conn: PgConn,
    prepared: Prepared,
    /// The session's mark, and as the prepared statements take it.
    mark: Mark,
    mark_text: String,
}

/// The instant statements, indexed by `Mode::index`.
pub(super) struct Prepared {
    try_lock: [Statement; 2],
    try_lock_fenced: [Statement; 2],
    unlock: [Statement; 2],
    unlock_and_notify: Statement,
}

impl Prepared {
    /// Prepares the statements (polled beside the set-up: one round trip for all).
    pub(super) async fn new(client: &Client) -> Result<Prepared, PgError> {
        let (x, s) = (Mode::Exclusive, Mode::Shared);
        let texts = [
            sql::try_lock(x),
            sql::try_lock(s),
            sql::try_lock_fenced(x),
            sql::try_lock_fenced(s),
            sql::unlock(x),
            sql::unlock(s),
            sql::unlock_and_notify(),
        ];
        let [try_x, try_s, fenced_x, fenced_s, unlock_x, unlock_s, notify] = &texts;
        let (try_x, try_s, fenced_x, fenced_s, unlock_x, unlock_s, notify) = tokio::join!(
            client.prepare(try_x),
            client.prepare(try_s),
            client.prepare(fenced_x),
            client.prepare(fenced_s),
            client.prepare(unlock_x),
            client.prepare(unlock_s),
            client.prepare(notify),
        );
        Ok(Prepared {
            try_lock: [try_x?, try_s?],
            try_lock_fenced: [fenced_x?, fenced_s?],
            unlock: [unlock_x?, unlock_s?],
            unlock_and_notify: notify?,
        })
    }
}

/// A lock wait that failed; `granted`: after the lock was granted (its fencing token could
/// not be drawn), so the session may hold it.
pub(crate) struct WaitFailed {
    pub(crate) error: PgError,
    pub(crate) granted: bool,
}

impl Deref for LockConn {
    type Target = PgConn;

    fn deref(&self) -> &PgConn {
        &self.conn
    }
}

impl LockConn {
    pub(super) fn new(conn: PgConn, prepared: Prepared, mark: Mark) -> LockConn {
        let mark_text = mark.to_string();
        LockConn {
            conn,
            prepared,
            mark,
            mark_text,
        }
    }

    /// The session's mark, which its statements check.
    pub(crate) fn mark(&self) -> Mark {
        self.mark
    }

    /// The try statement in `mode`: whether the lock was taken.
    pub(crate) async fn try_lock(&self, key: i64, mode: Mode) -> Result<bool, PgError> {
        let statement = &self.prepared.try_lock[mode.index()];
        let row = self
            .client
            .query_one(statement, &[&key, &self.mark_text])
            .await?;
        row.try_get(0)
    }

    /// [`try_lock`](LockConn::try_lock) that mints a fencing token from `sequence` with
    /// the grant: `Some(token)` if the lock was taken.
    pub(crate) async fn try_lock_fenced(
        &self,
        key: i64,
        mode: Mode,
        sequence: &str,
    ) -> Result<Option<i64>, PgError> {
        let statement = &self.prepared.try_lock_fenced[mode.index()];
        let mark = &self.mark_text;
        let row = self
            .client
            .query_one(statement, &[&key, &sequence, mark])
            .await?;
        row.try_get(0)
    }

    /// The unlock in `mode`: whether the session held the lock. With `notify` (a semaphore
    /// permit's, exclusive), `NOTIFY` with that payload in the same statement.
    pub(crate) async fn unlock(
        &self,
        key: i64,
        mode: Mode,
        notify: Option<&str>,
    ) -> Result<bool, PgError> {
        let row = match notify {
            None => {
                let statement = &self.prepared.unlock[mode.index()];
                self.client
                    .query_one(statement, &[&key, &self.mark_text])
                    .await?
            }
            Some(payload) => {
                debug_assert_eq!(mode, Mode::Exclusive, "permits are exclusive locks");
                let statement = &self.prepared.unlock_and_notify;
                let mark = &self.mark_text;
                self.client
                    .query_one(statement, &[&key, &payload, mark])
                    .await?
            }
        };
        row.try_get(0)
    }

    /// Waits for the lock in one query, `lock_timeout_ms` at most (0: no limit), and
    /// mints a fencing token once it is granted if `mint` names the sequence. `Ok(token)`:
    /// granted. The answer is read as it comes, so that an error after the grant's own row
    /// (the token could not be drawn) is told from one before it.
    pub(crate) async fn wait_lock(
        &self,
        key: i64,
        mode: Mode,
        lock_timeout_ms: u64,
        mint: Option<Mint<'_>>,
    ) -> Result<Option<i64>, WaitFailed> {
        let version = self.server_version;
        let sql = sql::wait_lock(key, mode, lock_timeout_ms, version, mint, self.mark);
        let failed = |error| WaitFailed {
            error,
            granted: false,
        };
        let answer = self.client.simple_query_raw(&sql).await.map_err(failed)?;
        let mut answer = pin!(answer);
        let (mut rows, mut token) = (0, None);
        while let Some(message) = poll_fn(|cx| answer.as_mut().poll_next(cx)).await {
            match message {
                Ok(SimpleQueryMessage::Row(row)) => {
                    rows += 1;
                    token = row.get(0).and_then(|token| token.parse().ok());
                }
                Ok(_) => {}
                Err(error) => {
                    let granted = rows > 0;
                    return Err(WaitFailed { error, granted });
                }
            }
        }
        Ok(token)
    }

    /// The advisory locks the server holds for this session, by key and mode; `Ok(None)`
    /// if the answer cannot be read (which cannot happen with a PostgreSQL server).
    pub(crate) async fn server_locks(&self) -> Result<Option<Vec<(i64, Mode)>>, PgError> {
        let answer = self
            .client
            .simple_query(&sql::server_locks(self.mark))
            .await?;
        let locks = sql::rows(&answer).map(|row| {
            let key = row.get(0)?.parse().ok()?;
            Some((key, sql::mode_of(row.get(1)?)))
        });
        Ok(locks.collect())
    }

    /// Unlocks each of `locks` once; how many of those unlocks found nothing held
    /// (`Ok(None)`: an unreadable answer).
    pub(crate) async fn unlock_each(&self, locks: &[(i64, Mode)]) -> Result<Option<u64>, PgError> {
        let sql = sql::unlock_each(locks, self.mark);
        let answer = self.client.simple_query(&sql).await?;
        Ok(sql::first_value(&answer).and_then(|n| n.parse().ok()))
    }
}
