//! Opening candidates: the TCP connection, TLS, the JET request or the
//! WebSocket upgrade that carries it, and the relay's answer.

use crate::error::{is_timeout, Error, Result};
use crate::peer::proxy::{self, ProxySettings};
use crate::peer::stream::{Halves, Relayed};
use crate::peer::trust::{build_tls_config, TlsOptions};
use crate::transport::tls::TlsStream;
use crate::transport::ws::{self, Role};
use crate::transport::TcpHalf;
use crate::wire::candidate::CandidateUrl;
use crate::wire::http;
use crate::wire::message::{self, Method, Response};
use crate::wire::packet::{self, WRITE_MASK};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use uuid::Uuid;

/// How long a peer waits to connect, for the TLS and WebSocket handshakes, and
/// for the relay's answer.
pub(crate) const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest HTTP response head accepted for a WebSocket upgrade.
pub(crate) const MAX_UPGRADE_RESPONSE: usize = 16 * 1024;
/// The most body bytes read from a refused WebSocket upgrade for its reason
/// (`{"error": ...}`): the relay's are a few hundred bytes.
pub(crate) const MAX_REFUSAL_BODY: usize = 4 * 1024;

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

    /// The request as a person reads it in an error: `accept A C`, or
    /// `accept (version 1)` and `connect A (version 1)`.
    pub fn describe(&self) -> String {
        let method = self.method.as_str();
        match (self.version, self.association) {
            (1, Some(association)) => format!("{method} {association} (version 1)"),
            (1, None) => format!("{method} (version 1)"),
            (_, association) => format!(
                "{method} {} {}",
                association.unwrap_or_default(),
                self.candidate
            ),
        }
    }

    /// The request path of the WebSocket upgrade that carries this request.
    pub(crate) fn websocket_path(&self) -> String {
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
    proxies: ProxySettings,
}

impl Connector {
    /// A connector; the TLS configuration is built on first use, so a peer
    /// that only uses `tcp://` never reads a CA file.
    pub fn new(options: TlsOptions) -> Connector {
        Connector {
            options,
            config: OnceLock::new(),
            proxies: ProxySettings::direct(),
        }
    }

    /// The same connector, reaching relays through the proxies `proxies`
    /// names (`--proxy`, `--no-proxy`, the environment).
    pub fn with_proxies(mut self, proxies: ProxySettings) -> Connector {
        self.proxies = proxies;
        self
    }

    /// The TCP connection to a candidate's host: directly or through the
    /// proxy chosen for its scheme and host, within [`NETWORK_TIMEOUT`].
    fn connect(&self, url: &CandidateUrl) -> Result<TcpStream> {
        let proxy = proxy::proxy_for(&self.proxies, url.scheme.as_str(), &url.host, url.port);
        proxy::dial(&url.host, url.port, proxy, NETWORK_TIMEOUT).map_err(|e| {
            // `dial` starts its message with what it was doing
            // ("connecting to HOST:PORT", "the SOCKS5 proxy ..."): the context.
            let text = e.to_string();
            match text.split_once(": ") {
                Some((what, rest)) => Error::io(what, io::Error::new(e.kind(), rest)),
                None => Error::io("reaching the relay", e),
            }
        })
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
        let sock = self.connect(url)?;
        if url.scheme.is_tls() {
            Ok(Relayed::tls(self.tls_handshake(sock, &url.host)?))
        } else {
            Ok(Relayed::Tcp(sock))
        }
    }

    /// Checks that the relay at `url` can be reached, before a command
    /// promises anything locally (`--listen` printing `listening`): the same
    /// connection [`Connector::dial`] makes (TCP, and for `tls://` and
    /// `wss://` the TLS handshake, so a certificate the peer would refuse
    /// fails here too), then closed without a request. Not a JET `test`: a
    /// connect's association may not exist yet when the listener starts,
    /// and version 1 has no test.
    pub fn reach(&self, url: &CandidateUrl) -> Result<()> {
        let stream = self.dial(url)?;
        stream.kill();
        Ok(())
    }

    /// Runs the TLS handshake on a connected socket, verifying `host`, within
    /// [`NETWORK_TIMEOUT`]. The result has no timeouts set.
    fn tls_handshake(&self, sock: TcpStream, host: &str) -> Result<TlsStream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::Config(format!("TLS server name {host:?}: {e}")))?;
        let conn = ClientConnection::new(self.tls_config()?, name)
            .map_err(|e| Error::Protocol(format!("TLS: {e}")))?;
        set_timeouts(&sock, Some(NETWORK_TIMEOUT))?;
        let tls = TlsStream::handshake(sock, conn).map_err(|e| Error::io("TLS handshake", e))?;
        set_timeouts(tls.socket(), None)?;
        Ok(tls)
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
        set_timeouts(stream.socket(), Some(NETWORK_TIMEOUT))?;
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
                request: request.describe(),
                status: response.status,
                reason: response.error_reason(),
            });
        }
        set_timeouts(stream.socket(), None)?;
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
        let sock = self.connect(url)?;
        let authority = url.authority();
        if url.scheme.is_tls() {
            let mut tls = self.tls_handshake(sock, &url.host)?;
            set_timeouts(tls.socket(), Some(NETWORK_TIMEOUT))?;
            let (response, leftover) = upgrade(&mut tls, &authority, request)?;
            set_timeouts(tls.socket(), None)?;
            let sock = Arc::clone(tls.socket());
            let (reader, writer) = tls.split();
            let (reader, writer) = ws::new(reader, writer, Role::Client, leftover);
            Ok((
                Relayed::Wss(Box::new(Halves::new(reader, writer, sock))),
                response,
            ))
        } else {
            set_timeouts(&sock, Some(NETWORK_TIMEOUT))?;
            let (response, leftover) = upgrade(&mut &sock, &authority, request)?;
            set_timeouts(&sock, None)?;
            let sock = Arc::new(sock);
            let (reader, writer) = ws::new(
                TcpHalf::new(Arc::clone(&sock)),
                TcpHalf::new(Arc::clone(&sock)),
                Role::Client,
                leftover,
            );
            Ok((
                Relayed::Ws(Box::new(Halves::new(reader, writer, sock))),
                response,
            ))
        }
    }
}

/// Sets (or with `None` clears) both socket timeouts.
fn set_timeouts(sock: &TcpStream, timeout: Option<Duration>) -> Result<()> {
    sock.set_read_timeout(timeout)
        .and_then(|()| sock.set_write_timeout(timeout))
        .map_err(|e| {
            let what = if timeout.is_some() {
                "setting timeouts"
            } else {
                "clearing timeouts"
            };
            Error::io(what, e)
        })
}

/// Sends the WebSocket upgrade that carries `request` and reads the answer's
/// head. Returns the answer and the bytes read after its head: the relay's
/// first frames when it did not wait, which the WebSocket reader must see
/// first. Any status but 101 is [`Error::Refused`], with the reason of its
/// `Jet-Error` header or JSON body.
fn upgrade(
    stream: &mut (impl Read + Write),
    authority: &str,
    request: &JetRequest,
) -> Result<(Response, Vec<u8>)> {
    let path = request.websocket_path();
    let key = generate_key();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| Error::io("WebSocket handshake", e))?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        let mut headers = [httparse::EMPTY_HEADER; message::MAX_HEADERS];
        match httparse::Response::new(&mut headers).parse(&data) {
            Ok(httparse::Status::Complete(len)) => break len,
            Ok(httparse::Status::Partial) if data.len() > MAX_UPGRADE_RESPONSE => {
                return Err(Error::Protocol(
                    "WebSocket handshake: the answer's head is too long".into(),
                ))
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(Error::Protocol(format!("WebSocket handshake: {e}"))),
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Error::io(
                    "WebSocket handshake",
                    io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the answer"),
                ))
            }
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(Error::io(
                    "WebSocket handshake",
                    io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
                ))
            }
            Err(e) => return Err(Error::io("WebSocket handshake", e)),
        }
    };
    let response = message::parse_response(&data[..head_len])?;
    if response.status != 101 {
        let reason = response
            .error_reason()
            .or_else(|| body_reason(stream, &response, data[head_len..].to_vec()));
        return Err(Error::Refused {
            request: request.describe(),
            status: response.status,
            reason,
        });
    }
    let upgraded = http::has_token(&response.headers, "Upgrade", "websocket")
        && http::has_token(&response.headers, "Connection", "upgrade");
    if !upgraded {
        return Err(Error::Protocol(
            "WebSocket handshake: the 101 does not upgrade to websocket".into(),
        ));
    }
    if response.header("Sec-WebSocket-Accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(Error::Protocol(
            "WebSocket handshake: wrong Sec-WebSocket-Accept".into(),
        ));
    }
    Ok((response, data[head_len..].to_vec()))
}

/// The `error` of a refusal's JSON body (`{"error": ...}`), for relays that
/// send no `Jet-Error` header: reads the body after `start` (what came with
/// the head) up to its `Content-Length`, at most [`MAX_REFUSAL_BODY`] bytes,
/// within the timeouts already set. `None` when there is none to be had.
fn body_reason(stream: &mut impl Read, response: &Response, mut body: Vec<u8>) -> Option<String> {
    let length = response
        .header("Content-Length")
        .and_then(|v| v.parse::<usize>().ok())?
        .min(MAX_REFUSAL_BODY);
    let mut chunk = [0u8; 1024];
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    body.truncate(length);
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let why = message::error_text(value.get("error")?.as_str()?);
    (!why.is_empty()).then_some(why)
}

/// Connects to `HOST:PORT`, trying each resolved address, with a timeout.
pub(crate) fn connect_tcp(address: &str) -> Result<TcpStream> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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

    /// A stream that answers with `reply` and swallows what is written.
    struct Replay(io::Cursor<Vec<u8>>);

    impl Read for Replay {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Replay {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[track_caller]
    fn refusal_of(reply: &str) -> String {
        let request = JetRequest::v2(Method::Accept, Uuid::nil(), Uuid::nil());
        let mut stream = Replay(io::Cursor::new(reply.as_bytes().to_vec()));
        match upgrade(&mut stream, "relay", &request) {
            Err(e @ Error::Refused { .. }) => e.to_string(),
            other => panic!("not a refusal: {:?}", other.map(|(r, _)| r)),
        }
    }

    #[test]
    fn websocket_refusals_give_the_header_the_body_or_the_status_name() {
        let nil = Uuid::nil();
        let header = "HTTP/1.1 409 Conflict\r\nJet-Error: candidate already paired\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            refusal_of(header),
            format!("the relay refused accept {nil} {nil}: 409 candidate already paired")
        );
        let body = r#"{"error":"wrong API key\u001b[2J"}"#;
        let json = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            refusal_of(&json),
            format!("the relay refused accept {nil} {nil}: 401 wrong API key?[2J")
        );
        let bare = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            refusal_of(bare),
            format!("the relay refused accept {nil} {nil}: 404 Not Found")
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
