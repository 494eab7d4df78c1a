//! An optional local disk cache of cold tables' data blocks, between the memory block cache and
//! the object store.
//!
//! A point lookup in a cold table looks in the memory block cache, then here, and only then sends
//! a ranged GET; the block a GET returns is inserted here (and in the memory cache). Blocks are
//! kept exactly as the table object holds them (compressed, with their checksum trailer), so the
//! table verifies and decompresses a disk hit like a fetched block, and the cache holds as many
//! blocks per byte as the object store does.
//!
//! Log-structured: each block is appended as one record to the active segment file (format in
//! `segment.rs`), and when the segments exceed the capacity the oldest one is deleted whole.
//! FIFO by segment rather than LRU by block: eviction is one unlink with nothing rewritten, reads
//! write nothing, and the memory cache in front already keeps the hottest blocks. The index (table
//! and block offset to segment and position) is in memory only and is rebuilt from the segments'
//! record headers at open, so there is no index file to keep consistent with the segments.
//! Nothing is synced: a record a crash loses or tears is a miss, found by its checksums.
//!
//! Once open, the cache never fails an engine operation: a read that fails or does not check out
//! is a miss (and its entry is dropped), a write that fails is skipped; the first such failure is
//! logged and all are counted. Opening fails when the directory cannot be created or is locked by
//! another open cache: two writers appending to the same segments would corrupt each other, and a
//! misconfiguration is best reported when it is made rather than as a silently missing cache.

mod segment;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::db::lock;
use crate::error::IoContext;
use crate::fsutil::DirLock;
use crate::{Error, Result};
use segment::SEGMENT_HEADER;

/// Smallest accepted [`DiskCacheOptions::capacity_bytes`].
pub const MIN_DISK_CACHE_BYTES: u64 = 1 << 20;

/// Segments are an eighth of the capacity within these bounds: small enough that evicting one
/// drops little of the cache, large enough that there are few files.
const MIN_SEGMENT: u64 = 1 << 20;
const MAX_SEGMENT: u64 = 64 << 20;

/// Where and how large the local disk cache of cold data blocks is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheOptions {
    /// Directory of the cache's files, created if missing. One open database at a time may use
    /// it (it is locked while open); it may be a subdirectory of the database's directory.
    pub dir: PathBuf,
    /// Bytes the cache's files may hold (blocks and their record headers); at least
    /// [`MIN_DISK_CACHE_BYTES`]. Space is freed a segment at a time (an eighth of the capacity,
    /// between 1 and 64 MiB), so a full cache holds between the capacity minus one segment and
    /// the capacity. Its in-memory index costs about 100 bytes per cached block (some 25 MiB per
    /// GiB of 4 KiB blocks).
    pub capacity_bytes: u64,
}

impl DiskCacheOptions {
    /// A cache in `dir` of up to `capacity_bytes`.
    pub fn new(dir: impl Into<PathBuf>, capacity_bytes: u64) -> Self {
        DiskCacheOptions {
            dir: dir.into(),
            capacity_bytes,
        }
    }
}

/// Names a cold table in the disk cache: its object key, and a fingerprint of its contents (of
/// the metadata tail kept locally). The key alone is not enough: a database recreated under the
/// same prefix reuses keys for different tables, and its cache directory may have outlived it;
/// and should one cache serve several databases some day, their stores may hold the same key.
#[derive(Debug, Clone)]
pub(crate) struct TableId {
    key: String,
    fingerprint: u64,
    hash: u64,
}

impl TableId {
    pub(crate) fn new(key: &str, fingerprint: u64) -> Self {
        TableId {
            key: key.to_string(),
            fingerprint,
            hash: segment::table_hash(key, fingerprint),
        }
    }
}

/// Where a cached block's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    segment: u64,
    pos: u64,
    len: u32,
}

/// (table hash, block offset).
type IndexKey = (u64, u64);

struct Segment {
    file: Arc<File>,
    bytes: u64,
    /// Every block recorded here, to drop from the index when the segment goes.
    keys: Vec<IndexKey>,
}

#[derive(Default)]
struct State {
    index: HashMap<IndexKey, Loc>,
    /// Oldest first; the active segment is the last.
    segments: BTreeMap<u64, Segment>,
    bytes: u64,
}

struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
}

struct Writer {
    active: Option<Active>,
    next_id: u64,
}

struct Shared {
    dir: PathBuf,
    capacity: u64,
    segment_bytes: u64,
    /// Serialises appends and evictions; taken before `state`, never after it.
    writer: Mutex<Writer>,
    state: RwLock<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    errors: AtomicU64,
    warned: AtomicBool,
    /// Set by `close`; from then on every lookup misses and nothing is written.
    closed: AtomicBool,
    /// Held until `close`, not until the last table using the cache goes away: snapshots and
    /// iterators of a closed database may keep tables for long, and must not keep a reopened one
    /// from its cache.
    lock: Mutex<Option<DirLock>>,
}

/// An open disk cache; cloning shares it.
#[derive(Clone)]
pub(crate) struct DiskCache(Arc<Shared>);

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.0.dir)
            .field("capacity", &self.0.capacity)
            .field("usage", &self.usage())
            .finish()
    }
}

fn read(s: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    // The state is plain data, consistent after every statement that changes it.
    s.read().unwrap_or_else(|p| p.into_inner())
}

fn write(s: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    s.write().unwrap_or_else(|p| p.into_inner())
}

impl DiskCache {
    /// Opens (or creates) the cache, rebuilding its index from the segments found.
    pub(crate) fn open(o: &DiskCacheOptions) -> Result<DiskCache> {
        let segment_bytes = (o.capacity_bytes / 8).clamp(MIN_SEGMENT, MAX_SEGMENT);
        Self::open_with(&o.dir, o.capacity_bytes, segment_bytes)
    }

    fn open_with(dir: &Path, capacity: u64, segment_bytes: u64) -> Result<DiskCache> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let lock = DirLock::acquire(dir).map_err(|e| match e {
            Error::Locked { .. } => Error::InvalidArgument(format!(
                "disk cache directory {} is in use by another open database (as its disk cache \
                 or its own directory); each database needs a cache directory of its own",
                dir.display()
            )),
            e => e,
        })?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .ctx(|| format!("listing {}", dir.display()))?
            .filter_map(|e| segment::parse_segment_name(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        ids.sort_unstable();
        let mut state = State::default();
        for &id in &ids {
            let Some((file, bytes, records)) = segment::open_segment(dir, id) else {
                continue;
            };
            let mut keys = Vec::with_capacity(records.len());
            for r in records {
                let k = (r.table_hash, r.offset);
                // A later record of the same block (inserted again after the first was found
                // damaged) replaces the earlier one.
                let loc = Loc {
                    segment: id,
                    pos: r.pos,
                    len: r.data_len,
                };
                state.index.insert(k, loc);
                keys.push(k);
            }
            state.bytes += bytes;
            state.segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    bytes,
                    keys,
                },
            );
        }
        let cache = DiskCache(Arc::new(Shared {
            dir: dir.to_path_buf(),
            capacity,
            segment_bytes,
            writer: Mutex::new(Writer {
                active: None,
                next_id: ids.last().map_or(1, |n| n + 1),
            }),
            state: RwLock::new(state),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
        }));
        // The capacity may have shrunk since the segments were written.
        cache.evict_until(0, None);
        Ok(cache)
    }

    /// Stops using the cache and releases its directory for the next open. Reads in flight may
    /// finish: the segments they read are never rewritten, and a segment deleted by the next
    /// owner stays readable through the handle they hold.
    pub(crate) fn close(&self) {
        let s = &self.0;
        let mut w = lock(&s.writer);
        s.closed.store(true, Ordering::Release);
        w.active = None;
        *write(&s.state) = State::default();
        lock(&s.lock).take();
    }

    /// Block `offset` of table `t`, `len` bytes, if cached and intact.
    pub(crate) fn get(&self, t: &TableId, offset: u64, len: u64) -> Option<Bytes> {
        let s = &self.0;
        if s.closed.load(Ordering::Acquire) {
            return None;
        }
        let k = (t.hash, offset);
        let found = {
            let st = read(&s.state);
            st.index
                .get(&k)
                .and_then(|loc| Some((*loc, st.segments.get(&loc.segment)?.file.clone())))
        };
        let Some((loc, file)) = found else {
            s.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let r = match usize::try_from(len) {
            Ok(n) if u64::from(loc.len) == len => {
                segment::read_record(&file, loc.pos, (&t.key, t.fingerprint), offset, n)
            }
            _ => Ok(None),
        };
        match r {
            Ok(Some(b)) => {
                s.hits.fetch_add(1, Ordering::Relaxed);
                return Some(b);
            }
            Ok(None) => self.failed(
                "a cached block does not check out",
                &"checksum, length or table mismatch",
            ),
            Err(e) => self.failed("reading a cached block failed", &e),
        }
        self.forget(k, Some(loc));
        s.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Drops block `offset` of table `t`, which passed the cache's checks but not the table's
    /// (`e`): a failure like any other, a miss now and an insert later.
    pub(crate) fn reject(&self, t: &TableId, offset: u64, e: &dyn std::fmt::Display) {
        self.failed("a cached block failed the table's checks", e);
        self.forget((t.hash, offset), None);
    }

    /// Drops `k`, if it still is at `loc` when given (a concurrent insert may have replaced it).
    fn forget(&self, k: IndexKey, loc: Option<Loc>) {
        let mut st = write(&self.0.state);
        if st
            .index
            .get(&k)
            .is_some_and(|l| loc.is_none_or(|loc| *l == loc))
        {
            st.index.remove(&k);
        }
    }

    /// Caches block `offset` of table `t`. Failures are counted and otherwise ignored.
    ///
    /// The append is one positioned write of the whole record, made before the record enters the
    /// index, so a reader never finds an entry whose bytes are not in the file yet. It is not
    /// buffered across inserts: each follows a GET that took far longer than the write, and a
    /// buffer would need a second read path for records not yet flushed.
    pub(crate) fn insert(&self, t: &TableId, offset: u64, data: &[u8]) {
        let s = &self.0;
        let Some(rec) = segment::encode_record(&t.key, t.fingerprint, offset, data) else {
            return;
        };
        let len = rec.len() as u64;
        if SEGMENT_HEADER + len > s.segment_bytes {
            return;
        }
        let k = (t.hash, offset);
        let mut w = lock(&s.writer);
        if s.closed.load(Ordering::Acquire) || read(&s.state).index.contains_key(&k) {
            return;
        }
        if w.active
            .as_ref()
            .is_some_and(|a| a.len + len > s.segment_bytes)
        {
            w.active = None;
        }
        if w.active.is_none() {
            let id = w.next_id;
            w.next_id += 1;
            match self.create_segment(id) {
                Ok(a) => w.active = Some(a),
                Err(e) => return self.failed("creating a segment failed", &e),
            }
        }
        let Some(a) = w.active.as_mut() else { return };
        self.evict_until(len, Some(a.id));
        if let Err(e) = a.file.write_all_at(&rec, a.len) {
            // Cut off what part of the record made it, and append to this segment no more: its
            // tail is in an unknown state if the cut failed too (a reopen stops at it).
            let _ = a.file.set_len(a.len);
            w.active = None;
            return self.failed("writing a segment failed", &e);
        }
        let loc = Loc {
            segment: a.id,
            pos: a.len,
            len: data.len() as u32,
        };
        a.len += len;
        let mut st = write(&s.state);
        st.index.insert(k, loc);
        if let Some(seg) = st.segments.get_mut(&loc.segment) {
            seg.keys.push(k);
            seg.bytes += len;
        }
        st.bytes += len;
        s.inserts.fetch_add(1, Ordering::Relaxed);
    }

    fn create_segment(&self, id: u64) -> std::io::Result<Active> {
        let path = segment::segment_path(&self.0.dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = file.write_all_at(&segment::segment_header(), 0) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let file = Arc::new(file);
        let mut st = write(&self.0.state);
        st.segments.insert(
            id,
            Segment {
                file: file.clone(),
                bytes: SEGMENT_HEADER,
                keys: Vec::new(),
            },
        );
        st.bytes += SEGMENT_HEADER;
        Ok(Active {
            id,
            file,
            len: SEGMENT_HEADER,
        })
    }

    /// Deletes the oldest segments (never `keep`) until `room` more bytes fit in the capacity.
    /// Callers hold the writer lock, or have the cache to themselves.
    fn evict_until(&self, room: u64, keep: Option<u64>) {
        let s = &self.0;
        loop {
            let (id, seg) = {
                let mut st = write(&s.state);
                if st.bytes + room <= s.capacity {
                    return;
                }
                let Some(id) = st
                    .segments
                    .keys()
                    .next()
                    .copied()
                    .filter(|&i| Some(i) != keep)
                else {
                    return;
                };
                let Some(seg) = st.segments.remove(&id) else {
                    return;
                };
                let mut dropped = 0;
                for k in &seg.keys {
                    if st.index.get(k).is_some_and(|l| l.segment == id) {
                        st.index.remove(k);
                        dropped += 1;
                    }
                }
                st.bytes -= seg.bytes;
                s.evictions.fetch_add(dropped, Ordering::Relaxed);
                (id, seg)
            };
            // Readers that found a record in it just before keep their open handle, and with it
            // the data; the unlink only frees the space once they are done.
            drop(seg);
            if let Err(e) = std::fs::remove_file(segment::segment_path(&s.dir, id)) {
                self.failed("deleting an evicted segment failed", &e);
            }
        }
    }

    /// Counts a failure and logs the first one: the cache may be on a failing disk, and one
    /// warning per lookup would drown the log.
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        let s = &self.0;
        s.errors.fetch_add(1, Ordering::Relaxed);
        if !s.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(dir = %s.dir.display(), error = %e,
                "disk cache: {what}; treated as a miss (later failures are only counted in Stats::disk_cache_errors)");
        }
    }

    /// Lookups that found their block.
    pub(crate) fn hits(&self) -> u64 {
        self.0.hits.load(Ordering::Relaxed)
    }

    /// Lookups that did not (absent, or present but unreadable or damaged).
    pub(crate) fn misses(&self) -> u64 {
        self.0.misses.load(Ordering::Relaxed)
    }

    /// Blocks added.
    pub(crate) fn inserts(&self) -> u64 {
        self.0.inserts.load(Ordering::Relaxed)
    }

    /// Blocks dropped with the segments evicted to stay within the capacity.
    pub(crate) fn evictions(&self) -> u64 {
        self.0.evictions.load(Ordering::Relaxed)
    }

    /// Reads, writes and deletions that failed, and records that did not check out.
    pub(crate) fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// Bytes of the segment files.
    pub(crate) fn usage(&self) -> u64 {
        read(&self.0.state).bytes
    }

    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.0.capacity
    }
}
