//! The peer side: candidate URLs, accept/connect/test against an in-process
//! relay, --forward and --listen, interop details, and the full negotiation
//! between two peer processes joined by FIFOs.

use crate::support::{pattern, read_n, read_to_end, TestRelay, WAIT};
use jet_relay::client::{CandidateUrl, Scheme};
use jet_relay::negotiate::{Answer, Candidate, Complete, Offer, Role};
use jet_relay::table::{AssociationInfo, CandidateState};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_jet-relay");

/// A peer process with piped stdio; its stderr lines arrive on a channel so a
/// test can wait for one with a timeout. Killed on drop if still running.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        Peer::spawn_with_env(args, &[])
    }

    fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Peer {
        let mut child = Command::new(BIN)
            .args(args)
            .env("JET_RELAY_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Peer {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line starting with `prefix` and returns it.
    #[track_caller]
    fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no stderr line starting with {prefix:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Every stderr line until the process closes it.
    fn rest_of_stderr(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.seen);
        while let Ok(line) = self.stderr.recv_timeout(WAIT) {
            lines.push(line);
        }
        lines
    }

    /// The first stdout line (`listening tcp://...`).
    fn stdout_line(&mut self) -> String {
        let mut out = self.stdout.take().expect("stdout not taken yet");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte, so nothing after the line is swallowed.
        while out.read(&mut byte).expect("stdout readable") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        self.stdout = Some(out);
        String::from_utf8(line).expect("a text line")
    }

    /// Writes `data` to stdin on a thread and closes stdin after it.
    fn feed(&mut self, data: Vec<u8>) -> JoinHandle<()> {
        let mut stdin = self.stdin.take().expect("stdin not taken yet");
        thread::spawn(move || {
            stdin.write_all(&data).expect("the peer reads its stdin");
        })
    }

    fn read_stdout_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.stdout
            .take()
            .expect("stdout not taken yet")
            .read_to_end(&mut out)
            .expect("stdout readable");
        out
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status;
            }
            assert!(started.elapsed() < WAIT, "the peer did not exit in time");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many sockets the process holds open.
    fn sockets(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (bounded) until the process holds exactly `count` sockets.
    #[track_caller]
    fn assert_sockets(&self, count: usize) {
        let started = Instant::now();
        while self.sockets() != count {
            assert!(
                started.elapsed() < WAIT,
                "the peer holds {} sockets, expected {count}",
                self.sockets()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory with the two FIFOs of a negotiation, removed on drop.
struct Fifos {
    dir: PathBuf,
}

impl Fifos {
    fn new() -> Fifos {
        let dir = std::env::temp_dir().join(format!("jet-relay-peer-{}", Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        for name in ["to-server", "to-client"] {
            let status = Command::new("mkfifo").arg(dir.join(name)).status().unwrap();
            assert!(status.success(), "mkfifo works");
        }
        Fifos { dir }
    }

    fn to_server(&self) -> String {
        self.dir.join("to-server").to_string_lossy().into_owned()
    }

    fn to_client(&self) -> String {
        self.dir.join("to-client").to_string_lossy().into_owned()
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An echo service for one connection: echoes until EOF, then half-closes.
fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sock.write_all(&buf[..n]).unwrap(),
            }
        }
        let _ = sock.shutdown(std::net::Shutdown::Write);
    });
    (addr, handle)
}

fn url_of(relay: &TestRelay) -> String {
    format!("tcp://{}", relay.addr)
}

/// Both peers send `a_len` and `b_len` bytes through their stdio, close stdin,
/// and each receives exactly what the other sent; both exit 0.
#[track_caller]
fn exchange_through_stdio(a: &mut Peer, b: &mut Peer, a_len: usize, b_len: usize) {
    let from_a = pattern(11, a_len);
    let from_b = pattern(12, b_len);
    let wa = a.feed(from_a.clone());
    let wb = b.feed(from_b.clone());
    let got_b = b.read_stdout_to_end();
    let got_a = a.read_stdout_to_end();
    wa.join().unwrap();
    wb.join().unwrap();
    assert_eq!(got_b.len(), from_a.len());
    assert!(got_b == from_a, "b received what a sent");
    assert_eq!(got_a.len(), from_b.len());
    assert!(got_a == from_b, "a received what b sent");
    assert!(a.wait().success());
    assert!(b.wait().success());
}

#[test]
fn candidate_urls_parse_per_the_draft() {
    // The whole table is the unit test in src/client.rs; this checks the
    // public face the binary relies on.
    let url = CandidateUrl::parse("wss://relay.example?ctype=relay").unwrap();
    assert_eq!((url.scheme, url.port), (Scheme::Wss, 443));
    assert_eq!(url.ctype(), Some("relay"));
    assert_eq!(url.to_string(), "wss://relay.example?ctype=relay");
    assert!(CandidateUrl::parse("tls://relay.example").is_err());
    let out = Command::new(BIN)
        .args([
            "connect",
            "gopher://x:1",
            &Uuid::new_v4().to_string(),
            &Uuid::new_v4().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported scheme"));
}

#[test]
fn accept_and_connect_bridge_stdio_through_the_relay() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let url = url_of(&relay);
    let mut server = Peer::spawn(&["accept", &url, &a, &c]);
    assert_eq!(
        server.line("jet-relay: accept"),
        format!("jet-relay: accept {a} {c}: 200")
    );
    let mut client = Peer::spawn(&["connect", &url, &a, &c]);
    assert_eq!(
        client.line("jet-relay: connect"),
        format!("jet-relay: connect {a} {c}: 200")
    );
    exchange_through_stdio(&mut client, &mut server, 300_000, 200_000);
}

#[test]
fn test_exits_zero_when_usable_and_one_with_the_reason_otherwise() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let _parked = relay.accept(a, c);
    let url = url_of(&relay);
    let run = |url: &str, a: &str| {
        Command::new(BIN)
            .args(["test", url, a, &c.to_string()])
            .output()
            .unwrap()
    };
    let ok = run(&url, &a.to_string());
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let unknown = run(&url, &Uuid::new_v4().to_string());
    assert_eq!(unknown.status.code(), Some(1));
    let text = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        text.contains("not usable") && text.contains("404"),
        "{text}"
    );
    let dead = run(
        &format!("tcp://127.0.0.1:{}", closed_port()),
        &a.to_string(),
    );
    assert_eq!(dead.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("connecting to"));
    let bad = run(&url, "not-a-uuid");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn accept_v1_prints_the_association_and_instance_and_connect_v1_pairs_with_it() {
    let relay = TestRelay::start();
    let url = url_of(&relay);
    let mut server = Peer::spawn(&["accept", "--v1", &url]);
    let line = server.line("jet-relay: accept");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_end_matches(':').to_owned())
            .unwrap_or_else(|| panic!("{name} in {line:?}"))
    };
    assert_eq!(field("instance"), "test-instance");
    let association = field("association");
    assert!(Uuid::parse_str(&association).is_ok(), "{line}");
    let mut client = Peer::spawn(&["connect", "--v1", "--association", &association, &url]);
    client.line("jet-relay: connect");
    exchange_through_stdio(&mut client, &mut server, 50_000, 70_000);
}

#[test]
fn forward_connects_the_relayed_stream_to_a_local_service() {
    let relay = TestRelay::start();
    let (echo, echo_done) = echo_server();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut server = Peer::spawn(&[
        "accept",
        &url_of(&relay),
        &a.to_string(),
        &c.to_string(),
        "--forward",
        &echo.to_string(),
    ]);
    server.line("jet-relay: accept");
    let mut sock = relay.connect(a, c);
    let data = pattern(3, 400_000);
    let writer = {
        let mut sock = sock.try_clone().unwrap();
        let data = data.clone();
        thread::spawn(move || {
            sock.write_all(&data).unwrap();
            sock.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let echoed = read_to_end(&mut sock);
    writer.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(
        echoed == data,
        "the service's answer comes back byte for byte"
    );
    echo_done.join().unwrap();
    assert!(server.wait().success());
}

#[test]
fn listen_relays_one_local_connection() {
    let relay = TestRelay::start();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut parked = relay.accept(a, c);
    let mut client = Peer::spawn(&[
        "connect",
        &url_of(&relay),
        &a.to_string(),
        &c.to_string(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let line = client.stdout_line();
    let addr = line
        .strip_prefix("listening tcp://")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let mut local = TcpStream::connect(addr).unwrap();
    local.set_read_timeout(Some(WAIT)).unwrap();
    client.line("jet-relay: connect");
    local.write_all(b"ping from the local application").unwrap();
    assert_eq!(read_n(&mut parked, 31), b"ping from the local application");
    parked.write_all(b"pong from the server peer").unwrap();
    parked.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut local), b"pong from the server peer");
    local.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut parked), b"");
    assert!(client.wait().success());
}

#[test]
fn requests_use_mask_0x73_in_one_write_and_the_old_relays_status_line_is_accepted() {
    // A stand-in for a deployed relay: it checks the request and answers like
    // the old reference relay, with data right behind the response.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let relay = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = vec![0u8; 4096];
        // One write on loopback arrives in one read.
        let n = sock.read(&mut buf).unwrap();
        let packet = jet_relay::packet::read_packet(&buf[..n]).unwrap();
        assert_eq!(&buf[..4], b"JET\0");
        assert_eq!(
            u16::from_be_bytes([buf[4], buf[5]]) as usize,
            n,
            "the whole packet in one read"
        );
        assert_eq!((buf[6], buf[7]), (0, 0x73));
        let head = String::from_utf8(packet.payload).unwrap();
        assert!(
            head.starts_with(&format!("GET /jet/connect/{a}/{c} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(head.contains("Jet-Version: 2\r\n"), "{head}");
        let mut reply =
            jet_relay::packet::encode(b"HTTP/1.1 200 OK 200\r\nJet-Version: 2\r\n\r\n", 0x73);
        reply.extend_from_slice(b"relayed right after the answer");
        sock.write_all(&reply).unwrap();
        sock.shutdown(std::net::Shutdown::Write).unwrap();
        read_to_end(&mut sock)
    });
    let mut client = Peer::spawn(&[
        "connect",
        &format!("tcp://{addr}"),
        &a.to_string(),
        &c.to_string(),
    ]);
    client.line("jet-relay: connect");
    let writer = client.feed(b"client bytes".to_vec());
    assert_eq!(
        client.read_stdout_to_end(),
        b"relayed right after the answer"
    );
    writer.join().unwrap();
    assert_eq!(relay.join().unwrap(), b"client bytes");
    assert!(client.wait().success());
}

/// Starts the server peer (`answer`) and the client peer (`offer`) on FIFOs.
fn negotiate(fifos: &Fifos, association: Uuid, server_args: &[&str]) -> (Peer, Peer) {
    let (to_server, to_client) = (fifos.to_server(), fifos.to_client());
    let mut args = vec![
        "answer",
        "--signal-in",
        &to_server,
        "--signal-out",
        &to_client,
    ];
    args.extend_from_slice(server_args);
    let server = Peer::spawn(&args);
    let association = association.to_string();
    let client = Peer::spawn(&[
        "offer",
        "--signal-in",
        &to_client,
        "--signal-out",
        &to_server,
        "--association",
        &association,
    ]);
    (server, client)
}

/// `jet-relay: selected candidate ID URL` -> (ID, URL).
fn selected(peer: &mut Peer) -> (Uuid, String) {
    let line = peer.line("jet-relay: selected candidate");
    let mut words = line.split_whitespace().skip(3);
    let id = Uuid::parse_str(words.next().unwrap()).unwrap();
    (id, words.next().unwrap().to_owned())
}

fn wait_association(
    relay: &TestRelay,
    a: Uuid,
    done: impl Fn(&AssociationInfo) -> bool,
) -> AssociationInfo {
    let info = relay
        .table()
        .wait_for(a, WAIT, |info| info.is_some_and(&done))
        .expect("the association exists");
    assert!(done(&info), "the relay's view: {info:?}");
    info
}

#[test]
fn negotiation_selects_the_host_candidate_when_reachable_and_closes_the_rest() {
    let relay = TestRelay::start();
    let fifos = Fifos::new();
    let a = Uuid::new_v4();
    let url = url_of(&relay);
    let (mut server, mut client) = negotiate(
        &fifos,
        a,
        &[
            "--relay",
            &url,
            "--relay",
            &url,
            "--host-listen",
            "127.0.0.1:0",
        ],
    );
    let (id, chosen) = selected(&mut client);
    assert!(
        chosen.starts_with("tcp://127.0.0.1:") && chosen.ends_with("?ctype=host"),
        "{chosen}"
    );
    assert_eq!(selected(&mut server), (id, chosen));
    // Each peer keeps only the selected connection...
    client.assert_sockets(1);
    server.assert_sockets(1);
    // ...and both relay candidates, tested by the client, end closed on the relay.
    let info = wait_association(&relay, a, |info| {
        info.candidates.len() == 2
            && info
                .candidates
                .iter()
                .all(|c| c.state == CandidateState::Closed)
    });
    assert_eq!(info.selected, None, "no byte went through the relay");
    exchange_through_stdio(&mut client, &mut server, 500_000, 300_000);
}

#[test]
fn negotiation_selects_a_relay_candidate_when_host_candidates_are_off() {
    let relay = TestRelay::start();
    let fifos = Fifos::new();
    let a = Uuid::new_v4();
    let url = url_of(&relay);
    let (mut server, mut client) = negotiate(
        &fifos,
        a,
        &["--relay", &url, "--relay", &url, "--no-host-candidates"],
    );
    let (id, chosen) = selected(&mut client);
    assert_eq!(chosen, format!("{url}?ctype=relay"));
    assert_eq!(selected(&mut server), (id, chosen));
    client.assert_sockets(1);
    server.assert_sockets(1);
    // The loser is closed on the relay while the selected one still stands.
    let info = wait_association(&relay, a, |info| {
        info.candidates.len() == 2
            && info
                .candidates
                .iter()
                .all(|c| (c.id == id) != (c.state == CandidateState::Closed))
    });
    assert_eq!(
        info.candidates.iter().find(|c| c.id == id).unwrap().state,
        CandidateState::Paired
    );
    exchange_through_stdio(&mut client, &mut server, 400_000, 600_000);
    let info = wait_association(&relay, a, |info| info.selected == Some(id));
    let winner = info.candidates.iter().find(|c| c.id == id).unwrap();
    assert_eq!(
        (winner.connect_to_accept, winner.accept_to_connect),
        (400_000, 600_000)
    );
}

#[test]
fn the_client_skips_unusable_candidates() {
    // The test plays the server peer: its answer lists a refused host
    // candidate, a relay candidate with no accept behind it, a WebSocket
    // candidate on a closed port, and one good relay candidate.
    let relay = TestRelay::start();
    let fifos = Fifos::new();
    let a = Uuid::new_v4();
    let good = Uuid::new_v4();
    let mut parked = relay.accept(a, good);
    let (to_server, to_client) = (fifos.to_server(), fifos.to_client());
    let mut client = Peer::spawn(&[
        "offer",
        "--signal-in",
        &to_client,
        "--signal-out",
        &to_server,
        "--association",
        &a.to_string(),
        "--transports",
        "tcp,ws",
    ]);
    let mut from_client = BufReader::new(std::fs::File::open(&to_server).unwrap());
    let mut line = String::new();
    from_client.read_line(&mut line).unwrap();
    let offer = Offer::parse(&line).unwrap();
    assert_eq!(
        (
            offer.id,
            offer.role,
            offer.version,
            offer.transports.as_deref()
        ),
        (a, Role::Client, 3, Some("tcp,ws"))
    );
    let dead = closed_port();
    let answer = Answer {
        id: a,
        role: Role::Server,
        version: 2,
        candidates: vec![
            Candidate {
                id: Uuid::new_v4(),
                url: format!("tcp://127.0.0.1:{dead}?ctype=host"),
            },
            Candidate {
                id: Uuid::new_v4(),
                url: format!("{}?ctype=relay", url_of(&relay)),
            },
            Candidate {
                id: Uuid::new_v4(),
                url: format!("ws://127.0.0.1:{dead}?ctype=relay"),
            },
            Candidate {
                id: Uuid::new_v4(),
                url: "bogus://x".into(),
            },
            // Not offered: left untested.
            Candidate {
                id: Uuid::new_v4(),
                url: format!("tls://127.0.0.1:{dead}?ctype=relay"),
            },
            Candidate {
                id: good,
                url: format!("{}?ctype=relay", url_of(&relay)),
            },
        ],
    };
    let mut to_client_file = std::fs::OpenOptions::new()
        .write(true)
        .open(&to_client)
        .unwrap();
    writeln!(
        to_client_file,
        "{}",
        serde_json::to_string(&answer).unwrap()
    )
    .unwrap();
    line.clear();
    from_client.read_line(&mut line).unwrap();
    assert_eq!(Complete::parse(&line).unwrap().candidate.id, good);
    assert_eq!(selected(&mut client).0, good);
    client.assert_sockets(1);
    let writer = client.feed(b"through the only usable candidate".to_vec());
    assert_eq!(
        read_n(&mut parked, 33),
        b"through the only usable candidate"
    );
    parked.write_all(b"ok").unwrap();
    parked.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(client.read_stdout_to_end(), b"ok");
    writer.join().unwrap();
    assert!(client.wait().success());
}

#[test]
fn the_server_leaves_out_relays_it_cannot_use_and_signals_over_stdio() {
    // The test plays the client peer over the server's stdin and stdout, which
    // then carry the data: signaling with `-` must not eat the data.
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let url = url_of(&relay);
    let dead = format!("tcp://127.0.0.1:{}", closed_port());
    let mut server = Peer::spawn(&[
        "answer",
        "--signal-in",
        "-",
        "--signal-out",
        "-",
        "--relay",
        &dead,
        "--relay",
        "wss://127.0.0.1:1",
        "--relay",
        &url,
        "--host-listen",
        "127.0.0.1:0",
    ]);
    let offer = Offer {
        id: a,
        role: Role::Client,
        version: 3,
        transports: Some("tls,tcp".into()),
    };
    let mut stdin = server.stdin.take().unwrap();
    writeln!(stdin, "{}", serde_json::to_string(&offer).unwrap()).unwrap();
    let line = server.stdout_line();
    let answer = Answer::parse(&line).unwrap();
    assert_eq!(
        (answer.id, answer.role, answer.version),
        (a, Role::Server, 3)
    );
    let urls: Vec<&str> = answer.candidates.iter().map(|c| c.url.as_str()).collect();
    assert_eq!(
        urls.len(),
        2,
        "one host and the one live tcp relay: {urls:?}"
    );
    assert!(
        urls[0].starts_with("tcp://127.0.0.1:") && urls[0].ends_with("?ctype=host"),
        "{urls:?}"
    );
    assert_eq!(urls[1], format!("{url}?ctype=relay"));
    let relay_id = answer.candidates[1].id;
    let mut sock = relay.connect(a, relay_id);
    let complete = Complete {
        candidate: jet_relay::negotiate::CandidateRef { id: relay_id },
    };
    writeln!(stdin, "{}", serde_json::to_string(&complete).unwrap()).unwrap();
    stdin.write_all(b"data after the signaling lines").unwrap();
    drop(stdin);
    assert_eq!(selected(&mut server).0, relay_id);
    server.assert_sockets(1);
    assert_eq!(read_n(&mut sock, 30), b"data after the signaling lines");
    sock.write_all(b"and back").unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(server.read_stdout_to_end(), b"and back");
    assert!(server.wait().success());
}

#[test]
fn the_server_gathers_relay_candidates_through_the_rest_api() {
    // A stand-in for the relay's REST API: it answers POST /jet/gather/<id>
    // with two candidates on the real relay.
    let relay = TestRelay::start();
    let a = Uuid::new_v4();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let rest = TcpListener::bind("127.0.0.1:0").unwrap();
    let rest_addr = rest.local_addr().unwrap();
    let body = serde_json::json!({
        "id": a,
        "candidates": [
            { "id": first, "url": url_of(&relay) },
            { "id": second, "url": url_of(&relay), "note": "unknown fields are fine" },
        ],
    })
    .to_string();
    let api = thread::spawn(move || {
        let (mut sock, _) = rest.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(sock.read(&mut byte).unwrap(), 1, "a whole request head");
            head.push(byte[0]);
        }
        write!(
            sock,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8(head).unwrap()
    });
    let fifos = Fifos::new();
    let (mut server, mut client) = negotiate(
        &fifos,
        a,
        &[
            "--gather",
            &format!("http://{rest_addr}"),
            "--no-host-candidates",
        ],
    );
    let head = api.join().unwrap();
    assert!(
        head.starts_with(&format!("POST /jet/gather/{a} HTTP/1.1\r\n")),
        "{head}"
    );
    let (id, chosen) = selected(&mut client);
    assert!(id == first || id == second, "a gathered id: {id}");
    assert_eq!(chosen, format!("{}?ctype=relay", url_of(&relay)));
    assert_eq!(selected(&mut server).0, id);
    exchange_through_stdio(&mut client, &mut server, 10_000, 20_000);
    let info = wait_association(&relay, a, |info| info.selected == Some(id));
    let ids: Vec<Uuid> = info.candidates.iter().map(|c| c.id).collect();
    assert!(ids.contains(&first) && ids.contains(&second), "{ids:?}");
}

#[test]
fn negotiation_fails_cleanly_when_no_candidate_is_usable() {
    let fifos = Fifos::new();
    let dead = format!("tcp://127.0.0.1:{}", closed_port());
    let (mut server, mut client) = negotiate(
        &fifos,
        Uuid::new_v4(),
        &["--relay", &dead, "--no-host-candidates"],
    );
    assert_eq!(server.wait().code(), Some(1));
    let text = server.rest_of_stderr().join("\n");
    assert!(text.contains("no candidate to offer"), "{text}");
    assert_eq!(client.wait().code(), Some(1));
    let text = client.rest_of_stderr().join("\n");
    assert!(text.contains("signaling ended"), "{text}");
}

#[test]
fn bad_signaling_messages_are_clear_errors() {
    let mut server = Peer::spawn(&[
        "answer",
        "--signal-in",
        "-",
        "--signal-out",
        "-",
        "--no-host-candidates",
    ]);
    let mut stdin = server.stdin.take().unwrap();
    writeln!(stdin, r#"{{"role":"client","version":2}}"#).unwrap();
    drop(stdin);
    assert_eq!(server.wait().code(), Some(1));
    let text = server.rest_of_stderr().join("\n");
    assert!(text.contains("offer message: missing field `id`"), "{text}");
}

// Until the relay's TLS and WebSocket listeners land, these stand-ins check
// the client side of tls://, ws:// and wss:// against the draft: the JET
// request inside TLS, the request in the WebSocket path, binary frames, and
// the end of stream as close_notify or a close frame.

const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/peer-test-ca.pem");
const CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/peer-test-server.pem"
);
const KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/peer-test-server-key.pem"
);

fn server_tls() -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(CERT)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(KEY).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    std::sync::Arc::new(config)
}

/// What a stand-in relay saw: the request path (JET or WebSocket) and how
/// many bytes it echoed.
type StandInReport = (String, usize);

/// A one-connection stand-in relay for `scheme`: answers the JET request (or
/// the WebSocket upgrade) with success, then echoes the stream until the
/// client ends it, and ends its own side the transport's way.
// The upgrade callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
fn stand_in(scheme: Scheme) -> (u16, JoinHandle<StandInReport>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        match scheme {
            Scheme::Tcp => unreachable!("the real relay covers tcp"),
            Scheme::Tls => {
                let conn = rustls::ServerConnection::new(server_tls()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let Ok(packet) = jet_relay::packet::read_packet(&mut tls) else {
                    // The client refused our certificate.
                    return (String::new(), 0);
                };
                assert_eq!(packet.mask, 0x73);
                let head = String::from_utf8(packet.payload).unwrap();
                let path = head.split_whitespace().nth(1).unwrap().to_owned();
                tls.write_all(&jet_relay::message::response_packet(200, 2, &[]))
                    .unwrap();
                tls.flush().unwrap();
                let mut echoed = 0;
                let mut buf = vec![0u8; 32 * 1024];
                if !path.starts_with("/jet/test/") {
                    loop {
                        let n = tls.read(&mut buf).expect("a clean close_notify at the end");
                        if n == 0 {
                            break;
                        }
                        tls.write_all(&buf[..n]).unwrap();
                        tls.flush().unwrap();
                        echoed += n;
                    }
                }
                tls.conn.send_close_notify();
                tls.flush().unwrap();
                (path, echoed)
            }
            Scheme::Ws | Scheme::Wss => {
                let stream: Box<dyn ReadWrite> = if scheme == Scheme::Wss {
                    let conn = rustls::ServerConnection::new(server_tls()).unwrap();
                    Box::new(rustls::StreamOwned::new(conn, sock))
                } else {
                    Box::new(sock)
                };
                let mut path = String::new();
                let mut ws = tungstenite::accept_hdr(
                    stream,
                    |req: &tungstenite::handshake::server::Request,
                     resp: tungstenite::handshake::server::Response| {
                        path = req.uri().to_string();
                        Ok(resp)
                    },
                )
                .unwrap();
                let mut echoed = 0;
                if path.starts_with("/jet/test/") {
                    ws.close(None).unwrap();
                }
                loop {
                    match ws.read() {
                        Ok(tungstenite::Message::Binary(data)) => {
                            echoed += data.len();
                            ws.send(tungstenite::Message::Binary(data)).unwrap();
                        }
                        Ok(tungstenite::Message::Text(_)) => panic!("data comes in binary frames"),
                        Ok(_) => {}
                        Err(tungstenite::Error::ConnectionClosed) => break,
                        Err(e) => panic!("the WebSocket ended badly: {e}"),
                    }
                }
                (path, echoed)
            }
        }
    });
    (port, handle)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn tls_ws_and_wss_candidates_carry_the_request_and_the_data() {
    for scheme in [Scheme::Tls, Scheme::Ws, Scheme::Wss] {
        let (port, stand_in) = stand_in(scheme);
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        let url = format!("{}://localhost:{port}", scheme.as_str());
        let mut peer = Peer::spawn(&["connect", &url, &a.to_string(), &c.to_string(), "--ca", CA]);
        peer.line("jet-relay: connect");
        let data = pattern(21, 700_000);
        let writer = peer.feed(data.clone());
        let echoed = peer.read_stdout_to_end();
        writer.join().unwrap();
        assert_eq!(echoed.len(), data.len(), "over {url}");
        assert!(
            echoed == data,
            "over {url}: the echo comes back byte for byte"
        );
        assert!(peer.wait().success(), "over {url}");
        let (path, count) = stand_in.join().unwrap();
        assert_eq!(path, format!("/jet/connect/{a}/{c}"), "over {url}");
        assert_eq!(count, data.len());
    }
}

#[test]
fn tls_and_wss_test_the_certificate_and_websocket_tests_succeed_on_101() {
    let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    for scheme in [Scheme::Tls, Scheme::Ws, Scheme::Wss] {
        let (port, stand_in) = stand_in(scheme);
        let url = format!("{}://localhost:{port}", scheme.as_str());
        let out = Command::new(BIN)
            .args(["test", &url, &a, &c, "--ca", CA])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "over {url}: {out:?}");
        assert_eq!(stand_in.join().unwrap().0, format!("/jet/test/{a}/{c}"));
    }
    // A relay whose certificate the trusted roots do not vouch for is unusable...
    let (port, _stand_in) = stand_in(Scheme::Tls);
    let url = format!("tls://localhost:{port}");
    let out = Command::new(BIN)
        .args(["test", &url, &a, &c])
        .env("SSL_CERT_FILE", CERT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("TLS handshake") && text.contains("certificate"),
        "{text}"
    );
    // ...unless verification is turned off, which the peer says loudly.
    let (port, stand_in) = stand_in(Scheme::Tls);
    let url = format!("tls://localhost:{port}");
    let out = Command::new(BIN)
        .args(["test", &url, &a, &c, "--insecure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: --insecure"));
    stand_in.join().unwrap();
}
