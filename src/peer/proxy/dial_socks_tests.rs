//! `dial` through an in-test SOCKS5 proxy (RFC 1928, RFC 1929).

use super::*;

#[derive(Clone, Copy)]
enum SocksMode {
    /// Reply success with this bound address (ATYP, address, port) and tunnel.
    Tunnel(&'static [u8]),
    /// Reply this failure code.
    Reply(u8),
    /// Read the greeting and say nothing.
    Silent,
}

/// What the SOCKS5 proxy saw.
#[derive(Debug)]
struct SocksSeen {
    methods: Vec<u8>,
    auth: Option<(String, String)>,
    atyp: u8,
    host: String,
    port: u16,
}

fn read_vec(conn: &mut TcpStream, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    conn.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// A SOCKS5 proxy serving one connection, with user/pass when `require` is set.
fn socks_proxy(
    mode: SocksMode,
    require: Option<(&'static str, &'static str)>,
    upstream: Option<SocketAddr>,
) -> (Proxy, Receiver<SocksSeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let port = listener.local_addr().expect("bound").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Some(mut conn) = accepted(&listener) else {
            return;
        };
        let Some(head) = read_vec(&mut conn, 2) else {
            return;
        };
        let Some(methods) = read_vec(&mut conn, usize::from(head[1])) else {
            return;
        };
        if matches!(mode, SocksMode::Silent) {
            return drain(conn);
        }
        let want = if require.is_some() { 2 } else { 0 };
        if !methods.contains(&want) {
            let _ = conn.write_all(&[5, 0xff]);
            return;
        }
        if conn.write_all(&[5, want]).is_err() {
            return;
        }
        let mut auth = None;
        if let Some((user, pass)) = require {
            let Some(v) = read_vec(&mut conn, 2) else {
                return;
            };
            let Some(u) = read_vec(&mut conn, usize::from(v[1])) else {
                return;
            };
            let Some(plen) = read_vec(&mut conn, 1) else {
                return;
            };
            let Some(p) = read_vec(&mut conn, usize::from(plen[0])) else {
                return;
            };
            let given = (
                String::from_utf8_lossy(&u).into_owned(),
                String::from_utf8_lossy(&p).into_owned(),
            );
            let ok = given.0 == user && given.1 == pass;
            if conn.write_all(&[1, u8::from(!ok)]).is_err() || !ok {
                return;
            }
            auth = Some(given);
        }
        let Some(req) = read_vec(&mut conn, 4) else {
            return;
        };
        let host = match req[3] {
            1 => read_vec(&mut conn, 4).map(|a| IpAddr::from([a[0], a[1], a[2], a[3]]).to_string()),
            4 => read_vec(&mut conn, 16)
                .and_then(|a| <[u8; 16]>::try_from(a).ok())
                .map(|a| IpAddr::from(a).to_string()),
            3 => read_vec(&mut conn, 1)
                .and_then(|len| read_vec(&mut conn, usize::from(len[0])))
                .map(|name| String::from_utf8_lossy(&name).into_owned()),
            _ => None,
        };
        let (Some(host), Some(port)) = (host, read_vec(&mut conn, 2)) else {
            return;
        };
        let _ = tx.send(SocksSeen {
            methods,
            auth,
            atyp: req[3],
            host,
            port: u16::from_be_bytes([port[0], port[1]]),
        });
        match mode {
            SocksMode::Tunnel(bound) => {
                let Some(Ok(up)) = upstream.map(TcpStream::connect) else {
                    return;
                };
                let mut reply = vec![5, 0, 0];
                reply.extend_from_slice(bound);
                if conn.write_all(&reply).is_ok() {
                    splice(conn, up);
                }
            }
            SocksMode::Reply(code) => {
                let _ = conn.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
            }
            SocksMode::Silent => {}
        }
    });
    let proxy = Proxy::Socks5 {
        addr: ProxyAddr {
            host: "127.0.0.1".into(),
            port,
        },
        auth: None,
    };
    (proxy, rx)
}

/// A bound address of each type: IPv4, IPv6 and a name.
const BOUND_V4: &[u8] = &[1, 127, 0, 0, 1, 0x10, 0x92];
const BOUND_V6: &[u8] = &[
    4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x92,
];
const BOUND_NAME: &[u8] = b"\x03\x0dbound.example\x10\x92";

#[test]
fn socks5_tunnels_by_host_name() {
    let (proxy, seen) = socks_proxy(SocksMode::Tunnel(BOUND_NAME), None, Some(echo_target(1)));
    let mut sock = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect("tunnelling");
    assert_eq!(sock.read_timeout().expect("reading the timeout"), None);
    round_trip(&mut sock);
    let seen = seen.recv_timeout(TIMEOUT).expect("the proxy saw a request");
    assert_eq!(seen.methods, vec![0]);
    assert_eq!(
        (seen.atyp, seen.host.as_str(), seen.port),
        (3, "relay.example", 443)
    );
}

#[test]
fn socks5_sends_ip_literals_as_addresses() {
    for (host, bound, atyp, want) in [
        ("192.0.2.7", BOUND_V6, 1, "192.0.2.7"),
        ("2001:db8::1", BOUND_V4, 4, "2001:db8::1"),
        ("[2001:db8::2]", BOUND_NAME, 4, "2001:db8::2"),
    ] {
        let (proxy, seen) = socks_proxy(SocksMode::Tunnel(bound), None, Some(echo_target(1)));
        let mut sock = dial(host, 8080, Some(&proxy), TIMEOUT).expect("tunnelling");
        // The echo comes back clean only if the whole bound address was read.
        round_trip(&mut sock);
        let seen = seen.recv_timeout(TIMEOUT).expect("the proxy saw a request");
        assert_eq!(
            (seen.atyp, seen.host.as_str(), seen.port),
            (atyp, want, 8080),
            "{host}"
        );
    }
}

#[test]
fn socks5_user_password_is_offered_and_sent() {
    let (proxy, seen) = socks_proxy(
        SocksMode::Tunnel(BOUND_V4),
        Some(("alice", "s3cret")),
        Some(echo_target(1)),
    );
    let proxy = with_auth(proxy, "alice", "s3cret");
    let mut sock = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect("authorized");
    round_trip(&mut sock);
    let seen = seen.recv_timeout(TIMEOUT).expect("the proxy saw a request");
    assert_eq!(seen.methods, vec![0, 2]);
    assert_eq!(seen.auth, Some(("alice".into(), "s3cret".into())));
}

#[test]
fn socks5_wrong_password_is_refused_clearly() {
    let (proxy, _seen) = socks_proxy(SocksMode::Tunnel(BOUND_V4), Some(("alice", "right")), None);
    let proxy = with_auth(proxy, "alice", "wrong");
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(
        err.to_string()
            .contains("rejected the user name and password"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[test]
fn socks5_proxy_that_wants_credentials_we_lack() {
    let (proxy, _seen) = socks_proxy(SocksMode::Tunnel(BOUND_V4), Some(("alice", "pw")), None);
    let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("requires authentication"), "{err}");
}

#[test]
fn socks5_reply_codes_become_clear_errors() {
    for (code, text) in [
        (1, "general SOCKS server failure"),
        (2, "not allowed"),
        (3, "network unreachable"),
        (4, "host unreachable"),
        (5, "connection refused"),
        (6, "TTL expired"),
        (7, "command not supported"),
        (8, "address type not supported"),
        (0x2a, "unknown reply code"),
    ] {
        let (proxy, _seen) = socks_proxy(SocksMode::Reply(code), None, None);
        let err = dial("relay.example", 443, Some(&proxy), TIMEOUT).expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("could not connect to relay.example:443"),
            "{msg}"
        );
        assert!(
            msg.contains(text) && msg.contains(&format!("(reply {code})")),
            "{msg}"
        );
    }
}

#[test]
fn socks5_silent_proxy_times_out_within_the_timeout() {
    let (proxy, _seen) = socks_proxy(SocksMode::Silent, None, None);
    let start = Instant::now();
    let err = dial("relay.example", 443, Some(&proxy), SHORT).expect_err("no answer");
    let took = start.elapsed();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(took >= SHORT && took < SHORT + SLACK, "took {took:?}");
}

#[test]
fn socks5_refuses_a_host_name_too_long_for_the_protocol() {
    let (proxy, _seen) = socks_proxy(SocksMode::Silent, None, None);
    let long = format!("{}.example", "a".repeat(250));
    let start = Instant::now();
    // The greeting goes out first, so the silent proxy would time us out:
    // the check must come before any byte is sent.
    let err = dial(&long, 443, Some(&proxy), TIMEOUT).expect_err("too long");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(start.elapsed() < TIMEOUT);
}
