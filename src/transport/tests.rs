//! Both transports end to end over loopback sockets, in both roles.

use super::tls::TlsStream;
use super::ws::{self, Role};
use super::{TcpHalf, TimedRead};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest any step of these tests may wait before it counts as hung.
const WAIT: Duration = Duration::from_secs(10);

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config() -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(data_file("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data_file("server.key")).unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn client_connection() -> ClientConnection {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data_file("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    ClientConnection::new(Arc::new(config), name).unwrap()
}

fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    for sock in [&client, &server] {
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_write_timeout(Some(WAIT)).unwrap();
    }
    (client, server)
}

/// A TLS client and server stream, handshakes done.
fn tls_pair() -> (TlsStream, TlsStream) {
    let (client, server) = socket_pair();
    let config = server_config();
    let server = thread::spawn(move || {
        TlsStream::handshake(server, ServerConnection::new(config).unwrap()).unwrap()
    });
    let client = TlsStream::handshake(client, client_connection()).unwrap();
    (client, server.join().unwrap())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn read_to_end(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn tls_halves_carry_both_directions_at_once_and_end_at_close_notify() {
    let (client, server) = tls_pair();
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let up = pattern(3 << 20, 1);
    let down = pattern(3 << 20, 2);
    // Both sides write 3 MiB before reading anything: more than the socket
    // buffers hold, so this only finishes if each reader runs beside its writer.
    let writers = [
        thread::spawn({
            let up = up.clone();
            move || {
                client_tx.write_all(&up).unwrap();
                client_tx.shutdown().unwrap();
            }
        }),
        thread::spawn({
            let down = down.clone();
            move || {
                server_tx.write_all(&down).unwrap();
                server_tx.shutdown().unwrap();
            }
        }),
    ];
    let got_down = thread::spawn(move || read_to_end(&mut client_rx).unwrap());
    assert!(read_to_end(&mut server_rx).unwrap() == up);
    assert!(got_down.join().unwrap() == down);
    for writer in writers {
        writer.join().unwrap();
    }
}

#[test]
fn a_tcp_end_without_close_notify_is_an_error_unless_the_stream_allows_it() {
    for lenient in [false, true] {
        let (client, server) = tls_pair();
        let mut server = if lenient {
            server.truncation_ends_stream()
        } else {
            server
        };
        client.socket().shutdown(Shutdown::Write).unwrap();
        let read = server.read(&mut [0u8; 16]);
        if lenient {
            assert_eq!(read.unwrap(), 0);
        } else {
            assert_eq!(read.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}

/// Sends `bytes` one at a time, `gap` apart, until the peer closes.
fn trickle(mut sock: &TcpStream, bytes: &[u8], gap: Duration) {
    for byte in bytes {
        if sock.write_all(&[*byte]).is_err() {
            return;
        }
        // The trickle is the input under test, not synchronisation.
        thread::sleep(gap);
    }
}

/// The header of a TLS 1.3 application data record of 152 bytes, then junk:
/// 157 bytes that rustls can only judge once all have come.
fn record_to_trickle() -> Vec<u8> {
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 152];
    record.resize(157, 0x5a);
    record
}

#[test]
fn a_tls_read_deadline_holds_against_a_record_trickled_byte_by_byte() {
    let (client, server) = tls_pair();
    let (mut server_rx, _server_tx) = server.split();
    let sock = Arc::clone(client.socket());
    let started = Instant::now();
    server_rx
        .set_deadline(Some(started + Duration::from_millis(300)))
        .unwrap();
    let trickler =
        thread::spawn(move || trickle(&sock, &record_to_trickle(), Duration::from_millis(40)));
    let err = server_rx.read(&mut [0u8; 64]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(took < Duration::from_secs(1), "the read took {took:?}");
    server_rx.socket().shutdown(Shutdown::Both).unwrap();
    trickler.join().unwrap();
    drop(client);
}

#[test]
fn a_ws_read_deadline_holds_against_a_header_trickled_byte_by_byte() {
    let (client, server) = socket_pair();
    let sock = Arc::new(server);
    let (mut reader, _writer) = ws::new(
        TcpHalf::new(Arc::clone(&sock)),
        TcpHalf::new(Arc::clone(&sock)),
        Role::Server,
        Vec::new(),
    );
    let started = Instant::now();
    reader
        .set_deadline(Some(started + Duration::from_millis(300)))
        .unwrap();
    // A masked binary frame with a 64-bit length: 14 header bytes.
    let header = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
    let trickler = thread::spawn(move || trickle(&client, &header, Duration::from_millis(40)));
    let err = reader.read(&mut [0u8; 64]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(took < Duration::from_secs(1), "the read took {took:?}");
    sock.shutdown(Shutdown::Both).unwrap();
    trickler.join().unwrap();
}

/// A WebSocket over TLS: the relay's halves (server role) and a peer's
/// (client role).
#[test]
fn ws_over_tls_carries_frames_both_ways_and_ends_at_close() {
    let (client, server) = tls_pair();
    let (client_rx, client_tx) = client.split();
    let (server_rx, server_tx) = server.split();
    let (mut client_rx, mut client_tx) = ws::new(client_rx, client_tx, Role::Client, Vec::new());
    let (mut server_rx, mut server_tx) = ws::new(server_rx, server_tx, Role::Server, Vec::new());
    let up = pattern(200_000, 3);
    let down = pattern(70_000, 4);
    let sender = thread::spawn({
        let up = up.clone();
        move || {
            for chunk in up.chunks(16 * 1024) {
                client_tx.write_all(chunk).unwrap();
            }
            client_tx.shutdown().unwrap();
        }
    });
    server_tx.write_all(&down).unwrap();
    server_tx.shutdown().unwrap();
    assert!(read_to_end(&mut server_rx).unwrap() == up);
    assert!(read_to_end(&mut client_rx).unwrap() == down);
    sender.join().unwrap();
}

#[test]
fn a_ws_server_answers_a_ping_with_its_payload_and_refuses_unmasked_frames() {
    let (mut client, server) = socket_pair();
    let sock = Arc::new(server);
    let (mut reader, _writer) = ws::new(
        TcpHalf::new(Arc::clone(&sock)),
        TcpHalf::new(Arc::clone(&sock)),
        Role::Server,
        Vec::new(),
    );
    // A masked ping "hi", then an unmasked binary frame.
    let mask = [9, 8, 7, 6];
    let mut ping = vec![0x89, 0x82];
    ping.extend_from_slice(&mask);
    ping.extend([b'h' ^ 9, b'i' ^ 8]);
    client.write_all(&ping).unwrap();
    client.write_all(&[0x82, 0x01, b'x']).unwrap();
    let err = reader.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).unwrap();
    assert_eq!(pong, [0x8A, 0x02, b'h', b'i']);
}
