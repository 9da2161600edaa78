//! Per-client limits: concurrent connections, handshakes and parked accepts, and a REST request rate.

use crate::relay::cidr::{Cidr, CidrSet};
use serde::Deserialize;
use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Connections one client may hold open at once, in any state. An office or
/// a carrier-grade NAT puts many hosts behind one IPv4 address, and a server
/// peer holds an accept per association it serves, so this is generous; it
/// still keeps one address from taking the relay's whole thread budget.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Connections of one client still in their handshake. A real peer finishes
/// a handshake in a round trip or two; many at once from one address are a
/// slow-loris, each holding a thread until the handshake timeout.
pub const DEFAULT_MAX_HANDSHAKES: u32 = 64;
/// Accepts of one client parked waiting for their connect: a server peer
/// parks one per association and candidate it offers.
pub const DEFAULT_MAX_PARKED_ACCEPTS: u32 = 64;
/// REST requests per second, sustained, per client: setting up an
/// association is a handful of calls, so 20/s is far beyond any honest peer
/// while it keeps one address from flooding the association table.
pub const DEFAULT_REST_RATE: u32 = 20;
/// REST requests one client may make at once after being idle: a page load
/// or a NAT full of peers starting together.
pub const DEFAULT_REST_BURST: u32 = 40;
/// Clients tracked at once. An entry is a few tens of bytes plus the map's
/// overhead, so this bounds each map to a few MiB.
pub const DEFAULT_MAX_TRACKED_CLIENTS: usize = 100_000;

/// Bits of an IPv6 address that name a client (the /64 subnet).
const V6_CLIENT_PREFIX_BITS: u32 = 64;
const KINDS: usize = 3;

/// Whom a limit counts against: an IPv4 address, or an IPv6 /64 (one host on
/// IPv6 usually holds a whole /64, so counting single addresses would let it
/// multiply its share by picking new ones). An IPv4-mapped IPv6 address (a
/// dual-stack socket's IPv4 peer) is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 client.
    V4(Ipv4Addr),
    /// An IPv6 /64: the network address, its low 64 bits zero.
    V6(Ipv6Addr),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(a) => ClientKey::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => ClientKey::V6(Ipv6Addr::from(
                    u128::from(a) >> V6_CLIENT_PREFIX_BITS << V6_CLIENT_PREFIX_BITS,
                )),
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{a}"),
            ClientKey::V6(a) => write!(f, "{a}/{V6_CLIENT_PREFIX_BITS}"),
        }
    }
}

/// What a [`Permit`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// An open connection, from accept to close.
    Connection,
    /// A connection that has not finished its handshake.
    Handshake,
    /// A JET accept waiting for its connect.
    ParkedAccept,
}

impl LimitKind {
    /// Every kind, in the order of [`LimitStats::refused`].
    pub const ALL: [LimitKind; KINDS] = [
        LimitKind::Connection,
        LimitKind::Handshake,
        LimitKind::ParkedAccept,
    ];

    fn index(self) -> usize {
        match self {
            LimitKind::Connection => 0,
            LimitKind::Handshake => 1,
            LimitKind::ParkedAccept => 2,
        }
    }

    /// A name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Connection => "connections",
            LimitKind::Handshake => "handshakes",
            LimitKind::ParkedAccept => "parked_accepts",
        }
    }
}

/// The `[client_limits]` table of the configuration. Zero turns a limit off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections per client ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: u32,
    /// Handshakes in progress per client ([`DEFAULT_MAX_HANDSHAKES`]).
    pub max_handshakes: u32,
    /// Parked accepts per client ([`DEFAULT_MAX_PARKED_ACCEPTS`]).
    pub max_parked_accepts: u32,
    /// REST requests per second per client, sustained ([`DEFAULT_REST_RATE`]).
    pub rest_rate: u32,
    /// REST requests per client at once after idling ([`DEFAULT_REST_BURST`];
    /// 0 counts as 1).
    pub rest_burst: u32,
    /// Clients tracked at once ([`DEFAULT_MAX_TRACKED_CLIENTS`]). Past it, a
    /// new client passes untracked (counted in [`LimitStats::untracked`]):
    /// refusing instead would let whoever fills the map (one IPv6 /48 holds
    /// 65536 clients) lock every newcomer out, while passing leaves them
    /// bounded by the relay's global limits (`max_threads`). Clients already
    /// tracked stay limited. Applies to each map (permits, rate buckets)
    /// separately; 0 tracks no one, which turns every limit off.
    pub max_tracked_clients: usize,
    /// Clients never limited nor tracked. Defaults to loopback: the operator's
    /// own tools, and a local reverse proxy that does not send PROXY headers
    /// would otherwise put every client under one key.
    pub exempt: CidrSet,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        let loopback = [
            IpAddr::from(Ipv4Addr::LOCALHOST),
            Ipv6Addr::LOCALHOST.into(),
        ];
        LimitsConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_parked_accepts: DEFAULT_MAX_PARKED_ACCEPTS,
            rest_rate: DEFAULT_REST_RATE,
            rest_burst: DEFAULT_REST_BURST,
            max_tracked_clients: DEFAULT_MAX_TRACKED_CLIENTS,
            // 127.0.0.0/8 and ::1/128: valid by construction, so no error can come.
            exempt: loopback
                .into_iter()
                .zip([8, 128])
                .filter_map(|(ip, len)| Cidr::new(ip, len).ok())
                .collect(),
        }
    }
}

/// A client is at its limit of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// What it has too many of.
    pub kind: LimitKind,
    /// The limit it reached.
    pub limit: u32,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client is at its limit of {} {}",
            self.limit,
            self.kind.name().replace('_', " ")
        )
    }
}

impl std::error::Error for LimitExceeded {}

/// A client is over its REST rate: the next request would pass after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for a `Retry-After` header: rounded up, at least 1.
    pub fn as_secs_ceil(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "too many requests; retry after {:?}", self.0)
    }
}

impl std::error::Error for RetryAfter {}

/// Refusal counts since start, for metrics: totals, never one label per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitStats {
    /// Refusals per kind, indexed like [`LimitKind::ALL`].
    pub refused: [u64; KINDS],
    /// REST requests refused for rate.
    pub refused_rest: u64,
    /// Acquires and requests passed untracked because the maps were full.
    pub untracked: u64,
}

impl LimitStats {
    /// Refusals of one kind.
    pub fn refused_of(&self, kind: LimitKind) -> u64 {
        self.refused[kind.index()]
    }
}

/// The limits, shared by every connection thread (clone it: clones share).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The maxima in force; a reload swaps them, the counts stay.
    settings: RwLock<Arc<Settings>>,
    /// Held count per kind; an entry exists only while one is non-zero.
    counts: Mutex<HashMap<ClientKey, [u32; KINDS]>>,
    /// The token bucket as GCRA: when the client's bucket will be full again
    /// (its "theoretical arrival time"). One instant replaces a token count
    /// and a last-refill time, and an entry in the past is a full bucket,
    /// the same as no entry: that is what [`ClientLimits::sweep`] removes.
    buckets: Mutex<HashMap<ClientKey, Instant>>,
    refused: [AtomicU64; KINDS],
    refused_rest: AtomicU64,
    untracked: AtomicU64,
}

/// A configuration and the rate figures derived from it.
#[derive(Debug)]
struct Settings {
    config: LimitsConfig,
    /// The time one token takes to come back (1 s / rate).
    interval: Duration,
    /// How far ahead of now the full time may be: (burst - 1) intervals.
    tolerance: Duration,
}

impl Settings {
    fn new(config: LimitsConfig) -> Settings {
        let interval = match config.rest_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs(1) / rate,
        };
        let tolerance = interval.saturating_mul(config.rest_burst.max(1) - 1);
        Settings {
            config,
            interval,
            tolerance,
        }
    }

    fn max(&self, kind: LimitKind) -> u32 {
        let c = &self.config;
        match kind {
            LimitKind::Connection => c.max_connections,
            LimitKind::Handshake => c.max_handshakes,
            LimitKind::ParkedAccept => c.max_parked_accepts,
        }
    }
}

/// One held unit of a limit; dropping it gives the unit back.
#[derive(Debug)]
#[must_use = "the limit is released as soon as the permit is dropped"]
pub struct Permit {
    held: Option<(Arc<Shared>, ClientKey, LimitKind)>,
}

impl Permit {
    /// A permit that holds nothing: for what no client limit applies to.
    pub fn untracked() -> Permit {
        Permit { held: None }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some((shared, key, kind)) = self.held.take() else {
            return;
        };
        let mut counts = lock(&shared.counts);
        if let Some(held) = counts.get_mut(&key) {
            held[kind.index()] = held[kind.index()].saturating_sub(1);
            if held.iter().all(|&n| n == 0) {
                counts.remove(&key);
            }
        }
    }
}

/// What a client holds for one connection.
#[derive(Debug)]
pub struct ClientPermits {
    /// `max_connections`: for the connection's life.
    pub connection: Permit,
    /// `max_handshakes`: until its request has been read.
    pub handshake: Permit,
}

impl ClientPermits {
    /// Permits that hold nothing (the balancer's own health checks).
    pub fn untracked() -> ClientPermits {
        ClientPermits {
            connection: Permit::untracked(),
            handshake: Permit::untracked(),
        }
    }
}

/// A panic elsewhere while holding the lock leaves the counts consistent
/// (every update is one assignment), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientLimits {
    /// Limits with this configuration.
    pub fn new(config: LimitsConfig) -> ClientLimits {
        ClientLimits {
            shared: Arc::new(Shared {
                settings: RwLock::new(Arc::new(Settings::new(config))),
                counts: Mutex::default(),
                buckets: Mutex::default(),
                refused: Default::default(),
                refused_rest: AtomicU64::new(0),
                untracked: AtomicU64::new(0),
            }),
        }
    }

    /// Puts new maxima in force (a reload). Permits held stay held and
    /// count against the new maxima; a client over a lowered one keeps what
    /// it holds and is refused more until it is under again.
    pub fn set_config(&self, config: LimitsConfig) {
        let settings = Arc::new(Settings::new(config));
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
    }

    fn settings(&self) -> Arc<Settings> {
        // A writer only swaps the Arc: a poisoned lock still holds a whole one.
        Arc::clone(
            &self
                .shared
                .settings
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The configuration in force.
    #[cfg(test)]
    pub fn config(&self) -> LimitsConfig {
        self.settings().config.clone()
    }

    /// Takes one `kind` for `client`, or says it is at its limit. Takes the
    /// address rather than a [`ClientKey`] because exemption is by address.
    pub fn try_acquire(&self, kind: LimitKind, client: IpAddr) -> Result<Permit, LimitExceeded> {
        let untracked = Permit { held: None };
        let settings = self.settings();
        let max = settings.max(kind);
        if max == 0 || settings.config.exempt.contains(client) {
            return Ok(untracked);
        }
        let key = ClientKey::from(client);
        let i = kind.index();
        let mut counts = lock(&self.shared.counts);
        let full = counts.len() >= settings.config.max_tracked_clients;
        match counts.entry(key) {
            Entry::Occupied(mut e) => {
                let held = &mut e.get_mut()[i];
                if *held >= max {
                    drop(counts);
                    self.shared.refused[i].fetch_add(1, Ordering::Relaxed);
                    return Err(LimitExceeded { kind, limit: max });
                }
                *held += 1;
            }
            Entry::Vacant(_) if full => {
                drop(counts);
                self.shared.untracked.fetch_add(1, Ordering::Relaxed);
                return Ok(untracked);
            }
            Entry::Vacant(e) => {
                let mut held = [0; KINDS];
                held[i] = 1;
                e.insert(held);
            }
        }
        Ok(Permit {
            held: Some((Arc::clone(&self.shared), key, kind)),
        })
    }

    /// A new connection's permits: a connection and a handshake.
    pub fn connection_permits(&self, client: IpAddr) -> Result<ClientPermits, LimitExceeded> {
        Ok(ClientPermits {
            connection: self.try_acquire(LimitKind::Connection, client)?,
            handshake: self.try_acquire(LimitKind::Handshake, client)?,
        })
    }

    /// Counts one REST request of `client` at `now` against its token
    /// bucket, or says how long until one would pass.
    pub fn check_rate(&self, client: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let s = &self.shared;
        let settings = self.settings();
        if settings.config.rest_rate == 0 || settings.config.exempt.contains(client) {
            return Ok(());
        }
        let key = ClientKey::from(client);
        let mut buckets = lock(&s.buckets);
        let full = buckets.len() >= settings.config.max_tracked_clients;
        let entry = match buckets.entry(key) {
            Entry::Vacant(_) if full => {
                drop(buckets);
                s.untracked.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            entry => entry.or_insert(now),
        };
        // A full time in the past is a full bucket: start from now.
        let start = (*entry).max(now);
        let ahead = start.saturating_duration_since(now);
        if ahead > settings.tolerance {
            drop(buckets);
            s.refused_rest.fetch_add(1, Ordering::Relaxed);
            return Err(RetryAfter(ahead - settings.tolerance));
        }
        *entry = start.checked_add(settings.interval).unwrap_or(start);
        Ok(())
    }

    /// Forgets the buckets that are full again at `now` (forgetting one is
    /// the same as keeping it). O(tracked clients) under the lock, without
    /// I/O: for the reaper, every few seconds, not for request paths.
    /// Returns how many were removed.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut buckets = lock(&self.shared.buckets);
        let before = buckets.len();
        buckets.retain(|_, full_at| *full_at > now);
        before - buckets.len()
    }

    /// How many of `kind` the client of `client` holds.
    #[cfg(test)]
    pub fn held(&self, kind: LimitKind, client: IpAddr) -> u32 {
        let counts = lock(&self.shared.counts);
        counts
            .get(&ClientKey::from(client))
            .map_or(0, |held| held[kind.index()])
    }

    /// Clients with a permit held, and clients with a rate bucket not yet full.
    #[cfg(test)]
    pub fn tracked(&self) -> (usize, usize) {
        let counts = lock(&self.shared.counts).len();
        let buckets = lock(&self.shared.buckets).len();
        (counts, buckets)
    }

    /// Refusal counts since start.
    pub fn stats(&self) -> LimitStats {
        let s = &self.shared;
        LimitStats {
            refused: std::array::from_fn(|i| s.refused[i].load(Ordering::Relaxed)),
            refused_rest: s.refused_rest.load(Ordering::Relaxed),
            untracked: s.untracked.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
