//! Parked accepts as a whole: the relay-wide cap on them, the sockets the
//! watch polls, removing one whose peer left, and closing them all at a drain.

use super::association::Slot;
use super::info::Victim;
use super::{Reject, Table};
use crate::relay::limits::Permit;
use crate::relay::stream::{Killer, Stream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Descriptors the parked-accept cap always leaves free, so `/health`, the
/// REST API, a connect and its pair's pipe still find one when the table of
/// parked sockets is full.
pub const RESERVED_DESCRIPTORS: usize = 32;

/// Up to this many parked accepts, reclaiming the dead ones (one poll over
/// all) costs less than the handshake that asks for it, and every accept
/// refused at the cap may do it.
pub const CHEAP_RECLAIM: usize = 4096;

/// Above [`CHEAP_RECLAIM`], accepts refused at the cap reclaim at most once
/// per this interval: a flood against a cap full of live accepts costs one
/// poll per interval, not one per accept.
pub const RECLAIM_INTERVAL: Duration = Duration::from_millis(100);

/// Why an accept is refused at the relay-wide cap (503).
pub const PARKED_FULL: &str = "too many parked accepts on this relay (max_parked_accepts)";

/// A parked accept's place under the relay-wide cap: taken when the accept
/// reserves its candidate, given back when the slot stops being reserved or
/// parked (it drops with the slot, so no path can leak it).
pub(super) struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a parked slot holds: the accept's stream, its seat under the relay's
/// cap and its permit under its client's limit, all dropped together.
pub(super) struct Parked {
    pub(super) stream: Stream,
    pub(super) _seat: Seat,
    pub(super) _permit: Permit,
}

/// A parked socket for the watch to poll, and to name when its peer left.
pub struct ParkedSocket {
    /// The association.
    pub association: Uuid,
    /// The candidate.
    pub candidate: Uuid,
    /// The socket, weakly: the table keeps owning it.
    pub killer: Killer,
}

/// The most accepts parked at once: `configured`, or half of `nofile` (the
/// descriptor limit) when it is 0, and never so many that fewer than
/// [`RESERVED_DESCRIPTORS`] stay free. Unlimited when the limit is unknown
/// and nothing is configured.
pub fn parked_cap(configured: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile.map(|n| usize::try_from(n).unwrap_or(usize::MAX)) else {
        return if configured == 0 {
            usize::MAX
        } else {
            configured
        };
    };
    let room = nofile.saturating_sub(RESERVED_DESCRIPTORS);
    let wanted = if configured == 0 {
        nofile / 2
    } else {
        configured
    };
    wanted.min(room).max(1)
}

/// The soft `RLIMIT_NOFILE` (the one `accept` fails past); `None` when unlimited.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

impl Table {
    /// Changes the most accepts parked at once (start and reload); accepts
    /// parked over a lowered cap stay until they pair or leave.
    pub fn set_parked_limit(&self, max: usize) {
        self.max_parked.store(max, Ordering::Relaxed);
    }

    /// Whether an accept refused at the cap may reclaim dead accepts now
    /// (see [`CHEAP_RECLAIM`] and [`RECLAIM_INTERVAL`]).
    pub fn may_reclaim(&self) -> bool {
        if self.parked.load(Ordering::Relaxed) <= CHEAP_RECLAIM {
            return true;
        }
        // Milliseconds since the table's epoch, plus one: 0 means never.
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.reclaimed_at.load(Ordering::Relaxed);
        let interval = RECLAIM_INTERVAL.as_millis() as u64;
        if last != 0 && now < last.saturating_add(interval) {
            return false;
        }
        // One of the accepts racing here wins the round.
        self.reclaimed_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The most accepts parked at once.
    pub fn parked_limit(&self) -> usize {
        self.max_parked.load(Ordering::Relaxed)
    }

    /// Takes a seat under the cap; called under the table's lock, where
    /// every seat is taken, so two accepts cannot both take the last one.
    pub(super) fn take_seat(&self) -> Result<Seat, Reject> {
        if self.parked.load(Ordering::Relaxed) >= self.max_parked.load(Ordering::Relaxed) {
            return Err(Reject::Unavailable(PARKED_FULL));
        }
        self.parked.fetch_add(1, Ordering::Relaxed);
        Ok(Seat(Arc::clone(&self.parked)))
    }

    /// Every parked socket, for the watch to poll outside the lock.
    pub fn parked_sockets(&self) -> Vec<ParkedSocket> {
        let map = self.lock();
        let mut parked = Vec::new();
        for (id, assoc) in map.iter() {
            for c in &assoc.candidates {
                if let Slot::Parked(p) = &c.slot {
                    parked.push(ParkedSocket {
                        association: *id,
                        candidate: c.id,
                        killer: p.stream.killer(),
                    });
                }
            }
        }
        parked
    }

    /// Closes the candidate of a parked accept whose peer left, if that very
    /// socket is still parked there; returns it to kill outside the lock.
    pub fn remove_dead(&self, dead: &ParkedSocket) -> Option<Victim> {
        let mut map = self.lock();
        let c = map.get_mut(&dead.association)?.candidate(dead.candidate)?;
        if !matches!(&c.slot, Slot::Parked(p) if p.stream.killer().same(&dead.killer)) {
            return None;
        }
        let Slot::Parked(p) = std::mem::replace(&mut c.slot, Slot::Closed) else {
            return None;
        };
        self.notify(map);
        Some(Victim::Owned(p.stream))
    }

    /// Closes every parked accept (a drain: its peer is told to go elsewhere)
    /// and returns their sockets to kill; pairs are left alone.
    pub fn close_parked(&self) -> Vec<Victim> {
        let mut victims = Vec::new();
        let mut map = self.lock();
        for assoc in map.values_mut() {
            for c in &mut assoc.candidates {
                if matches!(c.slot, Slot::Parked(_)) {
                    if let Slot::Parked(p) = std::mem::replace(&mut c.slot, Slot::Closed) {
                        victims.push(Victim::Owned(p.stream));
                    }
                }
            }
        }
        self.notify(map);
        victims
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_half_the_descriptors_and_always_leaves_some_free() {
        assert_eq!(parked_cap(0, Some(256)), 128);
        assert_eq!(parked_cap(0, Some(1 << 20)), 1 << 19);
        assert_eq!(parked_cap(10, Some(256)), 10);
        assert_eq!(parked_cap(1000, Some(256)), 256 - RESERVED_DESCRIPTORS);
        assert_eq!(parked_cap(0, Some(16)), 1, "at least one");
        assert_eq!(parked_cap(0, None), usize::MAX);
        assert_eq!(parked_cap(7, None), 7);
    }

    #[test]
    fn reclaiming_is_free_for_small_tables_and_rationed_for_large_ones() {
        let table = Table::new(2 * CHEAP_RECLAIM);
        assert!(table.may_reclaim() && table.may_reclaim());
        let reserved: Vec<_> = (0..=CHEAP_RECLAIM)
            .map(|_| table.reserve_v1(crate::wire::Transport::Tcp).unwrap())
            .collect();
        assert!(table.may_reclaim(), "the first in an interval");
        assert!(!table.may_reclaim(), "a second within the interval");
        for reservation in reserved {
            table.unreserve(reservation);
        }
        assert!(table.may_reclaim(), "small again");
    }
}
