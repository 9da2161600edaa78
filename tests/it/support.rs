//! Test helpers: a relay on 127.0.0.1:0 that stops on drop, and raw JET peers.

use jet_relay::relay::config::{Config, ListenUrl, ListenerConfig};
use jet_relay::wire::message::{self, Response};
use jet_relay::wire::packet;
use jet_relay::Server;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;
use uuid::Uuid;

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A relay for one test, bound to a free loopback port, stopped on drop.
pub struct TestRelay {
    pub server: Server,
    pub addr: SocketAddr,
}

impl TestRelay {
    pub fn start() -> TestRelay {
        TestRelay::with(|_| {})
    }

    pub fn with(edit: impl FnOnce(&mut Config)) -> TestRelay {
        let mut config = Config {
            instance: "test-instance".into(),
            listeners: vec![ListenerConfig::new(
                ListenUrl::parse("tcp://127.0.0.1:0").unwrap(),
            )],
            ..Config::default()
        };
        edit(&mut config);
        // Relay logs go to stderr, which the test harness does not capture:
        // quiet unless asked for with JET_RELAY_LOG.
        let level = std::env::var("JET_RELAY_LOG")
            .ok()
            .and_then(|l| jet_relay::log::Level::parse(&l))
            .unwrap_or(jet_relay::log::Level::Off);
        jet_relay::log::init(level);
        let server = Server::start(config).expect("relay starts");
        let addr = server.local_addrs()[0];
        TestRelay { server, addr }
    }

    pub fn table(&self) -> jet_relay::relay::Associations<'_> {
        self.server.associations()
    }

    /// A raw TCP connection to the relay, with read and write timeouts.
    pub fn dial(&self) -> TcpStream {
        let sock = TcpStream::connect(self.addr).expect("relay accepts connections");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_write_timeout(Some(WAIT)).unwrap();
        sock
    }

    /// Sends `head` in a JET packet with `mask` (plus `extra` bytes in the same
    /// write) and reads the response packet.
    pub fn request(&self, head: &str, mask: u8, extra: &[u8]) -> (TcpStream, Response) {
        let mut sock = self.dial();
        let mut bytes = packet::encode(head.as_bytes(), mask).expect("a test head fits a packet");
        bytes.extend_from_slice(extra);
        sock.write_all(&bytes).unwrap();
        let response = read_response(&mut sock);
        (sock, response)
    }

    pub fn accept(&self, a: Uuid, c: Uuid) -> TcpStream {
        let (sock, resp) = self.request(&v2("accept", a, c), 0x73, b"");
        assert_eq!(resp.status, 200, "accept answered {resp:?}");
        sock
    }

    pub fn connect(&self, a: Uuid, c: Uuid) -> TcpStream {
        let (sock, resp) = self.request(&v2("connect", a, c), 0x73, b"");
        assert_eq!(resp.status, 200, "connect answered {resp:?}");
        sock
    }

    /// Waits until association `a` has ended (its relay is over) and returns
    /// what the table keeps of it.
    pub fn wait_ended(&self, a: Uuid) -> jet_relay::relay::AssociationInfo {
        self.table()
            .wait_for(a, WAIT, |i| {
                i.is_some_and(|i| i.state == jet_relay::relay::AssociationState::Ended)
            })
            .expect("the association is kept after its relay ends")
    }

    /// An accepted and connected pair on a fresh association.
    pub fn pair(&self) -> (Uuid, TcpStream, TcpStream) {
        let a = Uuid::new_v4();
        let c = Uuid::new_v4();
        let server = self.accept(a, c);
        let client = self.connect(a, c);
        (a, server, client)
    }
}

/// A version 2 request head.
pub fn v2(method: &str, a: Uuid, c: Uuid) -> String {
    format!("GET /jet/{method}/{a}/{c} HTTP/1.1\r\nHost: relay\r\nConnection: Keep-Alive\r\nJet-Version: 2\r\n\r\n")
}

/// Reads exactly one response packet.
pub fn read_response(sock: &mut TcpStream) -> Response {
    let packet = packet::read_packet(&mut *sock).expect("a response packet");
    assert_eq!(packet.mask, 0x73, "the relay masks with 0x73");
    assert_eq!(packet.flags, 0, "the relay writes flags 0");
    message::parse_response(&packet.payload).expect("an HTTP response head")
}

/// Reads until `n` bytes have arrived.
pub fn read_n(sock: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    sock.read_exact(&mut buf).expect("bytes arrive");
    buf
}

/// Asserts the relay closed the connection: EOF (or a reset) within the read timeout.
#[track_caller]
pub fn assert_closed(sock: &mut TcpStream) {
    let mut buf = [0; 64];
    // A signal delivered to the test process (EINTR) is not an answer from
    // the relay; std's own read_exact reads on after it too. Bounded: the
    // socket's read timeout still ends a silent wait.
    for _ in 0..100 {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!("expected a close, got {n} bytes: {:?}", &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
    panic!("expected a close, got 100 interrupted reads");
}

/// Reads to EOF.
pub fn read_to_end(sock: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    sock.read_to_end(&mut out).expect("stream ends cleanly");
    out
}

/// A deterministic pseudo-random byte stream (xorshift), so every byte relayed
/// can be checked.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A parsed HTTP response from the relay's REST API.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP response (head, then Content-Length bytes) from `sock`.
pub fn read_http(sock: &mut TcpStream) -> HttpReply {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert!(buf.len() < 65536, "response head too long");
        let n = sock.read(&mut byte).expect("response head");
        assert_eq!(
            n,
            1,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&buf).expect("a valid response head");
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code.unwrap();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    HttpReply {
        status,
        headers,
        body: read_n(sock, len),
    }
}

impl TestRelay {
    /// Sends one HTTP request on a new connection and reads the answer.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpReply {
        let mut sock = self.dial();
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        sock.write_all(&bytes).unwrap();
        read_http(&mut sock)
    }
}

// ---------------------------------------------------------------------------
// Peers over every transport: TCP, TLS, WebSocket and WebSocket over TLS.

use jet_relay::transport::tls::{TlsReader, TlsStream, TlsWriter};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tungstenite::{Message, WebSocket};

/// How long a test client's blocking call waits before it lets go of its lock,
/// in the clients that share one stream between a reading and a writing thread.
pub const POLL: Duration = Duration::from_millis(5);

/// A file under tests/data.
pub fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub use jet_relay::wire::Transport;

/// One side of a relayed stream, whatever the transport. A reading thread and
/// a writing thread may use it at the same time.
pub trait Peer: Send + Sync {
    /// Sends all of `data`.
    fn send(&self, data: &[u8]);
    /// Reads some relayed bytes; 0 at the end of the stream.
    fn recv(&self, buf: &mut [u8]) -> usize;
    /// Ends our sending side: TCP shutdown, TLS close_notify, WebSocket close frame.
    fn finish(&self);
}

/// Reads exactly `n` relayed bytes.
pub fn recv_n(peer: &dyn Peer, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    let mut filled = 0;
    while filled < n {
        let got = peer.recv(&mut out[filled..]);
        assert!(got > 0, "stream ended after {filled} of {n} bytes");
        filled += got;
    }
    out
}

/// Reads relayed bytes until the end of the stream (at most `limit`).
pub fn recv_to_end(peer: &dyn Peer, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let got = peer.recv(&mut buf);
        if got == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..got]);
        assert!(out.len() <= limit, "more than {limit} bytes before the end");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

fn is_poll_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Fails the test when a client made no progress for [`WAIT`].
struct Progress(Instant);

impl Progress {
    fn new() -> Progress {
        Progress(Instant::now())
    }
    #[track_caller]
    fn check(&self, what: &str) {
        assert!(self.0.elapsed() < WAIT, "{what}: no progress for {WAIT:?}");
    }
}

/// Plain TCP: the socket reads and writes from two threads without a lock.
pub struct TcpPeer(pub TcpStream);

impl Peer for TcpPeer {
    fn send(&self, data: &[u8]) {
        (&self.0).write_all(data).expect("TCP send");
    }
    fn recv(&self, buf: &mut [u8]) -> usize {
        match (&self.0).read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("TCP recv: {e}"),
        }
    }
    fn finish(&self) {
        self.0.shutdown(Shutdown::Write).expect("TCP shutdown");
    }
}

pub type TlsSession = StreamOwned<ClientConnection, TcpStream>;

/// A TLS peer: the library's TLS stream (client role), its read half used by
/// one thread and its write half by another. Each lock is taken only by its
/// own side, so reads and writes block on the socket (bounded by [`WAIT`])
/// without ever waiting for each other.
pub struct TlsPeer {
    reader: Mutex<TlsReader>,
    writer: Mutex<TlsWriter>,
}

impl TlsPeer {
    /// Takes over a session whose handshake (and JET exchange) is done;
    /// plaintext rustls already holds is read first.
    pub fn new(session: TlsSession) -> TlsPeer {
        let StreamOwned { conn, sock } = session;
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_write_timeout(Some(WAIT)).unwrap();
        let (reader, writer) = TlsStream::new(Arc::new(sock), conn).split();
        TlsPeer {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        }
    }
}

impl Peer for TlsPeer {
    fn send(&self, data: &[u8]) {
        let mut writer = lock(&self.writer);
        writer.write_all(data).expect("TLS send");
        writer.flush().expect("TLS send");
    }
    fn recv(&self, buf: &mut [u8]) -> usize {
        match lock(&self.reader).read(buf) {
            Ok(n) => n,
            // The relay closed without close_notify (a killed pair).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("TLS recv: {e}"),
        }
    }
    fn finish(&self) {
        lock(&self.writer).shutdown().expect("TLS close_notify");
    }
}

/// Largest message a WebSocket test client sends.
pub const WS_MESSAGE: usize = 64 * 1024;

/// A tungstenite client (over TCP or rustls), shared like [`TlsPeer`].
pub struct WsPeer<S: Read + Write> {
    ws: Mutex<WebSocket<S>>,
    /// Received data not yet handed out.
    pending: Mutex<(Vec<u8>, usize)>,
}

impl<S: Read + Write> WsPeer<S> {
    fn new(ws: WebSocket<S>) -> WsPeer<S> {
        WsPeer {
            ws: Mutex::new(ws),
            pending: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Sends one message (with backpressure: it is on the wire, or in the
    /// socket's buffer, when this returns).
    pub fn send_message(&self, message: Message) {
        match lock(&self.ws).write(message) {
            Ok(()) => {}
            // Queued; the flush below writes it.
            Err(tungstenite::Error::Io(e)) if is_poll_timeout(&e) => {}
            Err(e) => panic!("WebSocket send: {e}"),
        }
        self.flush();
    }

    /// Reads the next message, whatever it is (None: the connection closed).
    pub fn read_message(&self) -> Option<Message> {
        let progress = Progress::new();
        loop {
            match lock(&self.ws).read() {
                Ok(message) => return Some(message),
                Err(tungstenite::Error::Io(e)) if is_poll_timeout(&e) => {
                    progress.check("WebSocket read")
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None
                }
                // The relay killed the connection (shutdown, a torn-down pair):
                // over TLS that is a TCP end without close_notify.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return None
                }
                Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => return None,
                Err(e) => panic!("WebSocket read: {e}"),
            }
        }
    }

    fn flush(&self) {
        let progress = Progress::new();
        loop {
            match lock(&self.ws).flush() {
                Ok(()) => return,
                Err(tungstenite::Error::Io(e)) if is_poll_timeout(&e) => {
                    progress.check("WebSocket flush")
                }
                // The close handshake finished meanwhile.
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return
                }
                Err(e) => panic!("WebSocket flush: {e}"),
            }
        }
    }
}

impl<S: Read + Write + Send> Peer for WsPeer<S> {
    fn send(&self, data: &[u8]) {
        for chunk in data.chunks(WS_MESSAGE) {
            self.send_message(Message::Binary(chunk.to_vec().into()));
        }
    }
    fn recv(&self, buf: &mut [u8]) -> usize {
        {
            let mut pending = lock(&self.pending);
            let (data, at) = &mut *pending;
            if *at < data.len() {
                let n = buf.len().min(data.len() - *at);
                buf[..n].copy_from_slice(&data[*at..*at + n]);
                *at += n;
                return n;
            }
        }
        loop {
            let data: Vec<u8> = match self.read_message() {
                Some(Message::Binary(b)) => b.into(),
                Some(Message::Text(t)) => t.as_bytes().to_vec(),
                Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Some(Message::Close(_)) | None => {
                    // Sends our reply to the relay's close frame.
                    self.flush();
                    return 0;
                }
            };
            if data.is_empty() {
                continue;
            }
            let n = buf.len().min(data.len());
            buf[..n].copy_from_slice(&data[..n]);
            *lock(&self.pending) = (data, n);
            return n;
        }
    }
    fn finish(&self) {
        match lock(&self.ws).close(None) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if is_poll_timeout(&e) => {}
            Err(e) => panic!("WebSocket close: {e}"),
        }
        self.flush();
    }
}

/// The client TLS configuration: trusts only the test CA.
pub fn tls_client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(data_file("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }))
}

/// Connects to `addr` and completes a TLS handshake for `name`, verifying the
/// relay's certificate against the test CA.
pub fn tls_connect(addr: SocketAddr, name: &str) -> std::io::Result<TlsSession> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(WAIT))?;
    sock.set_write_timeout(Some(WAIT))?;
    let name = ServerName::try_from(name.to_owned()).expect("a valid server name");
    let mut conn = ClientConnection::new(tls_client_config(), name).expect("a client session");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// Sets the socket's timeouts for two-thread use of a locked stream.
fn poll_timeouts(sock: &TcpStream) {
    sock.set_read_timeout(Some(POLL)).unwrap();
    sock.set_write_timeout(Some(POLL)).unwrap();
}

impl TestRelay {
    /// A relay with a TCP listener (first) and a TLS listener (second) using
    /// the test certificate.
    pub fn with_tls(edit: impl FnOnce(&mut Config)) -> TestRelay {
        TestRelay::with(|config| {
            let mut tls = ListenerConfig::new(ListenUrl::parse("tls://127.0.0.1:0").unwrap());
            tls.cert = Some(data_file("server.pem"));
            tls.key = Some(data_file("server.key"));
            config.listeners.push(tls);
            edit(config);
        })
    }

    /// The address of the first TLS listener.
    pub fn tls_addr(&self) -> SocketAddr {
        let urls = self.server.local_urls();
        let at = urls
            .iter()
            .position(|u| u.starts_with("tls://"))
            .expect("the relay has a TLS listener");
        self.server.local_addrs()[at]
    }

    /// Opens `method` (accept, connect or test) on a candidate over
    /// `transport`; the relay's status when it refused.
    pub fn open(
        &self,
        transport: Transport,
        method: &str,
        a: Uuid,
        c: Uuid,
    ) -> Result<Arc<dyn Peer>, u16> {
        let addr = if transport.is_tls() {
            self.tls_addr()
        } else {
            self.addr
        };
        match transport {
            Transport::Tcp => {
                let (sock, resp) = self.request(&v2(method, a, c), 0x73, b"");
                if resp.status != 200 {
                    return Err(resp.status);
                }
                Ok(Arc::new(TcpPeer(sock)))
            }
            Transport::Tls => {
                let mut stream = tls_connect(addr, "localhost").expect("TLS handshake");
                stream
                    .write_all(
                        &packet::encode(v2(method, a, c).as_bytes(), 0x73)
                            .expect("a test head fits a packet"),
                    )
                    .unwrap();
                stream.flush().unwrap();
                let packet = packet::read_packet(&mut stream).expect("a response packet");
                let resp = message::parse_response(&packet.payload).expect("a response head");
                if resp.status != 200 {
                    return Err(resp.status);
                }
                Ok(Arc::new(TlsPeer::new(stream)))
            }
            Transport::Ws => {
                let sock = TcpStream::connect(addr).unwrap();
                sock.set_read_timeout(Some(WAIT)).unwrap();
                sock.set_write_timeout(Some(WAIT)).unwrap();
                let ws = ws_handshake(sock, addr, method, a, c)?;
                poll_timeouts(ws.get_ref());
                Ok(Arc::new(WsPeer::new(ws)))
            }
            Transport::Wss => {
                let StreamOwned { conn, sock } =
                    tls_connect(addr, "localhost").expect("TLS handshake");
                poll_timeouts(&sock);
                // tungstenite owns the whole stream: it takes the write half's
                // plaintext even when the socket timed out, and sends the rest
                // on its next write or flush, the contract tungstenite needs.
                let client = TlsStream::new(Arc::new(sock), conn);
                let ws = ws_handshake(client, addr, method, a, c)?;
                Ok(Arc::new(WsPeer::new(ws)))
            }
        }
    }

    /// An accept and a connect on a fresh association (created as the REST
    /// API would, since WebSocket needs it) over the given transports.
    pub fn pair_over(
        &self,
        accept: Transport,
        connect: Transport,
    ) -> (Uuid, Arc<dyn Peer>, Arc<dyn Peer>) {
        let a = Uuid::new_v4();
        let c = Uuid::new_v4();
        assert!(self.table().create(a));
        let server = self
            .open(accept, "accept", a, c)
            .unwrap_or_else(|s| panic!("accept over {accept:?} answered {s}"));
        let client = self
            .open(connect, "connect", a, c)
            .unwrap_or_else(|s| panic!("connect over {connect:?} answered {s}"));
        (a, server, client)
    }
}

/// The client side of a WebSocket upgrade on `/jet/<method>/<a>/<c>`.
pub fn ws_handshake<S: Read + Write>(
    stream: S,
    addr: SocketAddr,
    method: &str,
    a: Uuid,
    c: Uuid,
) -> Result<WebSocket<S>, u16> {
    let url = format!("ws://{addr}/jet/{method}/{a}/{c}");
    let progress = Progress::new();
    let mut attempt = tungstenite::client::client(url, stream);
    // Over a stream with short timeouts the handshake returns to us when a
    // read would block; resume it until it is done.
    loop {
        match attempt {
            Ok((ws, response)) => {
                assert_eq!(response.status().as_u16(), 101);
                return Ok(ws);
            }
            Err(tungstenite::HandshakeError::Interrupted(mid)) => {
                progress.check("WebSocket handshake");
                attempt = mid.handshake();
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                return Err(response.status().as_u16())
            }
            Err(tungstenite::HandshakeError::Failure(e)) => panic!("WebSocket handshake: {e}"),
        }
    }
}

/// Opens a tcp:// candidate URL with the library's peer side and returns the
/// relayed socket (after the relay's 200).
pub fn open_tcp_candidate(
    url: &str,
    method: jet_relay::wire::message::Method,
    a: Uuid,
    c: Uuid,
) -> jet_relay::Result<(TcpStream, Response)> {
    use jet_relay::peer::{Connector, JetRequest, Relayed, TlsOptions};
    use jet_relay::wire::CandidateUrl;
    let url = CandidateUrl::parse(url)?;
    let (relayed, response) =
        Connector::new(TlsOptions::default()).open(&url, &JetRequest::v2(method, a, c))?;
    match relayed {
        Relayed::Tcp(sock) => Ok((sock, response)),
        _ => panic!("{url:?} is not a tcp:// candidate"),
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
