//! What the table hands out: snapshots for the REST API and metrics, the
//! refusals, the pair counters shared with the copy threads, and the sockets
//! a caller must close outside the lock.

use crate::relay::stream::{Killer, Stream, Transport};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};
use uuid::Uuid;

/// Who created an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A JET accept named it (version 2) or asked for one (version 1).
    Jet,
    /// The REST API created it.
    Api,
}

/// Where an association is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociationState {
    /// No candidate selected yet: it expires after the association TTL.
    Created,
    /// A candidate carried application data and is relaying.
    Active,
    /// The selected candidate's relay has ended; removed after the retention time.
    Ended,
}

/// Where a candidate is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateState {
    /// Known (gathered) but nobody has accepted on it.
    Gathered,
    /// A server peer's accept is waiting for its connect.
    Parked,
    /// Both peers are there; no application byte yet.
    Paired,
    /// Application bytes flow.
    Relaying,
    /// The pair has ended (or never formed and was closed).
    Closed,
}

/// Why the table refused a request; `status` is the code the peer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Unknown association, candidate, or no parked accept (404).
    NotFound(&'static str),
    /// The candidate is taken or the association already chose another (409).
    Conflict(&'static str),
    /// The relay is full or shutting down (503).
    Unavailable(&'static str),
}

impl Reject {
    /// The HTTP status for this rejection.
    pub fn status(self) -> u16 {
        match self {
            Reject::NotFound(_) => 404,
            Reject::Conflict(_) => 409,
            Reject::Unavailable(_) => 503,
        }
    }
    /// The reason, for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::NotFound(r) | Reject::Conflict(r) | Reject::Unavailable(r) => r,
        }
    }
}

/// Why a pair ended, logged once on its `pair closed` line. A cut stores
/// its reason on the pair's [`PairStats`] before it kills the sockets, so the
/// copy thread that logs finds it; a pair nobody cut ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Both peers finished sending (end of stream both ways).
    PeerEof = 1,
    /// A peer reset or aborted its connection.
    PeerReset,
    /// Another I/O error on one of the sockets.
    Error,
    /// No byte moved for `idle_timeout` (the reaper).
    IdleTimeout,
    /// Another candidate of the association carried data first.
    OtherCandidateSelected,
    /// The association was deleted through the REST API.
    Deleted,
    /// The association expired (`association_ttl`) without a selection.
    Expired,
    /// A drain (SIGTERM) ran out of `drain_timeout`.
    Drain,
    /// The relay shut down (a second signal, or the server was stopped).
    Shutdown,
    /// No thread could be started for the pair's second direction.
    NoThread,
}

impl EndReason {
    const ALL: [EndReason; 10] = [
        EndReason::PeerEof,
        EndReason::PeerReset,
        EndReason::Error,
        EndReason::IdleTimeout,
        EndReason::OtherCandidateSelected,
        EndReason::Deleted,
        EndReason::Expired,
        EndReason::Drain,
        EndReason::Shutdown,
        EndReason::NoThread,
    ];

    /// The name in log lines (`reason=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PeerEof => "peer_eof",
            EndReason::PeerReset => "peer_reset",
            EndReason::Error => "error",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::OtherCandidateSelected => "other_candidate_selected",
            EndReason::Deleted => "deleted",
            EndReason::Expired => "expired",
            EndReason::Drain => "drain_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::NoThread => "no_thread",
        }
    }

    fn from_u8(value: u8) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| *r as u8 == value)
    }
}

/// Byte counters and activity of one pair, shared by its two copy threads,
/// the table and the reaper. Lock-free: updated on every chunk relayed.
#[derive(Debug)]
pub struct PairStats {
    /// Bytes relayed from the accepting peer to the connecting peer.
    pub accept_to_connect: AtomicU64,
    /// Bytes relayed from the connecting peer to the accepting peer.
    pub connect_to_accept: AtomicU64,
    pub(super) last_active_ms: AtomicU64,
    /// Directions blocked writing toward a peer right now: bytes wait to
    /// move, so the pair is not idle however long the peer takes to read.
    pub(super) writing: AtomicU32,
    pub(super) closing: AtomicBool,
    /// An [`EndReason`] once something cut the pair (0: nothing did).
    pub(super) end: AtomicU8,
    pub(super) epoch: Instant,
    /// When the accept of this pair parked (reserved its candidate), for the
    /// accept-to-pair histogram.
    pub parked_at: Option<Instant>,
}

impl PairStats {
    pub(super) fn new(epoch: Instant) -> PairStats {
        let stats = PairStats {
            accept_to_connect: AtomicU64::new(0),
            connect_to_accept: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            writing: AtomicU32::new(0),
            closing: AtomicBool::new(false),
            end: AtomicU8::new(0),
            epoch,
            parked_at: None,
        };
        stats.touch();
        stats
    }

    /// Records that bytes moved now (for the idle timeout).
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// Records why the pair is being cut, before its sockets are; the first
    /// reason stays (a pair cut by the idle timeout and then by shutdown
    /// ended idle).
    pub fn end_because(&self, reason: EndReason) {
        let _ = self
            .end
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why the pair was cut, if it was.
    pub fn end_reason(&self) -> Option<EndReason> {
        EndReason::from_u8(self.end.load(Ordering::Acquire))
    }

    /// Marks a direction as writing until the guard drops: the reaper does
    /// not count a pair idle while one of its directions is blocked in a
    /// write, and idleness counts from the end of the write.
    pub fn writing(&self) -> Writing<'_> {
        self.writing.fetch_add(1, Ordering::Relaxed);
        Writing(self)
    }

    /// Total bytes both ways.
    pub fn total(&self) -> u64 {
        self.accept_to_connect.load(Ordering::Relaxed)
            + self.connect_to_accept.load(Ordering::Relaxed)
    }

    /// How long the pair has neither moved a byte nor had one waiting to be
    /// written: zero while a direction is blocked writing toward a peer that
    /// does not read (back-pressure is not idleness).
    pub(super) fn idle_for(&self, now: Instant) -> Duration {
        if self.writing.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(self.epoch + last)
    }
}

/// A direction's write in progress (see [`PairStats::writing`]).
pub struct Writing<'a>(&'a PairStats);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Touched before the count drops, so the reaper never sees a
        // finished write with the old activity time.
        self.0.touch();
        self.0.writing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket the caller must close, outside the lock.
pub enum Victim {
    /// A parked connection the table owned: killing it and dropping it closes it.
    Owned(Stream),
    /// A relaying connection owned by its copy threads: killing it ends them.
    Live(Killer),
}

impl Victim {
    /// Shuts the socket down both ways (and closes it if this was the last owner).
    pub fn kill(self) {
        match self {
            Victim::Owned(stream) => stream.kill(),
            Victim::Live(killer) => killer.kill(),
        }
    }
}

/// A snapshot of one candidate, for the REST API and logs.
#[derive(Debug, Clone)]
pub struct CandidateInfo {
    /// Candidate id.
    pub id: Uuid,
    /// The URL it was gathered with, if it was gathered.
    pub url: Option<String>,
    /// Its state.
    pub state: CandidateState,
    /// Transport the accepting peer used, once it came.
    pub accept_transport: Option<Transport>,
    /// Transport the connecting peer used, once it came.
    pub connect_transport: Option<Transport>,
    /// Bytes from the accepting peer to the connecting peer (live).
    pub accept_to_connect: u64,
    /// Bytes from the connecting peer to the accepting peer (live).
    pub connect_to_accept: u64,
}

/// A snapshot of one association.
#[derive(Debug, Clone)]
pub struct AssociationInfo {
    /// Association id.
    pub id: Uuid,
    /// Its state.
    pub state: AssociationState,
    /// Who created it.
    pub origin: Origin,
    /// When it was created (wall clock).
    pub created_at: SystemTime,
    /// The selected candidate, once one carried data.
    pub selected: Option<Uuid>,
    /// Its candidates in creation order.
    pub candidates: Vec<CandidateInfo>,
}

/// Associations by state and candidates by slot, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounts {
    /// Associations with no candidate selected.
    pub created: usize,
    /// Associations relaying on their selected candidate.
    pub active: usize,
    /// Associations whose relays have ended.
    pub ended: usize,
    /// Candidates with a parked accept.
    pub parked: usize,
    /// Pairs that have not carried a byte yet.
    pub paired: usize,
    /// Pairs that carried bytes and are still open.
    pub relaying: usize,
}

/// What one reaper pass did.
#[derive(Default)]
pub struct Sweep {
    /// Sockets to close.
    pub victims: Vec<Victim>,
    /// Associations removed because none of their candidates was selected in time.
    pub expired: Vec<Uuid>,
    /// Associations removed after their relays ended.
    pub ended: Vec<Uuid>,
    /// Pairs closed by the idle timeout.
    pub idle_closed: usize,
    /// Their (association, candidate) ids, for the log.
    pub idle_pairs: Vec<(Uuid, Uuid)>,
}
