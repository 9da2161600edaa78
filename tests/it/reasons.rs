//! Errors that say why: the reason of every refusal a peer can get, printed
//! over JET and WebSocket; `connect --listen` to a relay it cannot reach; a
//! `--forward` service that is down resetting the relayed stream.

use crate::support::{TestRelay, WAIT};
use jet_relay::relay::config::{ApiKey, Config};
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use uuid::Uuid;

use crate::process::BIN;

/// How a peer command ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` (stdin empty) and waits, bounded by [`WAIT`],
/// until it has closed its output; a command still running then is killed
/// and the test fails.
#[track_caller]
fn run(args: &[&str]) -> Ran {
    let mut child = Command::new(BIN)
        .args(args)
        .env("JET_RELAY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (tx, rx) = mpsc::channel();
    for (index, mut pipe) in [
        Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("piped stderr")),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send((index, text));
        });
    }
    let mut outputs = [String::new(), String::new()];
    for _ in 0..2 {
        match rx.recv_timeout(WAIT) {
            Ok((index, text)) => outputs[index] = text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} still runs after {WAIT:?}; so far {outputs:?}");
            }
        }
    }
    let status = child.wait().expect("the child is waitable");
    let [stdout, stderr] = outputs;
    Ran {
        code: status.code(),
        stdout,
        stderr,
    }
}

use crate::support::closed_port;

/// The two schemes a relay's TCP listener serves.
const SCHEMES: [&str; 2] = ["tcp", "ws"];

fn url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

fn create(relay: &TestRelay, a: Uuid) {
    assert!(relay.table().create(a), "association {a} created");
}

/// Runs `method` (accept or connect) on `a c` over `scheme` and checks that
/// it exits 1 with exactly one line, the refusal with `expected` (status
/// and reason).
#[track_caller]
fn check_refusal(relay: &TestRelay, scheme: &str, method: &str, a: Uuid, c: Uuid, expected: &str) {
    let (a, c) = (a.to_string(), c.to_string());
    let ran = run(&[method, &url(scheme, relay.addr), &a, &c]);
    assert_eq!(ran.code, Some(1), "{scheme} {method}: {ran:?}");
    let line = format!("jet-relay: the relay refused {method} {a} {c}: {expected}");
    assert_eq!(ran.stderr.trim_end(), line, "{scheme} {method}");
}

#[test]
fn an_unknown_association_is_named_with_how_associations_are_made() {
    let relay = TestRelay::start();
    for (scheme, hint) in [
        ("tcp", "never created, or expired or deleted"),
        (
            "ws",
            "over WebSocket only the REST API creates associations",
        ),
    ] {
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        check_refusal(
            &relay,
            scheme,
            "connect",
            a,
            c,
            &format!("404 unknown association ({hint})"),
        );
    }
    // A WebSocket accept cannot create its association either.
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    check_refusal(
        &relay,
        "ws",
        "accept",
        a,
        c,
        "404 unknown association (over WebSocket only the REST API creates associations)",
    );
}

#[test]
fn an_accept_on_an_association_not_created_through_the_api_says_so() {
    let relay = TestRelay::with(|config| {
        config.api_key = Some(ApiKey::new("reasons-test-api-key-0123").expect("a valid key"));
    });
    for scheme in SCHEMES {
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        check_refusal(
            &relay,
            scheme,
            "accept",
            a,
            c,
            "404 unknown association (on this relay only the REST API creates associations)",
        );
    }
}

#[test]
fn a_candidate_taken_by_another_accept_is_a_conflict_with_its_reason() {
    let relay = TestRelay::start();
    for scheme in SCHEMES {
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        create(&relay, a);
        let _parked = relay.accept(a, c);
        check_refusal(
            &relay,
            scheme,
            "accept",
            a,
            c,
            "409 candidate already has a parked accept",
        );
        let _paired = relay.connect(a, c);
        check_refusal(
            &relay,
            scheme,
            "connect",
            a,
            c,
            "409 candidate already paired",
        );
    }
}

#[test]
fn a_full_table_is_unavailable_with_its_reason() {
    let relay = TestRelay::with(|config: &mut Config| config.max_associations = 1);
    create(&relay, Uuid::new_v4());
    // Only a JET accept creates associations: over WebSocket the same accept
    // is an unknown association (above), never a full table.
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    check_refusal(&relay, "tcp", "accept", a, c, "503 too many associations");
}

#[test]
fn a_missing_association_token_is_refused_with_its_reason() {
    let relay = TestRelay::with(|config| {
        config.allow_unsigned_tokens = true;
        config.require_jet_tokens = true;
    });
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    create(&relay, a);
    check_refusal(
        &relay,
        "tcp",
        "accept",
        a,
        c,
        "401 an association token is required",
    );
    check_refusal(
        &relay,
        "ws",
        "accept",
        a,
        c,
        "401 an association token is required (Authorization: Bearer, or ?token=)",
    );
}

#[test]
fn test_prints_the_reason_a_candidate_is_not_usable() {
    let relay = TestRelay::start();
    for scheme in SCHEMES {
        let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let ran = run(&["test", &url(scheme, relay.addr), &a, &c]);
        assert_eq!(ran.code, Some(1), "{ran:?}");
        assert!(
            ran.stderr.contains(&format!(
                "the relay refused test {a} {c}: 404 unknown association ("
            )),
            "{scheme}: {ran:?}"
        );
    }
}

#[test]
fn connect_listen_to_an_unreachable_relay_fails_before_listening() {
    let relay = format!("tcp://127.0.0.1:{}", closed_port());
    let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    for method in ["connect", "accept"] {
        let ran = run(&[method, &relay, &a, &c, "--listen", "127.0.0.1:0"]);
        assert_eq!(ran.code, Some(1), "{method}: {ran:?}");
        assert!(!ran.stdout.contains("listening"), "{method}: {ran:?}");
        assert!(
            ran.stderr.starts_with(&format!(
                "jet-relay: {method}: cannot reach the relay {relay}, so not listening on 127.0.0.1:0: connecting to"
            )),
            "{method}: {ran:?}"
        );
    }
}

#[test]
fn a_dead_forward_target_resets_the_relayed_stream_and_the_connect_side_fails() {
    let relay = TestRelay::start();
    for scheme in SCHEMES {
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        create(&relay, a);
        let (a, c) = (a.to_string(), c.to_string());
        let relay_url = url(scheme, relay.addr);
        let target = format!("127.0.0.1:{}", closed_port());
        let accept = run(&["accept", &relay_url, &a, &c, "--forward", &target]);
        assert_eq!(accept.code, Some(1), "{scheme}: {accept:?}");
        assert!(
            accept.stderr.contains(&format!(
                "jet-relay: accept: forward to {target} failed: Connection refused"
            )) && accept.stderr.contains("; reset the relayed stream"),
            "{scheme}: {accept:?}"
        );
        // The relay notices the reset parked accept (its watch, or the
        // connect's own check just before pairing): the connect is refused,
        // never handed a clean, empty stream.
        let connect = run(&["connect", &relay_url, &a, &c]);
        assert_eq!(connect.code, Some(1), "{scheme}: {connect:?}");
        assert!(
            connect.stderr.contains(&format!(
                "the relay refused connect {a} {c}: 404 no parked accept on this candidate"
            )),
            "{scheme}: {connect:?}"
        );
        assert!(connect.stdout.is_empty(), "{scheme}: {connect:?}");
    }
}

#[test]
fn a_negotiation_prints_why_each_relay_candidate_was_refused() {
    let relay = TestRelay::with(|config| {
        config.api_key = Some(ApiKey::new("reasons-test-api-key-0123").expect("a valid key"));
    });
    let dir = std::env::temp_dir().join(format!("jet-relay-reasons-{}", Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    let (offer, answer) = (dir.join("offer"), dir.join("answer"));
    let a = Uuid::new_v4();
    std::fs::write(
        &offer,
        format!("{{\"id\": \"{a}\", \"role\": \"client\", \"version\": 2}}\n"),
    )
    .unwrap();
    std::fs::write(&answer, "").unwrap();
    let relay_url = url("tcp", relay.addr);
    let ran = run(&[
        "answer",
        "--signal-in",
        &offer.to_string_lossy(),
        "--signal-out",
        &answer.to_string_lossy(),
        "--relay",
        &relay_url,
        "--no-host-candidates",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .contains(&format!("accept failed: the relay refused accept {a} "))
            && ran.stderr.contains(
                ": 404 unknown association (on this relay only the REST API creates associations)"
            ),
        "{ran:?}"
    );
}
