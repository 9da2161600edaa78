//! The Prometheus text exposition of `/metrics`: the relay's counters and
//! histograms, gauges read from the table, registry and pool, build
//! information and the standard `process_*` families.

#[cfg(target_os = "linux")]
mod process;

use crate::relay::metrics::{Histogram, Outcome, ProxyFailure, PREFIX, WS_CLOSE_CODES};
use crate::relay::shared::Context;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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
        "parked_accepts_limit",
        "gauge",
        "The most accepts parked at once (max_parked_accepts, or half the descriptor limit).",
        &[("", ctx.table.parked_limit() as u64)],
    );
    x.relay(
        "parked_accepts_gone_total",
        "counter",
        "Parked accepts removed because their peer left (closed or reset) before a connect came.",
        &[("", load(&m.parked_gone))],
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
    let reasons: Vec<(String, u64)> = ProxyFailure::ALL
        .iter()
        .map(|r| (format!("reason=\"{}\"", r.as_str()), m.proxy_failures(*r)))
        .collect();
    let reasons: Vec<(&str, u64)> = reasons.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    x.relay(
        "proxy_header_failures_total",
        "counter",
        "Connections on proxy_protocol listeners closed for their PROXY header, by reason.",
        &reasons,
    );
    x.relay(
        "proxy_local_total",
        "counter",
        "Connections a trusted balancer opened for itself (PROXY v2 LOCAL): /health answered, anything else closed.",
        &[
            ("outcome=\"health\"", load(&m.proxy_local_health)),
            ("outcome=\"closed\"", load(&m.proxy_local_closed)),
        ],
    );
    x.relay(
        "client_limit_refusals_total",
        "counter",
        "Requests refused by a per-client limit, by limit.",
        &limit_refusals(&ctx.limits.stats())
            .iter()
            .map(|(labels, n)| (labels.as_str(), *n))
            .collect::<Vec<_>>(),
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

/// Refusals per client limit, one label per limit (never per address).
fn limit_refusals(stats: &crate::relay::limits::LimitStats) -> Vec<(String, u64)> {
    use crate::relay::limits::LimitKind;
    let mut samples = vec![("limit=\"rest_rate\"".to_owned(), stats.refused_rest)];
    for kind in LimitKind::ALL {
        samples.push((format!("limit=\"{}\"", kind.name()), stats.refused_of(kind)));
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
