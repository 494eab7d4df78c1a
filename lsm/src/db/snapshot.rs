//! Snapshots: a registered sequence number that compaction must keep readable.

use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{lock, prefix_upper_bound, to_bounds, Inner};
use crate::iter::db_iter::Iter;
use crate::Result;

/// A consistent read view as of the moment it was taken. While it lives, compaction keeps every
/// version it can see; drop it to let them go.
pub struct Snapshot {
    inner: Arc<Inner>,
    seq: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}

impl Snapshot {
    pub(crate) fn new(inner: Arc<Inner>) -> Snapshot {
        // Read the sequence under the registry lock: compaction reads the smallest snapshot under
        // the same lock, so it can never miss one that is being taken.
        let mut snaps = lock(&inner.snapshots);
        let seq = inner.visible_seq.load(Ordering::Acquire);
        *snaps.entry(seq).or_insert(0) += 1;
        drop(snaps);
        Snapshot { inner, seq }
    }

    /// The sequence number this snapshot reads at.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.inner.get_at(key.as_ref(), Some(self.seq))
    }

    /// Iterates `range` as of the snapshot.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let (lo, hi) = to_bounds(&range);
        self.inner.iter_at(Some(self.seq), lo, hi)
    }

    /// Iterates the keys starting with `prefix` as of the snapshot.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let p = prefix.as_ref();
        self.inner.iter_at(
            Some(self.seq),
            Bound::Included(p.to_vec()),
            prefix_upper_bound(p),
        )
    }

    /// Iterates everything as of the snapshot.
    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut snaps = lock(&self.inner.snapshots);
        if let Some(n) = snaps.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                snaps.remove(&self.seq);
            }
        }
    }
}
