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
use std::time::Duration;

/// Table numbers waiting for deletion, with the time (ms on the engine's clock) each may go.
#[derive(Debug)]
pub(crate) struct ColdGc {
    pending: Mutex<BTreeMap<u64, u64>>,
    grace_ms: u64,
}

impl ColdGc {
    pub fn new(grace: Duration) -> Self {
        ColdGc {
            pending: Mutex::new(BTreeMap::new()),
            grace_ms: grace.as_millis().min(u64::MAX as u128) as u64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Table `number` became garbage at `now_ms`. Deferring it again keeps the earlier
    /// deadline.
    pub fn defer(&self, number: u64, now_ms: u64) {
        let deadline = now_ms.saturating_add(self.grace_ms);
        self.lock()
            .entry(number)
            .and_modify(|d| *d = (*d).min(deadline))
            .or_insert(deadline);
    }

    /// Tables whose grace period is over at `now_ms`.
    pub fn due(&self, now_ms: u64) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, &d)| d <= now_ms)
            .map(|(&n, _)| n)
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
        let gc = ColdGc::new(Duration::from_secs(10));
        gc.defer(7, 1_000);
        gc.defer(8, 5_000);
        assert!(gc.due(10_999).is_empty());
        assert_eq!(gc.due(11_000), vec![7]);
        // A second deferral does not push the deadline back.
        gc.defer(7, 9_000);
        assert_eq!(gc.due(15_000), vec![7, 8]);
        gc.forget(7);
        assert_eq!(gc.due(u64::MAX), vec![8]);
        assert_eq!(gc.len(), 1);
    }

    #[test]
    fn zero_grace_is_immediate() {
        let gc = ColdGc::new(Duration::ZERO);
        gc.defer(1, 42);
        assert_eq!(gc.due(42), vec![1]);
    }
}
