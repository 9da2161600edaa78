//! Test helpers: a relay on 127.0.0.1:0 that stops on drop, and raw JET peers.

use jet_relay::config::{Config, ListenUrl, ListenerConfig};
use jet_relay::message::{self, Response};
use jet_relay::packet;
use jet_relay::Server;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use uuid::Uuid;

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A relay for one test, bound to a free loopback port, stopped on drop.
pub struct TestRelay {
    pub server: Server,
    pub addr: SocketAddr,
}

impl TestRelay {
    pub fn start() -> TestRelay {
        TestRelay::with(|_| {})
    }

    pub fn with(edit: impl FnOnce(&mut Config)) -> TestRelay {
        let mut config = Config {
            instance: "test-instance".into(),
            listeners: vec![ListenerConfig::new(
                ListenUrl::parse("tcp://127.0.0.1:0").unwrap(),
            )],
            ..Config::default()
        };
        edit(&mut config);
        // Relay logs go to stderr, which the test harness does not capture:
        // quiet unless asked for with JET_RELAY_LOG.
        let level = std::env::var("JET_RELAY_LOG")
            .ok()
            .and_then(|l| jet_relay::log::Level::parse(&l))
            .unwrap_or(jet_relay::log::Level::Off);
        jet_relay::log::set_level(level);
        let server = Server::start(config).expect("relay starts");
        let addr = server.local_addrs()[0];
        TestRelay { server, addr }
    }

    pub fn table(&self) -> &jet_relay::table::Table {
        &self.server.context().table
    }

    /// A raw TCP connection to the relay, with read and write timeouts.
    pub fn dial(&self) -> TcpStream {
        let sock = TcpStream::connect(self.addr).expect("relay accepts connections");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_write_timeout(Some(WAIT)).unwrap();
        sock
    }

    /// Sends `head` in a JET packet with `mask` (plus `extra` bytes in the same
    /// write) and reads the response packet.
    pub fn request(&self, head: &str, mask: u8, extra: &[u8]) -> (TcpStream, Response) {
        let mut sock = self.dial();
        let mut bytes = packet::encode(head.as_bytes(), mask);
        bytes.extend_from_slice(extra);
        sock.write_all(&bytes).unwrap();
        let response = read_response(&mut sock);
        (sock, response)
    }

    pub fn accept(&self, a: Uuid, c: Uuid) -> TcpStream {
        let (sock, resp) = self.request(&v2("accept", a, c), 0x73, b"");
        assert_eq!(resp.status, 200, "accept answered {resp:?}");
        sock
    }

    pub fn connect(&self, a: Uuid, c: Uuid) -> TcpStream {
        let (sock, resp) = self.request(&v2("connect", a, c), 0x73, b"");
        assert_eq!(resp.status, 200, "connect answered {resp:?}");
        sock
    }

    /// An accepted and connected pair on a fresh association.
    pub fn pair(&self) -> (Uuid, TcpStream, TcpStream) {
        let a = Uuid::new_v4();
        let c = Uuid::new_v4();
        let server = self.accept(a, c);
        let client = self.connect(a, c);
        (a, server, client)
    }
}

/// A version 2 request head.
pub fn v2(method: &str, a: Uuid, c: Uuid) -> String {
    format!("GET /jet/{method}/{a}/{c} HTTP/1.1\r\nHost: relay\r\nConnection: Keep-Alive\r\nJet-Version: 2\r\n\r\n")
}

/// Reads exactly one response packet.
pub fn read_response(sock: &mut TcpStream) -> Response {
    let packet = packet::read_packet(&mut *sock).expect("a response packet");
    assert_eq!(packet.mask, 0x73, "the relay masks with 0x73");
    assert_eq!(packet.flags, 0, "the relay writes flags 0");
    message::parse_response(&packet.payload).expect("an HTTP response head")
}

/// Reads until `n` bytes have arrived.
pub fn read_n(sock: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    sock.read_exact(&mut buf).expect("bytes arrive");
    buf
}

/// Asserts the relay closed the connection: EOF (or a reset) within the read timeout.
#[track_caller]
pub fn assert_closed(sock: &mut TcpStream) {
    let mut buf = [0; 64];
    match sock.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected a close, got {n} bytes: {:?}", &buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected a close, got {e}"),
    }
}

/// Reads to EOF.
pub fn read_to_end(sock: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    sock.read_to_end(&mut out).expect("stream ends cleanly");
    out
}

/// A deterministic pseudo-random byte stream (xorshift), so every byte relayed
/// can be checked.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
