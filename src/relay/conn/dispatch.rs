//! A connection's first bytes: JET (`JET\0`) or HTTP, and the JET request read
//! within the handshake timeout.

use crate::relay::conn::deadline::{read_exact_by, read_failed, ReadError};
use crate::relay::conn::request::{reject, serve_request, Answer, JetAnswer};
use crate::relay::listen::ClientPermits;
use crate::relay::metrics::Outcome;
use crate::relay::shared::Context;
use crate::relay::stream::Stream;
use crate::wire::message::{self, RequestError};
use crate::wire::packet::{self, HEADER_LEN, SIGNATURE};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Serves one accepted TCP connection from its first byte on, holding its
/// client's permits.
pub fn handle(ctx: Arc<Context>, sock: TcpStream, peer: SocketAddr, permits: ClientPermits) {
    let Some((mut stream, conn)) = crate::relay::shared::tcp_stream(&ctx, sock, permits.connection)
    else {
        return;
    };
    stream.hold_handshake(permits.handshake);
    let _scope = crate::log::conn_scope(conn);
    crate::info!("peer={peer} accepted");
    let deadline = Instant::now() + ctx.config().handshake_timeout;
    dispatch(&ctx, conn, stream, deadline);
}

/// Reads the first bytes of a connection's stream (plain TCP, or TLS after its
/// handshake) and serves it: `JET\0` is the binary protocol, anything else
/// HTTP (the REST API and WebSocket upgrades). Everything must arrive before
/// `deadline`.
pub fn dispatch(ctx: &Arc<Context>, conn: u64, mut stream: Stream, deadline: Instant) {
    let mut header = [0; HEADER_LEN];
    if let Err(e) = read_exact_by(&mut stream, &mut header, deadline) {
        return read_failed(ctx, conn, e);
    }
    if header[..4] != SIGNATURE {
        return crate::relay::conn::http::serve(ctx, conn, stream, &header, deadline);
    }
    serve_jet(ctx, conn, stream, &header, deadline);
}

/// Serves a connection whose first 8 bytes are a JET header.
pub fn serve_jet(
    ctx: &Arc<Context>,
    conn: u64,
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
        return read_failed(ctx, conn, e);
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
            return reject(ctx, conn, &mut stream, &answer, (400, &why), deadline);
        }
    };
    if let Err((status, why)) = crate::relay::conn::auth::check_jet(ctx, &payload, &request) {
        // Not `reject`: its per-status counters have no 401/403 and would
        // count these as bad requests.
        ctx.metrics.handshake(Outcome::Rejected);
        crate::warn!("rejected {status}: {why}");
        let answer = JetAnswer {
            version: request.version,
        };
        return answer.refuse(ctx, &mut stream, status);
    }
    // The request is read: this connection is no handshake in progress now.
    stream.end_handshake();
    // From here the peer's bytes are relayed data: no more timeouts on reads.
    if let Err(e) = stream.clear_read_deadline() {
        return read_failed(ctx, conn, ReadError::Closed(e));
    }
    crate::debug!("request {request:?}");
    let answer = JetAnswer {
        version: request.version,
    };
    serve_request(ctx, conn, stream, &request, &answer, deadline);
}
