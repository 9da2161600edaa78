//! Guards against resource trouble: a copy thread that cannot start is
//! refused before any 200, a back-pressured pair is not idle, and listeners
//! get the backlog configured.

use crate::support::{assert_closed, read_n, v2, TestRelay, WAIT};
use jet_relay::relay::CandidateState;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use uuid::Uuid;

#[test]
fn a_connect_whose_copy_thread_cannot_start_gets_503_and_the_accept_stays_parked() {
    let relay = TestRelay::with(|c| c.max_threads = 16);
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut server = relay.accept(a, c);
    // 15 silent connections hold 15 threads; the connect takes the 16th, so
    // its pair's second copy thread cannot start.
    let silent: Vec<_> = (0..15).map(|_| relay.dial()).collect();
    assert!(relay.server.wait_busy_threads(15, WAIT));
    let (_refused, resp) = relay.request(&v2("connect", a, c), 0x73, b"");
    assert_eq!(resp.status, 503, "the connect: {resp:?}");
    let info = relay.table().info(a).expect("the association");
    assert_eq!(info.candidates[0].state, CandidateState::Parked);
    // Threads back (two: the connect's and its copy thread's): the same
    // accept pairs and relays.
    drop(silent);
    assert!(relay.server.wait_idle_threads(2, WAIT));
    let mut client = relay.connect(a, c);
    client.write_all(b"after").unwrap();
    assert_eq!(read_n(&mut server, 5), b"after");
}

/// Writes until `sock` takes nothing more for a while: every buffer between
/// it and a peer that does not read is full. Returns the bytes written.
fn fill(sock: &mut TcpStream) -> usize {
    sock.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    let mut total = 0;
    // Bounded: the buffers on the way hold a few MiB at most.
    for _ in 0..10_000 {
        match sock.write(&chunk) {
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return total
            }
            Err(e) => panic!("writing toward a peer that does not read: {e}"),
        }
    }
    panic!("{total} bytes written and the buffers are still not full");
}

#[test]
fn a_pair_back_pressured_by_a_receiver_that_does_not_read_is_not_idle() {
    let relay = TestRelay::with(|c| c.idle_timeout = Duration::from_millis(300));
    let (a, mut server, mut client) = relay.pair();
    let sent = fill(&mut client);
    // More than three idle timeouts with the relay's copy thread blocked
    // writing toward the server peer: the pair is waiting, not idle.
    let info = relay.table().wait_for(a, Duration::from_millis(1200), |i| {
        i.is_none_or(|i| i.candidates[0].state == CandidateState::Closed)
    });
    let state = info.map(|i| i.candidates[0].state);
    assert_eq!(state, Some(CandidateState::Relaying), "after 1.2 s");
    // Every byte arrives once the server peer reads.
    let mut got = 0;
    let mut buf = vec![0; 64 * 1024];
    while got < sent {
        let n = server.read(&mut buf).expect("the relayed bytes");
        assert!(n > 0, "the stream ended after {got} of {sent} bytes");
        got += n;
    }
    // Now nothing moves and nothing waits: truly idle, the pair is closed.
    assert_closed(&mut server);
    assert_closed(&mut client);
}

/// The Send-Q that `ss` shows for the listening socket on `port`: its backlog.
fn listen_backlog(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss shows no listener on port {port}: {text:?}"));
    // State Recv-Q Send-Q Local Peer
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

#[test]
fn listeners_get_the_configured_backlog_not_stds_128() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(u32::MAX);
    let relay = TestRelay::with(|c| c.listen_backlog = 300);
    assert_eq!(listen_backlog(relay.addr.port()), 300.min(somaxconn));
    let default = TestRelay::start();
    assert_eq!(listen_backlog(default.addr.port()), 1024.min(somaxconn));
    assert!(somaxconn <= 128 || listen_backlog(default.addr.port()) > 128);
}
