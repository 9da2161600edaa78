//! The targets compared side by side (direct, direct TLS, the relay), and which of them one transport measures.

use crate::peers::{Endpoint, TlsConfigs};
use crate::relay::RelayProcess;
use std::io;
use std::sync::Arc;

/// How peers reach the relay: the library's one transport enum.
pub use jet_relay::wire::Transport;

/// What the bench needs of a transport beyond the library's enum.
pub trait TransportExt {
    /// Its name in figures and URLs (`tcp`, `tls`, `ws`, `wss`).
    fn name(self) -> &'static str;
    /// The scheme of the relay listener that serves it: WebSocket upgrades
    /// are served on every listener.
    fn listener_scheme(self) -> &'static str;
}

impl TransportExt for Transport {
    fn name(self) -> &'static str {
        self.as_str()
    }

    fn listener_scheme(self) -> &'static str {
        if self.is_tls() {
            "tls"
        } else {
            "tcp"
        }
    }
}

/// Parses `--transport` values.
pub fn parse_transport(text: &str) -> Result<Transport, String> {
    Transport::parse(text).ok_or_else(|| format!("transport {text:?}: one of tcp, tls, ws, wss"))
}

/// One side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The two peers connected straight to each other over loopback.
    Direct,
    /// The same, with TLS between them (the baseline that pays for the
    /// same cryptography once: a relay over TLS pays for it twice).
    DirectTls,
    /// The two peers meeting at the relay.
    Relay(Transport),
}

impl Target {
    pub fn name(self) -> String {
        match self {
            Target::Direct => "direct".into(),
            Target::DirectTls => "direct-tls".into(),
            Target::Relay(t) => format!("relay-{}", t.name()),
        }
    }
}

impl Target {
    pub fn is_relay(self) -> bool {
        matches!(self, Target::Relay(_))
    }
}

/// The targets measured on one relay transport, and the endpoints that
/// make their pairs.
pub struct TargetTable<'a> {
    pub transport: Transport,
    /// The relay under test, whose CPU (a) and (d) read.
    pub relay: &'a RelayProcess,
    /// Direct first, then direct TLS on TLS transports, the relay last.
    pub targets: Vec<Target>,
    /// The targets the relay is compared with: all the others.
    pub baselines: Vec<Target>,
    pub relay_target: Target,
    direct: Endpoint,
    direct_tls: Option<Endpoint>,
    via: Endpoint,
}

impl<'a> TargetTable<'a> {
    pub fn new(
        transport: Transport,
        relay: &'a RelayProcess,
        tls_configs: Option<&Arc<TlsConfigs>>,
    ) -> io::Result<TargetTable<'a>> {
        let relay_target = Target::Relay(transport);
        // Over TLS the relay is also measured against a direct TLS
        // connection, which pays for the same cryptography once.
        let (targets, direct_tls) = match tls_configs {
            Some(tls) if transport.is_tls() => (
                vec![Target::Direct, Target::DirectTls, relay_target],
                Some(Endpoint::direct_tls(Arc::clone(tls))?),
            ),
            _ => (vec![Target::Direct, relay_target], None),
        };
        let baselines: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| *t != relay_target)
            .collect();
        Ok(TargetTable {
            transport,
            relay,
            targets,
            baselines,
            relay_target,
            direct: Endpoint::direct()?,
            direct_tls,
            via: Endpoint::relay(transport, relay.addr, tls_configs.cloned()),
        })
    }

    /// The endpoint that makes pairs for target `t`.
    pub fn endpoint(&self, t: Target) -> &Endpoint {
        match (t, &self.direct_tls) {
            (Target::Direct, _) => &self.direct,
            (Target::DirectTls, Some(ep)) => ep,
            _ => &self.via,
        }
    }

    /// The relay process when `t` is the relay (its CPU is read), else none.
    pub fn relay_of(&self, t: Target) -> Option<&'a RelayProcess> {
        t.is_relay().then_some(self.relay)
    }

    pub fn relay_name(&self) -> String {
        self.relay_target.name()
    }
}

/// The unit of a ratio of the relay to `baseline`.
pub fn ratio_unit(baseline: Target) -> &'static str {
    if baseline == Target::Direct {
        "x direct"
    } else {
        "x direct-tls"
    }
}

/// The end of a ratio's label: nothing against plain direct, the one
/// compared with otherwise.
pub fn versus(baseline: Target) -> String {
    if baseline == Target::Direct {
        String::new()
    } else {
        format!(" to {}", baseline.name())
    }
}

/// Targets in the order of this round: alternating which goes first, so
/// neither always runs on a warmer (or more tired) machine.
pub fn order(targets: &[Target], round: usize) -> Vec<Target> {
    let mut v = targets.to_vec();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}
