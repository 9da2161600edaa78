//! The association table: the only place that locks it, and the rules of pairing,
//! selection and expiry. Methods return owned values and never do I/O under the lock.

use crate::relay::stream::{Stream, Transport};
use crate::wire::message::V1_CANDIDATE;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod association;
mod info;
mod parked;
mod views;

use crate::relay::limits::Permit;
use association::{Association, Candidate, Slot};
pub use info::*;
use parked::Parked;
pub use parked::{descriptor_limit, parked_cap, PARKED_FULL};

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
    /// Accepts reserved or parked now, counted by their seats.
    parked: Arc<AtomicUsize>,
    /// The most accepts reserved or parked at once (see `parked_cap`).
    max_parked: AtomicUsize,
    /// When an accept refused at the cap last reclaimed (see `may_reclaim`).
    reclaimed_at: AtomicU64,
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
            parked: Arc::new(AtomicUsize::new(0)),
            max_parked: AtomicUsize::new(usize::MAX),
            reclaimed_at: AtomicU64::new(0),
        }
    }

    /// Changes the most associations held at once (a reload); associations
    /// over a lowered limit stay until they end.
    pub fn set_limit(&self, max_associations: usize) {
        self.max_associations
            .store(max_associations, Ordering::Relaxed);
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
        let seat = self.take_seat()?;
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
            slot: Slot::Reserved(token, seat),
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
        // Taken first, so a refused accept creates nothing; any refusal
        // below drops it again.
        let seat = self.take_seat()?;
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
                    c.slot = Slot::Reserved(token, seat);
                    c.accept_kind = Some(kind);
                    c.connect_kind = None;
                }
                Slot::Reserved(..) | Slot::Parked(_) => {
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
                slot: Slot::Reserved(token, seat),
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
    /// on the wire, with its client's parked-accept `permit` (held while it
    /// is parked). Gives the stream back if the reservation is gone (the
    /// association was deleted or expired meanwhile, or the table closed).
    pub fn publish(
        &self,
        reservation: Reservation,
        stream: Stream,
        permit: Permit,
    ) -> Result<(), Stream> {
        let mut map = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(stream);
        }
        match Self::reserved_slot(&mut map, reservation) {
            Some(slot) => {
                let Slot::Reserved(_, seat) = std::mem::replace(slot, Slot::Closed) else {
                    unreachable!("reserved_slot returns reserved slots only")
                };
                *slot = Slot::Parked(Parked {
                    stream,
                    _seat: seat,
                    _permit: permit,
                });
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
        matches!(slot, Slot::Reserved(t, _) if *t == reservation.token).then_some(slot)
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
                    let Slot::Parked(Parked { stream: accept, .. }) =
                        std::mem::replace(&mut c.slot, Slot::Closed)
                    else {
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
                Slot::Reserved(..) => {
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
                Slot::Parked(_) | Slot::Reserved(..) | Slot::Gathered => {
                    if let Slot::Parked(p) = std::mem::replace(&mut c.slot, Slot::Closed) {
                        victims.push(Victim::Owned(p.stream));
                    }
                }
                Slot::Paired {
                    accept,
                    connect,
                    stats,
                } if stats.total() == 0 => {
                    stats.end_because(EndReason::OtherCandidateSelected);
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
                // An ended association has no pair left: only expiry cuts.
                assoc.take_victims(&mut sweep.victims, EndReason::Expired);
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
                            stats.end_because(EndReason::IdleTimeout);
                            sweep.idle_pairs.push((*id, c.id));
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

    /// Removes an association (a DELETE: its pairs end as `deleted`) and
    /// returns its sockets to close; `None` if unknown.
    pub fn remove(&self, id: Uuid) -> Option<Vec<Victim>> {
        let mut map = self.lock();
        let assoc = map.remove(&id);
        self.notify(map);
        let mut assoc = assoc?;
        let mut victims = Vec::new();
        assoc.take_victims(&mut victims, EndReason::Deleted);
        Some(victims)
    }

    /// Empties the table (shutdown) and returns every socket to close; the
    /// pairs still relaying end for `reason`.
    pub fn drain(&self, reason: EndReason) -> Vec<Victim> {
        let mut victims = Vec::new();
        let mut map = self.lock();
        self.closed.store(true, Ordering::Release);
        for (_, mut assoc) in map.drain() {
            assoc.take_victims(&mut victims, reason);
        }
        self.notify(map);
        victims
    }
}

#[cfg(test)]
mod tests;
