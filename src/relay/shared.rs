//! State shared by every thread of one relay: the configuration, the table,
//! the counters, the registry of open sockets, the thread pool, the listeners.

use crate::relay::config::{Config, ListenUrl};
use crate::relay::metrics::Metrics;
use crate::relay::pool::Pool;
use crate::relay::registry::Registry;
use crate::relay::stream::Stream;
use crate::relay::table::Table;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// State shared by every thread of one server.
pub struct Context {
    /// The validated configuration; a reload swaps it (see [`Context::config`]).
    config: RwLock<Arc<Config>>,
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
    pub(crate) stopping: AtomicBool,
    /// A drain has begun: listeners are closed, `/health` answers 503, and
    /// connections that are not relaying are refused.
    pub(crate) draining: AtomicBool,
    pub(crate) stop_signal: (Mutex<bool>, Condvar),
}

impl Context {
    /// Builds the shared state (the server fills in its parts).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        table: Table,
        metrics: Metrics,
        registry: Arc<Registry>,
        pool: Pool,
        listeners: Vec<BoundListener>,
    ) -> Context {
        Context {
            config: RwLock::new(Arc::new(config)),
            table,
            metrics,
            registry,
            pool,
            listeners,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            stop_signal: (Mutex::new(false), Condvar::new()),
        }
    }

    /// The configuration in force. Each connection takes it once and keeps
    /// that copy: a reload applies to connections that start after it.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a new (validated) configuration in force.
    pub(crate) fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// True once a drain (or shutdown) has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.stopping()
    }

    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
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
pub(crate) fn tcp_stream(ctx: &Context, sock: TcpStream) -> Option<(Stream, u64)> {
    crate::relay::stream::tcp::nodelay_accepted(&sock);
    let sock = Arc::new(sock);
    let registration = ctx.registry.register(&sock);
    if ctx.stopping() {
        return None;
    }
    let id = registration.id();
    Some((Stream::tcp(sock, registration), id))
}
