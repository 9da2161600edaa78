//! jet-bench: measures the release relay against a direct loopback connection between the same two peers.
//!
//! Every figure runs on each target in turn, alternating over several rounds,
//! and reports medians with min-max. Every relayed byte is checked against a
//! known pseudo-random stream: a wrong byte fails the figure. Run through
//! `scripts/bench.sh`, or `cargo bench --bench jet-bench -- --help`.
//!
//! The figures, one module each, are those of BENCHMARKS.md: (a)
//! `throughput`, (b) `fairness`, (c) `latency`, (d) `associations`, (e)
//! `idle_pairs`; and (j) `jmux`, one JMUX tunnel against a plain relayed pair.

mod associations;
mod fairness;
mod idle_pairs;
mod jmux;
mod latency;
mod options;
mod pattern;
mod peers;
mod relay;
mod report;
mod stats;
mod targets;
mod throughput;
mod tokens;

use options::{parse_options, Options, USAGE};
use pattern::Pattern;
use peers::TlsConfigs;
use relay::{raise_nofile, RelayProcess};
use report::Report;
use std::io;
use std::sync::Arc;
use targets::{TargetTable, Transport};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let opts = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("jet-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("jet-bench: {e}");
        std::process::exit(1);
    }
}

/// What every transport's figures share.
struct Bench<'a> {
    opts: &'a Options,
    /// The descriptor limit, which caps the idle pairs of (e).
    nofile: u64,
    pattern: Pattern,
    /// Loaded when some transport is TLS.
    tls_configs: Option<Arc<TlsConfigs>>,
    report: Report,
    /// Relay CPU per GB of (a) by transport, to compare TLS with plain TCP.
    cpu_medians: Vec<(Transport, f64)>,
}

fn run(opts: &Options) -> io::Result<()> {
    let nofile = raise_nofile();
    eprintln!("jet-bench: descriptor limit {nofile}; options {opts:?}");
    let mut bench = Bench {
        opts,
        nofile,
        pattern: Pattern::new(),
        tls_configs: None,
        report: Report::default(),
        cpu_medians: Vec::new(),
    };
    if opts.transports.iter().any(|t| t.is_tls()) {
        bench.tls_configs = Some(TlsConfigs::load()?);
    }
    for &transport in &opts.transports {
        measure_transport(&mut bench, transport)?;
    }
    throughput::report_cpu_ratios(&mut bench.report, &bench.cpu_medians);
    println!();
    print!("{}", bench.report.table());
    Ok(())
}

/// Every figure wanted on one relay transport: (a)-(d) on one relay, then
/// (e), on plain TCP only, on fresh relays of its own.
fn measure_transport(bench: &mut Bench, transport: Transport) -> io::Result<()> {
    let opts = bench.opts;
    {
        let relay = RelayProcess::start(opts, transport)?;
        eprintln!(
            "jet-bench: relay pid {} on {} (zero_copy = {})",
            relay.pid(),
            relay.addr,
            opts.zero_copy
        );
        let table = TargetTable::new(transport, &relay, bench.tls_configs.as_ref())?;
        let (pattern, report) = (&bench.pattern, &mut bench.report);
        if opts.wants('a') {
            if let Some(cpu) = throughput::figure(opts, &table, pattern, report) {
                bench.cpu_medians.push((transport, cpu));
            }
        }
        if opts.wants('b') {
            fairness::figure(opts, &table, pattern, report);
        }
        if opts.wants('c') {
            latency::figure(opts, &table, pattern, report);
        }
        // Handshake rate and idle capacity are figures of the relay's core,
        // measured over plain TCP.
        if opts.wants('d') && transport == Transport::Tcp {
            associations::figure(opts, &table, report);
        }
        // A tunnel's cost is the peer library's, measured over plain TCP.
        if opts.wants('j') && transport == Transport::Tcp {
            jmux::figure(opts, &table, pattern, report);
        }
        // The relay stops here: (e) starts fresh ones.
    }
    if opts.wants('e') && transport == Transport::Tcp {
        idle_pairs::figure(opts, transport, bench.nofile, &mut bench.report);
    }
    Ok(())
}
