//! The peers' connections: pairs over the relay (TCP, TLS, WebSocket) and direct over loopback, with `jet_relay`'s client side.

// The only module that names `jet_relay`: its module paths are moving.
use crate::targets::{Target, Transport, TransportExt};
use crate::tokens::Signed;
use jet_relay::peer::{Connector, JetRequest, Relayed, TlsOptions};
use jet_relay::transport::tls::{TlsReader, TlsStream, TlsWriter};
use jet_relay::wire::message::{self, Method};
use jet_relay::wire::packet;
use jet_relay::wire::CandidateUrl;
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;
use uuid::Uuid;

/// How long one socket operation may block before the figure fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a target needs to make pairs: a listener of our own for direct
/// pairs, the relay's address otherwise.
pub struct Endpoint {
    pub target: Target,
    direct: Option<TcpListener>,
    relay: Option<SocketAddr>,
    tls: Option<Arc<TlsConfigs>>,
    /// Opens the relay's WebSocket candidates (the crate's own peer side).
    connector: Option<Connector>,
    /// Makes association ids unique across the run without a random draw each.
    next_id: AtomicU64,
    id_base: u128,
}

/// The test certificates: the relay (and the direct TLS server peer) serve
/// tests/data/server.pem, the client peers trust tests/data/ca.pem.
pub struct TlsConfigs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

pub fn test_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tls_options() -> TlsOptions {
    TlsOptions {
        ca_file: Some(test_data("ca.pem")),
        insecure: false,
    }
}

impl TlsConfigs {
    pub fn load() -> io::Result<Arc<TlsConfigs>> {
        let server =
            jet_relay::relay::tls_server_config(&test_data("server.pem"), &test_data("server.key"))
                .map_err(|e| io::Error::other(format!("TLS server config: {e}")))?;
        let client = Connector::new(tls_options())
            .tls_config()
            .map_err(|e| io::Error::other(format!("TLS client config: {e}")))?;
        Ok(Arc::new(TlsConfigs { server, client }))
    }
}

impl Endpoint {
    pub fn direct() -> io::Result<Endpoint> {
        Ok(Endpoint {
            target: Target::Direct,
            direct: Some(TcpListener::bind("127.0.0.1:0")?),
            relay: None,
            tls: None,
            connector: None,
            next_id: AtomicU64::new(0),
            id_base: 0,
        })
    }

    pub fn direct_tls(tls: Arc<TlsConfigs>) -> io::Result<Endpoint> {
        Ok(Endpoint {
            target: Target::DirectTls,
            tls: Some(tls),
            ..Endpoint::direct()?
        })
    }

    pub fn relay(transport: Transport, addr: SocketAddr, tls: Option<Arc<TlsConfigs>>) -> Endpoint {
        Endpoint {
            target: Target::Relay(transport),
            direct: None,
            relay: Some(addr),
            tls,
            connector: Some(Connector::new(tls_options())),
            next_id: AtomicU64::new(1),
            id_base: Uuid::new_v4().as_u128() & !u128::from(u64::MAX),
        }
    }

    fn tls(&self) -> io::Result<&Arc<TlsConfigs>> {
        self.tls
            .as_ref()
            .ok_or_else(|| io::Error::other("TLS target without TLS configs"))
    }

    /// A connected pair: (server peer, client peer), both with TCP_NODELAY.
    pub fn pair(&self) -> io::Result<(Peer, Peer)> {
        self.pair_with(self.direct.as_ref())
    }

    /// A pair made with a listener of the caller's own (direct), so that
    /// concurrent workers never take each other's connections.
    pub fn pair_with(&self, own: Option<&TcpListener>) -> io::Result<(Peer, Peer)> {
        match (self.target, own.or(self.direct.as_ref()), self.relay) {
            (Target::Direct, Some(listener), _) => {
                let (server, client) = direct_sockets(listener)?;
                Ok((Peer::Tcp(server), Peer::Tcp(client)))
            }
            (Target::DirectTls, Some(listener), _) => {
                let (server, client) = direct_sockets(listener)?;
                let tls = self.tls()?;
                // Both handshakes at once: each side waits for the other.
                thread::scope(|s| {
                    let client = s.spawn(|| {
                        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
                        let conn = rustls::ClientConnection::new(Arc::clone(&tls.client), name)
                            .map_err(io::Error::other)?;
                        TlsPeer::handshake(client, conn.into())
                    });
                    let conn = rustls::ServerConnection::new(Arc::clone(&tls.server))
                        .map_err(io::Error::other)?;
                    let server = TlsPeer::handshake(server, conn.into());
                    let client = client
                        .join()
                        .map_err(|_| io::Error::other("TLS handshake panicked"))?;
                    Ok((Peer::Tls(Box::new(server?)), Peer::Tls(Box::new(client?))))
                })
            }
            (Target::Relay(transport), _, Some(addr)) => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let association = Uuid::from_u128(self.id_base | u128::from(n));
                let candidate = Uuid::from_u128(self.id_base | u128::from(n) | 1 << 63);
                match transport {
                    Transport::Tcp | Transport::Tls => {
                        let server =
                            self.jet_request(addr, Method::Accept, association, candidate, None)?;
                        let client =
                            self.jet_request(addr, Method::Connect, association, candidate, None)?;
                        Ok((server, client))
                    }
                    Transport::Ws | Transport::Wss => {
                        self.create_association(addr, association)?;
                        let server = self.websocket(
                            addr,
                            transport,
                            Method::Accept,
                            association,
                            candidate,
                        )?;
                        let client = self.websocket(
                            addr,
                            transport,
                            Method::Connect,
                            association,
                            candidate,
                        )?;
                        Ok((server, client))
                    }
                }
            }
            _ => Err(io::Error::other("endpoint without a way to pair")),
        }
    }

    /// Ids for `count` associations of their own (pre-signed tokens name
    /// them): the base and the first number.
    pub fn reserve_ids(&self, count: usize) -> (u128, u64) {
        (
            self.id_base,
            self.next_id.fetch_add(count as u64, Ordering::Relaxed),
        )
    }

    /// A pair over binary JET on the association `signed` names, each
    /// request carrying its own token (`Authorization: Bearer`).
    pub fn pair_signed(&self, signed: &Signed) -> io::Result<(Peer, Peer)> {
        let addr = self
            .relay
            .ok_or_else(|| io::Error::other("tokens need a relay target"))?;
        let (a, c) = (signed.association, signed.candidate);
        let server = self.jet_request(addr, Method::Accept, a, c, Some(&signed.accept))?;
        let client = self.jet_request(addr, Method::Connect, a, c, Some(&signed.connect))?;
        Ok((server, client))
    }

    /// A connection to the relay, TLS on TLS listeners.
    fn dial(&self, addr: SocketAddr) -> io::Result<Peer> {
        let sock = TcpStream::connect(addr)?;
        prepare(&sock)?;
        match self.target {
            Target::Relay(t) if t.is_tls() => {
                let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
                let conn = rustls::ClientConnection::new(Arc::clone(&self.tls()?.client), name)
                    .map_err(io::Error::other)?;
                Ok(Peer::Tls(Box::new(TlsPeer::handshake(sock, conn.into())?)))
            }
            _ => Ok(Peer::Tcp(sock)),
        }
    }

    /// Sends one version 2 request and reads its 200.
    fn jet_request(
        &self,
        addr: SocketAddr,
        method: Method,
        association: Uuid,
        candidate: Uuid,
        token: Option<&str>,
    ) -> io::Result<Peer> {
        let peer = self.dial(addr)?;
        let mut head = message::request_head(method, 2, "bench", Some(association), candidate);
        if let Some(token) = token {
            // Before the blank line that ends the head.
            head.truncate(head.len() - 2);
            head.push_str(&format!("Authorization: Bearer {token}\r\n\r\n"));
        }
        (&peer).write_all(
            &packet::encode(head.as_bytes(), packet::WRITE_MASK)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        )?;
        let reply = packet::read_packet(&mut &peer)?;
        let response = message::parse_response(&reply.payload).map_err(io::Error::other)?;
        if response.status != 200 {
            return Err(io::Error::other(format!(
                "{} answered {}",
                method.as_str(),
                response.status
            )));
        }
        Ok(peer)
    }

    /// `POST /jet/association/ID` on the relay's listener: WebSocket
    /// candidates need the association to exist before the upgrade.
    fn create_association(&self, addr: SocketAddr, association: Uuid) -> io::Result<()> {
        let peer = self.dial(addr)?;
        let request = format!(
            "POST /jet/association/{association} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        (&peer).write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        // Connection: close: the answer ends with the connection (bounded).
        while answer.len() < 64 * 1024 {
            match (&peer).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A TLS peer may end without close_notify: the answer is in.
                Err(_) if answer.starts_with(b"HTTP/1.1 200") => break,
                Err(e) => return Err(e),
            }
        }
        if !answer.starts_with(b"HTTP/1.1 200") {
            let line = String::from_utf8_lossy(&answer);
            return Err(io::Error::other(format!(
                "creating association: {:?}",
                line.lines().next().unwrap_or("")
            )));
        }
        Ok(())
    }

    /// Opens a WebSocket candidate with the crate's own peer side.
    fn websocket(
        &self,
        addr: SocketAddr,
        transport: Transport,
        method: Method,
        association: Uuid,
        candidate: Uuid,
    ) -> io::Result<Peer> {
        let connector = self
            .connector
            .as_ref()
            .ok_or_else(|| io::Error::other("relay endpoint without a connector"))?;
        let url = CandidateUrl::parse(&format!("{}://{addr}", transport.name()))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (relayed, _) = connector
            .open(&url, &JetRequest::v2(method, association, candidate))
            .map_err(|e| {
                io::Error::other(format!("{} {}: {e}", transport.name(), method.as_str()))
            })?;
        prepare(relayed.socket())?;
        Ok(Peer::Ws(Box::new(relayed)))
    }
}

fn direct_sockets(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    prepare(&server)?;
    prepare(&client)?;
    Ok((server, client))
}

fn prepare(sock: &TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))
}

/// A TLS peer on the library's one TLS stream (`jet_relay::transport::tls`,
/// the same code the relay and the peers run), its halves each behind their
/// own lock so a reading thread and a writing thread never wait on each other.
pub struct TlsPeer {
    sock: Arc<TcpStream>,
    reader: Mutex<TlsReader>,
    writer: Mutex<TlsWriter>,
}

impl TlsPeer {
    /// Completes the handshake on a connected socket, then splits the stream.
    pub fn handshake(sock: TcpStream, conn: rustls::Connection) -> io::Result<TlsPeer> {
        let tls = TlsStream::handshake(sock, conn)?;
        let sock = Arc::clone(tls.socket());
        let (reader, writer) = tls.split();
        Ok(TlsPeer {
            sock,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        })
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        lock(&self.reader).read(buf)
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        lock(&self.writer).write_all(buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        lock(&self.writer).shutdown()
    }
}

/// A poisoned half is still whole: each call leaves it consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One peer's end of a pair, whatever the transport. One thread may read
/// while another writes (`&Peer` is `Read` and `Write`), as with `&TcpStream`.
pub enum Peer {
    Tcp(TcpStream),
    /// TLS, direct or with the relay: the library's split stream, the same
    /// code on both sides of every TLS connection it measures.
    Tls(Box<TlsPeer>),
    /// A WebSocket (ws or wss) opened with `jet_relay::peer::Connector`.
    Ws(Box<Relayed>),
}

impl Peer {
    /// The TCP socket underneath (timeouts, shutdown, poll).
    pub fn socket(&self) -> &TcpStream {
        match self {
            Peer::Tcp(sock) => sock,
            Peer::Tls(tls) => &tls.sock,
            Peer::Ws(ws) => ws.socket(),
        }
    }

    /// Ends our direction: FIN, close_notify, or a close frame.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Peer::Tcp(sock) => sock.shutdown(Shutdown::Write),
            Peer::Tls(tls) => tls.shutdown_write(),
            Peer::Ws(ws) => ws.shutdown_write(),
        }
    }
}

impl Read for &Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Peer::Tcp(sock) => (&*sock).read(buf),
            Peer::Tls(tls) => tls.read(buf),
            Peer::Ws(ws) => ws.read(buf),
        }
    }
}

impl Write for &Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Peer::Tcp(sock) => (&*sock).write(buf),
            Peer::Tls(tls) => tls.write_all(buf).map(|()| buf.len()),
            // One frame per write: a 256 KiB chunk is one frame.
            Peer::Ws(ws) => ws.write_all(buf).map(|()| buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
