//! Listeners, the accept loop and the server's life: start, local addresses, shutdown.

use crate::error::{Error, Result};
use crate::relay::certs::{self, CertStore};
use crate::relay::config::{Config, ListenUrl, ListenerConfig};
use crate::relay::metrics::Metrics;
use crate::relay::pool::Pool;
use crate::relay::registry::Registry;
use crate::relay::shared::{BoundListener, Context};
use crate::relay::socket;
use crate::relay::table::{AssociationInfo, Table};
use crate::transport::listener;
use crate::wire::Transport;
use rustls::ServerConfig;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use uuid::Uuid;

/// How long shutdown waits for connection threads to finish after closing
/// their sockets (the process must be gone within 2 seconds of a signal).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Pause after `accept` fails for lack of descriptors or memory, so a full
/// file table does not turn the accept loop into a busy loop.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// The shortest interval between two warnings about exhausted descriptors.
pub const RESOURCE_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// The association table as the public API shows it: create, look at and
/// wait for associations, nothing that touches sockets.
pub struct Associations<'a>(&'a Table);

impl Associations<'_> {
    /// Creates an association as `POST /jet/association/<id>` would; false if
    /// it exists already or the table is full.
    pub fn create(&self, id: Uuid) -> bool {
        self.0.create(id).is_ok()
    }

    /// A snapshot of one association.
    pub fn info(&self, id: Uuid) -> Option<AssociationInfo> {
        self.0.info(id)
    }

    /// Waits up to `limit` until the association's snapshot satisfies `done`
    /// (`None`: it does not exist). Returns the last snapshot seen.
    pub fn wait_for(
        &self,
        id: Uuid,
        limit: Duration,
        done: impl FnMut(Option<&AssociationInfo>) -> bool,
    ) -> Option<AssociationInfo> {
        self.0.wait_for(id, limit, done)
    }

    /// Waits up to `limit` for an association to be removed; true if it is gone.
    pub fn wait_removed(&self, id: Uuid, limit: Duration) -> bool {
        self.0.wait_removed(id, limit)
    }

    /// Gathers candidates as `POST /jet/gather/<id>` would (creating the
    /// association if needed): one fresh candidate id per URL, or `None`
    /// when the table refuses (full, or a candidate was selected already).
    pub fn gather(&self, id: Uuid, urls: &[String]) -> Option<Vec<Uuid>> {
        self.0.gather(id, urls).ok()
    }

    /// How many associations the table holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the table holds no association.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a reload did, for its log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// TLS certificates read again and put in force.
    pub certificates: usize,
    /// The listeners differ from the running ones: that needs a restart, so
    /// the running ones were kept.
    pub listeners_changed: bool,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, " ({} TLS certificate(s) read again)", self.certificates)?;
        if self.listeners_changed {
            write!(
                f,
                "; the listeners changed: that needs a restart, the running ones stay"
            )?;
        }
        Ok(())
    }
}

/// A running relay.
pub struct Server {
    ctx: Arc<Context>,
    listeners: Vec<Listener>,
    reaper: Option<JoinHandle<()>>,
    /// The certificate of each TLS listener (`None` for TCP ones), in
    /// configuration order: a reload swaps what they hold.
    cert_stores: Vec<Option<Arc<CertStore>>>,
}

struct Listener {
    url: ListenUrl,
    local: SocketAddr,
    /// The listening socket (a second descriptor of it), so a drain can stop
    /// it while its accept loop is blocked on the first.
    socket: Option<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener and starts the accept loops and the reaper.
    /// A TLS listener whose certificate or key cannot be used stops the start
    /// with an error naming the file, before any socket is bound.
    pub fn start(config: Config) -> Result<Server> {
        Server::start_with_listeners(config, Vec::new())
    }

    /// Like [`Server::start`], with listening sockets already bound by
    /// someone else (systemd socket activation, see `relay::systemd`). When
    /// `inherited` is not empty it replaces binding: socket `i` serves
    /// `config.listeners[i]` (its scheme, certificate and external URL), and
    /// the counts must match.
    pub fn start_with_listeners(config: Config, inherited: Vec<TcpListener>) -> Result<Server> {
        config.validate()?;
        if !inherited.is_empty() && inherited.len() != config.listeners.len() {
            return Err(Error::Config(format!(
                "{} listening socket(s) were passed in (LISTEN_FDS) for {} configured listener(s): list one [[listeners]] per socket, in the order of the socket unit's ListenStream= lines",
                inherited.len(),
                config.listeners.len()
            )));
        }
        let mut tls_configs = Vec::new();
        let mut cert_stores = Vec::new();
        for listener in &config.listeners {
            let store = match (listener.url.scheme, &listener.cert, &listener.key) {
                (Transport::Tls, Some(cert), Some(key)) => Some(Arc::new(
                    CertStore::load(cert, key).map_err(|e| match e {
                        Error::Config(why) => Error::Config(format!("{}: {why}", listener.url)),
                        other => other,
                    })?,
                )),
                _ => None,
            };
            tls_configs.push(match &store {
                Some(store) => Some(certs::server_config(Arc::clone(store))?),
                None => None,
            });
            cert_stores.push(store);
        }
        let mut bound = Vec::new();
        let mut inherited = inherited.into_iter();
        for (listener, tls) in config.listeners.iter().zip(tls_configs) {
            let socket = match inherited.next() {
                Some(socket) => socket,
                None => bind(&config, listener)?,
            };
            crate::relay::stream::tcp::nodelay_listener(&socket)
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
            .map(|(listener, socket, local, tls)| {
                let proxy_protocol = listener.proxy_protocol;
                (listener.url.clone(), socket, local, (tls, proxy_protocol))
            })
            .collect();
        let pool = match config.max_threads {
            0 => Pool::new(),
            n => Pool::with_limit(n),
        };
        let table = Table::new(config.max_associations);
        let ctx = Arc::new(Context::new(
            config,
            table,
            Metrics::default(),
            Arc::new(Registry::default()),
            pool,
            bound_info,
        ));
        // Built before its threads start: if one fails to start, dropping the
        // half-started server shuts down the ones already running.
        let mut server = Server {
            ctx,
            listeners: Vec::new(),
            reaper: None,
            cert_stores,
        };
        for (url, socket, local, tls) in bound {
            // Without a second descriptor a drain cannot stop this listener
            // early; shutdown still stops it.
            let stop_handle = socket.try_clone().ok();
            let loop_ctx = Arc::clone(&server.ctx);
            let thread = thread::Builder::new()
                .name(format!("jet-listen-{}", local.port()))
                .spawn(move || accept_loop(loop_ctx, socket, tls))
                .map_err(|e| Error::io("starting a listener thread", e))?;
            server.listeners.push(Listener {
                url,
                local,
                socket: stop_handle,
                thread: Some(thread),
            });
        }
        let reaper_ctx = Arc::clone(&server.ctx);
        server.reaper = Some(
            thread::Builder::new()
                .name("jet-reaper".into())
                .spawn(move || crate::relay::reaper::run(reaper_ctx))
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

    /// The configuration the relay runs with (validated, defaults filled in).
    pub fn config(&self) -> Arc<Config> {
        self.ctx.config()
    }

    /// The association table, seen through the operations tests and
    /// embedding programs may use.
    pub fn associations(&self) -> Associations<'_> {
        Associations(&self.ctx.table)
    }

    /// The relay's counters, as `/metrics` exposes them.
    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// How many connections are open (in any state: handshake, parked, paired).
    pub fn open_connections(&self) -> usize {
        self.ctx.registry.len()
    }

    /// Waits up to `limit` until at most `count` connections are open.
    pub fn wait_open_connections_at_most(&self, count: usize, limit: Duration) -> bool {
        self.ctx.registry.wait_at_most(count, limit)
    }

    /// Waits up to `limit` until at least `count` pooled threads are idle.
    pub fn wait_idle_threads(&self, count: usize, limit: Duration) -> bool {
        self.ctx.pool.wait_idle(count, limit)
    }

    /// Waits up to `limit` until at least `count` connection threads are busy.
    pub fn wait_busy_threads(&self, count: usize, limit: Duration) -> bool {
        self.ctx.pool.wait_busy(count, limit)
    }

    /// Begins a drain: every listener stops at once (new connections are
    /// refused, so a balancer's health check and new peers go elsewhere),
    /// `/health` answers 503 `draining`, parked accepts are closed and
    /// connections still in their handshake are refused; relaying pairs go on.
    /// Wait for them with [`Server::wait_open_connections_at_most`], then
    /// [`Server::shutdown`] cuts what is left.
    pub fn begin_drain(&self) {
        if self.ctx.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        for listener in &self.listeners {
            if let Some(socket) = &listener.socket {
                if let Err(e) = socket::stop_listening(socket) {
                    crate::warn!("cannot stop listening on {}: {e}", listener.url);
                }
            }
        }
        for victim in self.ctx.table.close_parked() {
            victim.kill();
        }
        // Connections in their handshake (or REST requests) go now; the
        // flag set above refuses any that reaches its request meanwhile.
        let relaying = self.ctx.table.paired_descriptors();
        self.ctx.registry.kill_except(&relaying);
    }

    /// True once a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.ctx.draining()
    }

    /// Puts a new configuration in force without dropping anything: limits,
    /// timeouts, the log level, the API key, CORS and the TLS certificates
    /// (read again from their files) apply to what starts after it; running
    /// pairs are untouched. A configuration that does not validate, or whose
    /// certificates do not load, is refused whole and the old one stays.
    /// Listener changes need a restart: they are reported, not applied.
    pub fn reload(&self, mut config: Config) -> Result<ReloadReport> {
        config.validate()?;
        let old = self.ctx.config();
        let mut report = ReloadReport::default();
        if config.listeners != old.listeners {
            report.listeners_changed = true;
            // Keep the running listeners' settings: nothing half-applied.
            config.listeners.clone_from(&old.listeners);
            // The new top-level keys must hold with the running listeners
            // (a proxy_protocol listener needs trusted_proxies).
            config.validate()?;
        }
        let mut keys = Vec::new();
        for (listener, store) in config.listeners.iter().zip(&self.cert_stores) {
            if let (Some(store), Some(cert), Some(key)) = (store, &listener.cert, &listener.key) {
                let loaded = certs::load_certified_key(cert, key).map_err(|e| match e {
                    Error::Config(why) => Error::Config(format!("{}: {why}", listener.url)),
                    other => other,
                })?;
                keys.push((Arc::clone(store), loaded));
            }
        }
        report.certificates = keys.len();
        for (store, key) in keys {
            store.replace(key);
        }
        self.ctx.table.set_limit(config.max_associations);
        self.ctx.set_config(config);
        Ok(report)
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
            // The accept loop checks the flag after each accept: stopping the
            // socket wakes it (and closes the port at once); without a second
            // descriptor, a connection of our own does. If that fails the
            // thread stays blocked in accept, harmless at process exit, so do
            // not wait for it.
            match listener.socket.take() {
                Some(socket) if socket::stop_listening(&socket).is_ok() => {
                    if let Some(thread) = listener.thread.take() {
                        let _ = thread.join();
                    }
                }
                _ => listener::wake_and_join(
                    listener.local,
                    listener.thread.take(),
                    Duration::from_millis(200),
                ),
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

/// Binds one configured listener: each address its host resolves to in
/// turn, with the configured backlog and `SO_REUSEPORT` setting.
fn bind(config: &Config, listener: &ListenerConfig) -> Result<TcpListener> {
    let addrs: Vec<SocketAddr> = listener
        .url
        .address
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving {}", listener.url), e))?
        .collect();
    let backlog = socket::effective_backlog(config.listen_backlog);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolves to no address");
    for addr in addrs {
        match socket::bind_listener(addr, backlog, listener.reuse_port) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = e,
        }
    }
    Err(Error::io(format!("binding {}", listener.url), last))
}

/// Accepts connections and hands each to a pool thread; a TLS listener's
/// handshake runs there too, so a slow client never holds this loop.
/// On a `proxy_protocol` listener each connection's PROXY header is read
/// there first.
fn accept_loop(
    ctx: Arc<Context>,
    listener: TcpListener,
    (tls, proxy_protocol): (Option<Arc<ServerConfig>>, bool),
) {
    // While descriptors are exhausted accept fails every few milliseconds;
    // say so once per interval, not once per failure.
    let mut last_warning: Option<std::time::Instant> = None;
    listener::accept_until(
        &listener,
        || ctx.draining(),
        |accepted| {
            match accepted {
                Ok((sock, peer)) => {
                    ctx.metrics
                        .connections_accepted
                        .fetch_add(1, Ordering::Relaxed);
                    let conn_ctx = Arc::clone(&ctx);
                    let tls = tls.clone();
                    let spawned = ctx.pool.spawn(move || match tls {
                        Some(tls) => crate::relay::conn::tls::handle(
                            conn_ctx,
                            sock,
                            peer,
                            tls,
                            proxy_protocol,
                        ),
                        None => crate::relay::conn::dispatch::handle(
                            conn_ctx,
                            sock,
                            peer,
                            proxy_protocol,
                        ),
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
                        crate::warn!(
                            "accept failed: {e}; pausing {ACCEPT_BACKOFF:?} between tries"
                        );
                        last_warning = Some(std::time::Instant::now());
                    }
                    thread::sleep(ACCEPT_BACKOFF);
                }
                Err(e) => {
                    // ECONNABORTED and friends: one failed connection, not the listener.
                    crate::debug!("accept failed: {e}");
                }
            }
        },
    );
}

/// True for the `accept` failures that mean the process or the system is
/// out of descriptors, buffers or memory: EMFILE, ENFILE, ENOBUFS, ENOMEM.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        matches!(
            Errno::from_io_error(e),
            Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        e.kind() == io::ErrorKind::OutOfMemory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn descriptor_and_memory_exhaustion_pause_the_accept_loop_and_nothing_else_does() {
        use rustix::io::Errno;
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            let e = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(is_resource_exhaustion(&e), "{e}");
        }
        for errno in [Errno::CONNABORTED, Errno::INTR, Errno::PERM, Errno::PROTO] {
            let e = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(!is_resource_exhaustion(&e), "{e}");
        }
    }
}
