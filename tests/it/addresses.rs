//! Addresses the relay hands out: gathered candidate URLs and `Jet-Instance`
//! name an address peers can reach, never a wildcard bind, and IPv6 in brackets.

use crate::support::*;
use jet_relay::relay::config::{ListenUrl, ListenerConfig, DEFAULT_INSTANCE};
use jet_relay::wire::message::Method;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use uuid::Uuid;

/// Fails (never skips) when the machine has no IPv6 loopback: these tests
/// cover IPv6 and would prove nothing without it.
fn require_ipv6_loopback() {
    if let Err(e) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        panic!("this test needs the IPv6 loopback ::1 (see `ip -6 addr show lo`): {e}");
    }
}

fn listeners(urls: &[&str]) -> Vec<ListenerConfig> {
    urls.iter()
        .map(|u| ListenerConfig::new(ListenUrl::parse(u).unwrap()))
        .collect()
}

/// A relay on `urls`, whose test helpers dial `at` on the first listener's port.
fn relay_on(urls: &[&str], at: std::net::IpAddr) -> TestRelay {
    let mut relay = TestRelay::with(|c| {
        c.instance = DEFAULT_INSTANCE.into();
        c.listeners = listeners(urls);
    });
    relay.addr = SocketAddr::new(at, relay.addr.port());
    relay
}

fn gathered(relay: &TestRelay) -> Vec<String> {
    let reply = relay.http("POST", &format!("/jet/gather/{}", Uuid::new_v4()), &[], b"");
    assert_eq!(reply.status, 200);
    reply.json()["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn assert_no_wildcard(urls: &[String]) {
    for url in urls {
        assert!(
            !url.contains("0.0.0.0") && !url.contains("[::]"),
            "{url} is a wildcard"
        );
    }
}

#[test]
fn an_ipv6_listener_gathers_bracketed_urls_that_pair_as_they_stand() {
    require_ipv6_loopback();
    let relay = relay_on(&["tcp://[::1]:0"], Ipv6Addr::LOCALHOST.into());
    let port = relay.addr.port();
    let a = Uuid::new_v4();
    let body = relay
        .http("POST", &format!("/jet/gather/{a}"), &[], b"")
        .json();
    let urls: Vec<&str> = body["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [format!("tcp://[::1]:{port}"), format!("ws://[::1]:{port}")]
    );
    let c: Uuid = body["candidates"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (mut server, _) = open_tcp_candidate(urls[0], Method::Accept, a, c).unwrap();
    let (mut client, _) = open_tcp_candidate(urls[0], Method::Connect, a, c).unwrap();
    client.write_all(b"over ipv6").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_n(&mut server, 9), b"over ipv6");
}

#[test]
fn gather_through_a_wildcard_listener_names_the_arrival_address() {
    let relay = relay_on(&["tcp://0.0.0.0:0"], Ipv4Addr::LOCALHOST.into());
    let port = relay.addr.port();
    let urls = gathered(&relay);
    assert_eq!(
        urls,
        [
            format!("tcp://127.0.0.1:{port}"),
            format!("ws://127.0.0.1:{port}")
        ]
    );
}

#[test]
fn an_ipv4_wildcard_asked_through_ipv6_loopback_is_named_by_ipv4_loopback() {
    // The case seen on main: --listen tcp://0.0.0.0:P --listen tcp://[::1]:Q,
    // a gather through [::1] handed out tcp://0.0.0.0:P.
    require_ipv6_loopback();
    let mut relay = relay_on(
        &["tcp://0.0.0.0:0", "tcp://[::1]:0"],
        Ipv4Addr::LOCALHOST.into(),
    );
    let [wild, v6] = relay.server.local_addrs()[..] else {
        panic!("two listeners")
    };
    relay.addr = v6;
    let urls = gathered(&relay);
    assert_no_wildcard(&urls);
    assert_eq!(
        urls,
        [
            format!("tcp://127.0.0.1:{}", wild.port()),
            format!("ws://127.0.0.1:{}", wild.port()),
            format!("tcp://[::1]:{}", v6.port()),
            format!("ws://[::1]:{}", v6.port()),
        ]
    );
}

#[test]
fn a_dual_stack_wildcard_names_each_family_by_its_arrival_address() {
    require_ipv6_loopback();
    // The relay leaves IPV6_V6ONLY as the system sets it: on Linux, [::]
    // takes IPv4 too unless net.ipv6.bindv6only is 1.
    let v6_only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    let mut relay = relay_on(&["tcp://[::]:0"], Ipv6Addr::LOCALHOST.into());
    let port = relay.addr.port();
    let urls = gathered(&relay);
    assert_eq!(
        urls,
        [format!("tcp://[::1]:{port}"), format!("ws://[::1]:{port}")]
    );
    let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    if v6_only {
        assert!(std::net::TcpStream::connect(v4).is_err(), "bindv6only=1");
        return;
    }
    // An IPv4 peer arrives as ::ffff:127.0.0.1 and is told 127.0.0.1.
    relay.addr = v4;
    let urls = gathered(&relay);
    assert_eq!(
        urls,
        [
            format!("tcp://127.0.0.1:{port}"),
            format!("ws://127.0.0.1:{port}")
        ]
    );
}

#[test]
fn a_version_1_accept_names_a_reachable_instance_unless_one_is_configured() {
    let accept = "GET / HTTP/1.1\r\nHost: relay\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n";
    let relay = relay_on(&["tcp://0.0.0.0:0"], Ipv4Addr::LOCALHOST.into());
    let (_server, resp) = relay.request(accept, 0x73, b"");
    assert_eq!(resp.status, 200);
    let expected = format!("127.0.0.1:{}", relay.addr.port());
    assert_eq!(resp.header("Jet-Instance"), Some(expected.as_str()));

    let external = TestRelay::with(|c| {
        c.instance = DEFAULT_INSTANCE.into();
        c.listeners[0].external_url = Some("tcp://relay.example.net:443".into());
    });
    let (_server, resp) = external.request(accept, 0x73, b"");
    assert_eq!(resp.header("Jet-Instance"), Some("relay.example.net:443"));

    // An instance set in the configuration (a load balancer's name for this
    // very relay) wins over both.
    let named = TestRelay::start();
    let (_server, resp) = named.request(accept, 0x73, b"");
    assert_eq!(resp.header("Jet-Instance"), Some("test-instance"));
}

#[test]
fn a_version_1_accept_on_ipv6_names_a_bracketed_instance_a_peer_can_dial() {
    require_ipv6_loopback();
    let relay = relay_on(&["tcp://[::]:0"], Ipv6Addr::LOCALHOST.into());
    let accept = "GET / HTTP/1.1\r\nHost: relay\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n";
    let (_server, resp) = relay.request(accept, 0x73, b"");
    let port = relay.addr.port();
    let instance = resp.header("Jet-Instance").expect("Jet-Instance");
    assert_eq!(instance, format!("[::1]:{port}"));
    // What a peer does with it: aim its relay URL at that instance.
    let url = jet_relay::wire::candidate::CandidateUrl::parse("tcp://relay.example.net:8080")
        .unwrap()
        .with_instance(instance)
        .unwrap();
    assert_eq!(url.to_string(), format!("tcp://[::1]:{port}"));
}
