//! Process-wide counters, updated lock-free on the hot paths and read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Counters of the whole relay.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted on every listener.
    pub connections_accepted: AtomicU64,
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
    proxy_failures: [AtomicU64; 8],
    /// Connections whose PROXY header was LOCAL (the balancer's own) and that
    /// asked for `/health`, which was answered.
    pub proxy_local_health: AtomicU64,
    /// LOCAL connections that asked for anything else, or nothing (a layer 4
    /// check): closed without an answer.
    pub proxy_local_closed: AtomicU64,
}

impl Metrics {
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
