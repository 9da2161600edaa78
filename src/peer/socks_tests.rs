//! The SOCKS5 server handshake against our own client and against bad input.

use super::*;
use crate::peer::proxy::{dial, Proxy, ProxyAddr};
use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

/// The handshake budget in tests that expect success.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The budget in tests that expect a timeout.
const SHORT: Duration = Duration::from_millis(300);
/// How long past its budget a timed-out handshake may take to return.
const SLACK: Duration = Duration::from_secs(3);
/// Inputs in the garbage test.
const GARBAGE_CASES: usize = 200;

fn listener() -> (TcpListener, Proxy) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let port = listener.local_addr().expect("bound").port();
    let proxy = Proxy::Socks5 {
        addr: ProxyAddr {
            host: "127.0.0.1".into(),
            port,
        },
        auth: None,
    };
    (listener, proxy)
}

/// Dials `host:port` through our own listener; the server side answers
/// success with a bound address of `bound`'s type and echoes one message.
fn through_our_listener(host: &str, port: u16, bound: SocketAddr) -> (String, u16) {
    let (listener, proxy) = listener();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let target = accept_connect(&mut conn, TIMEOUT);
        let ok = target.is_ok();
        let _ = tx.send(target);
        if ok && reply_success(&mut conn, bound).is_ok() {
            let mut buf = [0u8; 4];
            if conn.read_exact(&mut buf).is_ok() {
                let _ = conn.write_all(&buf);
            }
        }
    });
    let mut sock = dial(host, port, Some(&proxy), TIMEOUT).expect("our client through our server");
    sock.set_read_timeout(Some(TIMEOUT))
        .expect("setting a timeout");
    sock.write_all(b"ping").expect("writing through the tunnel");
    let mut back = [0u8; 4];
    sock.read_exact(&mut back).expect("the echo");
    assert_eq!(&back, b"ping");
    rx.recv_timeout(TIMEOUT)
        .expect("the server side finished")
        .expect("the handshake succeeded")
}

#[test]
fn handshake_with_our_client_yields_the_target() {
    let v4: SocketAddr = "10.1.2.3:4567".parse().expect("an address");
    let v6: SocketAddr = "[fd00::5]:4567".parse().expect("an address");
    assert_eq!(
        through_our_listener("relay.example", 443, v4),
        ("relay.example".into(), 443)
    );
    assert_eq!(
        through_our_listener("192.0.2.7", 9000, v6),
        ("192.0.2.7".into(), 9000)
    );
    assert_eq!(
        through_our_listener("2001:db8::1", 1, v4),
        ("2001:db8::1".into(), 1)
    );
}

/// Sends `input` as a client that then stops writing, runs the server side
/// on it, and returns its result and every byte it answered.
fn serve(input: &[u8], timeout: Duration) -> (Result<(String, u16), SocksError>, Vec<u8>) {
    let (listener, proxy) = listener();
    let addr = proxy.addr();
    let mut client = TcpStream::connect((addr.host.as_str(), addr.port)).expect("connecting");
    // The kernel queues the connection and the (small) input before accept.
    client.write_all(input).expect("sending the input");
    client.shutdown(Shutdown::Write).expect("ending the input");
    let (mut conn, _) = listener.accept().expect("accepting");
    let result = accept_connect(&mut conn, timeout);
    drop(conn);
    client
        .set_read_timeout(Some(TIMEOUT))
        .expect("setting a timeout");
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    (result, answer)
}

const CONNECT_V4: &[u8] = &[5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0x01, 0xbb];

#[test]
fn a_complete_request_from_raw_bytes() {
    let (result, answer) = serve(CONNECT_V4, TIMEOUT);
    assert_eq!(result.expect("a valid CONNECT"), ("192.0.2.1".into(), 443));
    assert_eq!(answer, [5, 0]);
    let mut domain = vec![5, 2, 2, 0, 5, 1, 0, 3, 4];
    domain.extend_from_slice(b"jet1\x00\x50");
    let (result, _) = serve(&domain, TIMEOUT);
    assert_eq!(result.expect("a valid CONNECT"), ("jet1".into(), 80));
}

#[test]
fn wrong_version_is_a_protocol_error() {
    let (result, answer) = serve(&[4, 1, 0, 80, 192, 0, 2, 1, 0], TIMEOUT);
    match result {
        Err(SocksError::Protocol(why)) => assert!(why.contains("version 4"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(answer.is_empty(), "a SOCKS4 client gets no SOCKS5 bytes");
    let (result, _) = serve(&[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80], TIMEOUT);
    assert!(matches!(result, Err(SocksError::Protocol(_))), "{result:?}");
}

#[test]
fn bind_and_udp_get_reply_7() {
    for command in [CMD_BIND, CMD_UDP_ASSOCIATE, 9] {
        let (result, answer) = serve(&[5, 1, 0, 5, command, 0, 1, 1, 2, 3, 4, 0, 80], TIMEOUT);
        match result {
            Err(SocksError::Refused { reply, why }) => {
                assert_eq!(reply, REPLY_COMMAND_NOT_SUPPORTED);
                assert!(why.contains("only CONNECT"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            answer,
            [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
            "command {command}"
        );
    }
}

#[test]
fn a_client_without_no_auth_gets_no_acceptable_method() {
    let (result, answer) = serve(&[5, 1, METHOD_USER_PASS], TIMEOUT);
    assert!(
        matches!(result, Err(SocksError::Refused { reply: 0xff, .. })),
        "{result:?}"
    );
    assert_eq!(answer, [5, 0xff]);
    let (result, answer) = serve(&[5, 0], TIMEOUT);
    assert!(
        matches!(result, Err(SocksError::Refused { reply: 0xff, .. })),
        "{result:?}"
    );
    assert_eq!(answer, [5, 0xff]);
}

#[test]
fn unknown_address_type_gets_reply_8_and_bad_names_reply_1() {
    let (result, answer) = serve(&[5, 1, 0, 5, 1, 0, 9], TIMEOUT);
    assert!(
        matches!(result, Err(SocksError::Refused { reply: 8, .. })),
        "{result:?}"
    );
    assert_eq!(&answer[2..4], [5, 8]);
    for name in [&b""[..], b"a b", b"\xff\xfe", b"x\r\n"] {
        let mut input = vec![
            5,
            1,
            0,
            5,
            1,
            0,
            3,
            u8::try_from(name.len()).expect("short"),
        ];
        input.extend_from_slice(name);
        input.extend_from_slice(&[0, 80]);
        let (result, answer) = serve(&input, TIMEOUT);
        assert!(
            matches!(result, Err(SocksError::Refused { reply: 1, .. })),
            "{name:?}: {result:?}"
        );
        assert_eq!(&answer[2..4], [5, 1], "{name:?}");
    }
}

#[test]
fn every_truncation_is_an_eof_error() {
    let mut domain = vec![5, 1, 0, 5, 1, 0, 3, 13];
    domain.extend_from_slice(b"relay.example\x01\xbb");
    let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
    v6.extend_from_slice(&[0; 16]);
    v6.extend_from_slice(&[0, 80]);
    for full in [CONNECT_V4, &domain, &v6] {
        for len in 0..full.len() {
            let (result, _) = serve(&full[..len], TIMEOUT);
            match result {
                Err(SocksError::Io { source, .. }) => {
                    assert_eq!(
                        source.kind(),
                        io::ErrorKind::UnexpectedEof,
                        "{len}: {source}"
                    )
                }
                other => panic!("{:?} cut at {len}: {other:?}", &full[..len]),
            }
        }
    }
}

#[test]
fn a_silent_client_times_out_within_the_timeout() {
    let (listener, proxy) = listener();
    let addr = proxy.addr();
    let _client = TcpStream::connect((addr.host.as_str(), addr.port)).expect("connecting");
    let (mut conn, _) = listener.accept().expect("accepting");
    let start = Instant::now();
    let result = accept_connect(&mut conn, SHORT);
    let took = start.elapsed();
    match result {
        Err(SocksError::Io { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    assert!(took >= SHORT && took < SHORT + SLACK, "took {took:?}");
}

#[test]
fn garbage_never_panics() {
    // xorshift: the same inputs on every run, no crate needed.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..GARBAGE_CASES {
        let len = usize::try_from(next() % 64).expect("small");
        let mut input: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        // Half the cases start like SOCKS5 so they reach the later steps.
        if case % 2 == 0 && input.len() >= 3 {
            input[..3].copy_from_slice(&[5, 1, 0]);
            if let Some(b) = input.get_mut(3) {
                *b = 5;
            }
        }
        let _ = serve(&input, TIMEOUT);
    }
}

#[test]
fn replies_have_the_rfc_layout() {
    let mut out = Vec::new();
    reply_success(&mut out, "192.0.2.1:443".parse().expect("an address")).expect("a Vec takes it");
    assert_eq!(out, [5, 0, 0, 1, 192, 0, 2, 1, 1, 187]);
    out.clear();
    reply_success(&mut out, "[::1]:80".parse().expect("an address")).expect("a Vec takes it");
    assert_eq!(out.len(), 22);
    assert_eq!(&out[..4], [5, 0, 0, 4]);
    assert_eq!(&out[19..], [1, 0, 80]);
    out.clear();
    reply_failure(&mut out, REPLY_HOST_UNREACHABLE).expect("a Vec takes it");
    assert_eq!(out, [5, 4, 0, 1, 0, 0, 0, 0, 0, 0]);
}
