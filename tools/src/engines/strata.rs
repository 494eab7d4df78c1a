//! Strata's own LSM engine, with its defaults except for the block cache size.

use std::path::Path;

use anyhow::{Context, Result};
use lsm::{Db, Options, WriteBatch, WriteOptions};

use super::{consume, wait_until_idle, Engine, EngineConfig};

pub struct StrataEngine {
    db: Db,
}

impl StrataEngine {
    pub fn open(dir: &Path, config: &EngineConfig) -> Result<Self> {
        let options = Options {
            block_cache_bytes: config.cache_bytes,
            ..Options::default()
        };
        let db = Db::open(dir, options)
            .with_context(|| format!("opening strata's lsm at {}", dir.display()))?;
        Ok(StrataEngine { db })
    }
}

impl Engine for StrataEngine {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put(key, value)?)
    }

    fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        Ok(self.db.write_with(batch, &WriteOptions { sync: true })?)
    }

    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.db.get(key)?.map(|v| consume(&v)))
    }

    fn seek_next(&self, key: &[u8], n: usize) -> Result<usize> {
        let mut read = 0;
        for entry in self.db.range(key..).take(n) {
            let (k, v) = entry?;
            consume(&k);
            consume(&v);
            read += 1;
        }
        Ok(read)
    }

    fn scan_forward(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64> {
        let mut n = 0;
        for entry in self.db.iter() {
            let (k, v) = entry?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn scan_reverse(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64> {
        let mut n = 0;
        for entry in self.db.iter().rev() {
            let (k, v) = entry?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn flush(&self) -> Result<()> {
        Ok(self.db.flush()?)
    }

    fn compact(&self) -> Result<()> {
        Ok(self.db.compact_range::<&[u8], _>(..)?)
    }

    fn settle(&self) -> Result<()> {
        self.db.flush()?;
        // Pending compaction bytes are non-zero exactly while some level is over its target,
        // which is when the compaction thread has work, and drop only once its output is
        // installed.
        wait_until_idle(|| {
            let s = self.db.stats();
            Ok(s.immutable_memtables > 0 || s.pending_compaction_bytes > 0)
        })
    }

    fn bytes_written(&self) -> Option<u64> {
        let s = self.db.stats();
        Some(s.wal_bytes_written + s.bytes_flushed + s.bytes_compacted_written)
    }

    fn stats_text(&self) -> String {
        let s = self.db.stats();
        let hit_rate = if s.block_cache_hits + s.block_cache_misses == 0 {
            "n/a".to_string()
        } else {
            format!("{:.1}%", 100.0 * s.block_cache_hit_rate())
        };
        let files: Vec<String> = s.levels.iter().map(|l| l.files.to_string()).collect();
        format!(
            "block_cache_hit={hit_rate} stall_ms={} stalls={} slowdowns={} compactions={} \
             sst_bytes={} files_per_level={} own_w-amp={:.2}",
            s.stall_micros / 1000,
            s.write_stalls,
            s.write_slowdowns,
            s.compactions,
            s.total_sst_bytes(),
            files.join("/"),
            s.write_amplification
        )
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.db.close()?)
    }
}
