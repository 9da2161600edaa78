//! `accept --jmux` and `connect --jmux` end to end: the binary, the real relay, local services; the library's own tests (50 × 1 MiB, a stalled channel) are in `jmux`.

use crate::proxies::{self, TestProxy};
use crate::support::{data_file, pattern, TestRelay, WAIT};
use jet_relay::wire::secret::ApiKey;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;
use uuid::Uuid;

use crate::process::BIN;
const KEY: &str = "tunnel-test-key-0123456789";

/// A peer process whose stderr and stdout lines arrive on channels; killed on drop.
struct Peer {
    child: Child,
    stderr: Receiver<String>,
    stdout: Receiver<String>,
    seen: Vec<String>,
}

fn lines(input: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(input).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Peer {
    fn spawn(args: &[String]) -> Peer {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("JET_RELAY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The proxies a test uses are named on the command line only.
        for name in [
            "http_proxy",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            command.env_remove(name);
        }
        let mut child = command.spawn().expect("the binary starts");
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        Peer {
            child,
            stderr,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    #[track_caller]
    fn line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no stderr line with {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    /// The address of the next `listening tcp://ADDR` line on stdout.
    #[track_caller]
    fn listening(&mut self) -> SocketAddr {
        let line = self
            .stdout
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no listening line; stderr so far: {:?}", self.seen));
        line.strip_prefix("listening tcp://")
            .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"))
            .parse()
            .expect("an address")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An echo service for any number of connections: each is echoed until EOF, then half-closed.
fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut sock) = conn else { return };
            thread::spawn(move || {
                let mut out = sock.try_clone().unwrap();
                let _ = std::io::copy(&mut sock, &mut out);
                let _ = out.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// Sends `len` bytes through `addr`, half-closes, and checks the echo byte for byte.
#[track_caller]
fn echo_through(addr: SocketAddr, seed: u64, len: usize) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let data = pattern(seed, len);
    let mut writer = sock.try_clone().unwrap();
    let sent = data.clone();
    let feeder = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    sock.read_to_end(&mut back).unwrap();
    feeder.join().unwrap();
    assert!(
        back == data,
        "connection {seed}: {} bytes back of {len}",
        back.len()
    );
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// A server peer and a client peer on one tunnel over `url`; the client's
/// listener addresses in order.
struct Pair {
    association: String,
    server: Peer,
    client: Peer,
    listeners: Vec<SocketAddr>,
}

fn pair(url: &str, server_extra: &[String], client_extra: &[String], listeners: usize) -> Pair {
    let (a, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let mut server = Peer::spawn(
        &[
            args(&["accept", url, &a, &c, "--jmux"]),
            server_extra.to_vec(),
        ]
        .concat(),
    );
    server.line(&format!("accept {a} {c}: 200"));
    let mut client = Peer::spawn(
        &[
            args(&["connect", url, &a, &c, "--jmux"]),
            client_extra.to_vec(),
        ]
        .concat(),
    );
    client.line(&format!("connect {a} {c}: 200"));
    let listeners = (0..listeners).map(|_| client.listening()).collect();
    Pair {
        association: a,
        server,
        client,
        listeners,
    }
}

#[test]
fn twenty_concurrent_connections_of_256_kib_cross_one_tunnel_byte_exact() {
    let relay = TestRelay::start();
    let echo = echo_service();
    let url = format!("tcp://{}", relay.addr);
    let tunnel = pair(
        &url,
        &args(&["--forward", &echo.to_string()]),
        &args(&["--listen", &format!("127.0.0.1:0={echo}")]),
        1,
    );
    let local = tunnel.listeners[0];
    let workers: Vec<_> = (0..20)
        .map(|i| thread::spawn(move || echo_through(local, i, 256 * 1024)))
        .collect();
    for worker in workers {
        worker.join().expect("a connection failed");
    }
    // All of them on one relayed stream: one pair on the relay.
    assert_eq!(relay.table().len(), 1);
}

#[test]
fn half_close_reaches_the_service_per_channel_and_its_answer_still_comes_back() {
    // The service reads to EOF, then answers how much it got: only a write
    // shutdown carried through the channel lets it answer at all.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let service = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut sock) = conn else { return };
            thread::spawn(move || {
                let mut got = Vec::new();
                let _ = sock.read_to_end(&mut got);
                let _ = sock.write_all(format!("got {}", got.len()).as_bytes());
            });
        }
    });
    let relay = TestRelay::start();
    let tunnel = pair(
        &format!("tcp://{}", relay.addr),
        &args(&["--forward", &service.to_string()]),
        &args(&["--listen", &format!("127.0.0.1:0={service}")]),
        1,
    );
    for len in [0usize, 1, 70_000] {
        let mut sock = TcpStream::connect(tunnel.listeners[0]).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.write_all(&pattern(1, len)).unwrap();
        sock.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        sock.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("got {len}"));
    }
}

#[test]
fn a_destination_not_allowed_is_refused_the_client_reset_and_the_server_says_why() {
    let relay = TestRelay::start();
    let echo = echo_service();
    let other = echo_service();
    let mut tunnel = pair(
        &format!("tcp://{}", relay.addr),
        &args(&["--forward", &echo.to_string()]),
        &args(&["--listen", &format!("127.0.0.1:0={other}")]),
        1,
    );
    let mut sock = TcpStream::connect(tunnel.listeners[0]).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    let read = sock.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset, got {read:?}"
    );
    let line = tunnel.server.line("refused channel");
    assert!(
        line.contains(&format!("tcp://{other} is not allowed")),
        "{line}"
    );
    let line = tunnel.client.line(&format!("tcp://{other}"));
    assert!(line.contains("not allowed"), "{line}");
}

#[test]
fn the_tunnel_survives_the_relay_dropping_the_stream_with_an_api_key() {
    let relay = TestRelay::with(|c| c.api_key = Some(ApiKey::new(KEY).expect("a valid key")));
    let echo = echo_service();
    let api = format!("http://{}", relay.addr);
    let rest = args(&["--api", &api, "--api-key", KEY]);
    let mut tunnel = pair(
        &format!("tcp://{}", relay.addr),
        &[args(&["--forward", &echo.to_string()]), rest.clone()].concat(),
        &[args(&["--listen", &format!("127.0.0.1:0={echo}")]), rest].concat(),
        1,
    );
    echo_through(tunnel.listeners[0], 1, 10_000);
    // Deleting the association cuts the relayed stream.
    let path = format!("/jet/association/{}", tunnel.association);
    let auth = format!("Bearer {KEY}");
    let reply = relay.http("DELETE", &path, &[("Authorization", &auth)], b"");
    assert!(reply.status < 300, "{}", reply.text());
    tunnel.server.line("the tunnel ended");
    tunnel.client.line("the relayed stream");
    // Parked again on a re-created association: a new local connection works.
    tunnel.server.line(": 200");
    echo_through(tunnel.listeners[0], 2, 10_000);
    tunnel.client.line("reconnecting");
}

#[test]
fn a_socks5_listener_opens_a_channel_per_connect() {
    let relay = TestRelay::start();
    let echo = echo_service();
    let tunnel = pair(
        &format!("tcp://{}", relay.addr),
        &args(&["--forward", &echo.to_string()]),
        &args(&["--socks5", "127.0.0.1:0"]),
        1,
    );
    for seed in 0..3 {
        let mut sock = TcpStream::connect(tunnel.listeners[0]).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.write_all(&[5, 1, 0]).unwrap();
        let mut choice = [0u8; 2];
        sock.read_exact(&mut choice).unwrap();
        assert_eq!(choice, [5, 0]);
        let SocketAddr::V4(v4) = echo else {
            panic!("loopback is IPv4")
        };
        let mut request = vec![5, 1, 0, 1];
        request.extend_from_slice(&v4.ip().octets());
        request.extend_from_slice(&v4.port().to_be_bytes());
        sock.write_all(&request).unwrap();
        let mut reply = [0u8; 10];
        sock.read_exact(&mut reply).unwrap();
        assert_eq!(reply[1], 0, "SOCKS5 success");
        let data = pattern(seed, 50_000);
        sock.write_all(&data).unwrap();
        sock.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        sock.read_to_end(&mut back).unwrap();
        assert!(back == data, "{} bytes back", back.len());
    }
    // A CONNECT the server refuses gets SOCKS5 reply 2, "not allowed".
    let mut sock = TcpStream::connect(tunnel.listeners[0]).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    sock.read_exact(&mut choice).unwrap();
    sock.write_all(&[
        5, 1, 0, 3, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 80,
    ])
    .unwrap();
    let mut reply = [0u8; 10];
    sock.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 2);
}

#[test]
fn tunnels_pair_through_each_proxy_over_each_transport() {
    let relay = TestRelay::with_tls(|_| {});
    let echo = echo_service();
    let ca = data_file("ca.pem").to_string_lossy().into_owned();
    let api = format!("http://{}", relay.addr);
    let proxies: [(&str, TestProxy); 2] = [
        ("http", proxies::http_connect()),
        ("socks5", proxies::socks5()),
    ];
    for (kind, proxy) in &proxies {
        for scheme in ["tcp", "tls", "ws", "wss"] {
            let url = match scheme {
                "tcp" | "ws" => format!("{scheme}://{}", relay.addr),
                _ => format!("{scheme}://localhost:{}", relay.tls_addr().port()),
            };
            let before = proxy.tunnels();
            let common = args(&["--ca", &ca, "--proxy", &proxy.url, "--api", &api]);
            let tunnel = pair(
                &url,
                &[args(&["--forward", &echo.to_string()]), common.clone()].concat(),
                &[args(&["--listen", &format!("127.0.0.1:0={echo}")]), common].concat(),
                1,
            );
            echo_through(tunnel.listeners[0], 7, 100_000);
            // Both peers' REST calls and candidates went through the proxy.
            assert!(
                proxy.tunnels() >= before + 4,
                "{kind} proxy over {scheme}: {} tunnels",
                proxy.tunnels() - before
            );
        }
    }
}
