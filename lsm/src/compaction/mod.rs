//! Compaction: what to compact (`leveled`), which entries survive (`Gc`), and where output goes
//! (`Outputs`, which cuts files at the target size on user-key boundaries).

pub(crate) mod leveled;
pub(crate) mod outputs;

use crate::key::{self, ValueKind};

/// Decides which entries of a sorted internal-key stream survive a flush or compaction.
///
/// An entry is dropped when a newer entry of the same key is visible to every snapshot (it can
/// never be read again), or, when `drop_deletes` and nothing below can resurface, when it is a
/// tombstone or an expired value visible to every snapshot.
pub(crate) struct Gc {
    smallest_snapshot: u64,
    now_ms: u64,
    drop_deletes: bool,
    cur_key: Vec<u8>,
    has_key: bool,
    last_seq: u64,
}

impl Gc {
    pub fn new(smallest_snapshot: u64, now_ms: u64, drop_deletes: bool) -> Self {
        Gc {
            smallest_snapshot,
            now_ms,
            drop_deletes,
            cur_key: Vec::new(),
            has_key: false,
            last_seq: u64::MAX,
        }
    }

    /// `is_bottom(user_key)` says no deeper level holds the key.
    pub fn keep(
        &mut self,
        ikey: &[u8],
        value: &[u8],
        is_bottom: impl FnOnce(&[u8]) -> bool,
    ) -> bool {
        let (uk, trailer) = key::split(ikey);
        if !self.has_key || uk != self.cur_key.as_slice() {
            self.cur_key.clear();
            self.cur_key.extend_from_slice(uk);
            self.has_key = true;
            self.last_seq = u64::MAX;
        }
        let seq = key::seq_of(trailer);
        let shadowed = self.last_seq <= self.smallest_snapshot;
        self.last_seq = seq;
        if shadowed {
            return false;
        }
        if self.drop_deletes && seq <= self.smallest_snapshot {
            let dead = match ValueKind::from_u8(key::kind_byte(trailer)) {
                Some(ValueKind::Delete) => true,
                Some(ValueKind::PutTtl) => {
                    key::split_ttl(value).is_some_and(|(e, _)| e <= self.now_ms)
                }
                _ => false,
            };
            if dead && is_bottom(uk) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::make_internal_key;

    #[test]
    fn drops_only_what_no_snapshot_sees() {
        // Versions of "k" at 30, 20, 10 with a snapshot at 25 (smallest).
        let mut gc = Gc::new(25, 0, true);
        assert!(gc.keep(&make_internal_key(b"k", 30, 1), b"c", |_| true));
        assert!(gc.keep(&make_internal_key(b"k", 20, 1), b"b", |_| true));
        assert!(!gc.keep(&make_internal_key(b"k", 10, 1), b"a", |_| true));
        // A tombstone visible to all is dropped at the bottom only.
        assert!(!gc.keep(&make_internal_key(b"x", 5, 0), b"", |_| true));
        assert!(gc.keep(&make_internal_key(b"y", 5, 0), b"", |_| false));
        // An expired value counts as a tombstone.
        let mut gc = Gc::new(100, 1_000, true);
        let mut v = 999u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"val");
        assert!(!gc.keep(&make_internal_key(b"t", 5, 2), &v, |_| true));
        let mut v = 1_001u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"val");
        assert!(gc.keep(&make_internal_key(b"u", 5, 2), &v, |_| true));
    }
}
