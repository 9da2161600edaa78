//! The relay process's life as an operator runs it: systemd readiness, drain
//! on SIGTERM (a second one cuts), reload on SIGHUP, socket activation.

use crate::process::{config_file, RelayProcess, BIN};
use crate::support::{data_file, pattern, tls_connect, v2, WAIT};
use jet_relay::wire::message::Method;
use jet_relay::wire::packet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const ON_PORT_0: &str = "[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\n";

/// A private folder under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("jet-relay-{what}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A stand-in for systemd's notification socket.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path = dir.0.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        NotifySocket {
            sock,
            path,
            _dir: dir,
        }
    }

    /// The next datagram, as text.
    #[track_caller]
    fn next(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("a notification within the wait");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits for the datagram that starts with `state` and returns it.
    #[track_caller]
    fn expect(&self, state: &str) -> String {
        let got = self.next();
        assert!(got.starts_with(state), "expected {state}, got {got:?}");
        got
    }
}

/// Starts the relay with `config`, `NOTIFY_SOCKET` pointing at `notify`, and
/// reads the `listening` lines of `listeners` listeners.
fn start(config: &str, notify: &NotifySocket, listeners: usize) -> (RelayProcess, impl Drop) {
    let file = config_file(config);
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&file.0)
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(Stdio::null());
    (
        RelayProcess::launch_with_listeners(command, listeners),
        file,
    )
}

/// An accepted and connected pair of raw TCP peers on a fresh association.
fn tcp_pair(url: &str) -> (TcpStream, TcpStream) {
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let (server, _) = crate::support::open_tcp_candidate(url, Method::Accept, a, c).unwrap();
    let (client, _) = crate::support::open_tcp_candidate(url, Method::Connect, a, c).unwrap();
    for sock in [&server, &client] {
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_write_timeout(Some(WAIT)).unwrap();
    }
    (server, client)
}

/// A relay with `drain_timeout` (seconds, as written in relay.toml), ready,
/// and a pair on it that has carried a byte (so it is selected and relaying).
fn relaying(drain_timeout: &str) -> (NotifySocket, RelayProcess, impl Drop, TcpStream, TcpStream) {
    let notify = NotifySocket::new();
    let (relay, file) = start(
        &format!("drain_timeout = {drain_timeout}\n{ON_PORT_0}"),
        &notify,
        1,
    );
    notify.expect("READY=1");
    let (mut server, mut client) = tcp_pair(&relay.url);
    client.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    server.read_exact(&mut one).unwrap();
    (notify, relay, file, server, client)
}

#[track_caller]
fn assert_reset(sock: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    match sock.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a reset, got {other:?}"),
    }
}

#[test]
fn ready_reloading_and_stopping_reach_the_notify_socket() {
    let notify = NotifySocket::new();
    let (mut relay, _file) = start(ON_PORT_0, &notify, 1);
    assert_eq!(notify.expect("READY=1"), "READY=1");
    relay.signal("HUP");
    let reloading = notify.expect("RELOADING=1");
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "systemd 253+ wants the reload's time: {reloading:?}"
    );
    notify.expect("READY=1");
    relay.signal("TERM");
    notify.expect("STOPPING=1");
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_drain_lets_a_running_transfer_finish_refuses_new_connections_and_exits_zero() {
    let notify = NotifySocket::new();
    let (mut relay, _file) = start(&format!("drain_timeout = 20\n{ON_PORT_0}"), &notify, 1);
    notify.expect("READY=1");
    let (mut server, mut client) = tcp_pair(&relay.url);
    let up = pattern(11, 4 << 20);
    let half = up.len() / 2;
    client.write_all(&up[..half]).unwrap();
    let mut got = vec![0u8; half];
    server.read_exact(&mut got).unwrap();
    // A parked accept is not a relaying pair: the drain closes it.
    let (mut parked, _) = crate::support::open_tcp_candidate(
        &relay.url,
        Method::Accept,
        Uuid::new_v4(),
        Uuid::new_v4(),
    )
    .unwrap();
    parked.set_read_timeout(Some(WAIT)).unwrap();

    relay.signal("TERM");
    notify.expect("STOPPING=1");
    let refused = TcpStream::connect(relay.addr(0)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_reset(&mut parked, "the parked accept");

    // The running pair goes on, both ways, to its own end.
    client.write_all(&up[half..]).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    got.extend_from_slice(&rest);
    assert!(got == up, "the transfer arrived whole and exact");
    let down = pattern(12, 1 << 20);
    server.write_all(&down).unwrap();
    server.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    assert!(back == down, "the reply arrived whole and exact");
    drop((server, client));
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success(), "exit 0 after a drain: {status:?}");
}

#[test]
fn the_drain_timeout_cuts_the_pairs_left_with_a_reset() {
    let (_notify, mut relay, _file, mut server, mut client) = relaying("0.5");
    let signalled = Instant::now();
    relay.signal("TERM");
    assert_reset(&mut server, "the server peer after the drain timeout");
    assert_reset(&mut client, "the client peer after the drain timeout");
    assert!(
        signalled.elapsed() >= Duration::from_millis(500),
        "cut only once drain_timeout passed"
    );
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_second_signal_cuts_at_once() {
    let (notify, mut relay, _file, mut server, mut client) = relaying("300");
    relay.signal("TERM");
    notify.expect("STOPPING=1");
    relay.signal("INT");
    assert_reset(&mut server, "the server peer after a second signal");
    assert_reset(&mut client, "the client peer after a second signal");
    let (status, took) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    assert!(took < WAIT, "far sooner than drain_timeout");
}

#[test]
fn health_answers_503_draining_on_the_metrics_listener_while_a_pair_drains() {
    let notify = NotifySocket::new();
    let config = format!("drain_timeout = 20\nmetrics_listen = \"127.0.0.1:0\"\n{ON_PORT_0}");
    let (mut relay, _file) = start(&config, &notify, 1);
    notify.expect("READY=1");
    let metrics_addr = metrics_address(&mut relay);
    assert_eq!(health(metrics_addr).0, 200);
    let (server, client) = tcp_pair(&relay.url);
    relay.signal("TERM");
    notify.expect("STOPPING=1");
    let (status, body) = health(metrics_addr);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"status\":\"draining\""), "{body}");
    drop((server, client));
    let (status, _) = relay.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
}

/// The metrics listener's address, from the `metrics URL` line the relay
/// prints after its `listening` lines.
fn metrics_address(relay: &mut RelayProcess) -> SocketAddr {
    let line = relay.next_line();
    let url = line
        .strip_prefix("metrics http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    url.parse().unwrap()
}

fn health(addr: SocketAddr) -> (u16, String) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(
        b"GET /health HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let reply = crate::support::read_http(&mut sock);
    (reply.status, reply.text())
}

#[test]
fn sighup_swaps_the_certificate_for_new_handshakes_while_a_pair_opened_before_relays() {
    let dir = TempDir::new("reload");
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    std::fs::copy(data_file("server.pem"), &cert).unwrap();
    std::fs::copy(data_file("server.key"), &key).unwrap();
    let config = format!(
        "[[listeners]]\nurl = \"tls://127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let notify = NotifySocket::new();
    let (mut relay, _file) = start(&config, &notify, 1);
    notify.expect("READY=1");
    let addr: SocketAddr = relay.addr(0).parse().unwrap();
    let first = served_certificate(addr);
    assert_eq!(first, pem_certificate("server.pem"));

    // A TLS pair opened before the reload.
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut accept = tls_connect(addr, "localhost").unwrap();
    accept
        .write_all(&packet::encode(v2("accept", a, c).as_bytes(), 0x73).unwrap())
        .unwrap();
    assert_eq!(tls_response(&mut accept), 200);
    let mut connect = tls_connect(addr, "localhost").unwrap();
    connect
        .write_all(&packet::encode(v2("connect", a, c).as_bytes(), 0x73).unwrap())
        .unwrap();
    assert_eq!(tls_response(&mut connect), 200);
    connect.write_all(b"before").unwrap();
    connect.flush().unwrap();
    let mut buf = [0u8; 6];
    accept.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"before");

    // The renewed certificate replaces the files, then SIGHUP.
    std::fs::copy(data_file("renewed.pem"), &cert).unwrap();
    std::fs::copy(data_file("renewed.key"), &key).unwrap();
    relay.signal("HUP");
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    assert_eq!(
        served_certificate(addr),
        pem_certificate("renewed.pem"),
        "a new handshake sees the new certificate"
    );
    connect.write_all(b"after!").unwrap();
    connect.flush().unwrap();
    accept.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after!", "the pair opened before still relays");
    accept.write_all(b"and back").unwrap();
    accept.flush().unwrap();
    let mut back = [0u8; 8];
    connect.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"and back");
    drop((accept, connect));
    relay.signal("TERM");
    assert!(relay.wait_exit(WAIT).0.success());
}

#[test]
fn sighup_applies_new_limits_and_refuses_a_bad_configuration_whole() {
    let dir = TempDir::new("limits");
    let path = dir.0.join("relay.toml");
    std::fs::write(&path, format!("max_associations = 100\n{ON_PORT_0}")).unwrap();
    let notify = NotifySocket::new();
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(Stdio::null());
    let mut relay = RelayProcess::launch(command);
    notify.expect("READY=1");
    let create = |relay: &RelayProcess| {
        let mut sock = TcpStream::connect(relay.addr(0)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let head = format!(
            "POST /jet/association/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Uuid::new_v4()
        );
        sock.write_all(head.as_bytes()).unwrap();
        crate::support::read_http(&mut sock).status
    };
    assert_eq!(create(&relay), 200);
    // A file that does not parse: refused whole, the running one stays.
    std::fs::write(&path, "max_associations = \"many\"\n").unwrap();
    relay.signal("HUP");
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    assert_eq!(
        create(&relay),
        200,
        "still serving on the old configuration"
    );
    // A lower limit applies to what comes after the reload.
    std::fs::write(&path, format!("max_associations = 2\n{ON_PORT_0}")).unwrap();
    relay.signal("HUP");
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    assert_eq!(create(&relay), 503, "the table holds 2: the new limit");
    relay.signal("TERM");
    assert!(relay.wait_exit(WAIT).0.success());
}

#[test]
fn socket_activation_serves_on_the_passed_descriptor() {
    // systemd passes listening sockets from descriptor 3 with LISTEN_FDS and
    // LISTEN_PID set to the service's pid. A small Python launcher does the
    // same: it binds, moves the socket to descriptor 3 and execs the relay
    // (exec keeps the pid it names in LISTEN_PID).
    let launcher = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
# The port goes first, in the relay's own line format, so the test can
# compare it with the port the relay then says it serves.
print("listening passed://127.0.0.1:%d" % s.getsockname()[1], flush=True)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.argv[1], sys.argv[1:], env)
"#;
    let file = config_file(ON_PORT_0);
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(launcher)
        .arg(BIN)
        .arg("--config")
        .arg(&file.0)
        .stderr(Stdio::null());
    let mut relay = RelayProcess::launch_with_listeners(command, 2);
    assert_eq!(
        relay.addr(1),
        relay.addr(0),
        "the relay serves the socket it was passed, not one of its own on port 0"
    );
    let url = relay.urls[1].clone();
    let (mut server, mut client) = tcp_pair(&url);
    client.write_all(b"activated").unwrap();
    let mut buf = [0u8; 9];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"activated");
    drop((server, client));
    relay.signal("TERM");
    assert!(relay.wait_exit(WAIT).0.success());
}

#[test]
fn a_drain_leaves_systemds_passed_socket_listening_for_the_next_process() {
    // systemd keeps its copy of a passed socket across restarts, so
    // connections queue for the next process. The launcher plays systemd: it
    // binds, forks the relay with the socket as descriptor 3, keeps its own
    // copy, and once the relay has exited says whether the socket still
    // listens (SO_ACCEPTCONN).
    let launcher = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(16)
print("listening passed://127.0.0.1:%d" % s.getsockname()[1], flush=True)
pid = os.fork()
if pid == 0:
    os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    os.execve(sys.argv[1], sys.argv[1:], env)
print("relay-pid %d" % pid, flush=True)
_, status = os.waitpid(pid, 0)
print("exit %d" % os.waitstatus_to_exitcode(status), flush=True)
print("accepting %d" % s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), flush=True)
"#;
    let file = config_file(ON_PORT_0);
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(launcher)
        .arg(BIN)
        .arg("--config")
        .arg(&file.0)
        .stderr(Stdio::null());
    let mut launcher = RelayProcess::launch_with_listeners(command, 1);
    // The launcher's pid line and the relay's listening line race.
    let (mut pid, mut served) = (String::new(), String::new());
    for _ in 0..2 {
        let line = launcher.next_line();
        match line.strip_prefix("relay-pid ") {
            Some(n) => pid = n.to_owned(),
            None => served = line.strip_prefix("listening ").unwrap_or(&line).to_owned(),
        }
    }
    assert!(!pid.is_empty(), "no relay-pid line");
    assert_eq!(served, launcher.urls[0].replace("passed://", "tcp://"));
    let (mut server, mut client) = tcp_pair(&served);
    client.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    server.read_exact(&mut buf).unwrap();
    drop((server, client));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(&pid)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(launcher.next_line(), "exit 0");
    assert_eq!(
        launcher.next_line(),
        "accepting 1",
        "the drain stopped systemd's socket: the next process would find it dead"
    );
    assert!(launcher.wait_exit(WAIT).0.success());
}

/// The end-entity certificate a full TLS handshake with `addr` is served
/// (no session resumption: a resumed session reports the certificate of the
/// session it resumes).
fn served_certificate(addr: SocketAddr) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(data_file("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.as_ref().to_vec())
        .expect("the relay sent a certificate")
}

fn pem_certificate(name: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(data_file(name))
        .unwrap()
        .as_ref()
        .to_vec()
}

fn tls_response(session: &mut crate::support::TlsSession) -> u16 {
    let packet = packet::read_packet(&mut *session).unwrap();
    jet_relay::wire::message::parse_response(&packet.payload)
        .unwrap()
        .status
}
