//! Listeners, the accept loop and the server's life: start, local addresses, shutdown.

use crate::config::{Config, ListenUrl, Scheme};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::table::Table;
use crate::transport::{Registry, TcpDuplex};
use rustls::ServerConfig;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long shutdown waits for connection threads to finish after closing
/// their sockets (the process must be gone within 2 seconds of a signal).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Pause after `accept` fails for lack of descriptors or memory, so a full
/// file table does not turn the accept loop into a busy loop.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// The shortest interval between two warnings about exhausted descriptors.
pub const RESOURCE_WARNING_INTERVAL: Duration = Duration::from_secs(5);

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
    stopping: AtomicBool,
    stop_signal: (Mutex<bool>, Condvar),
}

impl Context {
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

/// A running relay.
pub struct Server {
    ctx: Arc<Context>,
    listeners: Vec<Listener>,
    reaper: Option<JoinHandle<()>>,
}

struct Listener {
    url: ListenUrl,
    local: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener and starts the accept loops and the reaper.
    /// A TLS listener whose certificate or key cannot be used stops the start
    /// with an error naming the file, before any socket is bound.
    pub fn start(config: Config) -> Result<Server> {
        config.validate()?;
        let mut tls_configs = Vec::new();
        for listener in &config.listeners {
            tls_configs.push(match (listener.url.scheme, &listener.cert, &listener.key) {
                (Scheme::Tls, Some(cert), Some(key)) => {
                    Some(crate::tls::server_config(cert, key).map_err(|e| match e {
                        Error::Config(why) => Error::Config(format!("{}: {why}", listener.url)),
                        other => other,
                    })?)
                }
                _ => None,
            });
        }
        let mut bound = Vec::new();
        for (listener, tls) in config.listeners.iter().zip(tls_configs) {
            let addrs: Vec<SocketAddr> = listener
                .url
                .address
                .to_socket_addrs()
                .map_err(|e| Error::io(format!("resolving {}", listener.url), e))?
                .collect();
            let socket = TcpListener::bind(&addrs[..])
                .map_err(|e| Error::io(format!("binding {}", listener.url), e))?;
            crate::transport::nodelay_listener(&socket)
                .map_err(|e| Error::io(format!("turning Nagle off on {}", listener.url), e))?;
            let local = socket
                .local_addr()
                .map_err(|e| Error::io(format!("reading the address of {}", listener.url), e))?;
            bound.push((listener, socket, local, tls));
        }
        let bound_info = bound
            .iter()
            .map(|(listener, _, local, _)| BoundListener {
                url: listener.url.clone(),
                local: *local,
                external_url: listener.external_url.clone(),
            })
            .collect();
        let bound: Vec<_> = bound
            .into_iter()
            .map(|(listener, socket, local, tls)| (listener.url.clone(), socket, local, tls))
            .collect();
        let pool = match config.max_threads {
            0 => Pool::new(),
            n => Pool::with_limit(n),
        };
        let ctx = Arc::new(Context {
            listeners: bound_info,
            table: Table::new(config.max_associations),
            config,
            metrics: Metrics::default(),
            registry: Arc::new(Registry::default()),
            pool,
            stopping: AtomicBool::new(false),
            stop_signal: (Mutex::new(false), Condvar::new()),
        });
        // Built before its threads start: if one fails to start, dropping the
        // half-started server shuts down the ones already running.
        let mut server = Server {
            ctx,
            listeners: Vec::new(),
            reaper: None,
        };
        for (url, socket, local, tls) in bound {
            let loop_ctx = Arc::clone(&server.ctx);
            let thread = thread::Builder::new()
                .name(format!("jet-listen-{}", local.port()))
                .spawn(move || accept_loop(loop_ctx, socket, tls))
                .map_err(|e| Error::io("starting a listener thread", e))?;
            server.listeners.push(Listener {
                url,
                local,
                thread: Some(thread),
            });
        }
        let reaper_ctx = Arc::clone(&server.ctx);
        server.reaper = Some(
            thread::Builder::new()
                .name("jet-reaper".into())
                .spawn(move || crate::reaper::run(reaper_ctx))
                .map_err(|e| Error::io("starting the reaper thread", e))?,
        );
        Ok(server)
    }

    /// The address each listener actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }

    /// The bound URL of each listener, such as `tcp://127.0.0.1:41234`.
    pub fn local_urls(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| format!("{}://{}", l.url.scheme.as_str(), l.local))
            .collect()
    }

    /// The shared state, for tests and the REST API.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Stops accepting, closes every connection and waits (bounded) for the
    /// threads to finish. Called by `Drop` too.
    pub fn shutdown(&mut self) {
        if self.ctx.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let (lock, cond) = &self.ctx.stop_signal;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cond.notify_all();
        }
        for listener in &mut self.listeners {
            // The accept loop checks the flag after each accept: wake it with a
            // connection of our own. If that fails the thread stays blocked in
            // accept, harmless at process exit, so do not wait for it.
            let wake = wake_address(listener.local);
            if TcpStream::connect_timeout(&wake, Duration::from_millis(200)).is_ok() {
                if let Some(thread) = listener.thread.take() {
                    let _ = thread.join();
                }
            }
        }
        for victim in self.ctx.table.drain() {
            victim.kill();
        }
        self.ctx.registry.kill_all();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
        let left = self.ctx.pool.close(SHUTDOWN_GRACE);
        if left > 0 {
            crate::warn!("{left} connection thread(s) still running at shutdown");
        }
        crate::info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where to connect to reach a listener bound to `local` (a wildcard address
/// is reached through loopback).
fn wake_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(ref mut a) => a.set_ip(std::net::Ipv4Addr::LOCALHOST),
            SocketAddr::V6(ref mut a) => a.set_ip(std::net::Ipv6Addr::LOCALHOST),
        }
    }
    addr
}

/// Accepts connections and hands each to a pool thread; a TLS listener's
/// handshake runs there too, so a slow client never holds this loop.
fn accept_loop(ctx: Arc<Context>, listener: TcpListener, tls: Option<Arc<ServerConfig>>) {
    // While descriptors are exhausted accept fails every few milliseconds;
    // say so once per interval, not once per failure.
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let accepted = listener.accept();
        if ctx.stopping() {
            return;
        }
        match accepted {
            Ok((sock, peer)) => {
                ctx.metrics
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                let conn_ctx = Arc::clone(&ctx);
                let tls = tls.clone();
                let spawned = ctx.pool.spawn(move || match tls {
                    Some(tls) => crate::tls::handle(conn_ctx, sock, peer, tls),
                    None => crate::handshake::handle(conn_ctx, sock, peer),
                });
                if let Err(e) = spawned {
                    // The socket went down with the job: closed, nothing else touched.
                    ctx.metrics.spawn_failures.fetch_add(1, Ordering::Relaxed);
                    if last_warning.is_none_or(|t| t.elapsed() >= RESOURCE_WARNING_INTERVAL) {
                        crate::warn!("peer={peer} refused: cannot start a thread: {e}");
                        last_warning = Some(std::time::Instant::now());
                    }
                }
            }
            Err(e) if is_resource_exhaustion(&e) => {
                if last_warning.is_none_or(|t| t.elapsed() >= RESOURCE_WARNING_INTERVAL) {
                    crate::warn!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?} between tries");
                    last_warning = Some(std::time::Instant::now());
                }
                thread::sleep(ACCEPT_BACKOFF);
            }
            Err(e) => {
                // ECONNABORTED and friends: one failed connection, not the listener.
                crate::debug!("accept failed: {e}");
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Wraps an accepted socket: no Nagle delay (inherited from the listener on
/// Linux), registered for shutdown.
/// `None` when shutdown has begun: the socket is closed at once.
///
/// Shutdown sets its flag before it takes the registry's snapshot, and both
/// registering and the snapshot take the registry lock: a socket registered
/// after the snapshot therefore sees the flag here.
pub(crate) fn tcp_stream(ctx: &Context, sock: TcpStream) -> Option<(Arc<TcpDuplex>, u64)> {
    crate::transport::nodelay_accepted(&sock);
    let sock = Arc::new(sock);
    let registration = ctx.registry.register(&sock);
    if ctx.stopping() {
        return None;
    }
    let id = registration.id();
    Some((Arc::new(TcpDuplex::new(sock, registration)), id))
}
