//! Strict WebSocket through the relay (RFC 6455 §5, §7): each violation a
//! peer sends is answered with a close frame carrying its code, counted in
//! `/metrics`, never relayed, and the other peer's stream is cut (a reset).

use crate::support::*;
use crate::transports::{read_http_head, upgrade_request};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use uuid::Uuid;

const MASK: [u8; 4] = [0x0f, 0xa1, 0x5c, 0x33];

/// A masked (client) frame; `first` is the FIN/RSV/opcode byte.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        0..=125 => out.push(0x80 | payload.len() as u8),
        len => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A masked frame header with a 64-bit length and no payload.
fn long_header(len: u64) -> Vec<u8> {
    let mut out = vec![0x82, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MASK);
    out
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(0x88, &payload)
}

/// A WebSocket upgrade of `method` on the association, answered 101.
fn upgrade(relay: &TestRelay, method: &str, a: Uuid, c: Uuid) -> TcpStream {
    let mut sock = relay.dial();
    let path = format!("/jet/{method}/{a}/{c}");
    sock.write_all(&upgrade_request(&path, "dGhlIHNhbXBsZSBub25jZQ==", ""))
        .unwrap();
    let head = read_http_head(&mut sock);
    assert!(head.starts_with("HTTP/1.1 101 "), "{method}: {head}");
    sock
}

/// Reads unmasked frames from the relay until a close frame; returns its code
/// and reason. Data frames before it are returned too.
fn read_until_close(sock: &mut TcpStream) -> (Vec<u8>, Option<(u16, String)>) {
    let mut data = Vec::new();
    // Bounded: each pass reads one frame, and a test sends a few bytes.
    for _ in 0..1000 {
        let mut head = [0u8; 2];
        if let Err(e) = sock.read_exact(&mut head) {
            assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "the relay stalled");
            return (data, None);
        }
        assert_eq!(head[1] & 0x80, 0, "the relay's frames are unmasked");
        let len = match head[1] & 0x7F {
            126 => u16::from_be_bytes(read_n(sock, 2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(read_n(sock, 8).try_into().unwrap()) as usize,
            short => short as usize,
        };
        let payload = read_n(sock, len);
        if head[0] & 0x0F == 0x8 {
            assert!(payload.len() >= 2, "a close frame with a code");
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason = String::from_utf8(payload[2..].to_vec()).expect("a UTF-8 reason");
            return (data, Some((code, reason)));
        }
        data.extend_from_slice(&payload);
    }
    panic!("no close frame within 1000 frames");
}

/// Reads the relay's side until it ends: true for a reset, false for a
/// clean end. Returns the data frames' bytes before that too.
fn read_until_end(sock: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match sock.read(&mut buf) {
            Ok(0) => return (data, false),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (data, true),
            Err(e) => panic!("the other side's stream neither ended nor was reset: {e}"),
        }
    }
    panic!("the other side's stream never ended");
}

/// The counter `jet_relay_websocket_protocol_errors_total{code="<code>"}`.
fn counted(relay: &TestRelay, code: u16) -> u64 {
    let text = relay.http("GET", "/metrics", &[], b"").text();
    let name = format!("jet_relay_websocket_protocol_errors_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&name))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Pairs two WebSocket peers, has `violator` ("accept" or "connect") send
/// `bytes`, and checks the close code it gets, the reset the other peer
/// gets, that nothing of the rejected frame was relayed, and the counter.
#[track_caller]
fn check(relay: &TestRelay, violator: &str, bytes: &[u8], code: u16) {
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    assert!(relay.table().create(a));
    let mut accept = upgrade(relay, "accept", a, c);
    let mut connect = upgrade(relay, "connect", a, c);
    let before = counted(relay, code);
    let (bad, other) = match violator {
        "accept" => (&mut accept, &mut connect),
        _ => (&mut connect, &mut accept),
    };
    bad.write_all(bytes).unwrap();
    let (_, closed) = read_until_close(bad);
    let (got, reason) = closed.unwrap_or_else(|| panic!("{bytes:02x?}: no close frame"));
    assert_eq!(got, code, "{bytes:02x?}: close code ({reason})");
    assert!(!reason.is_empty(), "a close reason says why");
    // Then the relay ends the TCP connection: its FIN follows the close
    // frame, and a client that closes too ends the relay's linger.
    let (after, reset) = read_until_end(bad);
    assert!(
        after.is_empty(),
        "nothing after the close frame: {after:02x?}"
    );
    assert!(
        !reset,
        "{bytes:02x?}: a FIN after the close frame, not a reset"
    );
    bad.shutdown(std::net::Shutdown::Write).unwrap();
    let (relayed, reset) = read_until_end(other);
    assert!(
        reset,
        "{bytes:02x?}: the other peer's stream is cut, not ended"
    );
    assert!(relayed.is_empty(), "{bytes:02x?}: relayed {relayed:02x?}");
    assert_eq!(counted(relay, code), before + 1, "{bytes:02x?}: counted");
}

#[test]
fn each_websocket_violation_closes_with_its_code_and_cuts_the_other_peer() {
    let relay = TestRelay::start();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // A continuation with no message started.
        (frame(0x80, b"x"), 1002),
        // A new data frame while a fragmented message is open.
        ([frame(0x02, b""), frame(0x82, b"cd")].concat(), 1002),
        // Reserved bits without an extension; an unknown opcode.
        (frame(0xC2, b"x"), 1002),
        (frame(0x83, b"x"), 1002),
        (frame(0x8B, b""), 1002),
        // Fragmented and oversized control frames.
        (frame(0x09, b"p"), 1002),
        (frame(0x89, &[0; 126]), 1002),
        // An unmasked frame from a client.
        (vec![0x82, 1, b'x'], 1002),
        // Close payloads: one byte, codes no endpoint may send, bad UTF-8.
        (frame(0x88, &[3]), 1002),
        (close(999, b""), 1002),
        (close(1005, b""), 1002),
        (close(1016, b""), 1002),
        (close(1000, b"\xff"), 1007),
        // Invalid UTF-8 in text, at once or across fragments.
        (frame(0x81, b"\xc0\x80"), 1007),
        (
            [frame(0x01, b""), frame(0x80, b"\xed\xa0\x80")].concat(),
            1007,
        ),
        // Lengths with the top bit set.
        (long_header(1 << 63), 1009),
        (long_header(u64::MAX), 1009),
    ];
    for (bytes, code) in &cases {
        check(&relay, "connect", bytes, *code);
    }
    // Either side: the accepting peer is held to the same rules.
    check(&relay, "accept", &frame(0x80, b"x"), 1002);
    check(&relay, "accept", &frame(0x81, b"\xff"), 1007);
}

#[test]
fn valid_text_and_close_frames_still_pass() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    assert!(relay.table().create(a));
    let mut accept = upgrade(&relay, "accept", a, c);
    let mut connect = upgrade(&relay, "connect", a, c);
    // "é" split across two fragments, then a close with a registered code.
    let bytes = [
        frame(0x01, b"\xc3"),
        frame(0x80, b"\xa9"),
        close(1001, "au revoir".as_bytes()),
    ]
    .concat();
    connect.write_all(&bytes).unwrap();
    // The other peer gets the text as data, then the relay's own close
    // (1000: the stream ended normally), not a cut.
    let (data, closed) = read_until_close(&mut accept);
    assert_eq!(data, "é".as_bytes());
    assert_eq!(closed.map(|(code, _)| code), Some(1000));
}
