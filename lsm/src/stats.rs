//! Engine statistics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::db::{lock, Inner, SuperVersion};

/// Counters updated by the write path and background work.
#[derive(Default)]
pub(crate) struct Counters {
    pub writes: AtomicU64,
    pub user_bytes: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub stalls: AtomicU64,
    pub stall_micros: AtomicU64,
    pub slowdowns: AtomicU64,
    pub flushes: AtomicU64,
    pub bytes_flushed: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub pending_compaction_bytes: AtomicU64,
    pub cold_bytes_uploaded: AtomicU64,
    pub cold_lookups: AtomicU64,
}

/// Files and bytes of one level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Number of tables.
    pub files: usize,
    /// Total size of the tables in bytes.
    pub bytes: u64,
}

/// One live table, as the current version records it ([`Db::tables`](crate::Db::tables)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Level (0 is the newest).
    pub level: usize,
    /// The table's number in this database's manifest (local files are named by it).
    pub number: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The key of its object in the cold tier; `None` for a local table.
    pub object: Option<String>,
    /// Its smallest user key.
    pub smallest: Vec<u8>,
    /// Its largest user key.
    pub largest: Vec<u8>,
    /// Entries (tombstones included).
    pub entries: u64,
}

/// A point-in-time view of the engine's counters (cumulative since open) and shape.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Per level, L0 first.
    pub levels: Vec<LevelStats>,
    /// Bytes in the active memtable.
    pub memtable_bytes: u64,
    /// Sealed memtables waiting for flush.
    pub immutable_memtables: usize,
    /// Sequence number of the last visible write.
    pub last_seq: u64,
    /// Snapshots currently held.
    pub live_snapshots: usize,
    /// Committed write batches.
    pub writes: u64,
    /// Encoded bytes of committed batches (keys, values and framing of the user's operations).
    pub user_bytes_written: u64,
    /// Bytes appended to the WAL.
    pub wal_bytes_written: u64,
    /// Writes that had to wait for flush or compaction.
    pub write_stalls: u64,
    /// Total time writers spent stalled, in microseconds.
    pub stall_micros: u64,
    /// Writes delayed by a millisecond because L0 or compaction debt neared the limit.
    pub write_slowdowns: u64,
    /// Memtables flushed.
    pub flushes: u64,
    /// Bytes of L0 tables written by flushes.
    pub bytes_flushed: u64,
    /// Compactions that rewrote data.
    pub compactions: u64,
    /// Compactions that moved a file down a level without rewriting it.
    pub trivial_moves: u64,
    /// Bytes read by compactions.
    pub bytes_compacted_read: u64,
    /// Bytes written by compactions.
    pub bytes_compacted_written: u64,
    /// Estimated bytes compaction still owes.
    pub pending_compaction_bytes: u64,
    /// Bytes of tables uploaded to the cold tier.
    pub cold_bytes_uploaded: u64,
    /// GET requests sent to the cold tier (retries included; scans', compactions' and
    /// metadata fetches' too).
    pub cold_gets: u64,
    /// Point lookups that consulted at least one cold table (its filter counts).
    pub cold_lookups: u64,
    /// Bytes received by those GETs.
    pub cold_get_bytes: u64,
    /// PUT requests sent to the cold tier (retries included).
    pub cold_puts: u64,
    /// Bytes sent by those PUTs.
    pub cold_put_bytes: u64,
    /// Cold-tier requests that failed (each attempt counts).
    pub cold_failures: u64,
    /// Obsolete objects deleted from the cold tier since open.
    pub cold_objects_deleted: u64,
    /// Obsolete objects waiting for their grace period before deletion.
    pub cold_objects_pending_deletion: u64,
    /// Block cache lookups that hit.
    pub block_cache_hits: u64,
    /// Block cache lookups that missed.
    pub block_cache_misses: u64,
    /// Bytes held by the block cache.
    pub block_cache_usage: u64,
    /// Block cache capacity in bytes.
    pub block_cache_capacity: u64,
    /// Disk cache lookups (of cold data blocks the block cache did not hold) that hit.
    pub disk_cache_hits: u64,
    /// Disk cache lookups that missed, including blocks found damaged or unreadable.
    pub disk_cache_misses: u64,
    /// Blocks added to the disk cache.
    pub disk_cache_inserts: u64,
    /// Blocks dropped from the disk cache with the segments evicted to respect its capacity.
    pub disk_cache_evictions: u64,
    /// Disk cache reads, writes and deletions that failed, and cached blocks found damaged
    /// (each a miss or a skipped insert; only the first is logged).
    pub disk_cache_errors: u64,
    /// Bytes of the disk cache's files.
    pub disk_cache_usage: u64,
    /// Disk cache capacity in bytes (0 without a disk cache).
    pub disk_cache_capacity: u64,
    /// Table cache lookups that hit.
    pub table_cache_hits: u64,
    /// Table cache lookups that opened a file.
    pub table_cache_misses: u64,
    /// (WAL + flush + compaction bytes written) / user bytes written; 0 before any write.
    pub write_amplification: f64,
}

impl Stats {
    pub(crate) fn collect(inner: &Inner, sv: &SuperVersion) -> Stats {
        let c = &inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let levels = sv
            .version
            .levels
            .iter()
            .map(|fs| LevelStats {
                files: fs.len(),
                bytes: fs.iter().map(|f| f.meta.size).sum(),
            })
            .collect();
        let user = g(&c.user_bytes);
        let written = g(&c.wal_bytes) + g(&c.bytes_flushed) + g(&c.compaction_bytes_written);
        let blocks = inner.tables.blocks();
        let disk = inner.tables.disk();
        let d = |f: fn(&crate::diskcache::DiskCache) -> u64| disk.map_or(0, f);
        Stats {
            levels,
            memtable_bytes: sv.mem.approximate_bytes() as u64,
            immutable_memtables: sv.imms.len(),
            last_seq: inner.visible_seq.load(Ordering::Acquire),
            live_snapshots: lock(&inner.snapshots).values().sum(),
            writes: g(&c.writes),
            user_bytes_written: user,
            wal_bytes_written: g(&c.wal_bytes),
            write_stalls: g(&c.stalls),
            stall_micros: g(&c.stall_micros),
            write_slowdowns: g(&c.slowdowns),
            flushes: g(&c.flushes),
            bytes_flushed: g(&c.bytes_flushed),
            compactions: g(&c.compactions),
            trivial_moves: g(&c.trivial_moves),
            bytes_compacted_read: g(&c.compaction_bytes_read),
            bytes_compacted_written: g(&c.compaction_bytes_written),
            pending_compaction_bytes: g(&c.pending_compaction_bytes),
            cold_bytes_uploaded: g(&c.cold_bytes_uploaded),
            cold_gets: g(&inner.object_counters.gets),
            cold_lookups: g(&c.cold_lookups),
            cold_get_bytes: g(&inner.object_counters.get_bytes),
            cold_puts: g(&inner.object_counters.puts),
            cold_put_bytes: g(&inner.object_counters.put_bytes),
            cold_failures: g(&inner.object_counters.failures),
            cold_objects_deleted: inner.tables.objects_deleted(),
            cold_objects_pending_deletion: inner.tables.garbage_pending() as u64,
            block_cache_hits: blocks.hits(),
            block_cache_misses: blocks.misses(),
            block_cache_usage: blocks.usage(),
            block_cache_capacity: blocks.capacity(),
            disk_cache_hits: d(crate::diskcache::DiskCache::hits),
            disk_cache_misses: d(crate::diskcache::DiskCache::misses),
            disk_cache_inserts: d(crate::diskcache::DiskCache::inserts),
            disk_cache_evictions: d(crate::diskcache::DiskCache::evictions),
            disk_cache_errors: d(crate::diskcache::DiskCache::errors),
            disk_cache_usage: d(crate::diskcache::DiskCache::usage),
            disk_cache_capacity: d(crate::diskcache::DiskCache::capacity),
            table_cache_hits: inner.tables.hits(),
            table_cache_misses: inner.tables.misses(),
            write_amplification: if user == 0 {
                0.0
            } else {
                written as f64 / user as f64
            },
        }
    }

    /// Total bytes of tables over all levels.
    pub fn total_sst_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.bytes).sum()
    }

    /// Cold-tier GETs per point lookup that consulted a cold table (0 when none did). Exact
    /// when only point lookups ran since the counters were read last; see `cold_gets`.
    pub fn cold_gets_per_lookup(&self) -> f64 {
        if self.cold_lookups == 0 {
            0.0
        } else {
            self.cold_gets as f64 / self.cold_lookups as f64
        }
    }

    /// Block cache hit rate in [0, 1] (0 when unused).
    pub fn block_cache_hit_rate(&self) -> f64 {
        let t = self.block_cache_hits + self.block_cache_misses;
        if t == 0 {
            0.0
        } else {
            self.block_cache_hits as f64 / t as f64
        }
    }

    /// Disk cache hit rate in [0, 1] (0 when unused or not configured).
    pub fn disk_cache_hit_rate(&self) -> f64 {
        let t = self.disk_cache_hits + self.disk_cache_misses;
        if t == 0 {
            0.0
        } else {
            self.disk_cache_hits as f64 / t as f64
        }
    }
}
