//! The jti cache: each token is accepted once per purpose, until it expires.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::Purpose;

/// A jti digest (SHA-256), so an entry's size does not depend on the token.
pub(crate) type JtiDigest = [u8; 32];

/// What the cache answers when it cannot take a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// This jti was already used for this purpose.
    Replayed,
    /// The cache holds as many live tokens as it may.
    Full,
}

/// The jtis seen, each with the second after which its token is refused as
/// expired anyway (exp plus leeway) and so need no longer be remembered.
///
/// Memory is bounded by `capacity` entries. When every entry is still live,
/// a new token is refused rather than an old one forgotten: forgetting a live
/// jti would let that token be replayed, while refusing a fresh one only
/// delays a peer until tokens expire (and says so in the error).
pub(crate) struct ReplayCache {
    capacity: usize,
    seen: HashMap<(JtiDigest, Purpose), u64>,
    /// Expiry order of `seen`, so pruning is O(log n) per expired entry.
    by_expiry: BinaryHeap<Reverse<(u64, JtiDigest, Purpose)>>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity,
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
        }
    }

    /// Records (jti, purpose) until `forget_after` (unix seconds) unless it is
    /// already there; `now` first drops the entries that have expired.
    pub(crate) fn insert(
        &mut self,
        jti: JtiDigest,
        purpose: Purpose,
        forget_after: u64,
        now: u64,
    ) -> Result<(), Refusal> {
        while let Some(Reverse((expiry, digest, p))) = self.by_expiry.peek().copied() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&(digest, p));
        }
        if self.seen.contains_key(&(jti, purpose)) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Refusal::Full);
        }
        self.seen.insert((jti, purpose), forget_after);
        self.by_expiry.push(Reverse((forget_after, jti, purpose)));
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_replay_cache_refuses_when_full_and_frees_expired_entries() {
        let mut cache = ReplayCache::new(2);
        assert_eq!(cache.insert([1; 32], Purpose::Connect, 100, 0), Ok(()));
        assert_eq!(cache.insert([2; 32], Purpose::Connect, 200, 0), Ok(()));
        assert_eq!(
            cache.insert([3; 32], Purpose::Connect, 300, 50),
            Err(Refusal::Full)
        );
        // At 101 the first entry is past its expiry and gives up its place.
        assert_eq!(cache.insert([3; 32], Purpose::Connect, 300, 101), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.insert([2; 32], Purpose::Connect, 200, 101),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn token_replay_cache_remembers_until_its_expiry_second_inclusive() {
        let mut cache = ReplayCache::new(10);
        assert_eq!(cache.insert([1; 32], Purpose::Accept, 100, 0), Ok(()));
        assert_eq!(
            cache.insert([1; 32], Purpose::Accept, 100, 100),
            Err(Refusal::Replayed)
        );
        assert_eq!(cache.insert([1; 32], Purpose::Accept, 100, 101), Ok(()));
    }
}
