//! [`Core`]: what the locks, guards and acquires of one locker share: its session pool, its
//! per-key turns, its background releases, its meter, its timeouts and the fencing tokens
//! it has seen. The coordination
//! part of a locker (schema objects, listening) is not in it: see `coordination`.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::background::Background;
use crate::metrics::Meter;
use crate::pool::Pool;
use crate::release::HandoffLimit;
use crate::tokens::Tokens;
use crate::turn::Turns;

/// The shared parts of one locker's lock path.
pub(crate) struct Core {
    /// The application name that namespaces lock names.
    pub(crate) app: String,
    pub(crate) pool: Pool,
    pub(crate) turns: Arc<Turns>,
    pub(crate) background: Arc<Background>,
    pub(crate) meter: Meter,
    /// How long an acquire waits unless its lock says otherwise.
    pub(crate) default_timeout: Duration,
    /// How long opening a connection may take, and the server may take to answer an
    /// instant statement.
    pub(crate) connect_timeout: Duration,
    pub(crate) handoff: HandoffLimit,
    /// The fencing tokens seen, per lock: a sequence that went backwards is noticed.
    pub(crate) tokens: Tokens,
}

impl Core {
    /// The library's runtime, which drives the connections and their timers.
    pub(crate) fn rt(&self) -> &Handle {
        self.background.rt()
    }
}
