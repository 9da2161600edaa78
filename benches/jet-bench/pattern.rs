//! The known pseudo-random byte stream the peers send, and the checks of every byte received.

use crate::peers::Peer;
use std::io::{self, Read, Write};

/// Bytes moved per write and per read by the peers.
pub const CHUNK: usize = 256 * 1024;
/// Length of the pattern table: a prime, so the stream never lines up with
/// the power-of-two chunks of a relay (a reordered or repeated chunk shows).
const PATTERN_PERIOD: usize = 4_194_301;

/// The known pseudo-random stream: byte `i` of stream `seed` is
/// `table[(start(seed) + i) % PATTERN_PERIOD]`. The table repeats its first
/// `CHUNK` bytes at the end so any chunk is one contiguous slice.
pub struct Pattern {
    table: Vec<u8>,
}

impl Pattern {
    pub fn new() -> Pattern {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut table = Vec::with_capacity(PATTERN_PERIOD + CHUNK);
        while table.len() < PATTERN_PERIOD {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let take = (PATTERN_PERIOD - table.len()).min(8);
            table.extend_from_slice(&x.to_le_bytes()[..take]);
        }
        table.extend_from_within(..CHUNK);
        Pattern { table }
    }

    fn start(seed: u64) -> usize {
        (seed.wrapping_mul(2_654_435_761) % PATTERN_PERIOD as u64) as usize
    }

    /// `len` (at most `CHUNK`) bytes of stream `seed` from position `pos`.
    pub fn slice(&self, seed: u64, pos: u64, len: usize) -> &[u8] {
        let off = (Self::start(seed) + (pos % PATTERN_PERIOD as u64) as usize) % PATTERN_PERIOD;
        &self.table[off..off + len]
    }
}

/// Writes `len` bytes of stream `seed`.
pub fn send_stream(sock: &Peer, pattern: &Pattern, seed: u64, len: u64) -> io::Result<()> {
    let mut sock = sock;
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(CHUNK as u64) as usize;
        sock.write_all(pattern.slice(seed, pos, n))?;
        pos += n as u64;
    }
    Ok(())
}

/// Reads exactly `len` bytes of stream `seed`, checking every one of them.
pub fn receive_stream(sock: &Peer, pattern: &Pattern, seed: u64, len: u64) -> io::Result<()> {
    let mut sock = sock;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < len {
        let want = (len - pos).min(CHUNK as u64) as usize;
        let n = match sock.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream {seed} ended after {pos} of {len} bytes"),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n] != *pattern.slice(seed, pos, n) {
            return Err(corrupt(seed, pos));
        }
        pos += n as u64;
    }
    Ok(())
}

pub fn corrupt(seed: u64, pos: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("CORRUPT: stream {seed} differs from the pattern near byte {pos}"),
    )
}
