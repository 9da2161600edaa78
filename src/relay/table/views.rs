//! The table seen, not changed: snapshots for the REST API and metrics, and
//! waits for an association to reach a state (tests, the testing surface).

use super::*;

impl Table {
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
                    Slot::Reserved(..) | Slot::Parked(_) => counts.parked += 1,
                    Slot::Paired { stats, .. } if stats.total() > 0 => counts.relaying += 1,
                    Slot::Paired { .. } => counts.paired += 1,
                    Slot::Gathered | Slot::Closed => {}
                }
            }
        }
        counts
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
