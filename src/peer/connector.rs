//! Opening candidates: the TCP connection, TLS, the JET request or the
//! WebSocket upgrade that carries it, and the relay's answer.

use crate::error::{is_timeout, Error, Result};
use crate::peer::stream::Relayed;
use crate::peer::tls_stream::TlsStream;
use crate::peer::trust::{build_tls_config, TlsOptions};
use crate::peer::ws_stream::{Sink, WsIo, WsSender, WsStream};
use crate::wire::candidate::CandidateUrl;
use crate::wire::message::{self, Method, Response};
use crate::wire::packet::{self, WRITE_MASK};
use rustls::ClientConfig;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// How long a peer waits to connect, for the TLS and WebSocket handshakes, and
/// for the relay's answer.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
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
                return Err(Error::Status(reply.status().as_u16()))
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
