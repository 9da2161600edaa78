//! The relay's listening sockets: binding them (backlog, `SO_REUSEPORT`,
//! errors a person can act on), and the accept loop that hands each
//! connection to a pool thread.

use crate::error::{Error, Result};
use crate::relay::config::{Config, ListenUrl};
use crate::relay::shared::{BoundListener, Context};
use crate::relay::socket;
use crate::transport::listener;
use rustls::ServerConfig;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Pause after `accept` fails for lack of descriptors or memory, so a full
/// file table does not turn the accept loop into a busy loop.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// The shortest interval between two warnings about exhausted descriptors.
pub const RESOURCE_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// Warns when a relay without an API key listens beyond loopback: anyone who
/// reaches it may create associations and park or connect on the ids they know.
pub(crate) fn warn_about_exposure(config: &Config, listeners: &[BoundListener]) {
    if config.api_key.is_some() {
        return;
    }
    for listener in listeners.iter().filter(|l| !l.local.ip().is_loopback()) {
        crate::warn!(
            "{} listens beyond loopback without an api_key: anyone who reaches it can create \
             associations and use the ids they know; listing, inspecting and deleting \
             associations are refused until api_key is set in relay.toml",
            listener.url
        );
    }
}

/// Binds one listener: each address its host resolves to in turn, with the
/// configured backlog and `SO_REUSEPORT` setting.
pub(crate) fn bind(config: &Config, url: &ListenUrl, reuse_port: bool) -> Result<TcpListener> {
    let addrs: Vec<SocketAddr> = url
        .address
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving {url}"), e))?
        .collect();
    let backlog = socket::effective_backlog(config.listen_backlog);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolves to no address");
    for addr in &addrs {
        match socket::bind_listener(*addr, backlog, reuse_port) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = e,
        }
    }
    Err(bind_error(url, &addrs, last))
}

/// Turns Nagle off on a bound listener (accepted sockets inherit it on
/// Linux) and reads the address it bound.
pub(crate) fn prepare(socket: &TcpListener, url: &ListenUrl) -> Result<SocketAddr> {
    crate::relay::stream::tcp::nodelay_listener(socket)
        .map_err(|e| Error::io(format!("turning Nagle off on {url}"), e))?;
    socket
        .local_addr()
        .map_err(|e| Error::io(format!("reading the address of {url}"), e))
}

/// The lowest port an unprivileged process may bind (below it Linux wants
/// `CAP_NET_BIND_SERVICE` unless `net.ipv4.ip_unprivileged_port_start` says otherwise).
pub const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// Why a listener could not bind, with what to do about a privileged port.
fn bind_error(url: &ListenUrl, addrs: &[SocketAddr], e: io::Error) -> Error {
    let privileged = addrs
        .iter()
        .any(|a| a.port() != 0 && a.port() < FIRST_UNPRIVILEGED_PORT);
    if e.kind() == io::ErrorKind::PermissionDenied && privileged {
        return Error::io(
            format!(
                "binding {url} (a port below {FIRST_UNPRIVILEGED_PORT} needs root or the \
                 CAP_NET_BIND_SERVICE capability: AmbientCapabilities=CAP_NET_BIND_SERVICE \
                 in the systemd unit, or `setcap cap_net_bind_service=+ep` on the binary)"
            ),
            e,
        );
    }
    Error::io(format!("binding {url}"), e)
}

/// Whether an IPv6 listener takes IPv6 connections only. The relay leaves
/// `IPV6_V6ONLY` as the system sets it: on Linux `[::]` is dual-stack (IPv4
/// peers too) unless `net.ipv6.bindv6only` is 1.
pub(crate) fn v6_only(socket: &TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::net::sockopt::ipv6_v6only(socket).unwrap_or(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        true
    }
}

/// What a listener's connections are for.
#[derive(Clone)]
pub(crate) enum Serves {
    /// JET, WebSocket and REST on listener number `index`, inside TLS when set.
    /// With `proxy_protocol`, each connection's PROXY header is read first.
    Relay {
        index: usize,
        tls: Option<Arc<ServerConfig>>,
        proxy_protocol: bool,
    },
    /// `GET /metrics` alone (`metrics_listen`).
    Metrics,
}

/// Accepts connections and hands each to a pool thread; a TLS listener's
/// handshake runs there too, so a slow client never holds this loop.
pub(crate) fn accept_loop(ctx: Arc<Context>, listener: TcpListener, serves: Serves) {
    // While descriptors are exhausted accept fails every few milliseconds;
    // say so once per interval, not once per failure.
    let mut last_warning: Option<std::time::Instant> = None;
    // A drain stops the relay's listeners; the metrics listener answers
    // until shutdown, so a balancer sees /health turn 503.
    let stops_on_drain = matches!(serves, Serves::Relay { .. });
    listener::accept_until(
        &listener,
        || {
            if stops_on_drain {
                ctx.draining()
            } else {
                ctx.stopping()
            }
        },
        |accepted| {
            match accepted {
                Ok((sock, peer)) => {
                    let conn_ctx = Arc::clone(&ctx);
                    let spawned = match serves.clone() {
                        Serves::Relay {
                            index,
                            tls,
                            proxy_protocol,
                        } => {
                            ctx.metrics.accepted(index);
                            // The client is the socket's peer unless a PROXY
                            // header names another: then its handler takes them.
                            let permits = if proxy_protocol {
                                None
                            } else {
                                match crate::relay::conn::proxy::client_permits(&ctx, &sock, peer) {
                                    Some(permits) => Some(permits),
                                    None => return,
                                }
                            };
                            ctx.pool.spawn(move || match tls {
                                Some(tls) => crate::relay::conn::tls::handle(
                                    conn_ctx,
                                    sock,
                                    peer,
                                    tls,
                                    (proxy_protocol, permits),
                                ),
                                None => crate::relay::conn::dispatch::handle(
                                    conn_ctx,
                                    sock,
                                    peer,
                                    (proxy_protocol, permits),
                                ),
                            })
                        }
                        Serves::Metrics => ctx.pool.spawn(move || {
                            crate::relay::conn::scrape::handle(conn_ctx, sock, peer)
                        }),
                    };
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
    fn a_privileged_port_refused_with_eacces_names_cap_net_bind_service() {
        let url = ListenUrl::parse("tcp://0.0.0.0:443").unwrap();
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        let at = |port| vec![SocketAddr::from(([0, 0, 0, 0], port))];
        let hint = bind_error(&url, &at(443), denied()).to_string();
        assert!(hint.contains("CAP_NET_BIND_SERVICE"), "{hint}");
        assert!(hint.contains("binding tcp://0.0.0.0:443"), "{hint}");
        // Not for other failures, nor for unprivileged ports.
        let in_use = io::Error::from(io::ErrorKind::AddrInUse);
        for message in [
            bind_error(&url, &at(443), in_use).to_string(),
            bind_error(&url, &at(8443), denied()).to_string(),
        ] {
            assert!(!message.contains("CAP_NET_BIND_SERVICE"), "{message}");
        }
    }

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
