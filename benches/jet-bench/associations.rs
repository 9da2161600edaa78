//! Figure (d): associations (direct: connections) opened, used and closed per second, and the relay's CPU per association.

use crate::options::Options;
use crate::pattern::corrupt;
use crate::peers::Endpoint;
use crate::relay::RelayProcess;
use crate::report::{one_round, Report, Rounds};
use crate::targets::{Target, TargetTable};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Runs (d) on every target of `table` for each concurrency and reports it.
pub fn figure(opts: &Options, table: &TargetTable, report: &mut Report) {
    for &c in &opts.d_concurrency {
        eprintln!(
            "(d) associations/s at concurrency {c}, {} s",
            opts.d_seconds
        );
        let mut rounds = Rounds::new(&table.targets, 2);
        for round in 0..opts.rounds {
            one_round(&mut rounds, &table.targets, round, "", |t| {
                association_rate(table.endpoint(t), table.relay_of(t), c, opts.d_seconds)
            });
        }
        for &t in &table.targets {
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
        let (cpu, e) = rounds.series(table.relay_target, 1);
        let what = format!("relay CPU per association, concurrency {c}");
        report.add("d", &what, &table.relay_name(), "us", cpu, "", e);
    }
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
