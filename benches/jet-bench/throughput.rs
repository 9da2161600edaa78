//! Figure (a): one pair's throughput one way, and the relay's CPU per GB it moves.

use crate::options::Options;
use crate::pattern::{receive_stream, send_stream, Pattern};
use crate::peers::Endpoint;
use crate::relay::RelayProcess;
use crate::report::{one_round, Report, Rounds};
use crate::stats::Series;
use crate::targets::{ratio_unit, versus, Target, TargetTable, Transport};
use std::io;
use std::thread;
use std::time::Instant;

/// Runs (a) on every target of `table` and reports it. Returns the relay's
/// median CPU per GB, unless it failed.
pub fn figure(
    opts: &Options,
    table: &TargetTable,
    pattern: &Pattern,
    report: &mut Report,
) -> Option<f64> {
    eprintln!("(a) one pair, {} bytes one way", opts.a_bytes);
    let mut rounds = Rounds::new(&table.targets, 2);
    for round in 0..opts.rounds {
        one_round(&mut rounds, &table.targets, round, "", |t| {
            let relay = table.relay_of(t);
            single_pair(
                table.endpoint(t),
                relay,
                pattern,
                opts.a_bytes,
                round as u64,
            )
        });
    }
    for &t in &table.targets {
        let (v, e) = rounds.series(t, 0);
        report.add("a", "1 pair throughput", &t.name(), "MB/s", v, "", e);
    }
    let rname = table.relay_name();
    for &b in &table.baselines {
        let (ratio, e) = rounds.ratio_to(table.relay_target, b, 0);
        let goal = if b == Target::Direct { ">= 0.45" } else { "" };
        let what = format!("1 pair ratio{}", versus(b));
        report.add("a", &what, &rname, ratio_unit(b), ratio, goal, e);
    }
    let (cpu, ce) = rounds.series(table.relay_target, 1);
    let median = ce.is_none().then(|| cpu.median());
    report.add("a", "relay CPU", &rname, "s/GB", cpu, "<= 0.25", ce);
    median
}

/// The TLS goal: relay CPU per GB over TLS within 3x of plain TCP,
/// from the medians of (a) per transport (`cpu_medians`).
pub fn report_cpu_ratios(report: &mut Report, cpu_medians: &[(Transport, f64)]) {
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
}

/// (a) One pair, `bytes` one way. Returns [MB/s, relay CPU s/GB].
pub fn single_pair(
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
