//! The REST API: associations, gathering, health, the API key, and HTTP
//! framing limits (metrics: `metrics.rs`).

use crate::support::*;
use jet_relay::relay::config::ApiKey;
use std::io::Write;
use std::time::{Duration, Instant};
use uuid::Uuid;

const KEY: &str = "test-key-0123456789abcdef";

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {KEY}"))
}

/// A relay with the API key set whose JET accepts may still create their
/// association, for the tests that use the administrative endpoints on pairs.
fn keyed() -> TestRelay {
    TestRelay::with(|c| {
        c.api_key = Some(ApiKey::new(KEY).expect("a valid key"));
        c.accept_requires_api = Some(false);
    })
}

/// Sends one REST request with the API key.
fn admin(relay: &TestRelay, method: &str, path: &str) -> HttpReply {
    let (name, value) = bearer();
    relay.http(method, path, &[(name, &value)], b"")
}

#[test]
fn create_get_list_and_delete_an_association() {
    let relay = keyed();
    let a = Uuid::new_v4();
    let path = format!("/jet/association/{a}");
    let reply = admin(&relay, "POST", &path);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], a.to_string());

    let info = admin(&relay, "GET", &path).json();
    assert_eq!(info["id"], a.to_string());
    assert_eq!(info["state"], "created");
    assert_eq!(info["origin"], "api");
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(info["candidates"], serde_json::json!([]));

    let list = admin(&relay, "GET", "/jet/association").json();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == a.to_string()));

    assert_eq!(admin(&relay, "DELETE", &path).status, 200);
    assert_eq!(admin(&relay, "GET", &path).status, 404);
    assert_eq!(admin(&relay, "DELETE", &path).status, 404);
}

#[test]
fn creating_an_existing_association_answers_409_and_keeps_its_sockets() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    let path = format!("/jet/association/{a}");
    assert_eq!(relay.http("POST", &path, &[], b"").status, 200);
    let mut server = relay.accept(a, c);
    let reply = relay.http("POST", &path, &[], b"");
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json()["error"], "association already exists");
    // The parked accept is untouched: a connect still pairs with it.
    let mut client = relay.connect(a, c);
    client.write_all(b"alive").unwrap();
    assert_eq!(read_n(&mut server, 5), b"alive");
}

#[test]
fn delete_closes_every_connection_of_the_association() {
    let relay = keyed();
    let (a, mut server, mut client) = relay.pair();
    let mut parked = relay.accept(a, Uuid::new_v4());
    assert_eq!(
        admin(&relay, "DELETE", &format!("/jet/association/{a}")).status,
        200
    );
    assert_closed(&mut server);
    assert_closed(&mut client);
    assert_closed(&mut parked);
}

#[test]
fn byte_counters_are_live_while_data_flows() {
    let relay = keyed();
    let (a, mut server, mut client) = relay.pair();
    client.write_all(&pattern(1, 5000)).unwrap();
    assert_eq!(read_n(&mut server, 5000), pattern(1, 5000));
    server.write_all(&pattern(2, 70)).unwrap();
    assert_eq!(read_n(&mut client, 70), pattern(2, 70));
    let info = admin(&relay, "GET", &format!("/jet/association/{a}")).json();
    assert_eq!(info["state"], "active");
    let cand = &info["candidates"][0];
    assert_eq!(cand["state"], "relaying");
    assert_eq!(cand["transport"], "tcp");
    assert_eq!(cand["bytes_connect_to_accept"], 5000);
    assert_eq!(cand["bytes_accept_to_connect"], 70);
    // More data, same pair: the counters move while it is still open.
    client.write_all(&pattern(3, 1000)).unwrap();
    assert_eq!(read_n(&mut server, 1000).len(), 1000);
    let info = admin(&relay, "GET", &format!("/jet/association/{a}")).json();
    assert_eq!(info["candidates"][0]["bytes_connect_to_accept"], 6000);
}

#[test]
fn gather_lists_one_usable_candidate_per_transport() {
    let relay = keyed();
    for spelling in ["/jet/gather/{}", "/jet/association/{}/candidates"] {
        let a = Uuid::new_v4();
        let reply = admin(&relay, "POST", &spelling.replace("{}", &a.to_string()));
        assert_eq!(reply.status, 200, "{spelling}");
        let body = reply.json();
        assert_eq!(body["id"], a.to_string());
        let candidates = body["candidates"].as_array().unwrap();
        let urls: Vec<&str> = candidates
            .iter()
            .map(|c| c["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                format!("tcp://{}", relay.addr),
                format!("ws://{}", relay.addr)
            ]
        );
        let ids: std::collections::HashSet<&str> = candidates
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), candidates.len(), "candidate ids are unique");
        // The association now exists, with the gathered candidates.
        let info = admin(&relay, "GET", &format!("/jet/association/{a}")).json();
        assert_eq!(info["candidates"].as_array().unwrap().len(), 2);
        assert_eq!(info["candidates"][0]["state"], "gathered");

        // The tcp:// URL works as is, with a peer that knows nothing else.
        let c: Uuid = candidates[0]["id"].as_str().unwrap().parse().unwrap();
        let (mut server, _) =
            open_tcp_candidate(urls[0], jet_relay::wire::message::Method::Accept, a, c).unwrap();
        let (mut client, _) =
            open_tcp_candidate(urls[0], jet_relay::wire::message::Method::Connect, a, c).unwrap();
        client.write_all(b"via gathered url").unwrap();
        server.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(read_n(&mut server, 16), b"via gathered url");
    }
}

#[test]
fn gathered_urls_use_the_external_url_when_set() {
    let relay = TestRelay::with(|c| {
        c.listeners[0].external_url = Some("tcp://relay.example.net:443".into());
    });
    let reply = relay.http("POST", &format!("/jet/gather/{}", Uuid::new_v4()), &[], b"");
    let urls: Vec<String> = reply.json()["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        urls,
        ["tcp://relay.example.net:443", "ws://relay.example.net:443"]
    );
}

#[test]
fn after_gathering_unknown_candidate_ids_are_rejected() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let body = relay
        .http("POST", &format!("/jet/gather/{a}"), &[], b"")
        .json();
    let known: Uuid = body["candidates"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stranger = Uuid::new_v4();
    for method in ["accept", "connect", "test"] {
        let (mut sock, resp) = relay.request(&v2(method, a, stranger), 0x73, b"");
        assert_eq!(resp.status, 404, "{method} with an unknown candidate");
        assert_closed(&mut sock);
    }
    let (_sock, resp) = relay.request(&v2("test", a, known), 0x73, b"");
    assert_eq!(resp.status, 200);
    let _server = relay.accept(a, known);
}

#[test]
fn health_is_plain_text_or_json_and_never_needs_the_key() {
    let relay = TestRelay::with(|c| c.api_key = Some(ApiKey::new(KEY).expect("a valid key")));
    let reply = relay.http("GET", "/health", &[], b"");
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(reply.text().contains("test-instance"));
    assert!(reply.text().contains(env!("CARGO_PKG_VERSION")));
    let reply = relay.http("GET", "/health", &[("Accept", "application/json")], b"");
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["instance"], "test-instance");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn api_key_guards_every_call_but_health() {
    let relay = TestRelay::with(|c| c.api_key = Some(ApiKey::new(KEY).expect("a valid key")));
    let a = Uuid::new_v4();
    let path = format!("/jet/association/{a}");
    let wrong = (
        "Authorization",
        "Bearer test-key-0123456789abcdeX".to_owned(),
    );
    for (method, path) in [
        ("POST", path.as_str()),
        ("GET", path.as_str()),
        ("DELETE", path.as_str()),
        ("GET", "/jet/association"),
        ("POST", &format!("/jet/gather/{a}")),
        ("GET", "/metrics"),
    ] {
        let reply = relay.http(method, path, &[], b"");
        assert_eq!(reply.status, 401, "{method} {path} without a key");
        assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"));
        assert!(reply.json()["error"].is_string());
        let reply = relay.http(method, path, &[(wrong.0, &wrong.1)], b"");
        assert_eq!(reply.status, 401, "{method} {path} with a wrong key");
    }
    let (name, value) = bearer();
    assert_eq!(
        relay.http("POST", &path, &[(name, &value)], b"").status,
        200
    );
    assert_eq!(relay.http("GET", &path, &[(name, &value)], b"").status, 200);
    assert_eq!(
        relay.http("GET", "/metrics", &[(name, &value)], b"").status,
        200
    );
}

#[test]
fn with_a_key_jet_accepts_need_an_api_created_association() {
    let relay = TestRelay::with(|c| c.api_key = Some(ApiKey::new(KEY).expect("a valid key")));
    // Unknown association: refused, and nothing is created.
    let unknown = Uuid::new_v4();
    let (mut sock, resp) = relay.request(&v2("accept", unknown, Uuid::new_v4()), 0x73, b"");
    assert_eq!(resp.status, 404);
    assert_closed(&mut sock);
    assert!(relay.table().info(unknown).is_none());
    // Version 1 accepts would create one: refused too.
    let v1 = "GET / HTTP/1.1\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n";
    let (_sock, resp) = relay.request(v1, 0x73, b"");
    assert_eq!(resp.status, 404);
    assert!(relay.table().is_empty());
    // Created through the authenticated API: accepted.
    let a = Uuid::new_v4();
    let (name, value) = bearer();
    assert_eq!(
        relay
            .http(
                "POST",
                &format!("/jet/association/{a}"),
                &[(name, &value)],
                b""
            )
            .status,
        200
    );
    let c = Uuid::new_v4();
    let mut server = relay.accept(a, c);
    let mut client = relay.connect(a, c);
    client.write_all(b"ok").unwrap();
    assert_eq!(read_n(&mut server, 2), b"ok");
}

#[test]
fn http_errors_have_the_right_status_and_a_json_body() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let reply = relay.http("GET", "/nowhere", &[], b"");
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].is_string());
    let reply = relay.http("PUT", &format!("/jet/association/{a}"), &[], b"");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow"), Some("GET, POST, DELETE"));
    let reply = relay.http("GET", &format!("/jet/gather/{a}"), &[], b"");
    assert_eq!((reply.status, reply.header("Allow")), (405, Some("POST")));
    let reply = relay.http("GET", "/jet/association/not-a-uuid", &[], b"");
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("not a UUID"));

    let raw = |bytes: &[u8]| {
        let mut sock = relay.dial();
        sock.write_all(bytes).unwrap();
        let reply = read_http(&mut sock);
        assert!(reply.json()["error"].is_string());
        reply.status
    };
    assert_eq!(raw(b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
    assert_eq!(raw(b"POST /jet/association/x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_eq!(
        raw(b"POST /jet/association/x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        400
    );
    assert_eq!(
        raw(b"POST /jet/association/x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
        413
    );
    let mut big = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 17 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw(&big), 431);
}

#[test]
fn keep_alive_serves_pipelined_requests_and_reads_bodies_exactly() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let mut sock = relay.dial();
    // A body (ignored by the route, but it must be consumed exactly), then two
    // more requests in the same write.
    let requests = format!(
        "POST /jet/association/{a} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
         POST /jet/gather/{a} HTTP/1.1\r\n\r\n\
         GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(requests.as_bytes()).unwrap();
    let first = read_http(&mut sock);
    assert_eq!(
        (first.status, first.header("Connection")),
        (200, Some("keep-alive"))
    );
    let second = read_http(&mut sock);
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["id"], a.to_string());
    let third = read_http(&mut sock);
    assert_eq!(
        (third.status, third.header("Connection")),
        (200, Some("close"))
    );
    assert_closed(&mut sock);
}

#[test]
fn slow_http_clients_hit_the_handshake_timeout() {
    let relay = TestRelay::with(|c| c.handshake_timeout = Duration::from_millis(300));
    // The relay's deadline starts when it accepts, after this instant: the
    // close cannot come less than 300 ms from here, however loaded the host.
    let started = Instant::now();
    let mut sock = relay.dial();
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_closed(&mut sock);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed after {:?}",
        started.elapsed()
    );
    // An idle keep-alive connection is closed the same way.
    let mut sock = relay.dial();
    sock.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_http(&mut sock).status, 200);
    assert_closed(&mut sock);
}

#[test]
fn cors_origin_is_sent_and_preflight_answered() {
    let relay = TestRelay::with(|c| {
        c.cors_origin = Some("https://app.example.com".into());
        c.api_key = Some(ApiKey::new(KEY).expect("a valid key"));
    });
    let reply = relay.http(
        "GET",
        "/health",
        &[("Origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(
        reply.header("Access-Control-Allow-Origin"),
        Some("https://app.example.com")
    );
    // Preflight never carries credentials, so it needs no key.
    let reply = relay.http(
        "OPTIONS",
        &format!("/jet/association/{}", Uuid::new_v4()),
        &[
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(reply.status, 204);
    assert!(reply
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("POST"));
    assert!(reply
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Authorization"));
    assert_eq!(
        reply.header("Access-Control-Allow-Origin"),
        Some("https://app.example.com")
    );
    // Without the setting, no CORS header.
    let plain = TestRelay::start();
    assert_eq!(
        plain
            .http("GET", "/health", &[], b"")
            .header("Access-Control-Allow-Origin"),
        None
    );
}

#[test]
fn gathering_is_bounded_and_closed_once_a_candidate_is_selected() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let path = format!("/jet/gather/{a}");
    // Two candidates per gather on one TCP listener: 32 gathers fill the 64.
    for round in 0..32 {
        assert_eq!(
            relay.http("POST", &path, &[], b"").status,
            200,
            "gather {round}"
        );
    }
    let reply = relay.http("POST", &path, &[], b"");
    assert_eq!(reply.status, 503);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("too many candidates"));

    // An association that selected a candidate gathers no more.
    let b = Uuid::new_v4();
    let body = relay
        .http("POST", &format!("/jet/gather/{b}"), &[], b"")
        .json();
    let c: Uuid = body["candidates"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut server = relay.accept(b, c);
    let mut client = relay.connect(b, c);
    client.write_all(b"select").unwrap();
    assert_eq!(read_n(&mut server, 6), b"select");
    assert_eq!(
        relay
            .http("POST", &format!("/jet/gather/{b}"), &[], b"")
            .status,
        409
    );
}

#[test]
fn a_full_table_refuses_new_associations_with_503() {
    let relay = TestRelay::with(|c| c.max_associations = 2);
    let _one = relay.accept(Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        relay
            .http(
                "POST",
                &format!("/jet/association/{}", Uuid::new_v4()),
                &[],
                b""
            )
            .status,
        200
    );
    let (mut sock, resp) = relay.request(&v2("accept", Uuid::new_v4(), Uuid::new_v4()), 0x73, b"");
    assert_eq!(resp.status, 503);
    assert_closed(&mut sock);
    let reply = relay.http(
        "POST",
        &format!("/jet/association/{}", Uuid::new_v4()),
        &[],
        b"",
    );
    assert_eq!(reply.status, 503);
    assert_eq!(relay.table().len(), 2);
}

#[test]
fn content_length_must_be_plain_digits() {
    let relay = TestRelay::start();
    for bad in ["+3", "3 ", "0x3", "-1", ""] {
        let mut sock = relay.dial();
        let request = format!(
            "POST /jet/association/{} HTTP/1.1\r\nContent-Length:{bad}\r\n\r\nabc",
            Uuid::new_v4()
        );
        sock.write_all(request.as_bytes()).unwrap();
        let reply = read_http(&mut sock);
        // httparse trims surrounding spaces, so "3 " is the one valid form.
        let expected = if bad == "3 " { 200 } else { 400 };
        assert_eq!(reply.status, expected, "Content-Length:{bad:?}");
    }
}

#[test]
fn head_answers_carry_no_body_and_keep_the_framing() {
    let relay = TestRelay::start();
    let mut sock = relay.dial();
    sock.write_all(
        b"HEAD /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    // The HEAD answer announces a length but sends nothing: read its head only.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut sock, &mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("Content-Length: 0\r\n"), "{head}");
    // The next bytes are the GET's answer, not a stray body.
    let next = read_http(&mut sock);
    assert_eq!(next.status, 200);
    assert!(next.text().contains("jet-relay"));
}

#[test]
fn every_gathered_url_of_every_listener_is_usable_as_is() {
    let relay = TestRelay::with_tls(|_| {});
    let expected = [
        (Transport::Tcp, format!("tcp://{}", relay.addr)),
        (Transport::Ws, format!("ws://{}", relay.addr)),
        (Transport::Tls, format!("tls://{}", relay.tls_addr())),
        (Transport::Wss, format!("wss://{}", relay.tls_addr())),
    ];
    // One association per transport: the first candidate to carry data is
    // selected and closes the others, so each is tried on its own.
    for (at, (transport, url)) in expected.iter().enumerate() {
        let a = Uuid::new_v4();
        let body = relay
            .http("POST", &format!("/jet/gather/{a}"), &[], b"")
            .json();
        let candidates = body["candidates"].as_array().unwrap();
        let urls: Vec<&str> = candidates
            .iter()
            .map(|c| c["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            expected.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>()
        );
        // The URL's own transport reaches the relay at the URL's address,
        // and the candidate id it came with pairs there.
        let c: Uuid = candidates[at]["id"].as_str().unwrap().parse().unwrap();
        let server = relay.open(*transport, "accept", a, c).unwrap();
        let client = relay.open(*transport, "connect", a, c).unwrap();
        client.send(url.as_bytes());
        assert_eq!(recv_n(&*server, url.len()), url.as_bytes(), "over {url}");
    }
}
