//! How a session settles what it does not know: it asks the server what it holds and
//! unlocks what no guard owns (see the parent module for the invariant and the ordering).

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::{Entry, Session, State};
use crate::connection::is_cancel;
use crate::Mode;

/// The longest pause between tries of a reconcile cut short by cancels.
const RECONCILE_BACKOFF: Duration = Duration::from_millis(100);

impl Session {
    /// Asks the server what this session holds and settles every unknown entry, pass after
    /// pass until none is left; closes the session if that cannot be done.
    pub(super) async fn reconcile(self: Arc<Self>) {
        // Cancels (an operator's script, a role's statement_timeout) are outlasted for up to
        // the connect timeout, backing off, before the session is given up.
        let mut cancels = Cancels::new(self.answer_within);
        loop {
            let held = self.conn.held();
            let mut held = pin!(held);
            let first = {
                let mut books = self.books();
                books.recheck = false;
                let (question, first) = Session::send(&mut books, None, held.as_mut());
                books.question = Some(question);
                first
            };
            let answer = match first {
                Poll::Ready(answer) => Some(answer),
                Poll::Pending => self.answer(held).await,
            };
            let held = match answer {
                Some(Ok(Some(held))) => held,
                Some(Err(error)) if is_cancel(&error) && cancels.outlast().await => {
                    continue;
                }
                Some(Err(error)) => {
                    return self.close(&format!("its locks could not be read: {error}"));
                }
                Some(Ok(None)) | None => return self.close("its locks could not be read"),
            };
            let unowned = match self.compare(&held) {
                Ok(unowned) => unowned,
                Err(why) => return self.close(&why),
            };
            if !unowned.is_empty() {
                // No statement for these keys is sent meanwhile: each has an unknown entry.
                match self.answer(self.conn.unlock_each(&unowned)).await {
                    Some(Ok(Some(0))) => {
                        let mut books = self.books();
                        for (key, _) in &unowned {
                            self.forget(&mut books, *key);
                        }
                    }
                    Some(Err(error)) if is_cancel(&error) && cancels.outlast().await => {
                        // Some unlocks may have run: the next pass reads what is left.
                        self.books().recheck = true;
                        continue;
                    }
                    Some(Err(error)) => {
                        let why = format!("its unowned locks could not be unlocked: {error}");
                        return self.close(&why);
                    }
                    Some(Ok(Some(not_held))) => {
                        // The question showed them held, and nothing was sent for them
                        // since. Seen after a cancelled unlock: PostgreSQL's own books for
                        // the lock disagree, and only the session's end frees it for sure.
                        let why = format!(
                            "{not_held} of its unowned locks were gone when it unlocked them"
                        );
                        return self.close(&why);
                    }
                    Some(Ok(None)) => return self.close("its unlocks gave no count"),
                    None => return self.close("its unlocks went unanswered"),
                }
            }
            let mut books = self.books();
            let unknown = books.entries.values().any(|e| e.state == State::Unknown);
            if !books.recheck && !unknown {
                books.reconciling = false;
                drop(books);
                self.changed.notify_waiters();
                return;
            }
        }
    }

    /// Compares the books with the answer to the question in flight: forgets unknown
    /// entries the server does not hold and returns the locks it holds for nobody (each
    /// with an unknown entry, so that no picker takes the key meanwhile). `Err`: the server
    /// lacks a lock a guard owns.
    fn compare(&self, held: &[(i64, Mode)]) -> Result<Vec<(i64, Mode)>, String> {
        let mut books = self.books();
        let question = books.question.take().unwrap_or(0);
        let gone_since = std::mem::take(&mut books.gone_since_question);
        let on_server = |key: i64| held.iter().find(|(k, _)| *k == key).map(|(_, m)| *m);
        let mut unowned = Vec::new();
        let mut gone = Vec::new();
        for (&key, entry) in &books.entries {
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
                    Some(mode) => unowned.push((key, mode)),
                    None => gone.push(key),
                },
                // In flight when asked (or never sent): settled by its own answer.
                State::Held | State::Taking | State::Releasing => {}
            }
        }
        for &(key, mode) in held {
            if !books.entries.contains_key(&key) && !gone_since.contains(&key) {
                tracing::warn!(
                    key,
                    pid = self.conn.pid,
                    "pals: a session held a lock it had no entry for; unlocking it"
                );
                let entry = Entry {
                    mode,
                    state: State::Unknown,
                    name: Arc::from(key.to_string()),
                    since: Instant::now(),
                    last_sent: question,
                    settled: None,
                };
                books.entries.insert(key, entry);
                unowned.push((key, mode));
            }
        }
        for key in gone {
            self.forget(&mut books, key);
        }
        Ok(unowned)
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
