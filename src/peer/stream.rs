//! The relayed stream a peer ends up with: TCP, TLS or WebSocket behind one face.

use crate::peer::tls_stream::TlsStream;
use crate::peer::ws_stream::WsStream;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

/// The peer's relayed stream, whatever the candidate's transport: one thread
/// may read while another writes, and any thread may `kill` it.
pub enum Relayed {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS with the relay.
    Tls(Box<TlsStream>),
    /// A WebSocket (over TCP or TLS): binary frames carry the data.
    Ws(Box<WsStream>),
}

impl Relayed {
    /// Reads relayed bytes; `Ok(0)` is the end of the other peer's stream.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Relayed::Tcp(sock) => (&*sock).read(buf),
            Relayed::Tls(tls) => tls.read(buf),
            Relayed::Ws(ws) => ws.read(buf),
        }
    }

    /// Writes all of `buf` (one WebSocket frame).
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Relayed::Tcp(sock) => (&*sock).write_all(buf),
            Relayed::Tls(tls) => tls.write_all(buf),
            Relayed::Ws(ws) => ws.write_all(buf),
        }
    }

    /// Ends our direction (TCP FIN, TLS close_notify, WebSocket close frame)
    /// while the other peer may still send.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Relayed::Tcp(sock) => sock.shutdown(Shutdown::Write),
            Relayed::Tls(tls) => tls.shutdown_write(),
            Relayed::Ws(ws) => ws.shutdown_write(),
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
            Relayed::Ws(ws) => &ws.control,
        }
    }

    /// The transport's scheme name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Relayed::Tcp(_) => "tcp",
            Relayed::Tls(_) => "tls",
            Relayed::Ws(ws) if ws.over_tls => "wss",
            Relayed::Ws(_) => "ws",
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
