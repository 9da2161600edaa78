//! The peer's TLS client stream: one thread reads while another writes.

use crate::error::{Error, Result};
use crate::peer::connector::NETWORK_TIMEOUT;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of TLS records read from the socket at a time.
pub const TLS_READ_CHUNK: usize = 16 * 1024;

/// A TLS client connection that one thread can read while another writes.
///
/// rustls is sans-I/O: the `state` lock is held only around its calls, never
/// across a socket read; encrypted bytes go out under the `send` lock so
/// records from both threads never interleave.
pub struct TlsStream {
    pub(crate) sock: TcpStream,
    state: Mutex<TlsState>,
    send: Mutex<Vec<u8>>,
}

struct TlsState {
    conn: ClientConnection,
    /// TLS bytes read from the socket that rustls has not taken yet.
    incoming: Vec<u8>,
    /// The socket reached EOF (rustls is told once `incoming` is empty).
    socket_eof: bool,
}

impl TlsStream {
    /// Runs the TLS handshake on a connected socket, verifying `host`.
    pub fn handshake(
        mut sock: TcpStream,
        host: &str,
        config: Arc<ClientConfig>,
    ) -> Result<TlsStream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::Config(format!("TLS server name {host:?}: {e}")))?;
        let mut conn = ClientConnection::new(config, name)
            .map_err(|e| Error::Protocol(format!("TLS: {e}")))?;
        sock.set_read_timeout(Some(NETWORK_TIMEOUT))
            .and_then(|()| sock.set_write_timeout(Some(NETWORK_TIMEOUT)))
            .map_err(|e| Error::io("setting timeouts", e))?;
        while conn.is_handshaking() {
            match conn.complete_io(&mut sock) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(Error::io(
                        "TLS handshake",
                        io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(Error::io("TLS handshake", e)),
            }
        }
        sock.set_read_timeout(None)
            .and_then(|()| sock.set_write_timeout(None))
            .map_err(|e| Error::io("clearing timeouts", e))?;
        Ok(TlsStream {
            sock,
            state: Mutex::new(TlsState {
                conn,
                incoming: Vec::new(),
                socket_eof: false,
            }),
            send: Mutex::new(Vec::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, TlsState> {
        // No code under this lock leaves the state half-updated on panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads plaintext; `Ok(0)` after the relay's close_notify. A socket read
    /// timeout surfaces as `WouldBlock` with nothing lost.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut state = self.state();
                match state.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !state.incoming.is_empty() || state.socket_eof {
                    let wants_write = feed(&mut state)?;
                    drop(state);
                    if wants_write {
                        self.try_flush()?;
                    }
                    continue;
                }
            }
            // The socket read happens without any lock: the writer is free.
            let mut chunk = [0u8; TLS_READ_CHUNK];
            let n = match (&self.sock).read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut state = self.state();
            if n == 0 {
                state.socket_eof = true;
            } else {
                state.incoming.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Encrypts and sends all of `buf`, blocking until the socket took it.
    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_some(buf)?;
            buf = &buf[n..];
            self.flush()?;
        }
        self.flush()
    }

    /// Hands plaintext to rustls (which may take only part of it when its
    /// buffer is full); does not wait for the socket.
    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        let n = self.state().conn.writer().write(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.flush()?;
        match self.state().conn.writer().write(buf)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Sends every pending TLS record. Keeps what the socket did not take (a
    /// write timeout) for the next call, so a record is never cut.
    pub fn flush(&self) -> io::Result<()> {
        let mut out = self.send.lock().unwrap_or_else(|e| e.into_inner());
        self.flush_locked(&mut out)
    }

    fn flush_locked(&self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            if out.is_empty() {
                let mut state = self.state();
                while state.conn.wants_write() {
                    state.conn.write_tls(out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            match (&self.sock).write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Flushes from the reading thread without waiting for a writer that is
    /// blocked on the socket: that writer sends our records after its own.
    fn try_flush(&self) -> io::Result<()> {
        loop {
            let Ok(mut out) = self.send.try_lock() else {
                return Ok(());
            };
            self.flush_locked(&mut out)?;
            drop(out);
            // Records queued while we held the lock and a writer gave up on it
            // would otherwise wait for the next write.
            if !self.state().conn.wants_write() {
                return Ok(());
            }
        }
    }

    /// Sends close_notify and ends the TCP write side.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.state().conn.send_close_notify();
        self.flush()?;
        self.sock.shutdown(Shutdown::Write)
    }
}

/// Gives rustls the buffered TLS bytes until it has plaintext to offer (its
/// plaintext buffer is bounded); returns whether it has records to send.
fn feed(state: &mut TlsState) -> io::Result<bool> {
    let TlsState {
        conn,
        incoming,
        socket_eof,
    } = state;
    while !incoming.is_empty() {
        let mut rest = &incoming[..];
        let used = conn.read_tls(&mut rest)?;
        incoming.drain(..used);
        let io_state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if used == 0 || io_state.plaintext_bytes_to_read() > 0 {
            return Ok(conn.wants_write());
        }
    }
    if *socket_eof {
        conn.read_tls(&mut io::empty())?;
        conn.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(conn.wants_write())
}

impl Read for &TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TlsStream::read(self, buf)
    }
}
