//! The heartbeat of a lock session: how a holder behind a dead server or a black-holed
//! network, where no close ever arrives, learns that its locks are gone.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_postgres::Client;

use super::{ConnWatch, LockConn, PgConn};
use crate::error::ends_session;
use crate::loud::session_failed;
use crate::sql;

impl LockConn {
    /// Pings the connection every `interval` while `holding()` says it holds a lock; one
    /// that does not answer within `interval`, or answers from a server session that is not
    /// its own, is closed. Ends when the connection dies or `holding()` returns `None` (its
    /// session is gone). Spawn it on the library's runtime.
    pub(crate) fn heartbeat(
        &self,
        interval: Duration,
        holding: impl Fn() -> Option<bool> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let conn: &PgConn = self;
        heartbeat(
            Arc::downgrade(&conn.client),
            Arc::clone(&conn.watch),
            conn.io_task.clone(),
            (interval, sql::ping(self.mark())),
            holding,
        )
    }
}

/// See [`LockConn::heartbeat`]. The ping (`sql::ping`) reads one setting: nothing to plan,
/// and it checks that the server session answering is this connection's own (a
/// transaction-mode pooler may have given it to other clients). Any answer, an error
/// included (a cancel, say), shows the server is there; only silence, a closed connection
/// or another session's answer does not. A lock session runs nothing that waits long on
/// another session's lock (see `sql::Purpose::Locks`), so the ping never queues long
/// behind a statement.
async fn heartbeat(
    client: Weak<Client>,
    watch: Arc<ConnWatch>,
    io_task: AbortHandle,
    (interval, ping): (Duration, String),
    holding: impl Fn() -> Option<bool>,
) {
    let mut dead = watch.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = dead.wait_for(|dead| *dead) => return,
        }
        match holding() {
            None => return, // the session is gone
            Some(false) => continue,
            Some(true) => {}
        }
        let Some(client) = client.upgrade() else {
            return;
        };
        let answered = tokio::time::timeout(interval, client.simple_query(&ping)).await;
        let why = match answered {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) if !ends_session(&error) => continue,
            Ok(Err(error)) => session_failed("the heartbeat failed", &error),
            Err(_) => {
                tracing::warn!(
                    ?interval,
                    "pals: heartbeat unanswered; closing the lock's connection"
                );
                "the heartbeat went unanswered".to_string()
            }
        };
        watch.mark_dead(&why);
        io_task.abort();
        return;
    }
}
