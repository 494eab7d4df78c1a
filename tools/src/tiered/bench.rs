//! The database on its cold tier: opening it, filling it, and the timed read loops of each tier.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lsm::{ColdTier, Db, Options, WriteBatch};
use rand::seq::SliceRandom;
use rand::Rng;

use super::args::TieredArgs;
use super::results::{Deltas, FillResult, Tier, TierResult};
use super::store::Backend;
use crate::engines::wait_until_idle;
use crate::measure::{split_across_threads, Latencies, Progress};
use crate::workload::{Stream, Workload};

/// Keys per write batch of the fill: large enough that batching, not the per-write path, sets
/// the pace; small enough to keep the progress bar moving.
const FILL_BATCH: usize = 1000;

/// Everything the phases share.
pub struct Bench<'a> {
    pub args: &'a TieredArgs,
    /// Key indices `0..args.num` are filled; `args.num..args.num + args.reads` are the hot keys.
    pub workload: Workload,
    pub backend: Backend,
    pub db_dir: PathBuf,
    pub disk_cache_dir: PathBuf,
    pub progress: bool,
}

impl Bench<'_> {
    /// Opens (creating) the database with everything from L1 down in the object store.
    pub fn open(&self) -> Result<Db> {
        let mut tier = ColdTier::new(self.backend.store.clone(), self.backend.prefix.clone());
        if self.args.disk_cache_mb > 0 {
            tier = tier.with_disk_cache(&self.disk_cache_dir, self.args.disk_cache_mb << 20);
        }
        let options = Options {
            block_cache_bytes: self.args.cache_mb << 20,
            cold_tier: Some(tier),
            ..Options::default()
        };
        Db::open(&self.db_dir, options)
            .with_context(|| format!("opening the database at {}", self.db_dir.display()))
    }

    /// Writes every key once in a seeded random order, then compacts everything into the cold
    /// levels and waits for background work to stop.
    pub fn fill(&self, db: &Db) -> Result<FillResult> {
        let w = &self.workload;
        let num = self.args.num;
        let mut order: Vec<u64> = (0..num).collect();
        order.shuffle(&mut w.rng(Stream::FillOrder, 0));
        let mut key = w.key_buf();

        let p = Progress::bar("fill", num, self.progress);
        let start = Instant::now();
        for chunk in order.chunks(FILL_BATCH) {
            let mut batch = WriteBatch::new();
            for &i in chunk {
                batch.put(w.key(i, &mut key), w.value(i));
            }
            db.write(batch).context("writing a fill batch")?;
            p.advance(chunk.len() as u64);
        }
        let write_seconds = start.elapsed().as_secs_f64().max(1e-9);
        p.finish();

        let p = Progress::spinner("fill: compacting into the cold tier", self.progress);
        let start = Instant::now();
        let compacted = db.compact_range::<&[u8], _>(..).context("compacting");
        let idle = compacted.and_then(|()| {
            wait_until_idle(|| {
                let s = db.stats();
                Ok(s.immutable_memtables > 0 || s.pending_compaction_bytes > 0)
            })
        });
        p.finish();
        idle?;
        let compact_seconds = start.elapsed().as_secs_f64();

        let s = db.stats();
        let (objects, object_bytes) = self.backend.objects()?;
        Ok(FillResult {
            keys: num,
            write_seconds,
            keys_per_sec: num as f64 / write_seconds,
            mb_per_sec: w.user_bytes(num) as f64 / 1e6 / write_seconds,
            compact_seconds,
            puts: s.cold_puts,
            bytes_uploaded: s.cold_put_bytes,
            objects,
            object_bytes,
            files_per_level: s.levels.iter().map(|l| l.files).collect(),
        })
    }

    /// Writes the hot keys; they stay in the memtable, far below its flush size.
    pub fn write_hot(&self, db: &Db) -> Result<()> {
        let w = &self.workload;
        let mut key = w.key_buf();
        let mut batch = WriteBatch::new();
        for i in self.args.num..self.args.num + self.args.reads {
            batch.put(w.key(i, &mut key), w.value(i));
        }
        db.write(batch).context("writing the hot keys")
    }

    /// `args.reads` point reads of `tier`'s keys on `args.threads` threads, each timed.
    ///
    /// The cold and both warm tiers read the same keys (the same seeded streams, split the same
    /// way between threads), so the warm phases find exactly the blocks the cold one fetched.
    pub fn read(&self, db: &Db, tier: Tier) -> Result<TierResult> {
        let (total, threads) = (self.args.reads, self.args.threads);
        let p = Progress::bar(tier.name(), total, self.progress);
        let before = db.stats();
        let start = Instant::now();
        let per_thread = split_across_threads(threads, total, |t, ops| {
            self.read_loop(db, tier, ops, t, &p)
        });
        let seconds = start.elapsed().as_secs_f64();
        p.finish();
        let after = db.stats();

        let mut latencies = Latencies::new();
        for l in per_thread {
            latencies.merge(&l?);
        }
        TierResult::new(
            tier,
            threads,
            seconds,
            &latencies,
            Deltas::between(&before, &after),
        )
    }

    fn read_loop(
        &self,
        db: &Db,
        tier: Tier,
        ops: u64,
        lane: u64,
        progress: &Progress,
    ) -> Result<Latencies> {
        let w = &self.workload;
        let num = self.args.num;
        let (stream, keys) = match tier {
            Tier::Hot => (Stream::HotKeys, num..num + self.args.reads),
            Tier::Absent => (Stream::MissingKeys, 0..num),
            Tier::Cold | Tier::WarmMemory | Tier::WarmDisk => (Stream::ReadKeys, 0..num),
        };
        let mut rng = w.rng(stream, lane);
        let mut key = if tier == Tier::Absent {
            w.missing_key_buf()
        } else {
            w.key_buf()
        };
        let mut lat = Latencies::new();
        for _ in 0..ops {
            let i = rng.gen_range(keys.clone());
            let k = if tier == Tier::Absent {
                w.missing_key(i, &mut key)
            } else {
                w.key(i, &mut key)
            };
            let t = Instant::now();
            let got = db.get(k);
            lat.record(t.elapsed());
            let got = got.with_context(|| format!("reading key {}", String::from_utf8_lossy(k)))?;
            // Checked outside the timed region: a wrong answer must not pass as a fast one.
            match (tier, got) {
                (Tier::Absent, None) => {}
                (Tier::Absent, Some(_)) => {
                    bail!("absent key {} was found", String::from_utf8_lossy(k))
                }
                (_, Some(v)) if v.as_ref() == w.value(i) => {}
                (_, Some(_)) => bail!("key {} has a wrong value", String::from_utf8_lossy(k)),
                (_, None) => bail!("key {} was not found", String::from_utf8_lossy(k)),
            }
            progress.advance(1);
        }
        Ok(lat)
    }
}
