//! The relayed stream a peer ends up with: TCP, TLS or WebSocket behind one face.

use crate::transport::tls::{TlsReader, TlsStream, TlsWriter};
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

/// A stream's read half and write half, for a reading thread and a writing
/// thread that share the stream by reference. Each lock is taken only by
/// the thread on its side (the reader holds its own across a socket read,
/// which no writer waits on), so neither direction can stall the other.
pub struct Halves<R, W> {
    reader: Mutex<R>,
    writer: Mutex<W>,
    sock: Arc<TcpStream>,
}

impl<R, W> Halves<R, W> {
    /// Wraps the two halves of a stream over `sock`.
    pub(crate) fn new(reader: R, writer: W, sock: Arc<TcpStream>) -> Halves<R, W> {
        Halves {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            sock,
        }
    }

    fn reader(&self) -> MutexGuard<'_, R> {
        // A half is left consistent by every call, even one that panicked.
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, W> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Relayed {
    /// TLS whose handshake is done.
    pub(crate) fn tls(tls: TlsStream) -> Relayed {
        let sock = Arc::clone(tls.socket());
        let (reader, writer) = tls.split();
        Relayed::Tls(Box::new(Halves::new(reader, writer, sock)))
    }

    /// Reads relayed bytes; `Ok(0)` is the end of the other peer's stream.
    /// A TLS stream cut without close_notify is an error, not an end.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Relayed::Tcp(sock) => (&*sock).read(buf),
            Relayed::Tls(tls) => tls.reader().read(buf),
            Relayed::Ws(ws) => ws.reader().read(buf),
            Relayed::Wss(ws) => ws.reader().read(buf),
        }
    }

    /// Writes all of `buf` (one WebSocket frame).
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        fn flushed(mut w: impl Write, buf: &[u8]) -> io::Result<()> {
            // What a write timeout left queued surfaces here, not later.
            w.write_all(buf)?;
            w.flush()
        }
        match self {
            Relayed::Tcp(sock) => (&*sock).write_all(buf),
            Relayed::Tls(tls) => flushed(&mut *tls.writer(), buf),
            Relayed::Ws(ws) => ws.writer().write_all(buf),
            Relayed::Wss(ws) => flushed(&mut *ws.writer(), buf),
        }
    }

    /// Ends our direction (TCP FIN, TLS close_notify, WebSocket close frame)
    /// while the other peer may still send.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Relayed::Tcp(sock) => sock.shutdown(Shutdown::Write),
            Relayed::Tls(tls) => tls.writer().shutdown(),
            Relayed::Ws(ws) => ws.writer().shutdown(),
            Relayed::Wss(ws) => ws.writer().shutdown(),
        }
    }

    /// Shuts the socket down both ways: blocked reads and writes return at once.
    pub fn kill(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }

    /// Cuts the stream with a TCP reset (no FIN, no close_notify, no close
    /// frame), so the relay and the other peer see a failure, never a clean
    /// end: for a stream that cannot be carried (its `--forward` service is
    /// down).
    pub fn cut(&self) {
        crate::transport::cut::cut(self.socket());
    }

    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Relayed::Tcp(sock) => sock,
            Relayed::Tls(tls) => &tls.sock,
            Relayed::Ws(ws) => &ws.sock,
            Relayed::Wss(ws) => &ws.sock,
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
