//! A connection's first moments: read the JET request within the handshake
//! timeout, answer it with one write, then park, pair, test or reject.

use crate::message::{self, Method, Request, RequestError};
use crate::metrics::Outcome;
use crate::packet::{self, HEADER_LEN, SIGNATURE};
use crate::pump::{self, Pair};
use crate::server::Context;
use crate::table::Reject;
use crate::transport::{Duplex, Stream};
use std::io;
use std::net::{SocketAddr, TcpStream};
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
        filled += read_some_by(stream, &mut buf[filled..], deadline)?;
    }
    Ok(())
}

/// Reads at least one byte (as many as `buf` takes and have arrived) before
/// `deadline`.
///
/// On plain TCP it first takes what has already arrived without waiting, the
/// usual case for a request, and sets a read timeout only when it must wait.
pub fn read_some_by(
    stream: &dyn Duplex,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ReadError> {
    // Plain TCP first tries a read that cannot block; other transports wait.
    let mut must_wait = stream.raw_tcp().is_none();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        if !must_wait {
            must_wait = true;
            let sock = stream.socket();
            match crate::transport::read_arrived(sock, buf) {
                Ok(Some(0)) => return Err(ReadError::Closed(io::ErrorKind::UnexpectedEof.into())),
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Closed(e)),
            }
        }
        stream.set_read_deadline(left).map_err(ReadError::Closed)?;
        match stream.read(buf) {
            Ok(0) => return Err(ReadError::Closed(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::error::is_timeout(&e) => {}
            Err(e) => return Err(ReadError::Closed(e)),
        }
    }
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
            return reject(ctx, conn, &stream, &JetAnswer { version }, 400, &why);
        }
    };
    // From here the peer's bytes are relayed data: no more timeouts on reads.
    if let Err(e) = stream.clear_read_deadline() {
        return read_failed(ctx, conn, ReadError::Closed(e));
    }
    crate::debug!("conn={conn} request {request:?}");
    let answer = JetAnswer {
        version: request.version,
    };
    serve_request(ctx, conn, stream, &request, &answer, deadline);
}

/// How a transport answers a request. Accept, connect and test follow the
/// same table rules on every transport and differ only here: the binary
/// protocol answers with JET packets, a WebSocket upgrade with HTTP (a 101 on
/// success, after which the stream speaks WebSocket frames).
pub trait Answer {
    /// True when an accept may create its association: the binary protocol
    /// may, a WebSocket upgrade needs an association created beforehand.
    fn may_create(&self) -> bool;
    /// Writes the success answer (`extra` holds version 1's headers) within
    /// the handshake timeout. Relayed bytes may follow it at once.
    fn succeed(&self, ctx: &Context, stream: &Stream, extra: &[(&str, &str)]) -> io::Result<()>;
    /// Writes a refusal with `status` within the handshake timeout, then
    /// closes the connection (lingering so the refusal is read).
    fn refuse(&self, ctx: &Context, stream: &Stream, status: u16);
}

/// The binary protocol's answers: one JET response packet echoing the version.
pub struct JetAnswer {
    /// The version the request spoke.
    pub version: u8,
}

impl Answer for JetAnswer {
    fn may_create(&self) -> bool {
        true
    }
    fn succeed(&self, ctx: &Context, stream: &Stream, extra: &[(&str, &str)]) -> io::Result<()> {
        let response = message::response_packet(200, self.version, extra);
        write_response(ctx, &**stream, &response)
    }
    fn refuse(&self, ctx: &Context, stream: &Stream, status: u16) {
        let response = message::response_packet(status, self.version, &[]);
        if write_response(ctx, &**stream, &response).is_ok() {
            linger_close(&**stream);
        }
    }
}

/// Serves a parsed accept, connect or test, answering through `answer`.
/// The stream's read timeout must already be cleared: from here on the
/// peer's bytes are relayed data.
pub fn serve_request(
    ctx: &Arc<Context>,
    conn: u64,
    stream: Stream,
    request: &Request,
    answer: &dyn Answer,
    deadline: Instant,
) {
    match request.method {
        Method::Accept => accept(ctx, conn, stream, request, answer),
        Method::Connect => connect(ctx, conn, stream, request, answer, deadline),
        Method::Test => test(ctx, conn, &stream, request, answer),
    }
}

fn accept(ctx: &Arc<Context>, conn: u64, stream: Stream, request: &Request, answer: &dyn Answer) {
    let reserved = match request.association {
        None if ctx.config.accept_requires_api() => Err(Reject::NotFound(
            "version 1 accepts cannot name an association created through the API",
        )),
        None => ctx.table.reserve_v1(stream.kind()),
        Some(association) => ctx.table.reserve_accept(
            association,
            request.candidate,
            stream.kind(),
            answer.may_create() && !ctx.config.accept_requires_api(),
        ),
    };
    let reservation = match reserved {
        Ok(reservation) => reservation,
        Err(why) => return reject(ctx, conn, &stream, answer, why.status(), why.reason()),
    };
    let (association, candidate) = (reservation.association, reservation.candidate);
    let timeout = ctx.config.association_ttl.as_secs_f64().ceil().to_string();
    let association_text = association.to_string();
    let extra: &[(&str, &str)] = if request.version == 1 {
        &[
            ("Jet-Association", &association_text),
            ("Jet-Instance", &ctx.config.instance),
            ("Jet-Timeout", &timeout),
        ]
    } else {
        &[]
    };
    // The success answer goes out before the candidate is visible to
    // connects, so a fast connect can never relay bytes ahead of it.
    if let Err(e) = answer.succeed(ctx, &stream, extra) {
        ctx.table.unreserve(reservation);
        return read_failed(ctx, conn, ReadError::Closed(e));
    }
    let kind = stream.kind();
    match ctx.table.publish(reservation, stream) {
        Ok(()) => {
            ctx.metrics.handshake(Outcome::Parked);
            crate::info!(
                "conn={conn} association={association} candidate={candidate} parked (accept over {}, version {})",
                kind.as_str(),
                request.version
            );
        }
        Err(stream) => {
            // Deleted or expired while we wrote the answer, or shutting down.
            ctx.metrics.handshake(Outcome::Closed);
            crate::info!(
                "conn={conn} association={association} went away before the accept parked"
            );
            stream.kill();
        }
    }
}

fn connect(
    ctx: &Arc<Context>,
    conn: u64,
    stream: Stream,
    request: &Request,
    answer: &dyn Answer,
    deadline: Instant,
) {
    let association = request
        .association
        .expect("connect requests always name an association");
    let candidate = request.candidate;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(PUBLISH_WAIT);
    let (accept, stats) = match ctx.table.pair(association, candidate, &stream, wait) {
        Ok(pair) => pair,
        Err(why) => return reject(ctx, conn, &stream, answer, why.status(), why.reason()),
    };
    if let Err(e) = answer.succeed(ctx, &stream, &[]) {
        // The connecting peer left; the accept cannot be parked again (its
        // peer saw the pairing start), so the pair ends here.
        crate::info!("conn={conn} association={association} candidate={candidate} connect peer left before its answer: {e}");
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

fn test(ctx: &Arc<Context>, conn: u64, stream: &Stream, request: &Request, answer: &dyn Answer) {
    let association = request
        .association
        .expect("test requests always name an association");
    match ctx.table.test(association, request.candidate) {
        Ok(()) => {
            if answer.succeed(ctx, stream, &[]).is_ok() {
                ctx.metrics.handshake(Outcome::Tested);
                crate::info!(
                    "conn={conn} association={association} candidate={} tested over {}",
                    request.candidate,
                    stream.kind().as_str()
                );
                // Over WebSocket this is the close frame right after the 101.
                linger_close(&**stream);
            }
        }
        Err(why) => reject(ctx, conn, stream, answer, why.status(), why.reason()),
    }
}

/// Answers a well-formed request with an error status, then closes.
fn reject(ctx: &Context, conn: u64, stream: &Stream, answer: &dyn Answer, status: u16, why: &str) {
    ctx.metrics.handshake(Outcome::Rejected);
    ctx.metrics.rejected(status);
    crate::warn!("conn={conn} rejected {status}: {why}");
    answer.refuse(ctx, stream, status);
}

/// Writes a connection's first answer in one write, bounded by the handshake
/// timeout.
///
/// On plain TCP nothing was written to the socket before a first answer, and
/// an answer is far smaller than any send buffer, so the write cannot block
/// and needs no timeout (two system calls saved per connection). Other
/// transports wrote their own handshake first and get the timeout; so does an
/// answer after earlier ones on the same connection ([`write_later_response`]).
pub fn write_response(ctx: &Context, stream: &dyn Duplex, response: &[u8]) -> io::Result<()> {
    if stream.raw_tcp().is_some() && response.len() <= MAX_UNTIMED_ANSWER {
        return stream.write_all(response);
    }
    write_later_response(ctx, stream, response)
}

/// Writes an answer with the handshake timeout, then lifts the timeout so the
/// relayed bytes that follow are not bounded by it. For answers that may find
/// the send buffer holding earlier ones (a WebSocket upgrade after keep-alive
/// requests), whose write timeout is still set.
pub fn write_later_response(ctx: &Context, stream: &dyn Duplex, response: &[u8]) -> io::Result<()> {
    let sock = stream.socket();
    sock.set_write_timeout(Some(ctx.config.handshake_timeout))?;
    stream.write_all(response)?;
    sock.set_write_timeout(None)
}

/// The largest first answer written without a write timeout on plain TCP: a
/// fresh socket's send buffer holds far more (the kernel's minimum is 4 KiB).
pub const MAX_UNTIMED_ANSWER: usize = 1024;

/// Ends our side (a FIN, TLS close_notify or WebSocket close frame), then
/// drains what the peer still sends for a short while: closing a socket with
/// unread input sends a reset, which can destroy the answer before the peer
/// reads it.
pub fn linger_close(stream: &dyn Duplex) {
    let _ = stream.shutdown_write();
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = [0u8; 4096];
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_deadline(left).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
