//! A connection's first bytes: JET (`JET\0`) or HTTP, and the JET request read
//! within the handshake timeout.

use crate::relay::conn::deadline::{read_exact_by, read_failed, ReadError};
use crate::relay::conn::proxy::{self, Admitted, Scope};
use crate::relay::conn::request::{reject, serve_request, Answer, JetAnswer};
use crate::relay::limits::ClientPermits;
use crate::relay::metrics::Outcome;
use crate::relay::shared::Context;
use crate::relay::stream::Stream;
use crate::wire::message::{self, Command, RequestError};
use crate::wire::packet::{self, HEADER_LEN, SIGNATURE};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Serves one accepted TCP connection from its first byte on (its PROXY
/// header first on a `proxy_protocol` listener), holding its client's
/// permits: those the accept loop took, or, after a PROXY header, those of
/// the client it names.
pub fn handle(
    ctx: Arc<Context>,
    sock: TcpStream,
    peer: SocketAddr,
    (proxy_protocol, permits): (bool, Option<ClientPermits>),
) {
    let Some((mut stream, conn)) = crate::relay::shared::tcp_stream(&ctx, sock) else {
        return;
    };
    let _scope = crate::log::conn_scope(conn);
    let deadline = Instant::now() + ctx.config().handshake_timeout;
    let from = (proxy_protocol, permits);
    let Some((admitted, permits)) =
        proxy::admit_client(&ctx, stream.socket(), peer, from, deadline)
    else {
        return;
    };
    stream.hold_connection(permits.connection);
    stream.hold_handshake(permits.handshake);
    admitted.log_accepted("");
    dispatch(&ctx, stream, deadline, &admitted);
}

/// Reads the first bytes of a connection's stream (plain TCP, or TLS after its
/// handshake) and serves it: `JET\0` is the binary protocol, anything else
/// HTTP (the REST API and WebSocket upgrades). Everything must arrive before
/// `deadline`. `from` says who the connection speaks for (its client, for
/// logs and per-client limits); one limited to [`Scope::HealthOnly`] (the balancer's
/// own, after a PROXY LOCAL header) gets `/health` and nothing else: the rest
/// is closed quietly and counted.
pub fn dispatch(ctx: &Arc<Context>, mut stream: Stream, deadline: Instant, from: &Admitted) {
    let scope = from.scope;
    // The pair's end line names the client, not a balancer in front of it.
    stream.set_client(from.peer);
    let mut header = [0; HEADER_LEN];
    if let Err(e) = read_exact_by(&mut stream, &mut header, deadline) {
        if scope == Scope::HealthOnly {
            // A layer 4 check: the LOCAL header alone, then a close.
            return proxy::local_closed(ctx, "nothing after the header");
        }
        return read_failed(ctx, e);
    }
    if header[..4] != SIGNATURE {
        return crate::relay::conn::keepalive::serve(ctx, stream, &header, deadline, from);
    }
    if scope == Scope::HealthOnly {
        return proxy::local_closed(ctx, "a JET packet");
    }
    serve_jet(ctx, stream, &header, deadline);
}

/// Serves a connection whose first 8 bytes are a JET header.
pub fn serve_jet(
    ctx: &Arc<Context>,
    mut stream: Stream,
    header: &[u8; HEADER_LEN],
    deadline: Instant,
) {
    let len = match packet::payload_len(header) {
        Ok(len) => len,
        Err(e) => {
            ctx.metrics.handshake(Outcome::Malformed);
            crate::warn!("closed: malformed packet: {e}");
            return;
        }
    };
    let mut payload = vec![0; len];
    if let Err(e) = read_exact_by(&mut stream, &mut payload, deadline) {
        return read_failed(ctx, e);
    }
    packet::unmask(&mut payload, header[7]);
    let request = match message::parse_request(&payload) {
        Ok(request) => request,
        Err(RequestError::Malformed(why)) => {
            ctx.metrics.handshake(Outcome::Malformed);
            crate::warn!("closed: malformed packet: {why}");
            return;
        }
        Err(RequestError::BadRequest(why)) => {
            let version = message::requested_version(&payload);
            let answer = JetAnswer { version };
            return reject(ctx, &mut stream, &answer, (400, &why), deadline);
        }
    };
    if let Err((status, why)) = crate::relay::conn::auth::check_jet(ctx, &payload, &request) {
        // Not `reject`: its per-status counters have no 401/403 and would
        // count these as bad requests.
        ctx.metrics.handshake(Outcome::Rejected);
        crate::warn!(status = status; "rejected {status}: {why}");
        let answer = JetAnswer {
            version: request.version,
        };
        return answer.refuse(ctx, &mut stream, status, &why);
    }
    // The request is read: this connection is no handshake in progress now.
    stream.end_handshake();
    // From here the peer's bytes are relayed data: no more timeouts on reads.
    if let Err(e) = stream.clear_read_deadline() {
        return read_failed(ctx, ReadError::Closed(e));
    }
    if log::log_enabled!(log::Level::Debug) {
        // Only formatted when debug lines are written: this runs per request.
        let (association, candidate) = ids(request.command);
        crate::debug!(
            method = request.method().as_str(),
            version = request.version,
            association = association.as_str(),
            candidate = candidate.as_str();
            "request"
        );
    }
    let answer = JetAnswer {
        version: request.version,
    };
    serve_request(ctx, stream, &request, &answer, deadline);
}

/// A command's association and candidate for a log line (empty when the
/// command names none: a version 1 accept).
fn ids(command: Command) -> (String, String) {
    command
        .ids()
        .map_or((String::new(), String::new()), |(a, c)| {
            (a.to_string(), c.to_string())
        })
}
