//! The peer commands against a tcp+tls relay: every candidate type, forwarding, interop, FIFO negotiation.

use crate::support::{data_file, pattern, read_n, read_to_end, TestRelay, WAIT};
use jet_relay::relay::{AssociationInfo, CandidateState};
use jet_relay::wire::signal::{Answer, Candidate, Complete, Offer, Role};
use jet_relay::wire::Transport;
use jet_relay::wire::{CandidateUrl, Transport as Scheme};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::process::BIN;

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

    /// How many sockets the process holds open. A socket held by two file
    /// descriptors (a WebSocket keeps a clone to shut it down) counts once.
    fn sockets(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|target| target.to_string_lossy().into_owned())
                    .filter(|target| target.starts_with("socket:"))
                    .collect::<std::collections::HashSet<String>>()
                    .len()
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

use crate::support::closed_port;

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

/// The test CA, which signed the certificate of `TestRelay::with_tls`.
fn ca() -> String {
    data_file("ca.pem").to_string_lossy().into_owned()
}

/// The relay's URL for `scheme`: tcp and ws on its TCP listener, tls and wss
/// on its TLS listener, by the name its certificate carries.
fn url_over(relay: &TestRelay, scheme: Scheme) -> String {
    match scheme {
        Scheme::Tcp | Scheme::Ws => format!("{}://{}", scheme.as_str(), relay.addr),
        Scheme::Tls | Scheme::Wss => {
            format!(
                "{}://localhost:{}",
                scheme.as_str(),
                relay.tls_addr().port()
            )
        }
    }
}

/// Creates an association through the REST API, as WebSocket candidates need.
fn create_association(relay: &TestRelay, a: Uuid) {
    let reply = relay.http("POST", &format!("/jet/association/{a}"), &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The transport name of a relay connection, for comparing with a URL scheme.
fn transport(kind: Option<Transport>) -> Option<&'static str> {
    kind.map(Transport::as_str)
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
fn accept_connect_and_test_work_over_every_candidate_type() {
    let relay = TestRelay::with_tls(|_| {});
    let ca = ca();
    for scheme in Scheme::ALL {
        let url = url_over(&relay, scheme);
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        // WebSocket candidates need an association that exists (draft 0.2).
        create_association(&relay, a);
        let (a_text, c_text) = (a.to_string(), c.to_string());
        let ids = [a_text.as_str(), c_text.as_str()];
        let args = |command: &'static str| {
            let mut args = vec![command, url.as_str()];
            args.extend_from_slice(&ids);
            args.extend_from_slice(&["--ca", &ca]);
            args
        };
        let status = if scheme.is_websocket() { 101 } else { 200 };
        let mut server = Peer::spawn(&args("accept"));
        assert_eq!(
            server.line("jet-relay: accept"),
            format!("jet-relay: accept {a} {c}: {status}")
        );
        let test = Command::new(BIN).args(args("test")).output().unwrap();
        assert_eq!(test.status.code(), Some(0), "test over {url}: {test:?}");
        assert!(
            String::from_utf8_lossy(&test.stderr).contains(&format!("{status} usable")),
            "{test:?}"
        );
        let mut client = Peer::spawn(&args("connect"));
        assert_eq!(
            client.line("jet-relay: connect"),
            format!("jet-relay: connect {a} {c}: {status}")
        );
        exchange_through_stdio(&mut client, &mut server, 300_000, 200_000);
        // The relay saw both peers on this transport and counted every byte.
        let info = wait_association(&relay, a, |info| {
            let candidate = &info.candidates[0];
            (candidate.connect_to_accept, candidate.accept_to_connect) == (300_000, 200_000)
        });
        let candidate = &info.candidates[0];
        assert_eq!(
            (
                transport(candidate.accept_transport),
                transport(candidate.connect_transport)
            ),
            (Some(scheme.as_str()), Some(scheme.as_str())),
            "over {url}"
        );
    }
}

#[test]
fn without_ca_the_relays_certificate_is_refused_and_insecure_says_so_loudly() {
    let relay = TestRelay::with_tls(|_| {});
    let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let _parked = relay.accept(a.parse().unwrap(), c.parse().unwrap());
    // The system roots, pinned to a bundle that does not hold the test CA so
    // the outcome does not depend on the machine.
    let roots = data_file("server.pem");
    for scheme in [Scheme::Tls, Scheme::Wss] {
        let url = url_over(&relay, scheme);
        let refused = Command::new(BIN)
            .args(["test", &url, &a, &c])
            .env("SSL_CERT_FILE", &roots)
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        let text = String::from_utf8_lossy(&refused.stderr);
        assert!(
            text.contains("not usable")
                && text.contains("TLS handshake")
                && text.contains("certificate"),
            "over {url}: {text}"
        );
        let insecure = Command::new(BIN)
            .args(["test", &url, &a, &c, "--insecure"])
            .env("SSL_CERT_FILE", &roots)
            .output()
            .unwrap();
        assert_eq!(insecure.status.code(), Some(0), "{insecure:?}");
        let text = String::from_utf8_lossy(&insecure.stderr);
        assert!(
            text.contains("WARNING: --insecure") && text.contains("NOT verified"),
            "over {url}: {text}"
        );
    }
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
    let relay = TestRelay::with_tls(|_| {});
    let ca = ca();
    for scheme in [Scheme::Tcp, Scheme::Tls] {
        let url = url_over(&relay, scheme);
        let mut server = Peer::spawn(&["accept", "--v1", &url, "--ca", &ca]);
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
        let mut client = Peer::spawn(&[
            "connect",
            "--v1",
            "--association",
            &association,
            &url,
            "--ca",
            &ca,
        ]);
        client.line("jet-relay: connect");
        exchange_through_stdio(&mut client, &mut server, 50_000, 70_000);
    }
}

#[test]
fn forward_connects_the_relayed_stream_to_a_local_service_over_wss() {
    let relay = TestRelay::with_tls(|_| {});
    let (echo, echo_done) = echo_server();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    create_association(&relay, a);
    let mut server = Peer::spawn(&[
        "accept",
        &url_over(&relay, Scheme::Wss),
        &a.to_string(),
        &c.to_string(),
        "--forward",
        &echo.to_string(),
        "--ca",
        &ca(),
    ]);
    server.line("jet-relay: accept");
    // The other peer is a raw TCP connect: the relay pairs across transports.
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
fn listen_relays_one_local_connection_over_tls() {
    let relay = TestRelay::with_tls(|_| {});
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut parked = relay.accept(a, c);
    let mut client = Peer::spawn(&[
        "connect",
        &url_over(&relay, Scheme::Tls),
        &a.to_string(),
        &c.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--ca",
        &ca(),
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
    // Each side ends its direction in turn: half-close crosses TLS both ways.
    parked.write_all(b"pong from the server peer").unwrap();
    parked.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut local), b"pong from the server peer");
    local.write_all(b"last words").unwrap();
    local.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut parked), b"last words");
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
        let packet = jet_relay::wire::packet::read_packet(&buf[..n]).unwrap();
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
            jet_relay::wire::packet::encode(b"HTTP/1.1 200 OK 200\r\nJet-Version: 2\r\n\r\n", 0x73)
                .expect("a test head fits a packet");
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

/// Starts the server peer (`answer`, with `server_env`) and the client peer
/// (`offer`) on FIFOs.
fn negotiate(
    fifos: &Fifos,
    association: Uuid,
    server_args: &[&str],
    client_args: &[&str],
    server_env: &[(&str, &str)],
) -> (Peer, Peer) {
    let (to_server, to_client) = (fifos.to_server(), fifos.to_client());
    let mut args = vec![
        "answer",
        "--signal-in",
        &to_server,
        "--signal-out",
        &to_client,
    ];
    args.extend_from_slice(server_args);
    let server = Peer::spawn_with_env(&args, server_env);
    let association = association.to_string();
    let mut args = vec![
        "offer",
        "--signal-in",
        &to_client,
        "--signal-out",
        &to_server,
        "--association",
        &association,
    ];
    args.extend_from_slice(client_args);
    let client = Peer::spawn(&args);
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

/// The scheme of a candidate URL.
fn scheme_of(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// Asserts the relay gathered one candidate per transport for `a` and the
/// server peer accepted on each over that very transport.
#[track_caller]
fn assert_gathered_and_accepted(info: &AssociationInfo) {
    let mut schemes: Vec<&str> = info
        .candidates
        .iter()
        .map(|c| scheme_of(c.url.as_deref().unwrap_or_default()))
        .collect();
    schemes.sort_unstable();
    assert_eq!(schemes, ["tcp", "tls", "ws", "wss"], "{info:?}");
    for candidate in &info.candidates {
        assert_eq!(
            transport(candidate.accept_transport),
            candidate.url.as_deref().map(scheme_of),
            "{info:?}"
        );
    }
}

#[test]
fn negotiation_over_gathered_candidates_selects_the_host_candidate_and_closes_every_relay_one() {
    let relay = TestRelay::with_tls(|_| {});
    let fifos = Fifos::new();
    let a = Uuid::new_v4();
    let ca = ca();
    let (mut server, mut client) = negotiate(
        &fifos,
        a,
        &[
            "--gather",
            &format!("http://{}", relay.addr),
            "--host-listen",
            "127.0.0.1:0",
            "--ca",
            &ca,
        ],
        &["--ca", &ca],
        &[],
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
    // ...and the four relay candidates, one per transport, end closed there.
    let info = wait_association(&relay, a, |info| {
        info.candidates.len() == 4
            && info
                .candidates
                .iter()
                .all(|c| c.state == CandidateState::Closed)
    });
    assert_gathered_and_accepted(&info);
    assert_eq!(info.selected, None, "no byte went through the relay");
    exchange_through_stdio(&mut client, &mut server, 500_000, 300_000);
}

#[test]
fn negotiation_over_gathered_candidates_selects_a_relay_one_when_host_candidates_are_off() {
    let relay = TestRelay::with_tls(|_| {});
    let fifos = Fifos::new();
    let a = Uuid::new_v4();
    let ca = ca();
    // Gathered over HTTPS on the TLS listener, which then needs the CA too.
    let (mut server, mut client) = negotiate(
        &fifos,
        a,
        &[
            "--gather",
            &format!("https://localhost:{}", relay.tls_addr().port()),
            "--no-host-candidates",
            "--ca",
            &ca,
        ],
        &["--ca", &ca],
        &[],
    );
    let (id, chosen) = selected(&mut client);
    assert!(chosen.ends_with("?ctype=relay"), "{chosen}");
    assert_eq!(selected(&mut server), (id, chosen.clone()));
    client.assert_sockets(1);
    server.assert_sockets(1);
    // The losers are closed on the relay while the selected one still stands.
    let info = wait_association(&relay, a, |info| {
        info.candidates.len() == 4
            && info
                .candidates
                .iter()
                .all(|c| (c.id == id) != (c.state == CandidateState::Closed))
    });
    assert_gathered_and_accepted(&info);
    let winner = info.candidates.iter().find(|c| c.id == id).unwrap();
    assert_eq!(winner.state, CandidateState::Paired);
    assert_eq!(
        (
            winner.url.as_deref().map(scheme_of),
            transport(winner.connect_transport)
        ),
        (Some(scheme_of(&chosen)), Some(scheme_of(&chosen))),
        "the client connected over the selected candidate's transport"
    );
    exchange_through_stdio(&mut client, &mut server, 400_000, 600_000);
    let info = wait_association(&relay, a, |info| {
        info.selected == Some(id)
            && info.candidates.iter().any(|c| {
                c.id == id && (c.connect_to_accept, c.accept_to_connect) == (400_000, 600_000)
            })
    });
    assert_eq!(info.selected, Some(id));
}

#[test]
fn gathering_sends_the_api_key_as_a_bearer_token_and_never_prints_it() {
    const KEY: &str = "peer-test-api-key-7f3a9c";
    let relay = TestRelay::with_tls(|config| {
        config.api_key = Some(jet_relay::relay::config::ApiKey::new(KEY).expect("a valid key"))
    });
    let gather = format!("http://{}", relay.addr);
    let server_args = ["--gather", gather.as_str(), "--no-host-candidates"];
    // Without a key the relay refuses the gather, and there is nothing to offer.
    let fifos = Fifos::new();
    let (mut server, mut client) = negotiate(
        &fifos,
        Uuid::new_v4(),
        &server_args,
        &[],
        &[("JET_API_KEY", "")],
    );
    assert_eq!(server.wait().code(), Some(1));
    let text = server.rest_of_stderr().join("\n");
    assert!(
        text.contains("the relay refused gather")
            && text.contains(": 401 an API key is required")
            && text.contains("JET_API_KEY"),
        "{text}"
    );
    assert_eq!(client.wait().code(), Some(1));
    // With the key from the environment, or from --api-key (which wins over
    // a wrong one in the environment), the negotiation goes through; the key
    // is in no line the peers print, even at debug level.
    let with_option: Vec<&str> = server_args
        .iter()
        .copied()
        .chain(["--api-key", KEY])
        .collect();
    let cases: [(&[&str], &str); 2] = [(&server_args, KEY), (&with_option, "wrong-key-0123456789")];
    for (args, env_key) in cases {
        let fifos = Fifos::new();
        let env = [("JET_API_KEY", env_key), ("JET_RELAY_LOG", "debug")];
        let (mut server, mut client) = negotiate(&fifos, Uuid::new_v4(), args, &[], &env);
        let (id, _) = selected(&mut client);
        assert_eq!(selected(&mut server).0, id);
        exchange_through_stdio(&mut client, &mut server, 1_000, 2_000);
        let printed = server.rest_of_stderr().join("\n");
        assert!(!printed.contains(KEY), "the key was printed: {printed}");
    }
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
        candidate: jet_relay::wire::signal::CandidateRef { id: relay_id },
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
fn negotiation_fails_cleanly_when_no_candidate_is_usable() {
    let fifos = Fifos::new();
    let dead = format!("tcp://127.0.0.1:{}", closed_port());
    let (mut server, mut client) = negotiate(
        &fifos,
        Uuid::new_v4(),
        &["--relay", &dead, "--no-host-candidates"],
        &[],
        &[],
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
