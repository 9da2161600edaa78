//! Listeners, the accept loop and the server's life: start, local addresses, shutdown.

use crate::error::{Error, Result};
use crate::relay::certs::{self, CertStore};
use crate::relay::config::{Config, ListenUrl};
use crate::relay::limits::ClientLimits;
use crate::relay::listen::{accept_loop, bind, prepare, v6_only, warn_about_exposure, Serves};
use crate::relay::metrics::Metrics;
use crate::relay::pool::Pool;
use crate::relay::registry::Registry;
use crate::relay::shared::{BoundListener, Context};
use crate::relay::socket;
use crate::relay::table::{AssociationInfo, EndReason, Table};
use crate::relay::token::{KeyFileError, TokenKeys, Verifier, VerifierOptions};
use crate::transport::listener;
use crate::wire::Transport;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use uuid::Uuid;

/// How long shutdown waits for connection threads to finish after closing
/// their sockets (the process must be gone within 2 seconds of a signal).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

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
    /// The `metrics_listen` listener, apart: it is no JET listener, so
    /// `local_addrs` and gathering never name it.
    metrics_listener: Option<Listener>,
    reaper: Option<JoinHandle<()>>,
    /// The watch on parked accepts (`relay::watch`).
    watch: Option<JoinHandle<()>>,
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
    /// Passed by systemd (socket activation): the socket is systemd's too,
    /// so it is never shut down (that would stop it listening for systemd
    /// as well); the accept loop is woken with a connection of our own.
    inherited: bool,
}

/// How long waking an accept loop with a connection of our own may take.
const WAKE_TIMEOUT: Duration = Duration::from_millis(200);

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
        // Key files are read before any socket is bound, like certificates.
        let verifier = token_verifier(&config, None)?;
        let mut bound = Vec::new();
        let mut inherited = inherited.into_iter();
        for (listener, tls) in config.listeners.iter().zip(tls_configs) {
            let (socket, passed) = match inherited.next() {
                Some(socket) => (socket, true),
                None => (bind(&config, &listener.url, listener.reuse_port)?, false),
            };
            let local = prepare(&socket, &listener.url)?;
            let dual_stack = local.is_ipv6() && local.ip().is_unspecified() && !v6_only(&socket);
            bound.push((listener, socket, local, (tls, passed), dual_stack));
        }
        let bound_info: Vec<BoundListener> = bound
            .iter()
            .map(|(listener, _, local, _, dual_stack)| BoundListener {
                url: listener.url.clone(),
                local: *local,
                external_url: listener.external_url.clone(),
                dual_stack: *dual_stack,
            })
            .collect();
        let bound: Vec<_> = bound
            .into_iter()
            .map(|(listener, socket, local, (tls, passed), _)| {
                let proxy_protocol = listener.proxy_protocol;
                (
                    listener.url.clone(),
                    socket,
                    local,
                    (tls, proxy_protocol, passed),
                )
            })
            .collect();
        if config.metrics_token.is_some() && config.metrics_listen.is_none() {
            crate::warn!("metrics_token is set without metrics_listen: it protects nothing (the listeners' /metrics takes api_key)");
        }
        let metrics_bound = match &config.metrics_listen {
            Some(addr) => {
                let url = ListenUrl::parse(&format!("tcp://{addr}")).map_err(Error::Config)?;
                let socket = bind(&config, &url, false)?;
                let local = prepare(&socket, &url)?;
                Some((url, socket, local))
            }
            None => None,
        };
        warn_about_exposure(&config, &bound_info);
        let pool = match config.max_threads {
            0 => Pool::new(),
            n => Pool::with_limit(n),
        };
        let table = Table::new(config.max_associations);
        table.set_parked_limit(parked_limit(&config));
        let config_limits = config.client_limits.clone();
        let ctx = Arc::new(Context::new(
            config,
            table,
            Metrics::for_listeners(
                bound
                    .iter()
                    .map(|(url, _, local, _)| format!("{}://{local}", url.scheme.as_str())),
            ),
            Arc::new(Registry::default()),
            pool,
            bound_info,
            verifier,
            ClientLimits::new(config_limits),
        ));
        // Built before its threads start: if one fails to start, dropping the
        // half-started server shuts down the ones already running.
        let mut server = Server {
            ctx,
            listeners: Vec::new(),
            metrics_listener: None,
            reaper: None,
            watch: None,
            cert_stores,
        };
        for (index, (url, socket, local, (tls, proxy_protocol, inherited))) in
            bound.into_iter().enumerate()
        {
            // Without a second descriptor a drain cannot stop this listener
            // early; shutdown still stops it.
            let stop_handle = socket.try_clone().ok();
            let loop_ctx = Arc::clone(&server.ctx);
            let thread = thread::Builder::new()
                .name(format!("jet-listen-{}", local.port()))
                .spawn(move || {
                    let serves = Serves::Relay {
                        index,
                        tls,
                        proxy_protocol,
                    };
                    accept_loop(loop_ctx, socket, serves)
                })
                .map_err(|e| Error::io("starting a listener thread", e))?;
            server.listeners.push(Listener {
                url,
                local,
                socket: stop_handle,
                thread: Some(thread),
                inherited,
            });
        }
        if let Some((url, socket, local)) = metrics_bound {
            let loop_ctx = Arc::clone(&server.ctx);
            let thread = thread::Builder::new()
                .name("jet-metrics".into())
                .spawn(move || accept_loop(loop_ctx, socket, Serves::Metrics))
                .map_err(|e| Error::io("starting the metrics listener thread", e))?;
            crate::info!("metrics on http://{local}/metrics");
            // Not stopped by a drain: it keeps answering /health (503
            // draining) and /metrics until shutdown.
            server.metrics_listener = Some(Listener {
                url,
                local,
                socket: None,
                thread: Some(thread),
                inherited: false,
            });
        }
        let reaper_ctx = Arc::clone(&server.ctx);
        server.reaper = Some(
            thread::Builder::new()
                .name("jet-reaper".into())
                .spawn(move || crate::relay::reaper::run(reaper_ctx))
                .map_err(|e| Error::io("starting the reaper thread", e))?,
        );
        let watch_ctx = Arc::clone(&server.ctx);
        server.watch = Some(
            thread::Builder::new()
                .name("jet-watch".into())
                .spawn(move || crate::relay::watch::run(watch_ctx))
                .map_err(|e| Error::io("starting the parked-accept watch thread", e))?,
        );
        Ok(server)
    }

    /// The address each listener actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }

    /// The address the `metrics_listen` listener bound, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|l| l.local)
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
            if listener.inherited {
                // Connections queue on systemd's socket for the next process;
                // this loop, seeing the drain, takes no more of them.
                let _ = std::net::TcpStream::connect_timeout(
                    &listener::wake_address(listener.local),
                    WAKE_TIMEOUT,
                );
                continue;
            }
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
        let running = self.ctx.verifier();
        let verifier = token_verifier(&config, running.as_deref())?;
        report.certificates = keys.len();
        // Everything is loaded: from here nothing can fail, so the new
        // configuration applies whole or not at all.
        for (store, key) in keys {
            store.replace(key);
        }
        self.ctx.set_verifier(verifier);
        self.ctx.table.set_limit(config.max_associations);
        self.ctx.table.set_parked_limit(parked_limit(&config));
        self.ctx.limits.set_config(config.client_limits.clone());
        self.ctx.set_config(config);
        Ok(report)
    }

    /// Stops accepting, closes every connection and waits (bounded) for the
    /// threads to finish. Called by `Drop` too. Pairs cut here end as
    /// `drain_timeout` after [`Server::begin_drain`], else as `shutdown`.
    pub fn shutdown(&mut self) {
        let reason = if self.ctx.draining() {
            EndReason::Drain
        } else {
            EndReason::Shutdown
        };
        self.shutdown_because(reason);
    }

    /// [`Server::shutdown`], the pairs it cuts ending for `reason` (a second
    /// signal during a drain is a shutdown, not the drain's timeout).
    pub fn shutdown_because(&mut self, reason: EndReason) {
        if self.ctx.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let (lock, cond) = &self.ctx.stop_signal;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cond.notify_all();
        }
        for listener in self.listeners.iter_mut().chain(&mut self.metrics_listener) {
            // The accept loop checks the flag after each accept: stopping the
            // socket wakes it (and closes the port at once); without a second
            // descriptor, a connection of our own does. If that fails the
            // thread stays blocked in accept, harmless at process exit, so do
            // not wait for it.
            if listener.inherited {
                // Never shut down systemd's socket; a loop a drain already
                // ended needs no wake (which would queue a connection of
                // ours for the next process).
                drop(listener.socket.take());
                match listener.thread.take() {
                    Some(thread) if thread.is_finished() => {
                        let _ = thread.join();
                    }
                    thread => listener::wake_and_join(listener.local, thread, WAKE_TIMEOUT),
                }
                continue;
            }
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
        for victim in self.ctx.table.drain(reason) {
            victim.kill();
        }
        self.ctx.registry.kill_all();
        for thread in [self.reaper.take(), self.watch.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
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

/// The most accepts parked at once, from `max_parked_accepts` and the
/// descriptor limit in force now (the relay raised it at start).
fn parked_limit(config: &Config) -> usize {
    crate::relay::table::parked_cap(
        config.max_parked_accepts,
        crate::relay::table::descriptor_limit(),
    )
}

/// The token verifier the configuration asks for: its keys loaded (an error
/// names the file), or `None` when tokens are not configured.
fn token_verifier(config: &Config, running: Option<&Verifier>) -> Result<Option<Arc<Verifier>>> {
    if !config.tokens_configured() {
        return Ok(None);
    }
    let keys = TokenKeys::load(&config.token_keys)
        .map_err(|e: KeyFileError| Error::Config(e.to_string()))?;
    if keys.is_empty() {
        crate::warn!("no token_keys: only unsigned tokens can pass");
    } else {
        let kids: Vec<&str> = keys.keys().iter().map(|k| k.kid.as_str()).collect();
        crate::info!(
            kids = kids.join(",").as_str();
            "association tokens: {} key(s)",
            kids.len()
        );
    }
    if config.allow_unsigned_tokens {
        crate::warn!(
            "allow_unsigned_tokens is on: anyone can write a token this relay accepts; for development only"
        );
    }
    let options = VerifierOptions {
        leeway: config.token_leeway,
        allow_unsigned: config.allow_unsigned_tokens,
        ..VerifierOptions::default()
    };
    Ok(Some(Arc::new(match running {
        // A reload keeps the jtis already used.
        Some(running) => running.reloaded(keys, options),
        None => Verifier::new(keys, options),
    })))
}
