//! The copy threads of a pair: one per direction, zero-copy for bulk plain TCP.
//!
//! Half-close is propagated, the first byte selects the candidate, an error
//! tears both sides down, and the second thread to finish releases the pair.

use crate::error::is_disconnect;
use crate::relay::pool::Reserved;
use crate::relay::shared::Context;
use crate::relay::splice::{self, Pipe};
use crate::relay::stream::{Reader, Stream, Writer};
use crate::relay::table::{EndReason, PairStats};
use crate::wire::Transport;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// The stack buffer every direction starts with. A read that fills it
/// switches the direction to bulk copying (a pipe, or a heap buffer).
pub const SMALL_BUFFER: usize = 2 * 1024;
/// First size of the heap buffer of a bulk direction; it doubles each time a
/// read fills it, up to [`MAX_BUFFER`].
pub const MIN_BUFFER: usize = 16 * 1024;
/// Largest copy buffer: big enough that per-call costs vanish (an 8 KiB
/// buffer costs about 2.5 times the CPU per byte of a 64 KiB one).
pub const MAX_BUFFER: usize = 64 * 1024;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    AcceptToConnect,
    ConnectToAccept,
}

/// A paired candidate being relayed.
pub struct Pair {
    /// Association id.
    pub association: Uuid,
    /// Candidate id.
    pub candidate: Uuid,
    /// The server peer's stream.
    pub accept: Stream,
    /// The client peer's stream.
    pub connect: Stream,
    /// Byte counters shared with the table.
    pub stats: Arc<PairStats>,
}

/// One side of a pair as its end line names it.
struct Side {
    conn: u64,
    peer: String,
    transport: Transport,
}

impl Side {
    fn of(stream: &Stream) -> Side {
        Side {
            conn: stream.conn(),
            peer: stream
                .client()
                .map_or_else(|| "?".to_owned(), |a| a.to_string()),
            transport: stream.kind(),
        }
    }
}

/// What both copy threads share; each owns its own read and write halves.
struct Running {
    ctx: Arc<Context>,
    association: Uuid,
    candidate: Uuid,
    stats: Arc<PairStats>,
    started: Instant,
    ended: AtomicU8,
    selected: AtomicBool,
    accept: Side,
    connect: Side,
    /// How the pair ended on its own, when nothing cut it: the first
    /// direction's error, if one failed (0: none; else an [`EndReason`]).
    failed: AtomicU8,
    /// The direction that ended first (0: none yet, 1: the accepting peer
    /// stopped sending, 2: the connecting peer): who closed.
    first: AtomicU8,
}

/// Relays a pair until both directions end. Runs one direction on the calling
/// thread and the other on `copier`, a pool thread reserved before the
/// pair's answers went out; returns when the calling thread's direction is
/// done (the other may still run: the last one releases the pair).
///
/// Each stream is split here: a direction's thread owns the source's read
/// half and the destination's write half, so neither thread ever waits on a
/// lock the other holds across a socket call.
pub fn relay(ctx: Arc<Context>, pair: Pair, copier: Reserved) {
    ctx.metrics.pairs_started.fetch_add(1, Ordering::Relaxed);
    let (accept, connect) = (Side::of(&pair.accept), Side::of(&pair.connect));
    let (accept_rx, accept_tx) = pair.accept.split();
    let (connect_rx, connect_tx) = pair.connect.split();
    let running = Arc::new(Running {
        ctx,
        association: pair.association,
        candidate: pair.candidate,
        stats: pair.stats,
        started: Instant::now(),
        ended: AtomicU8::new(0),
        selected: AtomicBool::new(false),
        accept,
        connect,
        failed: AtomicU8::new(0),
        first: AtomicU8::new(0),
    });
    let other = Arc::clone(&running);
    if let Err(e) = copier.run(move || copy(&other, Way::AcceptToConnect, accept_rx, connect_tx)) {
        // The reserved thread is gone: the pool closed (shutdown) meanwhile.
        crate::debug!(
            association:% = running.association,
            candidate:% = running.candidate;
            "cannot start a copy thread: {e}"
        );
        running.stats.end_because(EndReason::NoThread);
        accept_tx.kill();
        connect_rx.kill();
        // The closure was dropped unrun: count its direction as ended.
        running.finish();
    }
    copy(&running, Way::ConnectToAccept, connect_rx, accept_tx);
}

fn copy(running: &Running, way: Way, mut src: Reader, mut dst: Writer) {
    let (counter, total) = match way {
        Way::AcceptToConnect => (
            &running.stats.accept_to_connect,
            &running.ctx.metrics.bytes_accept_to_connect,
        ),
        Way::ConnectToAccept => (
            &running.stats.connect_to_accept,
            &running.ctx.metrics.bytes_connect_to_accept,
        ),
    };
    let outcome = pump(running, &mut src, &mut dst, counter, total);
    let side = match way {
        Way::AcceptToConnect => 1,
        Way::ConnectToAccept => 2,
    };
    let _ = running
        .first
        .compare_exchange(0, side, Ordering::AcqRel, Ordering::Acquire);
    match outcome {
        Ok(()) if running.stats.end_reason().is_some() => {
            // The relay cut this pair (idle timeout, DELETE, drain...): the
            // end this direction read is the cut, not the peer's, and must
            // not reach the other peer as a clean half-close before its own
            // cut does.
            src.kill();
            dst.kill();
        }
        Ok(()) => {
            // Half-close: the peer finished sending, so finish our sending to
            // the other peer, and let the opposite direction run on.
            if dst.shutdown_write().is_err() {
                // The other peer's side is broken already (a reset, which
                // this very write may have collected, leaving the opposite
                // direction to read a plain end): cut both, so the reset
                // reaches this peer as a reset and never as a clean end.
                running.fail(EndReason::PeerReset);
                src.kill();
                dst.kill();
            }
        }
        Err(e) if crate::transport::ws::close_code(&e).is_some() => {
            // The peer broke RFC 6455: its close frame is out (or owed), so
            // its socket ends after a short linger instead of a reset, while
            // the other peer's is cut at once.
            if let Some(code) = crate::transport::ws::close_code(&e) {
                running.ctx.metrics.ws_protocol_error(code);
            }
            crate::debug!(
                association:% = running.association,
                candidate:% = running.candidate,
                direction = way.as_str();
                "copy ended: {e}"
            );
            running.fail(EndReason::Error);
            dst.kill();
            src.close_failed_websocket();
        }
        Err(e) => {
            let reason = if is_disconnect(&e) {
                EndReason::PeerReset
            } else {
                crate::debug!(
                    association:% = running.association,
                    candidate:% = running.candidate,
                    direction = way.as_str();
                    "copy ended: {e}"
                );
                EndReason::Error
            };
            running.fail(reason);
            src.kill();
            dst.kill();
        }
    }
    running.finish();
}

/// Moves one direction's bytes until the source ends (`Ok`) or fails.
///
/// Every direction starts on a small buffer on the thread's stack: an idle
/// pair allocates nothing, and short messages (a handshake, interactive
/// traffic) cost one read and one write each. The first read that fills it
/// shows bulk data: from then on plain TCP on both sides goes through a pipe
/// with splice(2) (unless `zero_copy` is off), everything else, and a pair
/// whose pipe cannot be created, through a growing heap buffer.
fn pump(
    running: &Running,
    src: &mut Reader,
    dst: &mut Writer,
    counter: &AtomicU64,
    total: &AtomicU64,
) -> io::Result<()> {
    let mut small = [0u8; SMALL_BUFFER];
    loop {
        match forward(running, src, dst, &mut small, counter, total)? {
            0 => return Ok(()),
            SMALL_BUFFER => break,
            _ => {}
        }
    }
    let spliceable = match (src.raw_tcp(), dst.raw_tcp()) {
        (Some(from), Some(to)) if running.ctx.config().zero_copy && splice::AVAILABLE => {
            Some((from, to))
        }
        _ => None,
    };
    if let Some((from, to)) = spliceable {
        match Pipe::new() {
            Ok(pipe) => return copy_spliced(running, pipe, from, to, counter, total),
            Err(e) => crate::warn!(
                association:% = running.association,
                candidate:% = running.candidate;
                "cannot create a pipe ({e}): relaying through user space"
            ),
        }
    }
    copy_userspace(running, src, dst, counter, total)
}

/// Copies socket to socket through a kernel pipe: no byte enters user space.
fn copy_spliced(
    running: &Running,
    mut pipe: Pipe,
    src: &TcpStream,
    dst: &TcpStream,
    counter: &AtomicU64,
    total: &AtomicU64,
) -> io::Result<()> {
    loop {
        let n = pipe.fill(src)?;
        if n == 0 {
            return Ok(());
        }
        // Not idle from the read until the write is out (the guard touches
        // the pair's activity when it drops).
        let _writing = running.stats.writing();
        running.carried(n, counter, total);
        pipe.drain(dst, n)?;
    }
}

/// Copies through a buffer that grows while reads fill it.
fn copy_userspace(
    running: &Running,
    src: &mut Reader,
    dst: &mut Writer,
    counter: &AtomicU64,
    total: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; MIN_BUFFER];
    loop {
        let n = forward(running, src, dst, &mut buf, counter, total)?;
        if n == 0 {
            return Ok(());
        }
        if n == buf.len() && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Reads once into `buf` and writes what came to `dst`; returns how many
/// bytes moved, 0 at the end of the source's stream.
fn forward(
    running: &Running,
    src: &mut Reader,
    dst: &mut Writer,
    buf: &mut [u8],
    counter: &AtomicU64,
    total: &AtomicU64,
) -> io::Result<usize> {
    let n = read_some(src, buf)?;
    if n > 0 {
        let _writing = running.stats.writing();
        running.carried(n, counter, total);
        dst.write_all(&buf[..n])?;
    }
    Ok(n)
}

/// One read, retried when a signal interrupts it; `Ok(0)` is the end of stream.
fn read_some(src: &mut Reader, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl Running {
    /// Records why a direction failed; the first failure is the pair's.
    fn fail(&self, reason: EndReason) {
        let _ = self
            .failed
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Counts `n` bytes read from one side. Counted before they are written:
    /// selection asks whether a candidate carried anything, and these bytes
    /// are on their way.
    fn carried(&self, n: usize, counter: &AtomicU64, total: &AtomicU64) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        total.fetch_add(n as u64, Ordering::Relaxed);
        self.moved();
    }

    /// Called with every chunk read: the first chunk selects the candidate.
    fn moved(&self) {
        // Activity is recorded by the writing guard each chunk holds; the
        // shared flag is only written by the first chunk.
        if !self.selected.load(Ordering::Relaxed) && !self.selected.swap(true, Ordering::Relaxed) {
            let victims = self
                .ctx
                .table
                .select(self.association, self.candidate, &self.stats);
            if !victims.is_empty() {
                crate::info!(
                    association:% = self.association,
                    candidate:% = self.candidate;
                    "selected; closing {} unused connection(s)",
                    victims.len()
                );
            }
            for victim in victims {
                victim.kill();
            }
        }
    }

    /// The second direction to end releases the pair and logs its end,
    /// once: who, over what, how many bytes each way, how long, and why.
    fn finish(&self) {
        if self.ended.fetch_add(1, Ordering::AcqRel) != 1 {
            return;
        }
        let seconds = self.started.elapsed();
        self.ctx.metrics.pair_ended(seconds);
        self.ctx
            .table
            .release(self.association, self.candidate, &self.stats);
        // A cut names itself; otherwise the first failure, else both ends
        // finished sending.
        let reason =
            self.stats
                .end_reason()
                .unwrap_or_else(|| match self.failed.load(Ordering::Acquire) {
                    0 => EndReason::PeerEof,
                    n if n == EndReason::PeerReset as u8 => EndReason::PeerReset,
                    _ => EndReason::Error,
                });
        let closed_by = match self.first.load(Ordering::Acquire) {
            1 => "accept",
            2 => "connect",
            _ => "relay",
        };
        let closed_by = match reason {
            EndReason::PeerEof | EndReason::PeerReset | EndReason::Error => closed_by,
            _ => "relay",
        };
        crate::info!(
            conn = self.connect.conn,
            association:% = self.association,
            candidate:% = self.candidate,
            accept_conn = self.accept.conn,
            accept_peer = self.accept.peer.as_str(),
            accept_transport = self.accept.transport.as_str(),
            connect_peer = self.connect.peer.as_str(),
            connect_transport = self.connect.transport.as_str(),
            bytes_accept_to_connect = self.stats.accept_to_connect.load(Ordering::Relaxed),
            bytes_connect_to_accept = self.stats.connect_to_accept.load(Ordering::Relaxed),
            seconds = (seconds.as_secs_f64() * 1000.0).round() / 1000.0,
            reason = reason.as_str(),
            closed_by = closed_by;
            "pair closed"
        );
    }
}

impl Way {
    fn as_str(self) -> &'static str {
        match self {
            Way::AcceptToConnect => "accept_to_connect",
            Way::ConnectToAccept => "connect_to_accept",
        }
    }
}
