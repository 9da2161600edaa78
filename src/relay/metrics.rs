//! The relay's counters, gauges and histograms, updated lock-free (their
//! Prometheus text is `conn/exposition.rs`, which reads them with the rest
//! of the relay's state).

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

/// Why a connection on a `proxy_protocol` listener was closed before its
/// PROXY header was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFailure {
    /// The socket's peer is not in `trusted_proxies`; nothing was read.
    Untrusted,
    /// The first bytes are a JET packet or an HTTP request: no header at all
    /// (a peer that bypassed the balancer, or a balancer without send-proxy).
    Missing,
    /// Bytes that are neither a PROXY signature nor a request.
    WrongSignature,
    /// The stream ended inside the header.
    Truncated,
    /// A v1 line without CRLF within 107 bytes, or a v2 length over the limit.
    Oversize,
    /// A v2 version nibble other than 2.
    UnknownVersion,
    /// A header that breaks the grammar (command, family, addresses, v1 fields).
    Malformed,
    /// The handshake timeout passed inside the header.
    Timeout,
}

impl ProxyFailure {
    /// Every reason, in exposition order.
    pub const ALL: [ProxyFailure; 8] = [
        ProxyFailure::Untrusted,
        ProxyFailure::Missing,
        ProxyFailure::WrongSignature,
        ProxyFailure::Truncated,
        ProxyFailure::Oversize,
        ProxyFailure::UnknownVersion,
        ProxyFailure::Malformed,
        ProxyFailure::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyFailure::Untrusted => "untrusted",
            ProxyFailure::Missing => "missing",
            ProxyFailure::WrongSignature => "wrong_signature",
            ProxyFailure::Truncated => "truncated",
            ProxyFailure::Oversize => "oversize",
            ProxyFailure::UnknownVersion => "unknown_version",
            ProxyFailure::Malformed => "malformed",
            ProxyFailure::Timeout => "timeout",
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
    pub(crate) fn write(&self, out: &mut String, name: &str) {
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
    pub(crate) accepted_by_listener: Vec<(String, AtomicU64)>,
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
    /// Parked accepts removed because their peer left (the watch, or a
    /// connect that found it gone).
    pub parked_gone: AtomicU64,
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
    proxy_failures: [AtomicU64; 8],
    /// Connections whose PROXY header was LOCAL (the balancer's own) and that
    /// asked for `/health`, which was answered.
    pub proxy_local_health: AtomicU64,
    /// LOCAL connections that asked for anything else, or nothing (a layer 4
    /// check): closed without an answer.
    pub proxy_local_closed: AtomicU64,
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

    /// Counts a connection closed for its PROXY header.
    pub fn proxy_failure(&self, reason: ProxyFailure) {
        self.proxy_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections were closed for this PROXY header failure.
    pub fn proxy_failures(&self, reason: ProxyFailure) -> u64 {
        self.proxy_failures[reason as usize].load(Ordering::Relaxed)
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
}
