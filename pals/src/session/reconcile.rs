//! How a session settles what it does not know: it asks the server what it holds and
//! unlocks what no guard owns (see the parent module for the invariant and the ordering).

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::{Books, Entry, Session, State};
use crate::error::is_cancel;
use crate::key::Mode;
use crate::loud::session_failed;

/// The longest pause between tries of a reconcile cut short by cancels.
const RECONCILE_BACKOFF: Duration = Duration::from_millis(100);

/// How a pass of the reconcile ended.
enum Pass {
    /// Every entry is known: the reconcile stops.
    Done,
    /// Something became unknown meanwhile, or a cancel was outlasted: another pass.
    Again,
    /// What the session holds cannot be settled: close it, for this reason.
    Close(String),
}

impl Session {
    /// Asks the server what this session holds and settles every unknown entry, pass after
    /// pass until none is left; closes the session if that cannot be done.
    pub(super) async fn reconcile(self: Arc<Self>) {
        // Cancels (an operator's script, a role's statement_timeout) are outlasted for up to
        // the connect timeout, backing off, before the session is given up.
        let mut cancels = Cancels::new(self.answer_within);
        loop {
            match self.pass(&mut cancels).await {
                Pass::Again => continue,
                Pass::Done => return,
                Pass::Close(why) => return self.close(&why),
            }
        }
    }

    /// One pass: the question, then the unlocks of what the server holds for nobody.
    async fn pass(&self, cancels: &mut Cancels) -> Pass {
        let locks = self.conn.server_locks();
        let mut locks = pin!(locks);
        let first = {
            let mut books = self.books();
            books.recheck = false;
            let (question, first) = Session::send(&mut books, None, locks.as_mut());
            books.question = Some(question);
            first
        };
        let held = match self.answer(first, locks).await {
            Some(Ok(Some(held))) => held,
            Some(Err(error)) if is_cancel(&error) && cancels.outlast().await => return Pass::Again,
            Some(Err(error)) => {
                return Pass::Close(session_failed("its locks could not be read", &error))
            }
            Some(Ok(None)) | None => return Pass::Close("its locks could not be read".into()),
        };
        let unowned = match self.compare(&held) {
            Ok(unowned) => unowned,
            Err(why) => return Pass::Close(why),
        };
        if !unowned.is_empty() {
            if let Some(pass) = self.unlock_unowned(&unowned, cancels).await {
                return pass;
            }
        }
        let mut books = self.books();
        if !books.all_known() {
            return Pass::Again;
        }
        books.reconciling = false;
        books.note_if_idle();
        drop(books);
        self.changed.notify_waiters();
        Pass::Done
    }

    /// Unlocks the locks the server holds for nobody (no statement for these keys is sent
    /// meanwhile: each has an unknown entry) and forgets them; `Some` if the pass ends here.
    async fn unlock_unowned(&self, unowned: &[(i64, Mode)], cancels: &mut Cancels) -> Option<Pass> {
        let unlocks = pin!(self.conn.unlock_each(unowned));
        let why = match self.answer(Poll::Pending, unlocks).await {
            Some(Ok(Some(0))) => {
                let mut books = self.books();
                for (key, _) in unowned {
                    self.forget(&mut books, *key);
                }
                return None;
            }
            // Some unlocks may have run: the next pass reads what is left.
            Some(Err(error)) if is_cancel(&error) && cancels.outlast().await => {
                return Some(Pass::Again)
            }
            Some(Err(error)) => session_failed("its unowned locks could not be unlocked", &error),
            // The question showed them held, and nothing was sent for them since. Seen
            // after a cancelled unlock: PostgreSQL's own books for the lock disagree, and
            // only the session's end frees it for sure.
            Some(Ok(Some(not_held))) => {
                format!("{not_held} of its unowned locks were gone when it unlocked them")
            }
            Some(Ok(None)) => "its unlocks gave no count".into(),
            None => "its unlocks went unanswered".into(),
        };
        Some(Pass::Close(why))
    }

    /// Compares the books with the answer to the question in flight: forgets unknown
    /// entries the server does not hold and returns the locks it holds for nobody (each
    /// with an unknown entry, so that no picker takes the key meanwhile). `Err`: the server
    /// lacks a lock a guard owns.
    fn compare(&self, held: &[(i64, Mode)]) -> Result<Vec<(i64, Mode)>, String> {
        let mut books = self.books();
        let read = books.read_answer(held)?;
        for &(key, _) in &read.untracked {
            tracing::warn!(
                key,
                pid = self.conn.pid,
                "pals: a session held a lock it had no entry for; unlocking it"
            );
        }
        for key in read.gone {
            self.forget(&mut books, key);
        }
        Ok(read.unowned)
    }
}

/// What the answer to a `pg_locks` question says about the books.
#[derive(Debug, Default, PartialEq)]
struct Read {
    /// Held by the server for nobody: unknown entries it holds, and the untracked.
    unowned: Vec<(i64, Mode)>,
    /// Held by the server with no entry at all (also in `unowned`).
    untracked: Vec<(i64, Mode)>,
    /// Unknown entries the server does not hold: settled, not held.
    gone: Vec<i64>,
}

impl Books {
    /// True when a reconcile may stop: no entry is unknown, and no pass was asked for
    /// since the last question was sent.
    fn all_known(&self) -> bool {
        !self.recheck && !self.entries.values().any(|e| e.state == State::Unknown)
    }

    /// Reads the answer `held` to the question in flight. Only entries whose last
    /// statement was sent before the question are judged: the answer shows those exactly.
    /// Untracked keys the server holds get an unknown entry here, so that no picker takes
    /// them until they are unlocked. `Err`: a held entry the server lacks.
    fn read_answer(&mut self, held: &[(i64, Mode)]) -> Result<Read, String> {
        let question = self.question.take().unwrap_or(0);
        // Looked up once per entry, under the books' lock: a session may carry thousands.
        let gone_since: HashSet<i64> = std::mem::take(&mut self.gone_since_question)
            .into_iter()
            .collect();
        let by_key: HashMap<i64, Mode> = held.iter().copied().collect();
        let on_server = |key: i64| by_key.get(&key).copied();
        let mut read = Read::default();
        for (&key, entry) in &self.entries {
            if entry.last_sent > question {
                continue; // sent after the question: the answer does not show it
            }
            match entry.state {
                State::Held if on_server(key) != Some(entry.mode) => {
                    return Err(format!(
                        "the server no longer held {} ({key}) for it",
                        entry.name
                    ));
                }
                State::Unknown => match on_server(key) {
                    Some(mode) => read.unowned.push((key, mode)),
                    None => read.gone.push(key),
                },
                // In flight when asked (or never sent): settled by its own answer.
                State::Held | State::Taking | State::Releasing => {}
            }
        }
        for &(key, mode) in held {
            if !self.entries.contains_key(&key) && !gone_since.contains(&key) {
                let entry = Entry {
                    mode,
                    state: State::Unknown,
                    name: Arc::from(key.to_string()),
                    since: Instant::now(),
                    last_sent: question,
                    settled: None,
                };
                self.entries.insert(key, entry);
                read.unowned.push((key, mode));
                read.untracked.push((key, mode));
            }
        }
        Ok(read)
    }
}

/// How long a reconcile goes on trying through cancels.
struct Cancels {
    until: Option<Instant>,
    pause: Duration,
}

impl Cancels {
    fn new(limit: Duration) -> Cancels {
        Cancels {
            until: Instant::now().checked_add(limit),
            pause: Duration::from_millis(1),
        }
    }

    /// After a cancel: pauses and says true if there is time for another try. (Runs in the
    /// reconcile task, on the library's runtime.)
    async fn outlast(&mut self) -> bool {
        let resume = Instant::now() + self.pause;
        if self.until.is_some_and(|until| resume > until) {
            return false;
        }
        tokio::time::sleep_until(resume.into()).await;
        self.pause = (self.pause * 2).min(RECONCILE_BACKOFF);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Books with these entries (key, state, number of its last statement), after
    /// `sent` statements, the last of them the question.
    fn books(entries: &[(i64, State, u64)], sent: u64) -> Books {
        let mut books = Books {
            sent,
            question: Some(sent),
            ..Books::default()
        };
        for &(key, state, last_sent) in entries {
            let entry = Entry {
                mode: Mode::Exclusive,
                state,
                name: Arc::from(format!("app.{key}")),
                since: Instant::now(),
                last_sent,
                settled: None,
            };
            books.entries.insert(key, entry);
        }
        books
    }

    const X: Mode = Mode::Exclusive;

    #[test]
    fn cancels_are_outlasted_backing_off_until_the_limit() {
        let rt = crate::runtime::handle().unwrap();
        let _entered = rt.enter(); // the timers of the library's runtime
        crate::runtime::block_on(async {
            assert!(!Cancels::new(Duration::ZERO).outlast().await);
            let mut long = Cancels::new(Duration::from_secs(60));
            let started = Instant::now();
            for _ in 0..8 {
                assert!(long.outlast().await);
            }
            // 1 + 2 + 4 + ... + 64 ms, then the cap.
            assert!(started.elapsed() >= Duration::from_millis(227));
            assert_eq!(long.pause, RECONCILE_BACKOFF);
            // 1 + 2 + 4 + 8 + 16 ms fit in 50 ms; the next pause would not.
            let mut short = Cancels::new(Duration::from_millis(50));
            let mut tries = 0;
            while short.outlast().await {
                tries += 1;
                assert!(tries <= 5, "outlasted past its limit");
            }
        });
    }

    #[test]
    fn a_reconcile_goes_on_while_anything_is_unknown_or_asked_for() {
        assert!(books(&[(1, State::Held, 1), (2, State::Taking, 0)], 5).all_known());
        assert!(!books(&[(1, State::Held, 1), (2, State::Unknown, 6)], 5).all_known());
        let mut asked = books(&[(1, State::Held, 1)], 5);
        asked.recheck = true;
        assert!(!asked.all_known());
    }

    #[test]
    fn unknown_entries_are_settled_by_the_answer() {
        let mut books = books(&[(1, State::Unknown, 3), (2, State::Unknown, 4)], 5);
        let read = books.read_answer(&[(1, X)]).unwrap();
        assert_eq!(read.unowned, [(1, X)]);
        assert_eq!(read.gone, [2]);
        assert!(read.untracked.is_empty());
        assert_eq!(books.question, None);
    }

    #[test]
    fn statements_sent_after_the_question_are_not_judged_by_it() {
        // 1 was taken after the question (the answer could not show it); 2 was released
        // after it (the answer still shows it); 3 became unknown after it.
        let mut books = books(
            &[
                (1, State::Held, 6),
                (2, State::Releasing, 7),
                (3, State::Unknown, 8),
            ],
            5,
        );
        let read = books.read_answer(&[(2, X), (3, X)]).unwrap();
        assert_eq!(read, Read::default());
    }

    #[test]
    fn a_held_entry_the_server_lacks_is_an_error() {
        let mut books = books(&[(1, State::Held, 2)], 5);
        assert!(books.read_answer(&[]).unwrap_err().contains("app.1"));
        let mut books = self::books(&[(1, State::Held, 2)], 5);
        let shared = [(1, Mode::Shared)];
        assert!(
            books.read_answer(&shared).is_err(),
            "held in the other mode"
        );
    }

    #[test]
    fn untracked_locks_are_unowned_unless_their_entry_went_after_the_question() {
        let mut books = books(&[(1, State::Taking, 0)], 5);
        books.gone_since_question = vec![3];
        let read = books.read_answer(&[(1, X), (2, X), (3, X)]).unwrap();
        assert_eq!(read.untracked, [(2, X)]);
        assert_eq!(read.unowned, [(2, X)]);
        // No picker may take it until it is unlocked.
        assert_eq!(books.entries[&2].state, State::Unknown);
        assert!(books.gone_since_question.is_empty());
    }
}
