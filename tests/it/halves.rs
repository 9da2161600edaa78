//! A reader beside a blocked writer: with the relay's writer toward a peer
//! stuck on a full socket, the reader of that peer's stream still relays,
//! answers pings and takes TLS key updates.

use crate::support::*;
use crate::transports::{read_http_head, upgrade_request};
use jet_relay::wire::packet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::Instant;
use uuid::Uuid;

/// Bytes the connect peer sends toward an accept peer that does not read:
/// far more than the path holds once the accept peer's receive buffer is
/// small (the relay's send buffer grows to 4 MiB at most), so the relay's
/// writer toward it blocks for the rest of the test.
const UNREAD_BYTES: usize = 16 << 20;

/// Shrinks a socket's receive buffer (which also stops Linux growing it).
fn small_receive_buffer(sock: &TcpStream) {
    #[cfg(target_os = "linux")]
    rustix::net::sockopt::set_socket_recv_buffer_size(sock, 64 * 1024).unwrap();
    #[cfg(not(target_os = "linux"))]
    let _ = sock;
}

/// Pairs `accept` (already open on association `a`, candidate `c`, and not
/// reading) with a TCP connect that sends [`UNREAD_BYTES`] to it from a
/// thread; returns once the relay has carried 1 MiB of them, the connect
/// peer, and the sending thread.
fn block_the_writer_toward(
    relay: &TestRelay,
    a: Uuid,
    c: Uuid,
) -> (Arc<dyn Peer>, thread::JoinHandle<()>) {
    let connect = relay.open(Transport::Tcp, "connect", a, c).unwrap();
    let sender = {
        let connect = Arc::clone(&connect);
        thread::spawn(move || {
            let chunk = pattern(7, 64 * 1024);
            for _ in 0..UNREAD_BYTES / chunk.len() {
                connect.send(&chunk);
            }
        })
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let carried = relay
            .table()
            .info(a)
            .map_or(0, |i| i.candidates[0].connect_to_accept);
        if carried >= 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay carried {carried} bytes"
        );
        thread::yield_now();
    }
    (connect, sender)
}

/// The relay has not carried all of [`UNREAD_BYTES`] toward the accept
/// peer, which has read nothing: its writer there is still stuck.
#[track_caller]
fn assert_still_owed(relay: &TestRelay, a: Uuid) {
    let carried = relay
        .table()
        .info(a)
        .map_or(0, |i| i.candidates[0].connect_to_accept);
    assert!(
        carried < UNREAD_BYTES as u64,
        "the relay carried all {carried} bytes: its writer was never blocked"
    );
}

#[test]
fn a_websocket_reader_answers_pings_and_relays_while_its_writer_is_blocked() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(relay.table().create(a));
    let mut accept = relay.dial();
    small_receive_buffer(&accept);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    accept
        .write_all(&upgrade_request(&format!("/jet/accept/{a}/{c}"), key, ""))
        .unwrap();
    assert!(read_http_head(&mut accept).starts_with("HTTP/1.1 101"));
    let (connect, sender) = block_the_writer_toward(&relay, a, c);
    // A ping, then a data frame, both masked as a client must.
    let mask = [1, 2, 3, 4];
    let masked = |opcode: u8, payload: &[u8]| {
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    };
    accept.write_all(&masked(0x9, b"still there?")).unwrap();
    accept.write_all(&masked(0x2, b"the other way")).unwrap();
    assert_eq!(recv_n(&*connect, 13), b"the other way");
    assert_still_owed(&relay, a);
    // Drain: every relayed byte arrives, and so does the pong, in between.
    let (mut data, mut pongs) = (0, Vec::new());
    while data < UNREAD_BYTES {
        let head = read_n(&mut accept, 2);
        let len = match head[1] {
            126 => u16::from_be_bytes(read_n(&mut accept, 2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(read_n(&mut accept, 8).try_into().unwrap()) as usize,
            short => short as usize,
        };
        let payload = read_n(&mut accept, len);
        match head[0] {
            0x82 => data += len,
            0x8A => pongs.push(payload),
            other => panic!("unexpected frame {other:#x}"),
        }
    }
    assert_eq!(data, UNREAD_BYTES);
    assert_eq!(pongs, [b"still there?".to_vec()]);
    sender.join().unwrap();
}

#[test]
fn a_tls_reader_takes_key_updates_and_relays_while_its_writer_is_blocked() {
    let relay = TestRelay::with_tls(|_| {});
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(relay.table().create(a));
    let mut accept = tls_connect(relay.tls_addr(), "localhost").unwrap();
    small_receive_buffer(&accept.sock);
    accept
        .write_all(&packet::encode(v2("accept", a, c).as_bytes(), 0x73).unwrap())
        .unwrap();
    accept.flush().unwrap();
    let reply = packet::read_packet(&mut accept).unwrap();
    let reply = jet_relay::wire::message::parse_response(&reply.payload).unwrap();
    assert_eq!(reply.status, 200);
    let (connect, sender) = block_the_writer_toward(&relay, a, c);
    // A key update that asks the relay for one back, then data: the relay's
    // reader must take both while its writer cannot send anything.
    accept.conn.refresh_traffic_keys().unwrap();
    accept.write_all(b"the other way").unwrap();
    accept.flush().unwrap();
    assert_eq!(recv_n(&*connect, 13), b"the other way");
    assert_still_owed(&relay, a);
    // Every relayed byte still decrypts: the relay's key update went out in
    // order with its records.
    let expected = pattern(7, 64 * 1024);
    let mut buf = vec![0; 64 * 1024];
    let mut got = 0;
    while got < UNREAD_BYTES {
        let n = accept.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended after {got} bytes");
        let at = got % expected.len();
        let same = buf[..n]
            .iter()
            .zip(expected.iter().cycle().skip(at))
            .all(|(x, y)| x == y);
        assert!(same, "relayed bytes differ after {got}");
        got += n;
    }
    sender.join().unwrap();
}
