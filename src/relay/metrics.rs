//! The relay's counters, gauges and histograms, updated lock-free, and their Prometheus text.

#[cfg(target_os = "linux")]
mod process;

use crate::relay::shared::Context;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every family's name starts with this.
pub const PREFIX: &str = "jet_relay_";

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An accept parked its connection.
    Parked,
    /// A connect paired with a parked accept.
    Paired,
    /// A test was answered.
    Tested,
    /// A well-formed request was refused with a status.
    Rejected,
    /// The bytes were not a JET request; closed without an answer.
    Malformed,
    /// The handshake timeout passed first.
    Timeout,
    /// The peer went away during the handshake.
    Closed,
}

impl Outcome {
    /// Every outcome, in exposition order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Parked,
        Outcome::Paired,
        Outcome::Tested,
        Outcome::Rejected,
        Outcome::Malformed,
        Outcome::Timeout,
        Outcome::Closed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Parked => "parked",
            Outcome::Paired => "paired",
            Outcome::Tested => "tested",
            Outcome::Rejected => "rejected",
            Outcome::Malformed => "malformed",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
        }
    }
}

/// Upper bounds of the histogram buckets, in microseconds and as the `le`
/// label shows them: from a millisecond (a handshake on loopback) to an hour
/// (a long remote-desktop session); longer ones fall in `+Inf`.
pub const BUCKETS: [(u64, &str); 20] = [
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
    (60_000_000, "60"),
    (120_000_000, "120"),
    (300_000_000, "300"),
    (600_000_000, "600"),
    (1_800_000_000, "1800"),
    (3_600_000_000, "3600"),
];

/// A histogram of durations with the fixed [`BUCKETS`]: one atomic per
/// bucket (not cumulative; the text adds them up) and the sum in
/// microseconds, so observing takes no lock.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket; the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS.partition_point(|(bound, _)| *bound < micros);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of family `name`.
    /// `_count` is the `+Inf` bucket by construction, even while other
    /// threads observe.
    fn write(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf", |(_, label)| label);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_sum {}.{:06}", sum / 1_000_000, sum % 1_000_000);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// The close codes a WebSocket connection is failed with: protocol error,
/// invalid UTF-8, too big.
pub const WS_CLOSE_CODES: [u16; 3] = [1002, 1007, 1009];

/// Counters and histograms of the whole relay.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted on every listener.
    pub connections_accepted: AtomicU64,
    /// Connections accepted per listener: its bound URL and the count.
    accepted_by_listener: Vec<(String, AtomicU64)>,
    handshakes: [AtomicU64; 7],
    /// Rejections answered 400 (bad request, version, id or path).
    pub rejected_400: AtomicU64,
    /// Rejections answered 404 (unknown association, nothing parked).
    pub rejected_404: AtomicU64,
    /// Rejections answered 409 (candidate taken).
    pub rejected_409: AtomicU64,
    /// Rejections answered 503 (table full, shutting down).
    pub rejected_503: AtomicU64,
    /// Pairs formed.
    pub pairs_started: AtomicU64,
    /// Pairs whose relay ended.
    pub pairs_ended: AtomicU64,
    /// Bytes relayed from accepting peers to connecting peers.
    pub bytes_accept_to_connect: AtomicU64,
    /// Bytes relayed from connecting peers to accepting peers.
    pub bytes_connect_to_accept: AtomicU64,
    /// Associations removed unselected after their TTL.
    pub associations_expired: AtomicU64,
    /// Pairs closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// Connections refused because a thread could not be started.
    pub spawn_failures: AtomicU64,
    /// REST answers with a 2xx status.
    pub http_2xx: AtomicU64,
    /// REST answers with a 4xx status.
    pub http_4xx: AtomicU64,
    /// REST answers with a 5xx status.
    pub http_5xx: AtomicU64,
    /// Connections on TLS listeners closed because their TLS handshake failed
    /// (plain bytes, a bad or incompatible client hello); timeouts and peers
    /// that left are counted as handshake outcomes only.
    pub tls_handshake_failures: AtomicU64,
    /// WebSocket upgrade requests refused as malformed (bad key, version,
    /// headers or path), answered 400 or 426 before any upgrade. Unknown
    /// associations (404) and taken candidates (409) are ordinary rejections.
    pub ws_upgrade_failures: AtomicU64,
    /// WebSocket connections failed for a frame RFC 6455 says to reject, by
    /// the close code sent ([`WS_CLOSE_CODES`]).
    ws_protocol_errors: [AtomicU64; 3],
    /// From an accept parking (its candidate reserved, its 200 going out) to
    /// the connect that pairs with it.
    pub accept_to_pair: Histogram,
    /// From a pair forming to both copy directions ending.
    pub pair_lifetime: Histogram,
    /// From a connection's acceptance (its request's first byte on an HTTP
    /// keep-alive connection) to its JET or WebSocket request being served
    /// (parked, paired, tested) or refused with a status.
    pub handshake_duration: Histogram,
}

impl Metrics {
    /// Counters for listeners labelled by their bound URLs, in order.
    pub fn for_listeners(urls: impl IntoIterator<Item = String>) -> Metrics {
        Metrics {
            accepted_by_listener: urls.into_iter().map(|u| (u, AtomicU64::new(0))).collect(),
            ..Metrics::default()
        }
    }

    /// Counts a connection accepted on listener number `listener`.
    pub fn accepted(&self, listener: usize) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        if let Some((_, count)) = self.accepted_by_listener.get(listener) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a pair whose copy directions both ended after `lifetime`.
    /// Called before the table learns it, so a reader that sees the pair
    /// ended finds it counted.
    pub fn pair_ended(&self, lifetime: Duration) {
        self.pairs_ended.fetch_add(1, Ordering::Relaxed);
        self.pair_lifetime.observe(lifetime);
    }

    /// Counts a WebSocket connection failed with close `code` (1002, 1007
    /// or 1009; any other counts as 1002, the generic protocol error).
    pub fn ws_protocol_error(&self, code: u16) {
        let at = WS_CLOSE_CODES.iter().position(|c| *c == code).unwrap_or(0);
        self.ws_protocol_errors[at].fetch_add(1, Ordering::Relaxed);
    }

    /// How many WebSocket connections were failed with close `code`.
    pub fn ws_protocol_errors(&self, code: u16) -> u64 {
        WS_CLOSE_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |at| self.ws_protocol_errors[at].load(Ordering::Relaxed))
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, outcome: Outcome) {
        self.handshakes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many handshakes ended this way.
    pub fn handshakes(&self, outcome: Outcome) -> u64 {
        self.handshakes[outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts a REST answer by its status class.
    pub fn http_response(&self, status: u16) {
        let counter = match status {
            500.. => &self.http_5xx,
            400.. => &self.http_4xx,
            _ => &self.http_2xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejection by its status.
    pub fn rejected(&self, status: u16) {
        let counter = match status {
            404 => &self.rejected_404,
            409 => &self.rejected_409,
            503 => &self.rejected_503,
            _ => &self.rejected_400,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes families in the text exposition format.
struct Exposition {
    out: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of family `name` (the full name).
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One family of `jet_relay_` samples; `labels` is `k="v",...` or empty.
    fn relay(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        self.family(&format!("{PREFIX}{name}"), kind, help);
        for (labels, value) in samples {
            self.sample(&format!("{PREFIX}{name}"), labels, *value);
        }
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        let name = format!("{PREFIX}{name}");
        self.family(&name, "histogram", help);
        histogram.write(&mut self.out, &name);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format wants.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of every family: the relay's counters,
/// gauges read from the table, registry and pool, the histograms, build
/// information and the standard `process_*` families.
pub fn exposition(ctx: &Context) -> String {
    let m = &ctx.metrics;
    let counts = ctx.table.counts();
    let open = ctx.registry.len();
    let pool = ctx.pool.load();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut x = Exposition {
        out: String::with_capacity(8192),
    };
    x.relay(
        "build_info",
        "gauge",
        "Always 1; the version label names the running build.",
        &[(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    let pairs = counts.paired + counts.relaying;
    let relaying_conns = 2 * pairs;
    x.relay(
        "connections_open",
        "gauge",
        "Open connections by kind: parked accepts, paired (relaying) peers, and the rest (handshaking or HTTP).",
        &[
            ("kind=\"parked\"", counts.parked as u64),
            ("kind=\"paired\"", relaying_conns as u64),
            (
                "kind=\"handshake_or_http\"",
                open.saturating_sub(counts.parked + relaying_conns) as u64,
            ),
        ],
    );
    let by_listener: Vec<(String, u64)> = m
        .accepted_by_listener
        .iter()
        .map(|(url, n)| (format!("listener=\"{}\"", label_value(url)), load(n)))
        .collect();
    let by_listener: Vec<(&str, u64)> = by_listener.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    x.relay(
        "connections_accepted_total",
        "counter",
        "Connections accepted, by listener (its bound URL).",
        &by_listener,
    );
    x.relay(
        "associations",
        "gauge",
        "Associations by state.",
        &[
            ("state=\"created\"", counts.created as u64),
            ("state=\"active\"", counts.active as u64),
            ("state=\"ended\"", counts.ended as u64),
        ],
    );
    x.relay(
        "parked_accepts",
        "gauge",
        "Accepts parked on a candidate, waiting for their connect.",
        &[("", counts.parked as u64)],
    );
    x.relay(
        "pairs_relaying",
        "gauge",
        "Paired candidates whose relay is running.",
        &[("", pairs as u64)],
    );
    x.relay(
        "pairs_started_total",
        "counter",
        "Pairs formed.",
        &[("", load(&m.pairs_started))],
    );
    x.relay(
        "pairs_ended_total",
        "counter",
        "Pairs whose both copy directions ended.",
        &[("", load(&m.pairs_ended))],
    );
    x.relay(
        "relayed_bytes_total",
        "counter",
        "Bytes relayed, by direction (counted per chunk, live).",
        &[
            (
                "direction=\"accept_to_connect\"",
                load(&m.bytes_accept_to_connect),
            ),
            (
                "direction=\"connect_to_accept\"",
                load(&m.bytes_connect_to_accept),
            ),
        ],
    );
    let outcomes: Vec<(String, u64)> = Outcome::ALL
        .iter()
        .map(|o| (format!("outcome=\"{}\"", o.as_str()), m.handshakes(*o)))
        .collect();
    let outcomes: Vec<(&str, u64)> = outcomes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    x.relay(
        "handshakes_total",
        "counter",
        "JET handshakes by outcome.",
        &outcomes,
    );
    x.relay(
        "rejections_total",
        "counter",
        "JET requests refused with a status, by reason.",
        &[
            (
                "reason=\"bad_request\",status=\"400\"",
                load(&m.rejected_400),
            ),
            ("reason=\"not_found\",status=\"404\"", load(&m.rejected_404)),
            ("reason=\"conflict\",status=\"409\"", load(&m.rejected_409)),
            (
                "reason=\"unavailable\",status=\"503\"",
                load(&m.rejected_503),
            ),
        ],
    );
    x.relay(
        "handshake_timeouts_total",
        "counter",
        "Connections closed because no complete request came within the handshake timeout.",
        &[("", m.handshakes(Outcome::Timeout))],
    );
    x.relay(
        "tls_handshake_failures_total",
        "counter",
        "Connections on TLS listeners closed because their TLS handshake failed.",
        &[("", load(&m.tls_handshake_failures))],
    );
    x.relay(
        "websocket_upgrade_failures_total",
        "counter",
        "Malformed WebSocket upgrades refused before any upgrade (bad key, version or path).",
        &[("", load(&m.ws_upgrade_failures))],
    );
    let ws_errors: Vec<(String, u64)> = WS_CLOSE_CODES
        .iter()
        .map(|code| (format!("code=\"{code}\""), m.ws_protocol_errors(*code)))
        .collect();
    let ws_errors: Vec<(&str, u64)> = ws_errors.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    x.relay(
        "websocket_protocol_errors_total",
        "counter",
        "WebSocket connections failed for a frame RFC 6455 says to reject, by the close code sent.",
        &ws_errors,
    );
    x.relay(
        "associations_expired_total",
        "counter",
        "Associations removed because no candidate was selected within the TTL.",
        &[("", load(&m.associations_expired))],
    );
    x.relay(
        "idle_closed_total",
        "counter",
        "Pairs closed by the idle timeout.",
        &[("", load(&m.idle_closed))],
    );
    x.relay(
        "http_responses_total",
        "counter",
        "REST responses by status class.",
        &[
            ("class=\"2xx\"", load(&m.http_2xx)),
            ("class=\"4xx\"", load(&m.http_4xx)),
            ("class=\"5xx\"", load(&m.http_5xx)),
        ],
    );
    x.relay(
        "thread_spawn_failures_total",
        "counter",
        "Connections refused because the system would not start a thread.",
        &[("", load(&m.spawn_failures))],
    );
    x.relay(
        "client_limit_refusals_total",
        "counter",
        "Requests refused by a per-client limit, by limit.",
        &[("limit=\"rest_rate\"", ctx.limits.stats().refused_rest)],
    );
    x.relay(
        "threads",
        "gauge",
        "Connection and copy threads alive: busy running a job, or idle waiting for one.",
        &[
            ("state=\"busy\"", pool.busy as u64),
            ("state=\"idle\"", pool.idle as u64),
        ],
    );
    x.relay(
        "threads_max",
        "gauge",
        "The most connection and copy threads the relay starts (max_threads).",
        &[("", pool.limit as u64)],
    );
    x.histogram(
        "accept_to_pair_seconds",
        "Time from an accept parking on a candidate to the connect that pairs with it.",
        &m.accept_to_pair,
    );
    x.histogram(
        "pair_lifetime_seconds",
        "Time from a pair forming to both of its copy directions ending.",
        &m.pair_lifetime,
    );
    x.histogram(
        "handshake_duration_seconds",
        "Time from a connection's acceptance to its JET or WebSocket request being served or refused.",
        &m.handshake_duration,
    );
    #[cfg(target_os = "linux")]
    process::write(&mut x);
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_duration_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 700, 4_000_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.write(&mut out, "h");
        let line = |le: &str| {
            let prefix = format!("h_bucket{{le=\"{le}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no bucket {le} in {out}"))
                .to_owned()
        };
        // 0 ms and exactly 1 ms are both at most 0.001 s: `le` is inclusive.
        assert_eq!(line("0.001"), "2");
        assert_eq!(line("0.0025"), "3");
        assert_eq!(line("1"), "4");
        assert_eq!(line("3600"), "4");
        assert_eq!(line("+Inf"), "5");
        assert!(out.contains("h_count 5\n"), "{out}");
        assert!(out.contains("h_sum 4000.703000\n"), "{out}");
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn bucket_bounds_rise_and_their_labels_say_the_same_seconds() {
        for pair in BUCKETS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{pair:?}");
        }
        for (micros, label) in BUCKETS {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e6).round() as u64, micros, "{label}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
