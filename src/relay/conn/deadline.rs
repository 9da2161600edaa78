//! Reads bounded by one deadline for a whole request, however slowly the bytes come.

use crate::relay::metrics::Outcome;
use crate::relay::shared::Context;
use crate::relay::stream::Stream;
use std::io;
use std::time::Instant;

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
    stream: &mut Stream,
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
    stream: &mut Stream,
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
            match crate::relay::stream::tcp::read_arrived(sock, buf) {
                Ok(Some(0)) => return Err(ReadError::Closed(io::ErrorKind::UnexpectedEof.into())),
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Closed(e)),
            }
        }
        stream
            .set_read_deadline(deadline)
            .map_err(ReadError::Closed)?;
        match stream.read(buf) {
            Ok(0) => return Err(ReadError::Closed(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::error::is_timeout(&e) => {}
            Err(e) => return Err(ReadError::Closed(e)),
        }
    }
}

/// Counts and logs a handshake that ended before a whole request arrived.
pub fn read_failed(ctx: &Context, e: ReadError) {
    match e {
        ReadError::Timeout => {
            ctx.metrics.handshake(Outcome::Timeout);
            crate::warn!("closed: no complete request within the handshake timeout");
        }
        ReadError::Closed(e) => {
            ctx.metrics.handshake(Outcome::Closed);
            crate::info!("closed during the handshake: {e}");
        }
    }
}
