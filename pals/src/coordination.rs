//! [`Coordination`]: what semaphores, elections, fenced locks and `once_per` jobs need beside the locks
//! themselves: the schema objects pals keeps (`objects`), a session for the statements that
//! read and write them (`session`), and a session that listens for what other processes
//! announce (`listen`). None of it runs on a session that holds locks: a DBA's `LOCK TABLE`
//! on the leaders table blocks a coordination statement, never a lock's heartbeat.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_postgres::SimpleQueryMessage;

use crate::connection::ConnectionSettings;
use crate::error::Error;

mod listen;
mod objects;
mod session;

pub(crate) use listen::{Event, Subscription};

use listen::Listener;
use objects::Objects;
use session::CoordinationSession;

/// The coordination part of one locker.
pub(crate) struct Coordination {
    session: CoordinationSession,
    objects: Objects,
    listener: Listener,
    settings: ConnectionSettings,
    rt: Handle,
    /// Signalled when a semaphore permit of this locker is given back.
    permits_freed: Notify,
    /// How many runs of each `once_per` job the runs table keeps.
    runs_kept: u32,
}

impl Coordination {
    /// The coordination part of a locker whose objects are in `schema`, connecting with
    /// `settings` on `rt` (the library's runtime); a session idle for `idle_timeout` is
    /// closed; the runs table keeps `runs_kept` runs of each job.
    pub(crate) fn new(
        schema: &str,
        settings: ConnectionSettings,
        idle_timeout: std::time::Duration,
        runs_kept: u32,
        rt: Handle,
    ) -> Result<Coordination, Error> {
        Ok(Coordination {
            session: CoordinationSession::new(settings.clone(), idle_timeout, rt.clone()),
            objects: Objects::new(schema)?,
            listener: Listener::new(),
            settings,
            rt,
            permits_freed: Notify::new(),
            runs_kept,
        })
    }

    /// Runs `sql` on the coordination session, bounded (see `session`); `what` names it
    /// in an error.
    pub(crate) async fn query(
        &self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.session.query(sql, what).await
    }

    /// Runs the statement `build` makes once the session is open (see `session`).
    pub(crate) async fn query_built<S: AsRef<str>>(
        &self,
        build: impl FnOnce() -> S,
        what: &str,
    ) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.session.query_built(build, what).await
    }

    /// The fencing sequence's name, once it is known to exist (made if missing).
    pub(crate) async fn fence_sequence(&self) -> Result<&Arc<str>, Error> {
        self.objects.fence(&self.session).await
    }

    /// The leaders table's name, once it is known to exist (made if missing) and the role
    /// may `write` it (candidates), or read it (observers).
    pub(crate) async fn leaders_table(&self, write: bool) -> Result<&Arc<str>, Error> {
        self.objects.leaders(&self.session, write).await
    }

    /// The runs table's name, once it is known to exist (made if missing) and the role may
    /// claim ticks in it.
    pub(crate) async fn runs_table(&self) -> Result<&Arc<str>, Error> {
        self.objects.runs(&self.session).await
    }

    /// How many runs of each `once_per` job the runs table keeps.
    pub(crate) fn runs_kept(&self) -> u32 {
        self.runs_kept
    }

    /// The runs table's name, for reading the history: unchecked, nothing is made.
    pub(crate) fn runs_table_name(&self) -> String {
        self.objects.runs_name()
    }

    /// Events of the locker's listening session (started on first use).
    pub(crate) fn subscribe(&self) -> Subscription {
        self.listener.subscribe(&self.settings, &self.rt)
    }

    /// Signalled when a semaphore permit of this locker is given back.
    pub(crate) fn permits_freed(&self) -> &Notify {
        &self.permits_freed
    }
}
