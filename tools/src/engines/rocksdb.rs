//! RocksDB through the `rocksdb` crate, configured like strata's defaults (64 MiB memtable,
//! 4 KiB blocks, LZ4, a bloom filter of about 1% false positives, an LRU block cache).

use std::path::Path;

use anyhow::{Context, Result};
use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, CompactOptions, DBCompressionType,
    Options, WaitForCompactOptions, WriteOptions, DB,
};

use super::{consume, Engine, EngineConfig};

pub struct RocksEngine {
    db: DB,
    /// Kept because the statistics object lives in the options: the tickers behind
    /// [`Engine::bytes_written`] are read through it.
    opts: Options,
    sync_write: WriteOptions,
}

impl RocksEngine {
    pub fn open(dir: &Path, config: &EngineConfig) -> Result<Self> {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(config.cache_bytes));
        // 10 bits per key is RocksDB's usual setting and gives about 1% false positives, the same
        // rate strata's filters are built for.
        table.set_bloom_filter(10.0, false);
        table.set_block_size(4096);

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_block_based_table_factory(&table);
        // Tickers only, no histograms or timers: enough for write amplification at negligible
        // cost to the measured operations.
        opts.enable_statistics();
        opts.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);

        let db = DB::open(&opts, dir)
            .with_context(|| format!("opening RocksDB at {}", dir.display()))?;
        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(true);
        Ok(RocksEngine {
            db,
            opts,
            sync_write,
        })
    }

    fn ticker(&self, t: Ticker) -> u64 {
        self.opts.get_ticker_count(t)
    }

    fn int_property(&self, name: &str) -> Result<u64> {
        Ok(self.db.property_int_value(name)?.unwrap_or(0))
    }
}

impl Engine for RocksEngine {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put(key, value)?)
    }

    fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put_opt(key, value, &self.sync_write)?)
    }

    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        // Pinned: the value is read in place from the block cache, as strata and fjall do too.
        Ok(self.db.get_pinned(key)?.map(|v| consume(&v)))
    }

    fn seek_next(&self, key: &[u8], n: usize) -> Result<usize> {
        let mut it = self.db.raw_iterator();
        it.seek(key);
        let mut read = 0;
        while read < n && it.valid() {
            if let Some((k, v)) = it.item() {
                consume(k);
                consume(v);
            }
            read += 1;
            it.next();
        }
        it.status()?;
        Ok(read)
    }

    fn scan_forward(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64> {
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        let mut n = 0;
        while let Some((k, v)) = it.item() {
            visit(k, v);
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    fn scan_reverse(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64> {
        let mut it = self.db.raw_iterator();
        it.seek_to_last();
        let mut n = 0;
        while let Some((k, v)) = it.item() {
            visit(k, v);
            n += 1;
            it.prev();
        }
        it.status()?;
        Ok(n)
    }

    fn flush(&self) -> Result<()> {
        Ok(self.db.flush()?)
    }

    fn compact(&self) -> Result<()> {
        // db_bench's default (IfHaveCompactionFilter) leaves data already in the bottommost
        // level alone, and a lone L0 file then counts as bottommost: the "compaction" does
        // nothing. Strata's and fjall's full compactions rewrite every table once, which
        // ForceOptimized matches. The call reports no error, so a failed job is picked up from
        // the property instead.
        let mut full = CompactOptions::default();
        full.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
        self.db.compact_range_opt::<&[u8], &[u8]>(None, None, &full);
        let errors = self.int_property("rocksdb.background-errors")?;
        anyhow::ensure!(errors == 0, "RocksDB reported {errors} background errors");
        Ok(())
    }

    fn settle(&self) -> Result<()> {
        self.db.flush()?;
        let mut wait = WaitForCompactOptions::default();
        wait.set_timeout(super::SETTLE_TIMEOUT.as_micros() as u64);
        // A timeout just means the next phase starts with compactions still running, which the
        // other engines are allowed too; only real failures are errors.
        match self.db.wait_for_compact(&wait) {
            Err(e) if e.kind() == rocksdb::ErrorKind::TimedOut => Ok(()),
            other => Ok(other?),
        }
    }

    fn bytes_written(&self) -> Option<u64> {
        Some(
            self.ticker(Ticker::WalFileBytes)
                + self.ticker(Ticker::FlushWriteBytes)
                + self.ticker(Ticker::CompactWriteBytes),
        )
    }

    fn stats_text(&self) -> String {
        let hits = self.ticker(Ticker::BlockCacheHit);
        let misses = self.ticker(Ticker::BlockCacheMiss);
        let hit_rate = if hits + misses == 0 {
            "n/a".to_string()
        } else {
            format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
        };
        let sst = self
            .int_property("rocksdb.total-sst-files-size")
            .unwrap_or(0);
        let l0 = self
            .db
            .property_value("rocksdb.num-files-at-level0")
            .ok()
            .flatten()
            .unwrap_or_default();
        format!(
            "block_cache_hit={hit_rate} stall_ms={} sst_bytes={sst} l0_files={l0}",
            self.ticker(Ticker::StallMicros) / 1000
        )
    }

    fn close(self: Box<Self>) -> Result<()> {
        // Drops queued compactions and waits out running ones, so that no thread of a closed
        // database competes with the phases that follow.
        self.db.cancel_all_background_work(true);
        drop(self);
        Ok(())
    }
}
