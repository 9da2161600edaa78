//! State shared by every thread of one relay: the configuration, the table,
//! the counters, the registry of open sockets, the thread pool, the listeners.

use crate::relay::config::{Config, ListenUrl};
use crate::relay::limits::ClientLimits;
use crate::relay::metrics::Metrics;
use crate::relay::pool::Pool;
use crate::relay::registry::Registry;
use crate::relay::stream::tcp::TcpDuplex;
use crate::relay::table::Table;
use crate::relay::token::Verifier;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// State shared by every thread of one server.
pub struct Context {
    /// The validated configuration.
    pub config: Config,
    /// The association table.
    pub table: Table,
    /// Counters.
    pub metrics: Metrics,
    /// Every open socket, for shutdown.
    pub registry: Arc<Registry>,
    /// Connection and copy threads.
    pub pool: Pool,
    /// The listeners as bound (port 0 resolved), in configuration order.
    pub listeners: Vec<BoundListener>,
    /// The association token verifier, when tokens are configured. Behind a
    /// lock so a reload can swap it; readers hold it only to clone the `Arc`.
    pub tokens: RwLock<Option<Arc<Verifier>>>,
    /// Per-client limits (the REST rate so far).
    pub limits: ClientLimits,
    pub(crate) stopping: AtomicBool,
    pub(crate) stop_signal: (Mutex<bool>, Condvar),
}

impl Context {
    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The token verifier in force, if tokens are configured.
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        // A writer only ever swaps the Arc, so a poisoned lock still holds a whole one.
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for shutdown; true if it began.
    pub fn wait_stop(&self, timeout: Duration) -> bool {
        let (lock, cond) = &self.stop_signal;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cond
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// A listener as bound, for building candidate URLs.
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// The configured URL.
    pub url: ListenUrl,
    /// The address actually bound.
    pub local: SocketAddr,
    /// The configured external URL, if any.
    pub external_url: Option<String>,
}

/// Wraps an accepted socket: no Nagle delay (inherited from the listener on
/// Linux), registered for shutdown.
/// `None` when shutdown has begun: the socket is closed at once.
///
/// Shutdown sets its flag before it takes the registry's snapshot, and both
/// registering and the snapshot take the registry lock: a socket registered
/// after the snapshot therefore sees the flag here.
pub(crate) fn tcp_stream(ctx: &Context, sock: TcpStream) -> Option<(Arc<TcpDuplex>, u64)> {
    crate::relay::stream::tcp::nodelay_accepted(&sock);
    let sock = Arc::new(sock);
    let registration = ctx.registry.register(&sock);
    if ctx.stopping() {
        return None;
    }
    let id = registration.id();
    Some((Arc::new(TcpDuplex::new(sock, registration)), id))
}
