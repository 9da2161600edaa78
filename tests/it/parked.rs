//! Parked accepts: one whose peer left is noticed and removed within about a
//! second, early bytes of a live one are kept for its connect, and the relay
//! caps how many it holds so descriptors stay for `/health` and pairing.

use crate::process::RelayProcess;
use crate::support::{read_n, read_response, v2, TestRelay, WAIT};
use jet_relay::relay::CandidateState;
use jet_relay::wire::packet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How soon a parked accept whose peer left must be gone ("about a second").
const NOTICED_WITHIN: Duration = Duration::from_millis(1500);

/// The state of the association's one candidate (`None`: no association).
fn candidate_state(relay: &TestRelay, a: Uuid) -> Option<CandidateState> {
    relay.table().info(a).map(|i| i.candidates[0].state)
}

/// Waits (bounded) until candidate `a` is no longer parked; how long it took.
fn wait_unparked(relay: &TestRelay, a: Uuid, limit: Duration) -> Duration {
    let started = Instant::now();
    relay.table().wait_for(a, limit, |i| {
        i.is_none_or(|i| i.candidates[0].state != CandidateState::Parked)
    });
    started.elapsed()
}

#[track_caller]
fn assert_removed_quickly_and_connect_gets_404(relay: &TestRelay, a: Uuid, c: Uuid) {
    let took = wait_unparked(relay, a, WAIT);
    assert_ne!(
        candidate_state(relay, a),
        Some(CandidateState::Parked),
        "the dead accept is still parked after {WAIT:?}"
    );
    assert!(took < NOTICED_WITHIN, "noticed after {took:?}");
    let (_sock, resp) = relay.request(&v2("connect", a, c), 0x73, b"");
    assert_eq!(resp.status, 404, "a connect to a dead accept: {resp:?}");
}

#[test]
fn a_parked_accept_whose_peer_closed_is_removed_within_a_second() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let server = relay.accept(a, c);
    assert_eq!(candidate_state(&relay, a), Some(CandidateState::Parked));
    // A FIN: the server peer can no longer send anything, so its accept is
    // dead even though it might still read (a half-close is taken as leaving).
    drop(server);
    assert_removed_quickly_and_connect_gets_404(&relay, a, c);
}

#[test]
fn a_parked_accept_whose_peer_reset_is_removed_within_a_second() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let server = relay.accept(a, c);
    // SO_LINGER 0: closing sends a reset instead of a FIN.
    rustix::net::sockopt::set_socket_linger(&server, Some(Duration::ZERO)).unwrap();
    drop(server);
    assert_removed_quickly_and_connect_gets_404(&relay, a, c);
}

#[test]
fn early_bytes_of_a_parked_accept_keep_it_parked_and_reach_its_connect() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut server = relay.accept(a, c);
    // A server peer that speaks first (an SSH banner) before its client came.
    server.write_all(b"SSH-2.0-early\r\n").unwrap();
    // The watch looks several times within this wait: readable is not dead.
    let waited = wait_unparked(&relay, a, NOTICED_WITHIN);
    assert!(waited >= NOTICED_WITHIN, "unparked after {waited:?}");
    assert_eq!(candidate_state(&relay, a), Some(CandidateState::Parked));
    let mut client = relay.connect(a, c);
    assert_eq!(read_n(&mut client, 15), b"SSH-2.0-early\r\n");
    client.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut server, 5), b"hello");
}

#[test]
fn accepts_beyond_max_parked_accepts_are_refused_503_and_health_still_answers() {
    let relay = TestRelay::with(|c| c.max_parked_accepts = 2);
    let ids: Vec<(Uuid, Uuid)> = (0..3).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect();
    let _first = relay.accept(ids[0].0, ids[0].1);
    let _second = relay.accept(ids[1].0, ids[1].1);
    let (_refused, resp) = relay.request(&v2("accept", ids[2].0, ids[2].1), 0x73, b"");
    assert_eq!(resp.status, 503, "a third accept: {resp:?}");
    assert_eq!(relay.http("GET", "/health", &[], b"").status, 200);
    // Pairing frees a parked slot: the refused accept now parks.
    let mut client = relay.connect(ids[0].0, ids[0].1);
    client.write_all(b"x").unwrap();
    let _third = relay.accept(ids[2].0, ids[2].1);
}

/// One accept on a fresh association over a new connection; its status.
fn accept_status(addr: &str) -> u16 {
    let mut sock = TcpStream::connect(addr).expect("the relay accepts connections");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let head = v2("accept", Uuid::new_v4(), Uuid::new_v4());
    sock.write_all(&packet::encode(head.as_bytes(), 0x73).unwrap())
        .unwrap();
    read_response(&mut sock).status
}

#[test]
fn three_hundred_dead_accepts_from_one_address_do_not_stop_health_or_a_fresh_pair() {
    let (mut relay, _file) =
        RelayProcess::start_with_fd_limit("[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\n", 256);
    let addr = relay.addr(0);
    // Each accept parks and its peer leaves at once: more than the relay has
    // descriptors. Every one still gets an answer (200, or 503 at the cap).
    let mut parked = 0;
    for _ in 0..300 {
        match accept_status(&addr) {
            200 => parked += 1,
            503 => {}
            other => panic!("an accept answered {other}"),
        }
    }
    assert!(parked > 0, "no accept parked at all");
    let mut health = TcpStream::connect(&addr).unwrap();
    health.set_read_timeout(Some(WAIT)).unwrap();
    health
        .write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    health.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let open = |method| crate::support::open_tcp_candidate(&relay.url, method, a, c);
    let (mut server, _) = open(jet_relay::wire::message::Method::Accept).expect("a fresh accept");
    let (mut client, _) = open(jet_relay::wire::message::Method::Connect).expect("its connect");
    client.write_all(b"fresh").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_n(&mut server, 5), b"fresh");
    assert!(relay.child.try_wait().unwrap().is_none(), "still running");
}
