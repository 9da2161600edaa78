//! One deadline for a whole multi-step handshake, so a proxy that drips bytes cannot stretch it.

use crate::error::is_timeout;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The latest a handshake may end; every blocking call gets what is left of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    /// A deadline `total` from now (a duration too large for the clock means
    /// "about a year", which no handshake reaches).
    pub(crate) fn after(total: Duration) -> Deadline {
        let now = Instant::now();
        let end = now
            .checked_add(total)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        Deadline { end, total }
    }

    /// What is left, or a `TimedOut` error once nothing is: a zero timeout
    /// would mean "block forever" to `set_read_timeout`.
    pub(crate) fn remaining(&self) -> io::Result<Duration> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.expired())
        } else {
            Ok(left)
        }
    }

    fn expired(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {:?}", self.total),
        )
    }

    /// Fills `buf` from `stream` by the deadline. EOF first is `UnexpectedEof`.
    pub(crate) fn read_exact(&self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        // Each pass either fills bytes, fails, or retries an EINTR; the
        // deadline bounds the passes that wait.
        while filled < buf.len() {
            stream.set_read_timeout(Some(self.remaining()?))?;
            match stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed mid-handshake",
                    ))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(self.expired()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` to `stream` by the deadline.
    pub(crate) fn write_all(&self, stream: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
        stream.set_write_timeout(Some(self.remaining()?))?;
        match stream.write_all(buf) {
            Err(e) if is_timeout(&e) => Err(self.expired()),
            other => other,
        }
    }
}

/// The same error with what we were doing in front of its text.
pub(crate) fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
