//! [`LockConn`]: a lock session's connection and the lock statements it sends. The instant
//! statements are prepared once per connection: each use is then one Bind and Execute, with
//! nothing for the server to parse or plan, framed by pals and written and answered on the
//! caller's own task over the session's shared socket ([`Mux`]). Each statement checks that
//! it runs on the session pals set up (`sql::ours`), given the session's [`Mark`]: else it
//! fails with an error that [`is_not_ours`](crate::error::is_not_ours) tells.

use std::ops::Deref;
use std::sync::Arc;

use super::frame::{self, Answer, Value};
use super::mux::Mux;
use super::PgConn;
use crate::error::PgError;
use crate::key::Mode;
use crate::sql::{self, Mark, Mint};

/// A lock session's connection: a [`PgConn`] with its lock statements prepared.
pub(crate) struct LockConn {
    conn: PgConn,
    mux: Arc<Mux>,
    /// The prepared statements' names (the set-up's try that made them).
    names: &'static Names,
    /// The session's mark, and as the prepared statements take it.
    mark: Mark,
    mark_text: String,
}

/// The prepared statements' names, indexed by `Mode::index`.
struct Names {
    try_lock: [&'static str; 2],
    try_lock_fenced: [&'static str; 2],
    unlock: [&'static str; 2],
    unlock_and_notify: &'static str,
}

/// The names for each try of the set-up (`open::SETUP_TRIES`, 3): a try cut short may
/// leave statements prepared, which the next must not collide with.
static NAMES: [Names; 3] = [
    Names {
        try_lock: ["pals1_try_x", "pals1_try_s"],
        try_lock_fenced: ["pals1_fenced_x", "pals1_fenced_s"],
        unlock: ["pals1_unlock_x", "pals1_unlock_s"],
        unlock_and_notify: "pals1_unlock_notify",
    },
    Names {
        try_lock: ["pals2_try_x", "pals2_try_s"],
        try_lock_fenced: ["pals2_fenced_x", "pals2_fenced_s"],
        unlock: ["pals2_unlock_x", "pals2_unlock_s"],
        unlock_and_notify: "pals2_unlock_notify",
    },
    Names {
        try_lock: ["pals3_try_x", "pals3_try_s"],
        try_lock_fenced: ["pals3_fenced_x", "pals3_fenced_s"],
        unlock: ["pals3_unlock_x", "pals3_unlock_s"],
        unlock_and_notify: "pals3_unlock_notify",
    },
];

fn names(tries: usize) -> &'static Names {
    &NAMES[tries.clamp(1, NAMES.len()) - 1]
}

/// A key as a text parameter, without an allocation.
struct KeyText {
    buf: [u8; 20],
    len: usize,
}

impl KeyText {
    fn new(key: i64) -> KeyText {
        use std::io::Write;
        let mut buf = [0u8; 20];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{key}"); // at most 20 characters
        let len = cursor.position() as usize;
        KeyText { buf, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("0")
    }
}

/// Sends `request` on `mux` and reads its answer: an error answer as the driver's error.
async fn run(
    mux: &Mux,
    request: impl FnOnce(&mut Vec<u8>),
    want_rows: bool,
) -> Result<Answer, PgError> {
    match mux.call(request, want_rows).await {
        Ok(answer) => match &answer.error {
            Some(body) => Err(frame::error_of(Some(body)).await),
            None => Ok(answer),
        },
        Err(_) => Err(frame::error_of(None).await),
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
    pub(super) fn new(conn: PgConn, mark: Mark, tries: usize) -> LockConn {
        let mux = match &conn.shared {
            Some((mux, _)) => Arc::clone(mux),
            None => unreachable!("a lock session's socket is shared"),
        };
        let mark_text = mark.to_string();
        LockConn {
            conn,
            mux,
            names: names(tries),
            mark,
            mark_text,
        }
    }

    /// Prepares the lock statements on `mux`'s session, named for the set-up's try
    /// `tries`: one Parse for each, one round trip for all.
    pub(super) async fn prepare(mux: &Mux, tries: usize) -> Result<(), PgError> {
        let names = names(tries);
        let (x, s) = (Mode::Exclusive, Mode::Shared);
        let statements = [
            (names.try_lock[0], sql::try_lock(x)),
            (names.try_lock[1], sql::try_lock(s)),
            (names.try_lock_fenced[0], sql::try_lock_fenced(x)),
            (names.try_lock_fenced[1], sql::try_lock_fenced(s)),
            (names.unlock[0], sql::unlock(x)),
            (names.unlock[1], sql::unlock(s)),
            (names.unlock_and_notify, sql::unlock_and_notify()),
        ];
        let request = |out: &mut Vec<u8>| {
            for (name, text) in &statements {
                frame::parse(out, name, text);
            }
            frame::sync(out);
        };
        run(mux, request, false).await.map(|_| ())
    }

    /// The session's mark, which its statements check.
    pub(crate) fn mark(&self) -> Mark {
        self.mark
    }

    /// Runs a prepared statement with `params`: the first value of its row.
    async fn execute(&self, statement: &str, params: &[&str]) -> Result<Value, PgError> {
        let request = |out: &mut Vec<u8>| frame::execute(out, statement, params);
        Ok(run(&self.mux, request, false).await?.value)
    }

    /// A simple query's rows (text).
    async fn query_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let request = |out: &mut Vec<u8>| frame::query(out, sql);
        Ok(run(&self.mux, request, true).await?.rows)
    }

    /// The try statement in `mode`: whether the lock was taken.
    pub(crate) async fn try_lock(&self, key: i64, mode: Mode) -> Result<bool, PgError> {
        let key = KeyText::new(key);
        let statement = self.names.try_lock[mode.index()];
        let value = self
            .execute(statement, &[key.as_str(), &self.mark_text])
            .await?;
        Ok(value == Value::Bool(true))
    }

    /// [`try_lock`](LockConn::try_lock) that mints a fencing token from `sequence` with
    /// the grant: `Some(token)` if the lock was taken.
    pub(crate) async fn try_lock_fenced(
        &self,
        key: i64,
        mode: Mode,
        sequence: &str,
    ) -> Result<Option<i64>, PgError> {
        let key = KeyText::new(key);
        let statement = self.names.try_lock_fenced[mode.index()];
        let params = [key.as_str(), sequence, &self.mark_text];
        Ok(match self.execute(statement, &params).await? {
            Value::Int(token) => Some(token),
            _ => None,
        })
    }

    /// The unlock in `mode`: whether the session held the lock. With `notify` (a semaphore
    /// permit's, exclusive), `NOTIFY` with that payload in the same statement.
    pub(crate) async fn unlock(
        &self,
        key: i64,
        mode: Mode,
        notify: Option<&str>,
    ) -> Result<bool, PgError> {
        let key = KeyText::new(key);
        let value = match notify {
            None => {
                let statement = self.names.unlock[mode.index()];
                self.execute(statement, &[key.as_str(), &self.mark_text])
                    .await?
            }
            Some(payload) => {
                debug_assert_eq!(mode, Mode::Exclusive, "permits are exclusive locks");
                let statement = self.names.unlock_and_notify;
                let params = [key.as_str(), payload, &self.mark_text];
                self.execute(statement, &params).await?
            }
        };
        Ok(value == Value::Bool(true))
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
        let request = |out: &mut Vec<u8>| frame::query(out, &sql);
        let answer = match self.mux.call(request, true).await {
            Ok(answer) => answer,
            Err(_) => {
                let error = frame::error_of(None).await;
                return Err(WaitFailed {
                    error,
                    granted: false,
                });
            }
        };
        // The lock statement's row comes first: an error after it came after the grant.
        if let Some(body) = &answer.error {
            let error = frame::error_of(Some(body)).await;
            let granted = answer.row_count > 0;
            return Err(WaitFailed { error, granted });
        }
        let last = answer
            .rows
            .last()
            .and_then(|row| row.first().cloned().flatten());
        Ok(last.and_then(|token| token.parse().ok()))
    }

    /// The advisory locks the server holds for this session, by key and mode; `Ok(None)`
    /// if the answer cannot be read (which cannot happen with a PostgreSQL server).
    pub(crate) async fn server_locks(&self) -> Result<Option<Vec<(i64, Mode)>>, PgError> {
        let rows = self.query_rows(&sql::server_locks(self.mark)).await?;
        let locks = rows.iter().map(|row| {
            let key = row.first()?.as_deref()?.parse().ok()?;
            Some((key, sql::mode_of(row.get(1)?.as_deref()?)))
        });
        Ok(locks.collect())
    }

    /// Unlocks each of `locks` once; how many of those unlocks found nothing held
    /// (`Ok(None)`: an unreadable answer).
    pub(crate) async fn unlock_each(&self, locks: &[(i64, Mode)]) -> Result<Option<u64>, PgError> {
        let rows = self.query_rows(&sql::unlock_each(locks, self.mark)).await?;
        let first = rows.first().and_then(|row| row.first()?.as_deref());
        Ok(first.and_then(|n| n.parse().ok()))
    }
}
