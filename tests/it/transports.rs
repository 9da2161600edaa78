//! TLS and WebSocket transports: each on its own, every pair of transports at
//! full duplex, the WebSocket test endpoint and refusals, bad TLS input,
//! half-close, closes, the handshake timeout and certificate loading.

use crate::support::*;
use jet_relay::relay::config::{Config, ListenUrl, ListenerConfig};
use jet_relay::relay::AssociationState;
use jet_relay::relay::Outcome;
use jet_relay::wire::packet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;
use uuid::Uuid;

/// Bytes each peer sends in the full-duplex test, in each combination.
const FULL_DUPLEX_BYTES: usize = 50 * 1024 * 1024;
/// The longest one combination of the full-duplex test may take.
const FULL_DUPLEX_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn every_transport_pairs_with_itself_and_the_table_records_it() {
    let relay = TestRelay::with_tls(|_| {});
    for t in Transport::ALL {
        let (a, server, client) = relay.pair_over(t, t);
        client.send(b"hello server");
        assert_eq!(recv_n(&*server, 12), b"hello server", "{t:?}");
        server.send(b"hello client");
        assert_eq!(recv_n(&*client, 12), b"hello client", "{t:?}");
        let info = relay.table().info(a).unwrap();
        let cand = &info.candidates[0];
        assert_eq!(
            (cand.accept_transport, cand.connect_transport),
            (Some(t), Some(t)),
            "{t:?}"
        );
        assert_eq!(info.state, AssociationState::Active);
    }
}

/// Two 50 MB patterns, made once for every combination.
fn big_patterns() -> &'static (Vec<u8>, Vec<u8>) {
    static PATTERNS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        (
            pattern(0xacce, FULL_DUPLEX_BYTES),
            pattern(0xc0ec, FULL_DUPLEX_BYTES),
        )
    })
}

/// Receives `expected.len()` bytes and checks each chunk as it arrives, so no
/// second 50 MB copy is kept.
fn recv_and_check(peer: &dyn Peer, expected: &[u8], what: &str) {
    let mut buf = vec![0; 256 * 1024];
    let mut at = 0;
    while at < expected.len() {
        let n = peer.recv(&mut buf);
        assert!(n > 0, "{what}: stream ended after {at} bytes");
        assert!(
            buf[..n] == expected[at..at + n],
            "{what}: bytes {at}..{} differ",
            at + n
        );
        at += n;
    }
}

/// Both peers send 50 MB at once while reading: neither direction may wait
/// for the other, whatever the two transports.
fn full_duplex(relay: &TestRelay, accept: Transport, connect: Transport) -> Duration {
    let (from_accept, from_connect) = big_patterns();
    let started = Instant::now();
    let (_, server, client) = relay.pair_over(accept, connect);
    let what = format!("{accept:?} -> {connect:?}");
    thread::scope(|s| {
        let server_send = s.spawn(|| server.send(from_accept));
        let client_send = s.spawn(|| client.send(from_connect));
        let server_recv = s.spawn(|| recv_and_check(&*server, from_connect, &what));
        recv_and_check(&*client, from_accept, &what);
        server_recv.join().unwrap();
        server_send.join().unwrap();
        client_send.join().unwrap();
    });
    let took = started.elapsed();
    assert!(
        took < FULL_DUPLEX_LIMIT,
        "{what} took {took:?} (limit {FULL_DUPLEX_LIMIT:?})"
    );
    took
}

#[test]
fn every_pair_of_transports_relays_50_mb_both_ways_at_once() {
    let relay = TestRelay::with_tls(|_| {});
    big_patterns();
    let mut figures = Vec::new();
    // One combination at a time: each already runs four client threads and
    // two relay threads, as many as two cores can keep busy.
    for accept in Transport::ALL {
        for connect in Transport::ALL {
            let took = full_duplex(&relay, accept, connect);
            let mb_s = 2.0 * FULL_DUPLEX_BYTES as f64 / 1e6 / took.as_secs_f64();
            figures.push(format!(
                "{accept:?}->{connect:?} {took:.2?} ({mb_s:.0} MB/s both ways)"
            ));
        }
    }
    eprintln!("full duplex, 50 MB each way:\n  {}", figures.join("\n  "));
    assert_eq!(figures.len(), 16);
    let m = &relay.server.metrics();
    assert_eq!(m.pairs_started.load(Ordering::Relaxed), 16);
}

#[test]
fn websocket_text_frames_carry_data_and_pings_get_pongs_that_are_not_data() {
    let relay = TestRelay::with_tls(|_| {});
    for t in [Transport::Ws, Transport::Wss] {
        let a = Uuid::new_v4();
        let c = Uuid::new_v4();
        assert!(relay.table().create(a));
        let server = relay.open(Transport::Tcp, "accept", a, c).unwrap();
        let addr = if t == Transport::Ws {
            relay.addr
        } else {
            relay.tls_addr()
        };
        let message = |ws: &mut dyn FnMut(Message)| {
            ws(Message::text("hello "));
            ws(Message::Ping(b"are you there".to_vec().into()));
            ws(Message::Binary(b"world".to_vec().into()));
        };
        let pong = if t == Transport::Ws {
            let sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let mut ws = ws_handshake(sock, addr, "connect", a, c).unwrap();
            message(&mut |m| ws.send(m).unwrap());
            ws.read().unwrap()
        } else {
            let stream = tls_connect(addr, "localhost").unwrap();
            let mut ws = ws_handshake(stream, addr, "connect", a, c).unwrap();
            message(&mut |m| ws.send(m).unwrap());
            ws.read().unwrap()
        };
        assert_eq!(
            pong,
            Message::Pong(b"are you there".to_vec().into()),
            "{t:?}"
        );
        // The ping's payload never reached the other peer.
        assert_eq!(recv_n(&*server, 11), b"hello world", "{t:?}");
    }
}

#[test]
fn websocket_frames_sent_with_the_upgrade_request_are_relayed() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    assert!(relay.table().create(a));
    let server = relay.open(Transport::Tcp, "accept", a, c).unwrap();
    let mut sock = relay.dial();
    let mut bytes = upgrade_request(
        &format!("/jet/connect/{a}/{c}"),
        "dGhlIHNhbXBsZSBub25jZQ==",
        "",
    );
    // A masked binary frame in the same write as the request.
    let payload = b"early frame";
    let mask = [1, 2, 3, 4];
    bytes.extend_from_slice(&[0x82, 0x80 | payload.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    sock.write_all(&bytes).unwrap();
    let head = read_http_head(&mut sock);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert_eq!(recv_n(&*server, payload.len()), payload);
    // The relay writes binary frames, unmasked.
    server.send(b"back");
    assert_eq!(read_n(&mut sock, 6), [0x82, 4, b'b', b'a', b'c', b'k']);
}

/// A raw upgrade request head.
pub(crate) fn upgrade_request(path: &str, key: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Reads an HTTP response head (up to its blank line, nothing after it).
pub(crate) fn read_http_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(sock.read(&mut byte).unwrap(), 1, "head cut short: {head:?}");
        head.push(byte[0]);
        assert!(head.len() < 4096, "head too long");
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn websocket_test_answers_101_then_a_clean_close() {
    let relay = TestRelay::with_tls(|_| {});
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    for (t, addr) in [
        (Transport::Ws, relay.addr),
        (Transport::Wss, relay.tls_addr()),
    ] {
        let started = Instant::now();
        let close = if t == Transport::Ws {
            let sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let mut ws = ws_handshake(sock, addr, "test", a, Uuid::new_v4()).unwrap();
            let close = ws.read().unwrap();
            // Our close reply completes the closing handshake.
            assert!(matches!(
                ws.read(),
                Err(tungstenite::Error::ConnectionClosed)
            ));
            close
        } else {
            let stream = tls_connect(addr, "localhost").unwrap();
            let mut ws = ws_handshake(stream, addr, "test", a, Uuid::new_v4()).unwrap();
            ws.read().unwrap()
        };
        match close {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal, "{t:?}"),
            other => panic!("{t:?}: expected a close frame, got {other:?}"),
        }
        assert!(started.elapsed() < WAIT);
    }
    let m = &relay.server.metrics();
    assert_eq!(m.handshakes(Outcome::Tested), 2);
}

#[test]
fn websocket_refuses_unknown_associations_and_candidates_with_404_before_upgrading() {
    let relay = TestRelay::with_tls(|_| {});
    let known = Uuid::new_v4();
    assert!(relay.table().create(known));
    let gathered = Uuid::new_v4();
    relay
        .table()
        .gather(gathered, &["tcp://example:1".to_owned()])
        .unwrap();
    let unknown = Uuid::new_v4();
    for t in [Transport::Ws, Transport::Wss] {
        for method in ["test", "accept", "connect"] {
            let refused = relay.open(t, method, unknown, Uuid::new_v4()).err();
            assert_eq!(
                refused,
                Some(404),
                "{t:?} {method} on an unknown association"
            );
            let refused = relay.open(t, method, gathered, Uuid::new_v4()).err();
            assert_eq!(refused, Some(404), "{t:?} {method} on an unknown candidate");
        }
        // Nothing parked on this candidate of a known association.
        let refused = relay.open(t, "connect", known, Uuid::new_v4()).err();
        assert_eq!(refused, Some(404), "{t:?} connect with nothing parked");
    }
    // WebSocket never creates an association (the REST API does).
    assert!(relay.table().info(unknown).is_none());
    let m = &relay.server.metrics();
    assert_eq!(m.rejected_404.load(Ordering::Relaxed), 14);
    assert_eq!(m.ws_upgrade_failures.load(Ordering::Relaxed), 0);
}

#[test]
fn bad_websocket_upgrades_are_refused_counted_and_disturb_nothing() {
    let relay = TestRelay::start();
    let (_, server, client) = relay.pair_over(Transport::Tcp, Transport::Ws);
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    let path = format!("/jet/accept/{a}/{}", Uuid::new_v4());
    let good_key = "dGhlIHNhbXBsZSBub25jZQ==";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a key that is not base64",
            upgrade_request(&path, "not a key!", ""),
            "400",
        ),
        ("no key", upgrade_request(&path, "", ""), "400"),
        (
            "another WebSocket version",
            String::from_utf8(upgrade_request(&path, good_key, ""))
                .unwrap()
                .replace("Version: 13", "Version: 8")
                .into_bytes(),
            "426",
        ),
        (
            "no Connection: Upgrade",
            String::from_utf8(upgrade_request(&path, good_key, ""))
                .unwrap()
                .replace("Connection: Upgrade\r\n", "")
                .into_bytes(),
            "400",
        ),
        (
            "a bad path",
            upgrade_request(&format!("/jet/jump/{a}/{}", Uuid::new_v4()), good_key, ""),
            "400",
        ),
        (
            "a bad id",
            upgrade_request("/jet/accept/nope/nope", good_key, ""),
            "400",
        ),
    ];
    for (what, request, status) in &cases {
        let mut sock = relay.dial();
        sock.write_all(request).unwrap();
        let head = read_http_head(&mut sock);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {head}"
        );
        assert!(!head.contains("Sec-WebSocket-Accept"), "{what}: {head}");
        if *status == "426" {
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
        }
        // The reason: a Jet-Error header and a JSON body, then the close.
        assert!(head.contains("\r\nJet-Error: "), "{what}: {head}");
        let length: usize = head
            .split("\r\n")
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: no Content-Length in {head}"));
        let body: serde_json::Value = serde_json::from_slice(&read_n(&mut sock, length)).unwrap();
        assert_eq!(body["status"].to_string(), *status, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
        assert_closed(&mut sock);
    }
    let m = &relay.server.metrics();
    assert_eq!(
        m.ws_upgrade_failures.load(Ordering::Relaxed),
        cases.len() as u64
    );
    // The association was not touched and the pair relays on.
    assert!(relay.table().info(a).unwrap().candidates.is_empty());
    client.send(b"still here");
    assert_eq!(recv_n(&*server, 10), b"still here");
}

#[test]
fn websocket_protocol_is_echoed_only_when_the_client_sent_one() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    for (extra, echoed) in [
        ("Sec-WebSocket-Protocol: jet, other\r\n", Some("jet")),
        ("", None),
    ] {
        let mut sock = relay.dial();
        let path = format!("/jet/test/{a}/{}", Uuid::new_v4());
        sock.write_all(&upgrade_request(&path, "dGhlIHNhbXBsZSBub25jZQ==", extra))
            .unwrap();
        let head = read_http_head(&mut sock);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let protocol = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "));
        assert_eq!(protocol, echoed, "{head}");
    }
}

#[test]
fn tls_clients_verify_the_relay_certificate_against_the_test_ca() {
    let relay = TestRelay::with_tls(|_| {});
    // Both names in the certificate verify.
    for name in ["localhost", "127.0.0.1"] {
        let stream = tls_connect(relay.tls_addr(), name).unwrap();
        assert!(stream
            .conn
            .peer_certificates()
            .is_some_and(|c| !c.is_empty()));
    }
    // A name the certificate does not carry fails verification.
    let err = tls_connect(relay.tls_addr(), "example.com").unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Only TLS 1.2 and 1.3 are offered by the relay; the client negotiated one.
    let stream = tls_connect(relay.tls_addr(), "localhost").unwrap();
    assert!(matches!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2)
    ));
}

#[test]
fn tls_1_2_clients_are_served_too() {
    let relay = TestRelay::with_tls(|_| {});
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(data_file("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut sock = TcpStream::connect(relay.tls_addr()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // JET over TLS 1.2: a test request is answered.
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    let mut stream = rustls::StreamOwned::new(conn, sock);
    stream
        .write_all(
            &packet::encode(v2("test", a, Uuid::new_v4()).as_bytes(), 0x73)
                .expect("a test head fits a packet"),
        )
        .unwrap();
    let packet = packet::read_packet(&mut stream).unwrap();
    let resp = jet_relay::wire::message::parse_response(&packet.payload).unwrap();
    assert_eq!(resp.status, 200);
}

#[test]
fn bad_tls_input_closes_that_connection_only_and_is_counted() {
    let relay = TestRelay::with_tls(|_| {});
    let (_, server, client) = relay.pair_over(Transport::Tls, Transport::Wss);
    let a = Uuid::new_v4();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a plain JET packet",
            packet::encode(v2("accept", a, Uuid::new_v4()).as_bytes(), 0x73)
                .expect("a test head fits a packet"),
        ),
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n".to_vec(),
        ),
        (
            // A handshake record holding a client hello of one junk byte.
            "a bad client hello",
            vec![0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xff],
        ),
        (
            // A well-framed client hello offering only SSL 3.0 and junk.
            "an SSL 3.0 client hello",
            {
                let mut hello = vec![0x03, 0x00];
                hello.extend_from_slice(&[0; 32]);
                hello.extend_from_slice(&[0, 0, 2, 0x00, 0x2f, 1, 0]);
                let mut handshake = vec![0x01, 0, 0, hello.len() as u8];
                handshake.extend_from_slice(&hello);
                let mut record = vec![0x16, 0x03, 0x00, 0, handshake.len() as u8];
                record.extend_from_slice(&handshake);
                record
            },
        ),
    ];
    for (what, bytes) in &cases {
        let mut sock = TcpStream::connect(relay.tls_addr()).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.write_all(bytes).unwrap();
        // At most a TLS alert comes back, then the end.
        let mut answer = Vec::new();
        match sock.read_to_end(&mut answer) {
            Ok(_) => assert!(
                answer.is_empty() || answer[0] == 0x15,
                "{what}: got {answer:?}"
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{what}"),
        }
    }
    let m = &relay.server.metrics();
    assert_eq!(
        m.tls_handshake_failures.load(Ordering::Relaxed),
        cases.len() as u64
    );
    let exposed = relay.http("GET", "/metrics", &[], b"").text();
    assert!(
        exposed.contains(&format!(
            "jet_relay_tls_handshake_failures_total {}\n",
            cases.len()
        )),
        "{exposed}"
    );
    // The TLS pair was not disturbed.
    client.send(b"unharmed");
    assert_eq!(recv_n(&*server, 8), b"unharmed");
    server.send(b"indeed");
    assert_eq!(recv_n(&*client, 6), b"indeed");
}

#[test]
fn half_close_delivers_the_whole_reply_over_every_transport() {
    let relay = TestRelay::with_tls(|_| {});
    let request = pattern(11, 300_000);
    let reply = pattern(12, 500_000);
    for t in Transport::ALL {
        // The peer on `t` sends its request and ends its side; the TCP peer
        // reads to the end, then replies and ends; the peer on `t` gets all.
        let (_, server, client) = relay.pair_over(Transport::Tcp, t);
        thread::scope(|s| {
            s.spawn(|| {
                client.send(&request);
                client.finish();
            });
            assert_eq!(recv_to_end(&*server, request.len()), request, "{t:?}");
        });
        server.send(&reply);
        server.finish();
        assert_eq!(recv_to_end(&*client, reply.len()), reply, "{t:?}");
    }
    // The other way round: the relay ends the stream toward the peer on `t`
    // (TCP shutdown, close_notify), which still replies. WebSocket clients
    // stop sending once they receive a close frame, so this is TCP and TLS.
    for t in [Transport::Tcp, Transport::Tls] {
        let (_, server, client) = relay.pair_over(t, Transport::Tcp);
        client.send(&request);
        client.finish();
        assert_eq!(recv_to_end(&*server, request.len()), request, "{t:?}");
        server.send(&reply);
        server.finish();
        assert_eq!(recv_to_end(&*client, reply.len()), reply, "{t:?}");
    }
}

#[test]
fn a_close_on_one_side_ends_the_other_within_a_bounded_time() {
    let relay = TestRelay::with_tls(|_| {});
    for t in Transport::ALL {
        for closing_first in [true, false] {
            let (a, server, client) = relay.pair_over(t, Transport::Tcp);
            client.send(b"x");
            assert_eq!(recv_n(&*server, 1), b"x");
            let (gone, other) = if closing_first {
                (server, client)
            } else {
                (client, server)
            };
            let started = Instant::now();
            // Dropping the peer closes its socket without any goodbye
            // (no close frame, no close_notify).
            drop(gone);
            assert_eq!(recv_to_end(&*other, 0), b"", "{t:?}");
            assert!(
                started.elapsed() < WAIT,
                "{t:?} took {:?}",
                started.elapsed()
            );
            drop(other);
            let info = relay.table().wait_for(a, WAIT, |i| {
                i.is_some_and(|i| i.state == AssociationState::Ended)
            });
            assert_eq!(
                info.map(|i| i.state),
                Some(AssociationState::Ended),
                "{t:?}: the relay released the pair"
            );
        }
    }
}

#[test]
fn the_handshake_timeout_covers_the_tls_handshake_and_the_websocket_upgrade() {
    let relay = TestRelay::with_tls(|c| c.handshake_timeout = Duration::from_millis(300));
    let (_, server, client) = relay.pair_over(Transport::Wss, Transport::Tls);
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    let head = upgrade_request(
        &format!("/jet/accept/{a}/{}", Uuid::new_v4()),
        "dGhlIHNhbXBsZSBub25jZQ==",
        "",
    );
    let started = Instant::now();
    // Silent on the TLS port: no client hello at all.
    let mut silent = TcpStream::connect(relay.tls_addr()).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    // Half a TLS record header.
    let mut slow_hello = TcpStream::connect(relay.tls_addr()).unwrap();
    slow_hello.set_read_timeout(Some(WAIT)).unwrap();
    slow_hello.write_all(&[0x16, 0x03]).unwrap();
    // A finished TLS handshake, then nothing inside it.
    let mut quiet_tls = tls_connect(relay.tls_addr(), "localhost").unwrap();
    // An upgrade request without its blank line, over TCP and over TLS.
    let mut slow_ws = relay.dial();
    slow_ws.write_all(&head[..head.len() - 2]).unwrap();
    let mut slow_wss = tls_connect(relay.tls_addr(), "localhost").unwrap();
    slow_wss.write_all(&head[..head.len() - 2]).unwrap();
    slow_wss.flush().unwrap();
    // Meanwhile the pair relays.
    for round in 0..20u8 {
        client.send(&[round]);
        assert_eq!(recv_n(&*server, 1), [round]);
    }
    assert_closed(&mut silent);
    assert_closed(&mut slow_hello);
    assert_closed(&mut slow_ws);
    for tls in [&mut quiet_tls, &mut slow_wss] {
        let mut buf = [0; 16];
        match tls.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            other => panic!("expected the end, got {other:?}"),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    let m = &relay.server.metrics();
    assert_eq!(m.handshakes(Outcome::Timeout), 5);
    assert_eq!(m.tls_handshake_failures.load(Ordering::Relaxed), 0);
    server.send(b"after");
    assert_eq!(recv_n(&*client, 5), b"after");
}

#[test]
fn a_tls_listener_without_a_usable_certificate_refuses_to_start() {
    let folder = std::env::temp_dir().join(format!("jet-relay-certs-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let garbage = folder.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = folder.join("missing.pem");
    let start = |cert: &std::path::Path, key: &std::path::Path| {
        let mut listener = ListenerConfig::new(ListenUrl::parse("tls://127.0.0.1:0").unwrap());
        listener.cert = Some(cert.to_owned());
        listener.key = Some(key.to_owned());
        let config = Config {
            listeners: vec![listener],
            ..Config::default()
        };
        match jet_relay::Server::start(config) {
            Ok(_) => panic!("started with cert {cert:?} and key {key:?}"),
            Err(e) => e.to_string(),
        }
    };
    let cert = data_file("server.pem");
    let key = data_file("server.key");
    let cases = [
        (start(&missing, &key), missing.display().to_string()),
        (start(&cert, &missing), missing.display().to_string()),
        (start(&garbage, &key), garbage.display().to_string()),
        (start(&cert, &garbage), garbage.display().to_string()),
        // The CA's key does not belong to the server certificate.
        (
            start(&cert, &data_file("ca.key")),
            cert.display().to_string(),
        ),
    ];
    std::fs::remove_dir_all(&folder).unwrap();
    for (err, file) in cases {
        assert!(err.contains(&file), "{err:?} should name {file}");
    }
}

#[test]
fn jet_over_tls_rejections_are_answered_inside_tls_then_closed_cleanly() {
    let relay = TestRelay::with_tls(|_| {});
    let mut stream = tls_connect(relay.tls_addr(), "localhost").unwrap();
    let head = v2("connect", Uuid::new_v4(), Uuid::new_v4());
    stream
        .write_all(&packet::encode(head.as_bytes(), 0x73).expect("a test head fits a packet"))
        .unwrap();
    let packet = packet::read_packet(&mut stream).unwrap();
    let resp = jet_relay::wire::message::parse_response(&packet.payload).unwrap();
    assert_eq!(resp.status, 404);
    // The relay ends the TLS session with close_notify: a clean end.
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
    let m = &relay.server.metrics();
    assert_eq!(m.rejected_404.load(Ordering::Relaxed), 1);
}

#[test]
fn shutdown_closes_tls_and_websocket_connections_quickly() {
    let mut relay = TestRelay::with_tls(|_| {});
    let (_, server, client) = relay.pair_over(Transport::Wss, Transport::Tls);
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    let parked = relay
        .open(Transport::Ws, "accept", a, Uuid::new_v4())
        .unwrap();
    // A TLS connection still in its handshake.
    let mut handshaking = TcpStream::connect(relay.tls_addr()).unwrap();
    handshaking.set_read_timeout(Some(WAIT)).unwrap();
    handshaking.write_all(&[0x16, 0x03, 0x01]).unwrap();
    // Wait until the relay accepted it (bounded: the accept loop is not busy).
    let m = &relay.server.metrics();
    let deadline = Instant::now() + WAIT;
    while m.connections_accepted.load(Ordering::Relaxed) < 4 {
        assert!(Instant::now() < deadline, "the relay never accepted it");
        thread::yield_now();
    }
    let started = Instant::now();
    relay.server.shutdown();
    assert!(started.elapsed() < Duration::from_secs(2));
    for peer in [&server, &client, &parked] {
        assert_eq!(recv_to_end(&**peer, 0), b"");
    }
    assert_closed(&mut handshaking);
    assert_eq!(relay.server.open_connections(), 0);
}

/// Reads unmasked binary WebSocket frames from `sock` until `n` payload bytes
/// have arrived; returns the payload.
fn read_ws_payload(sock: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let head = read_n(sock, 2);
        assert_eq!(head[0], 0x82, "a final binary frame");
        let len = match head[1] {
            126 => u16::from_be_bytes(read_n(sock, 2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(read_n(sock, 8).try_into().unwrap()) as usize,
            short => short as usize,
        };
        assert!(out.len() + len <= n, "more than {n} bytes relayed");
        out.extend_from_slice(&read_n(sock, len));
    }
    out
}

#[test]
fn an_upgrade_after_keep_alive_requests_relays_to_a_slow_reader_without_a_write_timeout() {
    // REST answers are written with the handshake timeout. If the upgrade
    // that follows on the same connection kept it, a client that stops
    // reading for longer would have its pair torn down.
    let timeout = Duration::from_millis(300);
    let relay = TestRelay::with(|c| c.handshake_timeout = timeout);
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    assert!(relay.table().create(a));
    let server = relay.open(Transport::Tcp, "accept", a, c).unwrap();
    let mut sock = relay.dial();
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    let head = read_http_head(&mut sock);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    read_n(&mut sock, length);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    sock.write_all(&upgrade_request(&format!("/jet/connect/{a}/{c}"), key, ""))
        .unwrap();
    let head = read_http_head(&mut sock);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // More than the sockets buffer while the client does not read, so the
    // relay's write blocks for the whole pause.
    let data = pattern(11, 16 * 1024 * 1024);
    thread::scope(|s| {
        s.spawn(|| server.send(&data));
        // The slow client: it reads nothing for three handshake timeouts.
        thread::sleep(3 * timeout);
        assert!(
            read_ws_payload(&mut sock, data.len()) == data,
            "relayed bytes differ"
        );
    });
}

/// Encrypts `plaintext` on a fresh TLS connection to the relay (handshake
/// done) and returns the socket with the records, not yet sent.
fn unsent_tls_records(relay: &TestRelay, plaintext: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = tls_connect(relay.tls_addr(), "localhost").expect("TLS handshake");
    stream.conn.writer().write_all(plaintext).unwrap();
    let mut records = Vec::new();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut records).unwrap();
    }
    (stream.sock, records)
}

/// Sends `bytes` one at a time, `gap` apart, until the relay closes.
fn trickle(mut sock: TcpStream, bytes: Vec<u8>, gap: Duration) {
    for byte in bytes {
        if sock.write_all(&[byte]).is_err() {
            return;
        }
        // The slow client is the input under test, not synchronisation.
        thread::sleep(gap);
    }
}

/// Reads (and drops session tickets) until the relay closes; how long that took.
fn time_until_closed(mut sock: TcpStream, started: Instant) -> Duration {
    let mut buf = [0; 1024];
    for _ in 0..100 {
        match sock.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
    panic!("the relay sent more than 100 reads of bytes and did not close");
}

#[test]
fn the_handshake_timeout_holds_against_tls_records_trickled_byte_by_byte() {
    let relay = TestRelay::with_tls(|c| c.handshake_timeout = Duration::from_millis(300));
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    let requests = [
        (
            "JET over TLS",
            packet::encode(v2("accept", a, Uuid::new_v4()).as_bytes(), 0x73).unwrap(),
        ),
        (
            "an HTTPS request",
            b"GET /jet/health HTTP/1.1\r\nHost: relay\r\nAccept: application/json\r\n\r\n".to_vec(),
        ),
        (
            "a wss upgrade",
            upgrade_request(
                &format!("/jet/accept/{a}/{}", Uuid::new_v4()),
                "dGhlIHNhbXBsZSBub25jZQ==",
                "",
            ),
        ),
    ];
    let gap = Duration::from_millis(40);
    let mut watchers = Vec::new();
    for (what, plaintext) in requests {
        let (sock, records) = unsent_tls_records(&relay, &plaintext);
        // Byte by byte the request takes seconds: far past the timeout.
        assert!(
            gap * records.len() as u32 > Duration::from_secs(3),
            "{what}"
        );
        let writer = sock.try_clone().unwrap();
        let started = Instant::now();
        let trickler = thread::spawn(move || trickle(writer, records, gap));
        watchers.push((
            what,
            trickler,
            thread::spawn(move || time_until_closed(sock, started)),
        ));
    }
    for (what, trickler, watcher) in watchers {
        let took = watcher.join().unwrap();
        trickler.join().unwrap();
        assert!(
            took < Duration::from_secs(1),
            "{what} trickled byte by byte held its connection {took:?} against a 0.3 s handshake timeout"
        );
    }
    assert_eq!(relay.server.metrics().handshakes(Outcome::Timeout), 3);
}

#[test]
fn a_tls_request_sent_with_the_handshake_leaves_no_read_timeout_on_the_pair() {
    let relay = TestRelay::with_tls(|c| c.handshake_timeout = Duration::from_millis(300));
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    // The accept goes out in the same flight as the client's Finished, so
    // the relay has the whole request before its TLS reader reads the socket.
    let mut sock = TcpStream::connect(relay.tls_addr()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls_client_config(), name).unwrap();
    conn.writer()
        .write_all(&packet::encode(v2("accept", a, c).as_bytes(), 0x73).unwrap())
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let mut accept = rustls::StreamOwned::new(conn, sock);
    accept.flush().unwrap();
    let reply = packet::read_packet(&mut accept).unwrap();
    assert_eq!(
        jet_relay::wire::message::parse_response(&reply.payload)
            .unwrap()
            .status,
        200
    );
    let (connect, _) = relay.request(&v2("connect", a, c), 0x73, b"");
    let connect = TcpPeer(connect);
    // Idle past the handshake timeout: the input under test, not synchronisation.
    thread::sleep(Duration::from_millis(600));
    accept.write_all(b"still paired").unwrap();
    accept.flush().unwrap();
    assert_eq!(recv_n(&connect, 12), b"still paired");
}
