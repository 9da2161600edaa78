//! A relay behind a load balancer: PROXY headers on `proxy_protocol`
//! listeners, the balancer's own checks, affinity paths and per-instance
//! candidates. (scripts/fleet.sh runs the same through a real HAProxy.)

use crate::support::{
    assert_closed, read_http, read_n, read_response, tls_client_config, v2, TestRelay, WAIT,
};
use jet_relay::relay::cidr::CidrSet;
use jet_relay::relay::ProxyFailure;
use jet_relay::wire::packet;
use jet_relay::wire::proxy_header::{encode_v1, encode_v2, Command};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn trusting(cidrs: &str) -> CidrSet {
    CidrSet::new(vec![cidrs.parse().expect("test CIDR")])
}

/// A relay whose listeners all read a PROXY header, trusting `trusted`.
fn proxied_relay(trusted: &str) -> TestRelay {
    TestRelay::with(|c| {
        c.trusted_proxies = trusting(trusted);
        for listener in &mut c.listeners {
            listener.proxy_protocol = true;
        }
        c.handshake_timeout = Duration::from_millis(500);
    })
}

/// A connection that opens with `header` then `rest`, in one write.
fn dial_with(relay: &TestRelay, header: &[u8], rest: &[u8]) -> TcpStream {
    let mut sock = relay.dial();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(rest);
    sock.write_all(&bytes).expect("write");
    sock
}

fn jet(head: &str) -> Vec<u8> {
    packet::encode(head.as_bytes(), 0x73).expect("a test head fits a packet")
}

fn client_header(client: &str, relay: &TestRelay) -> Vec<u8> {
    encode_v2(Command::Proxy, Some((sa(client), relay.addr)))
}

#[test]
fn peers_behind_v1_and_v2_headers_pair_and_relay_both_ways() {
    let relay = proxied_relay("127.0.0.1/32");
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let v2_header = client_header("203.0.113.7:40001", &relay);
    let mut accept = dial_with(&relay, &v2_header, &jet(&v2("accept", a, c)));
    assert_eq!(read_response(&mut accept).status, 200);
    let v1_header = encode_v1(Some((sa("[2001:db8::9]:40002"), sa("[2001:db8::1]:8080"))));
    // The first relayed bytes come in the connect's very write.
    let mut request = jet(&v2("connect", a, c));
    request.extend_from_slice(b"hello");
    let mut connect = dial_with(&relay, &v1_header, &request);
    assert_eq!(read_response(&mut connect).status, 200);
    assert_eq!(read_n(&mut accept, 5), b"hello");
    accept.write_all(b"world").unwrap();
    assert_eq!(read_n(&mut connect, 5), b"world");
    for reason in ProxyFailure::ALL {
        assert_eq!(
            relay.server.metrics().proxy_failures(reason),
            0,
            "{reason:?}"
        );
    }
}

#[test]
fn the_rest_api_answers_behind_a_header() {
    let relay = proxied_relay("127.0.0.1/32");
    let a = Uuid::new_v4();
    let header = client_header("198.51.100.3:5555", &relay);
    let mut sock = dial_with(
        &relay,
        &header,
        format!("POST /jet/gather/{a} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let reply = read_http(&mut sock);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["candidates"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_connection_from_an_untrusted_source_is_closed_unread() {
    let relay = proxied_relay("10.9.9.9/32");
    let header = client_header("203.0.113.7:40001", &relay);
    let mut sock = dial_with(
        &relay,
        &header,
        &jet(&v2("accept", Uuid::new_v4(), Uuid::new_v4())),
    );
    assert_closed(&mut sock);
    let metrics = relay.server.metrics();
    assert_eq!(metrics.proxy_failures(ProxyFailure::Untrusted), 1);
    assert_eq!(relay.table().len(), 0, "nothing of the request was served");
}

/// Sends `bytes` (then, with `end`, a FIN) and checks that the relay closes
/// the connection and counts it under `reason`.
#[track_caller]
fn check_refused(relay: &TestRelay, bytes: &[u8], end: bool, reason: ProxyFailure) {
    let before = relay.server.metrics().proxy_failures(reason);
    let mut sock = dial_with(relay, bytes, b"");
    if end {
        sock.shutdown(Shutdown::Write).unwrap();
    }
    assert_closed(&mut sock);
    assert_eq!(
        relay.server.metrics().proxy_failures(reason),
        before + 1,
        "{reason:?} for {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn every_bad_header_is_closed_and_counted_by_reason() {
    let relay = proxied_relay("127.0.0.1/32");
    let good = client_header("203.0.113.7:40001", &relay);
    let head = v2("accept", Uuid::new_v4(), Uuid::new_v4());
    check_refused(&relay, &jet(&head), false, ProxyFailure::Missing);
    check_refused(
        &relay,
        b"GET /health HTTP/1.1\r\n\r\n",
        false,
        ProxyFailure::Missing,
    );
    check_refused(
        &relay,
        b"\x16\x03\x01\x02\x00\x01\x00",
        false,
        ProxyFailure::WrongSignature,
    );
    check_refused(&relay, &good[..20], true, ProxyFailure::Truncated);
    check_refused(&relay, b"PROXY TCP4 1.2.3.4", true, ProxyFailure::Truncated);
    let mut long_line = b"PROXY UNKNOWN ".to_vec();
    long_line.resize(150, b'x');
    check_refused(&relay, &long_line, false, ProxyFailure::Oversize);
    let mut huge = good[..14].to_vec();
    huge.extend_from_slice(&u16::MAX.to_be_bytes());
    check_refused(&relay, &huge, false, ProxyFailure::Oversize);
    let mut v3 = good.clone();
    v3[12] = 0x31;
    check_refused(&relay, &v3, false, ProxyFailure::UnknownVersion);
    let mut bad_command = good.clone();
    bad_command[12] = 0x2e;
    check_refused(&relay, &bad_command, false, ProxyFailure::Malformed);
    check_refused(
        &relay,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        false,
        ProxyFailure::Malformed,
    );
    // Half a header, then nothing: the handshake timeout (500 ms here) ends it.
    check_refused(&relay, &good[..10], false, ProxyFailure::Timeout);
    assert_eq!(relay.table().len(), 0);
    // The counters as Prometheus reads them (asked through a header of our own).
    let mut sock = dial_with(
        &relay,
        &good,
        b"GET /metrics HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
    );
    let text = read_http(&mut sock).text();
    for (reason, count) in [
        ("missing", 2),
        ("truncated", 2),
        ("oversize", 2),
        ("timeout", 1),
    ] {
        let line = format!("jet_relay_proxy_header_failures_total{{reason=\"{reason}\"}} {count}");
        assert!(text.contains(&line), "{line} not in:\n{text}");
    }
}

#[test]
fn the_balancers_own_connections_get_health_and_nothing_else() {
    let relay = proxied_relay("127.0.0.1/32");
    let local = encode_v2(Command::Local, None);
    let metrics = relay.server.metrics();
    // HAProxy's `option httpchk`: LOCAL, then an HTTP/1.0 GET /health.
    let mut check = dial_with(&relay, &local, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(read_http(&mut check).status, 200);
    assert_closed(&mut check);
    assert_eq!(
        metrics
            .proxy_local_health
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Anything else on a LOCAL connection: closed without an answer.
    let a = Uuid::new_v4();
    for rest in [
        format!("POST /jet/association/{a} HTTP/1.1\r\nHost: r\r\n\r\n").into_bytes(),
        b"GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n".to_vec(),
        jet(&v2("accept", a, Uuid::new_v4())),
        Vec::new(),
    ] {
        let mut sock = dial_with(&relay, &local, &rest);
        if rest.is_empty() {
            // A layer 4 check: the header alone, then a close.
            sock.shutdown(Shutdown::Write).unwrap();
        }
        let mut byte = [0u8; 1];
        assert_eq!(sock.read(&mut byte).unwrap_or(0), 0, "no answer");
    }
    let closed = &relay.server.metrics().proxy_local_closed;
    assert_eq!(closed.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(relay.table().len(), 0, "the LOCAL requests changed nothing");
}

#[test]
fn on_a_tls_listener_the_header_comes_before_the_handshake() {
    let relay = TestRelay::with_tls(|c| {
        c.trusted_proxies = trusting("127.0.0.1/32");
        c.listeners[1].proxy_protocol = true;
    });
    let mut sock = TcpStream::connect(relay.tls_addr()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(&encode_v2(
        Command::Proxy,
        Some((sa("203.0.113.9:1000"), relay.tls_addr())),
    ))
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls_client_config(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .expect("TLS after the PROXY header");
    }
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // Without the header, the same listener refuses a bare TLS hello.
    let before = relay
        .server
        .metrics()
        .proxy_failures(ProxyFailure::WrongSignature);
    assert!(crate::support::tls_connect(relay.tls_addr(), "localhost").is_err());
    assert_eq!(
        relay
            .server
            .metrics()
            .proxy_failures(ProxyFailure::WrongSignature),
        before + 1
    );
}

#[test]
fn every_association_path_carries_the_id_as_its_fourth_segment() {
    // HAProxy routes on `path,field(4,/)`: the id must be there on every path
    // about one association, and each of those paths must be served.
    // With a key: GET and DELETE of one association need credentials.
    let key = "fleet-test-key-0123456789";
    let key_config = jet_relay::wire::secret::ApiKey::new(key).expect("a valid test key");
    let relay = TestRelay::with(|c| c.api_key = Some(key_config));
    let bearer = format!("Bearer {key}");
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let rest = [
        ("POST", format!("/jet/association/{a}")),
        ("GET", format!("/jet/association/{a}")),
        ("POST", format!("/jet/gather/{a}")),
        ("POST", format!("/jet/association/{a}/candidates")),
        ("DELETE", format!("/jet/association/{a}")),
    ];
    for (method, path) in &rest {
        assert_eq!(
            path.split('/').nth(3),
            Some(a.to_string().as_str()),
            "{path}"
        );
        let reply = relay.http(method, path, &[("Authorization", &bearer)], b"");
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    }
    assert!(relay.table().create(a));
    for verb in ["accept", "connect", "test"] {
        let path = format!("/jet/{verb}/{a}/{c}");
        assert_eq!(
            path.split('/').nth(3),
            Some(a.to_string().as_str()),
            "{path}"
        );
    }
    // The WebSocket upgrade and the JET request take exactly those paths.
    let accept = relay.open(jet_relay::wire::Transport::Ws, "accept", a, c);
    assert!(accept.is_ok(), "ws accept on /jet/accept/{a}/{c}");
    let test = relay.open(jet_relay::wire::Transport::Tcp, "test", a, c);
    assert!(test.is_ok(), "tcp test on /jet/test/{a}/{c}");
}

#[test]
fn an_instance_behind_a_balancer_gathers_its_own_urls_and_names_itself() {
    // One balancer port shared for HTTP (ws:// only: it cannot route raw JET)
    // and one port of this instance's own for tcp://.
    let relay = TestRelay::with(|c| {
        c.instance = "lb.example.net:7002".into();
        c.listeners[0].external_url = Some("ws://lb.example.net:80".into());
        let mut tcp = c.listeners[0].clone();
        tcp.external_url = Some("tcp://lb.example.net:7002".into());
        c.listeners.push(tcp);
    });
    let reply = relay.http("POST", &format!("/jet/gather/{}", Uuid::new_v4()), &[], b"");
    let urls: Vec<String> = reply.json()["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["url"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "ws://lb.example.net:80",
            "tcp://lb.example.net:7002",
            "ws://lb.example.net:7002"
        ]
    );
    let accept = "GET / HTTP/1.1\r\nHost: relay\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n";
    let (_sock, resp) = relay.request(accept, 0x73, b"");
    assert_eq!(resp.header("Jet-Instance"), Some("lb.example.net:7002"));
}

#[test]
fn the_relay_logs_the_client_a_header_names() {
    let config = "log_level = \"info\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\nproxy_protocol = true\n";
    let file = std::env::temp_dir().join(format!("jet-relay-fleet-{}.toml", Uuid::new_v4()));
    std::fs::write(&file, config).unwrap();
    let mut child = Process::new(env!("CARGO_BIN_EXE_jet-relay"))
        .arg("--config")
        .arg(&file)
        .env_remove("JET_RELAY_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("a listening line");
    // Only now: the relay has read its configuration.
    let _ = std::fs::remove_file(&file);
    let addr: SocketAddr = line
        .trim()
        .trim_start_matches("listening tcp://")
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line:?} is not a listening line"));
    let (lines, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut accept = TcpStream::connect(addr).unwrap();
    accept.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = encode_v2(Command::Proxy, Some((sa("203.0.113.7:40001"), addr)));
    bytes.extend_from_slice(&jet(&v2("accept", a, c)));
    accept.write_all(&bytes).unwrap();
    let mut connect = TcpStream::connect(addr).unwrap();
    let mut bytes = encode_v1(Some((sa("[2001:db8::9]:40002"), sa("[2001:db8::1]:8080"))));
    bytes.extend_from_slice(&jet(&v2("connect", a, c)));
    connect.write_all(&bytes).unwrap();
    let mut wanted = vec![
        format!(
            "peer=203.0.113.7:40001 accepted via PROXY v2 from {}",
            accept.local_addr().unwrap()
        ),
        format!(
            "peer=[2001:db8::9]:40002 accepted via PROXY v1 from {}",
            connect.local_addr().unwrap()
        ),
    ];
    let deadline = Instant::now() + WAIT;
    while !wanted.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        wanted.retain(|w| !line.contains(w.as_str()));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(wanted.is_empty(), "not logged: {wanted:?}");
}

#[test]
fn a_reload_that_would_leave_a_proxy_listener_without_trusted_proxies_is_refused() {
    let relay = proxied_relay("127.0.0.1/32");
    // The new file drops both the listener's proxy_protocol and the trusted
    // list; listener changes are not applied, so the running proxy listener
    // would be left trusting nobody.
    let mut config = (*relay.server.config()).clone();
    config.trusted_proxies = CidrSet::default();
    config.listeners[0].proxy_protocol = false;
    let refused = relay.server.reload(config);
    assert!(refused.is_err(), "reload accepted: {refused:?}");
    let header = client_header("203.0.113.7:40001", &relay);
    let mut sock = dial_with(
        &relay,
        &header,
        b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        read_http(&mut sock).status,
        200,
        "the old configuration stays"
    );
}

#[test]
fn the_rest_rate_limit_counts_the_client_a_header_names_not_the_balancer() {
    let relay = TestRelay::with(|c| {
        c.trusted_proxies = trusting("127.0.0.1/32");
        c.listeners[0].proxy_protocol = true;
        // One request per client, then 429 (a whole second to refill).
        c.client_limits.rest_rate = 1;
        c.client_limits.rest_burst = 1;
    });
    let health = |client: &str| {
        let header = client_header(client, &relay);
        let request = b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n";
        read_http(&mut dial_with(&relay, &header, request)).status
    };
    assert_eq!(health("203.0.113.7:1000"), 200);
    // The same client again, through other balancer connections: limited
    // (within 20 requests however slow the host: one more per second).
    let statuses: Vec<u16> = (1001..1021)
        .map(|port| health(&format!("203.0.113.7:{port}")))
        .collect();
    assert!(statuses.contains(&429), "never limited: {statuses:?}");
    // Another client behind the same balancer (whose own loopback address is
    // exempt by default) has its own budget.
    assert_eq!(health("198.51.100.9:1000"), 200);
}

/// A relay behind a balancer (loopback, exempt by default) with these
/// per-client maxima of connections and parked accepts.
fn limited_behind_a_balancer(connections: u32, parked: u32) -> TestRelay {
    TestRelay::with(|c| {
        c.trusted_proxies = trusting("127.0.0.1/32");
        c.listeners[0].proxy_protocol = true;
        c.client_limits.max_connections = connections;
        c.client_limits.max_parked_accepts = parked;
        c.client_limits.rest_rate = 0;
    })
}

/// An accept on fresh ids for `client`, through the balancer.
fn accept_for(relay: &TestRelay, client: &str) -> (TcpStream, u16) {
    let head = v2("accept", Uuid::new_v4(), Uuid::new_v4());
    let mut sock = dial_with(relay, &client_header(client, relay), &jet(&head));
    let status = read_response(&mut sock).status;
    (sock, status)
}

#[test]
fn parked_accept_limits_count_the_client_a_header_names_not_the_balancer() {
    let relay = limited_behind_a_balancer(0, 1);
    let (_first, status) = accept_for(&relay, "203.0.113.7:1000");
    assert_eq!(status, 200);
    let (_second, status) = accept_for(&relay, "203.0.113.7:1001");
    assert_eq!(status, 503, "the same client's second parked accept");
    let (_other, status) = accept_for(&relay, "198.51.100.9:1000");
    assert_eq!(status, 200, "another client behind the same balancer");
}

#[test]
fn connection_limits_count_the_client_a_header_names_not_the_balancer() {
    let relay = limited_behind_a_balancer(1, 0);
    // A parked accept keeps its connection open: the client's one.
    let (_parked, status) = accept_for(&relay, "203.0.113.7:1000");
    assert_eq!(status, 200);
    let head = v2("accept", Uuid::new_v4(), Uuid::new_v4());
    let mut refused = dial_with(
        &relay,
        &client_header("203.0.113.7:1001", &relay),
        &jet(&head),
    );
    refused
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_closed(&mut refused);
    let (_other, status) = accept_for(&relay, "198.51.100.9:1000");
    assert_eq!(status, 200, "another client behind the same balancer");
}
