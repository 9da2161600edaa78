//! One face for every transport a peer can use: a full-duplex byte stream that
//! two threads can read and write at the same time without a shared lock.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// The transport a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// JET over plain TCP.
    Tcp,
    /// JET over TLS (the TLS handshake first, then the JET exchange inside it).
    Tls,
    /// WebSocket over plain TCP: the JET parameters are in the upgrade's path.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Kind {
    /// The candidate URL scheme for this transport.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }

    /// The WebSocket transport carried over this one (`Tcp` gives `Ws`, `Tls`
    /// gives `Wss`); WebSocket kinds are their own answer.
    pub fn websocket(self) -> Kind {
        match self {
            Kind::Tcp | Kind::Ws => Kind::Ws,
            Kind::Tls | Kind::Wss => Kind::Wss,
        }
    }
}

/// A connection's byte stream after the transport's own handshake.
///
/// All methods take `&self`: one thread reads while another writes, and a
/// third (the reaper, shutdown) may `kill` it. Implementations never hold a
/// lock across a blocking socket read, so neither direction can stall the other.
pub trait Duplex: Send + Sync + 'static {
    /// Reads relayed bytes; `Ok(0)` is the end of the peer's stream.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf`.
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Ends our side of the stream (half-close) while the peer may still send.
    fn shutdown_write(&self) -> io::Result<()>;
    /// The TCP socket underneath: timeouts, addresses and `kill`.
    fn socket(&self) -> &TcpStream;
    /// The transport kind.
    fn kind(&self) -> Kind;
    /// The socket, when bytes can be moved with zero-copy system calls
    /// (plain TCP with nothing buffered in user space).
    fn raw_tcp(&self) -> Option<&TcpStream> {
        None
    }
    /// Bounds each blocking read from here on to `left` (see [`set_read_deadline`]).
    fn set_read_deadline(&self, left: Duration) -> io::Result<()> {
        set_read_deadline(self.socket(), left)
    }
    /// Lifts the read timeout: from here reads wait as long as the peer takes.
    fn clear_read_deadline(&self) -> io::Result<()> {
        self.socket().set_read_timeout(None)
    }
    /// Shuts the socket down both ways: every blocked read and write on it
    /// returns at once. The descriptor is closed when the last owner drops it.
    fn kill(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

/// A shared handle to a connection's stream.
pub type Stream = Arc<dyn Duplex>;

/// Lets `&dyn Duplex` be used wherever `Read` is expected (packet decoding).
pub struct Reader<'a>(pub &'a dyn Duplex);

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Plain TCP: the socket is shared by reference, no lock and no duplicate descriptor.
pub struct TcpDuplex {
    sock: Arc<TcpStream>,
    /// A read timeout is set on the socket. Requests usually arrive before they
    /// are read and are taken without one, so lifting it is mostly skipped.
    timed: AtomicBool,
    _registration: Registration,
}

impl TcpDuplex {
    /// Wraps an accepted socket registered for shutdown.
    pub fn new(sock: Arc<TcpStream>, registration: Registration) -> TcpDuplex {
        TcpDuplex {
            sock,
            timed: AtomicBool::new(false),
            _registration: registration,
        }
    }
}

impl Duplex for TcpDuplex {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.sock).read(buf)
    }
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&*self.sock).write_all(buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.sock.shutdown(Shutdown::Write)
    }
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
    fn kind(&self) -> Kind {
        Kind::Tcp
    }
    fn raw_tcp(&self) -> Option<&TcpStream> {
        Some(&self.sock)
    }
    fn set_read_deadline(&self, left: Duration) -> io::Result<()> {
        self.timed.store(true, Ordering::Relaxed);
        set_read_deadline(&self.sock, left)
    }
    fn clear_read_deadline(&self) -> io::Result<()> {
        if self.timed.swap(false, Ordering::Relaxed) {
            self.sock.set_read_timeout(None)?;
        }
        Ok(())
    }
}

/// Reads what has already arrived on `sock`, without waiting. `Ok(None)`:
/// nothing has (or this system has no such read), and the caller waits with a
/// timeout. A request has usually arrived by the time its thread reads it, and
/// a read that cannot block needs no timeout set first.
pub fn read_arrived(sock: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        use rustix::net::{recv, RecvFlags};
        match recv(sock, buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(Some(n)),
            Err(Errno::AGAIN | Errno::INTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, buf);
        Ok(None)
    }
}

/// True where accepted sockets inherit `TCP_NODELAY` from their listener
/// (Linux copies it), so [`nodelay_listener`] replaces one system call per
/// connection; elsewhere each accepted socket gets it.
pub const NODELAY_INHERITED: bool = cfg!(target_os = "linux");

/// Turns Nagle's algorithm off on a listening socket, for the sockets it will
/// accept where they inherit it ([`NODELAY_INHERITED`]).
pub fn nodelay_listener(listener: &TcpListener) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::net::sockopt::set_tcp_nodelay(listener, true)?;
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
    Ok(())
}

/// Turns Nagle's algorithm off on an accepted socket, unless it inherited
/// that from its listener.
pub fn nodelay_accepted(sock: &TcpStream) {
    if !NODELAY_INHERITED {
        let _ = sock.set_nodelay(true);
    }
}

/// Sets a read timeout, where zero means "already past": the smallest timeout
/// the OS takes, so the next read fails at once instead of blocking forever.
pub fn set_read_deadline(sock: &TcpStream, left: Duration) -> io::Result<()> {
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
}

/// Every open connection, so shutdown can close them all, whatever state they are in.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Weak<TcpStream>>>,
    closed: Condvar,
    /// Threads in `wait_at_most`, counted under the lock.
    waiters: AtomicUsize,
}

/// A connection's entry in the [`Registry`]; dropping it removes the entry.
pub struct Registration {
    id: u64,
    registry: Arc<Registry>,
}

impl Registration {
    /// The connection's number, used in log lines.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Registry {
    /// Registers a connection's socket. The registry keeps only a weak
    /// reference: the descriptor closes when its owners drop it.
    pub fn register(self: &Arc<Self>, sock: &Arc<TcpStream>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, Arc::downgrade(sock));
        Registration {
            id,
            registry: Arc::clone(self),
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits up to `limit` until at most `count` connections are open.
    pub fn wait_at_most(&self, count: usize, limit: Duration) -> bool {
        let live = self.lock();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let (live, _) = self
            .closed
            .wait_timeout_while(live, limit, |l| l.len() > count)
            .unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        live.len() <= count
    }

    /// Shuts down every open connection both ways.
    pub fn kill_all(&self) {
        let socks: Vec<_> = self.lock().values().filter_map(Weak::upgrade).collect();
        for sock in socks {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<TcpStream>>> {
        // A panic elsewhere cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        live.remove(&self.id);
        // Notifying is a system call even with nobody waiting; waiters are
        // counted under the same lock, so none is missed.
        let wake = self.registry.waiters.load(Ordering::Relaxed) > 0;
        drop(live);
        if wake {
            self.registry.closed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (client, accepted)
    }

    #[test]
    fn accepted_sockets_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        nodelay_listener(&listener).unwrap();
        let (_client, accepted) = socket_pair(&listener);
        nodelay_accepted(&accepted);
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY is off on an accepted socket"
        );
    }

    #[test]
    fn read_arrived_takes_what_is_there_and_never_waits() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, accepted) = socket_pair(&listener);
        // Blocking socket, no timeout: a read that waited would hang the test.
        let mut buf = [0u8; 16];
        assert_eq!(read_arrived(&accepted, &mut buf).unwrap(), None);
        client.write_all(b"hello").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        // The bytes are on their way; a blocking read waits for them.
        let mut first = [0u8; 1];
        (&accepted).read_exact(&mut first).unwrap();
        assert_eq!(&first, b"h");
        if cfg!(target_os = "linux") {
            assert_eq!(read_arrived(&accepted, &mut buf).unwrap(), Some(4));
            assert_eq!(&buf[..4], b"ello");
            assert_eq!(
                read_arrived(&accepted, &mut buf).unwrap(),
                Some(0),
                "end of stream"
            );
        }
    }
}
