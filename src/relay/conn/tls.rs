//! The TLS handshake of a connection accepted on a TLS listener, under the
//! handshake deadline, before the same dispatch as plain TCP.

use crate::error::{is_timeout, Result};
use crate::relay::conn::deadline::ReadError;
use crate::relay::limits::ClientPermits;
use crate::relay::metrics::Outcome;
use crate::relay::shared::Context;
use crate::relay::stream::tcp::set_read_deadline;
use crate::relay::stream::Stream;
use crate::transport::tls::TlsStream;
use rustls::{ServerConfig, ServerConnection};
use std::io::{self};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// How a TLS handshake failed.
enum HandshakeError {
    /// The handshake timeout passed first.
    Timeout,
    /// The peer closed or reset.
    Closed(io::Error),
    /// The bytes were not an acceptable TLS handshake.
    Tls(String),
}

/// Serves one connection accepted on a TLS listener, on its pool thread: the
/// TLS handshake within the handshake timeout, then the same dispatch as
/// plain TCP (JET over TLS, or HTTPS: the REST API and `wss://` upgrades).
/// The client's permits are taken as for plain TCP
/// (`dispatch::handle`); its handshake permit covers the TLS handshake too.
pub fn handle(
    ctx: Arc<Context>,
    sock: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    (proxy_protocol, permits): (bool, Option<ClientPermits>),
) {
    let deadline = Instant::now() + ctx.config().handshake_timeout;
    // Registered after shutdown closed every socket: closed here, as nobody
    // else would close it.
    let Some((sock, registration)) = crate::relay::shared::register(&ctx, sock) else {
        return;
    };
    let _scope = crate::log::conn_scope(registration.id());
    // A PROXY header comes before the TLS handshake.
    let from = (proxy_protocol, permits);
    let admitted = crate::relay::conn::proxy::admit_client(&ctx, &sock, peer, from, deadline);
    let Some((admitted, permits)) = admitted else {
        return;
    };
    registration.hold(permits.connection);
    admitted.log_accepted(" (tls)");
    let mut tls = match ServerConnection::new(config) {
        Ok(tls) => tls,
        Err(e) => {
            crate::error!("closed: cannot start a TLS session: {e}");
            return;
        }
    };
    match complete_handshake(&sock, &mut tls, deadline) {
        Ok(()) => {}
        Err(HandshakeError::Timeout) => {
            return crate::relay::conn::deadline::read_failed(&ctx, ReadError::Timeout)
        }
        Err(HandshakeError::Closed(e)) => {
            return crate::relay::conn::deadline::read_failed(&ctx, ReadError::Closed(e))
        }
        Err(HandshakeError::Tls(why)) => {
            ctx.metrics
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            ctx.metrics.handshake(Outcome::Malformed);
            crate::warn!("closed: TLS handshake failed: {why}");
            return;
        }
    }
    if let Err(e) = sock.set_write_timeout(None) {
        return crate::relay::conn::deadline::read_failed(&ctx, ReadError::Closed(e));
    }
    crate::debug!(
        tls_version = tls.protocol_version().and_then(|v| v.as_str()).unwrap_or("?");
        "TLS established"
    );
    let mut stream = Stream::tls(TlsStream::new(sock, tls), registration);
    stream.hold_handshake(permits.handshake);
    crate::relay::conn::dispatch::dispatch(&ctx, stream, deadline, &admitted);
}

/// Runs the server side of the TLS handshake before `deadline`, however
/// slowly the client's bytes come. The connection is still single-threaded
/// here, so rustls reads the socket directly.
fn complete_handshake(
    sock: &TcpStream,
    tls: &mut ServerConnection,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    loop {
        while tls.wants_write() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::Timeout);
            }
            sock.set_write_timeout(Some(left))
                .map_err(HandshakeError::Closed)?;
            match tls.write_tls(&mut &*sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(HandshakeError::Timeout),
                Err(e) => return Err(HandshakeError::Closed(e)),
            }
        }
        if !tls.is_handshaking() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::Timeout);
        }
        set_read_deadline(sock, left).map_err(HandshakeError::Closed)?;
        match tls.read_tls(&mut &*sock) {
            Ok(0) => return Err(HandshakeError::Closed(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => continue,
            // The deframer refuses an oversized handshake message.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(HandshakeError::Tls(e.to_string()))
            }
            Err(e) => return Err(HandshakeError::Closed(e)),
        }
        if let Err(e) = tls.process_new_packets() {
            // Tell the client why (best effort: it may not speak TLS at all).
            let _ = sock.set_write_timeout(Some(crate::relay::conn::request::LINGER));
            let _ = tls.write_tls(&mut &*sock);
            return Err(HandshakeError::Tls(e.to_string()));
        }
    }
}
