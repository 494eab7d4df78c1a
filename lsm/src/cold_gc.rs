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
//!
//! Replicated, time is not enough: a follower lagging longer than the grace, or one installing a
//! snapshot that names the table, would find the object gone. So each object also carries a
//! *ticket*: the replication progress (a Raft log index) this replica had reached when the
//! object became garbage, which is at or past the entry that removed it. The replication layer
//! keeps the progress current ([`ColdGc::note_progress`]) and sets a *floor*, the progress every
//! replica has reached ([`ColdGc::set_floor`]); an object goes only once its grace is over **and**
//! its ticket is at or below the floor. Objects deferred before any progress is known (at open)
//! wait for [`ColdGc::stamp_unticketed`], which gives them a ticket at least as late as anything
//! this replica ever applied. Standalone, there is no floor and tickets do not matter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// No floor: objects go by time alone (a standalone database).
const NO_FLOOR: u64 = u64::MAX;

/// When an object may go: its deadline, and the progress every replica must have reached.
#[derive(Debug, Clone, Copy)]
struct Pending {
    deadline: Instant,
    /// `None`: deferred before any progress was known.
    ticket: Option<u64>,
}

/// Most objects deleted by one collection pass, so that a backlog (thousands of orphans found at
/// open) never holds the compaction thread for long; the rest waits for the next pass.
pub(crate) const MAX_DELETES_PER_PASS: usize = 256;

/// Object keys waiting for deletion, with the instant each may go. Deadlines are on the
/// monotonic clock: a wall-clock step (NTP, a restored VM) must not make deletion early, and the
/// engine's TTL clock, which tests and replicas drive, must not move them either.
#[derive(Debug)]
pub(crate) struct ColdGc {
    pending: Mutex<BTreeMap<String, Pending>>,
    /// `None`: this database never deletes objects (a replica that does not own them).
    grace: Option<Duration>,
    /// This replica's progress (0: not known yet).
    progress: AtomicU64,
    /// The progress every replica has reached ([`NO_FLOOR`]: standalone).
    floor: AtomicU64,
}

impl ColdGc {
    pub fn new(grace: Option<Duration>) -> Self {
        ColdGc {
            pending: Mutex::new(BTreeMap::new()),
            grace,
            progress: AtomicU64::new(0),
            floor: AtomicU64::new(NO_FLOOR),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object `key` became garbage now. Deferring it again keeps the earlier deadline and the
    /// later ticket.
    pub fn defer(&self, key: &str) {
        let Some(grace) = self.grace else { return };
        let now = Instant::now();
        let deadline = now
            .checked_add(grace)
            .unwrap_or(now + Duration::from_secs(1 << 40));
        let ticket = match self.progress.load(Ordering::Acquire) {
            0 => None,
            p => Some(p),
        };
        let mut pending = self.lock();
        if let Some(p) = pending.get_mut(key) {
            p.deadline = p.deadline.min(deadline);
            p.ticket = p.ticket.max(ticket);
        } else {
            pending.insert(key.to_string(), Pending { deadline, ticket });
        }
    }

    /// This replica has applied up to `index` (a Raft log index): objects becoming garbage from
    /// now on were removed at or before it.
    pub fn note_progress(&self, index: u64) {
        self.progress.fetch_max(index, Ordering::AcqRel);
    }

    /// Every replica has applied (or installed a snapshot) up to `index`.
    pub fn set_floor(&self, index: u64) {
        self.floor.store(index, Ordering::Release);
    }

    /// Gives every object deferred without a ticket the ticket `index`: a progress at or past
    /// anything this replica applied before (its log's last index at start).
    pub fn stamp_unticketed(&self, index: u64) {
        self.note_progress(index);
        for p in self.lock().values_mut() {
            if p.ticket.is_none() {
                p.ticket = Some(index);
            }
        }
    }

    /// Up to `max` objects whose grace period is over at `now` and that every replica is past.
    pub fn due(&self, now: Instant, max: usize) -> Vec<String> {
        let floor = self.floor.load(Ordering::Acquire);
        self.lock()
            .iter()
            .filter(|(_, p)| {
                p.deadline <= now && (floor == NO_FLOOR || p.ticket.is_some_and(|t| t <= floor))
            })
            .map(|(k, _)| k.clone())
            .take(max)
            .collect()
    }

    /// The object `key` was deleted, or turned out to be live again.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Objects waiting.
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
        gc.defer("t7");
        gc.defer("t8");
        assert!(gc.due(t0, usize::MAX).is_empty());
        let later = t0 + Duration::from_secs(11);
        assert_eq!(gc.due(later, usize::MAX), vec!["t7", "t8"]);
        assert_eq!(gc.due(later, 1), vec!["t7"]);
        // A second deferral does not push the deadline back.
        gc.defer("t7");
        assert_eq!(gc.due(later, usize::MAX), vec!["t7", "t8"]);
        gc.forget("t7");
        assert_eq!(gc.due(later, usize::MAX), vec!["t8"]);
        assert_eq!(gc.len(), 1);
    }

    #[test]
    fn replicated_objects_wait_for_every_replica_past_their_removal() {
        let gc = ColdGc::new(Some(Duration::ZERO));
        // Found at open, before any progress is known: no ticket yet.
        gc.defer("t1");
        gc.set_floor(0);
        let now = Instant::now() + Duration::from_secs(1);
        assert!(gc.due(now, usize::MAX).is_empty());
        gc.stamp_unticketed(50);
        gc.note_progress(60);
        gc.defer("t2");
        gc.set_floor(49);
        assert!(gc.due(now, usize::MAX).is_empty(), "a replica is before 50");
        gc.set_floor(55);
        assert_eq!(gc.due(now, usize::MAX), vec!["t1"]);
        gc.set_floor(60);
        assert_eq!(gc.due(now, usize::MAX), vec!["t1", "t2"]);
        // The grace stays a floor of its own.
        let gc = ColdGc::new(Some(Duration::from_secs(60)));
        gc.note_progress(5);
        gc.defer("t3");
        gc.set_floor(100);
        assert!(gc.due(Instant::now(), usize::MAX).is_empty());
    }

    #[test]
    fn zero_grace_is_immediate_and_none_never() {
        let gc = ColdGc::new(Some(Duration::ZERO));
        gc.defer("t1");
        assert_eq!(gc.due(Instant::now(), usize::MAX), vec!["t1"]);
        let gc = ColdGc::new(None);
        gc.defer("t1");
        assert_eq!(gc.len(), 0);
    }
}
