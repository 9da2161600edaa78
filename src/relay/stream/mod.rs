//! A connection's byte stream on any transport: one owner during the
//! handshake, then a read half and a write half for the two copy threads.

pub(crate) mod tcp;

use crate::relay::limits::Permit;
use crate::relay::registry::Registration;
use crate::transport::tls::{TlsReader, TlsStream, TlsWriter};
use crate::transport::ws::{self, Role, WsReader, WsWriter};
use crate::transport::{TcpHalf, TimedRead};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Weak};
use std::time::Instant;

pub use crate::wire::Transport;

/// A connection's stream after the transport's own handshake, owned by the
/// one thread that serves the connection (or by the table while parked).
/// [`Stream::split`] hands its halves to the two copy threads of a pair.
pub struct Stream {
    halves: Halves,
    socket: Socket,
    /// Plain TCP: a read timeout of ours is set on the socket. Requests
    /// usually arrive before they are read and are taken without one, so
    /// lifting it is mostly skipped.
    timed: bool,
    /// The client's handshake permit (`[client_limits]` `max_handshakes`),
    /// held until its request has been read.
    handshake: Option<Permit>,
    /// The client a PROXY header named, when it did: the peer for logs.
    client: Option<std::net::SocketAddr>,
}

/// What both halves keep: the socket (addresses, `kill`) and its registry
/// entry, which goes when the last half is dropped.
#[derive(Clone)]
struct Socket {
    sock: Arc<TcpStream>,
    _registration: Arc<Registration>,
}

/// The transport's two halves, always of the same kind.
enum Halves {
    /// Plain TCP: both directions use `&TcpStream`, no lock, no duplicate descriptor.
    Tcp,
    // Boxed: a parked stream moves in and out of the table, and plain TCP
    // stays small.
    Tls(Box<(TlsReader, TlsWriter)>),
    Ws(Box<(WsReader<TcpHalf>, WsWriter<TcpHalf>)>),
    Wss(Box<(WsReader<TlsReader>, WsWriter<TlsWriter>)>),
}

/// The reading half of a paired stream, owned by one copy thread.
pub struct Reader {
    half: ReadHalf,
    socket: Socket,
}

/// The writing half of a paired stream, owned by the other copy thread.
pub struct Writer {
    half: WriteHalf,
    socket: Socket,
}

enum ReadHalf {
    Tcp,
    Tls(TlsReader),
    Ws(WsReader<TcpHalf>),
    Wss(WsReader<TlsReader>),
}

enum WriteHalf {
    Tcp,
    Tls(TlsWriter),
    Ws(WsWriter<TcpHalf>),
    Wss(WsWriter<TlsWriter>),
}

/// Lets the table, the reaper and shutdown end a stream they do not own: a
/// cut (the peer sees a reset) wakes every blocked read and write on the
/// socket. Weak, so the descriptor still closes when the owners drop it.
#[derive(Clone)]
pub struct Killer(Weak<TcpStream>);

impl Killer {
    /// The socket's descriptor while it is open (a drain tells relaying
    /// connections from waiting ones by it).
    pub fn descriptor(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.0.upgrade().map(|sock| sock.as_raw_fd())
    }

    /// Cuts the connection (see [`Stream::kill`]), if it is still open.
    pub fn kill(&self) {
        if let Some(sock) = self.0.upgrade() {
            crate::relay::socket::cut(&sock);
        }
    }

    /// The socket while it is open, to poll it (the watch on parked accepts).
    pub fn socket(&self) -> Option<Arc<TcpStream>> {
        self.0.upgrade()
    }

    /// True when both handles are of the same socket.
    pub fn same(&self, other: &Killer) -> bool {
        Weak::ptr_eq(&self.0, &other.0)
    }
}

impl Stream {
    /// Plain TCP on an accepted socket registered for shutdown.
    pub fn tcp(sock: Arc<TcpStream>, registration: Registration) -> Stream {
        Stream::with(Halves::Tcp, sock, registration)
    }

    /// TLS whose handshake is complete. A TCP end without close_notify is an
    /// end of stream like any other: many clients close that way, the relay
    /// is a pipe, and the peers' own protocol detects a truncation.
    pub fn tls(tls: TlsStream, registration: Registration) -> Stream {
        let sock = Arc::clone(tls.socket());
        let (reader, writer) = tls.truncation_ends_stream().split();
        Stream::with(Halves::Tls(Box::new((reader, writer))), sock, registration)
    }

    fn with(halves: Halves, sock: Arc<TcpStream>, registration: Registration) -> Stream {
        Stream {
            halves,
            socket: Socket {
                sock,
                _registration: Arc::new(registration),
            },
            timed: false,
            handshake: None,
            client: None,
        }
    }

    /// Holds the client's connection permit for as long as the socket is
    /// open (its registry entry goes with the last half).
    pub fn hold_connection(&self, permit: Permit) {
        self.socket._registration.hold(permit);
    }

    /// Holds the client's handshake permit until [`Stream::end_handshake`]
    /// (or until the stream is dropped).
    pub fn hold_handshake(&mut self, permit: Permit) {
        self.handshake = Some(permit);
    }

    /// The request has been read: the handshake permit goes back, so a
    /// parked accept, a relaying pair or a keep-alive REST connection no
    /// longer counts as a handshake in progress.
    pub fn end_handshake(&mut self) {
        self.handshake = None;
    }

    /// WebSocket frames (server role) over this stream, whose upgrade is about
    /// to be answered; `leftover` holds bytes read after the request head.
    /// Anything but plain TCP or TLS is returned as it was.
    pub fn into_websocket(self, leftover: Vec<u8>) -> Stream {
        let halves = match self.halves {
            Halves::Tcp => {
                let half = TcpHalf::new(Arc::clone(&self.socket.sock));
                Halves::Ws(Box::new(ws::new(
                    half.clone(),
                    half,
                    Role::Server,
                    leftover,
                )))
            }
            Halves::Tls(tls) => {
                let (r, w) = *tls;
                Halves::Wss(Box::new(ws::new(r, w, Role::Server, leftover)))
            }
            other => other,
        };
        Stream { halves, ..self }
    }

    /// Reads relayed bytes; `Ok(0)` is the end of the peer's stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.halves {
            Halves::Tcp => (&*self.socket.sock).read(buf),
            Halves::Tls(h) => h.0.read(buf),
            Halves::Ws(h) => h.0.read(buf),
            Halves::Wss(h) => h.0.read(buf),
        }
    }

    /// Writes all of `buf` (one WebSocket frame), failing if the socket's
    /// write timeout passes first.
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.halves {
            Halves::Tcp => (&*self.socket.sock).write_all(buf),
            Halves::Tls(h) => write_all_flushed(&mut h.1, buf),
            Halves::Ws(h) => h.1.write_all(buf),
            Halves::Wss(h) => write_all_flushed(&mut h.1, buf),
        }
    }

    /// Writes `buf` beneath the WebSocket framing, if any: the HTTP answer
    /// to an upgrade.
    pub fn write_unframed(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.halves {
            Halves::Ws(h) => h.1.with_inner(|tcp| tcp.write_all(buf)),
            Halves::Wss(h) => h.1.with_inner(|tls| write_all_flushed(tls, buf)),
            _ => self.write_all(buf),
        }
    }

    /// Ends our side of the stream (a FIN, TLS close_notify, or WebSocket
    /// close frame) while the peer may still send.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.halves {
            Halves::Tcp => self.socket.sock.shutdown(Shutdown::Write),
            Halves::Tls(h) => h.1.shutdown(),
            Halves::Ws(h) => h.1.shutdown(),
            Halves::Wss(h) => h.1.shutdown(),
        }
    }

    /// Ends our side beneath the WebSocket framing, if any (a FIN, or TLS
    /// close_notify): after a plain HTTP refusal of an upgrade.
    pub fn shutdown_unframed(&mut self) -> io::Result<()> {
        match &mut self.halves {
            Halves::Ws(h) => h.1.with_inner(|tcp| tcp.shutdown()),
            Halves::Wss(h) => h.1.with_inner(|tls| tls.shutdown()),
            _ => self.shutdown_write(),
        }
    }

    /// Records the client a PROXY header named (the socket's peer is the balancer).
    pub fn set_client(&mut self, client: std::net::SocketAddr) {
        self.client = Some(client);
    }

    /// The client for logs: the one a PROXY header named, else the socket's peer.
    pub fn client(&self) -> Option<std::net::SocketAddr> {
        self.client.or_else(|| self.socket.sock.peer_addr().ok())
    }

    /// The connection's number in the log (`conn=N`).
    pub fn conn(&self) -> u64 {
        self.socket._registration.id()
    }

    /// The TCP socket underneath: timeouts and addresses.
    pub fn socket(&self) -> &TcpStream {
        &self.socket.sock
    }

    /// The transport kind.
    pub fn kind(&self) -> Transport {
        match self.halves {
            Halves::Tcp => Transport::Tcp,
            Halves::Tls(..) => Transport::Tls,
            Halves::Ws(..) => Transport::Ws,
            Halves::Wss(..) => Transport::Wss,
        }
    }

    /// The socket, when bytes can be moved with zero-copy system calls or
    /// read without waiting (plain TCP: nothing is buffered in user space).
    pub fn raw_tcp(&self) -> Option<&TcpStream> {
        matches!(self.halves, Halves::Tcp).then_some(&*self.socket.sock)
    }

    /// Bounds reads from here on by `deadline`. TLS and WebSocket re-arm the
    /// socket's read timeout before every socket read inside one `read`, so
    /// a peer trickling bytes cannot stretch it; plain TCP reads once per
    /// call, so one timeout set here does.
    pub fn set_read_deadline(&mut self, deadline: Instant) -> io::Result<()> {
        match &mut self.halves {
            Halves::Tcp => {
                self.timed = true;
                let left = deadline.saturating_duration_since(Instant::now());
                tcp::set_read_deadline(&self.socket.sock, left)
            }
            Halves::Tls(h) => h.0.set_deadline(Some(deadline)),
            Halves::Ws(h) => h.0.set_deadline(Some(deadline)),
            Halves::Wss(h) => h.0.set_deadline(Some(deadline)),
        }
    }

    /// Lifts the read deadline: from here reads wait as long as the peer takes.
    pub fn clear_read_deadline(&mut self) -> io::Result<()> {
        match &mut self.halves {
            Halves::Tcp if self.timed => {
                self.timed = false;
                self.socket.sock.set_read_timeout(None)
            }
            Halves::Tcp => Ok(()),
            Halves::Tls(h) => h.0.set_deadline(None),
            Halves::Ws(h) => h.0.set_deadline(None),
            Halves::Wss(h) => h.0.set_deadline(None),
        }
    }

    /// Cuts the connection: its peer sees a reset (never a clean end), and
    /// every blocked read and write on it returns at once. The descriptor is
    /// closed when the last owner drops it.
    pub fn kill(&self) {
        crate::relay::socket::cut(&self.socket.sock);
    }

    /// A handle that kills this stream without owning it.
    pub fn killer(&self) -> Killer {
        Killer(Arc::downgrade(&self.socket.sock))
    }

    /// Splits the stream for the two copy threads of a pair. No read
    /// timeout is left on the socket: the callers cleared the deadline.
    pub fn split(self) -> (Reader, Writer) {
        let (read, write) = match self.halves {
            Halves::Tcp => (ReadHalf::Tcp, WriteHalf::Tcp),
            Halves::Tls(h) => (ReadHalf::Tls(h.0), WriteHalf::Tls(h.1)),
            Halves::Ws(h) => (ReadHalf::Ws(h.0), WriteHalf::Ws(h.1)),
            Halves::Wss(h) => (ReadHalf::Wss(h.0), WriteHalf::Wss(h.1)),
        };
        let reader = Reader {
            half: read,
            socket: self.socket.clone(),
        };
        let writer = Writer {
            half: write,
            socket: self.socket,
        };
        (reader, writer)
    }
}

/// Writes all of `buf`, then what a write timeout may have left queued:
/// `write_all` alone can return with records still waiting.
fn write_all_flushed(w: &mut impl Write, buf: &[u8]) -> io::Result<()> {
    w.write_all(buf)?;
    w.flush()
}

impl Reader {
    /// Reads relayed bytes; `Ok(0)` is the end of the peer's stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.half {
            ReadHalf::Tcp => (&*self.socket.sock).read(buf),
            ReadHalf::Tls(r) => r.read(buf),
            ReadHalf::Ws(r) => r.read(buf),
            ReadHalf::Wss(r) => r.read(buf),
        }
    }

    /// The socket, on plain TCP (see [`Stream::raw_tcp`]).
    pub fn raw_tcp(&self) -> Option<&TcpStream> {
        matches!(self.half, ReadHalf::Tcp).then_some(&*self.socket.sock)
    }

    /// Cuts the connection (see [`Stream::kill`]).
    pub fn kill(&self) {
        crate::relay::socket::cut(&self.socket.sock);
    }

    /// Ends a WebSocket whose read half failed it (see [`ws::close_code`]):
    /// a FIN after the close frame, so the frame is not lost to a reset, then
    /// up to [`WS_FAIL_LINGER`] for the peer to close its side (what it still
    /// sends is dropped unread), then a cut. A close frame still owed by a
    /// writer blocked on a peer that does not read is given up.
    pub fn close_failed_websocket(&self) {
        let sock = &*self.socket.sock;
        let _ = sock.shutdown(Shutdown::Write);
        let deadline = Instant::now() + WS_FAIL_LINGER;
        let mut scratch = [0u8; 4096];
        let mut peer_closed = false;
        // Bounded by the deadline: each read waits at most what is left.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match (&*sock).read(&mut scratch) {
                Ok(0) => {
                    peer_closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if peer_closed {
            // Both sides sent their FIN: the descriptor closes cleanly when
            // its last owner drops it; this wakes any owner still blocked.
            let _ = sock.shutdown(Shutdown::Both);
        } else {
            crate::relay::socket::cut(sock);
        }
    }
}

/// How long a WebSocket failed for a protocol violation waits for its peer
/// to close after the relay's close frame and FIN.
pub const WS_FAIL_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

impl Writer {
    /// Writes all of `buf` (one WebSocket frame).
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.half {
            WriteHalf::Tcp => (&*self.socket.sock).write_all(buf),
            WriteHalf::Tls(w) => w.write_all(buf),
            WriteHalf::Ws(w) => w.write_all(buf),
            WriteHalf::Wss(w) => w.write_all(buf),
        }
    }

    /// Ends our side of the stream (see [`Stream::shutdown_write`]).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.half {
            WriteHalf::Tcp => self.socket.sock.shutdown(Shutdown::Write),
            WriteHalf::Tls(w) => w.shutdown(),
            WriteHalf::Ws(w) => w.shutdown(),
            WriteHalf::Wss(w) => w.shutdown(),
        }
    }

    /// The socket, on plain TCP (see [`Stream::raw_tcp`]).
    pub fn raw_tcp(&self) -> Option<&TcpStream> {
        matches!(self.half, WriteHalf::Tcp).then_some(&*self.socket.sock)
    }

    /// Cuts the connection (see [`Stream::kill`]), unless it is a WebSocket
    /// its read half failed: the reading thread ends that one after its
    /// close frame ([`Reader::close_failed_websocket`]).
    pub fn kill(&self) {
        let failed = match &self.half {
            WriteHalf::Ws(w) => w.failed(),
            WriteHalf::Wss(w) => w.failed(),
            WriteHalf::Tcp | WriteHalf::Tls(_) => false,
        };
        if !failed {
            crate::relay::socket::cut(&self.socket.sock);
        }
    }
}
