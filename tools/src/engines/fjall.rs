//! fjall with its defaults, except for a block cache of the benchmark's size.

use std::path::Path;

use anyhow::{Context, Result};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{consume, wait_until_idle, Engine, EngineConfig};

pub struct FjallEngine {
    db: Database,
    ks: Keyspace,
}

impl FjallEngine {
    pub fn open(dir: &Path, config: &EngineConfig) -> Result<Self> {
        let db = Database::builder(dir)
            .cache_size(config.cache_bytes as u64)
            .open()
            .with_context(|| format!("opening fjall at {}", dir.display()))?;
        let ks = db
            .keyspace("bench", KeyspaceCreateOptions::default)
            .context("creating the fjall keyspace")?;
        Ok(FjallEngine { db, ks })
    }

    fn scan(
        &self,
        iter: impl Iterator<Item = fjall::Guard>,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<u64> {
        let mut n = 0;
        for guard in iter {
            let (k, v) = guard.into_inner()?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }
}

impl Engine for FjallEngine {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.ks.insert(key, value)?)
    }

    fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        // SyncData is fdatasync, which is what strata's `sync` and RocksDB's `sync` (with its
        // default use_fsync=false) do; SyncAll would add a metadata fsync the others skip.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&self.ks, key, value);
        Ok(batch.commit()?)
    }

    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.ks.get(key)?.map(|v| consume(&v)))
    }

    fn seek_next(&self, key: &[u8], n: usize) -> Result<usize> {
        let mut read = 0;
        for guard in self.ks.range(key..).take(n) {
            let (k, v) = guard.into_inner()?;
            consume(&k);
            consume(&v);
            read += 1;
        }
        Ok(read)
    }

    fn scan_forward(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64> {
        self.scan(self.ks.iter(), visit)
    }

    fn scan_reverse(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64> {
        self.scan(self.ks.iter().rev(), visit)
    }

    fn flush(&self) -> Result<()> {
        Ok(self.ks.rotate_memtable_and_wait()?)
    }

    fn compact(&self) -> Result<()> {
        // major_compact only merges table files; flushing first makes it cover all data, as
        // RocksDB's and strata's full compactions do.
        self.ks.rotate_memtable_and_wait()?;
        Ok(self.ks.major_compact()?)
    }

    fn settle(&self) -> Result<()> {
        self.ks.rotate_memtable_and_wait()?;
        wait_until_idle(
            || Ok(self.db.active_compactions() > 0 || self.db.outstanding_flushes() > 0),
        )
    }

    fn bytes_written(&self) -> Option<u64> {
        // fjall counts neither flushed nor compacted bytes in its public API.
        None
    }

    fn stats_text(&self) -> String {
        format!(
            "tables={} l0_tables={} compactions={} compacting_ms={} cache_bytes={}",
            self.ks.table_count(),
            self.ks.l0_table_count(),
            self.db.compactions_completed(),
            self.db.time_compacting().as_millis(),
            self.db.cache_size(),
        )
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db
            .persist(PersistMode::SyncAll)
            .context("persisting the fjall journal")?;
        drop(self);
        Ok(())
    }
}
