//! The relay's log as an operator reads it: JSON lines that parse, one end
//! line per pair with its reason, journald priorities, and warnings that a
//! flood of bad input cannot multiply.

use crate::process::tempfile_path::TempPath;
use crate::process::{config_file, RelayProcess, BIN};
use jet_relay::wire::message::Method;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);
const ON_PORT_0: &str = "[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\n";

/// A relay process whose stderr lines arrive on a channel, read by a thread
/// from the start so the relay's writer never waits on a full pipe.
struct LoggingRelay {
    relay: RelayProcess,
    lines: Receiver<String>,
    _file: TempPath,
}

impl LoggingRelay {
    fn start(config: &str, level: &str, env: &[(&str, &str)]) -> LoggingRelay {
        let file = config_file(&format!("{config}\n{ON_PORT_0}"));
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&file.0)
            .env("JET_RELAY_LOG", level)
            .env_remove("JOURNAL_STREAM")
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut relay = RelayProcess::launch(command);
        let stderr = relay.child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        LoggingRelay {
            relay,
            lines,
            _file: file,
        }
    }

    /// Waits for the first line (after those already read) that satisfies `wanted`.
    #[track_caller]
    fn wait_line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line {what} within {WAIT:?}: {e}"),
            }
        }
    }

    /// Stops the relay with SIGTERM (which flushes the log) and returns every
    /// line it wrote after those already read.
    fn stop(mut self) -> Vec<String> {
        self.relay.signal("TERM");
        let (status, _) = self.relay.wait_exit(WAIT);
        assert!(status.success(), "{status:?}");
        // The process is gone: its stderr ends, and so does the channel.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            rest.push(line);
        }
        rest
    }
}

/// An accepted and connected pair of raw TCP peers on a fresh association.
fn tcp_pair(url: &str) -> (Uuid, TcpStream, TcpStream) {
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let (server, _) = crate::support::open_tcp_candidate(url, Method::Accept, a, c).unwrap();
    let (client, _) = crate::support::open_tcp_candidate(url, Method::Connect, a, c).unwrap();
    for sock in [&server, &client] {
        sock.set_read_timeout(Some(WAIT)).unwrap();
    }
    (a, server, client)
}

/// Relays `up` bytes client to server and `down` back, then both close.
fn relay_and_close(url: &str, up: usize, down: usize) -> Uuid {
    let (a, mut server, mut client) = tcp_pair(url);
    client.write_all(&vec![b'u'; up]).unwrap();
    let mut got = vec![0; up];
    server.read_exact(&mut got).unwrap();
    server.write_all(&vec![b'd'; down]).unwrap();
    let mut got = vec![0; down];
    client.read_exact(&mut got).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.read(&mut [0; 1]).unwrap(), 0, "half-close relayed");
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.read(&mut [0; 1]).unwrap(), 0);
    a
}

#[test]
fn json_lines_parse_and_a_pair_end_carries_both_peers_bytes_and_the_reason() {
    let relay = LoggingRelay::start("log_format = \"json\"", "info", &[]);
    let a = relay_and_close(&relay.relay.url, 5, 3);
    let end = relay.wait_line("pair closed", |l| l.contains("pair closed"));
    let v: serde_json::Value = serde_json::from_str(&end).expect("a JSON object");
    assert_eq!(v["message"], "pair closed");
    assert_eq!(v["level"], "info");
    let time = v["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{time}"
    );
    assert_eq!(v["association"], a.to_string());
    assert!(v["conn"].as_u64().is_some() && v["accept_conn"].as_u64().is_some());
    assert_ne!(v["conn"], v["accept_conn"]);
    assert_eq!(v["accept_transport"], "tcp");
    assert_eq!(v["connect_transport"], "tcp");
    for peer in ["accept_peer", "connect_peer"] {
        let addr = v[peer].as_str().unwrap();
        assert!(addr.starts_with("127.0.0.1:"), "{peer}: {addr}");
    }
    assert_eq!(v["bytes_connect_to_accept"], 5);
    assert_eq!(v["bytes_accept_to_connect"], 3);
    assert!(v["seconds"].as_f64().is_some_and(|s| s >= 0.0));
    assert_eq!(v["reason"], "peer_eof");
    assert_eq!(
        v["closed_by"], "connect",
        "the client stopped sending first"
    );
    let rest = relay.stop();
    for line in &rest {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["time"].is_string() && parsed["message"].is_string());
    }
    let again = rest.iter().filter(|l| l.contains("pair closed")).count();
    assert_eq!(again, 0, "the end is logged once: {rest:#?}");
}

#[test]
fn an_idle_cut_is_logged_once_with_its_reason_and_named_by_the_idle_line() {
    let relay = LoggingRelay::start("idle_timeout = 0.3", "info", &[]);
    let (a, mut server, mut client) = tcp_pair(&relay.relay.url);
    client.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    server.read_exact(&mut got).unwrap();
    let idle = relay.wait_line("naming the idle pairs", |l| l.contains("idle for"));
    assert!(idle.contains(&format!("pairs={a}/")), "{idle}");
    let end = relay.wait_line("pair closed", |l| l.contains("pair closed"));
    for field in [
        format!("association={a}"),
        "reason=idle_timeout".into(),
        "closed_by=relay".into(),
        "bytes_connect_to_accept=4".into(),
        "bytes_accept_to_connect=0".into(),
        "accept_transport=tcp".into(),
        "connect_transport=tcp".into(),
        "accept_peer=127.0.0.1:".into(),
        "connect_peer=127.0.0.1:".into(),
        "seconds=".into(),
    ] {
        assert!(end.contains(&field), "{field} missing: {end}");
    }
    // The peers see the cut, not a clean end.
    for sock in [&mut server, &mut client] {
        assert!(
            matches!(sock.read(&mut [0; 1]), Err(_) | Ok(0)),
            "the cut reaches the peer"
        );
    }
    let rest = relay.stop();
    let again = rest.iter().filter(|l| l.contains("pair closed")).count();
    assert_eq!(again, 0, "the end is logged once: {rest:#?}");
}

#[test]
fn under_journald_warnings_start_with_their_priority() {
    let relay = LoggingRelay::start("", "info", &[("JOURNAL_STREAM", "8:12345")]);
    let started = relay.wait_line("started", |l| l.contains("started"));
    assert!(started.starts_with("<6>"), "{started}");
    // A connect to an association nobody accepted on: refused with a warning.
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let refused = crate::support::open_tcp_candidate(&relay.relay.url, Method::Connect, a, c);
    assert!(refused.is_err(), "nothing to pair with");
    let warning = relay.wait_line("rejected", |l| l.contains("rejected 404"));
    assert!(warning.starts_with("<4>"), "{warning}");
    assert!(warning.contains(" WARN "), "{warning}");
    relay.stop();
}

/// How many malformed JET packets the flood sends.
const FLOOD: usize = 5_000;

#[test]
fn a_flood_of_malformed_packets_writes_a_bounded_number_of_warnings() {
    let relay = LoggingRelay::start("", "warn", &[]);
    let addr = relay.relay.addr(0);
    // A JET header announcing a packet smaller than its own header.
    let bad = *b"JET\0\x00\x03\x00\x00";
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for _ in 0..FLOOD / 4 {
                    let mut sock = TcpStream::connect(&addr).unwrap();
                    sock.set_read_timeout(Some(WAIT)).unwrap();
                    sock.write_all(&bad).unwrap();
                    // The relay closes once it has judged (and logged) the
                    // packet: the next one goes after that.
                    let mut rest = Vec::new();
                    let _ = sock.read_to_end(&mut rest);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let lines = relay.stop();
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings.len() < 50,
        "{} warning lines for {FLOOD} bad packets, e.g. {:?}",
        warnings.len(),
        warnings.last()
    );
    // The flood may span more than one interval: add every count up.
    let counted: u64 = warnings
        .iter()
        .filter(|l| l.contains("malformed packet"))
        .filter_map(|l| {
            let (head, _) = l.rsplit_once(" more like this in the last")?;
            head.rsplit_once('(')?.1.parse::<u64>().ok()
        })
        .sum();
    assert!(
        counted >= FLOOD as u64 / 2,
        "the lines left out are counted: {counted} for {FLOOD}: {warnings:#?}"
    );
}

#[test]
fn a_delete_and_the_drain_timeout_name_themselves_on_the_pairs_they_cut() {
    let key = "a-test-key-long-enough-for-the-relay";
    let config = format!("api_key = \"{key}\"\naccept_requires_api = false\ndrain_timeout = 0");
    let relay = LoggingRelay::start(&config, "info", &[]);
    let (deleted, _s1, _c1) = tcp_pair(&relay.relay.url);
    let (drained, mut server, mut client) = tcp_pair(&relay.relay.url);
    client.write_all(b"x").unwrap();
    server.read_exact(&mut [0; 1]).unwrap();
    let mut sock = TcpStream::connect(relay.relay.addr(0)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        sock,
        "DELETE /jet/association/{deleted} HTTP/1.1\r\nHost: relay.test\r\n\
         Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    assert_eq!(crate::support::read_http(&mut sock).status, 200);
    let end = relay.wait_line("pair closed", |l| l.contains("pair closed"));
    assert!(end.contains(&format!("association={deleted}")), "{end}");
    assert!(end.contains("reason=deleted"), "{end}");
    let rest = relay.stop();
    let ends: Vec<&String> = rest.iter().filter(|l| l.contains("pair closed")).collect();
    assert_eq!(
        ends.len(),
        1,
        "one end line for the drained pair: {rest:#?}"
    );
    assert!(
        ends[0].contains(&format!("association={drained}")),
        "{}",
        ends[0]
    );
    assert!(ends[0].contains("reason=drain_timeout"), "{}", ends[0]);
    assert!(ends[0].contains("bytes_connect_to_accept=1"), "{}", ends[0]);
}
