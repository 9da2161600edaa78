//! State shared by every thread of one relay: the configuration, the table,
//! the counters, the registry of open sockets, the thread pool, the listeners.

use crate::relay::config::{Config, ListenUrl};
use crate::relay::limits::ClientLimits;
use crate::relay::metrics::Metrics;
use crate::relay::pool::Pool;
use crate::relay::registry::{Registration, Registry};
use crate::relay::stream::Stream;
use crate::relay::table::Table;
use crate::relay::token::Verifier;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
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
    /// The association token verifier, when tokens are configured. Behind a
    /// lock so a reload can swap it; readers hold it only to clone the `Arc`.
    pub tokens: RwLock<Option<Arc<Verifier>>>,
    /// Per-client limits: connections, handshakes, parked accepts, the REST rate.
    pub limits: ClientLimits,
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
        tokens: Option<Arc<Verifier>>,
        limits: ClientLimits,
    ) -> Context {
        Context {
            tokens: RwLock::new(tokens),
            limits,
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

    /// The configuration in force: one whole configuration (a reload swaps
    /// it whole). Callers read it where they need a setting; a connection
    /// mid-handshake during a reload sees the new one from then on.
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

    /// The token verifier in force, if tokens are configured.
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        // A writer only ever swaps the Arc, so a poisoned lock still holds a whole one.
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a new token verifier (or none) in force: a reload.
    pub(crate) fn set_verifier(&self, verifier: Option<Arc<Verifier>>) {
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = verifier;
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

    /// The `Jet-Instance` of a version 1 accept that arrived on local address
    /// `arrival`: the configured `instance` when it is not the default, else
    /// the address peers reach the arrival's listener at (so a wildcard bind
    /// never sends peers to `localhost` or `0.0.0.0`).
    pub fn instance_for(&self, arrival: Option<SocketAddr>) -> String {
        let config = self.config();
        if config.instance != crate::relay::config::DEFAULT_INSTANCE {
            return config.instance.clone();
        }
        arrival
            .and_then(|at| self.listeners.iter().find(|l| l.took(at)))
            .and_then(|l| l.authority(arrival))
            .unwrap_or_else(|| config.instance.clone())
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
    /// True for an IPv6 wildcard (`[::]`) that takes IPv4 connections too
    /// (`IPV6_V6ONLY` off, the Linux default unless `net.ipv6.bindv6only` = 1).
    pub dual_stack: bool,
}

impl BoundListener {
    /// True when a connection whose local address is `arrival` came in on
    /// this listener.
    pub fn took(&self, arrival: SocketAddr) -> bool {
        let ip = arrival.ip().to_canonical();
        arrival.port() == self.local.port()
            && (ip == self.local.ip()
                || self.local.ip().is_unspecified()
                    && (ip.is_ipv4() == self.local.is_ipv4() || self.dual_stack))
    }

    /// `HOST:PORT` a peer can reach this listener at, for a request that
    /// arrived on local address `arrival`: the external URL's authority, else
    /// the bound address, else (a wildcard bind, which must never be handed
    /// out) the address the request arrived on. `None` when a wildcard
    /// listener cannot be named from that arrival: an IPv4-only wildcard
    /// asked through a non-loopback IPv6 address, or the reverse.
    pub fn authority(&self, arrival: Option<SocketAddr>) -> Option<String> {
        if let Some(url) = &self.external_url {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            return Some(rest.trim_end_matches('/').to_owned());
        }
        if !self.local.ip().is_unspecified() {
            return Some(self.local.to_string());
        }
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
        let arrived = arrival?.ip().to_canonical();
        let ip = match (self.local.ip(), arrived) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => arrived,
            (IpAddr::V6(_), IpAddr::V4(_)) if self.dual_stack => arrived,
            // A peer on this very host reaches the other family's loopback.
            (IpAddr::V4(_), IpAddr::V6(a)) if a.is_loopback() => Ipv4Addr::LOCALHOST.into(),
            (IpAddr::V6(_), IpAddr::V4(a)) if a.is_loopback() => Ipv6Addr::LOCALHOST.into(),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.local.port()).to_string())
    }
}

/// Wraps an accepted socket: no Nagle delay (inherited from the listener on
/// Linux), registered for shutdown.
/// `None` when shutdown has begun: the socket is closed at once.
///
/// Shutdown sets its flag before it takes the registry's snapshot, and both
/// registering and the snapshot take the registry lock: a socket registered
/// after the snapshot therefore sees the flag here.
pub(crate) fn tcp_stream(ctx: &Context, sock: TcpStream) -> Option<(Stream, u64)> {
    let (sock, registration) = register(ctx, sock)?;
    let id = registration.id();
    Some((Stream::tcp(sock, registration), id))
}

/// An accepted socket with Nagle off (where the listener did not pass that
/// on), registered for shutdown; `None` when shutdown has begun (see
/// [`tcp_stream`]). TLS connections start here too, before their handshake.
pub(crate) fn register(ctx: &Context, sock: TcpStream) -> Option<(Arc<TcpStream>, Registration)> {
    crate::relay::stream::tcp::nodelay_accepted(&sock);
    let sock = Arc::new(sock);
    let registration = ctx.registry.register(&sock);
    if ctx.stopping() {
        return None;
    }
    Some((sock, registration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(bound: &str, dual_stack: bool, arrival: &str, expected: Option<&str>) {
        let listener = BoundListener {
            url: ListenUrl::parse(&format!("tcp://{bound}")).unwrap(),
            local: bound.parse().unwrap(),
            external_url: None,
            dual_stack,
        };
        let arrival: SocketAddr = arrival.parse().unwrap();
        assert_eq!(
            listener.authority(Some(arrival)).as_deref(),
            expected,
            "{bound} (dual stack: {dual_stack}) asked through {arrival}"
        );
    }

    #[test]
    fn a_wildcard_is_named_by_an_address_of_the_arrival_or_not_at_all() {
        check("10.0.0.1:80", false, "192.0.2.7:9", Some("10.0.0.1:80"));
        check("0.0.0.0:80", false, "192.0.2.7:9", Some("192.0.2.7:80"));
        check("0.0.0.0:80", false, "[::1]:9", Some("127.0.0.1:80"));
        check("0.0.0.0:80", false, "[2001:db8::7]:9", None);
        check("[::]:80", true, "[2001:db8::7]:9", Some("[2001:db8::7]:80"));
        check(
            "[::]:80",
            true,
            "[::ffff:192.0.2.7]:80",
            Some("192.0.2.7:80"),
        );
        check("[::]:80", true, "192.0.2.7:9", Some("192.0.2.7:80"));
        check("[::]:80", false, "192.0.2.7:9", None);
        check("[::]:80", false, "127.0.0.1:9", Some("[::1]:80"));
    }

    #[test]
    fn the_external_url_wins_and_needs_no_arrival() {
        let listener = BoundListener {
            url: ListenUrl::parse("tcp://0.0.0.0:80").unwrap(),
            local: "0.0.0.0:80".parse().unwrap(),
            external_url: Some("tcp://relay.example.net:443/".into()),
            dual_stack: false,
        };
        assert_eq!(
            listener.authority(None).as_deref(),
            Some("relay.example.net:443")
        );
        let bare = BoundListener {
            external_url: None,
            ..listener
        };
        assert_eq!(bare.authority(None), None);
    }
}
