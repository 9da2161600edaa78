//! The relayed stream a peer ends up with: TCP, TLS or WebSocket behind one face.

use crate::transport::tls::{TlsReader, TlsWriter};
use crate::transport::ws::{WsReader, WsWriter};
use crate::transport::TcpHalf;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

/// The peer's relayed stream, whatever the candidate's transport: one thread
/// may read while another writes, and any thread may `kill` it.
pub enum Relayed {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS with the relay.
    Tls(Box<Halves<TlsReader, TlsWriter>>),
    /// A WebSocket over TCP: binary frames carry the data.
    Ws(Box<Halves<WsReader<TcpHalf>, WsWriter<TcpHalf>>>),
    /// A WebSocket over TLS.
    Wss(Box<Halves<WsReader<TlsReader>, WsWriter<TlsWriter>>>),
}

/// A stream's read half and write half, each behind its own lock: only the
/// reading thread takes `reader` and only writers take `writer`, so a read
/// blocked on the socket never holds up a write (nor the other way round).
pub struct Halves<R, W> {
    sock: Arc<TcpStream>,
    reader: Mutex<R>,
    writer: Mutex<W>,
}

impl<R: Read, W: Write> Halves<R, W> {
    /// Wraps the two halves of a stream over `sock`.
    pub(crate) fn new(sock: Arc<TcpStream>, reader: R, writer: W) -> Halves<R, W> {
        Halves {
            sock,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        lock(&self.reader).read(buf)
    }

    /// Writes all of `buf` and flushes it: nothing waits in a buffer.
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut writer = lock(&self.writer);
        writer.write_all(buf)?;
        writer.flush()
    }

    fn writer(&self) -> MutexGuard<'_, W> {
        lock(&self.writer)
    }
}

/// Locks a half; its state stays consistent even if a holder panicked (the
/// transport changes it only by whole calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relayed {
    /// Reads relayed bytes; `Ok(0)` is the end of the other peer's stream.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Relayed::Tcp(sock) => (&*sock).read(buf),
            Relayed::Tls(tls) => tls.read(buf),
            Relayed::Ws(ws) => ws.read(buf),
            Relayed::Wss(wss) => wss.read(buf),
        }
    }

    /// Writes all of `buf` (one WebSocket frame).
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Relayed::Tcp(sock) => (&*sock).write_all(buf),
            Relayed::Tls(tls) => tls.write_all(buf),
            Relayed::Ws(ws) => ws.write_all(buf),
            Relayed::Wss(wss) => wss.write_all(buf),
        }
    }

    /// Ends our direction (TCP FIN, TLS close_notify, WebSocket close frame)
    /// while the other peer may still send.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Relayed::Tcp(sock) => sock.shutdown(Shutdown::Write),
            Relayed::Tls(tls) => tls.writer().shutdown(),
            Relayed::Ws(ws) => ws.writer().shutdown(),
            Relayed::Wss(wss) => wss.writer().shutdown(),
        }
    }

    /// Shuts the socket down both ways: blocked reads and writes return at once.
    pub fn kill(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }

    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Relayed::Tcp(sock) => sock,
            Relayed::Tls(tls) => &tls.sock,
            Relayed::Ws(ws) => &ws.sock,
            Relayed::Wss(wss) => &wss.sock,
        }
    }

    /// The transport's scheme name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Relayed::Tcp(_) => "tcp",
            Relayed::Tls(_) => "tls",
            Relayed::Ws(_) => "ws",
            Relayed::Wss(_) => "wss",
        }
    }
}

impl Read for &Relayed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Relayed::read(self, buf)
    }
}

impl Write for &Relayed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Relayed::write_all(self, buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
