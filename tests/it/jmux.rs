//! JMUX tunnels: both roles against an independent implementation written from the spec, and against each other.

use crate::support::{pattern, WAIT};
use jet_relay::peer::jmux::{
    EndReason, OpenError, Opener, Policy, Refusal, Stream, Tunnel, TunnelConfig,
};
use jet_relay::wire::jmux::{DecodeError, REASON_NOT_ALLOWED};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A second JMUX codec, written from the spec text alone.
mod spec;

use spec::Peer;

/// A connected loopback pair; only test-held ends get timeouts.
fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("a bound address");
    let near = TcpStream::connect(addr).expect("connect loopback");
    let (far, _) = listener.accept().expect("accept loopback");
    (near, far)
}

fn with_timeouts(socket: TcpStream) -> TcpStream {
    socket
        .set_read_timeout(Some(WAIT))
        .expect("set a read timeout");
    socket
        .set_write_timeout(Some(WAIT))
        .expect("set a write timeout");
    socket
}

/// Accepts one connection, failing the test after [`WAIT`] instead of hanging.
fn accept_within(listener: &TcpListener) -> TcpStream {
    let listener = listener.try_clone().expect("clone the listener");
    let (done, accepted) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(listener.accept().map(|(socket, _)| socket));
    });
    let socket = accepted
        .recv_timeout(WAIT)
        .expect("the tunnel connects to the destination in time")
        .expect("accept succeeds");
    with_timeouts(socket)
}

/// A policy that lets exactly one destination through.
fn allow_only(allowed: String) -> Policy {
    Arc::new(move |destination: &str| {
        if destination == allowed {
            Ok(())
        } else {
            Err(Refusal {
                reason: REASON_NOT_ALLOWED,
                description: format!("{destination} is not allowed"),
            })
        }
    })
}

/// Streams of `len` bytes cycle through one pseudo-random block of a prime
/// length, so a reordered or shifted chunk cannot match by accident, and
/// checking costs only memcmp even in a debug build.
const BLOCK: usize = 65_521;

fn send_stream(socket: &mut TcpStream, seed: u64, len: usize) {
    let block = pattern(seed, BLOCK);
    let mut sent = 0;
    while sent < len {
        let offset = sent % BLOCK;
        let n = (BLOCK - offset).min(len - sent);
        socket
            .write_all(&block[offset..offset + n])
            .expect("the tunnel takes the bytes");
        sent += n;
    }
}

/// Reads exactly the stream `send_stream(seed, len)` wrote, then a clean EOF.
#[track_caller]
fn expect_stream(socket: &mut TcpStream, seed: u64, len: usize) {
    let block = pattern(seed, BLOCK);
    let mut buf = vec![0; 64 * 1024];
    let mut got = 0;
    while got < len {
        let n = socket.read(&mut buf).expect("bytes arrive in time");
        assert!(n > 0, "EOF after {got} of {len} bytes");
        assert!(got + n <= len, "more than the {len} bytes sent");
        let mut at = 0;
        while at < n {
            let offset = (got + at) % BLOCK;
            let m = (BLOCK - offset).min(n - at);
            assert!(
                buf[at..at + m] == block[offset..offset + m],
                "bytes differ near offset {}",
                got + at
            );
            at += m;
        }
        got += n;
    }
    assert_eq!(
        socket.read(&mut buf).expect("a clean EOF"),
        0,
        "EOF after the stream"
    );
}

/// A client tunnel and a server tunnel over one loopback connection, and a destination.
struct Loopback {
    client: Tunnel,
    server: Tunnel,
    link: TcpStream,
    dest: TcpListener,
    dest_url: String,
}

fn loopback() -> Loopback {
    let dest = TcpListener::bind("127.0.0.1:0").expect("bind the destination");
    let dest_url = format!("tcp://{}", dest.local_addr().expect("a bound address"));
    let (near, far) = socket_pair();
    let link = near.try_clone().expect("clone the link");
    let client = Tunnel::client(Stream::from_tcp(near).expect("split")).expect("start");
    let server = Tunnel::server(
        Stream::from_tcp(far).expect("split"),
        allow_only(dest_url.clone()),
    )
    .expect("start");
    Loopback {
        client,
        server,
        link,
        dest,
        dest_url,
    }
}

/// Opens a channel for a new local connection and returns the test's end of it.
fn bridge(opener: &Opener, destination: &str) -> TcpStream {
    let (test_end, tunnel_end) = socket_pair();
    opener
        .open_bridged(destination, tunnel_end)
        .expect("the channel opens");
    with_timeouts(test_end)
}

#[track_caller]
fn assert_reset(socket: &mut TcpStream, what: &str) {
    match socket.read(&mut [0; 16]) {
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{what}: {err}"),
        Ok(n) => panic!("{what}: expected a reset, got Ok({n})"),
    }
}

#[test]
fn server_role_serves_a_spec_client_within_windows_with_half_close_and_id_reuse() {
    let dest = TcpListener::bind("127.0.0.1:0").expect("bind the destination");
    let dest_url = format!("tcp://{}", dest.local_addr().expect("a bound address"));
    let (ours, theirs) = socket_pair();
    let tunnel = Tunnel::server(
        Stream::from_tcp(ours).expect("split"),
        allow_only(dest_url.clone()),
    )
    .expect("start");
    let mut peer = Peer(with_timeouts(theirs));

    peer.open(5, 10_000, 4096, &dest_url);
    let mut destination = accept_within(&dest);
    let answer = peer.recv();
    assert_eq!(answer.kind, spec::OPEN_SUCCESS);
    assert_eq!(answer.body.len(), 14, "OPEN_SUCCESS has four fixed fields");
    assert_eq!(answer.word(0), 5, "addressed to the opener's id");
    let our_id = answer.word(4);
    let mut our_window = answer.word(8) as usize;
    let our_max_packet = usize::from(answer.half(12));
    assert!(our_window > 0 && our_max_packet > 0);

    // Upstream, more than one window: it only completes if the tunnel grants more.
    let upload = pattern(1, 300 * 1024);
    let mut upstream = destination.try_clone().expect("clone");
    let expected = upload.clone();
    let reader = thread::spawn(move || {
        let mut got = vec![0; expected.len()];
        upstream.read_exact(&mut got).expect("the upload arrives");
        assert!(got == expected, "the upload arrives byte-exact");
        let eof = upstream.read(&mut [0; 1]).expect("a clean EOF");
        assert_eq!(eof, 0, "the peer's EOF arrives as a clean EOF");
    });
    let mut sent = 0;
    while sent < upload.len() {
        while our_window == 0 {
            let adjust = peer.recv();
            assert_eq!(adjust.kind, spec::WINDOW_ADJUST, "only window adjusts now");
            assert_eq!(adjust.word(0), 5);
            our_window += adjust.word(4) as usize;
        }
        let n = our_window.min(our_max_packet).min(upload.len() - sent);
        peer.data(our_id, &upload[sent..sent + n]);
        sent += n;
        our_window -= n;
    }
    peer.eof(our_id);
    reader.join().expect("the upload checks pass");

    // Downstream after our EOF (half-close), within the 10,000-byte window we
    // granted and our 4 KiB packets; we grant more as the data comes.
    let download = pattern(2, 100 * 1024);
    let sent_download = download.clone();
    let writer = thread::spawn(move || {
        destination.write_all(&sent_download).expect("write");
        destination.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut granted = 10_000;
    let mut got = Vec::new();
    loop {
        let frame = peer.recv();
        match frame.kind {
            spec::DATA => {
                assert_eq!(frame.word(0), 5, "DATA carries the recipient's id");
                assert!(frame.tail(4).len() <= 4096, "DATA within our max packet");
                got.extend_from_slice(frame.tail(4));
                assert!(
                    got.len() <= granted,
                    "{} bytes beyond the window",
                    got.len()
                );
                if granted - got.len() < 4096 {
                    peer.adjust(our_id, 10_000);
                    granted += 10_000;
                }
            }
            spec::WINDOW_ADJUST => {}
            spec::EOF => break,
            other => panic!("unexpected message type {other}"),
        }
        assert!(got.len() <= download.len(), "more than was written");
    }
    assert_eq!(
        frame_word_close(&mut peer),
        5,
        "both EOFs done: the tunnel sends CLOSE"
    );
    assert!(got == download, "the download arrives byte-exact");
    writer.join().expect("the destination wrote");

    // Until our CLOSE answers, the id stays taken; then it is reused.
    peer.open(6, 10_000, 4096, &dest_url);
    let _second = accept_within(&dest);
    let answer = peer.recv();
    assert_eq!((answer.kind, answer.word(0)), (spec::OPEN_SUCCESS, 6));
    assert_ne!(answer.word(4), our_id, "not reused before both CLOSEs");
    peer.close(our_id);
    peer.open(7, 10_000, 4096, &dest_url);
    let _third = accept_within(&dest);
    let answer = peer.recv();
    assert_eq!((answer.kind, answer.word(0)), (spec::OPEN_SUCCESS, 7));
    assert_eq!(answer.word(4), our_id, "reused once both CLOSEs passed");

    tunnel.close();
    assert!(matches!(tunnel.wait(), EndReason::Closed));
}

/// Skips window adjusts and returns the recipient id of the CLOSE that follows.
fn frame_word_close(peer: &mut Peer) -> u32 {
    for _ in 0..1000 {
        let frame = peer.recv();
        match frame.kind {
            spec::WINDOW_ADJUST => continue,
            spec::CLOSE => return frame.word(0),
            other => panic!("expected CLOSE, got type {other}"),
        }
    }
    panic!("no CLOSE after 1000 window adjusts");
}

#[test]
fn server_role_refuses_opens_with_the_spec_reason_codes() {
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a bound address")
        .port();
    let policy: Policy = Arc::new(|destination: &str| match destination {
        "tcp://forbidden.invalid:22" => Err(Refusal {
            reason: REASON_NOT_ALLOWED,
            description: "not on the list".into(),
        }),
        _ => Ok(()),
    });
    let (ours, theirs) = socket_pair();
    let _tunnel = Tunnel::server(Stream::from_tcp(ours).expect("split"), policy).expect("start");
    let mut peer = Peer(with_timeouts(theirs));
    let cases = [
        ("tcp://forbidden.invalid:22".to_owned(), 2),
        (format!("tcp://127.0.0.1:{closed_port}"), 5),
        ("udp://127.0.0.1:53".to_owned(), 8),
        ("not a url".to_owned(), 8),
    ];
    for (id, (destination, reason)) in (1..).zip(&cases) {
        peer.open(id, 4096, 4096, destination);
        let answer = peer.recv();
        assert_eq!(answer.kind, spec::OPEN_FAILURE, "{destination}");
        assert_eq!(answer.word(0), id, "{destination}: addressed to the opener");
        assert_eq!(answer.word(4), *reason, "{destination}: reason code");
        assert!(!answer.tail(8).is_empty(), "{destination}: a description");
    }
}

#[test]
fn client_role_bridges_a_local_connection_for_a_spec_server() {
    let (ours, theirs) = socket_pair();
    let tunnel = Tunnel::client(Stream::from_tcp(ours).expect("split")).expect("start");
    let mut peer = Peer(with_timeouts(theirs));
    let (local, tunnel_end) = socket_pair();
    let mut local = with_timeouts(local);
    let opener = tunnel.opener();
    let opening = thread::spawn(move || opener.open_bridged("tcp://db.internal:5432", tunnel_end));

    let open = peer.recv();
    assert_eq!(open.kind, spec::OPEN);
    let client_id = open.word(0);
    let client_window = open.word(4) as usize;
    let client_max_packet = usize::from(open.half(8));
    assert_eq!(open.tail(10), b"tcp://db.internal:5432");
    peer.open_success(client_id, 77, 5000, 1000);
    opening
        .join()
        .expect("no panic")
        .expect("the open succeeds");

    // Local to peer: within the peer's 5000-byte window and 1000-byte packets.
    let upload = pattern(3, 20_000);
    local.write_all(&upload).expect("write locally");
    let (mut granted, mut got) = (5000, Vec::new());
    while got.len() < upload.len() {
        let frame = peer.recv();
        assert_eq!((frame.kind, frame.word(0)), (spec::DATA, 77));
        assert!(
            frame.tail(4).len() <= 1000,
            "DATA within the peer's max packet"
        );
        got.extend_from_slice(frame.tail(4));
        assert!(
            got.len() <= granted,
            "{} bytes beyond the window",
            got.len()
        );
        if granted - got.len() < 1000 {
            peer.adjust(client_id, 5000);
            granted += 5000;
        }
    }
    assert!(got == upload, "the upload arrives byte-exact");

    // Peer to local, within the window the tunnel announced.
    let download = pattern(4, client_window.min(50_000));
    for chunk in download.chunks(client_max_packet) {
        peer.data(client_id, chunk);
    }
    let mut received = vec![0; download.len()];
    local
        .read_exact(&mut received)
        .expect("the download arrives");
    assert!(received == download, "the download arrives byte-exact");

    // Half-close from the peer: local sees EOF and can still send.
    peer.eof(client_id);
    assert_eq!(local.read(&mut [0; 1]).expect("a clean EOF"), 0);
    local.write_all(b"after eof").expect("still writable");
    let frame = peer.recv();
    assert_eq!(
        (frame.kind, frame.word(0), frame.tail(4)),
        (spec::DATA, 77, &b"after eof"[..])
    );
    local.shutdown(Shutdown::Write).expect("shutdown");
    let frame = peer.recv();
    assert_eq!((frame.kind, frame.word(0)), (spec::EOF, 77));
    assert_eq!(frame_word_close(&mut peer), 77, "both EOFs done: CLOSE");
    peer.close(client_id);

    // The client role accepts no channels.
    peer.open(9, 4096, 4096, "tcp://127.0.0.1:1");
    let answer = peer.recv();
    assert_eq!((answer.kind, answer.word(0)), (spec::OPEN_FAILURE, 9));
    assert_eq!(answer.word(4), REASON_NOT_ALLOWED);

    // A malformed message ends the whole tunnel, and wait() says why.
    peer.0.write_all(&[99, 0, 4, 0]).expect("write");
    match tunnel.wait() {
        EndReason::Protocol(DecodeError::UnknownType(99)) => {}
        other => panic!("expected a protocol error, got {other}"),
    }
}

#[test]
fn fifty_channels_carry_one_mebibyte_each_way_byte_exact() {
    const CHANNELS: u32 = 50;
    const SIZE: usize = 1 << 20;
    let lb = loopback();
    let mut destinations = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CHANNELS {
        let opener = lb.client.opener();
        let url = lb.dest_url.clone();
        clients.push(thread::spawn(move || {
            let mut local = bridge(&opener, &url);
            local
                .write_all(&i.to_be_bytes())
                .expect("write the channel number");
            let mut writer = local.try_clone().expect("clone");
            let sending = thread::spawn(move || {
                send_stream(&mut writer, u64::from(i), SIZE);
                writer.shutdown(Shutdown::Write).expect("shutdown");
            });
            expect_stream(&mut local, 1000 + u64::from(i), SIZE);
            sending.join().expect("the upload was written");
        }));
    }
    for _ in 0..CHANNELS {
        let mut remote = accept_within(&lb.dest);
        destinations.push(thread::spawn(move || {
            let mut number = [0; 4];
            remote.read_exact(&mut number).expect("the channel number");
            let i = u64::from(u32::from_be_bytes(number));
            let mut writer = remote.try_clone().expect("clone");
            let sending = thread::spawn(move || {
                send_stream(&mut writer, 1000 + i, SIZE);
                writer.shutdown(Shutdown::Write).expect("shutdown");
            });
            expect_stream(&mut remote, i, SIZE);
            sending.join().expect("the download was written");
        }));
    }
    for handle in clients.into_iter().chain(destinations) {
        handle
            .join()
            .expect("every channel is byte-exact both ways");
    }
    assert!(!lb.client.is_ended() && !lb.server.is_ended());
}

#[test]
fn stalled_channel_does_not_hold_up_ten_busy_ones() {
    const BUSY: u64 = 10;
    const SIZE: usize = 20 << 20;
    const STALLED_SIZE: usize = 16 << 20;
    let lb = loopback();
    let opener = lb.client.opener();
    let mut stalled = bridge(&opener, &lb.dest_url);
    let mut stalled_remote = accept_within(&lb.dest);
    // Far more than the window and the socket buffers: this writer blocks
    // until the test reads the stalled channel at the end.
    let stalled_writer = thread::spawn(move || {
        send_stream(&mut stalled_remote, 99, STALLED_SIZE);
        stalled_remote.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut busy: Vec<JoinHandle<()>> = Vec::new();
    for i in 0..BUSY {
        let mut local = bridge(&opener, &lb.dest_url);
        let mut remote = accept_within(&lb.dest);
        busy.push(thread::spawn(move || {
            send_stream(&mut remote, i, SIZE);
            remote.shutdown(Shutdown::Write).expect("shutdown");
        }));
        busy.push(thread::spawn(move || expect_stream(&mut local, i, SIZE)));
    }
    for handle in busy {
        handle
            .join()
            .expect("every busy channel finishes while one is stalled");
    }
    assert!(
        !stalled_writer.is_finished(),
        "the stalled channel is still held back"
    );
    expect_stream(&mut stalled, 99, STALLED_SIZE);
    stalled_writer
        .join()
        .expect("the stalled writer finishes once read");
}

#[test]
fn half_close_keeps_the_other_direction_of_each_channel() {
    let lb = loopback();
    let opener = lb.client.opener();
    let mut a = bridge(&opener, &lb.dest_url);
    let mut a_remote = accept_within(&lb.dest);
    let mut b = bridge(&opener, &lb.dest_url);
    let mut b_remote = accept_within(&lb.dest);

    // A: the local side is done sending; the answer still comes back.
    a.write_all(b"request").expect("write");
    a.shutdown(Shutdown::Write).expect("shutdown");
    let mut request = Vec::new();
    a_remote
        .read_to_end(&mut request)
        .expect("the request and a clean EOF");
    assert_eq!(request, b"request");
    a_remote
        .write_all(b"response")
        .expect("still writable after EOF");
    a_remote.shutdown(Shutdown::Write).expect("shutdown");
    let mut response = Vec::new();
    a.read_to_end(&mut response)
        .expect("the response and a clean EOF");
    assert_eq!(response, b"response");

    // B, untouched by A: the destination closes first; the local side still sends.
    b_remote.write_all(b"banner").expect("write");
    b_remote.shutdown(Shutdown::Write).expect("shutdown");
    let mut banner = Vec::new();
    b.read_to_end(&mut banner)
        .expect("the banner and a clean EOF");
    assert_eq!(banner, b"banner");
    b.write_all(b"late upload")
        .expect("still writable after EOF");
    b.shutdown(Shutdown::Write).expect("shutdown");
    let mut upload = Vec::new();
    b_remote
        .read_to_end(&mut upload)
        .expect("the upload and a clean EOF");
    assert_eq!(upload, b"late upload");
}

#[test]
fn open_is_refused_for_a_destination_not_allowed() {
    let lb = loopback();
    let opener = lb.client.opener();
    let (test_end, tunnel_end) = socket_pair();
    let mut test_end = with_timeouts(test_end);
    match opener.open_bridged("tcp://127.0.0.1:1", tunnel_end) {
        Err(OpenError::Refused { reason, .. }) => assert_eq!(reason, REASON_NOT_ALLOWED),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_reset(&mut test_end, "a refused channel's local connection");
    // The tunnel goes on: an allowed destination still opens.
    let mut local = bridge(&opener, &lb.dest_url);
    let mut remote = accept_within(&lb.dest);
    local.write_all(b"ok").expect("write");
    let mut got = [0; 2];
    remote.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"ok");
}

#[test]
fn dropped_stream_resets_every_channel_and_the_tunnels_report_it() {
    let lb = loopback();
    let opener = lb.client.opener();
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let mut local = bridge(&opener, &lb.dest_url);
        let mut remote = accept_within(&lb.dest);
        local.write_all(b"x").expect("write");
        remote.read_exact(&mut [0; 1]).expect("the channel works");
        pairs.push((local, remote));
    }
    lb.link.shutdown(Shutdown::Both).expect("cut the stream");
    for (local, remote) in &mut pairs {
        assert_reset(local, "the client's local connection");
        assert_reset(remote, "the server's destination connection");
    }
    let client = lb.client.wait();
    assert!(
        matches!(client, EndReason::StreamClosed),
        "client: {client}"
    );
    let server = lb.server.wait();
    assert!(
        matches!(server, EndReason::StreamClosed),
        "server: {server}"
    );
    let (_, tunnel_end) = socket_pair();
    assert_eq!(
        opener.open_bridged(&lb.dest_url, tunnel_end),
        Err(OpenError::TunnelEnded)
    );
}

#[test]
fn open_times_out_and_a_late_success_is_closed() {
    let (ours, theirs) = socket_pair();
    let config = TunnelConfig {
        open_timeout: Duration::from_millis(200),
        ..TunnelConfig::default()
    };
    let tunnel = Tunnel::start(Stream::from_tcp(ours).expect("split"), config).expect("start");
    let mut peer = Peer(with_timeouts(theirs));
    let (test_end, tunnel_end) = socket_pair();
    let mut test_end = with_timeouts(test_end);
    let opener = tunnel.opener();
    let opening = thread::spawn(move || opener.open_bridged("tcp://slow.internal:1", tunnel_end));
    let open = peer.recv();
    assert_eq!(open.kind, spec::OPEN);
    let client_id = open.word(0);
    // The peer answers only after the opener gave up.
    let result = opening.join().expect("no panic");
    assert_eq!(result, Err(OpenError::Timeout));
    assert_reset(&mut test_end, "the abandoned local connection");
    peer.open_success(client_id, 41, 4096, 4096);
    assert_eq!(close_after_eof(&mut peer), 41, "the late channel is closed");
    peer.close(client_id);
    // A refused OPEN behind the CLOSE: once its answer is back, the reader
    // has handled the CLOSE too, and the id is free again.
    peer.open(3, 4096, 4096, "tcp://127.0.0.1:1");
    assert_eq!(peer.recv().kind, spec::OPEN_FAILURE);
    let (_test_end, tunnel_end) = socket_pair();
    let opener = tunnel.opener();
    let opening = thread::spawn(move || opener.open_bridged("tcp://slow.internal:1", tunnel_end));
    let open = peer.recv();
    assert_eq!((open.kind, open.word(0)), (spec::OPEN, client_id));
    peer.open_success(client_id, 42, 4096, 4096);
    opening
        .join()
        .expect("no panic")
        .expect("the open succeeds");
}

/// Skips an EOF and window adjusts; returns the recipient id of the CLOSE.
fn close_after_eof(peer: &mut Peer) -> u32 {
    for _ in 0..1000 {
        let frame = peer.recv();
        match frame.kind {
            spec::EOF | spec::WINDOW_ADJUST => continue,
            spec::CLOSE => return frame.word(0),
            other => panic!("expected CLOSE, got type {other}"),
        }
    }
    panic!("no CLOSE after 1000 messages");
}
