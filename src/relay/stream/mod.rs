//! One face for every transport a peer can use: a full-duplex byte stream that
//! two threads can read and write at the same time without a shared lock.

pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod ws;

use std::io::{self};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

pub use crate::wire::Transport;

/// A connection's byte stream after the transport's own handshake.
///
/// All methods take `&self`: one thread reads while another writes, and a
/// third (the reaper, shutdown) may `kill` it. Implementations never hold a
/// lock across a blocking socket read, so neither direction can stall the other.
pub trait Duplex: Send + Sync + 'static {
    /// Reads relayed bytes; `Ok(0)` is the end of the peer's stream.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf`.
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Ends our side of the stream (half-close) while the peer may still send.
    fn shutdown_write(&self) -> io::Result<()>;
    /// The TCP socket underneath: timeouts, addresses and `kill`.
    fn socket(&self) -> &TcpStream;
    /// The transport kind.
    fn kind(&self) -> Transport;
    /// The socket, when bytes can be moved with zero-copy system calls
    /// (plain TCP with nothing buffered in user space).
    fn raw_tcp(&self) -> Option<&TcpStream> {
        None
    }
    /// Bounds each blocking read from here on to `left` (see [`set_read_deadline`]).
    fn set_read_deadline(&self, left: Duration) -> io::Result<()> {
        tcp::set_read_deadline(self.socket(), left)
    }
    /// Lifts the read timeout: from here reads wait as long as the peer takes.
    fn clear_read_deadline(&self) -> io::Result<()> {
        self.socket().set_read_timeout(None)
    }
    /// Cuts the connection: its peer sees a reset (never a clean end), and
    /// every blocked read and write on it returns at once. The descriptor is
    /// closed when the last owner drops it.
    fn kill(&self) {
        crate::relay::socket::cut(self.socket());
    }
}

/// A shared handle to a connection's stream.
pub type Stream = Arc<dyn Duplex>;
