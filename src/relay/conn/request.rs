//! Accept, connect and test, the same on every transport: park, pair, test or
//! reject, answered through the transport's [`Answer`].

use crate::relay::conn::deadline::{read_failed, ReadError};
use crate::relay::limits::{LimitExceeded, LimitKind, Permit};
use crate::relay::metrics::Outcome;
use crate::relay::pump::{self, Pair};
use crate::relay::shared::Context;
use crate::relay::stream::{Stream, Transport};
use crate::relay::table::{Reject, PARKED_FULL};
use crate::relay::watch;
use crate::wire::message::{self, Command, Request};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The longest a connect waits for an accept that is writing its 200 at that moment.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// After a final answer the relay reads (and drops) what the peer still sends
/// for at most this long, so closing does not reset the answer away.
pub const LINGER: Duration = Duration::from_millis(500);
/// The most bytes drained while lingering.
pub const LINGER_BYTES: usize = 64 * 1024;

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
    fn succeed(&self, ctx: &Context, stream: &mut Stream, extra: &[(&str, &str)])
        -> io::Result<()>;
    /// Writes a refusal with `status` and the reason `why` (for the peer to
    /// print; it must say nothing the peer may not know) within the
    /// handshake timeout, then closes the connection (lingering so the
    /// refusal is read).
    fn refuse(&self, ctx: &Context, stream: &mut Stream, status: u16, why: &str);
    /// The status of a refusal for a client over its limit: 503 for JET,
    /// whose peers know no 429; HTTP overrides it with 429.
    fn over_limit_status(&self) -> u16 {
        503
    }
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
    fn succeed(
        &self,
        ctx: &Context,
        stream: &mut Stream,
        extra: &[(&str, &str)],
    ) -> io::Result<()> {
        let response = message::response_packet(200, self.version, extra)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_response(ctx, stream, &response)
    }
    fn refuse(&self, ctx: &Context, stream: &mut Stream, status: u16, why: &str) {
        // A refusal's head is short (its reason capped): it always fits a packet.
        let Ok(response) = message::refusal_packet(status, self.version, why) else {
            return;
        };
        if write_response(ctx, stream, &response).is_ok() {
            linger_close(stream);
        }
    }
}

/// Serves a parsed accept, connect or test, answering through `answer`.
/// The stream's read timeout must already be cleared: from here on the
/// peer's bytes are relayed data.
pub fn serve_request(
    ctx: &Arc<Context>,
    stream: Stream,
    request: &Request,
    answer: &dyn Answer,
    deadline: Instant,
) {
    match request.command {
        Command::AcceptNew => accept(ctx, stream, (request.version, None), answer, deadline),
        Command::Accept {
            association,
            candidate,
        } => accept(
            ctx,
            stream,
            (request.version, Some((association, candidate))),
            answer,
            deadline,
        ),
        Command::Connect {
            association,
            candidate,
        } => connect(
            ctx,
            stream,
            (request.version, association, candidate),
            answer,
            deadline,
        ),
        Command::Test {
            association,
            candidate,
        } => test(ctx, stream, (association, candidate), answer, deadline),
    }
}

/// Parks an accept: on its named candidate, or (`ids` = `None`, version 1)
/// on the one candidate of an association the relay creates for it.
fn accept(
    ctx: &Arc<Context>,
    mut stream: Stream,
    (version, ids): (u8, Option<(Uuid, Uuid)>),
    answer: &dyn Answer,
    deadline: Instant,
) {
    // Taken before the reservation, so a client at its limit changes nothing.
    let permit = match parked_permit(ctx, &stream) {
        Ok(permit) => permit,
        Err(over) => return refuse_over_limit(ctx, &mut stream, answer, &over, deadline),
    };
    let kind = stream.kind();
    let reserve = || match ids {
        None if ctx.config().accept_requires_api() => Err(Reject::NotFound(
            "version 1 accepts cannot name an association created through the API",
        )),
        None => ctx.table.reserve_v1(kind),
        Some((association, candidate)) => ctx.table.reserve_accept(
            association,
            candidate,
            kind,
            answer.may_create() && !ctx.config().accept_requires_api(),
        ),
    };
    let mut reserved = reserve();
    // At the cap, accepts whose peers left since the watch's last round go
    // first: a burst of dead accepts must not refuse a live one.
    if reserved == Err(Reject::Unavailable(PARKED_FULL))
        && ctx.table.may_reclaim()
        && watch::reclaim(ctx) > 0
    {
        reserved = reserve();
    }
    let reservation = match reserved {
        Ok(reservation) => reservation,
        Err(why) => return refuse(ctx, &mut stream, answer, why, deadline),
    };
    let (association, candidate) = (reservation.association, reservation.candidate);
    // Version 1 answers name the association, the instance and the TTL;
    // later versions answer with the status alone, so nothing is built for them.
    let v1_headers = (version == 1).then(|| {
        let timeout = ctx
            .config()
            .association_ttl
            .as_secs_f64()
            .ceil()
            .to_string();
        let instance = ctx.instance_for(stream.socket().local_addr().ok());
        [association.to_string(), instance, timeout]
    });
    let extra: &[(&str, &str)] = match &v1_headers {
        Some([association, instance, timeout]) => &[
            ("Jet-Association", association),
            ("Jet-Instance", instance),
            ("Jet-Timeout", timeout),
        ],
        None => &[],
    };
    // The success answer goes out before the candidate is visible to
    // connects, so a fast connect can never relay bytes ahead of it.
    if let Err(e) = answer.succeed(ctx, &mut stream, extra) {
        ctx.table.unreserve(reservation);
        return read_failed(ctx, ReadError::Closed(e));
    }
    match ctx.table.publish(reservation, stream, permit) {
        Ok(()) => {
            ctx.metrics.handshake(Outcome::Parked);
            handshake_done(ctx, deadline);
            crate::info!(
                association:% = association,
                candidate:% = candidate,
                transport = kind.as_str(),
                version = version;
                "parked"
            );
        }
        Err(stream) => {
            // Deleted or expired while we wrote the answer, or shutting down.
            ctx.metrics.handshake(Outcome::Closed);
            crate::info!(association:% = association; "went away before the accept parked");
            stream.kill();
        }
    }
}

fn connect(
    ctx: &Arc<Context>,
    mut stream: Stream,
    (version, association, candidate): (u8, Uuid, Uuid),
    answer: &dyn Answer,
    deadline: Instant,
) {
    // The pair's second copy thread first: if it cannot start, the connect
    // is refused before anything is promised and the accept stays parked.
    let copier = match ctx.pool.reserve() {
        Ok(copier) => copier,
        Err(e) => {
            ctx.metrics.spawn_failures.fetch_add(1, Ordering::Relaxed);
            let why = format!("cannot start a copy thread: {e}");
            return reject(ctx, &mut stream, answer, (503, &why), deadline);
        }
    };
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(PUBLISH_WAIT);
    let (accept, stats) = match ctx.table.pair(association, candidate, &stream, wait) {
        Ok(pair) => pair,
        Err(why) => return refuse(ctx, &mut stream, answer, why, deadline),
    };
    if crate::relay::socket::peer_gone(accept.socket()) {
        // Its peer left since the watch last looked: never pair with it.
        ctx.metrics.parked_gone.fetch_add(1, Ordering::Relaxed);
        accept.kill();
        ctx.table.release(association, candidate, &stats);
        let why = "no parked accept on this candidate (its peer left)";
        return reject(ctx, &mut stream, answer, (404, why), deadline);
    }
    if let Err(e) = answer.succeed(ctx, &mut stream, &[]) {
        // The connecting peer left; the accept cannot be parked again (its
        // peer saw the pairing start), so the pair ends here.
        crate::info!(
            association:% = association,
            candidate:% = candidate;
            "connect peer left before its answer: {e}"
        );
        stream.kill();
        accept.kill();
        ctx.table.release(association, candidate, &stats);
        ctx.metrics.handshake(Outcome::Closed);
        return;
    }
    ctx.metrics.handshake(Outcome::Paired);
    handshake_done(ctx, deadline);
    if let Some(parked) = stats.parked_at {
        ctx.metrics.accept_to_pair.observe(parked.elapsed());
    }
    crate::info!(
        association:% = association,
        candidate:% = candidate,
        accept_conn = accept.conn(),
        accept_transport = accept.kind().as_str(),
        connect_transport = stream.kind().as_str(),
        version = version;
        "paired"
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
        copier,
    );
}

fn test(
    ctx: &Arc<Context>,
    mut stream: Stream,
    (association, candidate): (Uuid, Uuid),
    answer: &dyn Answer,
    deadline: Instant,
) {
    match ctx.table.test(association, candidate) {
        Ok(()) => {
            if answer.succeed(ctx, &mut stream, &[]).is_ok() {
                ctx.metrics.handshake(Outcome::Tested);
                handshake_done(ctx, deadline);
                crate::info!(
                    association:% = association,
                    candidate:% = candidate,
                    transport = stream.kind().as_str();
                    "tested"
                );
                // Over WebSocket this is the close frame right after the 101.
                linger_close(&mut stream);
            }
        }
        Err(why) => refuse(ctx, &mut stream, answer, why, deadline),
    }
}

/// The client's parked-accept permit (`[client_limits]` `max_parked_accepts`).
fn parked_permit(ctx: &Context, stream: &Stream) -> Result<Permit, LimitExceeded> {
    match stream.client() {
        Some(client) => ctx.limits.try_acquire(LimitKind::ParkedAccept, client.ip()),
        // No address (the socket is already gone): nothing to count against.
        None => Ok(Permit::untracked()),
    }
}

/// Refuses an accept whose client is at its limit of parked accepts: 503
/// over JET, 429 over HTTP. Counted in the client-limit refusals, not in
/// the per-status rejections (which know no 429).
fn refuse_over_limit(
    ctx: &Context,
    stream: &mut Stream,
    answer: &dyn Answer,
    over: &LimitExceeded,
    deadline: Instant,
) {
    let status = answer.over_limit_status();
    ctx.metrics.handshake(Outcome::Rejected);
    let why = format!("{over} (client_limits.max_parked_accepts)");
    crate::warn!(status = status; "rejected {status}: {why}");
    handshake_done(ctx, deadline);
    answer.refuse(ctx, stream, status, &why);
}

/// Why the table refused a request, as its peer should read it: an unknown
/// association says how associations come to exist here, since the fix is
/// usually to create it first (through the REST API where only it may).
fn explain(ctx: &Context, answer: &dyn Answer, why: Reject) -> String {
    let reason = why.reason();
    if why != Reject::NotFound("unknown association") {
        return reason.to_owned();
    }
    let hint = if ctx.config().accept_requires_api() {
        "on this relay only the REST API creates associations"
    } else if !answer.may_create() {
        "over WebSocket only the REST API creates associations"
    } else {
        "never created, or expired or deleted"
    };
    format!("{reason} ({hint})")
}

/// Refuses a request the table turned down, with the reason the peer is told.
fn refuse(ctx: &Context, stream: &mut Stream, answer: &dyn Answer, why: Reject, deadline: Instant) {
    let text = explain(ctx, answer, why);
    reject(ctx, stream, answer, (why.status(), &text), deadline);
}

/// Answers a well-formed request with an error status, then closes.
pub(crate) fn reject(
    ctx: &Context,
    stream: &mut Stream,
    answer: &dyn Answer,
    (status, why): (u16, &str),
    deadline: Instant,
) {
    ctx.metrics.handshake(Outcome::Rejected);
    ctx.metrics.rejected(status);
    // Keyed by status for the rate limit: `why` may quote the peer.
    crate::warn!(status = status; "rejected {status}: {why}");
    // Before the refusal goes out, like the counters: whoever reads the
    // refusal then finds it counted.
    handshake_done(ctx, deadline);
    answer.refuse(ctx, stream, status, why);
}

/// Records how long a handshake took once its request was served or
/// refused. Its connection was accepted (or its keep-alive connection last
/// answered) one handshake timeout before `deadline`.
fn handshake_done(ctx: &Context, deadline: Instant) {
    if let Some(accepted) = deadline.checked_sub(ctx.config().handshake_timeout) {
        ctx.metrics.handshake_duration.observe(accepted.elapsed());
    }
}

/// Writes a connection's first answer in one write, bounded by the handshake
/// timeout.
///
/// On plain TCP nothing was written to the socket before a first answer, and
/// an answer is far smaller than any send buffer, so the write cannot block
/// and needs no timeout (two system calls saved per connection). Other
/// transports wrote their own handshake first and get the timeout; so does an
/// answer after earlier ones on the same connection ([`write_later_response`]).
pub fn write_response(ctx: &Context, stream: &mut Stream, response: &[u8]) -> io::Result<()> {
    // A WebSocket upgrade's 101 goes beneath the framing, on the socket too.
    let on_tcp = matches!(stream.kind(), Transport::Tcp | Transport::Ws);
    if on_tcp && response.len() <= MAX_UNTIMED_ANSWER {
        return stream.write_unframed(response);
    }
    write_later_response(ctx, stream, response)
}

/// Writes an answer with the handshake timeout, then lifts the timeout so the
/// relayed bytes that follow are not bounded by it. For answers that may find
/// the send buffer holding earlier ones (a WebSocket upgrade after keep-alive
/// requests), whose write timeout is still set.
pub fn write_later_response(ctx: &Context, stream: &mut Stream, response: &[u8]) -> io::Result<()> {
    stream
        .socket()
        .set_write_timeout(Some(ctx.config().handshake_timeout))?;
    stream.write_unframed(response)?;
    stream.socket().set_write_timeout(None)
}

/// The largest first answer written without a write timeout on plain TCP: a
/// fresh socket's send buffer holds far more (the kernel's minimum is 4 KiB).
pub const MAX_UNTIMED_ANSWER: usize = 1024;

/// Ends our side (a FIN, TLS close_notify or WebSocket close frame), then
/// drains what the peer still sends for a short while: closing a socket with
/// unread input sends a reset, which can destroy the answer before the peer
/// reads it.
pub fn linger_close(stream: &mut Stream) {
    let _ = stream.shutdown_write();
    drain(stream);
}

/// Reads and drops what the peer still sends, for at most [`LINGER`] and
/// [`LINGER_BYTES`], after our side has ended.
pub fn drain(stream: &mut Stream) {
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = [0u8; 4096];
    while drained < LINGER_BYTES {
        if Instant::now() >= deadline || stream.set_read_deadline(deadline).is_err() {
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
