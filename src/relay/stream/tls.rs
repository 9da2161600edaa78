//! TLS listeners: the certificate from PEM files, the handshake under the
//! handshake deadline, and a full-duplex stream over rustls.

use crate::relay::registry::Registration;
use crate::relay::stream::{Duplex, Transport};
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// Ciphertext read from the socket at once: several full TLS records, so a
/// busy stream costs one system call per 64 KiB like plain TCP.
pub const TLS_READ_BUFFER: usize = 64 * 1024;

/// A TLS stream that one thread reads while another writes.
///
/// rustls is sans-I/O, so the lock on its state is held only around calls
/// into rustls, never across a socket read or write: the reader reads
/// ciphertext from the socket with no lock on rustls, then feeds it in; the
/// writer encrypts under the lock into a buffer, then writes the buffer with
/// only the write lock held. (One lock across a blocking read is the shape
/// that deadlocked tiny_http's TLS stream, issue #144.)
pub struct TlsDuplex {
    sock: Arc<TcpStream>,
    /// The rustls session; locked only around rustls calls.
    tls: Mutex<ServerConnection>,
    /// Orders socket writes. Its holder takes records out of rustls and writes
    /// them, so records reach the socket in the order rustls made them. It
    /// guards the staging buffer of ciphertext.
    write: Mutex<Vec<u8>>,
    /// Ciphertext read but not yet taken by rustls. Only the reading side
    /// takes this lock (each stream has one reader, the writer never touches
    /// it), so holding it during the socket read stalls no writer.
    read: Mutex<Ciphertext>,
    _registration: Registration,
}

struct Ciphertext {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket returned end-of-file.
    eof: bool,
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (buffers and rustls state are only changed by whole calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl TlsDuplex {
    /// Wraps a socket whose TLS handshake is complete.
    pub fn new(
        sock: Arc<TcpStream>,
        tls: ServerConnection,
        registration: Registration,
    ) -> TlsDuplex {
        TlsDuplex {
            sock,
            tls: Mutex::new(tls),
            write: Mutex::new(Vec::new()),
            read: Mutex::new(Ciphertext {
                buf: vec![0; TLS_READ_BUFFER],
                start: 0,
                end: 0,
                eof: false,
            }),
            _registration: registration,
        }
    }

    /// Moves every record rustls has ready into `out` (under the rustls lock).
    fn take_records(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut tls = lock(&self.tls);
        while tls.wants_write() {
            tls.write_tls(out)?;
        }
        Ok(())
    }

    /// Writes records that rustls made on its own (alerts, key updates) while
    /// no writer held the write lock. If a writer holds it, that writer sends
    /// them when it lets go (see `write_all`): the reader never waits for a
    /// writer that may be blocked on a full socket.
    fn flush_queued(&self) -> io::Result<()> {
        // Each pass either finds nothing queued, finds the lock taken, or
        // writes what was queued: a bounded number of passes in practice.
        loop {
            if !lock(&self.tls).wants_write() {
                return Ok(());
            }
            let mut out = match self.write.try_lock() {
                Ok(out) => out,
                Err(TryLockError::WouldBlock) => return Ok(()),
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
            };
            out.clear();
            self.take_records(&mut out)?;
            (&*self.sock).write_all(&out)?;
            out.clear();
        }
    }
}

impl Duplex for TlsDuplex {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut input = lock(&self.read);
        // Each pass hands rustls all buffered ciphertext, then either returns
        // plaintext (or the end) or reads more ciphertext from the socket.
        loop {
            let (outcome, queued) = {
                let mut tls = lock(&self.tls);
                let outcome = match feed(&mut tls, &mut input) {
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
                // An alert or a key update: its failure shows on the next write.
                let _ = self.flush_queued();
            }
            if let Some(outcome) = outcome {
                return outcome;
            }
            if input.eof {
                // A TCP end without close_notify: many clients close that way.
                // The relay is a pipe and the peers' own protocol detects a
                // truncation, so this is an end of stream like any other.
                return Ok(0);
            }
            if input.start == input.end {
                input.start = 0;
                input.end = 0;
            } else if input.end == input.buf.len() {
                let (start, end) = (input.start, input.end);
                input.buf.copy_within(start..end, 0);
                input.start = 0;
                input.end = end - start;
            }
            if input.end == input.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS input does not make progress",
                ));
            }
            let end = input.end;
            // No rustls lock here: the writer encrypts and sends meanwhile.
            let n = (&*self.sock).read(&mut input.buf[end..])?;
            if n == 0 {
                input.eof = true;
            }
            input.end += n;
        }
    }

    fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        {
            let mut out = lock(&self.write);
            while !data.is_empty() {
                out.clear();
                {
                    let mut tls = lock(&self.tls);
                    // rustls takes as much as its send buffer limit allows.
                    let n = tls.writer().write(data)?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    data = &data[n..];
                    while tls.wants_write() {
                        tls.write_tls(&mut *out)?;
                    }
                }
                (&*self.sock).write_all(&out)?;
            }
            out.clear();
        }
        // Records the reader queued while we held the write lock.
        self.flush_queued()
    }

    fn shutdown_write(&self) -> io::Result<()> {
        {
            let mut out = lock(&self.write);
            out.clear();
            lock(&self.tls).send_close_notify();
            self.take_records(&mut out)?;
            (&*self.sock).write_all(&out)?;
            out.clear();
        }
        // A FIN after the close_notify, for peers that ignore the alert.
        self.sock.shutdown(Shutdown::Write)
    }

    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn kind(&self) -> Transport {
        Transport::Tls
    }
}

/// Hands rustls the buffered ciphertext and decrypts it, until the buffer is
/// empty, rustls holds as much plaintext as it keeps, or the peer closed.
fn feed(tls: &mut ServerConnection, input: &mut Ciphertext) -> io::Result<()> {
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
