//! Figure (c): round-trip latency of small and large messages through one pair, p50 and p99.

use crate::options::Options;
use crate::pattern::{corrupt, Pattern};
use crate::peers::Endpoint;
use crate::report::{one_round, Report, Rounds};
use crate::stats::percentile;
use crate::targets::{ratio_unit, versus, Target, TargetTable};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Instant;

/// Latency round trips done before the measured ones.
const WARMUP: usize = 200;

/// Runs (c) on every target of `table` for each message size and reports it.
pub fn figure(opts: &Options, table: &TargetTable, pattern: &Pattern, report: &mut Report) {
    for size in [64usize, 16 * 1024] {
        eprintln!(
            "(c) latency, {size}-byte messages, {} round trips",
            opts.c_count
        );
        let mut rounds = Rounds::new(&table.targets, 2);
        for round in 0..opts.rounds {
            one_round(&mut rounds, &table.targets, round, "", |t| {
                latency(table.endpoint(t), pattern, size, opts.c_count, round as u64)
            });
        }
        let label = if size == 64 { "64 B" } else { "16 KiB" };
        for &t in &table.targets {
            let (p50, e) = rounds.series(t, 0);
            report.add("c", &format!("p50 {label}"), &t.name(), "us", p50, "", e);
            let (p99, e) = rounds.series(t, 1);
            report.add("c", &format!("p99 {label}"), &t.name(), "us", p99, "", e);
        }
        let rname = table.relay_name();
        for &b in &table.baselines {
            let (r50, e) = rounds.ratio_to(table.relay_target, b, 0);
            let goal = if b == Target::Direct { "<= 2.0" } else { "" };
            let what = format!("p50 ratio {label}{}", versus(b));
            report.add("c", &what, &rname, ratio_unit(b), r50, goal, e);
            let (r99, e) = rounds.ratio_to(table.relay_target, b, 1);
            let what = format!("p99 ratio {label}{}", versus(b));
            report.add("c", &what, &rname, ratio_unit(b), r99, "", e);
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
