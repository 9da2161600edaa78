//! The association table: the only place that locks it, and the rules of pairing,
//! selection and expiry. Methods return owned values and never do I/O under the lock.

use crate::relay::stream::{Killer, Stream, Transport};
use crate::wire::message::V1_CANDIDATE;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

/// Byte counters and activity of one pair, shared by its two copy threads,
/// the table and the reaper. Lock-free: updated on every chunk relayed.
#[derive(Debug)]
pub struct PairStats {
    /// Bytes relayed from the accepting peer to the connecting peer.
    pub accept_to_connect: AtomicU64,
    /// Bytes relayed from the connecting peer to the accepting peer.
    pub connect_to_accept: AtomicU64,
    last_active_ms: AtomicU64,
    closing: AtomicBool,
    epoch: Instant,
    /// When the accept of this pair parked (reserved its candidate), for the
    /// accept-to-pair histogram.
    pub parked_at: Option<Instant>,
}

impl PairStats {
    fn new(epoch: Instant) -> PairStats {
        let stats = PairStats {
            accept_to_connect: AtomicU64::new(0),
            connect_to_accept: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
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

    /// Total bytes both ways.
    pub fn total(&self) -> u64 {
        self.accept_to_connect.load(Ordering::Relaxed)
            + self.connect_to_accept.load(Ordering::Relaxed)
    }

    fn idle_for(&self, now: Instant) -> Duration {
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(self.epoch + last)
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
}

/// The association table.
pub struct Table {
    inner: Mutex<HashMap<Uuid, Association>>,
    changed: Condvar,
    /// Threads waiting on `changed`, counted under the lock: notifying is a
    /// system call even when nobody waits, so changes skip it while this is zero.
    waiters: AtomicUsize,
    epoch: Instant,
    /// Set by `drain` at shutdown: nothing new may enter the table after it.
    closed: AtomicBool,
    /// Source of reservation tokens.
    next_token: AtomicU64,
    /// The most associations the table holds.
    max_associations: AtomicUsize,
}

/// A reserved accept slot, to publish once the 200 is written (or give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The association.
    pub association: Uuid,
    /// The candidate.
    pub candidate: Uuid,
    token: u64,
}

/// The most candidates one association may have (gathered or named by accepts).
pub const MAX_CANDIDATES: usize = 64;
/// The most associations a table holds unless configured otherwise.
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 100_000;

struct Association {
    created: Instant,
    created_at: SystemTime,
    origin: Origin,
    selected: Option<Uuid>,
    ended_at: Option<Instant>,
    /// Once candidates were gathered, only those ids may be used.
    gathered: bool,
    candidates: Vec<Candidate>,
}

struct Candidate {
    id: Uuid,
    /// The URL handed out when the candidate was gathered.
    url: Option<String>,
    slot: Slot,
    accept_kind: Option<Transport>,
    connect_kind: Option<Transport>,
    stats: Option<Arc<PairStats>>,
    /// When an accept last reserved this candidate.
    parked_at: Option<Instant>,
}

enum Slot {
    Gathered,
    /// An accept is writing its 200; it becomes `Parked` right after. The
    /// token tells this reservation from a later one on the same ids.
    Reserved(u64),
    Parked(Stream),
    Paired {
        accept: Killer,
        connect: Killer,
        stats: Arc<PairStats>,
    },
    Closed,
}

impl Association {
    fn new(origin: Origin) -> Association {
        Association {
            created: Instant::now(),
            created_at: SystemTime::now(),
            origin,
            selected: None,
            ended_at: None,
            gathered: false,
            candidates: Vec::new(),
        }
    }

    fn candidate(&mut self, id: Uuid) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.id == id)
    }

    fn has_candidate(&self, id: Uuid) -> bool {
        self.candidates.iter().any(|c| c.id == id)
    }

    fn in_use(&self) -> bool {
        self.candidates.iter().any(|c| {
            matches!(
                c.slot,
                Slot::Reserved(_) | Slot::Parked(_) | Slot::Paired { .. }
            )
        })
    }

    fn state(&self) -> AssociationState {
        match (self.selected, self.ended_at) {
            (None, _) => AssociationState::Created,
            (Some(_), None) => AssociationState::Active,
            (Some(_), Some(_)) => AssociationState::Ended,
        }
    }

    /// Every socket of the association, for removal.
    fn take_victims(&mut self, victims: &mut Vec<Victim>) {
        for c in &mut self.candidates {
            match std::mem::replace(&mut c.slot, Slot::Closed) {
                Slot::Parked(stream) => victims.push(Victim::Owned(stream)),
                Slot::Paired {
                    accept, connect, ..
                } => {
                    victims.push(Victim::Live(accept));
                    victims.push(Victim::Live(connect));
                }
                _ => {}
            }
        }
    }

    fn info(&self, id: Uuid) -> AssociationInfo {
        AssociationInfo {
            id,
            state: self.state(),
            origin: self.origin,
            created_at: self.created_at,
            selected: self.selected,
            candidates: self
                .candidates
                .iter()
                .map(|c| {
                    let (a2c, c2a) = c.stats.as_ref().map_or((0, 0), |s| {
                        (
                            s.accept_to_connect.load(Ordering::Relaxed),
                            s.connect_to_accept.load(Ordering::Relaxed),
                        )
                    });
                    let state = match &c.slot {
                        Slot::Gathered => CandidateState::Gathered,
                        Slot::Reserved(_) | Slot::Parked(_) => CandidateState::Parked,
                        Slot::Paired { .. } if a2c + c2a > 0 => CandidateState::Relaying,
                        Slot::Paired { .. } => CandidateState::Paired,
                        Slot::Closed => CandidateState::Closed,
                    };
                    CandidateInfo {
                        id: c.id,
                        url: c.url.clone(),
                        state,
                        accept_transport: c.accept_kind,
                        connect_transport: c.connect_kind,
                        accept_to_connect: a2c,
                        connect_to_accept: c2a,
                    }
                })
                .collect(),
        }
    }
}

impl Default for Table {
    fn default() -> Table {
        Table::new(DEFAULT_MAX_ASSOCIATIONS)
    }
}

impl Table {
    /// An empty table that holds at most `max_associations`.
    pub fn new(max_associations: usize) -> Table {
        Table {
            inner: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            waiters: AtomicUsize::new(0),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
            next_token: AtomicU64::new(1),
            max_associations: AtomicUsize::new(max_associations),
        }
    }

    /// Changes the most associations held at once (a reload); associations
    /// over a lowered limit stay until they end.
    pub fn set_limit(&self, max_associations: usize) {
        self.max_associations
            .store(max_associations, Ordering::Relaxed);
    }

    /// The descriptors of every paired connection (both sides of each pair),
    /// so a drain can tell relaying connections from waiting ones.
    pub fn paired_descriptors(&self) -> std::collections::HashSet<std::os::fd::RawFd> {
        let map = self.lock();
        let mut fds = std::collections::HashSet::new();
        for assoc in map.values() {
            for c in &assoc.candidates {
                if let Slot::Paired {
                    accept, connect, ..
                } = &c.slot
                {
                    fds.extend(
                        [accept, connect]
                            .iter()
                            .filter_map(|side| side.descriptor()),
                    );
                }
            }
        }
        fds
    }

    /// Closes every parked accept (a drain: its peer is told to go elsewhere)
    /// and returns their sockets to kill; pairs are left alone.
    pub fn close_parked(&self) -> Vec<Victim> {
        let mut victims = Vec::new();
        let mut map = self.lock();
        for assoc in map.values_mut() {
            for c in &mut assoc.candidates {
                if matches!(c.slot, Slot::Parked(_)) {
                    if let Slot::Parked(stream) = std::mem::replace(&mut c.slot, Slot::Closed) {
                        victims.push(Victim::Owned(stream));
                    }
                }
            }
        }
        self.notify(map);
        victims
    }

    /// Refuses new associations when the table is closed or full.
    fn admit(&self, map: &HashMap<Uuid, Association>) -> Result<(), Reject> {
        if self.closed.load(Ordering::Acquire) {
            Err(Reject::Unavailable("the relay is shutting down"))
        } else if map.len() >= self.max_associations.load(Ordering::Relaxed) {
            Err(Reject::Unavailable("too many associations"))
        } else {
            Ok(())
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Association>> {
        // Nothing under this lock can panic halfway through an update (no I/O,
        // no unwraps), so a poisoned lock only means a panic elsewhere: go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `limit` for a change, counted as a waiter meanwhile.
    fn wait<'a>(
        &self,
        map: MutexGuard<'a, HashMap<Uuid, Association>>,
        limit: Duration,
    ) -> MutexGuard<'a, HashMap<Uuid, Association>> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let map = self
            .changed
            .wait_timeout(map, limit)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        map
    }

    /// Releases the lock after a change and wakes the waiters, if any. The
    /// count is read under the lock, where every waiter registers before it
    /// sleeps, so none is missed.
    fn notify(&self, map: MutexGuard<'_, HashMap<Uuid, Association>>) {
        let wake = self.waiters.load(Ordering::Relaxed) > 0;
        drop(map);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Creates an association for the REST API. A conflict (and no change:
    /// its sockets stay) when it already exists.
    pub fn create(&self, id: Uuid) -> Result<(), Reject> {
        let mut map = self.lock();
        if map.contains_key(&id) {
            return Err(Reject::Conflict("association already exists"));
        }
        self.admit(&map)?;
        map.insert(id, Association::new(Origin::Api));
        Ok(())
    }

    /// Version 1 accept: a new association with a fresh id and its single
    /// candidate reserved. Publish the stream after writing the 200.
    pub fn reserve_v1(&self, kind: Transport) -> Result<Reservation, Reject> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        self.admit(&map)?;
        let id = loop {
            let id = Uuid::new_v4();
            if !map.contains_key(&id) {
                break id;
            }
        };
        let mut assoc = Association::new(Origin::Jet);
        assoc.candidates.push(Candidate {
            id: V1_CANDIDATE,
            url: None,
            slot: Slot::Reserved(token),
            accept_kind: Some(kind),
            connect_kind: None,
            stats: None,
            parked_at: Some(Instant::now()),
        });
        map.insert(id, assoc);
        Ok(Reservation {
            association: id,
            candidate: V1_CANDIDATE,
            token,
        })
    }

    /// Version 2 accept: reserves the candidate so no second accept can take it.
    /// Creates the association when `create_missing` (the REST API is optional
    /// for the binary protocol unless the API-key policy says otherwise).
    pub fn reserve_accept(
        &self,
        id: Uuid,
        cand: Uuid,
        kind: Transport,
        create_missing: bool,
    ) -> Result<Reservation, Reject> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(Reject::Unavailable("the relay is shutting down"));
        }
        if !map.contains_key(&id) {
            if !create_missing {
                return Err(Reject::NotFound("unknown association"));
            }
            self.admit(&map)?;
        }
        let assoc = match map.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Association::new(Origin::Jet)),
        };
        if assoc.selected.is_some_and(|s| s != cand) {
            return Err(Reject::Conflict(
                "association already selected another candidate",
            ));
        }
        let gathered = assoc.gathered;
        let full = assoc.candidates.len() >= MAX_CANDIDATES;
        match assoc.candidate(cand) {
            Some(c) => match c.slot {
                Slot::Gathered | Slot::Closed => {
                    c.parked_at = Some(Instant::now());
                    c.slot = Slot::Reserved(token);
                    c.accept_kind = Some(kind);
                    c.connect_kind = None;
                }
                Slot::Reserved(_) | Slot::Parked(_) => {
                    return Err(Reject::Conflict("candidate already has a parked accept"))
                }
                Slot::Paired { .. } => return Err(Reject::Conflict("candidate already paired")),
            },
            None if gathered => return Err(Reject::NotFound("unknown candidate")),
            None if full => {
                return Err(Reject::Unavailable(
                    "too many candidates on this association",
                ))
            }
            None => assoc.candidates.push(Candidate {
                id: cand,
                url: None,
                slot: Slot::Reserved(token),
                accept_kind: Some(kind),
                connect_kind: None,
                stats: None,
                parked_at: Some(Instant::now()),
            }),
        }
        assoc.ended_at = None;
        Ok(Reservation {
            association: id,
            candidate: cand,
            token,
        })
    }

    /// Parks the accepting stream on its reserved candidate, once its 200 is
    /// on the wire. Gives the stream back if the reservation is gone (the
    /// association was deleted or expired meanwhile, or the table closed).
    pub fn publish(&self, reservation: Reservation, stream: Stream) -> Result<(), Stream> {
        let mut map = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(stream);
        }
        match Self::reserved_slot(&mut map, reservation) {
            Some(slot) => {
                *slot = Slot::Parked(stream);
                self.notify(map);
                Ok(())
            }
            None => Err(stream),
        }
    }

    /// Gives up a reservation whose 200 could not be written.
    pub fn unreserve(&self, reservation: Reservation) {
        let mut map = self.lock();
        if let Some(slot) = Self::reserved_slot(&mut map, reservation) {
            *slot = Slot::Closed;
        }
        self.notify(map);
    }

    fn reserved_slot(
        map: &mut HashMap<Uuid, Association>,
        reservation: Reservation,
    ) -> Option<&mut Slot> {
        let slot = &mut map
            .get_mut(&reservation.association)?
            .candidate(reservation.candidate)?
            .slot;
        matches!(slot, Slot::Reserved(t) if *t == reservation.token).then_some(slot)
    }

    /// Connect: takes the parked accept of this candidate and records the pair.
    /// If the accept is still writing its 200, waits up to `wait` for it.
    pub fn pair(
        &self,
        id: Uuid,
        cand: Uuid,
        connect: &Stream,
        wait: Duration,
    ) -> Result<(Stream, Arc<PairStats>), Reject> {
        let deadline = Instant::now() + wait;
        let mut map = self.lock();
        loop {
            let assoc = map
                .get_mut(&id)
                .ok_or(Reject::NotFound("unknown association"))?;
            if assoc.selected.is_some_and(|s| s != cand) {
                return Err(Reject::Conflict(
                    "association already selected another candidate",
                ));
            }
            let c = assoc
                .candidate(cand)
                .ok_or(Reject::NotFound("no parked accept on this candidate"))?;
            match &c.slot {
                Slot::Parked(_) => {
                    let Slot::Parked(accept) = std::mem::replace(&mut c.slot, Slot::Closed) else {
                        unreachable!("matched Parked above")
                    };
                    let stats = Arc::new(PairStats {
                        parked_at: c.parked_at,
                        ..PairStats::new(self.epoch)
                    });
                    c.slot = Slot::Paired {
                        accept: accept.killer(),
                        connect: connect.killer(),
                        stats: Arc::clone(&stats),
                    };
                    c.connect_kind = Some(connect.kind());
                    c.stats = Some(Arc::clone(&stats));
                    return Ok((accept, stats));
                }
                Slot::Reserved(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Reject::NotFound("no parked accept on this candidate"));
                    }
                    map = self.wait(map, left);
                }
                Slot::Paired { .. } => return Err(Reject::Conflict("candidate already paired")),
                Slot::Gathered | Slot::Closed => {
                    return Err(Reject::NotFound("no parked accept on this candidate"))
                }
            }
        }
    }

    /// Test: succeeds when the association exists.
    pub fn test(&self, id: Uuid, cand: Uuid) -> Result<(), Reject> {
        let map = self.lock();
        match map.get(&id) {
            Some(a) if a.gathered && !a.has_candidate(cand) => {
                Err(Reject::NotFound("unknown candidate"))
            }
            Some(_) => Ok(()),
            None => Err(Reject::NotFound("unknown association")),
        }
    }

    /// Adds one fresh candidate per URL to an association (created if
    /// missing) and returns their ids in order; from then on only gathered
    /// ids may be used on it. Refused once a candidate is selected (409) and
    /// past [`MAX_CANDIDATES`] (503).
    pub fn gather(&self, id: Uuid, urls: &[String]) -> Result<Vec<Uuid>, Reject> {
        let mut map = self.lock();
        if !map.contains_key(&id) {
            self.admit(&map)?;
        }
        let assoc = map
            .entry(id)
            .or_insert_with(|| Association::new(Origin::Api));
        if assoc.selected.is_some() {
            return Err(Reject::Conflict("association already selected a candidate"));
        }
        if assoc.candidates.len() + urls.len() > MAX_CANDIDATES {
            return Err(Reject::Unavailable(
                "too many candidates on this association",
            ));
        }
        assoc.gathered = true;
        let mut ids = Vec::with_capacity(urls.len());
        for url in urls {
            let cand = loop {
                let cand = Uuid::new_v4();
                if !assoc.has_candidate(cand) {
                    break cand;
                }
            };
            assoc.candidates.push(Candidate {
                id: cand,
                url: Some(url.clone()),
                slot: Slot::Gathered,
                accept_kind: None,
                connect_kind: None,
                stats: None,
                parked_at: None,
            });
            ids.push(cand);
        }
        Ok(ids)
    }

    /// Counts for the metrics endpoint, in one pass under the lock.
    pub fn counts(&self) -> TableCounts {
        let mut counts = TableCounts::default();
        for assoc in self.lock().values() {
            match assoc.state() {
                AssociationState::Created => counts.created += 1,
                AssociationState::Active => counts.active += 1,
                AssociationState::Ended => counts.ended += 1,
            }
            for c in &assoc.candidates {
                match &c.slot {
                    Slot::Reserved(_) | Slot::Parked(_) => counts.parked += 1,
                    Slot::Paired { stats, .. } if stats.total() > 0 => counts.relaying += 1,
                    Slot::Paired { .. } => counts.paired += 1,
                    Slot::Gathered | Slot::Closed => {}
                }
            }
        }
        counts
    }

    /// The first application byte on a candidate selects it (unless another
    /// was selected first) and closes every other candidate that carried nothing.
    pub fn select(&self, id: Uuid, cand: Uuid, stats: &Arc<PairStats>) -> Vec<Victim> {
        let mut victims = Vec::new();
        let mut map = self.lock();
        let Some(assoc) = map.get_mut(&id) else {
            return victims;
        };
        // Only the pair that is really on this candidate (not a pair of an
        // association deleted and re-created with the same ids) may select.
        let ours = assoc.candidates.iter().any(|c| {
            c.id == cand
                && matches!(&c.slot, Slot::Paired { stats: s, .. } if Arc::ptr_eq(s, stats))
        });
        if assoc.selected.is_some() || !ours {
            return victims;
        }
        assoc.selected = Some(cand);
        for c in assoc.candidates.iter_mut().filter(|c| c.id != cand) {
            match &c.slot {
                Slot::Parked(_) | Slot::Reserved(_) | Slot::Gathered => {
                    if let Slot::Parked(stream) = std::mem::replace(&mut c.slot, Slot::Closed) {
                        victims.push(Victim::Owned(stream));
                    }
                }
                Slot::Paired {
                    accept,
                    connect,
                    stats,
                } if stats.total() == 0 => {
                    victims.push(Victim::Live(accept.clone()));
                    victims.push(Victim::Live(connect.clone()));
                }
                _ => {}
            }
        }
        victims
    }

    /// A pair's copy threads have both ended: the candidate is closed and
    /// keeps its byte counts.
    pub fn release(&self, id: Uuid, cand: Uuid, stats: &Arc<PairStats>) {
        let mut map = self.lock();
        let Some(assoc) = map.get_mut(&id) else {
            return;
        };
        if let Some(c) = assoc.candidate(cand) {
            if matches!(&c.slot, Slot::Paired { stats: s, .. } if Arc::ptr_eq(s, stats)) {
                c.slot = Slot::Closed;
            }
        }
        if assoc.selected.is_some() && !assoc.in_use() {
            assoc.ended_at = Some(Instant::now());
        }
        self.notify(map);
    }

    /// One reaper pass: expires unselected associations older than `ttl`,
    /// removes ended ones older than `retention`, and closes pairs idle for
    /// `idle` (zero: never).
    pub fn sweep(&self, now: Instant, ttl: Duration, idle: Duration, retention: Duration) -> Sweep {
        let mut sweep = Sweep::default();
        let mut map = self.lock();
        map.retain(|id, assoc| {
            let expired = assoc.selected.is_none() && now.duration_since(assoc.created) >= ttl;
            let ended = assoc
                .ended_at
                .is_some_and(|at| now.duration_since(at) >= retention);
            if expired || ended {
                assoc.take_victims(&mut sweep.victims);
                if expired {
                    sweep.expired.push(*id);
                } else {
                    sweep.ended.push(*id);
                }
                return false;
            }
            if !idle.is_zero() {
                for c in &assoc.candidates {
                    if let Slot::Paired {
                        accept,
                        connect,
                        stats,
                    } = &c.slot
                    {
                        if stats.idle_for(now) >= idle
                            && !stats.closing.swap(true, Ordering::Relaxed)
                        {
                            sweep.victims.push(Victim::Live(accept.clone()));
                            sweep.victims.push(Victim::Live(connect.clone()));
                            sweep.idle_closed += 1;
                        }
                    }
                }
            }
            true
        });
        if !sweep.expired.is_empty() || !sweep.ended.is_empty() {
            self.notify(map);
        }
        sweep
    }

    /// Waits up to `limit` until the association's snapshot satisfies `done`
    /// (`None`: it does not exist). Returns the last snapshot seen.
    pub fn wait_for(
        &self,
        id: Uuid,
        limit: Duration,
        mut done: impl FnMut(Option<&AssociationInfo>) -> bool,
    ) -> Option<AssociationInfo> {
        let deadline = Instant::now() + limit;
        let mut map = self.lock();
        loop {
            let info = map.get(&id).map(|a| a.info(id));
            let left = deadline.saturating_duration_since(Instant::now());
            if done(info.as_ref()) || left.is_zero() {
                return info;
            }
            map = self.wait(map, left);
        }
    }

    /// Waits up to `limit` for an association to be removed; true if it is gone.
    pub fn wait_removed(&self, id: Uuid, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut map = self.lock();
        while map.contains_key(&id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            map = self.wait(map, left);
        }
        true
    }

    /// Removes an association and returns its sockets to close; `None` if unknown.
    pub fn remove(&self, id: Uuid) -> Option<Vec<Victim>> {
        let mut map = self.lock();
        let assoc = map.remove(&id);
        self.notify(map);
        let mut assoc = assoc?;
        let mut victims = Vec::new();
        assoc.take_victims(&mut victims);
        Some(victims)
    }

    /// Empties the table (shutdown) and returns every socket to close.
    pub fn drain(&self) -> Vec<Victim> {
        let mut victims = Vec::new();
        let mut map = self.lock();
        self.closed.store(true, Ordering::Release);
        for (_, mut assoc) in map.drain() {
            assoc.take_victims(&mut victims);
        }
        self.notify(map);
        victims
    }

    /// A snapshot of one association.
    pub fn info(&self, id: Uuid) -> Option<AssociationInfo> {
        self.lock().get(&id).map(|a| a.info(id))
    }

    /// Snapshots of every association.
    pub fn list(&self) -> Vec<AssociationInfo> {
        self.lock().iter().map(|(id, a)| a.info(*id)).collect()
    }

    /// Number of associations.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when there is no association.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::registry::Registry;
    use std::net::{TcpListener, TcpStream};

    /// A real loopback socket wrapped as a stream (the table only stores it).
    fn stream() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let registry = Arc::new(Registry::default());
        let theirs = Arc::new(theirs);
        let registration = registry.register(&theirs);
        (Stream::tcp(theirs, registration), ours)
    }

    #[test]
    fn a_stale_reservation_cannot_publish_into_a_newer_one() {
        let table = Table::new(10);
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        let first = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
        // The association is deleted while the first accept writes its 200,
        // then re-created by a second accept on the same ids.
        assert!(table.remove(a).is_some());
        let second = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
        let (s1, _k1) = stream();
        assert!(
            table.publish(first, s1).is_err(),
            "the stale accept is refused"
        );
        let (s2, _k2) = stream();
        assert!(table.publish(second, s2).is_ok());
        table.unreserve(first);
        let (connect, _k3) = stream();
        assert!(
            table.pair(a, c, &connect, Duration::ZERO).is_ok(),
            "the second accept is parked"
        );
    }

    #[test]
    fn a_connect_waits_for_a_reserved_accept_to_publish() {
        let table = Arc::new(Table::new(10));
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        let reservation = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
        let (connect, _k) = stream();
        // Nothing pairs with a reserved slot.
        assert_eq!(
            table.pair(a, c, &connect, Duration::ZERO).err(),
            Some(Reject::NotFound("no parked accept on this candidate"))
        );
        let waiter = {
            let table = Arc::clone(&table);
            std::thread::spawn(move || table.pair(a, c, &connect, Duration::from_secs(10)).is_ok())
        };
        let (accept, _k2) = stream();
        assert!(table.publish(reservation, accept).is_ok());
        assert!(
            waiter.join().unwrap(),
            "the waiting connect paired once published"
        );
    }

    #[test]
    fn a_closed_table_admits_nothing() {
        let table = Table::new(10);
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        let reservation = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
        assert!(table.drain().is_empty());
        let (s, _k) = stream();
        assert!(table.publish(reservation, s).is_err());
        assert_eq!(table.create(a).err().map(Reject::status), Some(503));
        assert_eq!(
            table
                .reserve_accept(a, c, Transport::Tcp, true)
                .err()
                .map(Reject::status),
            Some(503)
        );
        assert!(table.is_empty());
    }
}
