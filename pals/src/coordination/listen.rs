//! One `LISTEN` session per locker, opened when first needed: how semaphore waiters and
//! election observers hear of what other processes do, without polling the database.
//!
//! Two channels: `PERMIT_CHANNEL`, on which a process that gives back a semaphore permit
//! says so, and `LEADER_CHANNEL`, on which a newly elected leader says who it is.
//! Notifications are a fast path, never the only one: none is sent by a process that dies
//! (the server frees its locks silently), and none arrives while this session is down. So
//! every subscriber also checks on its own, at an interval and on [`Event::Resync`] (sent
//! each time the session has (re)started listening).
//!
//! The session is one more connection of the locker, outside the pool (it holds no locks);
//! it closes when the locker is dropped.
//!
//! The channels and their payloads are in `sql` ([`PERMIT_CHANNEL`], [`LEADER_CHANNEL`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{broadcast, watch};

use crate::connection::{self, ConnectionSettings};
use crate::deadline::within;
use crate::sql;
#[cfg(doc)]
use crate::sql::{LEADER_CHANNEL, PERMIT_CHANNEL};

/// What subscribers hear.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Notified {
        channel: Arc<str>,
        payload: Arc<str>,
    },
    /// The session has (re)started listening, or this subscriber fell behind: what was
    /// missed cannot be known; check.
    Resync,
}

/// A locker's listener; started by the first subscriber.
pub(crate) struct Listener {
    events: broadcast::Sender<Event>,
    up: watch::Sender<bool>,
    started: AtomicBool,
    /// Dropped with the locker: tells the session's task to close it.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

impl Listener {
    pub(crate) fn new() -> Listener {
        let (alive_tx, alive) = watch::channel(());
        Listener {
            events: broadcast::channel(1024).0,
            up: watch::Sender::new(false),
            started: AtomicBool::new(false),
            _alive: alive_tx,
            alive,
        }
    }

    /// Events from now on. Starts the session if nobody has yet; see [`Listener::up`].
    pub(crate) fn subscribe(&self, settings: &ConnectionSettings, rt: &Handle) -> Subscription {
        let events = self.events.subscribe();
        if !self.started.swap(true, Ordering::AcqRel) {
            rt.spawn(listen(
                settings.clone(),
                self.events.clone(),
                self.up.clone(),
                self.alive.clone(),
            ));
        }
        Subscription {
            events,
            up: self.up.subscribe(),
        }
    }
}

/// One subscriber's events.
pub(crate) struct Subscription {
    events: broadcast::Receiver<Event>,
    up: watch::Receiver<bool>,
}

impl Subscription {
    /// Waits up to `limit` for the session to listen: true if it does (from then on, what
    /// is notified reaches this subscription).
    pub(crate) async fn up(&mut self, rt: &Handle, limit: Duration) -> bool {
        let up = within(rt, limit, self.up.wait_for(|up| *up)).await;
        matches!(up, Some(Ok(_)))
    }

    /// The next event; `None` only when the locker is gone.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Event::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Keeps a session listening, reopening it (backing off to 5 s) when it ends, until the
/// locker is dropped.
async fn listen(
    settings: ConnectionSettings,
    events: broadcast::Sender<Event>,
    up: watch::Sender<bool>,
    mut alive: watch::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::select! {
            opened = connection::open_listening(&settings) => opened,
            _ = alive.changed() => return,
        };
        match opened {
            Ok((conn, mut notifications)) => {
                match conn.query(&sql::listen()).await {
                    Ok(_) => {
                        backoff = Duration::from_millis(100);
                        up.send_replace(true);
                        let _ = events.send(Event::Resync);
                        loop {
                            let notification = tokio::select! {
                                notification = notifications.recv() => notification,
                                _ = alive.changed() => return,
                            };
                            let Some(notification) = notification else {
                                break; // the session ended
                            };
                            let _ = events.send(Event::Notified {
                                channel: notification.channel().into(),
                                payload: notification.payload().into(),
                            });
                        }
                        up.send_replace(false);
                        tracing::debug!("pals: the listening session ended; reopening it");
                    }
                    Err(error) => tracing::debug!(%error, "pals: LISTEN failed"),
                }
            }
            Err(error) => tracing::debug!(%error, "pals: the listening session could not open"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = alive.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
