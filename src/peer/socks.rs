//! The server side of a SOCKS5 handshake (RFC 1928: no authentication, CONNECT only) for the peer's local listener.

use super::proxy::{context, Deadline};
use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// The protocol version byte that starts every SOCKS5 message.
pub const VERSION: u8 = 5;
/// Method: no authentication.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method: user name and password (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// The server's answer when it accepts none of the offered methods.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// The version byte of the RFC 1929 sub-negotiation.
pub const USER_PASS_VERSION: u8 = 0x01;
/// Command: open a TCP connection.
pub const CMD_CONNECT: u8 = 0x01;
/// Command: wait for an incoming connection (not supported).
pub const CMD_BIND: u8 = 0x02;
/// Command: relay UDP (not supported).
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;
/// Address type: four bytes of IPv4.
pub const ATYP_IPV4: u8 = 0x01;
/// Address type: a length byte and a host name.
pub const ATYP_DOMAIN: u8 = 0x03;
/// Address type: sixteen bytes of IPv6.
pub const ATYP_IPV6: u8 = 0x04;
/// Reply: succeeded.
pub const REPLY_SUCCEEDED: u8 = 0x00;
/// Reply: general SOCKS server failure.
pub const REPLY_GENERAL_FAILURE: u8 = 0x01;
/// Reply: connection not allowed by ruleset.
pub const REPLY_NOT_ALLOWED: u8 = 0x02;
/// Reply: network unreachable.
pub const REPLY_NETWORK_UNREACHABLE: u8 = 0x03;
/// Reply: host unreachable.
pub const REPLY_HOST_UNREACHABLE: u8 = 0x04;
/// Reply: connection refused.
pub const REPLY_CONNECTION_REFUSED: u8 = 0x05;
/// Reply: TTL expired.
pub const REPLY_TTL_EXPIRED: u8 = 0x06;
/// Reply: command not supported.
pub const REPLY_COMMAND_NOT_SUPPORTED: u8 = 0x07;
/// Reply: address type not supported.
pub const REPLY_ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;

/// What a reply code means (RFC 1928 §6), for error messages.
pub fn reply_text(code: u8) -> &'static str {
    match code {
        REPLY_SUCCEEDED => "succeeded",
        REPLY_GENERAL_FAILURE => "general SOCKS server failure",
        REPLY_NOT_ALLOWED => "connection not allowed by the proxy's rules",
        REPLY_NETWORK_UNREACHABLE => "network unreachable",
        REPLY_HOST_UNREACHABLE => "host unreachable",
        REPLY_CONNECTION_REFUSED => "connection refused by the destination",
        REPLY_TTL_EXPIRED => "TTL expired",
        REPLY_COMMAND_NOT_SUPPORTED => "command not supported",
        REPLY_ADDRESS_TYPE_NOT_SUPPORTED => "address type not supported",
        _ => "unknown reply code",
    }
}

/// Why a SOCKS5 client's handshake failed.
#[derive(Debug)]
pub enum SocksError {
    /// Reading or writing failed (timeouts are `TimedOut`, a client that
    /// hung up early `UnexpectedEof`).
    Io {
        /// Which step.
        context: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The client does not speak SOCKS5; nothing was answered.
    Protocol(String),
    /// A well-formed request we do not serve; `reply` was sent to the client.
    Refused {
        /// The reply code sent (or, for methods, `METHOD_NONE_ACCEPTABLE`).
        reply: u8,
        /// What was asked for.
        why: String,
    },
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksError::Io { context, source } => {
                write!(f, "SOCKS5 handshake, {context}: {source}")
            }
            SocksError::Protocol(why) => write!(f, "SOCKS5 handshake: {why}"),
            SocksError::Refused { reply, why } => {
                write!(f, "SOCKS5 handshake: {why} (answered {reply:#04x})")
            }
        }
    }
}

impl std::error::Error for SocksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SocksError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Runs the server side of a SOCKS5 handshake up to the CONNECT request and
/// returns the target's host (a name, or an IP address without brackets) and
/// port. Only "no authentication" and CONNECT are served; a client offering
/// neither gets `0xFF`, another command reply 7, an unknown address type
/// reply 8, a malformed host name reply 1, each then an error. The whole
/// handshake must finish within `timeout`.
///
/// On success the caller answers with [`reply_success`] or [`reply_failure`];
/// the stream's timeouts are cleared (the reply is at most 22 bytes, which a
/// fresh socket's send buffer always takes).
pub fn accept_connect(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(String, u16), SocksError> {
    let deadline = Deadline::after(timeout);
    let io = |context: &'static str| move |source| SocksError::Io { context, source };
    let mut greeting = [0u8; 2];
    deadline
        .read_exact(stream, &mut greeting)
        .map_err(io("reading the greeting"))?;
    if greeting[0] != VERSION {
        return Err(SocksError::Protocol(format!(
            "version {} is not SOCKS5",
            greeting[0]
        )));
    }
    let mut methods = vec![0u8; usize::from(greeting[1])];
    deadline
        .read_exact(stream, &mut methods)
        .map_err(io("reading the methods"))?;
    if !methods.contains(&METHOD_NO_AUTH) {
        // Best effort: the client is turned away whether or not it hears why.
        let _ = deadline.write_all(stream, &[VERSION, METHOD_NONE_ACCEPTABLE]);
        return Err(SocksError::Refused {
            reply: METHOD_NONE_ACCEPTABLE,
            why: format!("the client offers methods {methods:?}, not 0 (no authentication)"),
        });
    }
    deadline
        .write_all(stream, &[VERSION, METHOD_NO_AUTH])
        .map_err(io("choosing the method"))?;
    let mut request = [0u8; 4];
    deadline
        .read_exact(stream, &mut request)
        .map_err(io("reading the request"))?;
    let [version, command, _reserved, atyp] = request;
    if version != VERSION {
        return Err(SocksError::Protocol(format!(
            "the request has version {version}"
        )));
    }
    let host = match atyp {
        ATYP_IPV4 => {
            let mut ip = [0u8; 4];
            deadline
                .read_exact(stream, &mut ip)
                .map_err(io("reading the address"))?;
            Ok(Ipv4Addr::from(ip).to_string())
        }
        ATYP_IPV6 => {
            let mut ip = [0u8; 16];
            deadline
                .read_exact(stream, &mut ip)
                .map_err(io("reading the address"))?;
            Ok(Ipv6Addr::from(ip).to_string())
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            deadline
                .read_exact(stream, &mut len)
                .map_err(io("reading the address"))?;
            let mut name = vec![0u8; usize::from(len[0])];
            deadline
                .read_exact(stream, &mut name)
                .map_err(io("reading the address"))?;
            // Visible ASCII only (IDNs travel as punycode): no control bytes
            // reach logs or the relay, and the text is valid UTF-8.
            if !name.is_empty() && name.iter().all(u8::is_ascii_graphic) {
                Ok(String::from_utf8_lossy(&name).into_owned())
            } else {
                Err(format!(
                    "bad host name {:?}",
                    String::from_utf8_lossy(&name)
                ))
            }
        }
        // The length of an unknown address is unknown: answer and stop.
        other => {
            return Err(refuse(
                stream,
                REPLY_ADDRESS_TYPE_NOT_SUPPORTED,
                format!("address type {other}"),
            ))
        }
    };
    let mut port = [0u8; 2];
    deadline
        .read_exact(stream, &mut port)
        .map_err(io("reading the port"))?;
    let port = u16::from_be_bytes(port);
    // Refused only now, with the whole request read: closing a socket with
    // unread bytes sends a reset, which can destroy the reply in flight.
    let host = host.map_err(|why| refuse(stream, REPLY_GENERAL_FAILURE, why))?;
    if command != CMD_CONNECT {
        let name = match command {
            CMD_BIND => "BIND".to_owned(),
            CMD_UDP_ASSOCIATE => "UDP ASSOCIATE".to_owned(),
            other => format!("command {other}"),
        };
        return Err(refuse(
            stream,
            REPLY_COMMAND_NOT_SUPPORTED,
            format!("{name} is not supported, only CONNECT"),
        ));
    }
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(io("clearing the timeouts"))?;
    Ok((host, port))
}

/// Sends `code`, then closes our side; the error says why.
fn refuse(stream: &mut TcpStream, code: u8, why: String) -> SocksError {
    // Best effort: the request is refused whether or not the client hears it.
    let _ = reply_failure(stream, code);
    let _ = stream.shutdown(Shutdown::Write);
    SocksError::Refused { reply: code, why }
}

/// Answers a CONNECT with success and the address we connected from
/// (`BND.ADDR`, `BND.PORT`); the tunnel's bytes may follow at once.
pub fn reply_success(stream: &mut impl Write, bound: SocketAddr) -> io::Result<()> {
    let mut reply = vec![VERSION, REPLY_SUCCEEDED, 0];
    match bound {
        SocketAddr::V4(addr) => {
            reply.push(ATYP_IPV4);
            reply.extend_from_slice(&addr.ip().octets());
        }
        SocketAddr::V6(addr) => {
            reply.push(ATYP_IPV6);
            reply.extend_from_slice(&addr.ip().octets());
        }
    }
    reply.extend_from_slice(&bound.port().to_be_bytes());
    stream
        .write_all(&reply)
        .map_err(|e| context(e, "sending the SOCKS5 success reply"))
}

/// Answers a CONNECT with failure `code` (one of the `REPLY_` constants) and
/// the zero address RFC 1928 allows when there is no bound address.
pub fn reply_failure(stream: &mut impl Write, code: u8) -> io::Result<()> {
    stream
        .write_all(&[VERSION, code, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])
        .map_err(|e| context(e, format!("sending SOCKS5 reply {code}")))
}

#[cfg(test)]
#[path = "socks_tests.rs"]
mod tests;
