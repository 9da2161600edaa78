//! The PROXY header a balancer sends first on a `proxy_protocol` listener: read exactly, judged, counted.

use crate::relay::conn::deadline::ReadError;
use crate::relay::limits::ClientPermits;
use crate::relay::metrics::ProxyFailure;
use crate::relay::shared::Context;
use crate::wire::packet::SIGNATURE;
use crate::wire::proxy_header::{
    self, Command, Parsed, ProxyHeader, ProxyHeaderError, Version, MAX_HEADER_LEN,
};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// What a connection may ask for once its first bytes are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A peer (direct, or named by a PROXY header): JET, REST and WebSocket.
    Everything,
    /// The balancer's own connection (a v2 LOCAL header): `GET /health` is
    /// answered, anything else is closed without an answer and counted.
    HealthOnly,
}

/// A connection let in: who it speaks for and what it may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The client: the socket's peer, or the one a PROXY header names. This is
    /// the address for logs and per-client limits.
    pub peer: SocketAddr,
    /// What the connection may ask for.
    pub scope: Scope,
    /// For the accept log line: empty, or how the client was learnt
    /// (` via PROXY v2 from 127.0.0.1:40312`).
    pub via: String,
}

impl Admitted {
    /// The connection's "accepted" log line: info for peers, debug for the
    /// balancer's own checks (one a second per balancer would drown the log).
    pub fn log_accepted(&self, transport: &str) {
        let (peer, via) = (self.peer, &self.via);
        match self.scope {
            Scope::Everything => crate::info!("peer={peer} accepted{transport}{via}"),
            Scope::HealthOnly => crate::debug!("peer={peer} accepted{transport}{via}"),
        }
    }
}

/// Takes a connection's permits (`[client_limits]` `max_connections` and
/// `max_handshakes`) for `client`, or cuts it: the protocol has no answer
/// yet, so the client sees a reset, and on a plain listener the accept loop
/// asks before the connection costs a thread. Counted in the client-limit
/// refusals; logged at debug only, since the client decides how often.
pub fn client_permits(
    ctx: &Context,
    sock: &TcpStream,
    client: SocketAddr,
) -> Option<ClientPermits> {
    match ctx.limits.connection_permits(client.ip()) {
        Ok(permits) => Some(permits),
        Err(over) => {
            crate::debug!(peer:% = client; "refused: {over}");
            crate::relay::socket::cut(sock);
            None
        }
    }
}

/// The permits of an admitted connection: `taken` by the accept loop (a
/// plain listener), none for the balancer's own checks (never limited),
/// else those of the client its PROXY header named.
/// The connection's client (after its PROXY header on a `proxy_protocol`
/// listener) and the permits it holds: those the accept loop took, or those
/// of the client the header names. `None`: the connection is closed.
pub fn admit_client(
    ctx: &Context,
    sock: &TcpStream,
    peer: SocketAddr,
    (proxy_protocol, taken): (bool, Option<ClientPermits>),
    deadline: Instant,
) -> Option<(Admitted, ClientPermits)> {
    let admitted = admit(ctx, sock, peer, proxy_protocol, deadline)?;
    let permits = admitted_permits(ctx, sock, &admitted, taken)?;
    Some((admitted, permits))
}

pub fn admitted_permits(
    ctx: &Context,
    sock: &TcpStream,
    admitted: &Admitted,
    taken: Option<ClientPermits>,
) -> Option<ClientPermits> {
    match (taken, admitted.scope) {
        (Some(permits), _) => Some(permits),
        (None, Scope::HealthOnly) => Some(ClientPermits::untracked()),
        (None, Scope::Everything) => client_permits(ctx, sock, admitted.peer),
    }
}

/// Reads the PROXY header at the start of a stream through `read` (which
/// fills part of the buffer it is given, like [`Read::read`], or fails), and
/// never asks for a byte past the header: each read is bounded by the parser's
/// lower bound on the header's length, so the bytes after it (a JET packet, an
/// HTTP request, a TLS client hello) stay in the socket for the next layer.
pub fn read_header(
    read: &mut dyn FnMut(&mut [u8]) -> Result<usize, ReadError>,
) -> Result<ProxyHeader, ProxyFailure> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut have = 0;
    loop {
        match proxy_header::parse(&buf[..have]) {
            Ok(Parsed::Complete { header, consumed }) => {
                // `need_at_least` never exceeds the header's length, so the
                // buffer holds the header and nothing more.
                debug_assert_eq!(consumed, have, "read past the PROXY header");
                return Ok(header);
            }
            Ok(Parsed::Incomplete { need_at_least }) => {
                let want = need_at_least.min(MAX_HEADER_LEN);
                match read(&mut buf[have..want]) {
                    Ok(n) => have += n,
                    Err(ReadError::Timeout) => return Err(ProxyFailure::Timeout),
                    Err(ReadError::Closed(_)) => return Err(ProxyFailure::Truncated),
                }
            }
            Err(e) => return Err(classify(&e, &buf[..have])),
        }
    }
}

/// The counter a parse error goes to; `start` is what was read, to tell a
/// missing header (a request straight away) from other bytes.
fn classify(e: &ProxyHeaderError, start: &[u8]) -> ProxyFailure {
    match e {
        ProxyHeaderError::WrongSignature if looks_like_a_request(start) => ProxyFailure::Missing,
        ProxyHeaderError::WrongSignature => ProxyFailure::WrongSignature,
        ProxyHeaderError::Truncated { .. } => ProxyFailure::Truncated,
        ProxyHeaderError::V1TooLong | ProxyHeaderError::V2TooLong { .. } => ProxyFailure::Oversize,
        ProxyHeaderError::UnknownVersion(_) => ProxyFailure::UnknownVersion,
        ProxyHeaderError::UnknownCommand(_)
        | ProxyHeaderError::UnknownFamily(_)
        | ProxyHeaderError::V1UnknownProtocol
        | ProxyHeaderError::V2AddressTooShort { .. }
        | ProxyHeaderError::V1Malformed(_) => ProxyFailure::Malformed,
    }
}

/// True when `start` begins like a JET packet or an HTTP request line (as far
/// as it goes: the parser stops at the first byte that rules out a header).
fn looks_like_a_request(start: &[u8]) -> bool {
    let n = start.len().min(SIGNATURE.len());
    let jet = n > 0 && start[..n] == SIGNATURE[..n];
    let method = start.iter().take_while(|b| b.is_ascii_uppercase()).count();
    let http = method > 0
        && (method == start.len() || (3..=7).contains(&method) && start.get(method) == Some(&b' '));
    jet || http
}

/// Reads from a socket before `deadline`, however slowly the bytes come.
fn read_socket_by(sock: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, ReadError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        crate::relay::stream::tcp::set_read_deadline(sock, left).map_err(ReadError::Closed)?;
        match (&*sock).read(buf) {
            Ok(0) => return Err(ReadError::Closed(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted || crate::error::is_timeout(&e) => {}
            Err(e) => return Err(ReadError::Closed(e)),
        }
    }
}

/// Admits a connection just accepted from `peer`. On a listener without
/// `proxy_protocol`: the socket's peer, for everything. On one with it: the
/// peer must be a trusted proxy and send a whole, valid header before
/// `deadline` (on TLS listeners before the TLS handshake); the client it
/// names replaces `peer` (a header without an address, such as v1 UNKNOWN,
/// keeps the socket's, as the spec says). A LOCAL header is the balancer
/// checking on us: [`Scope::HealthOnly`]. `None`: the connection must be
/// closed now; the reason is counted and logged.
pub fn admit(
    ctx: &Context,
    sock: &TcpStream,
    peer: SocketAddr,
    proxy_protocol: bool,
    deadline: Instant,
) -> Option<Admitted> {
    if !proxy_protocol {
        return Some(Admitted {
            peer,
            scope: Scope::Everything,
            via: String::new(),
        });
    }
    let failed = |reason: ProxyFailure, why: &str| {
        ctx.metrics.proxy_failure(reason);
        crate::warn!(
            "peer={peer} closed: {why} (proxy_header_failure {})",
            reason.as_str()
        );
        None
    };
    if !ctx.config().trusted_proxies.contains(peer.ip()) {
        return failed(
            ProxyFailure::Untrusted,
            "not a trusted proxy on a proxy_protocol listener",
        );
    }
    let header = match read_header(&mut |buf| read_socket_by(sock, buf, deadline)) {
        Ok(header) => header,
        Err(reason) => return failed(reason, "no valid PROXY header"),
    };
    let version = match header.version {
        Version::V1 => "v1",
        Version::V2 => "v2",
    };
    let (client, scope, command) = match header.command {
        // The addresses of a LOCAL header are the balancer's own socket's.
        Command::Local => (peer, Scope::HealthOnly, " LOCAL"),
        Command::Proxy => (header.source.unwrap_or(peer), Scope::Everything, ""),
    };
    Some(Admitted {
        peer: client,
        scope,
        via: format!(" via PROXY {version}{command} from {peer}"),
    })
}

/// Closes a balancer's own connection that asked for something other than
/// `/health`: counted, logged at debug only (a layer 4 check does this every
/// second).
pub fn local_closed(ctx: &Context, what: &str) {
    ctx.metrics
        .proxy_local_closed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::debug!("balancer's own connection closed: {what}");
}

#[cfg(test)]
mod tests;
