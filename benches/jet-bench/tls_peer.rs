//! The bench's own TLS stream that a reader and a writer thread share; to give way to the library's split stream.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard};

/// Bytes of TLS records read from the socket at a time.
const TLS_READ: usize = 64 * 1024;

/// A TLS stream (client or server side) that one thread reads while another
/// writes: rustls is locked only around its own calls, never across a
/// socket read or write; the reader's buffer and the writer's records each
/// have their own lock.
pub struct TlsPeer {
    pub sock: TcpStream,
    conn: Mutex<rustls::Connection>,
    rx: Mutex<TlsRx>,
    tx: Mutex<Vec<u8>>,
}

struct TlsRx {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsPeer {
    /// Completes the handshake on a connected socket (single-threaded still).
    pub fn handshake(mut sock: TcpStream, mut conn: rustls::Connection) -> io::Result<TlsPeer> {
        while conn.is_handshaking() {
            let (read, written) = conn.complete_io(&mut sock)?;
            if read == 0 && written == 0 && conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(TlsPeer {
            sock,
            conn: Mutex::new(conn),
            rx: Mutex::new(TlsRx {
                buf: vec![0; TLS_READ],
                start: 0,
                end: 0,
                eof: false,
            }),
            tx: Mutex::new(Vec::new()),
        })
    }

    pub fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        // Only readers take `rx`; it may be held across the socket read.
        let mut rx = lock(&self.rx);
        loop {
            {
                let mut conn = lock(&self.conn);
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                // Feed records until plaintext shows (its buffer is bounded).
                while rx.start < rx.end {
                    let TlsRx {
                        buf, start, end, ..
                    } = &mut *rx;
                    let used = conn.read_tls(&mut &buf[*start..*end])?;
                    *start += used;
                    let state = conn.process_new_packets().map_err(tls_error)?;
                    if used == 0 || state.plaintext_bytes_to_read() > 0 {
                        break;
                    }
                }
                if rx.eof && rx.start == rx.end {
                    conn.read_tls(&mut io::empty())?;
                    conn.process_new_packets().map_err(tls_error)?;
                }
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && rx.eof => {
                        return Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if rx.start < rx.end {
                    continue;
                }
            }
            let TlsRx { buf, .. } = &mut *rx;
            let n = match (&self.sock).read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            rx.start = 0;
            rx.end = n;
            rx.eof = n == 0;
        }
    }

    pub fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let mut tx = lock(&self.tx);
        loop {
            {
                let mut conn = lock(&self.conn);
                let n = conn.writer().write(data)?;
                data = &data[n..];
                while conn.wants_write() {
                    conn.write_tls(&mut *tx)?;
                }
            }
            (&self.sock).write_all(&tx)?;
            tx.clear();
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        lock(&self.conn).send_close_notify();
        self.write_all(&[])?;
        self.sock.shutdown(Shutdown::Write)
    }
}
