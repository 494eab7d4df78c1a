//! Deferred deletion of cold-tier objects.
//!
//! An object stops being needed by this process when the last version naming its table is
//! dropped, but others may still read it: replicas that share the bucket and have not yet
//! applied the compaction that removed it, a lagging replica installing a manifest snapshot that
//! still names it, an operator's backup in progress. So objects are deleted only after
//! [`ColdTier::gc_grace`](crate::ColdTier::gc_grace) has passed since they became garbage, by
//! the compaction thread, never on a reader's thread (a drop of the last reference of a version
//! can happen anywhere, and a network round trip there would be a latency spike).
//!
//! The pending set lives in memory only. A restart loses it harmlessly: open lists the prefix and
//! defers every object the manifest does not name, so the grace period starts over; deletion is
//! late, never early.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most objects deleted by one collection pass, so that a backlog (thousands of orphans found at
/// open) never holds the compaction thread for long; the rest waits for the next pass.
pub(crate) const MAX_DELETES_PER_PASS: usize = 256;

/// Table numbers waiting for deletion, with the instant each may go. Deadlines are on the
/// monotonic clock: a wall-clock step (NTP, a restored VM) must not make deletion early, and the
/// engine's TTL clock, which tests and replicas drive, must not move them either.
#[derive(Debug)]
pub(crate) struct ColdGc {
    pending: Mutex<BTreeMap<u64, Instant>>,
    /// `None`: this database never deletes objects (a replica that does not own them).
    grace: Option<Duration>,
}

impl ColdGc {
    pub fn new(grace: Option<Duration>) -> Self {
        ColdGc {
            pending: Mutex::new(BTreeMap::new()),
            grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Table `number` became garbage now. Deferring it again keeps the earlier deadline.
    pub fn defer(&self, number: u64) {
        let Some(grace) = self.grace else { return };
        let now = Instant::now();
        let deadline = now
            .checked_add(grace)
            .unwrap_or(now + Duration::from_secs(1 << 40));
        self.lock()
            .entry(number)
            .and_modify(|d| *d = (*d).min(deadline))
            .or_insert(deadline);
    }

    /// Up to `max` tables whose grace period is over at `now`.
    pub fn due(&self, now: Instant, max: usize) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(&n, _)| n)
            .take(max)
            .collect()
    }

    /// Table `number` was deleted, or turned out to be live again.
    pub fn forget(&self, number: u64) {
        self.lock().remove(&number);
    }

    /// Tables waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_become_due_after_the_grace_period() {
        let gc = ColdGc::new(Some(Duration::from_secs(10)));
        let t0 = Instant::now();
        gc.defer(7);
        gc.defer(8);
        assert!(gc.due(t0, usize::MAX).is_empty());
        let later = t0 + Duration::from_secs(11);
        assert_eq!(gc.due(later, usize::MAX), vec![7, 8]);
        assert_eq!(gc.due(later, 1), vec![7]);
        // A second deferral does not push the deadline back.
        gc.defer(7);
        assert_eq!(gc.due(later, usize::MAX), vec![7, 8]);
        gc.forget(7);
        assert_eq!(gc.due(later, usize::MAX), vec![8]);
        assert_eq!(gc.len(), 1);
    }

    #[test]
    fn zero_grace_is_immediate_and_none_never() {
        let gc = ColdGc::new(Some(Duration::ZERO));
        gc.defer(1);
        assert_eq!(gc.due(Instant::now(), usize::MAX), vec![1]);
        let gc = ColdGc::new(None);
        gc.defer(1);
        assert_eq!(gc.len(), 0);
    }
}
