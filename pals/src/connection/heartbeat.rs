//! The heartbeat of a lock session: how a holder behind a dead server or a black-holed
//! network, where no close ever arrives, learns that its locks are gone.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_postgres::Client;

use super::{ConnWatch, PgConn};
use crate::error::ends_session;

impl PgConn {
    /// Pings the connection every `interval` while `holding()` says it holds a lock; one
    /// that does not answer within `interval` is closed. Ends when the connection dies or
    /// `holding()` returns `None` (its session is gone). Spawn it on the library's runtime.
    pub(crate) fn heartbeat(
        &self,
        interval: Duration,
        holding: impl Fn() -> Option<bool> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        heartbeat(
            Arc::downgrade(&self.client),
            Arc::clone(&self.watch),
            self.io_task.clone(),
            interval,
            holding,
        )
    }
}

/// See [`PgConn::heartbeat`]. The ping is an empty query: nothing to parse or plan, and it
/// never shows as a running query. Any answer, an error included (a cancel, say), shows the
/// server is there; only silence or a closed connection does not. A lock session runs
/// nothing that waits long on another session's lock (see `sql::Purpose::Locks`), so the
/// ping never queues long behind a statement.
async fn heartbeat(
    client: Weak<Client>,
    watch: Arc<ConnWatch>,
    io_task: AbortHandle,
    interval: Duration,
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
        let answered = tokio::time::timeout(interval, client.simple_query("")).await;
        let alive = match answered {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => !ends_session(&error),
            Err(_) => false,
        };
        if !alive {
            tracing::warn!(
                ?interval,
                "pals: heartbeat unanswered; closing the lock's connection"
            );
            watch.mark_dead("the heartbeat went unanswered");
            io_task.abort();
            return;
        }
    }
}
