//! Figure (d): associations (direct: connections) opened, used and closed per second, and the relay's CPU per association.

use crate::options::Options;
use crate::pattern::corrupt;
use crate::peers::{Endpoint, Peer};
use crate::relay::RelayProcess;
use crate::report::{one_round, short, Report, Rounds};
use crate::stats::Series;
use crate::targets::{Target, TargetTable, Transport};
use crate::tokens::{Algorithm, Authority, Signed};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Runs (d) on every target of `table` for each concurrency and reports it;
/// with `--tokens`, also on a relay of its own that requires tokens, round
/// by round after the others (so under the same machine conditions).
pub fn figure(opts: &Options, table: &TargetTable, report: &mut Report) {
    let signed = match opts
        .tokens
        .map(|alg| TokenRun::start(opts, alg))
        .transpose()
    {
        Ok(run) => run,
        Err(e) => {
            eprintln!("(d) with tokens: {e}");
            None
        }
    };
    for &c in &opts.d_concurrency {
        eprintln!(
            "(d) associations/s at concurrency {c}, {} s",
            opts.d_seconds
        );
        let mut rounds = Rounds::new(&table.targets, 2);
        let relay = table.relay_target;
        let mut with_tokens = Rounds::new(&[relay], 2);
        for round in 0..opts.rounds {
            one_round(&mut rounds, &table.targets, round, "", |t| {
                association_rate(
                    table.endpoint(t),
                    table.relay_of(t),
                    c,
                    opts.d_seconds,
                    None,
                )
            });
            if let Some(run) = &signed {
                // Enough tokens for twice this round's token-less rate.
                let (plain, _) = rounds.series(relay, 0);
                let rate = plain.0.last().copied().unwrap_or(f64::NAN);
                let rate = if rate.is_finite() { rate } else { 5000.0 };
                let per_worker = (rate * opts.d_seconds * 2.0 / c as f64).ceil() as usize + 100;
                let r = run.measure(c, per_worker, opts.d_seconds);
                eprintln!("  round {round} {}: {}", run.name(), short(&r));
                with_tokens.record(relay, r);
            }
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
        let (cpu, e) = rounds.series(relay, 1);
        let what = format!("relay CPU per association, concurrency {c}");
        report.add("d", &what, &table.relay_name(), "us", cpu, "", e);
        if let Some(run) = &signed {
            let name = run.name();
            let (rate, e) = with_tokens.series(relay, 0);
            let what = format!("associations/s, concurrency {c}");
            report.add("d", &what, &name, "1/s", rate, "", e);
            let (cpu, e) = with_tokens.series(relay, 1);
            let what = format!("relay CPU per association, concurrency {c}");
            report.add("d", &what, &name, "us", cpu, "", e);
            for (index, what, unit) in [
                (0, "associations/s with tokens / without", "x"),
                (1, "relay CPU per association with tokens / without", "x"),
            ] {
                let (t, t_err) = with_tokens.series(relay, index);
                let (p, p_err) = rounds.series(relay, index);
                let ratio = Series(t.0.iter().zip(&p.0).map(|(a, b)| a / b).collect());
                let what = format!("{what}, concurrency {c}");
                report.add("d", &what, &name, unit, ratio, "", t_err.or(p_err));
            }
        }
    }
}

/// (d) with tokens: a relay that requires them, and the authority whose
/// public key it loads.
struct TokenRun {
    authority: Authority,
    relay: RelayProcess,
    endpoint: Endpoint,
}

impl TokenRun {
    fn start(opts: &Options, alg: Algorithm) -> io::Result<TokenRun> {
        let authority = Authority::new(alg)?;
        let relay = RelayProcess::start_with(opts, Transport::Tcp, &authority.relay_config())?;
        eprintln!(
            "jet-bench: relay pid {} on {} requires {} tokens",
            relay.pid(),
            relay.addr,
            alg.jws_name()
        );
        let endpoint = Endpoint::relay(Transport::Tcp, relay.addr, None);
        Ok(TokenRun {
            authority,
            relay,
            endpoint,
        })
    }

    fn name(&self) -> String {
        format!("relay-tcp+{}", self.authority.algorithm().jws_name())
    }

    /// Signs `per_worker` associations' tokens for each of `concurrency`
    /// workers (untimed), then measures as for the token-less relay.
    fn measure(&self, concurrency: usize, per_worker: usize, seconds: f64) -> io::Result<Vec<f64>> {
        let signing = Instant::now();
        let pools = (0..concurrency)
            .map(|_| {
                let (base, first) = self.endpoint.reserve_ids(per_worker);
                self.authority.sign_batch(per_worker, base, first)
            })
            .collect::<io::Result<Vec<_>>>()?;
        eprintln!(
            "  signed {} tokens in {:.2} s (not timed)",
            2 * concurrency * per_worker,
            signing.elapsed().as_secs_f64()
        );
        association_rate(
            &self.endpoint,
            Some(&self.relay),
            concurrency,
            seconds,
            Some(&pools),
        )
    }
}

/// One association (or, direct, one connection): pair, a 1-byte round trip,
/// then an orderly close both ways through the target.
fn one_association(pair: io::Result<(Peer, Peer)>, n: u64) -> io::Result<()> {
    let (server, client) = pair?;
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
/// With `signed`, worker `w` pairs on the associations of `signed[w]` in
/// turn, with their tokens, and running out of them fails the round.
/// Returns [associations/s, relay CPU µs per association].
fn association_rate(
    ep: &Endpoint,
    relay: Option<&RelayProcess>,
    concurrency: usize,
    seconds: f64,
    signed: Option<&[Vec<Signed>]>,
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
                let mut i = 0;
                while Instant::now() < deadline {
                    let pair = match signed.map(|pools| pools[w].get(i)) {
                        None => ep.pair_with(own.as_ref()),
                        Some(Some(tokens)) => ep.pair_signed(tokens),
                        Some(None) => Err(io::Error::other("ran out of pre-signed tokens")),
                    };
                    i += 1;
                    if let Err(e) = one_association(pair, n) {
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
