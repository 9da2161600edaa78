//! TLS over a TCP socket (either role) as a read half and a write half that two threads own.
//!
//! rustls is sans-I/O, so its state sits behind one lock taken only around
//! calls into rustls (`read_tls` from a buffer, `process_new_packets`,
//! `reader()`, `writer()`, `write_tls` into a buffer), never across a socket
//! read or write. The reader reads ciphertext into a buffer of its own with
//! no lock held; the writer encrypts under the lock, then writes the records
//! holding only the write lock. Records rustls makes while reading (alerts,
//! key updates) wait in rustls for whoever next holds the write lock: the
//! reader sends them itself only if it can take that lock at once, so it
//! never waits behind a writer blocked on a peer that does not read. (One
//! lock across a blocking read is the shape that deadlocked tiny_http's TLS
//! stream, issue #144.)

use super::{lock, Deadline, TimedRead};
use crate::error::is_timeout;
use rustls::Connection;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Instant;

/// Ciphertext read from the socket at once: several full TLS records, so a
/// busy stream costs one system call per 64 KiB like plain TCP.
pub const TLS_READ_BUFFER: usize = 64 * 1024;

/// What both halves share.
struct Shared {
    sock: Arc<TcpStream>,
    /// The rustls session; locked only around rustls calls.
    tls: Mutex<Connection>,
    /// Ciphertext taken out of rustls and not yet on the socket. Held by
    /// whoever writes to the socket, so records go out in the order rustls
    /// made them.
    out: Mutex<Pending>,
}

/// Records not yet written; what a write timeout left is sent first next time.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    sent: usize,
}

/// Ciphertext read from the socket and not yet taken by rustls.
struct Ciphertext {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket returned end-of-file.
    eof: bool,
}

/// A TLS stream held by one owner, before (or instead of) being split.
pub struct TlsStream {
    reader: TlsReader,
    writer: TlsWriter,
}

/// The read half: decrypted bytes, `Ok(0)` after the peer's close_notify.
pub struct TlsReader {
    shared: Arc<Shared>,
    input: Ciphertext,
    /// A TCP end without close_notify reads as the end of the stream.
    truncation_ends: bool,
    deadline: Deadline,
}

/// The write half: each write is encrypted and on the socket when it returns.
/// If the socket's write timeout passes after rustls took the plaintext, the
/// write still counts it as written and its records go out first on the next
/// write or `flush` (sending it again would duplicate it).
pub struct TlsWriter {
    shared: Arc<Shared>,
}

impl TlsStream {
    /// Wraps a socket and its rustls session (client or server). The
    /// handshake is completed by the first reads and writes, or beforehand
    /// by [`TlsStream::handshake`].
    pub fn new(sock: Arc<TcpStream>, tls: impl Into<Connection>) -> TlsStream {
        let shared = Arc::new(Shared {
            sock,
            tls: Mutex::new(tls.into()),
            out: Mutex::new(Pending::default()),
        });
        TlsStream {
            reader: TlsReader {
                shared: Arc::clone(&shared),
                input: Ciphertext {
                    buf: vec![0; TLS_READ_BUFFER],
                    start: 0,
                    end: 0,
                    eof: false,
                },
                truncation_ends: false,
                deadline: Deadline::default(),
            },
            writer: TlsWriter { shared },
        }
    }

    /// Runs the TLS handshake on a connected socket under the socket's own
    /// timeouts, then wraps it.
    pub fn handshake(mut sock: TcpStream, tls: impl Into<Connection>) -> io::Result<TlsStream> {
        let mut tls = tls.into();
        while tls.is_handshaking() {
            match tls.complete_io(&mut sock) {
                Ok((0, 0)) if tls.is_handshaking() => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(TlsStream::new(Arc::new(sock), tls))
    }

    /// Makes a TCP end without close_notify read as the end of the stream
    /// instead of [`io::ErrorKind::UnexpectedEof`]. The relay is a pipe whose
    /// peers often close that way, and their own protocol detects truncation.
    pub fn truncation_ends_stream(mut self) -> TlsStream {
        self.reader.truncation_ends = true;
        self
    }

    /// The read half.
    pub fn reader(&mut self) -> &mut TlsReader {
        &mut self.reader
    }

    /// The write half.
    pub fn writer(&mut self) -> &mut TlsWriter {
        &mut self.writer
    }

    /// Splits the stream for a reading thread and a writing thread.
    pub fn split(self) -> (TlsReader, TlsWriter) {
        (self.reader, self.writer)
    }

    /// The TCP socket underneath.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.reader.shared.sock
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writer.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Shared {
    /// Moves records out of rustls into `out` (under the rustls lock) and
    /// writes them; what a write timeout leaves stays in `out`.
    fn send(&self, out: &mut Pending) -> io::Result<()> {
        loop {
            if out.sent == out.buf.len() {
                out.buf.clear();
                out.sent = 0;
                let mut tls = lock(&self.tls);
                while tls.wants_write() {
                    tls.write_tls(&mut out.buf)?;
                }
            }
            if out.buf.is_empty() {
                return Ok(());
            }
            match (&*self.sock).write(&out.buf[out.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => out.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends records rustls made on its own (alerts, key updates) unless
    /// another thread holds the write lock: that thread sends them when it
    /// lets go, and checks again after letting go.
    fn send_queued(&self) -> io::Result<()> {
        // Each pass finds nothing queued, finds the lock taken, or sends.
        loop {
            if !lock(&self.tls).wants_write() {
                return Ok(());
            }
            let mut out = match self.out.try_lock() {
                Ok(out) => out,
                Err(TryLockError::WouldBlock) => return Ok(()),
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
            };
            self.send(&mut out)?;
        }
    }
}

impl TlsReader {
    /// The TCP socket underneath.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.shared.sock
    }

    /// Reads more ciphertext from the socket, with no lock held.
    fn fill(&mut self) -> io::Result<()> {
        let input = &mut self.input;
        if input.start == input.end {
            input.start = 0;
            input.end = 0;
        } else if input.end == input.buf.len() {
            input.buf.copy_within(input.start..input.end, 0);
            input.end -= input.start;
            input.start = 0;
        }
        if input.end == input.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS input does not make progress",
            ));
        }
        loop {
            // Re-armed before every socket read: a peer trickling a record
            // byte by byte cannot stretch the deadline.
            self.deadline.arm(&self.shared.sock)?;
            let read = (&*self.shared.sock).read(&mut input.buf[input.end..]);
            match self.deadline.check(read) {
                Ok(0) => input.eof = true,
                Ok(n) => input.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Each pass hands rustls all buffered ciphertext, then either returns
        // plaintext (or the end) or reads more ciphertext from the socket.
        loop {
            let (outcome, queued) = {
                let mut tls = lock(&self.shared.tls);
                let outcome = match feed(&mut tls, &mut self.input) {
                    Err(e) => Some(Err(e)),
                    Ok(()) => match tls.reader().read(buf) {
                        // Ok(0) here is the peer's close_notify: a clean end.
                        Ok(n) => Some(Ok(n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                        Err(e) => Some(Err(e)),
                    },
                };
                (outcome, tls.wants_write())
            };
            if queued {
                // An alert or a key update: a failure shows on the next write.
                let _ = self.shared.send_queued();
            }
            if let Some(outcome) = outcome {
                return outcome;
            }
            if self.input.eof {
                return if self.truncation_ends {
                    Ok(0)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TCP closed without a TLS close_notify",
                    ))
                };
            }
            self.fill()?;
        }
    }
}

/// Hands rustls the buffered ciphertext and decrypts it, until the buffer is
/// empty, rustls holds as much plaintext as it keeps, or the peer sent
/// close_notify.
fn feed(tls: &mut Connection, input: &mut Ciphertext) -> io::Result<()> {
    while input.start < input.end {
        let mut pending = &input.buf[input.start..input.end];
        match tls.read_tls(&mut pending) {
            // close_notify was received: nothing after it is read.
            Ok(0) => return Ok(()),
            Ok(n) => input.start += n,
            // "received plaintext buffer full": the caller reads it out first.
            Err(e) if e.kind() == io::ErrorKind::Other => return Ok(()),
            Err(e) => return Err(e),
        }
        tls.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(())
}

impl TimedRead for TlsReader {
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.deadline.set(&self.shared.sock, deadline)
    }
}

impl TlsWriter {
    /// The TCP socket underneath.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.shared.sock
    }

    /// Encrypts what `give` hands rustls and sends it. A write timeout after
    /// rustls took the plaintext still counts it as written (the records go
    /// first on the next write or flush): giving it back would send it twice.
    fn encrypt(
        &mut self,
        give: impl FnOnce(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let n = {
            let mut out = lock(&self.shared.out);
            self.shared.send(&mut out)?;
            let n = give(&mut lock(&self.shared.tls).writer())?;
            match self.shared.send(&mut out) {
                Err(e) if n > 0 && is_timeout(&e) => {}
                other => other?,
            }
            n
        };
        // Records the reader queued while we held the write lock.
        self.shared.send_queued()?;
        Ok(n)
    }

    /// Sends close_notify, then a TCP FIN for peers that ignore the alert.
    pub fn shutdown(&mut self) -> io::Result<()> {
        {
            let mut out = lock(&self.shared.out);
            self.shared.send(&mut out)?;
            lock(&self.shared.tls).send_close_notify();
            self.shared.send(&mut out)?;
        }
        self.shared.sock.shutdown(Shutdown::Write)
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // rustls takes as much as its send buffer limit allows.
        self.encrypt(|writer| writer.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        // A WebSocket header and its payload become one TLS record.
        self.encrypt(|writer| writer.write_vectored(bufs))
    }

    /// Sends what a write timeout left, and any records the reader queued.
    fn flush(&mut self) -> io::Result<()> {
        {
            let mut out = lock(&self.shared.out);
            self.shared.send(&mut out)?;
        }
        self.shared.send_queued()
    }
}
