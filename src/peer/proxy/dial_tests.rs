//! `dial` directly and through an in-test HTTP CONNECT proxy, in front of a loopback echo target; the SOCKS5 tests are in `socks5`.

use super::*;
use crate::peer::proxy::ProxyAddr;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;

/// The dial budget in tests that expect success.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The dial budget in tests that expect a timeout.
const SHORT: Duration = Duration::from_millis(300);
/// How long past its budget a timed-out dial may take to return.
const SLACK: Duration = Duration::from_secs(3);
/// How long a test proxy waits on a silent client before giving up.
const PROXY_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback target that echoes each of `connections` connections until EOF.
fn echo_target(connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    thread::spawn(move || {
        for conn in listener.incoming().take(connections) {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else {
                    return;
                };
                let _ = io::copy(&mut conn, &mut out);
            });
        }
    });
    addr
}

/// A proxy's client connection: what it reads never blocks past the limit.
fn accepted(listener: &TcpListener) -> Option<TcpStream> {
    let (conn, _) = listener.accept().ok()?;
    conn.set_read_timeout(Some(PROXY_IO_TIMEOUT)).ok()?;
    Some(conn)
}

/// Copies both ways between a proxy's client and its upstream until both end.
fn splice(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut client, mut upstream) = (client, upstream);
    thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(Shutdown::Write);
}

/// Blocks until the client hangs up (or the read limit passes).
fn drain(mut conn: TcpStream) {
    let _ = io::copy(&mut conn, &mut io::sink());
}

fn round_trip(sock: &mut TcpStream) {
    sock.set_read_timeout(Some(TIMEOUT))
        .expect("setting a timeout");
    sock.write_all(b"ping").expect("writing through the tunnel");
    let mut back = [0u8; 4];
    sock.read_exact(&mut back).expect("reading the echo");
    assert_eq!(&back, b"ping");
}

#[derive(Clone, Copy)]
enum HttpMode {
    /// Answer 200 and tunnel to the upstream.
    Tunnel,
    /// Answer this status line and close.
    Status(&'static str),
    /// Answer 200 with these bytes right after the head, then wait.
    Eager(&'static [u8]),
    /// Send the start of a head and never finish it.
    Partial,
    /// Send a head that never ends before 8 KiB.
    Oversize,
}

/// What the HTTP proxy saw: the request target, `Host` and `Proxy-Authorization`.
#[derive(Debug)]
struct HttpSeen {
    target: String,
    host: Option<String>,
    auth: Option<String>,
}

/// An HTTP CONNECT proxy serving one connection.
fn http_proxy(
    mode: HttpMode,
    require: Option<&str>,
    upstream: Option<SocketAddr>,
) -> (Proxy, Receiver<HttpSeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let port = listener.local_addr().expect("bound").port();
    let require = require.map(|userpass| format!("Basic {}", base64(userpass.as_bytes())));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Some(mut conn) = accepted(&listener) else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < MAX_CONNECT_HEAD {
            if conn.read_exact(&mut byte).is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let seen = HttpSeen {
            target: req.path.unwrap_or("").to_owned(),
            host: header("host"),
            auth: header("proxy-authorization"),
        };
        let authorized = require.is_none() || seen.auth == require;
        let _ = tx.send(seen);
        if !authorized {
            let _ = conn.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        }
        match mode {
            HttpMode::Tunnel => {
                let Some(Ok(up)) = upstream.map(TcpStream::connect) else {
                    return;
                };
                if conn
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .is_ok()
                {
                    splice(conn, up);
                }
            }
            HttpMode::Status(line) => {
                let _ = write!(conn, "HTTP/1.1 {line}\r\nContent-Length: 0\r\n\r\n");
            }
            HttpMode::Eager(extra) => {
                let mut answer = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
                answer.extend_from_slice(extra);
                if conn.write_all(&answer).is_ok() {
                    drain(conn);
                }
            }
            HttpMode::Partial => {
                if conn.write_all(b"HTTP/1.1 200 Conn").is_ok() {
                    drain(conn);
                }
            }
            HttpMode::Oversize => {
                let pad = format!("X-Pad: {}\r\n", "a".repeat(1000));
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n");
                // Twice the limit, then wait for the client to give up.
                for _ in 0..(2 * MAX_CONNECT_HEAD / pad.len() + 1) {
                    if conn.write_all(pad.as_bytes()).is_err() {
                        return;
                    }
                }
                drain(conn);
            }
        }
    });
    let proxy = Proxy::Http {
        addr: ProxyAddr {
            host: "127.0.0.1".into(),
            port,
        },
        auth: None,
    };
    (proxy, rx)
}

fn with_auth(proxy: Proxy, user: &str, pass: &str) -> Proxy {
    let auth = Some((user.to_owned(), pass.to_owned()));
    match proxy {
        Proxy::Http { addr, .. } => Proxy::Http { addr, auth },
        Proxy::Socks5 { addr, .. } => Proxy::Socks5 { addr, auth },
    }
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (plain, coded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
        ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
    ] {
        assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
    }
    assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
}

#[test]
fn direct_dial_reaches_the_target() {
    let target = echo_target(1);
    let mut sock = dial("127.0.0.1", target.port(), None, TIMEOUT).expect("dialing directly");
    assert_eq!(sock.peer_addr().expect("connected"), target);
    assert!(sock.nodelay().expect("reading TCP_NODELAY"));
    assert_eq!(sock.read_timeout().expect("reading the timeout"), None);
    round_trip(&mut sock);
}

#[test]
fn dial_to_a_dead_proxy_names_the_proxy() {
    // An address we bound and closed: connecting is refused.
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let port = listener.local_addr().expect("bound").port();
    drop(listener);
    let proxy = Proxy::parse(&format!("socks5://127.0.0.1:{port}")).expect("a valid URL");
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("nothing listens");
    assert!(
        err.to_string()
            .contains(&format!("connecting to the SOCKS5 proxy 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn http_connect_tunnels_to_the_target() {
    let (proxy, seen) = http_proxy(HttpMode::Tunnel, None, Some(echo_target(1)));
    let mut sock = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect("tunnelling");
    assert_eq!(sock.read_timeout().expect("reading the timeout"), None);
    round_trip(&mut sock);
    let seen = seen.recv_timeout(TIMEOUT).expect("the proxy saw a request");
    assert_eq!(seen.target, "relay.example:443");
    assert_eq!(seen.host.as_deref(), Some("relay.example:443"));
    assert_eq!(seen.auth, None);
}

#[test]
fn http_connect_brackets_an_ipv6_target() {
    let (proxy, seen) = http_proxy(HttpMode::Tunnel, None, Some(echo_target(1)));
    let mut sock = dial("2001:db8::1", 8443, Some(&proxy), TIMEOUT).expect("tunnelling");
    round_trip(&mut sock);
    let seen = seen.recv_timeout(TIMEOUT).expect("the proxy saw a request");
    assert_eq!(seen.target, "[2001:db8::1]:8443");
}

#[test]
fn http_connect_sends_basic_credentials() {
    let (proxy, seen) = http_proxy(HttpMode::Tunnel, Some("alice:pa:ss"), Some(echo_target(1)));
    let proxy = with_auth(proxy, "alice", "pa:ss");
    let mut sock = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect("authorized");
    round_trip(&mut sock);
    let seen = seen.recv_timeout(TIMEOUT).expect("the proxy saw a request");
    assert_eq!(seen.auth.as_deref(), Some("Basic YWxpY2U6cGE6c3M="));
}

#[test]
fn http_connect_with_wrong_credentials_reports_407() {
    let (proxy, _seen) = http_proxy(HttpMode::Tunnel, Some("alice:right"), None);
    let proxy = with_auth(proxy, "alice", "wrong");
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(
        err.to_string().contains(&format!(
            "the HTTP proxy 127.0.0.1:{} refused CONNECT relay.example:443: \
             407 Proxy Authentication Required",
            proxy.addr().port
        )),
        "{err}"
    );
}

#[test]
fn http_connect_refusal_carries_the_status() {
    let (proxy, _seen) = http_proxy(HttpMode::Status("403 Forbidden"), None, None);
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(
        err.to_string()
            .contains("CONNECT relay.example:443: 403 Forbidden"),
        "{err}"
    );
    let (proxy, _seen) = http_proxy(HttpMode::Status("502 Bad Gateway"), None, None);
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(err.to_string().contains("502 Bad Gateway"), "{err}");
}

#[test]
fn http_connect_leaves_bytes_after_the_head_in_the_stream() {
    let (proxy, _seen) = http_proxy(HttpMode::Eager(b"JET!"), None, None);
    let mut sock = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect("tunnelling");
    sock.set_read_timeout(Some(TIMEOUT))
        .expect("setting a timeout");
    let mut first = [0u8; 4];
    sock.read_exact(&mut first)
        .expect("the bytes after the head");
    assert_eq!(&first, b"JET!");
}

#[test]
fn http_connect_partial_head_times_out_within_the_timeout() {
    let (proxy, _seen) = http_proxy(HttpMode::Partial, None, None);
    let start = Instant::now();
    let err = dial("relay.example", 443, Some(&proxy), SHORT).expect_err("no complete head");
    let took = start.elapsed();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(took >= SHORT && took < SHORT + SLACK, "took {took:?}");
    assert!(
        err.to_string().contains("CONNECT relay.example:443"),
        "{err}"
    );
}

#[test]
fn http_connect_oversize_head_is_an_error() {
    let (proxy, _seen) = http_proxy(HttpMode::Oversize, None, None);
    let start = Instant::now();
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("head too big");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("exceeds {MAX_CONNECT_HEAD} bytes")),
        "{err}"
    );
    assert!(
        start.elapsed() < TIMEOUT,
        "the error came by the limit, not the timeout"
    );
}

#[test]
fn http_connect_refuses_a_target_that_would_inject_headers() {
    let (proxy, _seen) = http_proxy(HttpMode::Tunnel, None, None);
    let err = dial("relay.example\r\nX-Evil: 1", 443, Some(&proxy), TIMEOUT)
        .expect_err("not a host name");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

#[path = "dial_socks_tests.rs"]
mod socks5;
