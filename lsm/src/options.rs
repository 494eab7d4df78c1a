//! Tuning knobs, write options, the clock, and the documented size limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::BlockCache;

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Longest accepted value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 << 20;
/// Largest accepted encoded write batch, in bytes.
pub const MAX_BATCH_LEN: usize = 512 << 20;

/// How data blocks are compressed in SST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// Blocks are compressed with LZ4 (`lz4_flex`); a block that does not shrink is stored raw.
    Lz4,
}

/// A source of wall-clock time for TTL expiry, in milliseconds since the Unix epoch.
///
/// Tests substitute [`ManualClock`] to make expiry deterministic.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests of TTL behaviour.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `millis`.
    pub fn new(millis: u64) -> Self {
        ManualClock(AtomicU64::new(millis))
    }
    /// Moves the clock forward by `millis`.
    pub fn advance(&self, millis: u64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
    /// Sets the clock to `millis`.
    pub fn set(&self, millis: u64) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where levels below L0 live when they are not on local disk.
#[derive(Clone)]
pub struct ColdTier {
    /// The object store holding cold tables.
    pub store: std::sync::Arc<dyn crate::object::ObjectStore>,
    /// Prefix of the object keys of the tables this database uploads
    /// (`<prefix>/sst/<number>-<16 random hex digits>.sst`, unique whoever uploads; the manifest
    /// records each table's key). Databases sharing a store must still use different prefixes:
    /// the orphan sweep at open deletes what it finds under its own prefix and does not name.
    pub prefix: String,
    /// First level stored in the object store (1: everything below L0).
    pub first_level: usize,
    /// Retries, backoff and the bound on requests in flight for every call to `store`.
    pub retry: crate::object::RetryPolicy,
    /// How long an object stays in the store after no version of this database names it
    /// (default 10 minutes): replicas sharing the bucket, snapshot installs and backups may still
    /// read it. Zero deletes at the next collection pass; `None` never deletes (a replica that
    /// reads objects another node owns).
    pub gc_grace: Option<std::time::Duration>,
    /// A local disk cache of the data blocks point lookups fetch, between the memory block cache
    /// and `store` (default: none). It survives restarts, so a warm working set costs no GETs
    /// after one.
    pub disk_cache: Option<crate::DiskCacheOptions>,
}

impl ColdTier {
    /// Levels from L1 down in `store` under `prefix`, with the default retry policy.
    pub fn new(
        store: std::sync::Arc<dyn crate::object::ObjectStore>,
        prefix: impl Into<String>,
    ) -> Self {
        ColdTier {
            store,
            prefix: prefix.into(),
            first_level: 1,
            retry: crate::object::RetryPolicy::default(),
            gc_grace: Some(std::time::Duration::from_secs(600)),
            disk_cache: None,
        }
    }

    /// The same tier with a disk cache of up to `capacity_bytes` in `dir` (see
    /// [`DiskCacheOptions`](crate::DiskCacheOptions)).
    pub fn with_disk_cache(
        mut self,
        dir: impl Into<std::path::PathBuf>,
        capacity_bytes: u64,
    ) -> Self {
        self.disk_cache = Some(crate::DiskCacheOptions::new(dir, capacity_bytes));
        self
    }
}

impl std::fmt::Debug for ColdTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdTier")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("first_level", &self.first_level)
            .field("retry", &self.retry)
            .field("gc_grace", &self.gc_grace)
            .field("disk_cache", &self.disk_cache)
            .finish()
    }
}

/// Options of one database, fixed at [`Db::open`](crate::Db::open).
///
/// Defaults follow RocksDB's where the concept is the same (64 MiB memtable, 4 KiB blocks, L0
/// triggers 4/20/36, 256 MiB L1, ratio 10, 64 MiB files).
#[derive(Debug, Clone)]
pub struct Options {
    /// Create the directory and an empty database when none exists (default `true`).
    pub create_if_missing: bool,
    /// Fail to open when a database already exists (default `false`).
    pub error_if_exists: bool,
    /// Bytes of the active memtable before it is sealed and queued for flush (default 64 MiB).
    pub write_buffer_size: usize,
    /// Sealed memtables waiting for flush before writers stall (default 2).
    pub max_immutable_memtables: usize,
    /// Seal the memtable automatically when it is full (default `true`). Replication turns this
    /// off and calls [`Db::seal_at`](crate::Db::seal_at) at a log index instead.
    pub auto_seal: bool,
    /// Keep a write-ahead log (default `true`). Without it, writes not yet flushed are lost on a
    /// crash; [`Db::close`](crate::Db::close) flushes them.
    pub wal: bool,
    /// Target uncompressed size of a data block in bytes (default 4 KiB).
    pub block_size: usize,
    /// Keys between restart points inside a data block (default 16).
    pub block_restart_interval: usize,
    /// Block compression (default LZ4).
    pub compression: Compression,
    /// Target false-positive rate of each table's bloom filter (default 0.01).
    pub bloom_fp_rate: f64,
    /// Capacity of the block cache in bytes, when `block_cache` is not given (default 64 MiB).
    pub block_cache_bytes: usize,
    /// A block cache shared with other databases; when `None`, the database makes its own.
    pub block_cache: Option<BlockCache>,
    /// Open table readers kept in the table cache (default 1000).
    pub max_open_tables: usize,
    /// L0 files that trigger an L0 → L1 compaction (default 4).
    pub l0_compaction_trigger: usize,
    /// L0 files at which each write is delayed by a millisecond (default 20).
    pub l0_slowdown_trigger: usize,
    /// L0 files at which writes stop until compaction catches up (default 36).
    pub l0_stop_trigger: usize,
    /// Target size of L1 in bytes (default 256 MiB); each deeper level is `level_size_multiplier`
    /// times larger.
    pub max_bytes_for_level_base: u64,
    /// Size ratio between adjacent levels (default 10).
    pub level_size_multiplier: u64,
    /// Size at which compaction output is cut into a new file (default 64 MiB).
    pub target_file_size: u64,
    /// Number of levels, L0 included (default 7).
    pub num_levels: usize,
    /// Estimated bytes owed to compaction at which writes are delayed (default 64 GiB).
    pub pending_compaction_bytes_slowdown: u64,
    /// Estimated bytes owed to compaction at which writes stop (default 256 GiB).
    pub pending_compaction_bytes_stop: u64,
    /// Wall clock used for TTL expiry.
    pub clock: Arc<dyn Clock>,
    /// Keep levels from `first_level` down in an object store (default: everything local).
    pub cold_tier: Option<ColdTier>,
    /// Run as one replica of a replicated group (see `Db::apply_at` and the other replica
    /// methods): no WAL (the replication log takes its place), no automatic sealing, flushing or
    /// compaction, every table in the object store, and deleting objects only while
    /// `Db::set_object_gc(true)` (the group's leader). Requires `wal: false` and a cold tier.
    pub replicated: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            error_if_exists: false,
            write_buffer_size: 64 << 20,
            max_immutable_memtables: 2,
            auto_seal: true,
            wal: true,
            block_size: 4096,
            block_restart_interval: 16,
            compression: Compression::Lz4,
            bloom_fp_rate: 0.01,
            block_cache_bytes: 64 << 20,
            block_cache: None,
            max_open_tables: 1000,
            l0_compaction_trigger: 4,
            l0_slowdown_trigger: 20,
            l0_stop_trigger: 36,
            max_bytes_for_level_base: 256 << 20,
            level_size_multiplier: 10,
            target_file_size: 64 << 20,
            num_levels: 7,
            pending_compaction_bytes_slowdown: 64 << 30,
            pending_compaction_bytes_stop: 256 << 30,
            clock: Arc::new(SystemClock),
            cold_tier: None,
            replicated: false,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::InvalidArgument(m.to_string()));
        if self.write_buffer_size < 4096 {
            return bad("write_buffer_size must be at least 4096");
        }
        if self.block_size < 256 || self.block_size > (16 << 20) {
            return bad("block_size must be between 256 B and 16 MiB");
        }
        if self.block_restart_interval == 0 {
            return bad("block_restart_interval must be positive");
        }
        if !(self.bloom_fp_rate > 0.0 && self.bloom_fp_rate < 1.0) {
            return bad("bloom_fp_rate must be in (0, 1)");
        }
        if self.num_levels < 2 || self.num_levels > 16 {
            return bad("num_levels must be between 2 and 16");
        }
        if self.l0_compaction_trigger == 0
            || self.l0_slowdown_trigger < self.l0_compaction_trigger
            || self.l0_stop_trigger < self.l0_slowdown_trigger
        {
            return bad("need 0 < l0_compaction_trigger <= l0_slowdown_trigger <= l0_stop_trigger");
        }
        if self.max_immutable_memtables == 0 || self.max_open_tables == 0 {
            return bad("max_immutable_memtables and max_open_tables must be positive");
        }
        if let Some(c) = &self.cold_tier {
            if c.first_level == 0 || c.first_level >= self.num_levels {
                return bad("cold_tier.first_level must be between 1 and num_levels - 1");
            }
            if crate::object::validate_key(&format!("{}/sst/0.sst", c.prefix)).is_err() {
                return bad("cold_tier.prefix must be a valid object key prefix");
            }
            if c.disk_cache
                .as_ref()
                .is_some_and(|d| d.capacity_bytes < crate::MIN_DISK_CACHE_BYTES)
            {
                return bad("cold_tier.disk_cache.capacity_bytes must be at least 1 MiB");
            }
        }
        if self.replicated && (self.wal || self.cold_tier.is_none()) {
            return bad("a replicated database needs wal: false and a cold tier");
        }
        if self.level_size_multiplier < 2 || self.target_file_size < 4096 {
            return bad("level_size_multiplier must be >= 2 and target_file_size >= 4096");
        }
        Ok(())
    }
}

/// Per-write options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Wait until the write-ahead log is on stable storage (`fdatasync`) before returning.
    /// Concurrent writers share one sync (group commit).
    pub sync: bool,
}
