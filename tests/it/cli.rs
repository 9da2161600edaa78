//! The `jet-relay` binary: arguments, configuration errors, the listening line,
//! signals, and the minimal peer mode.

use crate::support::{pattern, WAIT};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

use crate::process::{config_file, RelayProcess, BIN};

const ON_PORT_0: &str = "[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\n";

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--config PATH") && text.contains("--listen URL"));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("jet-relay {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn configuration_errors_name_the_key_and_exit_non_zero() {
    for (text, key) in [
        ("handshake_timeot = 1\n", "handshake_timeot"),
        ("idle_timeout = \"never\"\n", "idle_timeout"),
        ("[[listeners]]\nurl = \"tcp://127.0.0.1\"\n", "url"),
    ] {
        let file = config_file(text);
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file.0)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "for {text:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(key), "{err:?} should name {key}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["--listen", "udp://x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--listen"));
}

#[test]
fn prints_the_bound_address_and_stops_on_sigterm_within_two_seconds() {
    let (mut relay, _file) = RelayProcess::start(ON_PORT_0);
    assert!(relay.url.starts_with("tcp://127.0.0.1:"));
    assert!(!relay.url.ends_with(":0"), "the real port is printed");
    // A parked connection and an idle one must not delay the exit, and both
    // are closed by it.
    let addr = relay.url.trim_start_matches("tcp://").to_owned();
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    let (mut parked, _) = crate::support::open_tcp_candidate(
        &relay.url,
        jet_relay::wire::message::Method::Accept,
        Uuid::new_v4(),
        Uuid::new_v4(),
    )
    .unwrap();
    relay.signal("TERM");
    let (status, took) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    for sock in [&mut idle, &mut parked] {
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0; 8];
        assert!(
            matches!(sock.read(&mut buf), Ok(0) | Err(_)),
            "closed by the exit"
        );
    }
}

#[test]
fn stops_on_sigint_with_status_zero() {
    let (mut relay, _file) = RelayProcess::start(ON_PORT_0);
    relay.signal("INT");
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
}

#[test]
fn peer_mode_bridges_stdin_and_stdout_through_the_relay() {
    let (relay, _file) = RelayProcess::start(ON_PORT_0);
    let a = Uuid::new_v4().to_string();
    let c = Uuid::new_v4().to_string();
    let peer = |method: &str| {
        Command::new(BIN)
            .args([method, &relay.url, &a, &c])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut server = peer("accept");
    // The accept peer reports its 200 on stderr: from then on it is parked.
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("jet-relay: accept {a} {c}: 200"));
    let mut client = peer("connect");
    let to_server = pattern(7, 1 << 20);
    let to_client = pattern(8, 1 << 19);
    let mut server_in = server.stdin.take().unwrap();
    let mut client_in = client.stdin.take().unwrap();
    let (a_data, b_data) = (to_server.clone(), to_client.clone());
    let w1 = std::thread::spawn(move || client_in.write_all(&a_data).unwrap());
    let w2 = std::thread::spawn(move || server_in.write_all(&b_data).unwrap());
    let mut got_server = Vec::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut got_server)
        .unwrap();
    let mut got_client = Vec::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut got_client)
        .unwrap();
    w1.join().unwrap();
    w2.join().unwrap();
    assert_eq!(got_server.len(), to_server.len());
    assert!(got_server == to_server);
    assert!(got_client == to_client);
    assert!(server.wait().unwrap().success());
    assert!(client.wait().unwrap().success());
}

#[test]
fn a_full_file_table_neither_crashes_nor_wedges_the_relay() {
    let (mut relay, _file) = RelayProcess::start_with_fd_limit(ON_PORT_0, 32);
    let addr = relay.url.trim_start_matches("tcp://").to_owned();
    // Far more connections than the relay has descriptors: the kernel still
    // completes them (backlog), the relay cannot accept them all.
    let mut held = Vec::new();
    for _ in 0..60 {
        match std::net::TcpStream::connect(&addr) {
            Ok(sock) => held.push(sock),
            Err(_) => break,
        }
    }
    assert!(held.len() > 32, "only {} connections opened", held.len());
    // Wait until the relay reports the exhaustion (its stderr carries only
    // warnings at this level), then let them go: it must come back and serve
    // a full pair.
    let mut stderr = BufReader::new(relay.child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("accept failed: Too many open files"),
        "{line:?}"
    );
    drop(held);
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    let open = |method: jet_relay::wire::message::Method| {
        crate::support::open_tcp_candidate(&relay.url, method, a, c)
    };
    let (mut server, _) =
        open(jet_relay::wire::message::Method::Accept).expect("accept after exhaustion");
    let (mut client, _) =
        open(jet_relay::wire::message::Method::Connect).expect("connect after exhaustion");
    client.write_all(b"recovered").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0; 9];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"recovered");
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay is still running"
    );
    // SIGTERM drains: with the pair closed there is nothing left to wait for.
    drop((server, client));
    relay.signal("TERM");
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success());
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    // Reported once per interval, not once per retry (the test runs well
    // within a few intervals).
    assert!(err.matches("accept failed").count() <= 2, "{err}");
}

#[test]
fn peer_mode_sends_everything_even_when_the_other_side_sends_nothing() {
    let (relay, _file) = RelayProcess::start(ON_PORT_0);
    let a = Uuid::new_v4().to_string();
    let c = Uuid::new_v4().to_string();
    let peer = |method: &str, stdin: Stdio| {
        Command::new(BIN)
            .args([method, &relay.url, &a, &c])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The accept side has nothing to say: its stdin is empty.
    let mut server = peer("accept", Stdio::null());
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.ends_with(": 200\n"), "{line:?}");
    let mut client = peer("connect", Stdio::piped());
    let data = pattern(11, 4 << 20);
    let mut client_in = client.stdin.take().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || client_in.write_all(&sent).unwrap());
    let mut got = Vec::new();
    server.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    assert!(client.wait().unwrap().success());
    assert!(server.wait().unwrap().success());
}

/// Runs the binary with `args`, no stdin.
fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn subcommand_help_prints_that_subcommands_usage_and_exits_zero() {
    for args in [
        &["accept", "--help"][..],
        &["accept", "-h"],
        &["help", "accept"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with("Usage: jet-relay accept URL ASSOCIATION CANDIDATE"),
            "{args:?}: {text}"
        );
        assert!(text.contains("--forward HOST:PORT"), "{text}");
        assert!(!text.contains("--signal-in"), "only accept's usage: {text}");
    }
    let out = run(&["help", "connect"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("Usage: jet-relay connect URL ASSOCIATION CANDIDATE")
            && text.contains("--association ID"),
        "{text}"
    );
    // The peer's --listen is a local address, and the usage says so.
    assert!(text.contains("--listen ADDR") && text.contains("LOCAL address"));
}

#[test]
fn version_has_a_short_form() {
    for flag in ["--version", "-V"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("jet-relay {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn usage_errors_exit_two_with_what_is_wrong_and_where_to_look() {
    for (args, says, hint) in [
        (
            &["accept", "--frobnicate"][..],
            "accept: unknown option --frobnicate",
            "see 'jet-relay accept --help'",
        ),
        (
            &["--frobnicate"],
            "unknown option --frobnicate",
            "see 'jet-relay --help'",
        ),
        (
            &["frobnicate"],
            "unknown subcommand",
            "see 'jet-relay --help'",
        ),
        (
            &["test", "tcp://127.0.0.1:1", "x", "y"],
            "association \"x\" is not a UUID",
            "see 'jet-relay test --help'",
        ),
        (
            &["offer", "--signal-in", "-"],
            "--signal-out PATH",
            "see 'jet-relay offer --help'",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        let mut lines = err.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            first.starts_with("jet-relay: ") && first.contains(says),
            "{args:?}: {err}"
        );
        assert!(!err.contains("configuration:"), "{args:?}: {err}");
        assert_eq!(lines.next(), Some(hint), "{args:?}: {err}");
        assert_eq!(lines.next(), None, "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn options_take_their_value_after_an_equals_sign() {
    let file = config_file("handshake_timeout = 5\n");
    let config = format!("--config={}", file.0.display());
    let mut command = Command::new(BIN);
    command
        .args([config.as_str(), "--listen=tcp://127.0.0.1:0"])
        .stderr(Stdio::null());
    let mut relay = RelayProcess::launch(command);
    assert!(relay.url.starts_with("tcp://127.0.0.1:"), "{}", relay.url);
    relay.signal("TERM");
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_runtime_failure_exits_one_without_a_usage_hint() {
    let (relay, _file) = RelayProcess::start(ON_PORT_0);
    // Nobody accepted on this association: the relay refuses the connect.
    let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let out = run(&["connect", &relay.url, &a, &c]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "jet-relay: the relay refused connect {a} {c}: 404 unknown association"
        )),
        "{err}"
    );
    assert!(!err.contains("see '"), "{err}");
}
