//! jet-bench: measures the release relay against a direct loopback connection between the same two peers.
//!
//! Every figure runs on each target in turn, alternating over several rounds,
//! and reports medians with min-max. Every relayed byte is checked against a
//! known pseudo-random stream: a wrong byte fails the figure. Run through
//! `scripts/bench.sh`, or `cargo bench --bench jet-bench -- --help`.

use jet_relay::peer::client::{CandidateUrl, Connector, JetRequest, Relayed, TlsOptions};
use jet_relay::wire::message::{self, Method};
use jet_relay::wire::packet;
use rustls::pki_types::ServerName;
use serde_json::json;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

const USAGE: &str = "\
jet-bench: the relay against direct loopback, side by side

Usage: jet-bench --relay PATH [options]

  --relay PATH          the jet-relay binary to start (release build)
  --transport LIST      relay transports to measure, comma-separated from
                        tcp,tls,ws,wss (all); (d) and (e) run on tcp only
  --zero-copy BOOL      the relay's zero_copy setting (default true)
  --only LIST           figures to run, comma-separated from a,b,c,d,e (all)
  --rounds N            rounds per figure, targets alternating (5)
  --a-bytes N           (a) bytes one way through one pair (2GiB)
  --b-pairs N           (b) concurrent pairs (64)
  --b-bytes N           (b) bytes each way per pair (32MiB)
  --c-count N           (c) round trips per message size and round (5000)
  --d-seconds S         (d) seconds per concurrency and round (2)
  --d-concurrency LIST  (d) concurrent peers, comma-separated (4,32)
  --e-pairs LIST        (e) idle pair counts, comma-separated (1000,10000)
  --quick               small sizes for a smoke run (overridden by the flags above)
  --help

Sizes take K, M, G (powers of 1024, with or without iB).
Output: progress on stderr; a table, then one `BENCH {json}` line per figure, on stdout.
";

/// Bytes moved per write and per read by the peers.
const CHUNK: usize = 256 * 1024;
/// Length of the pattern table: a prime, so the stream never lines up with
/// the power-of-two chunks of a relay (a reordered or repeated chunk shows).
const PATTERN_PERIOD: usize = 4_194_301;
/// Latency round trips done before the measured ones.
const WARMUP: usize = 200;
/// How long one socket operation may block before the figure fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the relay may take to give back threads and descriptors after
/// its pairs close (idle pool threads linger 5 s).
const SETTLE: Duration = Duration::from_secs(20);
/// The descriptor limit asked for (the relay inherits it): 10,000 pairs hold
/// 20,000 sockets here and as many in the relay, more with pipes.
const WANT_NOFILE: u64 = 262_144;
/// Descriptors a process needs besides the held pairs' sockets (stdio,
/// listeners, the relay's pipes to us, a few spare).
const RESERVED_FDS: u64 = 32;

// ---------------------------------------------------------------- options

#[derive(Clone, Debug)]
struct Options {
    relay: PathBuf,
    transports: Vec<Transport>,
    zero_copy: bool,
    only: Vec<char>,
    rounds: usize,
    a_bytes: u64,
    b_pairs: usize,
    b_bytes: u64,
    c_count: usize,
    d_seconds: f64,
    d_concurrency: Vec<usize>,
    e_pairs: Vec<usize>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("{text:?} is not a size"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{text:?} is not a size"));
    }
    Ok((n * mult as f64) as u64)
}

fn parse_list<T>(text: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s.trim()))
        .collect()
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        relay: PathBuf::new(),
        transports: Transport::ALL.to_vec(),
        zero_copy: true,
        only: vec!['a', 'b', 'c', 'd', 'e'],
        rounds: if quick { 3 } else { 5 },
        a_bytes: if quick { 256 << 20 } else { 2 << 30 },
        b_pairs: if quick { 16 } else { 64 },
        b_bytes: if quick { 4 << 20 } else { 32 << 20 },
        c_count: if quick { 1000 } else { 5000 },
        d_seconds: if quick { 0.5 } else { 2.0 },
        d_concurrency: vec![4, 32],
        e_pairs: if quick {
            vec![200, 1000]
        } else {
            vec![1000, 10000]
        },
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{arg}: {v:?}"));
        match arg.as_str() {
            "--quick" => {}
            "--relay" => o.relay = PathBuf::from(value()?),
            "--transport" => o.transports = parse_list(&value()?, Transport::parse)?,
            "--zero-copy" => {
                o.zero_copy = value()?.parse().map_err(|_| "--zero-copy: true or false")?
            }
            "--only" => o.only = value()?.chars().filter(char::is_ascii_lowercase).collect(),
            "--rounds" => o.rounds = number(value()?)?.max(1),
            "--a-bytes" => o.a_bytes = parse_size(&value()?)?,
            "--b-pairs" => o.b_pairs = number(value()?)?.max(1),
            "--b-bytes" => o.b_bytes = parse_size(&value()?)?,
            "--c-count" => o.c_count = number(value()?)?.max(10),
            "--d-seconds" => {
                o.d_seconds = value()?
                    .parse()
                    .map_err(|_| format!("{arg}: not a number"))?
            }
            "--d-concurrency" => o.d_concurrency = parse_list(&value()?, |s| number(s.to_owned()))?,
            "--e-pairs" => o.e_pairs = parse_list(&value()?, |s| number(s.to_owned()))?,
            // Cargo passes --bench to harness=false benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.relay.as_os_str().is_empty() {
        return Err("--relay PATH is needed (see --help)".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- targets

/// How peers reach the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    fn parse(text: &str) -> Result<Transport, String> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == text)
            .ok_or_else(|| format!("transport {text:?}: one of tcp, tls, ws, wss"))
    }

    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The scheme of the relay listener that serves this transport:
    /// WebSocket upgrades are served on every listener.
    fn listener_scheme(self) -> &'static str {
        match self {
            Transport::Tcp | Transport::Ws => "tcp",
            Transport::Tls | Transport::Wss => "tls",
        }
    }

    fn is_tls(self) -> bool {
        self.listener_scheme() == "tls"
    }
}

/// One side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The two peers connected straight to each other over loopback.
    Direct,
    /// The same, with TLS between them (the baseline that pays for the
    /// same cryptography once: a relay over TLS pays for it twice).
    DirectTls,
    /// The two peers meeting at the relay.
    Relay(Transport),
}

impl Target {
    fn name(self) -> String {
        match self {
            Target::Direct => "direct".into(),
            Target::DirectTls => "direct-tls".into(),
            Target::Relay(t) => format!("relay-{}", t.name()),
        }
    }
}

/// What a target needs to make pairs: a listener of our own for direct
/// pairs, the relay's address otherwise.
struct Endpoint {
    target: Target,
    direct: Option<TcpListener>,
    relay: Option<SocketAddr>,
    tls: Option<Arc<TlsConfigs>>,
    /// Opens the relay's WebSocket candidates (the crate's own peer side).
    connector: Option<Connector>,
    /// Makes association ids unique across the run without a random draw each.
    next_id: AtomicU64,
    id_base: u128,
}

/// The test certificates: the relay (and the direct TLS server peer) serve
/// tests/data/server.pem, the client peers trust tests/data/ca.pem.
struct TlsConfigs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn test_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tls_options() -> TlsOptions {
    TlsOptions {
        ca_file: Some(test_data("ca.pem")),
        insecure: false,
    }
}

impl TlsConfigs {
    fn load() -> io::Result<Arc<TlsConfigs>> {
        let server =
            jet_relay::relay::tls_server_config(&test_data("server.pem"), &test_data("server.key"))
                .map_err(|e| io::Error::other(format!("TLS server config: {e}")))?;
        let client = Connector::new(tls_options())
            .tls_config()
            .map_err(|e| io::Error::other(format!("TLS client config: {e}")))?;
        Ok(Arc::new(TlsConfigs { server, client }))
    }
}

impl Endpoint {
    fn direct() -> io::Result<Endpoint> {
        Ok(Endpoint {
            target: Target::Direct,
            direct: Some(TcpListener::bind("127.0.0.1:0")?),
            relay: None,
            tls: None,
            connector: None,
            next_id: AtomicU64::new(0),
            id_base: 0,
        })
    }

    fn direct_tls(tls: Arc<TlsConfigs>) -> io::Result<Endpoint> {
        Ok(Endpoint {
            target: Target::DirectTls,
            tls: Some(tls),
            ..Endpoint::direct()?
        })
    }

    fn relay(transport: Transport, addr: SocketAddr, tls: Option<Arc<TlsConfigs>>) -> Endpoint {
        Endpoint {
            target: Target::Relay(transport),
            direct: None,
            relay: Some(addr),
            tls,
            connector: Some(Connector::new(tls_options())),
            next_id: AtomicU64::new(1),
            id_base: Uuid::new_v4().as_u128() & !u128::from(u64::MAX),
        }
    }

    fn tls(&self) -> io::Result<&Arc<TlsConfigs>> {
        self.tls
            .as_ref()
            .ok_or_else(|| io::Error::other("TLS target without TLS configs"))
    }

    /// A connected pair: (server peer, client peer), both with TCP_NODELAY.
    fn pair(&self) -> io::Result<(Peer, Peer)> {
        self.pair_with(self.direct.as_ref())
    }

    /// A pair made with a listener of the caller's own (direct), so that
    /// concurrent workers never take each other's connections.
    fn pair_with(&self, own: Option<&TcpListener>) -> io::Result<(Peer, Peer)> {
        match (self.target, own.or(self.direct.as_ref()), self.relay) {
            (Target::Direct, Some(listener), _) => {
                let (server, client) = direct_sockets(listener)?;
                Ok((Peer::Tcp(server), Peer::Tcp(client)))
            }
            (Target::DirectTls, Some(listener), _) => {
                let (server, client) = direct_sockets(listener)?;
                let tls = self.tls()?;
                // Both handshakes at once: each side waits for the other.
                thread::scope(|s| {
                    let client = s.spawn(|| {
                        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
                        let conn = rustls::ClientConnection::new(Arc::clone(&tls.client), name)
                            .map_err(io::Error::other)?;
                        TlsPeer::handshake(client, conn.into())
                    });
                    let conn = rustls::ServerConnection::new(Arc::clone(&tls.server))
                        .map_err(io::Error::other)?;
                    let server = TlsPeer::handshake(server, conn.into());
                    let client = client
                        .join()
                        .map_err(|_| io::Error::other("TLS handshake panicked"))?;
                    Ok((Peer::Tls(Box::new(server?)), Peer::Tls(Box::new(client?))))
                })
            }
            (Target::Relay(transport), _, Some(addr)) => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let association = Uuid::from_u128(self.id_base | u128::from(n));
                let candidate = Uuid::from_u128(self.id_base | u128::from(n) | 1 << 63);
                match transport {
                    Transport::Tcp | Transport::Tls => {
                        let server =
                            self.jet_request(addr, Method::Accept, association, candidate)?;
                        let client =
                            self.jet_request(addr, Method::Connect, association, candidate)?;
                        Ok((server, client))
                    }
                    Transport::Ws | Transport::Wss => {
                        self.create_association(addr, association)?;
                        let server = self.websocket(
                            addr,
                            transport,
                            Method::Accept,
                            association,
                            candidate,
                        )?;
                        let client = self.websocket(
                            addr,
                            transport,
                            Method::Connect,
                            association,
                            candidate,
                        )?;
                        Ok((server, client))
                    }
                }
            }
            _ => Err(io::Error::other("endpoint without a way to pair")),
        }
    }

    /// A connection to the relay, TLS on TLS listeners.
    fn dial(&self, addr: SocketAddr) -> io::Result<Peer> {
        let sock = TcpStream::connect(addr)?;
        prepare(&sock)?;
        match self.target {
            Target::Relay(t) if t.is_tls() => {
                let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
                let conn = rustls::ClientConnection::new(Arc::clone(&self.tls()?.client), name)
                    .map_err(io::Error::other)?;
                Ok(Peer::Tls(Box::new(TlsPeer::handshake(sock, conn.into())?)))
            }
            _ => Ok(Peer::Tcp(sock)),
        }
    }

    /// Sends one version 2 request and reads its 200.
    fn jet_request(
        &self,
        addr: SocketAddr,
        method: Method,
        association: Uuid,
        candidate: Uuid,
    ) -> io::Result<Peer> {
        let peer = self.dial(addr)?;
        let head = message::request_head(method, 2, "bench", Some(association), candidate);
        (&peer).write_all(&packet::encode(head.as_bytes(), packet::WRITE_MASK))?;
        let reply = packet::read_packet(&mut &peer)?;
        let response = message::parse_response(&reply.payload).map_err(io::Error::other)?;
        if response.status != 200 {
            return Err(io::Error::other(format!(
                "{} answered {}",
                method.as_str(),
                response.status
            )));
        }
        Ok(peer)
    }

    /// `POST /jet/association/ID` on the relay's listener: WebSocket
    /// candidates need the association to exist before the upgrade.
    fn create_association(&self, addr: SocketAddr, association: Uuid) -> io::Result<()> {
        let peer = self.dial(addr)?;
        let request = format!(
            "POST /jet/association/{association} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        (&peer).write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        // Connection: close: the answer ends with the connection (bounded).
        while answer.len() < 64 * 1024 {
            match (&peer).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A TLS peer may end without close_notify: the answer is in.
                Err(_) if answer.starts_with(b"HTTP/1.1 200") => break,
                Err(e) => return Err(e),
            }
        }
        if !answer.starts_with(b"HTTP/1.1 200") {
            let line = String::from_utf8_lossy(&answer);
            return Err(io::Error::other(format!(
                "creating association: {:?}",
                line.lines().next().unwrap_or("")
            )));
        }
        Ok(())
    }

    /// Opens a WebSocket candidate with the crate's own peer side.
    fn websocket(
        &self,
        addr: SocketAddr,
        transport: Transport,
        method: Method,
        association: Uuid,
        candidate: Uuid,
    ) -> io::Result<Peer> {
        let connector = self
            .connector
            .as_ref()
            .ok_or_else(|| io::Error::other("relay endpoint without a connector"))?;
        let url = CandidateUrl::parse(&format!("{}://{addr}", transport.name()))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (relayed, _) = connector
            .open(&url, &JetRequest::v2(method, association, candidate))
            .map_err(|e| {
                io::Error::other(format!("{} {}: {e}", transport.name(), method.as_str()))
            })?;
        prepare(relayed.socket())?;
        Ok(Peer::Ws(Box::new(relayed)))
    }
}

fn direct_sockets(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    prepare(&server)?;
    prepare(&client)?;
    Ok((server, client))
}

fn prepare(sock: &TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))
}

// ---------------------------------------------------------------- peers

/// One peer's end of a pair, whatever the transport. One thread may read
/// while another writes (`&Peer` is `Read` and `Write`), as with `&TcpStream`.
enum Peer {
    Tcp(TcpStream),
    /// TLS, direct or with the relay: the bench's own split stream, the same
    /// code on both sides of every TLS connection it measures.
    Tls(Box<TlsPeer>),
    /// A WebSocket (ws or wss) opened with `jet_relay::peer::client`.
    Ws(Box<Relayed>),
}

impl Peer {
    /// The TCP socket underneath (timeouts, shutdown, poll).
    fn socket(&self) -> &TcpStream {
        match self {
            Peer::Tcp(sock) => sock,
            Peer::Tls(tls) => &tls.sock,
            Peer::Ws(ws) => ws.socket(),
        }
    }

    /// Ends our direction: FIN, close_notify, or a close frame.
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Peer::Tcp(sock) => sock.shutdown(Shutdown::Write),
            Peer::Tls(tls) => tls.shutdown_write(),
            Peer::Ws(ws) => ws.shutdown_write(),
        }
    }
}

impl Read for &Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Peer::Tcp(sock) => (&*sock).read(buf),
            Peer::Tls(tls) => tls.read(buf),
            Peer::Ws(ws) => ws.read(buf),
        }
    }
}

impl Write for &Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Peer::Tcp(sock) => (&*sock).write(buf),
            Peer::Tls(tls) => tls.write_all(buf).map(|()| buf.len()),
            // One frame per write: a 256 KiB chunk is one frame.
            Peer::Ws(ws) => ws.write_all(buf).map(|()| buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes of TLS records read from the socket at a time.
const TLS_READ: usize = 64 * 1024;

/// A TLS stream (client or server side) that one thread reads while another
/// writes: rustls is locked only around its own calls, never across a
/// socket read or write; the reader's buffer and the writer's records each
/// have their own lock.
struct TlsPeer {
    sock: TcpStream,
    conn: Mutex<rustls::Connection>,
    rx: Mutex<TlsRx>,
    tx: Mutex<Vec<u8>>,
}

struct TlsRx {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsPeer {
    /// Completes the handshake on a connected socket (single-threaded still).
    fn handshake(mut sock: TcpStream, mut conn: rustls::Connection) -> io::Result<TlsPeer> {
        while conn.is_handshaking() {
            let (read, written) = conn.complete_io(&mut sock)?;
            if read == 0 && written == 0 && conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(TlsPeer {
            sock,
            conn: Mutex::new(conn),
            rx: Mutex::new(TlsRx {
                buf: vec![0; TLS_READ],
                start: 0,
                end: 0,
                eof: false,
            }),
            tx: Mutex::new(Vec::new()),
        })
    }

    fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        // Only readers take `rx`; it may be held across the socket read.
        let mut rx = lock(&self.rx);
        loop {
            {
                let mut conn = lock(&self.conn);
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                // Feed records until plaintext shows (its buffer is bounded).
                while rx.start < rx.end {
                    let TlsRx {
                        buf, start, end, ..
                    } = &mut *rx;
                    let used = conn.read_tls(&mut &buf[*start..*end])?;
                    *start += used;
                    let state = conn.process_new_packets().map_err(tls_error)?;
                    if used == 0 || state.plaintext_bytes_to_read() > 0 {
                        break;
                    }
                }
                if rx.eof && rx.start == rx.end {
                    conn.read_tls(&mut io::empty())?;
                    conn.process_new_packets().map_err(tls_error)?;
                }
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && rx.eof => {
                        return Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if rx.start < rx.end {
                    continue;
                }
            }
            let TlsRx { buf, .. } = &mut *rx;
            let n = match (&self.sock).read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            rx.start = 0;
            rx.end = n;
            rx.eof = n == 0;
        }
    }

    fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let mut tx = lock(&self.tx);
        loop {
            {
                let mut conn = lock(&self.conn);
                let n = conn.writer().write(data)?;
                data = &data[n..];
                while conn.wants_write() {
                    conn.write_tls(&mut *tx)?;
                }
            }
            (&self.sock).write_all(&tx)?;
            tx.clear();
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        lock(&self.conn).send_close_notify();
        self.write_all(&[])?;
        self.sock.shutdown(Shutdown::Write)
    }
}

// ---------------------------------------------------------------- the relay process

/// The relay under test, started from its binary with a config on port 0.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
}

impl RelayProcess {
    fn start(opts: &Options, transport: Transport) -> io::Result<RelayProcess> {
        let config = std::env::temp_dir().join(format!("jet-bench-{}.toml", Uuid::new_v4()));
        let scheme = transport.listener_scheme();
        let tls = if transport.is_tls() {
            format!(
                "cert = {:?}\nkey = {:?}\n",
                test_data("server.pem"),
                test_data("server.key")
            )
        } else {
            String::new()
        };
        // zero_copy is written only to turn it off, so older relays (without
        // the key) can be measured too.
        let zero_copy = if opts.zero_copy {
            ""
        } else {
            "zero_copy = false\n"
        };
        std::fs::write(
            &config,
            format!(
                "instance = \"bench\"\nlog_level = \"warn\"\n{zero_copy}\n[[listeners]]\nurl = \"{scheme}://127.0.0.1:0\"\n{tls}"
            ),
        )?;
        let mut child = Command::new(&opts.relay)
            .arg("--config")
            .arg(&config)
            .env("JET_RELAY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {}: {e}", opts.relay.display())))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(&format!("listening {scheme}://"))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected relay output {line:?}")))?;
        Ok(RelayProcess {
            child,
            addr,
            config,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the relay has used.
    fn cpu_seconds(&self) -> io::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| io::Error::other("odd /proc/PID/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> io::Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| io::Error::other("odd /proc/PID/stat"))
        };
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        Ok((ticks(11)? + ticks(12)?) / clock_ticks())
    }

    /// Resident memory (bytes), threads and open descriptors.
    fn usage(&self) -> io::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count() as u64;
        Ok(Usage {
            rss: field("VmRSS:") * 1024,
            threads: field("Threads:"),
            fds,
        })
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

#[cfg(target_os = "linux")]
fn clock_ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks() -> f64 {
    100.0
}

#[derive(Clone, Copy, Debug)]
struct Usage {
    rss: u64,
    threads: u64,
    fds: u64,
}

/// Raises this process's descriptor limit (the relay inherits it): the soft
/// limit up to the hard one, and the hard one too when we may (root).
#[cfg(target_os = "linux")]
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    let want = Rlimit {
        current: Some(WANT_NOFILE),
        maximum: Some(WANT_NOFILE.max(old.maximum.unwrap_or(u64::MAX))),
    };
    if setrlimit(Resource::Nofile, want).is_ok() {
        return WANT_NOFILE;
    }
    let soft = old.maximum.map_or(WANT_NOFILE, |h| h.min(WANT_NOFILE));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: old.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(WANT_NOFILE)
}

#[cfg(not(target_os = "linux"))]
fn raise_nofile() -> u64 {
    1024
}

// ---------------------------------------------------------------- pattern

/// The known pseudo-random stream: byte `i` of stream `seed` is
/// `table[(start(seed) + i) % PATTERN_PERIOD]`. The table repeats its first
/// `CHUNK` bytes at the end so any chunk is one contiguous slice.
struct Pattern {
    table: Vec<u8>,
}

impl Pattern {
    fn new() -> Pattern {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut table = Vec::with_capacity(PATTERN_PERIOD + CHUNK);
        while table.len() < PATTERN_PERIOD {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let take = (PATTERN_PERIOD - table.len()).min(8);
            table.extend_from_slice(&x.to_le_bytes()[..take]);
        }
        table.extend_from_within(..CHUNK);
        Pattern { table }
    }

    fn start(seed: u64) -> usize {
        (seed.wrapping_mul(2_654_435_761) % PATTERN_PERIOD as u64) as usize
    }

    /// `len` (at most `CHUNK`) bytes of stream `seed` from position `pos`.
    fn slice(&self, seed: u64, pos: u64, len: usize) -> &[u8] {
        let off = (Self::start(seed) + (pos % PATTERN_PERIOD as u64) as usize) % PATTERN_PERIOD;
        &self.table[off..off + len]
    }
}

/// Writes `len` bytes of stream `seed`.
fn send_stream(sock: &Peer, pattern: &Pattern, seed: u64, len: u64) -> io::Result<()> {
    let mut sock = sock;
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(CHUNK as u64) as usize;
        sock.write_all(pattern.slice(seed, pos, n))?;
        pos += n as u64;
    }
    Ok(())
}

/// Reads exactly `len` bytes of stream `seed`, checking every one of them.
fn receive_stream(sock: &Peer, pattern: &Pattern, seed: u64, len: u64) -> io::Result<()> {
    let mut sock = sock;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < len {
        let want = (len - pos).min(CHUNK as u64) as usize;
        let n = match sock.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream {seed} ended after {pos} of {len} bytes"),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n] != *pattern.slice(seed, pos, n) {
            return Err(corrupt(seed, pos));
        }
        pos += n as u64;
    }
    Ok(())
}

fn corrupt(seed: u64, pos: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("CORRUPT: stream {seed} differs from the pattern near byte {pos}"),
    )
}

// ---------------------------------------------------------------- statistics

#[derive(Clone, Debug, Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One reported figure: a value per round for one target (or a ratio).
struct Figure {
    id: String,
    what: String,
    target: String,
    unit: &'static str,
    series: Series,
    /// The goal, for the table.
    goal: String,
    failed: Option<String>,
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        id: &str,
        what: &str,
        target: &str,
        unit: &'static str,
        series: Series,
        goal: &str,
        failed: Option<String>,
    ) {
        let f = Figure {
            id: id.into(),
            what: what.into(),
            target: target.into(),
            unit,
            series,
            goal: goal.into(),
            failed,
        };
        println!("BENCH {}", f.json());
        self.figures.push(f);
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| figure | target | median | min - max | unit | rounds | goal |\n|---|---|---|---|---|---|---|"
        );
        for f in &self.figures {
            let (median, range) = match &f.failed {
                Some(why) => ("FAILED".to_owned(), why.clone()),
                None => (
                    fmt_num(f.series.median()),
                    format!("{} - {}", fmt_num(f.series.min()), fmt_num(f.series.max())),
                ),
            };
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} | {} | {} | {} |",
                f.id,
                f.what,
                f.target,
                median,
                range,
                f.unit,
                f.series.0.len(),
                f.goal
            );
        }
        out
    }
}

impl Figure {
    fn json(&self) -> String {
        let num = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
        json!({
            "figure": self.id,
            "what": self.what,
            "target": self.target,
            "unit": self.unit,
            "median": if self.failed.is_some() { json!(0) } else { num(self.series.median()) },
            "min": num(self.series.min()),
            "max": num(self.series.max()),
            "rounds": self.series.0.len(),
            "values": self.series.0,
            "ok": self.failed.is_none(),
            "error": self.failed,
        })
        .to_string()
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Results of one figure for every target over the rounds; the first
/// error fails the figure for that target.
struct Rounds {
    per_target: Vec<(Target, Vec<Series>, Option<String>)>,
}

impl Rounds {
    fn new(targets: &[Target], values: usize) -> Rounds {
        Rounds {
            per_target: targets
                .iter()
                .map(|t| (*t, vec![Series::default(); values], None))
                .collect(),
        }
    }

    fn record(&mut self, target: Target, result: io::Result<Vec<f64>>) {
        let entry = self
            .per_target
            .iter_mut()
            .find(|(t, _, _)| *t == target)
            .expect("targets are registered up front");
        match result {
            Ok(values) => {
                for (series, v) in entry.1.iter_mut().zip(values) {
                    series.push(v);
                }
            }
            Err(e) => {
                eprintln!("  {}: {e}", target.name());
                entry.2.get_or_insert(e.to_string());
            }
        }
    }

    fn series(&self, target: Target, index: usize) -> (Series, Option<String>) {
        let entry = self
            .per_target
            .iter()
            .find(|(t, _, _)| *t == target)
            .expect("targets are registered up front");
        (entry.1[index].clone(), entry.2.clone())
    }

    /// Round-by-round ratio of `target` to `baseline` (same round, so the
    /// same machine conditions); failed when either failed.
    fn ratio_to(&self, target: Target, baseline: Target, index: usize) -> (Series, Option<String>) {
        let (t, t_err) = self.series(target, index);
        let (d, d_err) = self.series(baseline, index);
        let series = Series(t.0.iter().zip(&d.0).map(|(a, b)| a / b).collect());
        (series, t_err.or(d_err))
    }
}

// ---------------------------------------------------------------- figures

/// (a) One pair, `bytes` one way. Returns [MB/s, relay CPU s/GB].
fn single_pair(
    ep: &Endpoint,
    relay: Option<&RelayProcess>,
    pattern: &Pattern,
    bytes: u64,
    seed: u64,
) -> io::Result<Vec<f64>> {
    let (server, client) = ep.pair()?;
    let cpu_before = relay.map(|r| r.cpu_seconds()).transpose()?;
    let started = Instant::now();
    let sent = thread::scope(|s| {
        let sender = s.spawn(|| {
            send_stream(&client, pattern, seed, bytes)?;
            client.shutdown_write()
        });
        let received = receive_stream(&server, pattern, seed, bytes);
        let took = started.elapsed();
        let sent = sender
            .join()
            .map_err(|_| io::Error::other("sender panicked"))?;
        received.and(sent).map(|()| took)
    })?;
    let cpu = match (relay, cpu_before) {
        (Some(r), Some(before)) => (r.cpu_seconds()? - before) / (bytes as f64 / 1e9),
        _ => f64::NAN,
    };
    Ok(vec![bytes as f64 / sent.as_secs_f64() / 1e6, cpu])
}

/// (b) `pairs` pairs, `bytes` each way per pair, all at once, a blocking
/// thread per stream end (as a thread-per-connection application would).
/// Returns [aggregate MB/s].
fn many_pairs_threads(
    ep: &Endpoint,
    pattern: &Pattern,
    pairs: usize,
    bytes: u64,
) -> io::Result<Vec<f64>> {
    let socks: Vec<(Peer, Peer)> = (0..pairs).map(|_| ep.pair()).collect::<io::Result<_>>()?;
    let barrier = Barrier::new(pairs * 4 + 1);
    let failure = Mutex::new(None::<io::Error>);
    let mut started = Instant::now();
    thread::scope(|s| {
        for (i, (server, client)) in socks.iter().enumerate() {
            let up = 2 * i as u64 + 1000;
            let down = up + 1;
            let (barrier, failure) = (&barrier, &failure);
            let run = move |f: &dyn Fn() -> io::Result<()>| {
                barrier.wait();
                if let Err(e) = f() {
                    failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            };
            s.spawn(move || run(&|| send_stream(client, pattern, up, bytes)));
            s.spawn(move || run(&|| receive_stream(server, pattern, up, bytes)));
            s.spawn(move || run(&|| send_stream(server, pattern, down, bytes)));
            s.spawn(move || run(&|| receive_stream(client, pattern, down, bytes)));
        }
        // Timed from just before the barrier opens: with hundreds of threads
        // starting, this thread may run again only after they are done.
        started = Instant::now();
        barrier.wait();
    });
    let wall = started.elapsed();
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(vec![
        (bytes * 2 * pairs as u64) as f64 / wall.as_secs_f64() / 1e6,
    ])
}

/// (b) fairness: the same streams, served by one poll loop per core,
/// round-robin, so the bench itself treats every stream alike (with hundreds
/// of blocking threads on two cores the scheduler ran a few streams to
/// completion while others had not begun, relay or not). Each round gives
/// every ready stream the same byte quantum ([`CHUNK`]), read or written in
/// as many calls as it takes: one call per stream per round was fair per call,
/// not per byte, and a socket whose receive window the kernel had left small
/// (91 KiB against 2-7 MiB for the others) got a third of the share whenever
/// the bench, not the relay, was the bottleneck. Returns [aggregate MB/s,
/// slowest stream MB/s, slowest / mean].
/// Fairness is read while the streams compete: when half of
/// them have completed, each stream's progress so far gives its rate, and a
/// starved stream shows far behind. (Rates over whole streams say little: the
/// last to finish always gets exactly the average share.)
#[cfg(target_os = "linux")]
fn many_pairs_poll(
    ep: &Endpoint,
    pattern: &Pattern,
    pairs: usize,
    bytes: u64,
) -> io::Result<Vec<f64>> {
    let peers: Vec<(Peer, Peer)> = (0..pairs).map(|_| ep.pair()).collect::<io::Result<_>>()?;
    let socks: Vec<(&TcpStream, &TcpStream)> = peers
        .iter()
        .map(|(server, client)| match (server, client) {
            (Peer::Tcp(server), Peer::Tcp(client)) => Ok((server, client)),
            _ => Err(io::Error::other("the poll loop moves plain TCP only")),
        })
        .collect::<io::Result<_>>()?;
    // Each socket sends one stream and receives the other of its pair.
    let mut ends = Vec::with_capacity(pairs * 2);
    for (i, (server, client)) in socks.iter().enumerate() {
        let up = 2 * i as u64 + 1000;
        let down = up + 1;
        ends.push(End::new(client, up, down, 2 * i + 1));
        ends.push(End::new(server, down, up, 2 * i));
    }
    for end in &ends {
        end.sock.set_nonblocking(true)?;
    }
    let loops = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(ends.len());
    let progress: Vec<AtomicU64> = (0..pairs * 2).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicU64::new(0);
    let snapshot = std::sync::OnceLock::<(Duration, Vec<u64>)>::new();
    let half = pairs as u64;
    let started = Instant::now();
    let shared = Shared {
        pattern,
        bytes,
        progress: &progress,
        done: &done,
        half,
        snapshot: &snapshot,
        started,
    };
    let mut groups: Vec<Vec<End>> = (0..loops).map(|_| Vec::new()).collect();
    for (i, end) in ends.into_iter().enumerate() {
        groups[i % loops].push(end);
    }
    let results: Vec<io::Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let shared = &shared;
                s.spawn(move || poll_loop(group, shared))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("poll loop panicked")))
            })
            .collect()
    });
    let wall = started.elapsed();
    results.into_iter().collect::<io::Result<Vec<()>>>()?;
    let (at, seen) = snapshot
        .into_inner()
        .ok_or_else(|| io::Error::other("no stream finished"))?;
    if std::env::var_os("JET_BENCH_DEBUG").is_some() {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        let kib: Vec<u64> = sorted.iter().map(|b| b >> 10).collect();
        eprintln!("    half the streams done at {at:?} of {wall:?}; progress (KiB) {kib:?}");
        let mean = seen.iter().sum::<u64>() / seen.len() as u64;
        let slow: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] < mean / 2).collect();
        eprintln!("    streams below half the mean: {slow:?}");
    }
    let rates: Vec<f64> = seen
        .iter()
        .map(|b| *b as f64 / at.as_secs_f64() / 1e6)
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let aggregate = (bytes * 2 * pairs as u64) as f64 / wall.as_secs_f64() / 1e6;
    Ok(vec![aggregate, slowest, slowest / mean])
}

#[cfg(not(target_os = "linux"))]
fn many_pairs_poll(_: &Endpoint, _: &Pattern, _: usize, _: u64) -> io::Result<Vec<f64>> {
    Err(io::Error::other("(b) needs Linux (poll through rustix)"))
}

/// One peer socket in a poll loop: sends stream `send`, receives stream `recv`.
struct End<'a> {
    sock: &'a TcpStream,
    send: u64,
    recv: u64,
    /// Index of the received stream in the progress table.
    index: usize,
    sent: u64,
    received: u64,
}

impl<'a> End<'a> {
    fn new(sock: &'a TcpStream, send: u64, recv: u64, index: usize) -> End<'a> {
        End {
            sock,
            send,
            recv,
            index,
            sent: 0,
            received: 0,
        }
    }
}

/// What the poll loops of (b) share.
struct Shared<'a> {
    pattern: &'a Pattern,
    bytes: u64,
    progress: &'a [AtomicU64],
    done: &'a AtomicU64,
    half: u64,
    snapshot: &'a std::sync::OnceLock<(Duration, Vec<u64>)>,
    started: Instant,
}

/// Moves bytes on every ready socket of `ends` until all are sent and received.
#[cfg(target_os = "linux")]
fn poll_loop(mut ends: Vec<End<'_>>, shared: &Shared<'_>) -> io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let timeout = Timespec {
        tv_sec: IO_TIMEOUT.as_secs() as i64,
        tv_nsec: 0,
    };
    let mut buf = vec![0u8; CHUNK];
    let bytes = shared.bytes;
    loop {
        let live: Vec<usize> = (0..ends.len())
            .filter(|&i| ends[i].sent < bytes || ends[i].received < bytes)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let mut fds: Vec<PollFd<'_>> = live
            .iter()
            .map(|&i| {
                let e = &ends[i];
                let mut flags = PollFlags::empty();
                if e.sent < bytes {
                    flags |= PollFlags::OUT;
                }
                if e.received < bytes {
                    flags |= PollFlags::IN;
                }
                PollFd::new(e.sock, flags)
            })
            .collect();
        if poll(&mut fds, Some(&timeout))? == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no stream moved"));
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        for (&i, revents) in live.iter().zip(ready) {
            let e = &mut ends[i];
            if revents.intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP)
                && e.sent < bytes
            {
                // Up to one quantum per round, in as many writes as it takes.
                let goal = (e.sent + CHUNK as u64).min(bytes);
                while e.sent < goal {
                    let n = (goal - e.sent) as usize;
                    match (&*e.sock).write(shared.pattern.slice(e.send, e.sent, n)) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => e.sent += n as u64,
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) => return Err(err),
                    }
                }
            }
            if revents.intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP)
                && e.received < bytes
            {
                // Up to one quantum per round, in as many reads as it takes.
                let goal = (e.received + CHUNK as u64).min(bytes);
                while e.received < goal {
                    let want = (goal - e.received) as usize;
                    match (&*e.sock).read(&mut buf[..want]) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("stream {} ended after {} bytes", e.recv, e.received),
                            ))
                        }
                        Ok(n) => {
                            if buf[..n] != *shared.pattern.slice(e.recv, e.received, n) {
                                return Err(corrupt(e.recv, e.received));
                            }
                            e.received += n as u64;
                            shared.progress[e.index].fetch_add(n as u64, Ordering::Relaxed);
                            if e.received == bytes
                                && shared.done.fetch_add(1, Ordering::Relaxed) + 1 == shared.half
                            {
                                shared.snapshot.get_or_init(|| {
                                    let seen =
                                        shared.progress.iter().map(|p| p.load(Ordering::Relaxed));
                                    (shared.started.elapsed(), seen.collect())
                                });
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) => return Err(err),
                    }
                }
            }
        }
    }
}

/// (c) Round trips of `size`-byte messages through one pair (the server peer
/// echoes). Returns [p50 µs, p99 µs].
fn latency(
    ep: &Endpoint,
    pattern: &Pattern,
    size: usize,
    count: usize,
    seed: u64,
) -> io::Result<Vec<f64>> {
    let (server, client) = ep.pair()?;
    let total = WARMUP + count;
    let mut times = Vec::with_capacity(count);
    thread::scope(|s| {
        let echo = s.spawn(|| -> io::Result<()> {
            let mut buf = vec![0u8; size];
            let mut server = &server;
            for _ in 0..total {
                server.read_exact(&mut buf)?;
                server.write_all(&buf)?;
            }
            Ok(())
        });
        let mut client_ref = &client;
        let mut buf = vec![0u8; size];
        let result = (|| -> io::Result<()> {
            for i in 0..total {
                let pos = (i * size) as u64;
                let msg = pattern.slice(seed, pos, size);
                let t0 = Instant::now();
                client_ref.write_all(msg)?;
                client_ref.read_exact(&mut buf)?;
                let took = t0.elapsed();
                if buf != msg {
                    return Err(corrupt(seed, pos));
                }
                if i >= WARMUP {
                    times.push(took.as_secs_f64() * 1e6);
                }
            }
            Ok(())
        })();
        if result.is_err() {
            // Unblock the echo thread.
            let _ = client.socket().shutdown(Shutdown::Both);
        }
        let echoed = echo.join().map_err(|_| io::Error::other("echo panicked"))?;
        result.and(echoed)
    })?;
    times.sort_by(f64::total_cmp);
    Ok(vec![percentile(&times, 50.0), percentile(&times, 99.0)])
}

/// One association (or, direct, one connection): pair, a 1-byte round trip,
/// then an orderly close both ways through the target.
fn one_association(ep: &Endpoint, own: Option<&TcpListener>, n: u64) -> io::Result<()> {
    let (server, client) = ep.pair_with(own)?;
    let (mut server, mut client) = (&server, &client);
    let byte = [(n % 251) as u8];
    client.write_all(&byte)?;
    let mut got = [0u8; 1];
    server.read_exact(&mut got)?;
    if got != byte {
        return Err(corrupt(n, 0));
    }
    server.write_all(&got)?;
    client.read_exact(&mut got)?;
    if got != byte {
        return Err(corrupt(n, 1));
    }
    // Close: the client ends its side; the server sees the end, ends its
    // own; the client sees that. Both ends then know the target let go.
    client.shutdown_write()?;
    if server.read(&mut got)? != 0 {
        return Err(io::Error::other("bytes after the round trip"));
    }
    server.shutdown_write()?;
    if client.read(&mut got)? != 0 {
        return Err(io::Error::other("bytes after the round trip"));
    }
    Ok(())
}

/// (d) Associations per second with `concurrency` peers pairing in a loop
/// for `seconds`; an association counts if it closed within the window.
/// Returns [associations/s, relay CPU µs per association].
fn association_rate(
    ep: &Endpoint,
    relay: Option<&RelayProcess>,
    concurrency: usize,
    seconds: f64,
) -> io::Result<Vec<f64>> {
    let cpu_before = relay.map(|r| r.cpu_seconds()).transpose()?;
    let done = AtomicU64::new(0);
    let barrier = Barrier::new(concurrency + 1);
    let failure = Mutex::new(None::<io::Error>);
    let listeners: Vec<Option<TcpListener>> = (0..concurrency)
        .map(|_| match ep.target {
            Target::Direct | Target::DirectTls => TcpListener::bind("127.0.0.1:0").map(Some),
            Target::Relay(_) => Ok(None),
        })
        .collect::<io::Result<_>>()?;
    let window = Duration::from_secs_f64(seconds);
    let start = Mutex::new(Instant::now());
    thread::scope(|s| {
        for (w, own) in listeners.iter().enumerate() {
            let (done, barrier, failure, start) = (&done, &barrier, &failure, &start);
            s.spawn(move || {
                barrier.wait();
                let deadline = *start.lock().unwrap_or_else(|e| e.into_inner()) + window;
                let mut n = (w as u64) << 40;
                while Instant::now() < deadline {
                    if let Err(e) = one_association(ep, own.as_ref(), n) {
                        failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                    if Instant::now() <= deadline {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            });
        }
        *start.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        barrier.wait();
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let count = done.load(Ordering::Relaxed) as f64;
    let cpu = match (relay, cpu_before) {
        (Some(r), Some(before)) => (r.cpu_seconds()? - before) * 1e6 / count,
        _ => f64::NAN,
    };
    Ok(vec![count / seconds, cpu])
}

/// Waits until the relay's threads and descriptors are back to `base` (or
/// `SETTLE` passes) and returns the last usage seen.
fn settle(relay: &RelayProcess, base: Usage) -> io::Result<(Usage, Duration)> {
    let started = Instant::now();
    loop {
        let now = relay.usage()?;
        if (now.threads <= base.threads && now.fds <= base.fds) || started.elapsed() > SETTLE {
            return Ok((now, started.elapsed()));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (e) Holds `pairs` idle pairs on a fresh relay. Returns, per pair:
/// [RSS KiB idle, threads, fds, RSS KiB after a round trip on each, threads,
/// fds], then after close [RSS KiB above baseline, threads above, fds above,
/// seconds to settle].
fn idle_capacity(opts: &Options, transport: Transport, pairs: usize) -> io::Result<Vec<f64>> {
    let relay = RelayProcess::start(opts, transport)?;
    let ep = Endpoint::relay(transport, relay.addr, None);
    // The baseline: a fresh relay (main, signal, listener and reaper threads).
    let base = relay.usage()?;
    let mut held = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        held.push(ep.pair()?);
    }
    let per = |u: Usage| {
        let n = pairs as f64;
        [
            (u.rss as f64 - base.rss as f64) / 1024.0 / n,
            (u.threads as f64 - base.threads as f64) / n,
            (u.fds as f64 - base.fds as f64) / n,
        ]
    };
    let idle = relay.usage()?;
    // A round trip on every held pair.
    for (i, (server, client)) in held.iter().enumerate() {
        let (mut server, mut client) = (server, client);
        let byte = [(i % 251) as u8];
        let mut got = [0u8; 1];
        client.write_all(&byte)?;
        server.read_exact(&mut got)?;
        if got != byte {
            return Err(corrupt(i as u64, 0));
        }
        server.write_all(&got)?;
        client.read_exact(&mut got)?;
        if got != byte {
            return Err(corrupt(i as u64, 1));
        }
    }
    let used = relay.usage()?;
    drop(held);
    let (after, took) = settle(&relay, base)?;
    let mut out = Vec::new();
    out.extend(per(idle));
    out.extend(per(used));
    out.push((after.rss as f64 - base.rss as f64) / 1024.0);
    out.push(after.threads as f64 - base.threads as f64);
    out.push(after.fds as f64 - base.fds as f64);
    out.push(took.as_secs_f64());
    eprintln!(
        "    base {:?}, {pairs} idle {:?}, after round trips {:?}, after close {:?}",
        base, idle, used, after
    );
    Ok(out)
}

// ---------------------------------------------------------------- main

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let opts = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("jet-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("jet-bench: {e}");
        std::process::exit(1);
    }
}

fn run(opts: &Options) -> io::Result<()> {
    let nofile = raise_nofile();
    eprintln!("jet-bench: descriptor limit {nofile}; options {opts:?}");
    let pattern = Pattern::new();
    let mut report = Report::default();
    let wants = |c: char| opts.only.contains(&c);
    let tls_configs = if opts.transports.iter().any(|t| t.is_tls()) {
        Some(TlsConfigs::load()?)
    } else {
        None
    };
    // Relay CPU per GB of (a) by transport, to compare TLS with plain TCP.
    let mut cpu_medians: Vec<(Transport, f64)> = Vec::new();
    for &transport in &opts.transports {
        let relay = RelayProcess::start(opts, transport)?;
        eprintln!(
            "jet-bench: relay pid {} on {} (zero_copy = {})",
            relay.pid(),
            relay.addr,
            opts.zero_copy
        );
        let relay_target = Target::Relay(transport);
        // Over TLS the relay is also measured against a direct TLS
        // connection, which pays for the same cryptography once.
        let (targets, direct_tls) = match &tls_configs {
            Some(tls) if transport.is_tls() => (
                vec![Target::Direct, Target::DirectTls, relay_target],
                Some(Endpoint::direct_tls(Arc::clone(tls))?),
            ),
            _ => (vec![Target::Direct, relay_target], None),
        };
        let baselines: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| *t != relay_target)
            .collect();
        let direct = Endpoint::direct()?;
        let via = Endpoint::relay(transport, relay.addr, tls_configs.clone());
        let endpoint = |t: Target| match (t, &direct_tls) {
            (Target::Direct, _) => &direct,
            (Target::DirectTls, Some(ep)) => ep,
            _ => &via,
        };
        let is_relay = |t: Target| matches!(t, Target::Relay(_));
        let rname = relay_target.name();
        let unit = |b: Target| {
            if b == Target::Direct {
                "x direct"
            } else {
                "x direct-tls"
            }
        };
        let versus = |b: Target| {
            if b == Target::Direct {
                String::new()
            } else {
                format!(" to {}", b.name())
            }
        };

        if wants('a') {
            eprintln!("(a) one pair, {} bytes one way", opts.a_bytes);
            let mut rounds = Rounds::new(&targets, 2);
            for round in 0..opts.rounds {
                for t in order(&targets, round) {
                    let r = single_pair(
                        endpoint(t),
                        is_relay(t).then_some(&relay),
                        &pattern,
                        opts.a_bytes,
                        round as u64,
                    );
                    eprintln!("  round {round} {}: {}", t.name(), short(&r));
                    rounds.record(t, r);
                }
            }
            for &t in &targets {
                let (v, e) = rounds.series(t, 0);
                report.add("a", "1 pair throughput", &t.name(), "MB/s", v, "", e);
            }
            for &b in &baselines {
                let (ratio, e) = rounds.ratio_to(relay_target, b, 0);
                let goal = if b == Target::Direct { ">= 0.45" } else { "" };
                let what = format!("1 pair ratio{}", versus(b));
                report.add("a", &what, &rname, unit(b), ratio, goal, e);
            }
            let (cpu, ce) = rounds.series(relay_target, 1);
            if ce.is_none() {
                cpu_medians.push((transport, cpu.median()));
            }
            report.add("a", "relay CPU", &rname, "s/GB", cpu, "<= 0.25", ce);
        }

        if wants('b') {
            eprintln!(
                "(b) {} pairs, {} bytes each way per pair",
                opts.b_pairs, opts.b_bytes
            );
            let mut rounds = Rounds::new(&targets, 1);
            let mut fairness = Rounds::new(&targets, 3);
            for round in 0..opts.rounds {
                for t in order(&targets, round) {
                    let r = many_pairs_threads(endpoint(t), &pattern, opts.b_pairs, opts.b_bytes);
                    eprintln!("  round {round} {} (threads): {}", t.name(), short(&r));
                    rounds.record(t, r);
                }
                // The poll loop moves plain TCP only; other transports read
                // fairness from the blocking threads (see many_pairs_threads).
                if transport == Transport::Tcp {
                    for t in order(&targets, round) {
                        let r = many_pairs_poll(endpoint(t), &pattern, opts.b_pairs, opts.b_bytes);
                        eprintln!("  round {round} {} (poll): {}", t.name(), short(&r));
                        fairness.record(t, r);
                    }
                }
            }
            for &t in &targets {
                let (agg, e) = rounds.series(t, 0);
                report.add("b", "aggregate", &t.name(), "MB/s", agg, "", e);
            }
            for &b in &baselines {
                let (ratio, e) = rounds.ratio_to(relay_target, b, 0);
                let goal = if b == Target::Direct { ">= 0.50" } else { "" };
                let what = format!("aggregate ratio{}", versus(b));
                report.add("b", &what, &rname, unit(b), ratio, goal, e);
            }
            // Fairness needs the poll loop, which moves plain TCP only: with
            // blocking threads the slowest stream has not started when half
            // have finished, relay or not (0 for direct too), so that would
            // measure the scheduler, not the relay.
            for &t in targets.iter().filter(|_| transport == Transport::Tcp) {
                let (slow, e) = fairness.series(t, 1);
                report.add("b", "slowest stream (poll)", &t.name(), "MB/s", slow, "", e);
                let (fair, e) = fairness.series(t, 2);
                let goal = if is_relay(t) { ">= 0.5" } else { "" };
                report.add("b", "slowest / mean (poll)", &t.name(), "x", fair, goal, e);
            }
        }

        if wants('c') {
            for size in [64usize, 16 * 1024] {
                eprintln!(
                    "(c) latency, {size}-byte messages, {} round trips",
                    opts.c_count
                );
                let mut rounds = Rounds::new(&targets, 2);
                for round in 0..opts.rounds {
                    for t in order(&targets, round) {
                        let r = latency(endpoint(t), &pattern, size, opts.c_count, round as u64);
                        eprintln!("  round {round} {}: {}", t.name(), short(&r));
                        rounds.record(t, r);
                    }
                }
                let label = if size == 64 { "64 B" } else { "16 KiB" };
                for &t in &targets {
                    let (p50, e) = rounds.series(t, 0);
                    report.add("c", &format!("p50 {label}"), &t.name(), "us", p50, "", e);
                    let (p99, e) = rounds.series(t, 1);
                    report.add("c", &format!("p99 {label}"), &t.name(), "us", p99, "", e);
                }
                for &b in &baselines {
                    let (r50, e) = rounds.ratio_to(relay_target, b, 0);
                    let goal = if b == Target::Direct { "<= 2.0" } else { "" };
                    let what = format!("p50 ratio {label}{}", versus(b));
                    report.add("c", &what, &rname, unit(b), r50, goal, e);
                    let (r99, e) = rounds.ratio_to(relay_target, b, 1);
                    let what = format!("p99 ratio {label}{}", versus(b));
                    report.add("c", &what, &rname, unit(b), r99, "", e);
                }
            }
        }

        // Handshake rate and idle capacity are figures of the relay's core,
        // measured over plain TCP.
        if wants('d') && transport == Transport::Tcp {
            for &c in &opts.d_concurrency {
                eprintln!(
                    "(d) associations/s at concurrency {c}, {} s",
                    opts.d_seconds
                );
                let mut rounds = Rounds::new(&targets, 2);
                for round in 0..opts.rounds {
                    for t in order(&targets, round) {
                        let r = association_rate(
                            endpoint(t),
                            is_relay(t).then_some(&relay),
                            c,
                            opts.d_seconds,
                        );
                        eprintln!("  round {round} {}: {}", t.name(), short(&r));
                        rounds.record(t, r);
                    }
                }
                for &t in &targets {
                    let (rate, e) = rounds.series(t, 0);
                    let goal = if t != Target::Direct && c == 4 {
                        ">= 5000"
                    } else {
                        ""
                    };
                    let what = if t == Target::Direct {
                        format!("connections/s, concurrency {c}")
                    } else {
                        format!("associations/s, concurrency {c}")
                    };
                    report.add("d", &what, &t.name(), "1/s", rate, goal, e);
                }
                let (cpu, e) = rounds.series(relay_target, 1);
                let what = format!("relay CPU per association, concurrency {c}");
                report.add("d", &what, &rname, "us", cpu, "", e);
            }
        }
        drop(relay);

        if wants('e') && transport == Transport::Tcp {
            for &wanted in &opts.e_pairs {
                // Each pair is two sockets here and two in the relay, which
                // inherits our limit; without CAP_SYS_RESOURCE the hard limit
                // stays where it is (20,000 on the reference machine).
                let pairs = wanted.min((nofile.saturating_sub(RESERVED_FDS) / 2) as usize);
                if pairs < wanted {
                    eprintln!(
                        "(e) {wanted} pairs need {} descriptors per process, the limit is {nofile}: holding {pairs}",
                        2 * wanted as u64 + RESERVED_FDS
                    );
                }
                eprintln!("(e) {pairs} idle pairs on a fresh relay");
                let mut rounds = Rounds::new(&[relay_target], 10);
                // Holding 10,000 pairs takes a while: one round is enough to
                // read memory and counts, which vary little.
                let r = idle_capacity(opts, transport, pairs);
                eprintln!("  {rname}: {}", short(&r));
                rounds.record(relay_target, r);
                let names = [
                    ("RSS per idle pair", "KiB", "<= 32"),
                    ("threads per idle pair", "", "<= 2"),
                    ("fds per idle pair", "", ""),
                    ("RSS per pair after a round trip", "KiB", ""),
                    ("threads per pair after a round trip", "", ""),
                    ("fds per pair after a round trip", "", ""),
                    ("RSS above baseline after close", "KiB", ""),
                    ("threads above baseline after close", "", "0"),
                    ("fds above baseline after close", "", "0"),
                    ("time to settle after close", "s", ""),
                ];
                for (i, (what, unit, goal)) in names.into_iter().enumerate() {
                    let (s, e) = rounds.series(relay_target, i);
                    report.add(
                        "e",
                        &format!("{what}, {pairs} pairs"),
                        &rname,
                        unit,
                        s,
                        goal,
                        e,
                    );
                }
            }
        }
    }
    // The TLS goal: relay CPU per GB over TLS within 3x of plain TCP.
    if let Some(&(_, tcp)) = cpu_medians.iter().find(|(t, _)| *t == Transport::Tcp) {
        for &(t, cpu) in cpu_medians.iter().filter(|(t, _)| *t != Transport::Tcp) {
            let goal = if t == Transport::Tls { "<= 3" } else { "" };
            let what = "relay CPU per GB, ratio of medians to tcp";
            let name = Target::Relay(t).name();
            report.add(
                "a",
                what,
                &name,
                "x tcp",
                Series(vec![cpu / tcp]),
                goal,
                None,
            );
        }
    }
    println!();
    print!("{}", report.table());
    Ok(())
}

/// Targets in the order of this round: alternating which goes first, so
/// neither always runs on a warmer (or more tired) machine.
fn order(targets: &[Target], round: usize) -> Vec<Target> {
    let mut v = targets.to_vec();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

fn short(r: &io::Result<Vec<f64>>) -> String {
    match r {
        Ok(v) => v.iter().map(|x| fmt_num(*x)).collect::<Vec<_>>().join(" "),
        Err(e) => format!("error: {e}"),
    }
}
