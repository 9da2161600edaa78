//! The peer side: open a JET candidate (accept, connect or test) and bridge the
//! relayed stream to stdin/stdout.

use crate::error::{Error, Result};
use crate::message::{self, Method, Response};
use crate::packet::{self, WRITE_MASK};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;
use uuid::Uuid;

/// How long a peer waits to connect and for the relay's answer.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// A candidate URL a peer can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateUrl {
    /// `HOST:PORT`.
    pub address: String,
    /// The host part, sent as `Host`.
    pub host: String,
}

impl CandidateUrl {
    /// Parses `tcp://HOST:PORT` (the scheme may be left out).
    pub fn parse(text: &str) -> Result<CandidateUrl> {
        let rest = match text.split_once("://") {
            Some(("tcp", rest)) => rest,
            Some((scheme, _)) => {
                return Err(Error::Config(format!(
                    "{text:?}: unsupported scheme {scheme:?}"
                )))
            }
            None => text,
        };
        let rest = rest.split(['/', '?']).next().unwrap_or_default();
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(Error::Config(format!("{text:?} needs a port")));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(Error::Config(format!(
                "{text:?} needs a host and a numeric port"
            )));
        }
        Ok(CandidateUrl {
            address: rest.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        })
    }
}

/// Connects to a relay, sends one request with one write and reads the
/// response packet (and nothing after it). Returns the stream only on 200.
pub fn open(
    url: &CandidateUrl,
    method: Method,
    version: u8,
    association: Option<Uuid>,
    candidate: Uuid,
) -> Result<(TcpStream, Response)> {
    let addrs: Vec<_> = url
        .address
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving {}", url.address), e))?
        .collect();
    let mut last = None;
    let mut sock = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, NETWORK_TIMEOUT) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let sock = sock.ok_or_else(|| {
        Error::io(
            format!("connecting to {}", url.address),
            last.unwrap_or_else(|| io::ErrorKind::NotFound.into()),
        )
    })?;
    let _ = sock.set_nodelay(true);
    let head = message::request_head(method, version, &url.host, association, candidate);
    (&sock)
        .write_all(&packet::encode(head.as_bytes(), WRITE_MASK))
        .map_err(|e| Error::io("sending the request", e))?;
    sock.set_read_timeout(Some(NETWORK_TIMEOUT))
        .map_err(|e| Error::io("setting a timeout", e))?;
    let reply = packet::read_packet(&sock).map_err(|e| Error::io("reading the response", e))?;
    sock.set_read_timeout(None)
        .map_err(|e| Error::io("clearing a timeout", e))?;
    let response = message::parse_response(&reply.payload).map_err(Error::Protocol)?;
    if response.status != 200 {
        return Err(Error::Status(response.status));
    }
    Ok((sock, response))
}

/// Copies stdin to the stream (shutting its write side at EOF) and the stream
/// to stdout, until the other peer ends its side.
pub fn bridge_stdio(sock: TcpStream) -> Result<()> {
    let writer = sock
        .try_clone()
        .map_err(|e| Error::io("cloning the socket", e))?;
    let sender = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut writer = writer;
            let copied = io::copy(&mut io::stdin().lock(), &mut writer);
            if copied.is_ok() {
                let _ = writer.shutdown(Shutdown::Write);
            } else {
                let _ = writer.shutdown(Shutdown::Both);
            }
        })
        .map_err(|e| Error::io("starting the stdin thread", e))?;
    let mut reader = &sock;
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if crate::error::is_disconnect(&e) => break,
            Err(e) => return Err(Error::io("reading the relayed stream", e)),
        };
        stdout
            .write_all(&buf[..n])
            .map_err(|e| Error::io("writing stdout", e))?;
    }
    stdout.flush().map_err(|e| Error::io("writing stdout", e))?;
    // The other peer ending its side is a half-close: what we still have to
    // send must go out before we exit.
    let _ = sender.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_urls() {
        let url = CandidateUrl::parse("tcp://relay.example:8080").unwrap();
        assert_eq!(
            (url.address.as_str(), url.host.as_str()),
            ("relay.example:8080", "relay.example")
        );
        let url = CandidateUrl::parse("127.0.0.1:9?ctype=relay").unwrap();
        assert_eq!(url.address, "127.0.0.1:9");
        let url = CandidateUrl::parse("tcp://[::1]:7").unwrap();
        assert_eq!(
            (url.address.as_str(), url.host.as_str()),
            ("[::1]:7", "::1")
        );
        assert!(CandidateUrl::parse("tcp://relay.example").is_err());
        assert!(CandidateUrl::parse("gopher://x:1").is_err());
    }
}
