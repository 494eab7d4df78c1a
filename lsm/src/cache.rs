//! The block cache (shared by every table, bounded in bytes) and the table cache (bounded in
//! open tables), both on `quick_cache`'s sharded CLOCK-Pro caches.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::cold_gc::ColdGc;
use crate::diskcache::DiskCache;
use crate::sst::Table;
use crate::version::FileMeta;
use crate::Result;

/// Bytes fetched by the suffix GET that opens a cold table whose metadata is not saved locally:
/// enough for the footer, index and filter of a table of a few MiB in one request.
const COLD_TAIL_HINT: u64 = 256 << 10;

/// Identifies a data block: its table (see [`table_identity`]) and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BlockKey {
    pub table: u128,
    pub offset: u64,
}

/// A table's identity in the block cache. A cold table is its object, whichever database reads
/// it: objects are immutable and their keys unique, so databases naming one object (ranges
/// sharing a table after a split) share its cached blocks. A local table is its database's
/// cache id and its number (the high bit clear keeps the two spaces apart; an object's hash has
/// it set).
pub(crate) fn table_identity(cache_id: u64, number: u64, object: Option<&str>) -> u128 {
    match object {
        Some(key) => xxhash_rust::xxh3::xxh3_128(key.as_bytes()) | (1 << 127),
        None => (u128::from(cache_id & !(1 << 63)) << 64) | u128::from(number),
    }
}

#[derive(Clone)]
struct BlockWeighter;

impl quick_cache::Weighter<BlockKey, Bytes> for BlockWeighter {
    fn weight(&self, _k: &BlockKey, v: &Bytes) -> u64 {
        // Count the key and bookkeeping too, so a cache of tiny blocks stays bounded.
        v.len() as u64 + 64
    }
}

struct BlockCacheInner {
    cache: quick_cache::sync::Cache<BlockKey, Bytes, BlockWeighter>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A cache of decompressed data blocks, bounded in bytes. Cloning shares it, so several databases
/// can draw on one memory budget.
#[derive(Clone)]
pub struct BlockCache(Arc<BlockCacheInner>);

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &self.capacity())
            .field("usage", &self.usage())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding up to `capacity_bytes` of blocks.
    pub fn new(capacity_bytes: usize) -> Self {
        let items = (capacity_bytes / 4096).max(16);
        BlockCache(Arc::new(BlockCacheInner {
            cache: quick_cache::sync::Cache::with_weighter(
                items,
                capacity_bytes.max(1) as u64,
                BlockWeighter,
            ),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }))
    }

    pub(crate) fn get(&self, k: &BlockKey) -> Option<Bytes> {
        let r = self.0.cache.get(k);
        let c = if r.is_some() {
            &self.0.hits
        } else {
            &self.0.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        r
    }

    pub(crate) fn insert(&self, k: BlockKey, v: Bytes) {
        self.0.cache.insert(k, v);
    }

    /// Lookups that found their block.
    pub fn hits(&self) -> u64 {
        self.0.hits.load(Ordering::Relaxed)
    }

    /// Lookups that had to read the file.
    pub fn misses(&self) -> u64 {
        self.0.misses.load(Ordering::Relaxed)
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.0.cache.capacity()
    }

    /// Bytes currently held.
    pub fn usage(&self) -> u64 {
        self.0.cache.weight()
    }
}

/// Open table readers by file number, bounded in count. Evicting one only drops its memory map;
/// readers holding the `Arc` keep using it.
pub(crate) struct TableCache {
    dir: PathBuf,
    cold: Option<crate::ColdTier>,
    cache: quick_cache::sync::Cache<u64, Arc<Table>>,
    blocks: BlockCache,
    cache_id: u64,
    /// Cold tables' data blocks on local disk, when configured.
    disk: Option<DiskCache>,
    hits: AtomicU64,
    misses: AtomicU64,
    gc: ColdGc,
    objects_deleted: AtomicU64,
}

impl TableCache {
    pub(crate) fn new(
        dir: PathBuf,
        cold: Option<crate::ColdTier>,
        capacity: usize,
        blocks: BlockCache,
        cache_id: u64,
        disk: Option<DiskCache>,
    ) -> Self {
        let grace = cold.as_ref().and_then(|c| c.gc_grace);
        TableCache {
            dir,
            gc: ColdGc::new(grace),
            objects_deleted: AtomicU64::new(0),
            cold,
            cache: quick_cache::sync::Cache::new(capacity),
            blocks,
            cache_id,
            disk,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The reader of a table already open, without opening it.
    pub(crate) fn get_open(&self, number: u64) -> Option<Arc<Table>> {
        self.cache.get(&number)
    }

    pub(crate) fn get(&self, meta: &FileMeta) -> Result<Arc<Table>> {
        let number = meta.number;
        if let Some(t) = self.cache.get(&number) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(t);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let t = match (&self.cold, meta.cold) {
            (Some(c), true) => Table::open_remote(
                c.store.clone(),
                &self.object_key(meta),
                number,
                self.blocks.clone(),
                self.cache_id,
                Some(&self.meta_path(number)),
                COLD_TAIL_HINT,
            )?
            .with_disk_cache(self.disk.clone()),
            (None, true) => {
                return Err(crate::Error::InvalidArgument(format!(
                    "table {number} is in an object store, but no cold tier is configured"
                )))
            }
            (_, false) => Table::open(
                &crate::fsutil::sst_path(&self.dir, number),
                number,
                self.blocks.clone(),
                self.cache_id,
            )?,
        };
        let t = Arc::new(t);
        self.cache.insert(number, t.clone());
        Ok(t)
    }

    /// The cold tier, when configured.
    pub(crate) fn cold(&self) -> Option<&crate::ColdTier> {
        self.cold.as_ref()
    }

    /// Object key of a cold table: the one the manifest records, or for a table recorded
    /// before manifests named objects, the key it was uploaded under then.
    pub(crate) fn object_key(&self, meta: &FileMeta) -> String {
        match &meta.object {
            Some(key) => key.clone(),
            None => self.legacy_object_key(meta.number),
        }
    }

    /// The key of cold table `number` as uploaded before manifest format 3.
    pub(crate) fn legacy_object_key(&self, number: u64) -> String {
        format!("{}/sst/{number:06}.sst", self.object_prefix())
    }

    /// A key for a new cold table numbered `number`, unique across every database sharing the
    /// store and every incarnation of this one: the number (for people reading a listing) and 64
    /// random bits, under this database's prefix. Unique keys are what let two databases name
    /// one object, and an object never be overwritten by a second upload.
    pub(crate) fn new_object_key(&self, number: u64) -> String {
        let mut nonce = [0u8; 8];
        if getrandom::fill(&mut nonce).is_err() {
            // No entropy source: the clock and a process-wide counter still keep this process's
            // keys distinct, and the number keeps them distinct within the database.
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nonce = (nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)).to_le_bytes();
        }
        format!(
            "{}/sst/{number:06}-{:016x}.sst",
            self.object_prefix(),
            u64::from_le_bytes(nonce)
        )
    }

    fn object_prefix(&self) -> &str {
        self.cold.as_ref().map_or("", |c| c.prefix.as_str())
    }

    /// Local file holding the metadata of cold table `number`.
    pub(crate) fn meta_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:06}.meta"))
    }

    /// An obsolete cold table: its local metadata goes now, its object after the grace period
    /// (see `cold_gc`).
    pub(crate) fn delete_cold(&self, meta: &FileMeta) {
        let _ = std::fs::remove_file(self.meta_path(meta.number));
        self.defer_object(&self.object_key(meta));
    }

    /// Queues the object `key` for deletion once its grace period is over.
    pub(crate) fn defer_object(&self, key: &str) {
        if self.cold.is_some() {
            self.gc.defer(key);
        }
    }

    /// Deletes the objects whose grace period is over, unless `live` (the current version's
    /// cold tables' object keys) names them again. Stops at the first failure: the store is likely down and
    /// the rest waits for the next pass. Returns how many objects were deleted.
    pub(crate) fn collect_garbage(&self, live: &std::collections::HashSet<String>) -> u64 {
        let Some(c) = &self.cold else { return 0 };
        let mut deleted = 0;
        let due = self.gc.due(
            std::time::Instant::now(),
            crate::cold_gc::MAX_DELETES_PER_PASS,
        );
        for key in due {
            if live.contains(&key) {
                self.gc.forget(&key);
                continue;
            }
            match c.store.delete(&key) {
                Ok(()) => {
                    self.gc.forget(&key);
                    deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "could not delete an obsolete cold table; will retry");
                    break;
                }
            }
        }
        self.objects_deleted.fetch_add(deleted, Ordering::Relaxed);
        deleted
    }

    /// The object collector (for the replication layer's progress and floor).
    pub(crate) fn gc(&self) -> &ColdGc {
        &self.gc
    }

    /// Objects waiting for their grace period to end.
    pub(crate) fn garbage_pending(&self) -> usize {
        self.gc.len()
    }

    /// Objects deleted since open.
    pub(crate) fn objects_deleted(&self) -> u64 {
        self.objects_deleted.load(Ordering::Relaxed)
    }

    pub(crate) fn evict(&self, number: u64) {
        self.cache.remove(&number);
    }

    pub(crate) fn blocks(&self) -> &BlockCache {
        &self.blocks
    }

    pub(crate) fn disk(&self) -> Option<&DiskCache> {
        self.disk.as_ref()
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}
