//! The one dial to a relay: direct, through an HTTP proxy's `CONNECT`, or through a SOCKS5 proxy.

use super::{context, Deadline, Proxy};
use crate::peer::socks;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest answer head an HTTP proxy may send to `CONNECT`.
pub const MAX_CONNECT_HEAD: usize = 8 * 1024;
/// Header lines parsed in a `CONNECT` answer.
const MAX_PROXY_HEADERS: usize = 64;
/// The longest host name SOCKS5 can carry (one length byte).
const MAX_SOCKS_DOMAIN: usize = 255;

/// Opens a TCP connection to `target_host:target_port`, directly or through
/// `proxy`, within `timeout` for the whole of it (connects, the proxy's
/// handshake and answer; not name resolution, which std cannot bound).
/// `target_host` is a name or an IP address, brackets optional.
///
/// The stream returned carries only the relay's bytes: nothing past the
/// proxy's answer has been read. It has TCP_NODELAY on and no timeouts set.
/// Errors keep their `io::ErrorKind` (`TimedOut`, `PermissionDenied` for
/// refused credentials, `ConnectionRefused` for a proxy's refusal) and say
/// which proxy, which target and what went wrong.
///
/// `Connector` calls it where it now calls `connect_tcp`, for every scheme:
/// `dial(&url.host, url.port, proxy_for(&settings, url.scheme.as_str(),
/// &url.host, url.port), NETWORK_TIMEOUT)`; TLS and the WebSocket upgrade
/// then run inside the tunnel, still naming the relay's host.
pub fn dial(
    target_host: &str,
    target_port: u16,
    proxy: Option<&Proxy>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let host = target_host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(target_host);
    let deadline = Deadline::after(timeout);
    let sock = match proxy {
        None => connect(host, target_port, &deadline)
            .map_err(|e| context(e, format!("connecting to {}", authority(host, target_port))))?,
        Some(proxy) => {
            let addr = proxy.addr();
            let mut sock = connect(&addr.host, addr.port, &deadline).map_err(|e| {
                context(
                    e,
                    format!("connecting to the {} proxy {addr}", proxy.kind()),
                )
            })?;
            // Every handshake error names the proxy first, then says what it did.
            let who = format!("the {} proxy {addr}", proxy.kind());
            let target = Target {
                host,
                port: target_port,
                who: &who,
            };
            match proxy {
                Proxy::Http { auth, .. } => {
                    http_connect(&mut sock, &target, auth.as_ref(), &deadline)
                }
                Proxy::Socks5 { auth, .. } => {
                    socks_connect(&mut sock, &target, auth.as_ref(), &deadline)
                }
            }?;
            sock
        }
    };
    sock.set_read_timeout(None)
        .and_then(|()| sock.set_write_timeout(None))
        .map_err(|e| context(e, "clearing the handshake timeouts"))?;
    // Relay traffic is interactive; a failure here only costs latency.
    let _ = sock.set_nodelay(true);
    Ok(sock)
}

/// `HOST:PORT`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to the first address of `host` that answers by the deadline.
fn connect(host: &str, port: u16, deadline: &Deadline) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| context(e, "resolving"))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, deadline.remaining()?) {
            Ok(sock) => return Ok(sock),
            Err(e) => last = Some(context(e, addr)),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// A target host fit for a request line or a SOCKS5 request: visible ASCII,
/// so it cannot inject a header or smuggle a second request.
fn check_target(host: &str) -> io::Result<()> {
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a host name or address"),
        ));
    }
    Ok(())
}

/// Where a handshake is to lead, and which proxy is asked, for messages.
struct Target<'a> {
    host: &'a str,
    port: u16,
    who: &'a str,
}

fn http_connect(
    sock: &mut TcpStream,
    to: &Target<'_>,
    auth: Option<&(String, String)>,
    deadline: &Deadline,
) -> io::Result<()> {
    check_target(to.host)?;
    let (target, who) = (authority(to.host, to.port), to.who);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = auth {
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&base64(format!("{user}:{pass}").as_bytes()));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    deadline
        .write_all(sock, request.as_bytes())
        .map_err(|e| context(e, format!("{who}: sending CONNECT {target}")))?;
    let head = read_head(sock, deadline)
        .map_err(|e| context(e, format!("{who}: reading the answer to CONNECT {target}")))?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_PROXY_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    match answer.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{who} sent an incomplete answer to CONNECT {target}"),
            ))
        }
        Err(e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{who} answered CONNECT {target} with something not HTTP: {e}"),
            ))
        }
    }
    let code = answer.code.unwrap_or(0);
    if (200..300).contains(&code) {
        return Ok(());
    }
    let kind = match code {
        401 | 403 | 407 => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::ConnectionRefused,
    };
    let reason: String = answer
        .reason
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    Err(io::Error::new(
        kind,
        format!("{who} refused CONNECT {target}: {code} {reason}")
            .trim_end()
            .to_owned(),
    ))
}

/// Reads up to and including the blank line that ends an answer head, one
/// byte at a time: the tunnel's bytes follow at once and are the relay's, so
/// none may land in a buffer of ours.
fn read_head(sock: &mut TcpStream, deadline: &Deadline) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while head.len() < MAX_CONNECT_HEAD {
        deadline.read_exact(sock, &mut byte)?;
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the answer head exceeds {MAX_CONNECT_HEAD} bytes"),
    ))
}

fn socks_connect(
    sock: &mut TcpStream,
    to: &Target<'_>,
    auth: Option<&(String, String)>,
    deadline: &Deadline,
) -> io::Result<()> {
    let (host, port) = (to.host, to.port);
    check_target(host)?;
    let (target, who) = (authority(host, port), to.who);
    // Built first: a name SOCKS5 cannot carry fails before a byte is sent.
    let mut request = vec![socks::VERSION, socks::CMD_CONNECT, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            request.push(socks::ATYP_IPV4);
            request.extend_from_slice(&ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            request.push(socks::ATYP_IPV6);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            let len = u8::try_from(host.len()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a host name for SOCKS5 has at most {MAX_SOCKS_DOMAIN} bytes"),
                )
            })?;
            request.push(socks::ATYP_DOMAIN);
            request.push(len);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    let greeting: &[u8] = match auth {
        Some(_) => &[
            socks::VERSION,
            2,
            socks::METHOD_NO_AUTH,
            socks::METHOD_USER_PASS,
        ],
        None => &[socks::VERSION, 1, socks::METHOD_NO_AUTH],
    };
    deadline
        .write_all(sock, greeting)
        .map_err(|e| context(e, format!("{who}: sending the greeting")))?;
    let mut choice = [0u8; 2];
    deadline
        .read_exact(sock, &mut choice)
        .map_err(|e| context(e, format!("{who}: reading the chosen method")))?;
    if choice[0] != socks::VERSION {
        return Err(protocol(format!(
            "{who} answered version {}: not a SOCKS5 proxy",
            choice[0]
        )));
    }
    match (choice[1], auth) {
        (socks::METHOD_NO_AUTH, _) => {}
        (socks::METHOD_USER_PASS, Some((user, pass))) => {
            user_pass(sock, who, user, pass, deadline)?;
        }
        (socks::METHOD_NONE_ACCEPTABLE, _) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                if auth.is_some() {
                    format!("{who} accepts neither no authentication nor a user name and password")
                } else {
                    format!("{who} requires authentication: give user:pass@ in the proxy URL")
                },
            ))
        }
        (method, _) => {
            return Err(protocol(format!(
                "{who} chose authentication method {method}, which we did not offer"
            )))
        }
    }
    deadline
        .write_all(sock, &request)
        .map_err(|e| context(e, format!("{who}: sending CONNECT {target}")))?;
    let mut reply = [0u8; 4];
    let read_reply = |e| context(e, format!("{who}: reading the answer to CONNECT {target}"));
    deadline.read_exact(sock, &mut reply).map_err(read_reply)?;
    if reply[0] != socks::VERSION {
        return Err(protocol(format!(
            "{who} answered CONNECT {target} with version {}",
            reply[0]
        )));
    }
    if reply[1] != socks::REPLY_SUCCEEDED {
        let kind = match reply[1] {
            socks::REPLY_NOT_ALLOWED => io::ErrorKind::PermissionDenied,
            socks::REPLY_TTL_EXPIRED => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::ConnectionRefused,
        };
        return Err(io::Error::new(
            kind,
            format!(
                "{who} could not connect to {target}: {} (reply {})",
                socks::reply_text(reply[1]),
                reply[1]
            ),
        ));
    }
    // The bound address is of no use to us, but it must be read to the last
    // byte: what follows is the relay's.
    let len = match reply[3] {
        socks::ATYP_IPV4 => 4,
        socks::ATYP_IPV6 => 16,
        socks::ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            deadline.read_exact(sock, &mut len).map_err(read_reply)?;
            usize::from(len[0])
        }
        other => {
            return Err(protocol(format!(
                "{who} answered CONNECT {target} with address type {other}"
            )))
        }
    };
    let mut bound = vec![0u8; len + 2];
    deadline.read_exact(sock, &mut bound).map_err(read_reply)
}

/// RFC 1929 user name and password sub-negotiation.
fn user_pass(
    sock: &mut TcpStream,
    who: &str,
    user: &str,
    pass: &str,
    deadline: &Deadline,
) -> io::Result<()> {
    let too_long = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a SOCKS5 user name or password has at most 255 bytes",
        )
    };
    let ulen = u8::try_from(user.len()).map_err(|_| too_long())?;
    let plen = u8::try_from(pass.len()).map_err(|_| too_long())?;
    let mut request = vec![socks::USER_PASS_VERSION, ulen];
    request.extend_from_slice(user.as_bytes());
    request.push(plen);
    request.extend_from_slice(pass.as_bytes());
    deadline
        .write_all(sock, &request)
        .map_err(|e| context(e, format!("{who}: sending the user name and password")))?;
    let mut status = [0u8; 2];
    deadline.read_exact(sock, &mut status).map_err(|e| {
        context(
            e,
            format!("{who}: reading the answer to the user name and password"),
        )
    })?;
    // Some servers answer with version 5 here; only the status matters.
    if status[1] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{who} rejected the user name and password for {user:?} (status {})",
                status[1]
            ),
        ));
    }
    Ok(())
}

fn protocol(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

/// Standard base64 with padding (RFC 4648 §4), for `Proxy-Authorization`.
fn base64(input: &[u8]) -> String {
    crate::wire::base64::encode(input, crate::wire::base64::Alphabet::Standard, true)
}

#[cfg(test)]
#[path = "dial_tests.rs"]
mod tests;
