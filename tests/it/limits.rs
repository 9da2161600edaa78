//! Per-client limits (`[client_limits]`): connections, handshakes and parked
//! accepts of one address are refused past their limit, counted in
//! `/metrics`, recover when released, and spare exempt addresses. The tests
//! run on 127.0.0.1, so their `exempt` leaves loopback out.

use crate::metrics::parse_metrics;
use crate::support::{assert_closed, v2, TestRelay, Transport, WAIT};
use jet_relay::relay::config::{Cidr, CidrSet, Config, LimitsConfig};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use uuid::Uuid;

/// These maxima (0: off), no exempt address and no REST rate.
fn only(connections: u32, handshakes: u32, parked: u32) -> LimitsConfig {
    LimitsConfig {
        max_connections: connections,
        max_handshakes: handshakes,
        max_parked_accepts: parked,
        rest_rate: 0,
        exempt: CidrSet::default(),
        ..LimitsConfig::default()
    }
}

fn relay_with(limits: LimitsConfig) -> TestRelay {
    TestRelay::with(|c| c.client_limits = limits)
}

/// A connection refused by a limit: closed without a byte, soon.
#[track_caller]
fn assert_refused(mut sock: TcpStream) {
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_closed(&mut sock);
}

/// A keep-alive connection that had one REST request answered.
fn keep_alive(relay: &TestRelay) -> TcpStream {
    let mut sock = relay.dial();
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    assert_eq!(crate::support::read_http(&mut sock).status, 200);
    sock
}

fn refusals(relay: &TestRelay, limit: &str) -> f64 {
    let m = parse_metrics(&relay.http("GET", "/metrics", &[], b"").text());
    m.get(&format!(
        "jet_relay_client_limit_refusals_total{{limit=\"{limit}\"}}"
    ))
    .copied()
    .unwrap_or_else(|| panic!("no refusal count for {limit}"))
}

#[test]
fn connections_past_max_connections_are_closed_until_one_ends() {
    let relay = relay_with(only(2, 0, 0));
    // Answered, so the relay has them open (registered) before the third.
    let first = keep_alive(&relay);
    let _second = keep_alive(&relay);
    assert_refused(relay.dial());
    drop(first);
    assert!(relay.server.wait_open_connections_at_most(1, WAIT));
    assert_eq!(relay.http("GET", "/health", &[], b"").status, 200);
    assert!(relay.server.wait_open_connections_at_most(1, WAIT));
    assert_eq!(refusals(&relay, "connections"), 1.0);
}

#[test]
fn handshakes_past_max_handshakes_are_closed_until_one_is_served() {
    let relay = relay_with(only(0, 2, 0));
    let first = relay.dial();
    let _second = relay.dial();
    assert_refused(relay.dial());
    // The first finishes its handshake: its request is served, the
    // connection stays open, and a new client may begin one.
    let mut first = first;
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    assert_eq!(crate::support::read_http(&mut first).status, 200);
    assert_eq!(relay.http("GET", "/health", &[], b"").status, 200);
    assert_eq!(refusals(&relay, "handshakes"), 1.0);
}

#[test]
fn parked_accepts_past_max_parked_accepts_get_503_over_jet_and_429_over_websocket() {
    let relay = relay_with(only(0, 0, 2));
    let ids: Vec<(Uuid, Uuid)> = (0..4).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect();
    let _first = relay.accept(ids[0].0, ids[0].1);
    let _second = relay.accept(ids[1].0, ids[1].1);
    let (_sock, resp) = relay.request(&v2("accept", ids[2].0, ids[2].1), 0x73, b"");
    assert_eq!(resp.status, 503, "a third JET accept: {resp:?}");
    assert!(relay.table().create(ids[3].0));
    let ws = relay.open(Transport::Ws, "accept", ids[3].0, ids[3].1);
    assert_eq!(ws.err(), Some(429), "a third accept over WebSocket");
    assert_eq!(refusals(&relay, "parked_accepts"), 2.0);
    // A pair releases its accept's permit: the refused accept parks now.
    let mut client = relay.connect(ids[0].0, ids[0].1);
    client.write_all(b"x").unwrap();
    let _third = relay.accept(ids[2].0, ids[2].1);
}

#[test]
fn exempt_addresses_pass_every_client_limit() {
    let loopback = CidrSet::new(vec![Cidr::new("127.0.0.0".parse().unwrap(), 8).unwrap()]);
    let relay = relay_with(LimitsConfig {
        exempt: loopback,
        ..only(1, 1, 1)
    });
    let _silent = relay.dial();
    let _parked: Vec<_> = (0..3)
        .map(|_| relay.accept(Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    assert_eq!(relay.http("GET", "/health", &[], b"").status, 200);
}

#[test]
fn a_reload_keeps_the_permits_held_and_applies_the_new_maxima() {
    let relay = relay_with(only(0, 0, 1));
    let _first = relay.accept(Uuid::new_v4(), Uuid::new_v4());
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let (_sock, resp) = relay.request(&v2("accept", a, c), 0x73, b"");
    assert_eq!(resp.status, 503);
    let mut config: Config = (*relay.server.config()).clone();
    config.client_limits = only(0, 0, 2);
    relay.server.reload(config).expect("the reload applies");
    let _second = relay.accept(a, c);
    // The first accept still counts: two held, the new limit.
    let (_sock, resp) = relay.request(&v2("accept", Uuid::new_v4(), Uuid::new_v4()), 0x73, b"");
    assert_eq!(
        resp.status, 503,
        "a third accept after the reload: {resp:?}"
    );
}
