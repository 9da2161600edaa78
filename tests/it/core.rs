//! The JET rendezvous over TCP: versions 1 and 2, rejections, relaying,
//! selection, expiry, timeouts and shutdown.

use crate::support::*;
use jet_relay::relay::{AssociationState, CandidateState};
use jet_relay::wire::packet;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[test]
fn version_2_pairs_and_relays_both_ways() {
    let relay = TestRelay::start();
    let (_, mut server, mut client) = relay.pair();
    client.write_all(b"hello server").unwrap();
    assert_eq!(read_n(&mut server, 12), b"hello server");
    server.write_all(b"hello client").unwrap();
    assert_eq!(read_n(&mut client, 12), b"hello client");
}

#[test]
fn responses_echo_the_request_version() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    let head = v2("accept", a, c).replace("Jet-Version: 2", "Jet-Version: 3");
    let (_server, resp) = relay.request(&head, 0x73, b"");
    assert_eq!((resp.status, resp.header("Jet-Version")), (200, Some("3")));
    let (_client, resp) = relay.request(&v2("connect", a, c), 0x73, b"");
    assert_eq!((resp.status, resp.header("Jet-Version")), (200, Some("2")));
}

#[test]
fn version_1_accept_gives_association_instance_and_timeout() {
    let relay = TestRelay::with(|c| c.association_ttl = Duration::from_secs(42));
    let accept = "GET / HTTP/1.1\r\nHost: relay\r\nConnection: Keep-Alive\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n";
    let (mut server, resp) = relay.request(accept, 0x73, b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Jet-Instance"), Some("test-instance"));
    assert_eq!(resp.header("Jet-Timeout"), Some("42"));
    assert_eq!(resp.header("Jet-Version"), Some("1"));
    let association: Uuid = resp.header("Jet-Association").unwrap().parse().unwrap();
    assert_eq!(association.get_version_num(), 4);

    let connect = format!("GET / HTTP/1.1\r\nHost: relay\r\nConnection: Keep-Alive\r\nJet-Method: Connect\r\nJet-Association: {association}\r\nJet-Version: 1\r\n\r\n");
    let (mut client, resp) = relay.request(&connect, 0x73, b"");
    assert_eq!((resp.status, resp.header("Jet-Version")), (200, Some("1")));
    client.write_all(b"v1 data").unwrap();
    assert_eq!(read_n(&mut server, 7), b"v1 data");
    server.write_all(b"v1 back").unwrap();
    assert_eq!(read_n(&mut client, 7), b"v1 back");
}

#[test]
fn any_inbound_mask_and_lf_only_heads_are_accepted() {
    let relay = TestRelay::start();
    for mask in [0x00, 0x73, 0xff] {
        let a = Uuid::new_v4();
        let c = Uuid::new_v4();
        let lf = |m: &str| v2(m, a, c).replace("\r\n", "\n");
        let (mut server, resp) = relay.request(&lf("accept"), mask, b"");
        assert_eq!(resp.status, 200, "accept with mask {mask:#x}");
        let (mut client, resp) = relay.request(&lf("connect"), mask, b"");
        assert_eq!(resp.status, 200, "connect with mask {mask:#x}");
        client.write_all(&[mask]).unwrap();
        assert_eq!(read_n(&mut server, 1), [mask]);
    }
}

#[test]
fn bytes_after_the_packet_in_the_same_write_are_relayed() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    // The accept's early bytes wait in the relay until the connect arrives.
    let (mut server, resp) = relay.request(&v2("accept", a, c), 0x73, b"early from server");
    assert_eq!(resp.status, 200);
    let (mut client, resp) = relay.request(&v2("connect", a, c), 0x73, b"early from client");
    assert_eq!(resp.status, 200);
    assert_eq!(read_n(&mut server, 17), b"early from client");
    assert_eq!(read_n(&mut client, 17), b"early from server");
}

#[test]
fn accept_200_always_precedes_relayed_bytes() {
    // The accept and a connect carrying data in the same write are sent back
    // to back, without waiting for the accept's answer. Whenever the connect
    // pairs, the accept must read its 200 packet before the relayed byte. A
    // connect that arrives before the accept was even read gets 404; that is
    // counted, and the test demands that most rounds did pair.
    let relay = TestRelay::start();
    let rounds = 200;
    let mut paired = 0;
    for _ in 0..rounds {
        let a = Uuid::new_v4();
        let c = Uuid::new_v4();
        let mut server = relay.dial();
        server
            .write_all(
                &packet::encode(v2("accept", a, c).as_bytes(), 0x73)
                    .expect("a test head fits a packet"),
            )
            .unwrap();
        let (_client, resp) = relay.request(&v2("connect", a, c), 0x73, b"X");
        if resp.status == 200 {
            paired += 1;
            let first = read_response(&mut server);
            assert_eq!(first.status, 200, "the accept's first bytes are its 200");
            assert_eq!(read_n(&mut server, 1), b"X");
        } else {
            assert_eq!(resp.status, 404);
        }
    }
    assert!(
        paired >= rounds / 2,
        "only {paired} of {rounds} rounds paired"
    );
}

#[test]
fn rejections_answer_with_a_status_and_close() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    let unknown = Uuid::new_v4();
    let _parked = relay.accept(a, c);

    let cases: Vec<(String, u16)> = vec![
        // Unknown association on connect.
        (v2("connect", unknown, c), 404),
        // Known association, but nothing parked on that candidate.
        (v2("connect", a, unknown), 404),
        // Test on an unknown association.
        (v2("test", unknown, c), 404),
        // A second accept on a parked candidate.
        (v2("accept", a, c), 409),
        // Unsupported versions.
        (
            v2("accept", a, c).replace("Jet-Version: 2", "Jet-Version: 7"),
            400,
        ),
        (
            "GET / HTTP/1.1\r\nJet-Method: Accept\r\nJet-Version: 5\r\n\r\n".into(),
            400,
        ),
        // Bad ids and unknown paths.
        (format!("GET /jet/accept/nope/{c} HTTP/1.1\r\n\r\n"), 400),
        (format!("GET /jet/connect/{a}/nope HTTP/1.1\r\n\r\n"), 400),
        (
            "GET / HTTP/1.1\r\nJet-Method: Connect\r\nJet-Association: 123\r\n\r\n".into(),
            400,
        ),
        (format!("GET /jet/jump/{a}/{c} HTTP/1.1\r\n\r\n"), 400),
        ("GET /favicon.ico HTTP/1.1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nJet-Method: Dance\r\n\r\n".into(), 400),
    ];
    for (head, status) in cases {
        let (mut sock, resp) = relay.request(&head, 0x73, b"");
        assert_eq!(resp.status, status, "for {head:?}");
        assert_closed(&mut sock);
    }

    // A connect to a candidate already paired.
    let _client = relay.connect(a, c);
    let (mut sock, resp) = relay.request(&v2("connect", a, c), 0x73, b"");
    assert_eq!(resp.status, 409);
    assert_closed(&mut sock);
    // Nothing above disturbed the parked-then-paired candidate.
    let m = &relay.server.metrics();
    assert_eq!(m.rejected_404.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(m.rejected_409.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(m.rejected_400.load(std::sync::atomic::Ordering::Relaxed), 8);
}

#[test]
fn rejections_leave_other_pairs_relaying() {
    let relay = TestRelay::start();
    let (a, mut server, mut client) = relay.pair();
    let (mut bad, resp) = relay.request(&v2("connect", a, Uuid::new_v4()), 0x73, b"");
    assert_eq!(resp.status, 404);
    assert_closed(&mut bad);
    client.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut server, 10), b"still here");
}

#[test]
fn malformed_packets_are_closed_without_an_answer() {
    let relay = TestRelay::start();
    let not_http = packet::encode(b"\x01\x02\x03 binary junk\r\n\r\n", 0x73)
        .expect("a test head fits a packet");
    let incomplete =
        packet::encode(b"GET / HTTP/1.1\r\nHost: x\r\n", 0x73).expect("a test head fits a packet");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad signature", b"JEX\0\x00\x10\x00\x00GET / HT".to_vec()),
        ("plain text", b"hello relay, how are you?\r\n\r\n".to_vec()),
        ("size below 8", vec![b'J', b'E', b'T', 0, 0, 7, 0, 0]),
        ("size zero", vec![b'J', b'E', b'T', 0, 0, 0, 0, 0]),
        ("not an HTTP head", not_http),
        ("head without its blank line", incomplete),
    ];
    for (what, bytes) in cases {
        let mut sock = relay.dial();
        sock.write_all(&bytes).unwrap();
        let mut buf = Vec::new();
        match sock.read_to_end(&mut buf) {
            Ok(_) => assert!(buf.is_empty(), "{what}: got an answer {buf:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{what}"),
        }
    }
}

#[test]
fn test_request_answers_200_then_closes() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    let _parked = relay.accept(a, c);
    let (mut sock, resp) = relay.request(&v2("test", a, c), 0x73, b"");
    assert_eq!((resp.status, resp.header("Jet-Version")), (200, Some("2")));
    assert_closed(&mut sock);
}

#[test]
fn half_close_delivers_the_whole_reply() {
    let relay = TestRelay::start();
    let (_, mut server, mut client) = relay.pair();
    let request = pattern(1, 300_000);
    let reply = pattern(2, 500_000);
    // The client sends everything, then shuts its write side.
    let sender = {
        let mut client = client.try_clone().unwrap();
        let request = request.clone();
        thread::spawn(move || {
            client.write_all(&request).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    // The server reads to EOF (the relay propagated the half-close), then replies.
    assert_eq!(read_to_end(&mut server), request);
    server.write_all(&reply).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), reply);
    sender.join().unwrap();
}

#[test]
fn a_reset_tears_down_both_sides() {
    let relay = TestRelay::start();
    let (a, server, mut client) = relay.pair();
    client.write_all(b"unread").unwrap();
    // Wait until the bytes sit unread in the server's socket, then close it:
    // closing with unread input makes the kernel send a reset, not a FIN.
    let mut peeked = [0; 6];
    let deadline = Instant::now() + WAIT;
    while server.peek(&mut peeked).unwrap() < peeked.len() {
        assert!(Instant::now() < deadline, "the bytes never arrived");
    }
    drop(server);
    // The relay tears down the client side too (no half-close on a reset),
    // even though the client never closes its own side.
    let mut buf = [0; 64];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("unexpected {n} bytes"),
    }
    let info = relay.wait_ended(a);
    assert_eq!(info.state, AssociationState::Ended);
    assert_eq!(info.candidates[0].state, CandidateState::Closed);
}

#[test]
fn byte_counts_stay_on_the_association_after_the_relay_ends() {
    let relay = TestRelay::start();
    let (a, mut server, mut client) = relay.pair();
    client.write_all(&pattern(4, 1234)).unwrap();
    assert_eq!(read_n(&mut server, 1234), pattern(4, 1234));
    server.write_all(&pattern(5, 99)).unwrap();
    assert_eq!(read_n(&mut client, 99), pattern(5, 99));
    client.shutdown(Shutdown::Write).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut client);
    assert_closed(&mut server);
    // The pump releases right after both directions end; wait for that event.
    let info = relay
        .table()
        .wait_for(a, WAIT, |i| {
            i.is_some_and(|i| i.state == AssociationState::Ended)
        })
        .unwrap();
    assert_eq!(info.state, AssociationState::Ended);
    let cand = &info.candidates[0];
    assert_eq!((cand.connect_to_accept, cand.accept_to_connect), (1234, 99));
}

#[test]
fn first_candidate_with_data_is_selected_and_the_others_closed() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let [c1, c2, c3] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let mut s1 = relay.accept(a, c1);
    let mut s2 = relay.accept(a, c2);
    let mut s3 = relay.accept(a, c3); // stays parked
    let mut k1 = relay.connect(a, c1);
    let mut k2 = relay.connect(a, c2);

    k2.write_all(b"selected").unwrap();
    assert_eq!(read_n(&mut s2, 8), b"selected");

    // Candidate 1 (paired, silent) and 3 (parked) are closed by the relay.
    assert_closed(&mut s1);
    assert_closed(&mut k1);
    assert_closed(&mut s3);
    // The selected one relays on.
    s2.write_all(b"reply").unwrap();
    assert_eq!(read_n(&mut k2, 5), b"reply");
    let info = relay.table().info(a).unwrap();
    assert_eq!(info.state, AssociationState::Active);
    assert_eq!(info.selected, Some(c2));
    // Other candidates cannot be used any more.
    let (mut late, resp) = relay.request(&v2("accept", a, Uuid::new_v4()), 0x73, b"");
    assert_eq!(resp.status, 409);
    assert_closed(&mut late);
}

#[test]
fn unselected_associations_expire_and_close_their_sockets() {
    let relay = TestRelay::with(|c| c.association_ttl = Duration::from_millis(200));
    let a = Uuid::new_v4();
    let mut parked = relay.accept(a, Uuid::new_v4());
    let c = Uuid::new_v4();
    let mut server = relay.accept(a, c);
    let mut client = relay.connect(a, c); // paired, never carries data
    let started = Instant::now();
    assert_closed(&mut parked);
    assert_closed(&mut server);
    assert_closed(&mut client);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "expired too early"
    );
    assert!(relay.table().info(a).is_none());
    let m = &relay.server.metrics();
    assert_eq!(
        m.associations_expired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The relay holds no socket for it any more.
    assert!(relay.server.wait_open_connections_at_most(0, WAIT));
}

#[test]
fn an_active_association_is_not_expired_while_it_relays() {
    let relay = TestRelay::with(|c| {
        c.association_ttl = Duration::from_millis(100);
        c.ended_retention = Duration::from_millis(50);
    });
    let (a, mut server, mut client) = relay.pair();
    client.write_all(b"go").unwrap();
    assert_eq!(read_n(&mut server, 2), b"go");
    // Wait for an expiry of another, unselected association created later:
    // once it is gone the reaper has passed the TTL of ours as well.
    let other = Uuid::new_v4();
    let mut parked = relay.accept(other, Uuid::new_v4());
    assert_closed(&mut parked);
    assert!(relay.table().wait_removed(other, WAIT));
    server.write_all(b"still relaying").unwrap();
    assert_eq!(read_n(&mut client, 14), b"still relaying");
    assert!(relay.table().info(a).is_some());
    // Once its relay ends, it is removed after the retention time.
    drop(server);
    drop(client);
    assert!(relay.table().wait_removed(a, WAIT));
}

#[test]
fn idle_pairs_are_closed_after_the_idle_timeout() {
    let relay = TestRelay::with(|c| c.idle_timeout = Duration::from_millis(300));
    let (_, mut server, mut client) = relay.pair();
    // The relay's idle clock starts when it reads these bytes, which is after
    // this instant: the close cannot come earlier than 300 ms from here.
    let quiet_since = Instant::now();
    client.write_all(b"once").unwrap();
    assert_eq!(read_n(&mut server, 4), b"once");
    assert_closed(&mut server);
    assert_closed(&mut client);
    assert!(quiet_since.elapsed() >= Duration::from_millis(300));
    let m = &relay.server.metrics();
    assert_eq!(m.idle_closed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn idle_timeout_is_off_by_default() {
    let relay = TestRelay::start();
    assert!(relay.server.config().idle_timeout.is_zero());
    let (_, mut server, mut client) = relay.pair();
    // A full association TTL is 300 s: nothing closes this pair during the test.
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0; 1];
    let err = server.read(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    client.write_all(b"k").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_n(&mut server, 1), b"k");
}

#[test]
fn silent_and_slow_clients_hit_the_handshake_timeout_while_others_relay() {
    let timeout = Duration::from_millis(400);
    let relay = TestRelay::with(|c| c.handshake_timeout = timeout);
    let (_, mut server, mut client) = relay.pair();
    let mut silent = relay.dial();
    // A slow client trickles its request a byte every 50 ms: each read
    // succeeds, but the whole request cannot arrive within the timeout.
    let mut slow = relay.dial();
    let bytes = packet::encode(
        v2("accept", Uuid::new_v4(), Uuid::new_v4()).as_bytes(),
        0x73,
    )
    .expect("a test head fits a packet");
    let started = Instant::now();
    let trickle = {
        let mut slow = slow.try_clone().unwrap();
        thread::spawn(move || {
            for byte in bytes {
                if slow.write_all(&[byte]).is_err() {
                    return;
                }
                // The client's pace, which is what is under test.
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Meanwhile the pair keeps relaying, and new handshakes are served.
    for round in 0..20u8 {
        client.write_all(&[round]).unwrap();
        assert_eq!(read_n(&mut server, 1), [round]);
    }
    let (_a, _s2, _c2) = relay.pair();
    assert_closed(&mut slow);
    let slow_closed = started.elapsed();
    assert_closed(&mut silent);
    assert!(
        slow_closed >= timeout - Duration::from_millis(50),
        "closed after {slow_closed:?}"
    );
    assert!(
        slow_closed < timeout * 2,
        "a per-read timeout would never close it: {slow_closed:?}"
    );
    trickle.join().unwrap();
    client.write_all(b"after").unwrap();
    assert_eq!(read_n(&mut server, 5), b"after");
    let m = &relay.server.metrics();
    assert_eq!(m.handshakes(jet_relay::relay::Outcome::Timeout), 2);
}

#[test]
fn shutdown_closes_every_connection_quickly() {
    let mut relay = TestRelay::start();
    let (_, mut server, mut client) = relay.pair();
    let mut parked = relay.accept(Uuid::new_v4(), Uuid::new_v4());
    let mut idle = relay.dial();
    let started = Instant::now();
    relay.server.shutdown();
    assert!(started.elapsed() < Duration::from_secs(2));
    for sock in [&mut server, &mut client, &mut parked, &mut idle] {
        assert_closed(sock);
    }
    assert_eq!(relay.server.open_connections(), 0);
    assert!(
        std::net::TcpStream::connect(relay.addr).is_err(),
        "the listener is closed"
    );
}

#[test]
fn many_pairs_relay_concurrently_without_mixing_streams() {
    let relay = TestRelay::start();
    let handles: Vec<_> = (0..16u64)
        .map(|i| {
            let (_, mut server, mut client) = relay.pair();
            thread::spawn(move || {
                let data = pattern(100 + i, 200_000);
                let writer = {
                    let mut client = client.try_clone().unwrap();
                    let data = data.clone();
                    thread::spawn(move || client.write_all(&data).unwrap())
                };
                assert_eq!(read_n(&mut server, data.len()), data);
                server.write_all(&data[..1000]).unwrap();
                assert_eq!(read_n(&mut client, 1000), data[..1000]);
                writer.join().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn at_the_thread_limit_new_connections_are_closed_and_the_relay_recovers() {
    let relay = TestRelay::with(|c| c.max_threads = 16);
    // Each silent connection holds a thread in its handshake.
    let mut silent: Vec<_> = (0..16).map(|_| relay.dial()).collect();
    let pool = &relay.server;
    assert!(
        pool.wait_busy_threads(16, WAIT),
        "16 handshake threads are running"
    );
    // One more is refused at once: closed without an answer.
    let mut refused = relay.dial();
    assert_closed(&mut refused);
    // Release the threads: the relay serves pairs again.
    silent.clear();
    assert!(pool.wait_idle_threads(1, WAIT));
    let (_, mut server, mut client) = relay.pair();
    client.write_all(b"back").unwrap();
    assert_eq!(read_n(&mut server, 4), b"back");
    // Counted by the accept loop before it took the pair's connections.
    let m = &relay.server.metrics();
    assert_eq!(
        m.spawn_failures.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
