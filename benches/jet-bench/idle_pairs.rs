//! Figure (e): what idle pairs cost a fresh relay (memory, threads, descriptors), and whether it gives them back after they close.

use crate::options::Options;
use crate::pattern::corrupt;
use crate::peers::{Endpoint, Peer};
use crate::relay::{RelayProcess, Usage};
use crate::report::{short, Report, Rounds};
use crate::targets::{Target, Transport};
use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

/// How long the relay may take to give back threads and descriptors after
/// its pairs close (idle pool threads linger 5 s).
const SETTLE: Duration = Duration::from_secs(20);
/// Descriptors a process needs besides the held pairs' sockets (stdio,
/// listeners, the relay's pipes to us, a few spare).
const RESERVED_FDS: u64 = 32;

/// The values of one (e) measurement, in the order of [`idle_capacity`]'s
/// result: (what, unit, goal).
const FIGURES: [(&str, &str, &str); 10] = [
    ("RSS per idle pair", "KiB", "<= 32"),
    ("threads per idle pair", "", "<= 2"),
    ("fds per idle pair", "", ""),
    ("RSS per pair after a round trip", "KiB", ""),
    ("threads per pair after a round trip", "", ""),
    ("fds per pair after a round trip", "", ""),
    ("RSS above baseline after close", "KiB", ""),
    ("threads above baseline after close", "", "0"),
    ("fds above baseline after close", "", "0"),
    ("time to settle after close", "s", ""),
];

/// Runs (e) for each idle pair count, each on a fresh relay, and reports
/// it; `nofile` is the descriptor limit, which caps the pairs held.
pub fn figure(opts: &Options, transport: Transport, nofile: u64, report: &mut Report) {
    let relay_target = Target::Relay(transport);
    let rname = relay_target.name();
    for &wanted in &opts.e_pairs {
        // Each pair is two sockets here and two in the relay, which
        // inherits our limit; without CAP_SYS_RESOURCE the hard limit
        // stays where it is (20,000 on the reference machine).
        let pairs = wanted.min((nofile.saturating_sub(RESERVED_FDS) / 2) as usize);
        if pairs < wanted {
            eprintln!(
                "(e) {wanted} pairs need {} descriptors per process, the limit is {nofile}: holding {pairs}",
                2 * wanted as u64 + RESERVED_FDS
            );
        }
        eprintln!("(e) {pairs} idle pairs on a fresh relay");
        let mut rounds = Rounds::new(&[relay_target], FIGURES.len());
        // Holding 10,000 pairs takes a while: one round is enough to
        // read memory and counts, which vary little.
        let r = idle_capacity(opts, transport, pairs);
        eprintln!("  {rname}: {}", short(&r));
        rounds.record(relay_target, r);
        for (i, (what, unit, goal)) in FIGURES.into_iter().enumerate() {
            let (s, e) = rounds.series(relay_target, i);
            let what = format!("{what}, {pairs} pairs");
            report.add("e", &what, &rname, unit, s, goal, e);
        }
    }
}
/// Waits until the relay's threads and descriptors are back to `base` (or
/// `SETTLE` passes) and returns the last usage seen.
fn settle(relay: &RelayProcess, base: Usage) -> io::Result<(Usage, Duration)> {
    let started = Instant::now();
    loop {
        let now = relay.usage()?;
        if (now.threads <= base.threads && now.fds <= base.fds) || started.elapsed() > SETTLE {
            return Ok((now, started.elapsed()));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (e) Holds `pairs` idle pairs on a fresh relay. Returns, per pair:
/// [RSS KiB idle, threads, fds, RSS KiB after a round trip on each, threads,
/// fds], then after close [RSS KiB above baseline, threads above, fds above,
/// seconds to settle].
fn idle_capacity(opts: &Options, transport: Transport, pairs: usize) -> io::Result<Vec<f64>> {
    let relay = RelayProcess::start(opts, transport)?;
    let ep = Endpoint::relay(transport, relay.addr, None);
    // The baseline: a fresh relay (main, signal, listener and reaper threads).
    let base = relay.usage()?;
    let mut held = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        held.push(ep.pair()?);
    }
    let per = |u: Usage| {
        let n = pairs as f64;
        [
            (u.rss as f64 - base.rss as f64) / 1024.0 / n,
            (u.threads as f64 - base.threads as f64) / n,
            (u.fds as f64 - base.fds as f64) / n,
        ]
    };
    let idle = relay.usage()?;
    round_trip_each(&held)?;
    let used = relay.usage()?;
    drop(held);
    let (after, took) = settle(&relay, base)?;
    let mut out = Vec::new();
    out.extend(per(idle));
    out.extend(per(used));
    out.push((after.rss as f64 - base.rss as f64) / 1024.0);
    out.push(after.threads as f64 - base.threads as f64);
    out.push(after.fds as f64 - base.fds as f64);
    out.push(took.as_secs_f64());
    eprintln!(
        "    base {:?}, {pairs} idle {:?}, after round trips {:?}, after close {:?}",
        base, idle, used, after
    );
    Ok(out)
}

/// A 1-byte round trip on every held pair.
fn round_trip_each(held: &[(Peer, Peer)]) -> io::Result<()> {
    for (i, (server, client)) in held.iter().enumerate() {
        let (mut server, mut client) = (server, client);
        let byte = [(i % 251) as u8];
        let mut got = [0u8; 1];
        client.write_all(&byte)?;
        server.read_exact(&mut got)?;
        if got != byte {
            return Err(corrupt(i as u64, 0));
        }
        server.write_all(&got)?;
        client.read_exact(&mut got)?;
        if got != byte {
            return Err(corrupt(i as u64, 1));
        }
    }
    Ok(())
}
