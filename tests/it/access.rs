//! Who may use the REST API: safe by default without an API key, everything
//! with it, and the per-client REST rate.

use crate::support::*;
use jet_relay::relay::config::{ApiKey, CidrSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

const KEY: &str = "access-key-0123456789abcdef";

fn with_key(relay: &TestRelay, method: &str, path: &str) -> HttpReply {
    let value = format!("Bearer {KEY}");
    relay.http(method, path, &[("Authorization", &value)], b"")
}

/// Gathers candidates for a fresh association and parks an accept on the
/// first, as the server peer of the hijack did.
fn victim(relay: &TestRelay) -> (Uuid, Uuid, std::net::TcpStream) {
    let a = Uuid::new_v4();
    let reply = relay.http("POST", &format!("/jet/gather/{a}"), &[], b"");
    assert_eq!(reply.status, 200);
    let c: Uuid = reply.json()["candidates"][0]["id"]
        .as_str()
        .expect("a candidate id")
        .parse()
        .expect("a UUID");
    let parked = relay.accept(a, c);
    (a, c, parked)
}

#[track_caller]
fn assert_refused_with_a_way_to_enable(reply: &HttpReply) {
    assert_eq!(reply.status, 403, "{}", reply.text());
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("api_key") && error.contains("relay.toml"),
        "{error}"
    );
}

#[test]
fn hijack_through_the_listing_is_refused_without_a_key() {
    let relay = TestRelay::start();
    let (a, c, mut server) = victim(&relay);
    // The attacker knows only the relay's address.
    let list = relay.http("GET", "/jet/association", &[], b"");
    assert_refused_with_a_way_to_enable(&list);
    // Even knowing the association id, it learns no candidate id.
    let one = relay.http("GET", &format!("/jet/association/{a}"), &[], b"");
    assert_refused_with_a_way_to_enable(&one);
    let metrics = relay.http("GET", "/metrics", &[], b"");
    let gather = relay.http("POST", &format!("/jet/gather/{a}"), &[], b"");
    assert_eq!((metrics.status, gather.status), (200, 200));
    for reply in [&list, &one, &metrics, &gather] {
        assert!(
            !reply.text().contains(&c.to_string()),
            "{} leaks the parked candidate",
            reply.text()
        );
    }
    // The victim's own client still reaches its service.
    let mut client = relay.connect(a, c);
    client.write_all(b"mine").unwrap();
    assert_eq!(read_n(&mut server, 4), b"mine");
}

#[test]
fn delete_is_refused_without_a_key_and_leaves_the_association_alone() {
    let relay = TestRelay::start();
    let (a, c, mut server) = victim(&relay);
    let reply = relay.http("DELETE", &format!("/jet/association/{a}"), &[], b"");
    assert_refused_with_a_way_to_enable(&reply);
    assert!(relay.table().info(a).is_some());
    let mut client = relay.connect(a, c);
    client.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut server, 10), b"still here");
}

#[test]
fn create_and_gather_stay_open_without_a_key() {
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let created = relay.http("POST", &format!("/jet/association/{a}"), &[], b"");
    assert_eq!(created.status, 200);
    assert_eq!(created.json()["id"], a.to_string());
    let gathered = relay.http(
        "POST",
        &format!("/jet/association/{a}/candidates"),
        &[],
        b"",
    );
    assert_eq!(gathered.status, 200);
    let c: Uuid = gathered.json()["candidates"][0]["id"]
        .as_str()
        .expect("a candidate id")
        .parse()
        .expect("a UUID");
    let mut server = relay.accept(a, c);
    let mut client = relay.connect(a, c);
    client.write_all(b"open").unwrap();
    assert_eq!(read_n(&mut server, 4), b"open");
}

#[test]
fn with_a_key_the_listing_inspection_and_delete_work_as_before() {
    let relay = TestRelay::with(|c| {
        c.api_key = Some(ApiKey::new(KEY).expect("a valid key"));
        c.accept_requires_api = Some(false);
    });
    let a = Uuid::new_v4();
    let gathered = with_key(&relay, "POST", &format!("/jet/gather/{a}"));
    let c = gathered.json()["candidates"][0]["id"]
        .as_str()
        .expect("a candidate id")
        .to_owned();
    let mut parked = relay.accept(a, c.parse().expect("a UUID"));
    let list = with_key(&relay, "GET", "/jet/association");
    assert_eq!(list.status, 200);
    assert!(list.text().contains(&c), "{}", list.text());
    let one = with_key(&relay, "GET", &format!("/jet/association/{a}")).json();
    assert_eq!(one["candidates"][0]["id"], c);
    assert_eq!(one["candidates"][0]["state"], "parked");
    for (method, path) in [
        ("GET", "/jet/association".to_owned()),
        ("GET", format!("/jet/association/{a}")),
        ("DELETE", format!("/jet/association/{a}")),
    ] {
        let reply = relay.http(method, &path, &[], b"");
        assert_eq!(reply.status, 401, "{method} {path} without the key");
    }
    assert_eq!(
        with_key(&relay, "DELETE", &format!("/jet/association/{a}")).status,
        200
    );
    assert_closed(&mut parked);
}

#[test]
fn a_client_over_its_rest_burst_gets_429_and_recovers_after_retry_after() {
    // One request a second, three at once; loopback is not exempt here since
    // the test's client is on 127.0.0.1. The three pass long before a token
    // comes back (a second), so the fourth is refused.
    let relay = TestRelay::with(|c| {
        c.client_limits.rest_rate = 1;
        c.client_limits.rest_burst = 3;
        c.client_limits.exempt = CidrSet::default();
    });
    for n in 0..3 {
        assert_eq!(relay.http("GET", "/health", &[], b"").status, 200, "{n}");
    }
    let refused = relay.http("GET", "/health", &[], b"");
    assert_eq!(refused.status, 429);
    let retry: u64 = refused
        .header("Retry-After")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert_eq!(retry, 1);
    let why = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("rest_rate"), "{why}");
    // Honouring Retry-After is what a client does: then it is served again.
    std::thread::sleep(Duration::from_secs(retry));
    let metrics = relay.http("GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("jet_relay_client_limit_refusals_total{limit=\"rest_rate\"} 1\n"),
        "{}",
        metrics.text()
    );
}

/// What the relay binary writes on stderr while starting with `args`.
fn startup_log(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jet-relay"))
        .args(args)
        .env("JET_RELAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the relay binary starts");
    // The listening line comes after every start-up warning is queued; the
    // log writer thread flushes them when the relay stops on SIGTERM.
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("a listening line");
    assert!(line.starts_with("listening "), "{line:?}");
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut log)
        .expect("stderr reads to its end");
    let _ = child.wait();
    log
}

#[test]
fn the_relay_warns_at_start_when_it_listens_beyond_loopback_without_a_key() {
    let config = std::env::temp_dir().join(format!("jet-relay-access-{}.toml", Uuid::new_v4()));
    std::fs::write(&config, "").expect("an empty config");
    let path = config.to_str().expect("a UTF-8 temporary path");
    let exposed = startup_log(&["--config", path, "--listen", "tcp://0.0.0.0:0"]);
    let local = startup_log(&["--config", path, "--listen", "tcp://127.0.0.1:0"]);
    std::fs::write(&config, format!("api_key = \"{KEY}\"\n")).expect("a config with a key");
    let keyed = startup_log(&["--config", path, "--listen", "tcp://0.0.0.0:0"]);
    let _ = std::fs::remove_file(&config);
    assert!(
        exposed.contains("beyond loopback without an api_key"),
        "{exposed}"
    );
    assert!(!local.contains("without an api_key"), "{local}");
    assert!(!keyed.contains("without an api_key"), "{keyed}");
}
