//! `/metrics`: strict Prometheus text, counters, gauges and histograms that
//! move with the traffic, process figures, and the `metrics_listen` listener.

use crate::support::*;
use jet_relay::relay::config::ApiKey;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use uuid::Uuid;

const KEY: &str = "test-key-0123456789abcdef";
const TOKEN: &str = "scrape-token-0123456789";

#[track_caller]
fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    *m.get(k).unwrap_or_else(|| panic!("missing {k}"))
}

#[test]
fn metrics_are_prometheus_text_and_counters_increase() {
    let relay = TestRelay::start();
    let before = parse_metrics(&relay.http("GET", "/metrics", &[], b"").text());
    let (a, mut server, mut client) = relay.pair();
    client.write_all(&pattern(9, 4096)).unwrap();
    assert_eq!(read_n(&mut server, 4096).len(), 4096);
    let (_s, resp) = relay.request(&v2("connect", Uuid::new_v4(), Uuid::new_v4()), 0x73, b"");
    assert_eq!(resp.status, 404);
    let reply = relay.http("GET", "/metrics", &[], b"");
    assert!(reply
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let after = parse_metrics(&reply.text());
    let listener = format!("listener=\"tcp://{}\"", relay.addr);
    for (name, delta) in [
        (
            "jet_relay_relayed_bytes_total{direction=\"connect_to_accept\"}",
            4096.0,
        ),
        ("jet_relay_handshakes_total{outcome=\"paired\"}", 1.0),
        ("jet_relay_handshakes_total{outcome=\"parked\"}", 1.0),
        (
            "jet_relay_rejections_total{reason=\"not_found\",status=\"404\"}",
            1.0,
        ),
        ("jet_relay_pairs_started_total", 1.0),
        // The accept, the connect, the refused connect and this scrape.
        (
            &format!("jet_relay_connections_accepted_total{{{listener}}}"),
            4.0,
        ),
        // Served (parked, paired) and refused (404) requests.
        ("jet_relay_handshake_duration_seconds_count", 3.0),
        ("jet_relay_accept_to_pair_seconds_count", 1.0),
        ("jet_relay_pair_lifetime_seconds_count", 0.0),
    ] {
        assert_eq!(get(&after, name) - get(&before, name), delta, "{name}");
    }
    assert_eq!(get(&after, "jet_relay_pairs_relaying"), 1.0);
    assert_eq!(get(&after, "jet_relay_parked_accepts"), 0.0);
    assert_eq!(get(&after, "jet_relay_associations{state=\"active\"}"), 1.0);
    assert_eq!(
        get(&after, "jet_relay_connections_open{kind=\"paired\"}"),
        2.0
    );
    // Two copy threads for the pair, one serving this scrape.
    assert!(get(&after, "jet_relay_threads{state=\"busy\"}") >= 3.0);
    assert!(get(&after, "jet_relay_threads_max") >= 16.0);
    // Counters never go down between two scrapes.
    for (name, value) in &before {
        if name.contains("_total") || name.ends_with("_count") || name.contains("_bucket") {
            assert!(get(&after, name) >= *value, "{name} decreased");
        }
    }

    // The pair's lifetime is observed once both directions end.
    drop(client);
    drop(server);
    relay.wait_ended(a);
    let ended = parse_metrics(&relay.http("GET", "/metrics", &[], b"").text());
    assert_eq!(
        get(&ended, "jet_relay_pair_lifetime_seconds_count")
            - get(&before, "jet_relay_pair_lifetime_seconds_count"),
        1.0
    );
    assert_eq!(get(&ended, "jet_relay_pairs_relaying"), 0.0);
}

#[test]
fn a_parked_accept_shows_in_the_gauges_and_its_wait_in_the_histogram() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut server = relay.accept(a, c);
    let parked = parse_metrics(&relay.http("GET", "/metrics", &[], b"").text());
    assert_eq!(get(&parked, "jet_relay_parked_accepts"), 1.0);
    assert_eq!(
        get(&parked, "jet_relay_connections_open{kind=\"parked\"}"),
        1.0
    );
    assert_eq!(get(&parked, "jet_relay_accept_to_pair_seconds_count"), 0.0);
    let mut client = relay.connect(a, c);
    // The connect's wait is observed before its relay starts: a byte through
    // the pair proves it was.
    client.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut server, 1), b"x");
    let paired = parse_metrics(&relay.http("GET", "/metrics", &[], b"").text());
    assert_eq!(get(&paired, "jet_relay_parked_accepts"), 0.0);
    assert_eq!(get(&paired, "jet_relay_accept_to_pair_seconds_count"), 1.0);
    assert_eq!(
        get(
            &paired,
            "jet_relay_accept_to_pair_seconds_bucket{le=\"+Inf\"}"
        ),
        1.0
    );
}

#[test]
fn build_info_and_process_figures_are_exposed() {
    let relay = TestRelay::start();
    let m = parse_metrics(&relay.http("GET", "/metrics", &[], b"").text());
    let version = format!(
        "jet_relay_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get(&m, &version), 1.0);
    let open = get(&m, "process_open_fds");
    assert!(open >= 4.0, "stdio and the listener at least: {open}");
    assert!(get(&m, "process_max_fds") >= open);
    assert!(get(&m, "process_resident_memory_bytes") > 1e5);
    assert!(get(&m, "process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = get(&m, "process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 30.0 * 86_400.0,
        "{start}"
    );
}

/// One request to `addr` on a connection of its own.
fn http_at(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    let mut sock = TcpStream::connect(addr).expect("the listener accepts");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: metrics.test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).unwrap();
    read_http(&mut sock)
}

#[test]
fn metrics_listen_serves_metrics_alone_behind_its_token() {
    let relay = TestRelay::with(|c| {
        c.api_key = Some(ApiKey::new(KEY).expect("a valid key"));
        c.metrics_listen = Some("127.0.0.1:0".into());
        c.metrics_token = Some(ApiKey::new(TOKEN).expect("a valid token"));
    });
    let at = relay
        .server
        .metrics_addr()
        .expect("metrics_listen is bound");
    assert!(
        !relay.server.local_addrs().contains(&at),
        "not a JET listener"
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];

    let missing = http_at(at, "GET", "/metrics", &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("WWW-Authenticate"), Some("Bearer"));
    let admin = format!("Bearer {KEY}");
    let wrong = http_at(at, "GET", "/metrics", &[("Authorization", &admin)]);
    assert_eq!(wrong.status, 401, "the API key is not the metrics token");

    let scraped = http_at(at, "GET", "/metrics", &auth);
    assert_eq!(scraped.status, 200);
    let m = parse_metrics(&scraped.text());
    assert!(m.contains_key("jet_relay_pairs_relaying"));
    // Nothing but /metrics and /health (open, so a balancer can check it,
    // and still answering while the relay drains): no REST, no JET.
    assert_eq!(http_at(at, "GET", "/jet/association", &auth).status, 404);
    assert_eq!(http_at(at, "GET", "/health", &[]).status, 200);
    assert_eq!(http_at(at, "POST", "/metrics", &auth).status, 405);
    let mut jet = TcpStream::connect(at).unwrap();
    jet.set_read_timeout(Some(WAIT)).unwrap();
    let packet =
        jet_relay::wire::packet::encode(v2("accept", Uuid::new_v4(), Uuid::new_v4()).as_bytes(), 0)
            .unwrap();
    jet.write_all(&packet).unwrap();
    let answer = read_to_end(&mut jet);
    assert!(
        !answer.starts_with(b"JET\0"),
        "a JET answer on the metrics port"
    );

    // The main listener is as before: its /metrics and REST take the API key.
    assert_eq!(relay.http("GET", "/metrics", &[], b"").status, 401);
    assert_eq!(relay.http("GET", "/metrics", &auth, b"").status, 401);
    let key = [("Authorization", admin.as_str())];
    assert_eq!(relay.http("GET", "/metrics", &key, b"").status, 200);
    let a = Uuid::new_v4();
    let created = relay.http("POST", &format!("/jet/association/{a}"), &key, b"");
    assert_eq!(created.status, 200);
}

#[test]
fn metrics_listen_without_a_token_is_open() {
    let relay = TestRelay::with(|c| c.metrics_listen = Some("127.0.0.1:0".into()));
    let at = relay
        .server
        .metrics_addr()
        .expect("metrics_listen is bound");
    let reply = http_at(at, "GET", "/metrics", &[]);
    assert_eq!(reply.status, 200);
    parse_metrics(&reply.text());
    assert_eq!(relay.server.metrics_addr(), Some(at));
    assert_eq!(TestRelay::start().server.metrics_addr(), None);
}

/// Parses the text exposition format strictly and returns every sample.
///
/// Every line is a `# HELP` with text, a `# TYPE` of a known type for a family
/// not declared before, or a sample `name{k="v",...} value` of a declared
/// family. Counters end in `_total`. A histogram's samples are its
/// `_bucket{le="..."}` lines, `le` rising to `+Inf` with counts that never
/// fall, then `_sum` and `_count`, which equals the `+Inf` bucket.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut declared: HashMap<String, String> = HashMap::new();
    // Per histogram: (last le, last cumulative count, saw +Inf, saw sum).
    let mut histograms: HashMap<String, (f64, f64, bool, bool)> = HashMap::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(
                (name.starts_with("jet_relay_") || name.starts_with("process_"))
                    && !help.is_empty(),
                "{line}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "a counter's name ends in _total: {line}"
            );
            assert!(
                declared.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            if kind == "histogram" {
                histograms.insert(name.to_owned(), (f64::NEG_INFINITY, 0.0, false, false));
            }
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let labels = &series[name.len()..];
            let mut le = None;
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    assert!(
                        !k.is_empty() && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                    if k == "le" {
                        le = Some(v[1..v.len() - 1].to_owned());
                    }
                }
            }
            let value: f64 = value.parse().expect("numeric value");
            let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let family = name.strip_suffix(suffix)?;
                histograms.contains_key(family).then_some((family, *suffix))
            });
            match histogram {
                Some((family, suffix)) => {
                    let state = histograms.get_mut(family).unwrap();
                    match suffix {
                        "_bucket" => {
                            assert!(!state.2, "bucket after +Inf: {line}");
                            let le = le.expect("a bucket has le");
                            let bound = if le == "+Inf" {
                                state.2 = true;
                                f64::INFINITY
                            } else {
                                le.parse().expect("le is a number")
                            };
                            assert!(bound > state.0, "le must rise: {line}");
                            assert!(value >= state.1, "bucket counts never fall: {line}");
                            *state = (bound, value, state.2, false);
                        }
                        "_sum" => {
                            assert!(state.2, "_sum before the +Inf bucket: {line}");
                            assert!(value >= 0.0, "{line}");
                            state.3 = true;
                        }
                        _ => {
                            assert!(state.3, "_count before _sum: {line}");
                            assert_eq!(value, state.1, "_count is the +Inf bucket: {line}");
                        }
                    }
                }
                None => {
                    let kind = declared
                        .get(name)
                        .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
                    assert_ne!(kind, "histogram", "{line}");
                }
            }
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate {line}"
            );
        }
    }
    for (family, (_, _, inf, sum)) in &histograms {
        assert!(*inf && *sum, "{family} lacks its +Inf bucket or _sum");
        assert!(
            samples.contains_key(&format!("{family}_count")),
            "{family}_count"
        );
    }
    assert!(!samples.is_empty());
    samples
}
