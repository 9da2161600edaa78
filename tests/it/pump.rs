//! The pump's two copy paths, zero-copy (splice) and user space, relay exactly the
//! same bytes with the same half-close, teardown, selection and idle rules; and
//! the relay picks the path by configuration, falling back when pipes run out.

use crate::support::*;
use jet_relay::relay::{AssociationState, CandidateState};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Which copy path a relay under test uses for plain TCP pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    ZeroCopy,
    Userspace,
}

fn relay(path: Path) -> TestRelay {
    relay_with(path, |_| {})
}

fn relay_with(path: Path, edit: impl FnOnce(&mut jet_relay::Config)) -> TestRelay {
    TestRelay::with(|c| {
        c.zero_copy = path == Path::ZeroCopy;
        edit(c);
    })
}

/// Runs each named test body once per copy path, as `zero_copy::NAME` and
/// `userspace::NAME`.
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {
        mod zero_copy {
            $( #[test] fn $name() { super::$name(super::Path::ZeroCopy) } )*
        }
        mod userspace {
            $( #[test] fn $name() { super::$name(super::Path::Userspace) } )*
        }
    };
}

on_both_paths!(
    large_pseudo_random_streams_relay_exactly_both_ways,
    half_close_delivers_the_whole_reply,
    a_reset_from_an_idle_side_tears_down_both_sides,
    a_reset_while_bytes_flow_tears_down_both_sides,
    early_data_and_the_stream_after_it_arrive_in_order,
    first_candidate_with_data_is_selected_and_the_others_closed,
    bytes_in_flight_keep_a_pair_from_idling_out,
    a_quiet_pair_is_closed_by_the_idle_timeout,
);

/// Sends `data` from a thread, then half-closes.
fn send_in_background(sock: &TcpStream, data: Vec<u8>) -> thread::JoinHandle<()> {
    let mut sock = sock.try_clone().unwrap();
    thread::spawn(move || {
        sock.write_all(&data).unwrap();
        sock.shutdown(Shutdown::Write).unwrap();
    })
}

fn large_pseudo_random_streams_relay_exactly_both_ways(path: Path) {
    const LEN: usize = 16 << 20;
    let relay = relay(path);
    let (a, server, mut client) = relay.pair();
    let up = pattern(11, LEN);
    let down = pattern(12, LEN + 4321);
    // Both directions at once: each side's sender runs while it reads.
    let up_sender = send_in_background(&client, up.clone());
    let down_sender = send_in_background(&server, down.clone());
    let reader = {
        let mut server = server.try_clone().unwrap();
        thread::spawn(move || read_to_end(&mut server))
    };
    let got_down = read_to_end(&mut client);
    let got_up = reader.join().unwrap();
    up_sender.join().unwrap();
    down_sender.join().unwrap();
    // Compare lengths first: a mismatch message of 16 MiB helps nobody.
    assert_eq!(got_up.len(), up.len(), "bytes from client to server");
    assert_eq!(got_down.len(), down.len(), "bytes from server to client");
    assert!(got_up == up, "client to server stream corrupted");
    assert!(got_down == down, "server to client stream corrupted");
    drop(server);
    drop(client);
    let info = relay.wait_ended(a);
    assert_eq!(info.state, AssociationState::Ended);
    let candidate = &info.candidates[0];
    assert_eq!(candidate.connect_to_accept, up.len() as u64);
    assert_eq!(candidate.accept_to_connect, down.len() as u64);
}

fn half_close_delivers_the_whole_reply(path: Path) {
    let relay = relay(path);
    let (_, mut server, mut client) = relay.pair();
    let request = pattern(21, 3 << 20);
    let reply = pattern(22, 5 << 20);
    let sender = send_in_background(&client, request.clone());
    // The server sees the end of the request (the relay passed the FIN on)
    // while its own direction is still open, and replies on it.
    let got = read_to_end(&mut server);
    assert!(got == request, "request corrupted ({} bytes)", got.len());
    server.write_all(&reply).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end(&mut client);
    assert!(got == reply, "reply corrupted ({} bytes)", got.len());
    sender.join().unwrap();
}

/// Closes `sock` with bytes unread, which makes the kernel send a reset.
fn reset(sock: TcpStream, unread: usize) {
    let mut peeked = vec![0; unread];
    let deadline = Instant::now() + WAIT;
    while sock.peek(&mut peeked).unwrap() < unread {
        assert!(Instant::now() < deadline, "the bytes never arrived");
    }
    drop(sock);
}

/// Asserts the relay tore `sock` down: reads end (EOF or reset).
#[track_caller]
fn assert_torn_down(sock: &mut TcpStream) {
    let mut buf = vec![0; 64 * 1024];
    // Bytes relayed before the teardown may still be queued: read past them.
    for _ in 0..10_000 {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
    panic!("the stream never ended");
}

fn a_reset_from_an_idle_side_tears_down_both_sides(path: Path) {
    let relay = relay(path);
    let (a, server, mut client) = relay.pair();
    client.write_all(b"unread").unwrap();
    reset(server, 6);
    // No half-close on a reset: the client side goes down although the
    // client never closes.
    assert_closed(&mut client);
    let info = relay.wait_ended(a);
    assert_eq!(info.candidates[0].state, CandidateState::Closed);
}

fn a_reset_while_bytes_flow_tears_down_both_sides(path: Path) {
    // Bound on what the client may push before the relay must have stopped it.
    const MOST: usize = 256 << 20;
    let relay = relay(path);
    let (a, server, mut client) = relay.pair();
    let writer = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = pattern(31, 64 * 1024);
            let mut sent = 0;
            while sent < MOST {
                match client.write_all(&chunk) {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => return sent,
                }
            }
            panic!("the relay kept taking bytes after the other side reset");
        })
    };
    // The server resets once bytes are pouring in: the relay is then busy
    // writing toward it, or blocked on its full buffer.
    reset(server, 64 * 1024);
    assert_torn_down(&mut client);
    let sent = writer.join().unwrap();
    assert!(sent < MOST);
    let info = relay.wait_ended(a);
    assert_eq!(info.candidates[0].state, CandidateState::Closed);
}

fn early_data_and_the_stream_after_it_arrive_in_order(path: Path) {
    let relay = relay(path);
    let a = Uuid::new_v4();
    let c = Uuid::new_v4();
    // Each peer's first bytes share a write with its request packet; the
    // accept's wait in the relay's socket until the connect comes.
    let (mut server, resp) = relay.request(&v2("accept", a, c), 0x73, b"early from server");
    assert_eq!(resp.status, 200);
    let (mut client, resp) = relay.request(&v2("connect", a, c), 0x73, b"early from client");
    assert_eq!(resp.status, 200);
    let rest = pattern(41, 2 << 20);
    let sender = send_in_background(&client, rest.clone());
    assert_eq!(read_n(&mut server, 17), b"early from client");
    let got = read_to_end(&mut server);
    assert!(got == rest, "stream after the early data corrupted");
    assert_eq!(read_n(&mut client, 17), b"early from server");
    sender.join().unwrap();
}

fn first_candidate_with_data_is_selected_and_the_others_closed(path: Path) {
    let relay = relay(path);
    let a = Uuid::new_v4();
    let [c1, c2, c3] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let mut s1 = relay.accept(a, c1);
    let mut s2 = relay.accept(a, c2);
    let mut s3 = relay.accept(a, c3); // stays parked
    let mut k1 = relay.connect(a, c1);
    let mut k2 = relay.connect(a, c2);
    // The accepting side speaks first this time.
    s2.write_all(b"selected").unwrap();
    assert_eq!(read_n(&mut k2, 8), b"selected");
    // The silent pair and the parked accept are closed, wherever their
    // copy threads were waiting.
    assert_closed(&mut s1);
    assert_closed(&mut k1);
    assert_closed(&mut s3);
    let bulk = pattern(51, 1 << 20);
    k2.write_all(&bulk).unwrap();
    assert!(read_n(&mut s2, bulk.len()) == bulk);
    let info = relay.table().info(a).unwrap();
    assert_eq!(info.state, AssociationState::Active);
    assert_eq!(info.selected, Some(c2));
}

fn bytes_in_flight_keep_a_pair_from_idling_out(path: Path) {
    const IDLE: Duration = Duration::from_millis(300);
    let relay = relay_with(path, |c| c.idle_timeout = IDLE);
    let (_, mut server, mut client) = relay.pair();
    // Round trips for three idle timeouts: every one of them touches the pair.
    let started = Instant::now();
    let mut rounds = 0u32;
    while started.elapsed() < IDLE * 3 {
        assert!(rounds < 1_000_000, "round trips never took any time");
        client.write_all(&rounds.to_be_bytes()).unwrap();
        assert_eq!(read_n(&mut server, 4), rounds.to_be_bytes());
        server.write_all(b"k").unwrap();
        assert_eq!(read_n(&mut client, 1), b"k");
        rounds += 1;
    }
    let m = &relay.server.metrics();
    assert_eq!(m.idle_closed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

fn a_quiet_pair_is_closed_by_the_idle_timeout(path: Path) {
    let relay = relay_with(path, |c| c.idle_timeout = Duration::from_millis(200));
    let (_, mut server, mut client) = relay.pair();
    // Bulk data each way: both directions now wait in their bulk copy loops
    // (in splice, on the zero-copy path), where the kill must reach them.
    let bulk = pattern(71, 256 * 1024);
    client.write_all(&bulk).unwrap();
    assert!(read_n(&mut server, bulk.len()) == bulk);
    server.write_all(&bulk).unwrap();
    assert!(read_n(&mut client, bulk.len()) == bulk);
    assert_closed(&mut server);
    assert_closed(&mut client);
    let m = &relay.server.metrics();
    assert_eq!(m.idle_closed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Which path a pair took shows in the relay process's descriptors: the
/// zero-copy path holds one pipe per direction that carried bytes.
#[cfg(target_os = "linux")]
mod selection {
    use crate::support::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use uuid::Uuid;

    use crate::process::BIN;

    /// The relay binary with its stderr log lines forwarded to a channel.
    struct RelayProcess {
        child: Child,
        addr: String,
        config: std::path::PathBuf,
        log: mpsc::Receiver<String>,
    }

    impl RelayProcess {
        fn start(zero_copy: bool) -> RelayProcess {
            let config = std::env::temp_dir().join(format!("jet-pump-{}.toml", Uuid::new_v4()));
            std::fs::write(
                &config,
                format!("zero_copy = {zero_copy}\n[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\n"),
            )
            .unwrap();
            let mut child = Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .env("JET_RELAY_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let addr = line
                .trim()
                .strip_prefix("listening tcp://")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_owned();
            let (tx, log) = mpsc::channel();
            let stderr = BufReader::new(child.stderr.take().unwrap());
            std::thread::spawn(move || {
                for line in stderr.lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            RelayProcess {
                child,
                addr,
                config,
                log,
            }
        }

        /// The relay's open descriptors: (number, what it points to).
        fn fds(&self) -> Vec<(u32, String)> {
            let dir = format!("/proc/{}/fd", self.child.id());
            std::fs::read_dir(dir)
                .unwrap()
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let fd = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((fd, target.to_string_lossy().into_owned()))
                })
                .collect()
        }

        fn pipe_fds(&self) -> usize {
            self.fds()
                .iter()
                .filter(|(_, t)| t.starts_with("pipe:"))
                .count()
        }

        /// Waits for a log line containing `needle`.
        #[track_caller]
        fn wait_log(&self, needle: &str) -> String {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match self.log.recv_timeout(left) {
                    Ok(line) if line.contains(needle) => return line,
                    Ok(_) => {}
                    Err(e) => panic!("no log line with {needle:?}: {e}"),
                }
            }
        }

        fn request(&self, method: &str, a: Uuid, c: Uuid) -> TcpStream {
            let mut sock = TcpStream::connect(&self.addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            sock.write_all(
                &jet_relay::wire::packet::encode(v2(method, a, c).as_bytes(), 0x73)
                    .expect("a test head fits a packet"),
            )
            .unwrap();
            assert_eq!(read_response(&mut sock).status, 200, "{method}");
            sock
        }

        fn pair(&self) -> (Uuid, TcpStream, TcpStream) {
            let a = Uuid::new_v4();
            let c = Uuid::new_v4();
            let server = self.request("accept", a, c);
            let client = self.request("connect", a, c);
            (a, server, client)
        }
    }

    impl Drop for RelayProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.config);
        }
    }

    /// Sends `len` pattern bytes each way through the pair and checks them.
    fn exchange(server: &mut TcpStream, client: &mut TcpStream, len: usize) {
        let up = pattern(61, len);
        client.write_all(&up).unwrap();
        assert!(read_n(server, len) == up, "client to server corrupted");
        let down = pattern(62, len);
        server.write_all(&down).unwrap();
        assert!(read_n(client, len) == down, "server to client corrupted");
    }

    #[test]
    fn zero_copy_pairs_open_a_pipe_per_direction_on_bulk_data_only() {
        let relay = RelayProcess::start(true);
        let baseline = relay.pipe_fds();
        let (a, mut server, mut client) = relay.pair();
        // Paired but idle: no pipe.
        assert_eq!(relay.pipe_fds(), baseline);
        // Short messages go through the small buffer: still no pipe.
        exchange(&mut server, &mut client, 100);
        assert_eq!(relay.pipe_fds(), baseline);
        // Bulk data one way: one pipe, two descriptors.
        let bulk = pattern(63, 1 << 20);
        client.write_all(&bulk).unwrap();
        assert!(read_n(&mut server, bulk.len()) == bulk);
        assert_eq!(relay.pipe_fds(), baseline + 2);
        exchange(&mut server, &mut client, 1 << 20);
        assert_eq!(relay.pipe_fds(), baseline + 4);
        drop(server);
        drop(client);
        // The pair's closing line is written once both directions returned,
        // their pipes dropped.
        let line = relay.wait_log(" pair closed ");
        assert!(line.contains(&format!("association={a} ")), "{line}");
        assert_eq!(relay.pipe_fds(), baseline);
    }

    #[test]
    fn zero_copy_off_relays_without_pipes() {
        let relay = RelayProcess::start(false);
        let baseline = relay.pipe_fds();
        let (_, mut server, mut client) = relay.pair();
        exchange(&mut server, &mut client, 1 << 20);
        assert_eq!(relay.pipe_fds(), baseline);
    }

    #[test]
    fn a_pair_whose_pipes_cannot_be_created_relays_through_user_space() {
        use rustix::process::{getrlimit, prlimit, Pid, Resource, Rlimit};
        let relay = RelayProcess::start(true);
        let baseline = relay.pipe_fds();
        // Leave the relay exactly two free descriptors: the pair's two
        // sockets fit, its pipes do not (EMFILE).
        let open: Vec<u32> = relay.fds().iter().map(|(fd, _)| *fd).collect();
        let mut limit = 0;
        let mut free = 0;
        while free < 2 {
            if !open.contains(&limit) {
                free += 1;
            }
            limit += 1;
        }
        // The relay inherited this process's hard limit: keep it.
        let hard = getrlimit(Resource::Nofile).maximum;
        let lowered = Rlimit {
            current: Some(u64::from(limit)),
            maximum: hard,
        };
        prlimit(
            Some(Pid::from_child(&relay.child)),
            Resource::Nofile,
            lowered,
        )
        .unwrap_or_else(|e| panic!("lowering the relay's descriptor limit: {e}"));
        let (_, mut server, mut client) = relay.pair();
        exchange(&mut server, &mut client, 4 << 20);
        relay.wait_log("cannot create a pipe");
        assert_eq!(relay.pipe_fds(), baseline);
    }
}
