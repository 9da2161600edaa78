//! Figure (j): one JMUX tunnel over a relayed pair against the plain relayed pair: throughput with 1 and 16 channels, and 64-byte round trips.
//!
//! The tunnel is `jet_relay::peer::jmux` on both peers of one relay pair, as
//! `accept --jmux` and `connect --jmux` run it: each channel starts at a local
//! loopback socket on the client side and ends at a loopback service on the
//! server side, so the figure includes those two extra loopback hops, which
//! a real tunnel pays too.

use crate::options::Options;
use crate::pattern::{corrupt, Pattern, CHUNK};
use crate::peers::{Endpoint, Peer, IO_TIMEOUT};
use crate::report::Report;
use crate::stats::{percentile, Series};
use crate::targets::TargetTable;
use crate::throughput::single_pair;
use jet_relay::peer::jmux::{self, Policy, Tunnel};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// Channels of the many-channel throughput figure.
const CHANNELS: usize = 16;
/// Round trips before the measured ones.
const WARMUP: usize = 200;
/// The round-trip message size.
const MESSAGE: usize = 64;

/// Runs (j) on the relay target of `table` and reports it.
pub fn figure(opts: &Options, table: &TargetTable, pattern: &Pattern, report: &mut Report) {
    let ep = table.endpoint(table.relay_target);
    let name = table.relay_name();
    eprintln!(
        "(j) JMUX tunnel on {name}: {} bytes through 1 and {CHANNELS} channels, {} round trips",
        opts.j_bytes, opts.c_count
    );
    let services = match Services::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("  (j) no local services: {e}");
            return;
        }
    };
    let names = [
        "plain MB/s",
        "1 ch MB/s",
        "16 ch MB/s",
        "plain p50",
        "tunnel p50",
    ];
    let mut series = vec![Series::default(); names.len()];
    let mut failed = None;
    for round in 0..opts.rounds {
        let seed = round as u64;
        let measured = (|| -> io::Result<Vec<f64>> {
            let plain = single_pair(ep, None, pattern, opts.j_bytes, seed)?[0];
            let one = tunnel_throughput(ep, &services, pattern, opts.j_bytes, 1, seed)?;
            let many = tunnel_throughput(ep, &services, pattern, opts.j_bytes, CHANNELS, seed)?;
            let plain_rtt = plain_round_trips(ep, pattern, opts.c_count, seed)?;
            let tunnel_rtt = tunnel_round_trips(ep, &services, pattern, opts.c_count, seed)?;
            Ok(vec![plain, one, many, plain_rtt, tunnel_rtt])
        })();
        match measured {
            Ok(values) => {
                let line: Vec<String> = names
                    .iter()
                    .zip(&values)
                    .map(|(n, v)| format!("{n} {v:.1}"))
                    .collect();
                eprintln!("  round {round}: {}", line.join(", "));
                for (s, v) in series.iter_mut().zip(values) {
                    s.push(v);
                }
            }
            Err(e) => {
                eprintln!("  round {round}: error: {e}");
                failed.get_or_insert(e.to_string());
            }
        }
    }
    let ratio = |a: usize, b: usize| {
        Series(
            series[a]
                .0
                .iter()
                .zip(&series[b].0)
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let added = Series(
        series[4]
            .0
            .iter()
            .zip(&series[3].0)
            .map(|(t, p)| t - p)
            .collect(),
    );
    let f = || failed.clone();
    report.add(
        "j",
        "plain pair throughput",
        &name,
        "MB/s",
        series[0].clone(),
        "",
        f(),
    );
    report.add(
        "j",
        "1 channel throughput",
        &name,
        "MB/s",
        series[1].clone(),
        "",
        f(),
    );
    let many = format!("{CHANNELS} channels throughput");
    report.add("j", &many, &name, "MB/s", series[2].clone(), "", f());
    report.add(
        "j",
        "1 channel ratio",
        &name,
        "x plain",
        ratio(1, 0),
        "",
        f(),
    );
    let many = format!("{CHANNELS} channels ratio");
    report.add("j", &many, &name, "x plain", ratio(2, 0), "", f());
    report.add(
        "j",
        "p50 64 B plain",
        &name,
        "us",
        series[3].clone(),
        "",
        f(),
    );
    report.add(
        "j",
        "p50 64 B channel",
        &name,
        "us",
        series[4].clone(),
        "",
        f(),
    );
    report.add("j", "added p50 64 B", &name, "us", added, "", f());
}

/// The server side's destinations: a checker that reads a header (seed,
/// length) then that many pattern bytes and answers one byte, and an echo.
struct Services {
    check: SocketAddr,
    echo: SocketAddr,
}

impl Services {
    /// The services check against a pattern of their own: the same bytes.
    fn start() -> io::Result<Services> {
        let check = TcpListener::bind("127.0.0.1:0")?;
        let echo = TcpListener::bind("127.0.0.1:0")?;
        let services = Services {
            check: check.local_addr()?,
            echo: echo.local_addr()?,
        };
        let pattern = Arc::new(Pattern::new());
        thread::spawn(move || {
            for conn in check.incoming() {
                let Ok(sock) = conn else { return };
                let pattern = Arc::clone(&pattern);
                thread::spawn(move || {
                    if let Err(e) = check_stream(sock, &pattern) {
                        eprintln!("  (j) checker: {e}");
                    }
                });
            }
        });
        thread::spawn(move || {
            for conn in echo.incoming() {
                let Ok(mut sock) = conn else { return };
                thread::spawn(move || {
                    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
                    let Ok(mut out) = sock.try_clone() else {
                        return;
                    };
                    let _ = io::copy(&mut sock, &mut out);
                    let _ = out.shutdown(Shutdown::Write);
                });
            }
        });
        Ok(services)
    }
}

fn check_stream(mut sock: TcpStream, pattern: &Pattern) -> io::Result<()> {
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut header = [0u8; 16];
    sock.read_exact(&mut header)?;
    let seed = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
    let len = u64::from_be_bytes(header[8..].try_into().expect("8 bytes"));
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < len {
        let want = (len - pos).min(CHUNK as u64) as usize;
        let n = sock.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended early",
            ));
        }
        if buf[..n] != *pattern.slice(seed, pos, n) {
            return Err(corrupt(seed, pos));
        }
        pos += n as u64;
    }
    sock.write_all(&[1])
}

/// Half of a relay pair's peer as one direction of a tunnel's stream.
struct Half(Arc<Peer>);

impl Read for Half {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Half {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn stream(peer: Peer) -> io::Result<jmux::Stream> {
    let peer = Arc::new(peer);
    // Idle tunnels are fine: the bench's socket timeouts are for pairs.
    peer.socket().set_read_timeout(None)?;
    let closer = Arc::clone(&peer);
    Ok(jmux::Stream {
        reader: Box::new(Half(Arc::clone(&peer))),
        writer: Box::new(Half(peer)),
        closer: Box::new(move || {
            let _ = closer.socket().shutdown(Shutdown::Both);
        }),
    })
}

/// A tunnel over a fresh relay pair: the server (which connects every
/// destination) and the client.
fn tunnel(ep: &Endpoint) -> io::Result<(Tunnel, Tunnel)> {
    let (server, client) = ep.pair()?;
    let allow_all: Policy = Arc::new(|_: &str| Ok(()));
    let server = Tunnel::server(stream(server)?, allow_all)?;
    let client = Tunnel::client(stream(client)?)?;
    Ok((server, client))
}

/// A local socket bridged to a new channel to `destination`.
fn channel(client: &Tunnel, destination: SocketAddr) -> io::Result<TcpStream> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let app = TcpStream::connect(listener.local_addr()?)?;
    let (near, _) = listener.accept()?;
    client
        .open_bridged(&format!("tcp://{destination}"), near)
        .map_err(io::Error::other)?;
    app.set_nodelay(true)?;
    app.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(app)
}

/// `bytes` in total through `channels` channels of one tunnel. Returns MB/s.
fn tunnel_throughput(
    ep: &Endpoint,
    services: &Services,
    pattern: &Pattern,
    bytes: u64,
    channels: usize,
    seed: u64,
) -> io::Result<f64> {
    let (_server, client) = tunnel(ep)?;
    let each = bytes / channels as u64;
    let sockets = (0..channels)
        .map(|_| channel(&client, services.check))
        .collect::<io::Result<Vec<_>>>()?;
    let started = Instant::now();
    thread::scope(|s| {
        let workers: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, mut sock)| {
                s.spawn(move || -> io::Result<()> {
                    let seed = seed * 100 + i as u64;
                    let mut header = seed.to_be_bytes().to_vec();
                    header.extend_from_slice(&each.to_be_bytes());
                    sock.write_all(&header)?;
                    let mut pos = 0;
                    while pos < each {
                        let n = (each - pos).min(CHUNK as u64) as usize;
                        sock.write_all(pattern.slice(seed, pos, n))?;
                        pos += n as u64;
                    }
                    let mut done = [0u8; 1];
                    sock.read_exact(&mut done)
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| io::Error::other("a channel worker panicked"))?
        })
    })?;
    let took = started.elapsed();
    Ok((each * channels as u64) as f64 / took.as_secs_f64() / 1e6)
}

/// p50 of 64-byte round trips over a plain relay pair, in µs.
fn plain_round_trips(ep: &Endpoint, pattern: &Pattern, count: usize, seed: u64) -> io::Result<f64> {
    let (server, client) = ep.pair()?;
    thread::scope(|s| {
        let echo = s.spawn(|| -> io::Result<()> {
            let mut buf = [0u8; MESSAGE];
            let mut server = &server;
            for _ in 0..WARMUP + count {
                server.read_exact(&mut buf)?;
                server.write_all(&buf)?;
            }
            Ok(())
        });
        let mut client_ref = &client;
        let result = round_trips(&mut client_ref, pattern, count, seed);
        if result.is_err() {
            let _ = client.socket().shutdown(Shutdown::Both);
        }
        let echoed = echo.join().map_err(|_| io::Error::other("echo panicked"))?;
        echoed.and(result)
    })
}

/// p50 of 64-byte round trips through one channel to the echo service, in µs.
fn tunnel_round_trips(
    ep: &Endpoint,
    services: &Services,
    pattern: &Pattern,
    count: usize,
    seed: u64,
) -> io::Result<f64> {
    let (_server, client) = tunnel(ep)?;
    let mut sock = channel(&client, services.echo)?;
    round_trips(&mut sock, pattern, count, seed)
}

fn round_trips(
    sock: &mut (impl Read + Write),
    pattern: &Pattern,
    count: usize,
    seed: u64,
) -> io::Result<f64> {
    let mut buf = [0u8; MESSAGE];
    let mut times = Vec::with_capacity(count);
    for i in 0..WARMUP + count {
        let pos = (i * MESSAGE) as u64;
        let message = pattern.slice(seed, pos, MESSAGE);
        let t0 = Instant::now();
        sock.write_all(message)?;
        sock.read_exact(&mut buf)?;
        let took = t0.elapsed();
        if buf != *message {
            return Err(corrupt(seed, pos));
        }
        if i >= WARMUP {
            times.push(took.as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(percentile(&times, 50.0))
}
