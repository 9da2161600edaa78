//! Figure (b): many pairs at once, their aggregate throughput and, over plain TCP, how fairly the streams share it.

use crate::options::Options;
use crate::pattern::{corrupt, receive_stream, send_stream, Pattern, CHUNK};
use crate::peers::{Endpoint, Peer, IO_TIMEOUT};
use crate::report::{one_round, Report, Rounds};
use crate::targets::{ratio_unit, versus, Target, TargetTable, Transport};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Runs (b) on every target of `table` and reports it: the blocking
/// threads' aggregate on every transport, fairness from the poll loop on
/// plain TCP.
pub fn figure(opts: &Options, table: &TargetTable, pattern: &Pattern, report: &mut Report) {
    eprintln!(
        "(b) {} pairs, {} bytes each way per pair",
        opts.b_pairs, opts.b_bytes
    );
    let targets = &table.targets;
    let on_tcp = table.transport == Transport::Tcp;
    let (pairs, bytes) = (opts.b_pairs, opts.b_bytes);
    let mut rounds = Rounds::new(targets, 1);
    let mut fairness = Rounds::new(targets, 3);
    for round in 0..opts.rounds {
        one_round(&mut rounds, targets, round, " (threads)", |t| {
            many_pairs_threads(table.endpoint(t), pattern, pairs, bytes)
        });
        // The poll loop moves plain TCP only; other transports read
        // fairness from the blocking threads (see many_pairs_threads).
        if on_tcp {
            one_round(&mut fairness, targets, round, " (poll)", |t| {
                many_pairs_poll(table.endpoint(t), pattern, pairs, bytes)
            });
        }
    }
    for &t in targets {
        let (agg, e) = rounds.series(t, 0);
        report.add("b", "aggregate", &t.name(), "MB/s", agg, "", e);
    }
    let rname = table.relay_name();
    for &b in &table.baselines {
        let (ratio, e) = rounds.ratio_to(table.relay_target, b, 0);
        let goal = if b == Target::Direct { ">= 0.50" } else { "" };
        let what = format!("aggregate ratio{}", versus(b));
        report.add("b", &what, &rname, ratio_unit(b), ratio, goal, e);
    }
    // Fairness needs the poll loop, which moves plain TCP only: with
    // blocking threads the slowest stream has not started when half
    // have finished, relay or not (0 for direct too), so that would
    // measure the scheduler, not the relay.
    for &t in targets.iter().filter(|_| on_tcp) {
        let (slow, e) = fairness.series(t, 1);
        report.add("b", "slowest stream (poll)", &t.name(), "MB/s", slow, "", e);
        let (fair, e) = fairness.series(t, 2);
        let goal = if t.is_relay() { ">= 0.5" } else { "" };
        report.add("b", "slowest / mean (poll)", &t.name(), "x", fair, goal, e);
    }
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
    let ends = poll_ends(&peers)?;
    let progress: Vec<AtomicU64> = (0..pairs * 2).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicU64::new(0);
    let snapshot = OnceLock::<(Duration, Vec<u64>)>::new();
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
    run_poll_loops(ends, &shared)?;
    let wall = started.elapsed();
    let (at, seen) = snapshot
        .into_inner()
        .ok_or_else(|| io::Error::other("no stream finished"))?;
    if std::env::var_os("JET_BENCH_DEBUG").is_some() {
        debug_progress(at, wall, &seen);
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

/// The poll loops' ends of `peers`, non-blocking: each socket sends one
/// stream and receives the other of its pair.
#[cfg(target_os = "linux")]
fn poll_ends(peers: &[(Peer, Peer)]) -> io::Result<Vec<End<'_>>> {
    let socks: Vec<(&TcpStream, &TcpStream)> = peers
        .iter()
        .map(|(server, client)| match (server, client) {
            (Peer::Tcp(server), Peer::Tcp(client)) => Ok((server, client)),
            _ => Err(io::Error::other("the poll loop moves plain TCP only")),
        })
        .collect::<io::Result<_>>()?;
    let mut ends = Vec::with_capacity(peers.len() * 2);
    for (i, (server, client)) in socks.iter().enumerate() {
        let up = 2 * i as u64 + 1000;
        let down = up + 1;
        ends.push(End::new(client, up, down, 2 * i + 1));
        ends.push(End::new(server, down, up, 2 * i));
    }
    for end in &ends {
        end.sock.set_nonblocking(true)?;
    }
    Ok(ends)
}

/// Shares `ends` out among one poll loop per core and runs them to the end;
/// the first error of any loop is the result.
#[cfg(target_os = "linux")]
fn run_poll_loops(ends: Vec<End<'_>>, shared: &Shared<'_>) -> io::Result<()> {
    let loops = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(ends.len());
    let mut groups: Vec<Vec<End>> = (0..loops).map(|_| Vec::new()).collect();
    for (i, end) in ends.into_iter().enumerate() {
        groups[i % loops].push(end);
    }
    let results: Vec<io::Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| s.spawn(move || poll_loop(group, shared)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("poll loop panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<io::Result<Vec<()>>>()?;
    Ok(())
}

/// JET_BENCH_DEBUG: every stream's progress when half of them were done.
#[cfg(target_os = "linux")]
fn debug_progress(at: Duration, wall: Duration, seen: &[u64]) {
    let mut sorted = seen.to_vec();
    sorted.sort_unstable();
    let kib: Vec<u64> = sorted.iter().map(|b| b >> 10).collect();
    eprintln!("    half the streams done at {at:?} of {wall:?}; progress (KiB) {kib:?}");
    let mean = seen.iter().sum::<u64>() / seen.len() as u64;
    let slow: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] < mean / 2).collect();
    eprintln!("    streams below half the mean: {slow:?}");
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
    snapshot: &'a OnceLock<(Duration, Vec<u64>)>,
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
                write_quantum(e, shared)?;
            }
            if revents.intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP)
                && e.received < bytes
            {
                read_quantum(e, &mut buf, shared)?;
            }
        }
    }
}

/// Writes up to one quantum of `e`'s stream, in as many writes as it takes
/// (until the socket would block).
#[cfg(target_os = "linux")]
fn write_quantum(e: &mut End<'_>, shared: &Shared<'_>) -> io::Result<()> {
    let goal = (e.sent + CHUNK as u64).min(shared.bytes);
    while e.sent < goal {
        let n = (goal - e.sent) as usize;
        match (&*e.sock).write(shared.pattern.slice(e.send, e.sent, n)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => e.sent += n as u64,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Reads and checks up to one quantum of `e`'s incoming stream, in as many
/// reads as it takes (until the socket would block). The stream that
/// completes half of them all takes the snapshot of every stream's progress.
#[cfg(target_os = "linux")]
fn read_quantum(e: &mut End<'_>, buf: &mut [u8], shared: &Shared<'_>) -> io::Result<()> {
    let bytes = shared.bytes;
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
                        let seen = shared.progress.iter().map(|p| p.load(Ordering::Relaxed));
                        (shared.started.elapsed(), seen.collect())
                    });
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
