//! The database: shared state, the public API and the read path.
//!
//! Concurrency: writers go through a group-commit queue (`write.rs`); one leader at a time logs
//! and applies a group. The read view (`SuperVersion`: active memtable, sealed memtables, table
//! version) is swapped atomically under the `versions` mutex, by sealing, flushing and
//! compaction alike. Readers load it without locking and read at the published sequence number.

mod compact;
mod flush;
mod open;
mod replica;
mod snapshot;
mod write;

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use bytes::Bytes;

pub use replica::{ManifestImage, ReplicaStatus, TableEdit};
pub use snapshot::Snapshot;

use crate::cache::TableCache;
use crate::fsutil::DirLock;
use crate::iter::db_iter::Iter;
use crate::iter::merge::MergeIter;
use crate::iter::sources::{LevelSource, MemSource, TableSource};
use crate::iter::Source;
use crate::key::{self, ValueKind, SEEK_KIND};
use crate::manifest::ManifestWriter;
use crate::memtable::{Lookup, Memtable};
use crate::stats::{Counters, Stats};
use crate::version::Version;
use crate::{Error, Options, Result, WriteBatch, WriteOptions};

/// File numbers reserved per manifest record (at open and when the reservation runs out).
pub(crate) const FILE_NUMBER_RESERVATION: u64 = 1000;

/// What recovery found and dropped when the database was opened.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// WAL segments replayed.
    pub wal_segments: u64,
    /// WAL records (write batches) replayed.
    pub wal_records_replayed: u64,
    /// Bytes of a torn WAL tail cut (writes never acknowledged as durable). Damage that a
    /// later record proves was synced fails the open instead.
    pub wal_bytes_dropped: u64,
    /// Bytes of a torn manifest tail ignored.
    pub manifest_bytes_dropped: u64,
    /// Files and objects left by an interrupted flush or compaction, deleted at open (objects
    /// only when their grace period is zero; otherwise they wait, see `orphan_objects_found`).
    pub orphan_files_deleted: u64,
    /// Objects under this database's prefix that the manifest does not name, queued for
    /// deletion after [`ColdTier::gc_grace`](crate::ColdTier::gc_grace).
    pub orphan_objects_found: u64,
}

/// The read view: memtables and tables, swapped as a whole.
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    /// Sealed memtables, newest first.
    pub imms: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

/// Mutable state of the version set, guarded by `Inner::versions`.
pub(crate) struct VersionSet {
    pub manifest: ManifestWriter,
    /// Next file number to hand out.
    pub next_file: u64,
    /// File numbers below this are reserved in the manifest; crossing it logs a new reservation,
    /// so numbers are never reused even when a crash loses the file that used one.
    pub reserved: u64,
    /// Tables are never numbered at or above this (replicated mode: the end of the leader's
    /// term's own numbers; see `Db::number_tables_within`).
    pub file_limit: u64,
    pub log_number: u64,
    /// Round-robin compaction cursor per level (largest user key last compacted).
    pub pointers: Vec<Vec<u8>>,
    /// Replicated mode: every write up to this sequence is in the tables.
    pub flushed_seq: u64,
    /// Replicated mode: the owner's state saved with the version (see `Db::apply_chunk`).
    pub app_state: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct BgState {
    pub error: Option<Error>,
    pub shutdown: bool,
    pub compaction_requested: bool,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub opts: Options,
    pub tables: Arc<TableCache>,
    pub sv: ArcSwap<SuperVersion>,
    pub visible_seq: AtomicU64,
    pub versions: Mutex<VersionSet>,
    pub queue: write::Queue,
    pub bg: Mutex<BgState>,
    pub bg_cv: Condvar,
    /// Serialises compactions (background and manual).
    pub compaction_lock: Mutex<()>,
    pub snapshots: Mutex<BTreeMap<u64, usize>>,
    pub stats: Counters,
    /// Requests to the cold tier, as sent (retries included).
    pub object_counters: Arc<crate::object::ObjectCounters>,
    pub recovery: RecoveryReport,
    pub closed: AtomicBool,
    /// Whether obsolete objects may be deleted (always, except in a replicated database whose
    /// owner is not the group's leader).
    pub object_gc: AtomicBool,
    pub has_bg_error: AtomicBool,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    /// Held until `close`, not until the last snapshot or iterator lets go of `Inner`.
    pub dir_lock: Mutex<Option<DirLock>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An open database. Thread-safe: share it with `Arc` or scoped threads. Dropping it closes it.
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).finish()
    }
}

fn to_bounds<K: AsRef<[u8]>, R: RangeBounds<K>>(r: &R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let conv = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (conv(r.start_bound()), conv(r.end_bound()))
}

/// The smallest key greater than every key starting with `prefix`: the exclusive end of a prefix
/// range (`Unbounded` when the prefix is all `0xff` bytes or empty).
///
/// ```
/// use std::ops::Bound;
/// assert_eq!(lsm::prefix_upper_bound(b"ab"), Bound::Excluded(b"ac".to_vec()));
/// assert_eq!(lsm::prefix_upper_bound(b"a\xff"), Bound::Excluded(b"b".to_vec()));
/// assert_eq!(lsm::prefix_upper_bound(b"\xff"), Bound::Unbounded);
/// ```
pub fn prefix_upper_bound(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Bound::Excluded(p);
        }
    }
    Bound::Unbounded
}

impl Db {
    /// Opens (or creates) the database in directory `path`, replaying its manifest and WAL.
    ///
    /// Fails with [`Error::Locked`] when the directory is already open, here or in another
    /// process.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let inner = open::open(path.as_ref(), opts)?;
        Ok(Db { inner })
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(b)
    }

    /// Sets `key` to `value` for `ttl`; afterwards the key reads as absent.
    pub fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put_with_ttl(key, value, ttl);
        self.write(b)
    }

    /// Deletes `key` (a no-op for an absent key).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b)
    }

    /// Applies a batch atomically, without waiting for the disk.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.write_with(batch, &WriteOptions::default())
    }

    /// Applies a batch atomically with explicit options (`sync` to wait for the disk).
    pub fn write_with(&self, batch: WriteBatch, opts: &WriteOptions) -> Result<()> {
        if let Some(e) = batch.validation_error() {
            return Err(e.clone());
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.refuse_if_replicated()?;
        self.inner.submit(write::Op::Batch {
            batch,
            sync: opts.sync,
        })
    }

    /// The current value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.inner.get_at(key.as_ref(), None)
    }

    /// The current value of `key` if finding it needs no I/O: the memtables hold it, or the
    /// filters of open tables rule every table out, or the block that holds it is in the block
    /// cache. `None` when a table file or the object store would have to be read (or a table
    /// opened): an async caller then runs [`get`](Self::get) where blocking is allowed.
    pub fn get_without_io(&self, key: impl AsRef<[u8]>) -> Option<Result<Option<Bytes>>> {
        let i = &self.inner;
        i.lookup(key.as_ref(), None, i.opts.clock.now_millis(), false)
            .transpose()
    }

    /// A consistent read view as of now; it keeps what it can see alive until dropped.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.inner.clone())
    }

    /// Iterates the live pairs with keys in `range`, forward and (with `.rev()` or `next_back`)
    /// in reverse.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let (lo, hi) = to_bounds(&range);
        self.inner.iter_at(None, lo, hi)
    }

    /// Iterates the live pairs whose keys start with `prefix`.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let p = prefix.as_ref();
        self.inner
            .iter_at(None, Bound::Included(p.to_vec()), prefix_upper_bound(p))
    }

    /// Iterates every live pair.
    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// Writes the memtable to an L0 table and waits until every sealed memtable is on disk.
    pub fn flush(&self) -> Result<()> {
        self.inner.refuse_if_replicated()?;
        self.inner.flush()
    }

    /// Seals the active memtable at sequence number `seq`: the sealed memtable holds exactly the
    /// writes up to `seq`, and the next write gets a larger number. For replication, where every
    /// replica seals at the same log index. Fails if writes past `seq` were already applied.
    pub fn seal_at(&self, seq: u64) -> Result<()> {
        self.inner.submit(write::Op::Seal { at: Some(seq) })
    }

    /// Compacts every table overlapping `range` down to the deepest level holding data, dropping
    /// overwritten versions, tombstones and expired values that no snapshot can see.
    pub fn compact_range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<()> {
        let (lo, hi) = to_bounds(&range);
        self.inner.refuse_if_replicated()?;
        self.inner.flush()?;
        self.inner.compact_range(lo, hi)
    }

    /// Counters and sizes: files and bytes per level, cache hit rates, stalls, amplification.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The live tables, level by level (L0 newest first, deeper levels in key order). A cold
    /// table's object key is the one its manifest records: unique across every database sharing
    /// the store, so it names the same bytes wherever it appears.
    pub fn tables(&self) -> Vec<crate::TableInfo> {
        let sv = self.inner.sv.load();
        let mut out = Vec::new();
        for (level, files) in sv.version.levels.iter().enumerate() {
            for f in files {
                let m = &f.meta;
                out.push(crate::TableInfo {
                    level,
                    number: m.number,
                    size: m.size,
                    object: m.cold.then(|| self.inner.tables.object_key(m)),
                    smallest: m.smallest_user().to_vec(),
                    largest: m.largest_user().to_vec(),
                    entries: m.entries,
                });
            }
        }
        out
    }

    /// Sequence number of the last write visible to readers.
    pub fn last_seq(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// What recovery found when this database was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.recovery.clone()
    }

    /// Directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Stops background work and syncs the WAL (or, without a WAL, flushes the memtable so
    /// nothing is lost). Further operations fail with [`Error::Closed`].
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.inner.close() {
            tracing::error!(dir = %self.inner.dir.display(), error = %e, "closing database failed");
        }
    }
}

impl Inner {
    pub(crate) fn bg_error(&self) -> Option<Error> {
        // Checked on every write: skip the lock in the common case.
        if !self.has_bg_error.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.bg).error.clone()
    }

    /// Writes, flushes and compactions of a replicated database come from its replication log.
    pub(crate) fn refuse_if_replicated(&self) -> Result<()> {
        if self.opts.replicated {
            return Err(Error::InvalidArgument(
                "replicated database: writes, flushes and compactions go through the replica API"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Records a background failure; from now on writes fail with it.
    pub(crate) fn set_bg_error(&self, e: Error) {
        tracing::error!(dir = %self.dir.display(), error = %e, "background error; writes disabled");
        let mut bg = lock(&self.bg);
        if bg.error.is_none() {
            bg.error = Some(Error::Background(Box::new(e)));
            self.has_bg_error.store(true, Ordering::Release);
        }
        self.bg_cv.notify_all();
    }

    /// Reads `user_key` at `seq`, or at the latest sequence when `None`. The view is loaded
    /// before the latest sequence is read: every view was built by a flush or compaction that
    /// kept all versions visible at sequences up to the one published when it ran, so a view
    /// loaded first holds everything visible at any sequence read after it. (The reverse order
    /// races with a flush that drops a version the reader's sequence still needs.)
    pub(crate) fn get_at(&self, user_key: &[u8], seq: Option<u64>) -> Result<Option<Bytes>> {
        self.get_as_of(user_key, seq, self.opts.clock.now_millis())
    }

    /// As `get_at`, with expiry judged at `now_ms` rather than by the clock.
    pub(crate) fn get_as_of(
        &self,
        user_key: &[u8],
        seq: Option<u64>,
        now_ms: u64,
    ) -> Result<Option<Bytes>> {
        Ok(self.lookup(user_key, seq, now_ms, true)?.flatten())
    }

    /// The lookup of `get_as_of`. With `io` false it reads nothing but memory (memtables, open
    /// tables' filters and indexes, the block cache) and returns `Ok(None)` where it would have
    /// to read a file or the object store; otherwise `Ok(Some(value))`.
    fn lookup(
        &self,
        user_key: &[u8],
        seq: Option<u64>,
        now_ms: u64,
        io: bool,
    ) -> Result<Option<Option<Bytes>>> {
        let sv = self.sv.load();
        let seq = seq.unwrap_or_else(|| self.visible_seq.load(Ordering::Acquire));
        let resolve = |kind, v| Some(key::live_value(kind, v, now_ms));
        let seek = key::make_internal_key(user_key, seq, SEEK_KIND);
        let hash = crate::sst::filter_hash(user_key);
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            match m.get_prepared(user_key, &seek, hash) {
                Some(Lookup::Value(k, v)) => return Ok(resolve(k, v)),
                Some(Lookup::Deleted) => return Ok(Some(None)),
                None => {}
            }
        }
        let v = &sv.version;
        let l0 = v.levels[0]
            .iter()
            .filter(|f| f.meta.min_seq <= seq && f.meta.overlaps(user_key, user_key));
        let deeper = (1..v.levels.len()).filter_map(|l| v.find_file(l, user_key));
        let mut cold = false;
        for f in l0.chain(deeper) {
            cold |= f.meta.cold;
            // A failed lookup counts too: its GET attempts are counted.
            let counted = |_: &Error| self.count_cold_lookup(cold);
            let t = if io {
                self.tables.get(&f.meta).inspect_err(counted)?
            } else {
                match self.tables.get_open(f.meta.number) {
                    Some(t) => t,
                    None => return Ok(None),
                }
            };
            if !t.may_contain(hash) {
                continue;
            }
            let found = if io {
                t.get(user_key, &seek).inspect_err(counted)?
            } else {
                match t.get_cached(user_key, &seek) {
                    Some(r) => r?,
                    None => return Ok(None),
                }
            };
            if let Some((ikey, value)) = found {
                self.count_cold_lookup(cold);
                let kind =
                    ValueKind::from_u8(key::kind_byte(key::split(&ikey).1)).ok_or_else(|| {
                        Error::corruption(
                            crate::fsutil::sst_path(&self.dir, f.meta.number),
                            "unknown entry kind",
                        )
                    })?;
                return Ok(resolve(kind, value));
            }
        }
        self.count_cold_lookup(cold);
        Ok(Some(None))
    }

    fn count_cold_lookup(&self, cold: bool) {
        if cold {
            self.stats.cold_lookups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Iterates at `seq`, or at the latest sequence when `None` (loaded after the view, as in
    /// `get_at`).
    pub(crate) fn iter_at(
        self: &Arc<Self>,
        seq: Option<u64>,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
    ) -> Iter {
        self.iter_as_of(seq, lo, hi, None)
    }

    /// [`iter_at`](Self::iter_at) judging expiry at `now_ms` (the engine's clock if `None`).
    pub(crate) fn iter_as_of(
        self: &Arc<Self>,
        seq: Option<u64>,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        now_ms: Option<u64>,
    ) -> Iter {
        let sv = self.sv.load_full();
        let seq = seq.unwrap_or_else(|| self.visible_seq.load(Ordering::Acquire));
        Iter::new(self.clone(), sv, seq, lo, hi, now_ms)
    }

    /// Merges every source of `sv` positioned at `start` (an internal key) in one direction.
    pub(crate) fn merge_iter(
        &self,
        sv: &SuperVersion,
        start: Option<&[u8]>,
        reverse: bool,
        fill_cache: bool,
    ) -> Result<MergeIter> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            sources.push(Box::new(MemSource::new(m.clone(), start, reverse)));
        }
        for f in &sv.version.levels[0] {
            let t = self.tables.get(&f.meta)?;
            sources.push(Box::new(TableSource::new(t, start, reverse, fill_cache)?));
        }
        for files in sv.version.levels.iter().skip(1) {
            if !files.is_empty() {
                sources.push(Box::new(LevelSource::new(
                    files.clone(),
                    self.tables.clone(),
                    start,
                    reverse,
                    fill_cache,
                )?));
            }
        }
        Ok(MergeIter::new(sources, reverse))
    }

    fn stats(&self) -> Stats {
        let sv = self.sv.load();
        Stats::collect(self, &sv)
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = match self.bg_error() {
            // Report it: without a WAL, unflushed writes are lost.
            Some(e) => Err(e),
            None if self.opts.wal => self.queue.sync_wal(),
            // The replication log holds every write the memtables hold.
            None if self.opts.replicated => Ok(()),
            None => self.flush_for_close(),
        };
        {
            let mut bg = lock(&self.bg);
            bg.shutdown = true;
            self.bg_cv.notify_all();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        lock(&self.dir_lock).take();
        if let Some(d) = self.tables.disk() {
            d.close();
        }
        result
    }
}
