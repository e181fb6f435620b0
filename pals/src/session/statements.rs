//! The lock statements of a session: [`Ticket`] (a reserved lock statement) and
//! [`SessionLock`] (a held lock and its unlock), each booking its outcome, known or not.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tokio::sync::watch;

use super::{Entry, Failure, Session, State};
use crate::connection::WaitFailed;
use crate::deadline::until;
use crate::error::{ends_session, is_cancel, is_lock_timeout, is_not_ours};
use crate::error::{Error, PgError};
use crate::key::Mode;
use crate::loud::session_failed;
use crate::sql::Mint;

/// A reserved lock statement on one session. Dropped before it is sent, it gives its entry
/// back; dropped after (the caller went away), the outcome is unknown and reconciled, or,
/// for a wait, the session is cancelled and closed.
pub(crate) struct Ticket {
    session: Arc<Session>,
    key: i64,
    mode: Mode,
    dedicated: bool,
    /// The sequence that mints this lock's fencing token; `None`: not fenced.
    fence: Option<Arc<str>>,
    phase: Phase,
}

#[derive(PartialEq, Eq)]
enum Phase {
    Reserved,
    Sent,
    Done,
}

/// What a lock statement answered, as [`Ticket::book`] reads it.
enum Answer {
    /// Taken, with its fencing token if the lock is fenced.
    Taken(Option<u64>),
    Busy,
    /// The statement failed; the lock may have been granted all the same.
    /// `busy_on_timeout`: a lock timeout is the wait's own (the lock stayed busy); else it
    /// came after the grant, from the fencing token's sequence.
    Failed {
        error: PgError,
        busy_on_timeout: bool,
    },
}

impl Session {
    /// Reserves this session for a lock statement on `key`: the entry exists (`Taking`)
    /// before anything is sent. `dedicated`: for a wait, which nothing else may share.
    /// `fence`: the sequence that mints a fencing token with the grant.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        key: i64,
        mode: Mode,
        name: &Arc<str>,
        dedicated: bool,
        fence: Option<&Arc<str>>,
    ) -> Ticket {
        let mut books = self.books();
        let entry = Entry {
            mode,
            state: State::Taking,
            name: Arc::clone(name),
            since: Instant::now(),
            last_sent: 0,
            settled: None,
        };
        let previous = books.entries.insert(key, entry);
        debug_assert!(previous.is_none(), "one entry per key per session");
        books.in_flight += 1;
        books.dedicated |= dedicated;
        Ticket {
            session: Arc::clone(self),
            key,
            mode,
            dedicated,
            fence: fence.cloned(),
            phase: Phase::Reserved,
        }
    }
}

impl Ticket {
    /// The try statement: `Ok(Some)` taken, `Ok(None)` busy.
    pub(crate) async fn try_lock(self) -> Result<Option<SessionLock>, Failure> {
        match self.fence.clone() {
            None => self.try_unfenced().await,
            Some(sequence) => self.try_fenced(&sequence).await,
        }
    }

    async fn try_unfenced(mut self) -> Result<Option<SessionLock>, Failure> {
        let session = Arc::clone(&self.session);
        let statement = session.conn.try_lock(self.key, self.mode);
        let mut statement = pin!(statement);
        let first = self.send(statement.as_mut());
        let answer = session.answer(first, statement).await;
        self.book(answer.map(|answer| match answer {
            Ok(true) => Answer::Taken(None),
            Ok(false) => Answer::Busy,
            Err(error) => Answer::Failed {
                error,
                busy_on_timeout: false,
            },
        }))
        .await
    }

    async fn try_fenced(mut self, sequence: &str) -> Result<Option<SessionLock>, Failure> {
        let session = Arc::clone(&self.session);
        let statement = session.conn.try_lock_fenced(self.key, self.mode, sequence);
        let mut statement = pin!(statement);
        let first = self.send(statement.as_mut());
        let answer = session.answer(first, statement).await;
        self.book(answer.map(|answer| match answer {
            Ok(Some(token)) => Answer::Taken(Some(token as u64)),
            Ok(None) => Answer::Busy,
            // A try never waits for the lock: a lock timeout is the token's.
            Err(error) => Answer::Failed {
                error,
                busy_on_timeout: false,
            },
        }))
        .await
    }

    /// Waits for the lock, `lock_timeout_ms` at most (0: no limit); the server must answer
    /// by `answer_by` (`None`: no limit), or the session is closed.
    pub(crate) async fn wait_lock(
        mut self,
        lock_timeout_ms: u64,
        answer_by: Option<Instant>,
    ) -> Result<Option<SessionLock>, Failure> {
        let session = Arc::clone(&self.session);
        let fence = self.fence.clone();
        let mint = fence.as_deref().map(|sequence| Mint {
            sequence,
            within_ms: session.token_within_ms,
        });
        let statement = session
            .conn
            .wait_lock(self.key, self.mode, lock_timeout_ms, mint);
        let mut statement = pin!(statement);
        let answer = match (self.send(statement.as_mut()), answer_by) {
            (Poll::Ready(answer), _) => Some(answer),
            (Poll::Pending, None) => Some(statement.await),
            (Poll::Pending, Some(by)) => until(&session.rt, by, statement).await,
        };
        self.book(answer.map(|answer| match answer {
            Ok(token) => Answer::Taken(token.map(|token| token as u64)),
            Err(WaitFailed { error, granted }) => Answer::Failed {
                error,
                busy_on_timeout: !granted,
            },
        }))
        .await
    }

    /// Sends the statement (see [`Session::send`]); from now on its outcome is the server's.
    fn send<F: Future + ?Sized>(&mut self, statement: Pin<&mut F>) -> Poll<F::Output> {
        let mut books = self.session.books();
        self.phase = Phase::Sent;
        Session::send(&mut books, Some(self.key), statement).1
    }

    /// Books the answer (`None`: no answer in time, and the session is closed).
    async fn book(mut self, answer: Option<Answer>) -> Result<Option<SessionLock>, Failure> {
        self.phase = Phase::Done;
        let session = Arc::clone(&self.session);
        let Some(answer) = answer else {
            session.close("the lock statement went unanswered");
            let error = Error::no_answer("the lock statement", session.answer_within);
            return Err(Failure::fatal(error));
        };
        let (error, busy_on_timeout) = match answer {
            Answer::Taken(token) => return Ok(Some(self.taken(token))),
            Answer::Busy => {
                self.forget();
                return Ok(None);
            }
            Answer::Failed {
                error,
                busy_on_timeout,
            } => (error, busy_on_timeout),
        };
        if ends_session(&error) {
            self.end_statement(&mut session.books());
            session.close(&session_failed("the lock statement failed", &error));
            if is_not_ours(&error) {
                return Err(Failure::fatal(Error::not_ours()));
            }
            let error = Error::Database(error);
            return Err(Failure {
                error,
                retryable: true,
            });
        }
        self.unknown(error, busy_on_timeout).await
    }

    /// Books a grant: the lock is held for the new [`SessionLock`].
    fn taken(&self, token: Option<u64>) -> SessionLock {
        let session = &self.session;
        let mut books = session.books();
        self.end_statement(&mut books);
        if let Some(entry) = books.entries.get_mut(&self.key) {
            entry.state = State::Held;
            entry.since = Instant::now();
        }
        SessionLock {
            session: Arc::clone(session),
            key: self.key,
            mode: self.mode,
            owned: true,
            token,
            notify: None,
        }
    }

    /// Books a busy answer: nothing is held.
    fn forget(&self) {
        let mut books = self.session.books();
        self.end_dedication(&mut books);
        self.session.end_flight_and_forget(&mut books, self.key);
    }

    /// Books the end of the statement, its entry left as it is.
    fn end_statement(&self, books: &mut super::Books) {
        self.end_dedication(books);
        self.session.end_flight(books);
    }

    /// Books an error that leaves the session alive: the lock may have been granted before
    /// it (a cancel acted on late, a lock timeout racing the grant, a token not drawn), so
    /// the answer waits until the reconcile has settled what the session holds. The caller
    /// never returns while the session holds the lock for nobody.
    async fn unknown(
        &self,
        error: PgError,
        busy_on_timeout: bool,
    ) -> Result<Option<SessionLock>, Failure> {
        let session = &self.session;
        let settled = {
            let mut books = session.books();
            self.end_statement(&mut books);
            session.settle_later(&mut books, self.key)
        };
        let _ = settled.await;
        if is_lock_timeout(&error) {
            if busy_on_timeout {
                return Ok(None);
            }
            tracing::warn!(key = self.key, pid = session.conn.pid, sequence = ?self.fence, "pals: a fenced lock was granted, but its token could not be drawn in time (another session holds a lock on the sequence: ALTER SEQUENCE, LOCK?); the lock was let go");
        }
        Err(Failure {
            retryable: is_cancel(&error),
            error: Error::Database(error),
        })
    }

    /// A wait's session is shared again once the wait has its answer.
    fn end_dedication(&self, books: &mut super::Books) {
        if self.dedicated {
            books.dedicated = false;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let session = &self.session;
        match self.phase {
            Phase::Done => {}
            Phase::Reserved => self.forget(),
            Phase::Sent if self.dedicated => {
                // The server does not notice a vanished client while it waits for a lock
                // (before PostgreSQL 14's client checks): cancel the wait, and close, which
                // frees a lock granted meanwhile. The session held nothing else.
                session.close("a lock wait was abandoned");
                let session = Arc::clone(session);
                let limit = session.answer_within;
                session.rt.clone().spawn(async move {
                    let _ = tokio::time::timeout(limit, session.conn.cancel()).await;
                });
            }
            Phase::Sent => {
                let mut books = session.books();
                session.end_flight(&mut books);
                session.mark_unknown(&mut books, self.key);
            }
        }
    }
}

/// A lock the server holds on a session, for a guard. Dropped without a release, or while
/// its unlock is in flight, nobody owns the lock any more: the reconcile unlocks it.
pub(crate) struct SessionLock {
    session: Arc<Session>,
    key: i64,
    mode: Mode,
    /// The lock may still be held for this guard: until the unlock's answer is in.
    owned: bool,
    /// The fencing token minted with the grant; `None`: not fenced.
    pub(crate) token: Option<u64>,
    /// A semaphore permit's `NOTIFY` payload, sent by the unlock.
    pub(crate) notify: Option<Arc<str>>,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let session = &self.session;
        let mut books = session.books();
        let state = books.entries.get(&self.key).map(|entry| entry.state);
        if state == Some(State::Releasing) {
            books.unlocks -= 1;
            session.end_flight(&mut books); // the unlock's answer will never be read
        }
        if matches!(state, Some(State::Held | State::Releasing)) {
            session.mark_unknown(&mut books, self.key);
        }
    }
}

impl SessionLock {
    /// True if the lock may be handed over in memory to another guard of this process:
    /// a plain exclusive lock (a fenced grant needs a new token, a semaphore permit's
    /// unlock tells other processes), held on a live session.
    pub(crate) fn can_be_handed_over(&self) -> bool {
        let plain = self.mode == Mode::Exclusive && self.token.is_none() && self.notify.is_none();
        plain && self.owned && !self.is_lost() && {
            let books = self.session.books();
            let state = books.entries.get(&self.key).map(|entry| entry.state);
            state == Some(State::Held)
        }
    }

    /// True once the lock is known lost with its session.
    pub(crate) fn is_lost(&self) -> bool {
        self.session.is_dead()
    }

    /// The backend pid of the session.
    pub(crate) fn pid(&self) -> i32 {
        self.session.conn.pid
    }

    /// Reads `true` once the lock is lost with its session, and reported lost.
    pub(crate) fn dead(&self) -> watch::Receiver<bool> {
        self.session.losses_told()
    }

    /// Unlocks. `Ok(true)`: released; `Ok(false)`: it was no longer held (its session
    /// ended); `Err`: the server did not confirm, and the session was closed, which frees
    /// the lock. Dropped mid-way, the unlock's outcome is reconciled.
    pub(crate) async fn release(mut self) -> Result<bool, Error> {
        let (session, key, mode) = (Arc::clone(&self.session), self.key, self.mode);
        let notify = self.notify.take();
        let statement = session.conn.unlock(key, mode, notify.as_deref());
        let mut statement = pin!(statement);
        let Some(first) = self.send_unlock(statement.as_mut()) else {
            self.owned = false;
            return Ok(false);
        };
        let answer = session.answer(first, statement).await;
        self.owned = false;
        let Some(answer) = answer else {
            session.close("the unlock went unanswered");
            return Err(Error::no_answer("the unlock", session.answer_within));
        };
        let settled = {
            let mut books = session.books();
            books.unlocks -= 1;
            if answer.is_ok() {
                session.end_flight_and_forget(&mut books, key);
            } else {
                session.end_flight(&mut books);
            }
            match answer {
                Ok(true) => return Ok(true),
                Ok(false) => {
                    // The server did not hold what the books said: check the rest.
                    session.want_reconcile(&mut books);
                    return Ok(false);
                }
                Err(error) if ends_session(&error) => {
                    drop(books);
                    session.close(&session_failed("the unlock failed", &error));
                    // Found shared, the lock may be held on a server session pals cannot
                    // reach: not released as far as anyone can tell.
                    if is_not_ours(&error) {
                        return Err(Error::not_ours());
                    }
                    return Ok(false);
                }
                Err(error) => (session.settle_later(&mut books, key), error),
            }
        };
        // The unlock may or may not have run: released once the reconcile settles it.
        let (settled, error) = settled;
        match settled.await {
            Ok(()) => Ok(true),
            Err(_) => Err(Error::Database(error)),
        }
    }

    /// Marks the lock `Releasing` and sends its unlock; `None` if it is no longer held
    /// (its session ended, or it was never booked held).
    fn send_unlock<F: Future + ?Sized>(&self, statement: Pin<&mut F>) -> Option<Poll<F::Output>> {
        let session = &self.session;
        let mut books = session.books();
        let entry = books
            .entries
            .get_mut(&self.key)
            .filter(|_| !session.is_dead())?;
        if entry.state != State::Held {
            return None;
        }
        entry.state = State::Releasing;
        books.in_flight += 1;
        books.unlocks += 1;
        Some(Session::send(&mut books, Some(self.key), statement).1)
    }
}
