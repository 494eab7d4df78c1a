//! The memtable: a concurrent skip list of internal keys.
//!
//! Each entry is one heap allocation laid out as `ikey_len u32 LE | internal key | value`, ordered
//! by the internal-key comparator (user key ascending, sequence descending). Internal keys of up
//! to `INLINE` bytes are also copied into the skip-list node itself, so a search compares keys
//! without chasing a second pointer per node (it halves the cache misses of an insert). Inserting an entry
//! whose internal key already exists replaces it: the operations of one batch share a sequence
//! number, so a later operation on the same key within a batch wins.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtOrd};

use bytes::{Bytes, BytesMut};
use crossbeam_skiplist::SkipMap;

use crate::key::{self, ValueKind, SEEK_KIND};
use crate::memfilter::MemFilter;

/// Fixed per-entry overhead counted against the memtable's budget (skip-list node, tower and
/// the inline key copy).
const ENTRY_OVERHEAD: usize = 96;
/// Internal keys up to this length are kept inline in the node.
const INLINE: usize = 32;

/// Size of the shared chunks entries are carved from.
const ARENA_CHUNK: usize = 1 << 20;

struct Entry {
    /// Length of the inline copy of the internal key; 0 when the key is only in `data`.
    inline_len: u8,
    inline: [u8; INLINE],
    /// A slice of one of the memtable's arena chunks.
    data: Bytes,
}

impl Entry {
    fn new(data: Bytes) -> Self {
        let mut e = Entry {
            inline_len: 0,
            inline: [0; INLINE],
            data,
        };
        let n = e.data_ikey().len();
        if n <= INLINE {
            e.inline[..n].copy_from_slice(&e.data[4..4 + n]);
            e.inline_len = n as u8;
        }
        e
    }
    fn key_len(&self) -> usize {
        u32::from_le_bytes([self.data[0], self.data[1], self.data[2], self.data[3]]) as usize
    }
    fn data_ikey(&self) -> &[u8] {
        &self.data[4..4 + self.key_len()]
    }
    #[inline]
    fn ikey(&self) -> &[u8] {
        if self.inline_len > 0 {
            &self.inline[..self.inline_len as usize]
        } else {
            self.data_ikey()
        }
    }
    fn value(&self) -> &[u8] {
        &self.data[4 + self.key_len()..]
    }
}

/// A borrowed internal key, so the skip list can be searched without building an `Entry`.
#[repr(transparent)]
struct IKey([u8]);

impl IKey {
    fn new(b: &[u8]) -> &IKey {
        // SAFETY: IKey is a repr(transparent) wrapper around [u8].
        unsafe { &*(b as *const [u8] as *const IKey) }
    }
}

impl Borrow<IKey> for Entry {
    fn borrow(&self) -> &IKey {
        IKey::new(self.ikey())
    }
}
impl PartialEq for IKey {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for IKey {}
impl PartialOrd for IKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for IKey {
    fn cmp(&self, o: &Self) -> Ordering {
        key::cmp_internal(&self.0, &o.0)
    }
}
impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.ikey() == o.ikey()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        key::cmp_internal(self.ikey(), o.ikey())
    }
}

/// What a lookup found for a key at a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The newest visible entry is a value (for `PutTtl`, the payload still has its expiry prefix).
    Value(ValueKind, Bytes),
    /// The newest visible entry is a deletion.
    Deleted,
}

/// An in-memory sorted table of recent writes; thread-safe for concurrent reads and inserts.
pub struct Memtable {
    map: SkipMap<Entry, ()>,
    /// Entries are carved from shared 1 MiB chunks rather than allocated one by one: an insert
    /// costs no allocator call, and dropping a flushed memtable (on the flush thread) frees a
    /// few chunks instead of contending with the writer's allocator for every entry.
    arena: std::sync::Mutex<BytesMut>,
    filter: MemFilter,
    bytes: AtomicUsize,
    max_seq: AtomicU64,
    wal_number: u64,
}

impl Memtable {
    /// An empty memtable whose writes are logged in WAL segment `wal_number` (0 when there is none),
    /// sized for about `capacity_bytes` of entries (its key filter is sized from this).
    pub fn new(wal_number: u64, capacity_bytes: usize) -> Self {
        Memtable {
            map: SkipMap::new(),
            arena: std::sync::Mutex::new(BytesMut::new()),
            // One filter bit per 4 bytes of budget: at least ~16 bits per entry for entries of
            // 64 bytes or more (entries carry 64 bytes of overhead), well under 1% false hits.
            filter: MemFilter::new(capacity_bytes / 4),
            bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            wal_number,
        }
    }

    /// The WAL segment holding this memtable's writes.
    pub fn wal_number(&self) -> u64 {
        self.wal_number
    }

    /// Inserts one entry. `value` is the stored payload (with the expiry prefix for `PutTtl`).
    pub fn insert(&self, user_key: &[u8], seq: u64, kind: ValueKind, value: &[u8]) {
        let ik_len = user_key.len() + key::TRAILER_LEN;
        let need = 4 + ik_len + value.len();
        let data = {
            let mut a = self.arena.lock().unwrap_or_else(|p| p.into_inner());
            if a.capacity() - a.len() < need {
                *a = BytesMut::with_capacity(ARENA_CHUNK.max(need));
            }
            a.extend_from_slice(&(ik_len as u32).to_le_bytes());
            a.extend_from_slice(user_key);
            a.extend_from_slice(&key::pack_trailer(seq, kind as u8).to_le_bytes());
            a.extend_from_slice(value);
            a.split().freeze()
        };
        let size = need + ENTRY_OVERHEAD;
        self.filter.insert(crate::sst::filter_hash(user_key));
        self.map.insert(Entry::new(data), ());
        self.bytes.fetch_add(size, AtOrd::Relaxed);
        self.max_seq.fetch_max(seq, AtOrd::Relaxed);
    }

    /// The newest entry for `user_key` with sequence `<= seq`, if any.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<Lookup> {
        let seek = key::make_internal_key(user_key, seq, SEEK_KIND);
        self.get_prepared(user_key, &seek, crate::sst::filter_hash(user_key))
    }

    /// `get` with the seek key (`user_key` at the snapshot sequence) and the key's
    /// `sst::filter_hash` computed by the caller, who probes several memtables and tables.
    pub fn get_prepared(&self, user_key: &[u8], seek: &[u8], hash: u64) -> Option<Lookup> {
        if !self.filter.may_contain(hash) {
            return None;
        }
        let e = self.map.lower_bound(Bound::Included(IKey::new(seek)))?;
        let (uk, trailer) = key::split(e.key().ikey());
        if uk != user_key {
            return None;
        }
        Some(match ValueKind::from_u8(key::kind_byte(trailer)) {
            Some(ValueKind::Delete) | None => Lookup::Deleted,
            Some(k) => Lookup::Value(k, Bytes::copy_from_slice(e.key().value())),
        })
    }

    /// Approximate bytes used, including per-entry overhead.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtOrd::Relaxed)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Raises the recorded largest sequence number to `seq` (a seal boundary with no write).
    pub fn note_seq(&self, seq: u64) {
        self.max_seq.fetch_max(seq, AtOrd::Relaxed);
    }

    /// Largest sequence number inserted (or noted).
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(AtOrd::Relaxed)
    }

    /// Visits every entry in order without copying; stops at the first error.
    pub(crate) fn try_for_each<E>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for e in self.map.iter() {
            f(e.key().ikey(), e.key().value())?;
        }
        Ok(())
    }

    /// Copies up to `max` entries after (or before, when `reverse`) the position `from`, as
    /// `(internal key, value)` pairs. Iterators refill from here in chunks so they do not hold
    /// skip-list borrows across calls.
    pub(crate) fn chunk(
        &self,
        from: Bound<&[u8]>,
        reverse: bool,
        max: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) {
        let from = match from {
            Bound::Included(k) => Bound::Included(IKey::new(k)),
            Bound::Excluded(k) => Bound::Excluded(IKey::new(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        // Copy the chunk into one buffer and hand out slices of it: two allocations per chunk
        // instead of two per entry.
        let mut arena: Vec<u8> = Vec::new();
        let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(max);
        let mut push = |e: &Entry| {
            let start = arena.len();
            arena.extend_from_slice(e.ikey());
            let mid = arena.len();
            arena.extend_from_slice(e.value());
            spans.push((start, mid, arena.len()));
        };
        if reverse {
            let range = self.map.range::<IKey, _>((Bound::Unbounded, from));
            for e in range.rev().take(max) {
                push(e.key());
            }
        } else {
            let range = self.map.range::<IKey, _>((from, Bound::Unbounded));
            for e in range.take(max) {
                push(e.key());
            }
        }
        let arena = Bytes::from(arena);
        out.extend(
            spans
                .into_iter()
                .map(|(a, m, z)| (arena.slice(a..m), arena.slice(m..z))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_respects_snapshot_and_tombstones() {
        let m = Memtable::new(0, 1 << 20);
        m.insert(b"k", 1, ValueKind::Put, b"v1");
        m.insert(b"k", 3, ValueKind::Delete, b"");
        m.insert(b"k", 5, ValueKind::Put, b"v5");
        m.insert(b"ka", 2, ValueKind::Put, b"x");
        assert_eq!(m.get(b"k", 0), None);
        assert_eq!(
            m.get(b"k", 2),
            Some(Lookup::Value(ValueKind::Put, Bytes::from_static(b"v1")))
        );
        assert_eq!(m.get(b"k", 4), Some(Lookup::Deleted));
        assert_eq!(
            m.get(b"k", 9),
            Some(Lookup::Value(ValueKind::Put, Bytes::from_static(b"v5")))
        );
        assert_eq!(m.get(b"j", 9), None);
        let mut out = Vec::new();
        m.chunk(Bound::Unbounded, true, 10, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(key::user_key(&out[0].0), b"ka");
    }

    #[test]
    fn same_seq_insert_replaces() {
        let m = Memtable::new(0, 1 << 20);
        m.insert(b"k", 7, ValueKind::Put, b"a");
        m.insert(b"k", 7, ValueKind::Delete, b"");
        assert_eq!(m.get(b"k", 7), Some(Lookup::Deleted));
        assert_eq!(m.len(), 1);
    }
}
