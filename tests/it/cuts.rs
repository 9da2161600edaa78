//! A stream the relay cuts (idle timeout, DELETE, expiry, shutdown) reaches
//! both peers as a reset, never as a clean end of stream: a peer must be able
//! to tell that its stream was truncated.

use crate::support::*;
use jet_relay::relay::config::ApiKey;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use uuid::Uuid;

/// Reads until the relay ends the stream; the end must be a reset.
#[track_caller]
fn assert_cut(sock: &mut TcpStream, what: &str) {
    let mut buf = [0; 64];
    match sock.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(0) => panic!("{what}: a clean end of stream, where the relay cut the pair"),
        Ok(n) => panic!("{what}: {n} more bytes, where the relay cut the pair"),
        Err(e) => panic!("{what}: {e}, where a reset was expected"),
    }
}

/// A pair that has carried bytes both ways, so it is selected and relaying.
fn relaying_pair(relay: &TestRelay) -> (Uuid, TcpStream, TcpStream) {
    let (a, mut server, mut client) = relay.pair();
    client.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut server, 4), b"ping");
    server.write_all(b"pong").unwrap();
    assert_eq!(read_n(&mut client, 4), b"pong");
    (a, server, client)
}

#[test]
fn a_pair_cut_by_the_idle_timeout_sees_a_reset() {
    let relay = TestRelay::with(|c| c.idle_timeout = Duration::from_millis(300));
    let (_, mut server, mut client) = relaying_pair(&relay);
    assert_cut(&mut server, "server peer after the idle timeout");
    assert_cut(&mut client, "client peer after the idle timeout");
}

#[test]
fn a_pair_cut_by_delete_sees_a_reset() {
    const KEY: &str = "0123456789abcdef-cuts";
    let relay = TestRelay::with(|c| {
        c.api_key = Some(ApiKey::new(KEY).expect("a valid key"));
        c.accept_requires_api = Some(false);
    });
    let (a, mut server, mut client) = relaying_pair(&relay);
    let bearer = format!("Bearer {KEY}");
    let reply = relay.http(
        "DELETE",
        &format!("/jet/association/{a}"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(reply.status, 200);
    assert_cut(&mut server, "server peer after DELETE");
    assert_cut(&mut client, "client peer after DELETE");
}

#[test]
fn a_pair_cut_by_expiry_sees_a_reset() {
    // Paired but never selected (no byte relayed): the association expires.
    let relay = TestRelay::with(|c| c.association_ttl = Duration::from_millis(300));
    let (_, mut server, mut client) = relay.pair();
    assert_cut(&mut server, "server peer after expiry");
    assert_cut(&mut client, "client peer after expiry");
}

#[test]
fn a_pair_cut_by_shutdown_sees_a_reset() {
    let mut relay = TestRelay::start();
    let (_, mut server, mut client) = relaying_pair(&relay);
    relay.server.shutdown();
    assert_cut(&mut server, "server peer after shutdown");
    assert_cut(&mut client, "client peer after shutdown");
}
