//! Byte streams both the relay and the peer use: TLS and WebSocket, each split into a read half and a write half.
//!
//! One thread owns the read half and another the write half; nothing a
//! reader locks is ever held across a socket read or write, so neither
//! direction can stall the other. Before a stream is shared by two threads,
//! one owner simply holds both halves.

pub mod cut;
pub(crate) mod listener;
pub mod tls;
pub mod ws;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod ws_tests;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A read half whose reads can be bounded by a deadline.
pub trait TimedRead: Read {
    /// Bounds every read from here on by `deadline` (`None`: reads wait as long
    /// as the peer takes). A read re-arms the socket's read timeout before each
    /// socket read it makes and fails with [`io::ErrorKind::TimedOut`] once
    /// the deadline has passed, however slowly the bytes trickle in.
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()>;
}

/// One half of a plain TCP socket: `&TcpStream` is `Read + Write`, so both
/// halves share the socket by reference, with no lock and no duplicate descriptor.
#[derive(Debug, Clone)]
pub struct TcpHalf {
    sock: Arc<TcpStream>,
    deadline: Deadline,
}

impl TcpHalf {
    /// A half of `sock`; the other half is a clone.
    pub fn new(sock: Arc<TcpStream>) -> TcpHalf {
        TcpHalf {
            sock,
            deadline: Deadline::default(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.sock
    }

    /// Ends the write direction (TCP FIN).
    pub fn shutdown(&mut self) -> io::Result<()> {
        self.sock.shutdown(Shutdown::Write)
    }
}

impl Read for TcpHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.deadline.arm(&self.sock)?;
        self.deadline.check((&*self.sock).read(buf))
    }
}

impl Write for TcpHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.sock).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self.sock).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TimedRead for TcpHalf {
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.deadline.set(&self.sock, deadline)
    }
}

/// A read half's deadline.
#[derive(Debug, Clone, Copy, Default)]
struct Deadline {
    at: Option<Instant>,
}

impl Deadline {
    /// Lifting the deadline always lifts the socket's read timeout: one set
    /// by someone else (a TLS handshake under its own deadline) would
    /// otherwise outlive it on a stream whose reads never reached the socket.
    fn set(&mut self, sock: &TcpStream, at: Option<Instant>) -> io::Result<()> {
        self.at = at;
        if at.is_none() {
            sock.set_read_timeout(None)?;
        }
        Ok(())
    }

    /// Before each socket read: sets the read timeout to what is left, or
    /// fails once nothing is (a timeout of zero would mean "none").
    fn arm(&mut self, sock: &TcpStream) -> io::Result<()> {
        let Some(at) = self.at else {
            return Ok(());
        };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
    }

    /// A socket read that timed out under a deadline is the deadline passing.
    fn check(&self, read: io::Result<usize>) -> io::Result<usize> {
        match read {
            Err(e) if self.at.is_some() && e.kind() == io::ErrorKind::WouldBlock => {
                Err(timed_out())
            }
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "read deadline passed")
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (buffers and rustls state are only changed by whole calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
