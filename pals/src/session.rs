//! [`Session`]: one database session and the locks it holds, kept in step with the server.
//!
//! A session is shared by many held locks (thousands of locks on a few connections) and
//! outlives any one of them, so a lock left on it by mistake stays held, for nobody, as long
//! as the session lives. Every lock statement therefore goes through the session's books:
//! one entry per key, made before the statement is sent and settled by its answer.
//!
//! **The invariant:** the advisory locks the server holds for a session are exactly the
//! session's entries in the `Held` state, except for keys whose statement is in flight
//! (`Taking`, `Releasing`) or whose outcome is not known yet (`Unknown`).
//!
//! A statement's outcome is unknown when it fails without ending the session (a cancel by
//! `pg_cancel_backend` or `statement_timeout` can come after `pg_try_advisory_lock` has
//! granted or `pg_advisory_unlock` has released), or when its caller goes away before the
//! answer. Such an entry is *reconciled* (`reconcile`): the session asks the server what it
//! holds (`pg_locks`, for its own pid) and unlocks every lock that no guard owns; callers
//! that wait on the outcome (a failed try, a failed unlock) answer only once it is settled.
//! If the question cannot be answered, the server lacks a lock a guard owns, or an unlock of
//! a lock it showed held finds nothing (seen after a cancelled unlock: PostgreSQL's own
//! books then disagree), the session is closed: the server frees whatever it holds, and the
//! guards of its locks report them lost. No path leaves a lock held for nobody on a live
//! session. The statements themselves, and how each books its outcome, are in `statements`.
//!
//! The server runs a session's statements in the order they were sent, so the answer to
//! that question reflects exactly the statements sent before it. Every lock statement is
//! therefore sent under the books' lock (its first poll queues it on the connection) and
//! numbered there; an entry whose last statement was sent after the question is left for
//! the next pass. (Their answers are *handled* in any order, by different tasks: the
//! numbers, not the time of handling, say what the question saw.)
//!
//! One session holds a key at most once: PostgreSQL's session locks are re-entrant, and a
//! session that holds a key takes it again at once, ahead of any waiter queued for it (a
//! shared holder would starve a writer). Pickers skip a session with an entry for the key.

use std::collections::HashMap;
use std::future::Future;
#[cfg(test)]
use std::pin::pin;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};

use crate::connection::{LockConn, SessionFacts};
use crate::deadline::within;
use crate::error::Error;
use crate::future::poll_once;
use crate::key::Mode;
use crate::loud;
use crate::metrics::Meter;

mod reconcile;
mod statements;

pub(crate) use statements::{SessionLock, Ticket};

/// One open database session and its books.
pub(crate) struct Session {
    conn: LockConn,
    books: Mutex<Books>,
    /// The pool's signal that a session may now suit a waiting picker.
    changed: Arc<Notify>,
    rt: Handle,
    /// How long the server may take to answer an instant statement: the connect timeout.
    answer_within: Duration,
    /// How long a fenced lock's `nextval` may wait for its sequence, in milliseconds (the
    /// session's own `lock_timeout`).
    token_within_ms: u64,
    /// Counts the locks lost when the session ends.
    meter: Meter,
    /// `true` once the session is over and the locks it held have been reported lost.
    losses_told: watch::Sender<bool>,
}

#[derive(Default)]
struct Books {
    entries: HashMap<i64, Entry>,
    /// Statements sent and not yet answered (or abandoned).
    in_flight: usize,
    /// Of those, unlocks (their entries are `Releasing`): an unlock never waits, so a
    /// statement sent behind it is answered about as soon as on an idle session.
    unlocks: usize,
    /// Taken for a lock wait: nothing else may be sent until the wait ends.
    dedicated: bool,
    /// A reconcile task is running.
    reconciling: bool,
    /// Another pass is wanted: something became unknown or suspect meanwhile.
    recheck: bool,
    /// How many lock statements (and questions) have been sent: their numbers.
    sent: u64,
    /// The number of the `pg_locks` question in flight, if one is.
    question: Option<u64>,
    /// Keys whose entries went away after the question in flight was sent: the answer
    /// may show them held, and that is no news.
    gone_since_question: Vec<i64>,
    /// When the session last fell idle (see [`Books::is_idle`]): set where it opens and
    /// wherever it can fall idle (a statement's end, an entry's removal, a reconcile's
    /// end), so that it is the start of the current idle time whenever the session is
    /// idle. The pool closes a session idle for long enough.
    idle_since: Option<Instant>,
}

struct Entry {
    mode: Mode,
    state: State,
    name: Arc<str>,
    since: Instant,
    /// The number of the last statement sent for this key; 0: none yet.
    last_sent: u64,
    /// A caller waiting for this unknown entry to be settled.
    settled: Option<oneshot::Sender<()>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The lock statement is in flight.
    Taking,
    /// The server holds the lock for a guard.
    Held,
    /// The unlock is in flight.
    Releasing,
    /// The outcome of its last statement is unknown, or nobody owns the lock any more.
    Unknown,
}

/// Whether a session may take a statement (see [`Session::fit_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Now, sent behind `in_flight` statements, `unlocks` of them unlocks.
    Now { in_flight: usize, unlocks: usize },
    /// Once the unlock of the key in flight on it has ended (one session holds a key at
    /// most once, so not before): an answer away.
    AfterUnlock,
    /// Not now: it waits for a lock, or has the key taken, held or unknown.
    No,
}

/// A failed statement: the error, and whether trying again (elsewhere) may succeed.
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) retryable: bool,
}

impl Failure {
    pub(crate) fn fatal(error: Error) -> Failure {
        Failure {
            error,
            retryable: false,
        }
    }

    /// A session could not be had: opening one failed. A set-up cut short by cancels may
    /// pass on another try; anything else is the answer.
    pub(crate) fn no_session(error: Error) -> Failure {
        Failure {
            retryable: error.is_cancel(),
            error,
        }
    }
}

/// How long a session waits for the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// For the answer to an instant statement: the connect timeout.
    pub(crate) answer_within: Duration,
    /// For a fenced lock's `nextval`, in milliseconds: the session's `lock_timeout`.
    pub(crate) token_within_ms: u64,
}

impl Session {
    /// A session on `conn`, watched: its held locks are logged and counted as lost when it
    /// ends, and pinged every `heartbeat` while it holds any. Call on the library's runtime.
    pub(crate) fn start(
        conn: LockConn,
        changed: Arc<Notify>,
        limits: Limits,
        heartbeat: Option<Duration>,
        meter: Meter,
    ) -> Arc<Session> {
        let books = Books {
            idle_since: Some(Instant::now()),
            ..Books::default()
        };
        let session = Arc::new(Session {
            conn,
            books: Mutex::new(books),
            changed,
            rt: Handle::current(),
            answer_within: limits.answer_within,
            token_within_ms: limits.token_within_ms,
            meter,
            losses_told: watch::Sender::new(false),
        });
        let weak = Arc::downgrade(&session);
        tokio::spawn(watch_death(weak.clone(), session.conn.watch().subscribe()));
        if let Some(interval) = heartbeat {
            let holding = move || weak.upgrade().map(|session| session.holds_any());
            tokio::spawn(session.conn.heartbeat(interval, holding));
        }
        session
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the server told of this session when it opened.
    pub(crate) fn facts(&self) -> SessionFacts {
        self.conn.facts()
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.conn.is_closed()
    }

    /// Reads `true` once the session is over (and every lock it held is gone).
    pub(crate) fn dead(&self) -> watch::Receiver<bool> {
        self.conn.watch().subscribe()
    }

    /// Reads `true` once the session is over and the locks it held have been reported
    /// lost: what a guard hears, so that a program that ends when it hears of a loss does
    /// not end before the report (which may go to stderr: see `loud`).
    pub(crate) fn losses_told(&self) -> watch::Receiver<bool> {
        self.losses_told.subscribe()
    }

    /// Closes the session: the server frees what it holds; its guards see their locks lost.
    pub(crate) fn close(&self, why: &str) {
        tracing::debug!(pid = self.conn.pid, why, "pals: closing a session");
        self.conn.close(why);
    }

    fn holds_any(&self) -> bool {
        self.books()
            .entries
            .values()
            .any(|e| e.state == State::Held)
    }

    /// Whether this session may take an instant statement on `key`, and how loaded it is.
    pub(crate) fn fit_for(&self, key: i64) -> Fit {
        let books = self.books();
        if books.dedicated {
            return Fit::No;
        }
        match books.entries.get(&key).map(|entry| entry.state) {
            None => Fit::Now {
                in_flight: books.in_flight,
                unlocks: books.unlocks,
            },
            Some(State::Releasing) => Fit::AfterUnlock,
            Some(_) => Fit::No,
        }
    }

    /// For a lock wait: fit only when idle (see [`is_idle`](Session::is_idle)).
    pub(crate) fn fit_for_wait(&self) -> Fit {
        match self.is_idle() {
            true => Fit::Now {
                in_flight: 0,
                unlocks: 0,
            },
            false => Fit::No,
        }
    }

    /// Free for a lock wait: no locks, nothing in flight, nothing to settle.
    pub(crate) fn is_idle(&self) -> bool {
        self.books().is_idle()
    }

    /// When the session fell idle, if it is idle (see [`is_idle`](Session::is_idle)).
    /// Only a picker makes an idle session busy: asked under the pool's lock, the answer
    /// holds until that lock is let go.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        let mut books = self.books();
        if !books.is_idle() {
            return None;
        }
        Some(*books.idle_since.get_or_insert_with(Instant::now))
    }

    /// Ends a statement's count in flight; wakes pickers if the session fell idle.
    fn end_flight(&self, books: &mut Books) {
        books.in_flight -= 1;
        if books.in_flight == 0 {
            books.note_if_idle();
            self.changed.notify_waiters();
        }
    }

    /// Sends `statement` now, under the books' lock (its first poll queues it on the
    /// connection), and numbers it for `key` (`None`: the question). Returns its number,
    /// and its answer if that poll already had one (a closed connection).
    fn send<F: Future + ?Sized>(
        books: &mut Books,
        key: Option<i64>,
        statement: Pin<&mut F>,
    ) -> (u64, Poll<F::Output>) {
        let first = poll_once(statement);
        books.sent += 1;
        let number = books.sent;
        if let Some(entry) = key.and_then(|key| books.entries.get_mut(&key)) {
            entry.last_sent = number;
        }
        (number, first)
    }

    /// Removes `key`'s entry: its lock is known not to be held. Wakes pickers (the session
    /// may now take the key); true if it did.
    fn forget(&self, books: &mut Books, key: i64) -> bool {
        let Some(entry) = books.remove(key) else {
            return false;
        };
        books.note_if_idle();
        if let Some(settled) = entry.settled {
            let _ = settled.send(());
        }
        self.changed.notify_waiters();
        true
    }

    /// [`end_flight`](Session::end_flight) and [`forget`](Session::forget) for one
    /// statement's end, with one wake-up for both.
    fn end_flight_and_forget(&self, books: &mut Books, key: i64) {
        books.in_flight -= 1;
        if !self.forget(books, key) && books.in_flight == 0 {
            books.note_if_idle();
            self.changed.notify_waiters();
        }
    }

    /// Marks `key`'s outcome unknown and makes sure a reconcile settles it.
    fn mark_unknown(self: &Arc<Self>, books: &mut Books, key: i64) {
        if let Some(entry) = books.entries.get_mut(&key) {
            entry.state = State::Unknown;
        }
        self.want_reconcile(books);
    }

    /// Marks `key`'s outcome unknown; the receiver hears when the reconcile has settled it
    /// (and errs if the session closed instead).
    fn settle_later(self: &Arc<Self>, books: &mut Books, key: i64) -> oneshot::Receiver<()> {
        let (tell, settled) = oneshot::channel();
        if let Some(entry) = books.entries.get_mut(&key) {
            entry.settled = Some(tell);
        }
        self.mark_unknown(books, key);
        settled
    }

    /// Makes sure a pass of the reconcile starts after now.
    fn want_reconcile(self: &Arc<Self>, books: &mut Books) {
        books.recheck = true;
        if !books.reconciling {
            books.reconciling = true;
            self.rt.spawn(Arc::clone(self).reconcile());
        }
    }

    /// The answer to a statement sent with [`Session::send`] (`first`: what that first
    /// poll gave), awaited for at most the connect timeout; `None` if the server does not
    /// answer in time.
    async fn answer<F: Future + ?Sized>(
        &self,
        first: Poll<F::Output>,
        statement: Pin<&mut F>,
    ) -> Option<F::Output> {
        match first {
            Poll::Ready(answer) => Some(answer),
            Poll::Pending => within(&self.rt, self.answer_within, statement).await,
        }
    }
}

impl Books {
    /// Carries nothing: no entry, nothing in flight, no wait, no reconcile.
    fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.in_flight == 0 && !self.dedicated && !self.reconciling
    }

    /// Notes the start of an idle time, if the change just made left the session idle.
    /// Called wherever a session can fall idle; the session was busy just before, so
    /// this is the start of its idle time.
    fn note_if_idle(&mut self) {
        if self.is_idle() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Removes `key`'s entry, noting the key if the question in flight may still show it
    /// held (its last statement was sent after the question).
    fn remove(&mut self, key: i64) -> Option<Entry> {
        let entry = self.entries.remove(&key)?;
        if self
            .question
            .is_some_and(|question| entry.last_sent > question)
        {
            self.gone_since_question.push(key);
        }
        Some(entry)
    }
}

/// Reports the locks a session held when it ended, then tells their guards, and settles
/// what waits on it.
async fn watch_death(session: Weak<Session>, mut dead: watch::Receiver<bool>) {
    let _ = dead.wait_for(|dead| *dead).await;
    let Some(session) = session.upgrade() else {
        return;
    };
    let entries = std::mem::take(&mut session.books().entries);
    for (key, lost) in entries {
        if lost.state == State::Held {
            let (held, why) = (lost.since.elapsed(), session.conn.watch().why());
            loud::lock_lost(&lost.name, key, held, session.conn.pid, why);
            session.meter.lost(&lost.name);
        }
    }
    session.losses_told.send_replace(true);
    session.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taking(key: i64) -> (i64, Entry) {
        let entry = Entry {
            mode: Mode::Exclusive,
            state: State::Taking,
            name: Arc::from("app.name"),
            since: Instant::now(),
            last_sent: 0,
            settled: None,
        };
        (key, entry)
    }

    #[test]
    fn statements_are_numbered_in_the_order_they_are_sent() {
        let mut books = Books::default();
        books.entries.extend([taking(1), taking(2)]);
        let (first, answer) = Session::send(&mut books, Some(1), pin!(std::future::ready(7)));
        assert_eq!(answer, Poll::Ready(7), "sent by the first poll");
        let (question, _) = Session::send(&mut books, None, pin!(std::future::ready(())));
        let (third, _) = Session::send(&mut books, Some(2), pin!(std::future::ready(())));
        assert!(first < question && question < third);
        assert_eq!(books.entries[&1].last_sent, first);
        assert_eq!(books.entries[&2].last_sent, third);
    }

    #[test]
    fn idle_time_starts_when_the_last_thing_carried_ends() {
        let mut books = Books::default();
        books.entries.extend([taking(1)]);
        books.in_flight = 1;
        books.note_if_idle();
        assert_eq!(books.idle_since, None, "busy");
        books.in_flight = 0;
        books.note_if_idle();
        assert_eq!(books.idle_since, None, "an entry is carried");
        books.remove(1);
        books.reconciling = true;
        books.note_if_idle();
        assert_eq!(books.idle_since, None, "a reconcile runs");
        books.reconciling = false;
        books.dedicated = true;
        books.note_if_idle();
        assert_eq!(books.idle_since, None, "a wait");
        books.dedicated = false;
        let before = Instant::now();
        books.note_if_idle();
        assert!(books.is_idle() && books.idle_since >= Some(before));
    }

    #[test]
    fn an_entry_removed_after_the_question_is_noted() {
        let mut books = Books::default();
        books.entries.extend([taking(1), taking(2)]);
        let _ = Session::send(&mut books, Some(1), pin!(std::future::ready(())));
        let (question, _) = Session::send(&mut books, None, pin!(std::future::ready(())));
        books.question = Some(question);
        let _ = Session::send(&mut books, Some(2), pin!(std::future::ready(())));
        assert!(books.remove(1).is_some());
        assert!(books.remove(2).is_some());
        assert_eq!(books.gone_since_question, [2]);
        assert!(books.remove(2).is_none());
    }
}
