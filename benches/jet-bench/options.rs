//! The command line: the usage text, and the options parsed from it.

use crate::targets::Transport;
use crate::tokens::Algorithm;
use std::path::PathBuf;

pub const USAGE: &str = "\
jet-bench: the relay against direct loopback, side by side

Usage: jet-bench --relay PATH [options]

  --relay PATH          the jet-relay binary to start (release build)
  --transport LIST      relay transports to measure, comma-separated from
                        tcp,tls,ws,wss (all); (d) and (e) run on tcp only
  --zero-copy BOOL      the relay's zero_copy setting (default true)
  --only LIST           figures to run, comma-separated from a,b,c,d,e,j (all);
                        j: one JMUX tunnel against a plain pair (tcp only)
  --rounds N            rounds per figure, targets alternating (5)
  --a-bytes N           (a) bytes one way through one pair (2GiB)
  --b-pairs N           (b) concurrent pairs (64)
  --b-bytes N           (b) bytes each way per pair (32MiB)
  --c-count N           (c) round trips per message size and round (5000)
  --d-seconds S         (d) seconds per concurrency and round (2)
  --d-concurrency LIST  (d) concurrent peers, comma-separated (4,32)
  --tokens ALG         (d) also on a relay requiring JET v3 tokens signed
                        with es256, rs256 or eddsa (pre-signed, one per
                        association and peer), beside the token-less run
  --e-pairs LIST        (e) idle pair counts, comma-separated (1000,10000)
  --j-bytes N           (j) bytes one way per throughput run (512MiB);
                        its round trips take --c-count
  --quick               small sizes for a smoke run (overridden by the flags above)
  --help

Sizes take K, M, G (powers of 1024, with or without iB).
Output: progress on stderr; a table, then one `BENCH {json}` line per figure, on stdout.
";

/// What to measure, and how much of it.
#[derive(Clone, Debug)]
pub struct Options {
    pub relay: PathBuf,
    pub transports: Vec<Transport>,
    pub zero_copy: bool,
    pub only: Vec<char>,
    pub rounds: usize,
    pub a_bytes: u64,
    pub b_pairs: usize,
    pub b_bytes: u64,
    pub c_count: usize,
    pub d_seconds: f64,
    pub d_concurrency: Vec<usize>,
    pub e_pairs: Vec<usize>,
    pub tokens: Option<Algorithm>,
    pub j_bytes: u64,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("{text:?} is not a size"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{text:?} is not a size"));
    }
    Ok((n * mult as f64) as u64)
}

fn parse_list<T>(text: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s.trim()))
        .collect()
}

pub fn parse_options(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        relay: PathBuf::new(),
        transports: Transport::ALL.to_vec(),
        zero_copy: true,
        only: vec!['a', 'b', 'c', 'd', 'e', 'j'],
        rounds: if quick { 3 } else { 5 },
        a_bytes: if quick { 256 << 20 } else { 2 << 30 },
        b_pairs: if quick { 16 } else { 64 },
        b_bytes: if quick { 4 << 20 } else { 32 << 20 },
        c_count: if quick { 1000 } else { 5000 },
        d_seconds: if quick { 0.5 } else { 2.0 },
        d_concurrency: vec![4, 32],
        e_pairs: if quick {
            vec![200, 1000]
        } else {
            vec![1000, 10000]
        },
        tokens: None,
        j_bytes: if quick { 64 << 20 } else { 512 << 20 },
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{arg}: {v:?}"));
        match arg.as_str() {
            "--quick" => {}
            "--relay" => o.relay = PathBuf::from(value()?),
            "--transport" => o.transports = parse_list(&value()?, crate::targets::parse_transport)?,
            "--zero-copy" => {
                o.zero_copy = value()?.parse().map_err(|_| "--zero-copy: true or false")?
            }
            "--only" => o.only = value()?.chars().filter(char::is_ascii_lowercase).collect(),
            "--rounds" => o.rounds = number(value()?)?.max(1),
            "--a-bytes" => o.a_bytes = parse_size(&value()?)?,
            "--b-pairs" => o.b_pairs = number(value()?)?.max(1),
            "--b-bytes" => o.b_bytes = parse_size(&value()?)?,
            "--c-count" => o.c_count = number(value()?)?.max(10),
            "--d-seconds" => {
                o.d_seconds = value()?
                    .parse()
                    .map_err(|_| format!("{arg}: not a number"))?
            }
            "--d-concurrency" => o.d_concurrency = parse_list(&value()?, |s| number(s.to_owned()))?,
            "--tokens" => o.tokens = Some(Algorithm::parse(&value()?)?),
            "--j-bytes" => o.j_bytes = parse_size(&value()?)?,
            "--e-pairs" => o.e_pairs = parse_list(&value()?, |s| number(s.to_owned()))?,
            // Cargo passes --bench to harness=false benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.relay.as_os_str().is_empty() {
        return Err("--relay PATH is needed (see --help)".into());
    }
    Ok(o)
}

impl Options {
    /// Whether figure `figure` (a letter from a to e, or j) is to run.
    pub fn wants(&self, figure: char) -> bool {
        self.only.contains(&figure)
    }
}
