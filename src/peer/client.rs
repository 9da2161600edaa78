//! The peer side: candidate URLs, opening a candidate (accept, connect or test)
//! over TCP, TLS or WebSocket, the relayed stream, and the bridges to stdio or TCP.

use crate::error::{is_disconnect, is_timeout, Error, Result};
pub use crate::wire::candidate::{CandidateUrl, Transport};
use crate::wire::message::{self, Method, Response};
use crate::wire::packet::{self, WRITE_MASK};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;
use tungstenite::protocol::WebSocket;
use uuid::Uuid;

/// How long a peer waits to connect, for the TLS and WebSocket handshakes, and
/// for the relay's answer.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest chunk a bridge moves in one read (and one WebSocket frame).
pub const BRIDGE_BUFFER: usize = 64 * 1024;
/// Bytes of TLS records read from the socket at a time.
pub const TLS_READ_CHUNK: usize = 16 * 1024;
/// Where the system's CA bundle usually lives (Debian, Fedora, openSUSE,
/// Alpine and macOS), tried in order when `SSL_CERT_FILE` is not set.
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How a peer checks the relay's certificate on `tls://` and `wss://`.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust only the certificates in this PEM file instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Do not verify the certificate at all (tests only).
    pub insecure: bool,
}

/// The JET request a peer sends on a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetRequest {
    /// Accept, connect or test.
    pub method: Method,
    /// 1 for the draft 0.1 exchange, 2 (or 3) for `/jet/...` paths.
    pub version: u8,
    /// The association; `None` only for a version 1 accept.
    pub association: Option<Uuid>,
    /// The candidate (ignored by version 1).
    pub candidate: Uuid,
}

impl JetRequest {
    /// A version 2 request for `association` and `candidate`.
    pub fn v2(method: Method, association: Uuid, candidate: Uuid) -> JetRequest {
        JetRequest {
            method,
            version: 2,
            association: Some(association),
            candidate,
        }
    }

    /// The request path of the WebSocket upgrade that carries this request.
    pub fn websocket_path(&self) -> String {
        format!(
            "/jet/{}/{}/{}",
            self.method.as_str(),
            self.association.unwrap_or_default(),
            self.candidate
        )
    }
}

/// Opens candidates: TCP connections, TLS with the configured trust, JET
/// requests and WebSocket upgrades. Shared by every candidate of a peer.
pub struct Connector {
    options: TlsOptions,
    config: OnceLock<std::result::Result<Arc<ClientConfig>, String>>,
}

impl Connector {
    /// A connector; the TLS configuration is built on first use, so a peer
    /// that only uses `tcp://` never reads a CA file.
    pub fn new(options: TlsOptions) -> Connector {
        Connector {
            options,
            config: OnceLock::new(),
        }
    }

    /// The TLS client configuration (ring provider).
    pub fn tls_config(&self) -> Result<Arc<ClientConfig>> {
        self.config
            .get_or_init(|| build_tls_config(&self.options).map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::Config)
    }

    /// Connects to a candidate's host and, for `tls://` and `wss://`, completes
    /// the TLS handshake. The result has no timeouts set.
    pub fn dial(&self, url: &CandidateUrl) -> Result<Relayed> {
        let sock = connect_tcp(&url.address())?;
        if url.scheme.is_tls() {
            Ok(Relayed::Tls(Box::new(TlsStream::handshake(
                sock,
                &url.host,
                self.tls_config()?,
            )?)))
        } else {
            Ok(Relayed::Tcp(sock))
        }
    }

    /// Opens a candidate: connects, sends the JET request (or the WebSocket
    /// upgrade that carries it) and reads the answer. Returns the stream only
    /// on success (200, or 101 for WebSocket); any other status is
    /// [`Error::Refused`].
    pub fn open(&self, url: &CandidateUrl, request: &JetRequest) -> Result<(Relayed, Response)> {
        if url.scheme.is_websocket() {
            return self.open_websocket(url, request);
        }
        let stream = self.dial(url)?;
        let head = message::request_head(
            request.method,
            request.version,
            &url.authority(),
            request.association,
            request.candidate,
        );
        let sock = stream.socket();
        sock.set_read_timeout(Some(NETWORK_TIMEOUT))
            .and_then(|()| sock.set_write_timeout(Some(NETWORK_TIMEOUT)))
            .map_err(|e| Error::io("setting timeouts", e))?;
        // One write for the whole packet: deployed relays read it with one read.
        stream
            .write_all(
                &packet::encode(head.as_bytes(), WRITE_MASK)
                    .map_err(|e| Error::Protocol(e.to_string()))?,
            )
            .map_err(|e| Error::io("sending the request", e))?;
        let reply = packet::read_packet(&stream).map_err(|e| {
            if is_timeout(&e) {
                Error::io(
                    "reading the response",
                    io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
                )
            } else {
                Error::io("reading the response", e)
            }
        })?;
        let response = message::parse_response(&reply.payload)?;
        if response.status != 200 {
            return Err(Error::Refused {
                status: response.status,
                reason: None,
            });
        }
        let sock = stream.socket();
        sock.set_read_timeout(None)
            .and_then(|()| sock.set_write_timeout(None))
            .map_err(|e| Error::io("clearing timeouts", e))?;
        Ok((stream, response))
    }

    fn open_websocket(
        &self,
        url: &CandidateUrl,
        request: &JetRequest,
    ) -> Result<(Relayed, Response)> {
        if request.version == 1 {
            return Err(Error::Config(
                "version 1 has no WebSocket form: use tcp:// or tls://".into(),
            ));
        }
        let sock = connect_tcp(&url.address())?;
        sock.set_read_timeout(Some(NETWORK_TIMEOUT))
            .and_then(|()| sock.set_write_timeout(Some(NETWORK_TIMEOUT)))
            .map_err(|e| Error::io("setting timeouts", e))?;
        let control = sock
            .try_clone()
            .map_err(|e| Error::io("cloning the socket", e))?;
        let sink = if url.scheme.is_tls() {
            Sink::Tls(Arc::new(TlsStream::handshake(
                sock,
                &url.host,
                self.tls_config()?,
            )?))
        } else {
            Sink::Plain(sock)
        };
        let sender = Arc::new(WsSender {
            sink,
            send: Mutex::new(()),
            control: Mutex::new(Vec::new()),
            handshaking: AtomicBool::new(true),
            sent_close: AtomicBool::new(false),
        });
        let io = WsIo(Arc::clone(&sender));
        let target = format!(
            "{}://{}{}",
            url.scheme.as_str(),
            url.authority(),
            request.websocket_path()
        );
        let (ws, reply) = match tungstenite::client::client(target.as_str(), io) {
            Ok(done) => done,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(reply))) => {
                return Err(Error::Refused {
                    status: reply.status().as_u16(),
                    reason: None,
                })
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e))) => {
                return Err(Error::io("WebSocket handshake", e))
            }
            Err(tungstenite::HandshakeError::Failure(e)) => {
                return Err(Error::Protocol(format!("WebSocket handshake: {e}")))
            }
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                return Err(Error::io(
                    "WebSocket handshake",
                    io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
                ))
            }
        };
        let response = Response {
            status: reply.status().as_u16(),
            headers: reply
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).trim().to_owned(),
                    )
                })
                .collect(),
        };
        control
            .set_read_timeout(None)
            .and_then(|()| control.set_write_timeout(None))
            .map_err(|e| Error::io("clearing timeouts", e))?;
        // From here the reader owns tungstenite; data frames are written
        // beside it (see WsStream).
        sender.handshaking.store(false, Ordering::Release);
        Ok((
            Relayed::Ws(Box::new(WsStream::new(ws, sender, control))),
            response,
        ))
    }
}

/// Connects to `HOST:PORT`, trying each resolved address, with a timeout.
pub fn connect_tcp(address: &str) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving {address}"), e))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, NETWORK_TIMEOUT) {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                return Ok(sock);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::io(
        format!("connecting to {address}"),
        last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")),
    ))
}

fn build_tls_config(options: &TlsOptions) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(load_roots(options.ca_file.as_deref())?)
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The trusted roots: the `--ca` file, else the system bundle.
fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore> {
    let path = match ca_file {
        Some(path) => path.to_owned(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                SYSTEM_CA_FILES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            })
            .ok_or_else(|| Error::Config("no system CA bundle found: pass --ca FILE".into()))?,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
        // A bundle may hold a certificate webpki cannot use; skip it rather
        // than refuse the whole bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "CA file {}: no usable certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate, but still checks the handshake
/// signatures so the connection is at least consistent.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

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

/// A TLS client connection that one thread can read while another writes.
///
/// rustls is sans-I/O: the `state` lock is held only around its calls, never
/// across a socket read; encrypted bytes go out under the `send` lock so
/// records from both threads never interleave.
pub struct TlsStream {
    sock: TcpStream,
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

/// Where a WebSocket's bytes go: the socket, or TLS over it.
enum Sink {
    Plain(TcpStream),
    Tls(Arc<TlsStream>),
}

impl Sink {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(sock) => (&*sock).write_all(bytes),
            Sink::Tls(tls) => tls.write_all(bytes),
        }
    }
}

/// The sending half of a WebSocket. Data frames are built and written by the
/// writing thread; the few frames tungstenite writes while reading (pong, the
/// reply to a close) are queued and sent by whichever thread holds `send`, so
/// the reader never waits behind a writer blocked on a full socket.
struct WsSender {
    sink: Sink,
    /// Held while bytes go to the socket: frames never interleave.
    send: Mutex<()>,
    /// Frames tungstenite wrote from the reading thread, not yet sent.
    control: Mutex<Vec<u8>>,
    /// During the upgrade tungstenite writes the request directly.
    handshaking: AtomicBool,
    /// Our close frame is out: nothing may follow it.
    sent_close: AtomicBool,
}

impl WsSender {
    /// Sends one whole frame (after any queued control frames), blocking.
    fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        let guard = self.send.lock().unwrap_or_else(|e| e.into_inner());
        if self.sent_close.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.send_control_locked()?;
        self.sink.write_all(frame)?;
        self.send_control_locked()?;
        drop(guard);
        self.flush_control()
    }

    /// Sends the close frame; nothing is sent after it.
    fn send_close(&self, frame: &[u8]) -> io::Result<()> {
        let _guard = self.send.lock().unwrap_or_else(|e| e.into_inner());
        if self.sent_close.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.send_control_locked()?;
        self.sink.write_all(frame)
    }

    fn send_control_locked(&self) -> io::Result<()> {
        let queued = std::mem::take(&mut *self.control.lock().unwrap_or_else(|e| e.into_inner()));
        if queued.is_empty() || self.sent_close.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sink.write_all(&queued)
    }

    /// Sends queued control frames unless another thread is sending: that
    /// thread sends them after its frame (and re-checks after letting go).
    fn flush_control(&self) -> io::Result<()> {
        loop {
            let Ok(guard) = self.send.try_lock() else {
                return Ok(());
            };
            self.send_control_locked()?;
            drop(guard);
            if self
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return Ok(());
            }
        }
    }
}

/// The stream tungstenite reads from: reads are the socket's (or TLS's);
/// writes are queued control frames, except during the upgrade.
struct WsIo(Arc<WsSender>);

impl Read for WsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.0.sink {
            Sink::Plain(sock) => (&*sock).read(buf),
            Sink::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for WsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.handshaking.load(Ordering::Acquire) {
            self.0.sink.write_all(buf)?;
        } else {
            self.0
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.0.handshaking.load(Ordering::Acquire) {
            return match &self.0.sink {
                Sink::Plain(_) => Ok(()),
                Sink::Tls(tls) => tls.flush(),
            };
        }
        self.0.flush_control()
    }
}

/// A WebSocket client stream, split in two: the reading thread owns
/// tungstenite's `WebSocket` (which cannot be shared across threads without a
/// lock that a blocked read would hold), and the writing thread builds masked
/// binary frames with tungstenite's frame type and sends them through
/// [`WsSender`]. No lock is held across a blocking read.
pub struct WsStream {
    reader: Mutex<WsState>,
    sender: Arc<WsSender>,
    control: TcpStream,
    over_tls: bool,
}

struct WsState {
    ws: WebSocket<WsIo>,
    /// The rest of the last data frame, not yet read.
    pending: tungstenite::Bytes,
    eof: bool,
}

impl WsStream {
    fn new(ws: WebSocket<WsIo>, sender: Arc<WsSender>, control: TcpStream) -> WsStream {
        let over_tls = matches!(sender.sink, Sink::Tls(_));
        WsStream {
            reader: Mutex::new(WsState {
                ws,
                pending: tungstenite::Bytes::new(),
                eof: false,
            }),
            sender,
            control,
            over_tls,
        }
    }

    /// Reads the payload of data frames (binary or text); a close frame is
    /// the end of the stream; pings are answered.
    ///
    /// The relay's close frame ends only its direction, as a TCP FIN would:
    /// the relay keeps reading what we send after it (it half-closes
    /// WebSocket that way, see src/ws.rs), so our data frames go on until our
    /// own side ends and [`WsStream::shutdown_write`] sends our close frame.
    /// The reply tungstenite queues is never sent: nothing reads it after this.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Only the reading thread takes this lock.
        let mut state = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !state.pending.is_empty() {
                let n = buf.len().min(state.pending.len());
                buf[..n].copy_from_slice(&state.pending.split_to(n));
                return Ok(n);
            }
            if state.eof {
                return Ok(0);
            }
            match state.ws.read() {
                Ok(tungstenite::Message::Binary(data)) => state.pending = data,
                Ok(tungstenite::Message::Text(text)) => state.pending = text.into(),
                Ok(tungstenite::Message::Close(_)) => state.eof = true,
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    state.eof = true;
                }
                Err(e) => return Err(ws_error(e)),
            }
        }
    }

    /// Sends `buf` as one masked binary frame.
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let frame = tungstenite::protocol::frame::Frame::message(
            buf.to_vec(),
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Binary,
            ),
            true,
        );
        self.sender.send_frame(&masked(frame)?)
    }

    /// Sends a close frame: the end of our direction. Data frames from the
    /// relay are still read until its own close frame.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let frame = tungstenite::protocol::frame::Frame::close(None);
        self.sender.send_close(&masked(frame)?)
    }
}

/// Encodes a client frame with a fresh random mask (RFC 6455 §5.3). The mask
/// comes from a version 4 UUID: the system's random source, no extra crate.
fn masked(mut frame: tungstenite::protocol::frame::Frame) -> io::Result<Vec<u8>> {
    let random = *Uuid::new_v4().as_bytes();
    frame.header_mut().mask = Some([random[0], random[5], random[10], random[15]]);
    let mut bytes = Vec::with_capacity(frame.len() + 14);
    frame
        .format(&mut bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(bytes)
}

/// Maps tungstenite's errors onto the I/O errors the bridges classify.
fn ws_error(e: tungstenite::Error) -> io::Error {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing) => {
            io::ErrorKind::BrokenPipe.into()
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            io::ErrorKind::ConnectionReset.into()
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// Byte counts of a finished bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bridged {
    /// Bytes sent to the other peer.
    pub sent: u64,
    /// Bytes received from the other peer.
    pub received: u64,
}

/// Copies `src` into the relayed stream until EOF, then half-closes it.
fn pump_into(relayed: &Relayed, mut src: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; BRIDGE_BUFFER];
    let mut total = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        relayed.write_all(&buf[..n])?;
        total += n as u64;
    }
    relayed.shutdown_write()?;
    Ok(total)
}

/// Copies the relayed stream into `dst` until the other peer ends its side.
fn pump_out(relayed: &Relayed, mut dst: impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BRIDGE_BUFFER];
    let mut total = 0;
    loop {
        let n = match relayed.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_disconnect(&e) => break,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        dst.flush()?;
        total += n as u64;
    }
    Ok(total)
}

/// Copies stdin to the relayed stream (half-closing it at EOF) and the stream
/// to stdout, until both directions have ended: a peer that sends, ends its
/// stdin and then reads the reply gets all of it, and so does the other side.
pub fn bridge_stdio(relayed: Relayed) -> Result<Bridged> {
    let relayed = Arc::new(relayed);
    let writer = Arc::clone(&relayed);
    let upstream = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let result = pump_into(&writer, io::stdin().lock());
            if result.is_err() {
                writer.kill();
            }
            result
        })
        .map_err(|e| Error::io("starting the stdin thread", e))?;
    let received = match pump_out(&relayed, io::stdout().lock()) {
        Ok(received) => received,
        Err(e) => {
            relayed.kill();
            return Err(Error::io("relaying to stdout", e));
        }
    };
    let sent = upstream
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the stdin thread panicked")));
    match sent {
        Ok(sent) => Ok(Bridged { sent, received }),
        Err(e) if is_disconnect(&e) => Ok(Bridged { sent: 0, received }),
        Err(e) => Err(Error::io("relaying stdin", e)),
    }
}

/// Relays between the relayed stream and a local TCP connection, both ways
/// with half-close, until both directions have ended.
pub fn bridge_tcp(relayed: Relayed, local: TcpStream) -> Result<Bridged> {
    let relayed = Arc::new(relayed);
    let local_in = local
        .try_clone()
        .map_err(|e| Error::io("cloning the local socket", e))?;
    let writer = Arc::clone(&relayed);
    let upstream = thread::Builder::new()
        .name("local-to-relay".into())
        .spawn(move || {
            let result = pump_into(&writer, &local_in);
            if result.is_err() {
                writer.kill();
                let _ = local_in.shutdown(Shutdown::Both);
            }
            result
        })
        .map_err(|e| Error::io("starting a bridge thread", e))?;
    let received = pump_out(&relayed, &local);
    match &received {
        Ok(_) => {
            let _ = local.shutdown(Shutdown::Write);
        }
        Err(_) => {
            relayed.kill();
            let _ = local.shutdown(Shutdown::Both);
        }
    }
    let sent = upstream
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the bridge thread panicked")));
    match (sent, received) {
        (Ok(sent), Ok(received)) => Ok(Bridged { sent, received }),
        (Err(e), _) | (_, Err(e)) if is_disconnect(&e) => Ok(Bridged::default()),
        (Err(e), _) | (_, Err(e)) => Err(Error::io("relaying", e)),
    }
}

/// Where a peer's relayed stream goes once it is open.
#[derive(Debug)]
pub enum Local {
    /// stdin and stdout.
    Stdio,
    /// Connect to this local service (`--forward HOST:PORT`).
    Forward(String),
    /// A connection accepted on this listener (`--listen ADDR`), taken before
    /// the relay is contacted.
    Accepted(TcpStream),
}

/// Binds `--listen ADDR`, prints `listening tcp://ADDRESS` on stdout (the
/// address actually bound) and accepts one connection.
pub fn listen_once(addr: &str) -> Result<TcpStream> {
    let listener = TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    {
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "listening tcp://{local}");
        let _ = stdout.flush();
    }
    let (sock, _) = listener
        .accept()
        .map_err(|e| Error::io(format!("accepting on {local}"), e))?;
    let _ = sock.set_nodelay(true);
    Ok(sock)
}

/// Bridges a relayed stream to where the command said.
pub fn bridge(relayed: Relayed, local: Local) -> Result<Bridged> {
    match local {
        Local::Stdio => bridge_stdio(relayed),
        Local::Forward(target) => match connect_tcp(&target) {
            Ok(sock) => bridge_tcp(relayed, sock),
            Err(e) => {
                relayed.kill();
                Err(e)
            }
        },
        Local::Accepted(sock) => bridge_tcp(relayed, sock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (scheme, host, port, authority, query) or the start of the error text.
    type Expected = std::result::Result<
        (
            Transport,
            &'static str,
            u16,
            &'static str,
            Option<&'static str>,
        ),
        &'static str,
    >;

    #[track_caller]
    fn check(text: &str, expected: Expected) {
        let got = CandidateUrl::parse(text);
        match (got, expected) {
            (Ok(url), Ok((scheme, host, port, authority, query))) => {
                assert_eq!(
                    (
                        url.scheme,
                        url.host.as_str(),
                        url.port,
                        url.authority().as_str(),
                        url.query.as_deref()
                    ),
                    (scheme, host, port, authority, query),
                    "for {text:?}"
                );
                // What parses prints back to something that parses the same.
                assert_eq!(
                    CandidateUrl::parse(&url.to_string()).unwrap(),
                    url,
                    "for {text:?}"
                );
            }
            (Err(e), Err(why)) => {
                let e = e.to_string();
                assert!(e.contains(why), "for {text:?}: {e:?} should say {why:?}");
            }
            (got, expected) => panic!("for {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn candidate_url_table() {
        use Transport::*;
        check(
            "tcp://jet101.wayk.net:8080",
            Ok((Tcp, "jet101.wayk.net", 8080, "jet101.wayk.net:8080", None)),
        );
        check(
            "jet101.wayk.net:8080",
            Ok((Tcp, "jet101.wayk.net", 8080, "jet101.wayk.net:8080", None)),
        );
        check("TCP://relay:1", Ok((Tcp, "relay", 1, "relay:1", None)));
        check(
            "tls://jet101.wayk.net:4343",
            Ok((Tls, "jet101.wayk.net", 4343, "jet101.wayk.net:4343", None)),
        );
        check(
            "ws://jet101.wayk.net:8080",
            Ok((Ws, "jet101.wayk.net", 8080, "jet101.wayk.net:8080", None)),
        );
        check(
            "ws://jet101.wayk.net",
            Ok((Ws, "jet101.wayk.net", 80, "jet101.wayk.net", None)),
        );
        check(
            "wss://jet101.wayk.net",
            Ok((Wss, "jet101.wayk.net", 443, "jet101.wayk.net", None)),
        );
        check(
            "wss://jet101.wayk.net/",
            Ok((Wss, "jet101.wayk.net", 443, "jet101.wayk.net", None)),
        );
        check(
            "wss://jet.wayk.net:7171?ctype=relay",
            Ok((
                Wss,
                "jet.wayk.net",
                7171,
                "jet.wayk.net:7171",
                Some("ctype=relay"),
            )),
        );
        check(
            "tcp://10.1.21.34:4489?ctype=host",
            Ok((
                Tcp,
                "10.1.21.34",
                4489,
                "10.1.21.34:4489",
                Some("ctype=host"),
            )),
        );
        check(
            "127.0.0.1:9?ctype=relay&x=1",
            Ok((Tcp, "127.0.0.1", 9, "127.0.0.1:9", Some("ctype=relay&x=1"))),
        );
        check("tcp://[::1]:7", Ok((Tcp, "::1", 7, "[::1]:7", None)));
        check(
            "wss://[2001:db8::1]",
            Ok((Wss, "2001:db8::1", 443, "[2001:db8::1]", None)),
        );
        check("tcp://relay.example", Err("tcp:// needs a port"));
        check("tls://relay.example", Err("tls:// needs a port"));
        check("relay.example", Err("tcp:// needs a port"));
        check("gopher://x:1", Err("unsupported scheme \"gopher\""));
        check("http://x:1", Err("unsupported scheme \"http\""));
        check("tcp://:8080", Err("the host is empty"));
        check("tcp://relay:http", Err("is not a port number"));
        check("tcp://relay:+80", Err("is not a port number"));
        check("tcp://relay:70000", Err("is not a port number"));
        check("tcp://relay:0", Err("port 0"));
        check("tcp://::1:80", Err("in brackets"));
        check("tcp://[::1", Err("unclosed"));
        check("tcp://[nope]:1", Err("not an IPv6 address"));
        check("tcp://user@relay:1", Err("user info"));
        check("ws://relay:1/jet/accept", Err("has no path"));
        check("tcp://relay:1#top", Err("fragment"));
        check("tcp://re lay:1", Err("not a host name"));
    }

    #[test]
    fn query_parameters_and_instances() {
        let url = CandidateUrl::parse("tcp://relay:8080?ctype=relay&x=1").unwrap();
        assert_eq!(url.ctype(), Some("relay"));
        assert_eq!(url.query_param("x"), Some("1"));
        assert_eq!(url.query_param("y"), None);
        let plain = CandidateUrl::parse("tcp://relay:8080").unwrap();
        assert_eq!(
            plain.with_param("ctype", "relay").to_string(),
            "tcp://relay:8080?ctype=relay"
        );
        assert_eq!(
            url.with_param("ctype", "host").to_string(),
            "tcp://relay:8080?ctype=relay&x=1"
        );
        assert_eq!(
            url.with_instance("jet7.example").unwrap().to_string(),
            "tcp://jet7.example:8080?ctype=relay&x=1"
        );
        assert_eq!(
            url.with_instance("jet7.example:9000").unwrap().to_string(),
            "tcp://jet7.example:9000?ctype=relay&x=1"
        );
        let wss = CandidateUrl::parse("wss://relay").unwrap();
        assert_eq!(wss.with_instance("jet7").unwrap().to_string(), "wss://jet7");
        assert!(url.with_instance("bad host").is_err());
    }

    #[test]
    fn websocket_paths_carry_the_request() {
        let a = Uuid::parse_str("e6ec698c-5793-4c63-af79-bd644ccf022f").unwrap();
        let c = Uuid::parse_str("1ff84b5f-5a62-4124-bf61-381a5c55db89").unwrap();
        assert_eq!(
            JetRequest::v2(Method::Accept, a, c).websocket_path(),
            format!("/jet/accept/{a}/{c}")
        );
        assert_eq!(
            JetRequest::v2(Method::Test, a, c).websocket_path(),
            format!("/jet/test/{a}/{c}")
        );
    }

    #[test]
    fn a_missing_ca_file_is_a_configuration_error() {
        let connector = Connector::new(TlsOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            insecure: false,
        });
        let err = connector.tls_config().expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let insecure = Connector::new(TlsOptions {
            ca_file: None,
            insecure: true,
        });
        assert!(insecure.tls_config().is_ok());
    }
}
