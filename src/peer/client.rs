//! The peer side: candidate URLs, opening a candidate (accept, connect or test)
//! over TCP, TLS or WebSocket, the relayed stream, and the bridges to stdio or TCP.

use crate::error::{is_disconnect, is_timeout, Error, Result};
use crate::transport::tls::{TlsReader, TlsStream, TlsWriter};
use crate::transport::ws::{self, Role, WsReader, WsWriter};
use crate::transport::TcpHalf;
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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;
use uuid::Uuid;

/// How long a peer waits to connect, for the TLS and WebSocket handshakes, and
/// for the relay's answer.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest chunk a bridge moves in one read (and one WebSocket frame).
pub const BRIDGE_BUFFER: usize = 64 * 1024;
/// The longest HTTP response head accepted for a WebSocket upgrade.
pub const MAX_UPGRADE_RESPONSE: usize = 16 * 1024;
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
            let tls = tls_handshake(sock, &url.host, self.tls_config()?)?;
            Ok(Relayed::tls(tls))
        } else {
            Ok(Relayed::Tcp(sock))
        }
    }

    /// Opens a candidate: connects, sends the JET request (or the WebSocket
    /// upgrade that carries it) and reads the answer. Returns the stream only
    /// on success (200, or 101 for WebSocket); any other status is
    /// [`Error::Status`].
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
            .write_all(&packet::encode(head.as_bytes(), WRITE_MASK))
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
        let response = message::parse_response(&reply.payload).map_err(Error::Protocol)?;
        if response.status != 200 {
            return Err(Error::Status(response.status));
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
        let key = tungstenite::handshake::client::generate_key();
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
            request.websocket_path(),
            url.authority(),
        );
        let relayed = if url.scheme.is_tls() {
            let mut tls = tls_handshake(sock, &url.host, self.tls_config()?)?;
            let sock = Arc::clone(tls.socket());
            sock.set_read_timeout(Some(NETWORK_TIMEOUT))
                .and_then(|()| sock.set_write_timeout(Some(NETWORK_TIMEOUT)))
                .map_err(|e| Error::io("setting timeouts", e))?;
            let (response, leftover) = upgrade(&mut tls, &head, &key)?;
            let (reader, writer) = tls.split();
            let (reader, writer) = ws::new(reader, writer, Role::Client, leftover);
            (
                Relayed::Wss(Box::new(Halves::new(reader, writer, sock))),
                response,
            )
        } else {
            let sock = Arc::new(sock);
            let (response, leftover) = upgrade(&mut TcpHalf::new(Arc::clone(&sock)), &head, &key)?;
            let half = TcpHalf::new(Arc::clone(&sock));
            let (reader, writer) = ws::new(half.clone(), half, Role::Client, leftover);
            (
                Relayed::Ws(Box::new(Halves::new(reader, writer, sock))),
                response,
            )
        };
        let sock = relayed.0.socket();
        sock.set_read_timeout(None)
            .and_then(|()| sock.set_write_timeout(None))
            .map_err(|e| Error::io("clearing timeouts", e))?;
        Ok(relayed)
    }
}

/// Runs the TLS handshake on a connected socket, verifying `host`; the
/// result has no timeouts set.
fn tls_handshake(sock: TcpStream, host: &str, config: Arc<ClientConfig>) -> Result<TlsStream> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Config(format!("TLS server name {host:?}: {e}")))?;
    let conn =
        ClientConnection::new(config, name).map_err(|e| Error::Protocol(format!("TLS: {e}")))?;
    sock.set_read_timeout(Some(NETWORK_TIMEOUT))
        .and_then(|()| sock.set_write_timeout(Some(NETWORK_TIMEOUT)))
        .map_err(|e| Error::io("setting timeouts", e))?;
    let tls = TlsStream::handshake(sock, conn).map_err(|e| Error::io("TLS handshake", e))?;
    let sock = tls.socket();
    sock.set_read_timeout(None)
        .and_then(|()| sock.set_write_timeout(None))
        .map_err(|e| Error::io("clearing timeouts", e))?;
    Ok(tls)
}

/// Sends a WebSocket upgrade request head and reads the answer: the 101's
/// head and the bytes read after it (the first frames). Any other status is
/// [`Error::Status`]; a 101 with the wrong `Sec-WebSocket-Accept` is refused.
fn upgrade(stream: &mut (impl Read + Write), head: &str, key: &str) -> Result<(Response, Vec<u8>)> {
    let handshake_error = |e: io::Error| {
        if is_timeout(&e) {
            Error::io(
                "WebSocket handshake",
                io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
            )
        } else {
            Error::io("WebSocket handshake", e)
        }
    };
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(handshake_error)?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&data) {
            Ok(httparse::Status::Complete(len)) => {
                let status = parsed.code.unwrap_or_default();
                if status != 101 {
                    return Err(Error::Status(status));
                }
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).trim().to_owned();
                        (h.name.to_owned(), value)
                    })
                    .collect();
                let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
                let accept = headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("Sec-WebSocket-Accept"));
                if accept.map(|(_, value)| value.as_str()) != Some(expected.as_str()) {
                    return Err(Error::Protocol(
                        "WebSocket handshake: wrong or missing Sec-WebSocket-Accept".into(),
                    ));
                }
                let leftover = data.split_off(len);
                return Ok((Response { status, headers }, leftover));
            }
            Ok(httparse::Status::Partial) if data.len() < MAX_UPGRADE_RESPONSE => {}
            Ok(httparse::Status::Partial) => {
                return Err(Error::Protocol(
                    "WebSocket handshake: response head over 16 KiB".into(),
                ))
            }
            Err(e) => return Err(Error::Protocol(format!("WebSocket handshake: {e}"))),
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Error::io(
                    "WebSocket handshake",
                    io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(handshake_error(e)),
        }
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
    fn new(reader: R, writer: W, sock: Arc<TcpStream>) -> Halves<R, W> {
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
    fn tls(tls: TlsStream) -> Relayed {
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
