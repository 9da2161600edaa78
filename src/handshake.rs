//! A connection's first moments: read the JET request within the handshake
//! timeout, answer it with one write, then park, pair, test or reject.

use crate::message::{self, Method, Request, RequestError};
use crate::metrics::Outcome;
use crate::packet::{self, HEADER_LEN, SIGNATURE};
use crate::pump::{self, Pair};
use crate::server::Context;
use crate::table::Reject;
use crate::transport::{set_read_deadline, Duplex, Stream};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a connect waits for an accept that is writing its 200 at that moment.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// After a final answer the relay reads (and drops) what the peer still sends
/// for at most this long, so closing does not reset the answer away.
pub const LINGER: Duration = Duration::from_millis(500);
/// The most bytes drained while lingering.
pub const LINGER_BYTES: usize = 64 * 1024;

/// How reading a request failed.
#[derive(Debug)]
pub enum ReadError {
    /// The handshake timeout passed.
    Timeout,
    /// The peer closed or reset.
    Closed(io::Error),
}

/// Reads exactly `buf.len()` bytes before `deadline`, however slowly they come.
pub fn read_exact_by(
    stream: &dyn Duplex,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        set_read_deadline(stream.socket(), left).map_err(ReadError::Closed)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(ReadError::Closed(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::error::is_timeout(&e) => {}
            Err(e) => return Err(ReadError::Closed(e)),
        }
    }
    Ok(())
}

/// Serves one accepted TCP connection from its first byte on.
pub fn handle(ctx: Arc<Context>, sock: TcpStream, peer: SocketAddr) {
    let Some((stream, conn)) = crate::server::tcp_stream(&ctx, sock) else {
        return;
    };
    crate::info!("conn={conn} peer={peer} accepted");
    let deadline = Instant::now() + ctx.config.handshake_timeout;
    dispatch(&ctx, conn, stream, deadline);
}

/// Reads the first bytes of a connection's stream (plain TCP, or TLS after its
/// handshake) and serves it: `JET\0` is the binary protocol, anything else
/// HTTP (the REST API and WebSocket upgrades). Everything must arrive before
/// `deadline`.
pub fn dispatch(ctx: &Arc<Context>, conn: u64, stream: Stream, deadline: Instant) {
    let mut header = [0; HEADER_LEN];
    if let Err(e) = read_exact_by(&*stream, &mut header, deadline) {
        return read_failed(ctx, conn, e);
    }
    if header[..4] != SIGNATURE {
        return crate::http::serve(ctx, conn, stream, &header, deadline);
    }
    serve_jet(ctx, conn, stream, &header, deadline);
}

/// Counts and logs a handshake that ended before a whole request arrived.
pub fn read_failed(ctx: &Context, conn: u64, e: ReadError) {
    match e {
        ReadError::Timeout => {
            ctx.metrics.handshake(Outcome::Timeout);
            crate::warn!("conn={conn} closed: no complete request within the handshake timeout");
        }
        ReadError::Closed(e) => {
            ctx.metrics.handshake(Outcome::Closed);
            crate::info!("conn={conn} closed during the handshake: {e}");
        }
    }
}

/// Serves a connection whose first 8 bytes are a JET header.
pub fn serve_jet(
    ctx: &Arc<Context>,
    conn: u64,
    stream: Stream,
    header: &[u8; HEADER_LEN],
    deadline: Instant,
) {
    let len = match packet::payload_len(header) {
        Ok(len) => len,
        Err(e) => {
            ctx.metrics.handshake(Outcome::Malformed);
            crate::warn!("conn={conn} closed: malformed packet: {e}");
            return;
        }
    };
    let mut payload = vec![0; len];
    if let Err(e) = read_exact_by(&*stream, &mut payload, deadline) {
        return read_failed(ctx, conn, e);
    }
    let mask = header[7];
    payload.iter_mut().for_each(|b| *b ^= mask);
    let request = match message::parse_request(&payload) {
        Ok(request) => request,
        Err(RequestError::Malformed(why)) => {
            ctx.metrics.handshake(Outcome::Malformed);
            crate::warn!("conn={conn} closed: malformed packet: {why}");
            return;
        }
        Err(RequestError::BadRequest(why)) => {
            let version = message::requested_version(&payload);
            return reject(ctx, conn, &stream, 400, version, &why);
        }
    };
    // From here the peer's bytes are relayed data: no more timeouts on reads.
    if let Err(e) = stream.socket().set_read_timeout(None) {
        return read_failed(ctx, conn, ReadError::Closed(e));
    }
    crate::debug!("conn={conn} request {request:?}");
    match request.method {
        Method::Accept => accept(ctx, conn, stream, &request),
        Method::Connect => connect(ctx, conn, stream, &request, deadline),
        Method::Test => test(ctx, conn, &stream, &request),
    }
}

fn accept(ctx: &Arc<Context>, conn: u64, stream: Stream, request: &Request) {
    let reserved = match request.association {
        None if ctx.config.accept_requires_api() => Err(Reject::NotFound(
            "version 1 accepts cannot name an association created through the API",
        )),
        None => ctx.table.reserve_v1(stream.kind()),
        Some(association) => ctx.table.reserve_accept(
            association,
            request.candidate,
            stream.kind(),
            !ctx.config.accept_requires_api(),
        ),
    };
    let reservation = match reserved {
        Ok(reservation) => reservation,
        Err(why) => {
            return reject(
                ctx,
                conn,
                &stream,
                why.status(),
                request.version,
                why.reason(),
            );
        }
    };
    let (association, candidate) = (reservation.association, reservation.candidate);
    let response = if request.version == 1 {
        let timeout = ctx.config.association_ttl.as_secs_f64().ceil().to_string();
        message::response_packet(
            200,
            1,
            &[
                ("Jet-Association", &association.to_string()),
                ("Jet-Instance", &ctx.config.instance),
                ("Jet-Timeout", &timeout),
            ],
        )
    } else {
        message::response_packet(200, request.version, &[])
    };
    // The 200 goes out before the candidate is visible to connects, so a
    // fast connect can never relay bytes ahead of it.
    if let Err(e) = write_response(ctx, &*stream, &response) {
        ctx.table.unreserve(reservation);
        return read_failed(ctx, conn, ReadError::Closed(e));
    }
    match ctx.table.publish(reservation, stream) {
        Ok(()) => {
            ctx.metrics.handshake(Outcome::Parked);
            crate::info!(
                "conn={conn} association={association} candidate={candidate} parked (accept, version {})",
                request.version
            );
        }
        Err(stream) => {
            // Deleted or expired while we wrote the 200, or shutting down.
            ctx.metrics.handshake(Outcome::Closed);
            crate::info!(
                "conn={conn} association={association} went away before the accept parked"
            );
            stream.kill();
        }
    }
}

fn connect(ctx: &Arc<Context>, conn: u64, stream: Stream, request: &Request, deadline: Instant) {
    let association = request
        .association
        .expect("connect requests always name an association");
    let candidate = request.candidate;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(PUBLISH_WAIT);
    let (accept, stats) = match ctx.table.pair(association, candidate, &stream, wait) {
        Ok(pair) => pair,
        Err(why) => {
            return reject(
                ctx,
                conn,
                &stream,
                why.status(),
                request.version,
                why.reason(),
            )
        }
    };
    let response = message::response_packet(200, request.version, &[]);
    if let Err(e) = write_response(ctx, &*stream, &response) {
        // The connecting peer left; the accept cannot be parked again (its
        // peer saw the pairing start), so the pair ends here.
        crate::info!("conn={conn} association={association} candidate={candidate} connect peer left before its 200: {e}");
        stream.kill();
        accept.kill();
        ctx.table.release(association, candidate, &stats);
        ctx.metrics.handshake(Outcome::Closed);
        return;
    }
    ctx.metrics.handshake(Outcome::Paired);
    crate::info!(
        "conn={conn} association={association} candidate={candidate} paired (accept {} + connect {}, version {})",
        accept.kind().as_str(),
        stream.kind().as_str(),
        request.version
    );
    pump::relay(
        Arc::clone(ctx),
        Pair {
            association,
            candidate,
            accept,
            connect: stream,
            stats,
        },
    );
}

fn test(ctx: &Arc<Context>, conn: u64, stream: &Stream, request: &Request) {
    let association = request
        .association
        .expect("test requests always name an association");
    match ctx.table.test(association, request.candidate) {
        Ok(()) => {
            let response = message::response_packet(200, request.version, &[]);
            if write_response(ctx, &**stream, &response).is_ok() {
                ctx.metrics.handshake(Outcome::Tested);
                crate::info!(
                    "conn={conn} association={association} candidate={} tested: 200",
                    request.candidate
                );
                linger_close(stream.socket());
            }
        }
        Err(why) => reject(
            ctx,
            conn,
            stream,
            why.status(),
            request.version,
            why.reason(),
        ),
    }
}

/// Answers a well-formed request with an error status, then closes.
fn reject(ctx: &Context, conn: u64, stream: &Stream, status: u16, version: u8, why: &str) {
    ctx.metrics.handshake(Outcome::Rejected);
    ctx.metrics.rejected(status);
    crate::warn!("conn={conn} rejected {status}: {why}");
    let response = message::response_packet(status, version, &[]);
    if write_response(ctx, &**stream, &response).is_ok() {
        linger_close(stream.socket());
    }
}

/// Writes a whole response packet in one write, bounded by the handshake timeout.
fn write_response(ctx: &Context, stream: &dyn Duplex, response: &[u8]) -> io::Result<()> {
    let sock = stream.socket();
    sock.set_write_timeout(Some(ctx.config.handshake_timeout))?;
    stream.write_all(response)?;
    sock.set_write_timeout(None)
}

/// Ends our side, then drains what the peer still sends for a short while:
/// closing a socket with unread input sends a reset, which can destroy the
/// answer before the peer reads it.
pub fn linger_close(sock: &TcpStream) {
    let _ = sock.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = [0u8; 4096];
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || set_read_deadline(sock, left).is_err() {
            return;
        }
        match io::Read::read(&mut &*sock, &mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
