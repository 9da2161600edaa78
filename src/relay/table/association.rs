//! One association's state inside the table: its candidates and the slot
//! each holds (gathered, reserved, parked, paired, closed). Only `table.rs`
//! touches it, under the table's lock.

use super::info::*;
use super::parked::{Parked, Seat};
use crate::relay::stream::{Killer, Transport};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use uuid::Uuid;

pub(super) struct Association {
    pub(super) created: Instant,
    pub(super) created_at: SystemTime,
    pub(super) origin: Origin,
    pub(super) selected: Option<Uuid>,
    pub(super) ended_at: Option<Instant>,
    /// Once candidates were gathered, only those ids may be used.
    pub(super) gathered: bool,
    pub(super) candidates: Vec<Candidate>,
}

pub(super) struct Candidate {
    pub(super) id: Uuid,
    /// The URL handed out when the candidate was gathered.
    pub(super) url: Option<String>,
    pub(super) slot: Slot,
    pub(super) accept_kind: Option<Transport>,
    pub(super) connect_kind: Option<Transport>,
    pub(super) stats: Option<Arc<PairStats>>,
    /// When an accept last reserved this candidate.
    pub(super) parked_at: Option<Instant>,
}

pub(super) enum Slot {
    Gathered,
    /// An accept is writing its 200; it becomes `Parked` right after. The
    /// token tells this reservation from a later one on the same ids.
    Reserved(u64, Seat),
    Parked(Parked),
    Paired {
        accept: Killer,
        connect: Killer,
        stats: Arc<PairStats>,
    },
    Closed,
}

impl Association {
    pub(super) fn new(origin: Origin) -> Association {
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

    pub(super) fn candidate(&mut self, id: Uuid) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.id == id)
    }

    pub(super) fn has_candidate(&self, id: Uuid) -> bool {
        self.candidates.iter().any(|c| c.id == id)
    }

    pub(super) fn in_use(&self) -> bool {
        self.candidates.iter().any(|c| {
            matches!(
                c.slot,
                Slot::Reserved(..) | Slot::Parked(_) | Slot::Paired { .. }
            )
        })
    }

    pub(super) fn state(&self) -> AssociationState {
        match (self.selected, self.ended_at) {
            (None, _) => AssociationState::Created,
            (Some(_), None) => AssociationState::Active,
            (Some(_), Some(_)) => AssociationState::Ended,
        }
    }

    /// Every socket of the association, for removal; its pairs end for `reason`.
    pub(super) fn take_victims(&mut self, victims: &mut Vec<Victim>, reason: EndReason) {
        for c in &mut self.candidates {
            match std::mem::replace(&mut c.slot, Slot::Closed) {
                Slot::Parked(p) => victims.push(Victim::Owned(p.stream)),
                Slot::Paired {
                    accept,
                    connect,
                    stats,
                } => {
                    stats.end_because(reason);
                    victims.push(Victim::Live(accept));
                    victims.push(Victim::Live(connect));
                }
                _ => {}
            }
        }
    }

    pub(super) fn info(&self, id: Uuid) -> AssociationInfo {
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
                        Slot::Reserved(..) | Slot::Parked(_) => CandidateState::Parked,
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
