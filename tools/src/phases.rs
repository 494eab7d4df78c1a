//! The timed loops of the benchmarks. Each one is engine-agnostic: the same code, and so the
//! same per-operation overhead, runs against every engine.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::Rng;

use crate::engines::{consume, Engine};
use crate::measure::{split_across_threads, Latencies, Progress, PROGRESS_STEP};
use crate::workload::{Stream, Workload};

/// What a timed loop produced.
pub struct Measured {
    pub ops: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Key and value bytes moved (written by fills, read by scans).
    pub bytes: u64,
}

impl Measured {
    fn new(ops: u64, elapsed: Duration, latencies: Latencies, bytes: u64) -> Self {
        Measured {
            ops,
            elapsed,
            latencies,
            bytes,
        }
    }
}

/// How a fill picks its keys.
#[derive(Debug, Clone, Copy)]
pub enum FillOrder {
    Sequential,
    /// Each key once, in a seeded random order.
    Shuffled,
    /// `count` keys drawn at random (with repeats) from the key space, each written with sync.
    RandomSynced {
        count: u64,
    },
}

pub fn fill(
    db: &dyn Engine,
    w: &Workload,
    order: FillOrder,
    progress: &Progress,
) -> Result<Measured> {
    let permutation = matches!(order, FillOrder::Shuffled).then(|| w.shuffled_indices());
    let (count, synced) = match order {
        FillOrder::RandomSynced { count } => (count, true),
        _ => (w.num, false),
    };
    let mut sync_rng = w.rng(Stream::SyncKeys, 0);
    let mut key = w.key_buf();
    let mut lat = Latencies::new();

    let start = Instant::now();
    for op in 0..count {
        let i = match &permutation {
            Some(p) => p[op as usize],
            None if synced => sync_rng.gen_range(0..w.num),
            None => op,
        };
        let k = w.key(i, &mut key);
        let v = w.value(i);
        let t = Instant::now();
        if synced {
            db.put_sync(k, v)?;
        } else {
            db.put(k, v)?;
        }
        lat.record(t.elapsed());
        if op % PROGRESS_STEP == PROGRESS_STEP - 1 {
            progress.advance(PROGRESS_STEP);
        }
    }
    let elapsed = start.elapsed();
    Ok(Measured::new(count, elapsed, lat, w.user_bytes(count)))
}

/// Point lookups of keys drawn uniformly at random, on `threads` threads sharing `total` gets.
/// With `missing`, every key looked up is absent and a hit is an error.
pub fn read_random(
    db: &dyn Engine,
    w: &Workload,
    total: u64,
    threads: u64,
    missing: bool,
    progress: &Progress,
) -> Result<Measured> {
    let stream = if missing {
        Stream::MissingKeys
    } else {
        Stream::ReadKeys
    };
    let start = Instant::now();
    let per_thread = split_across_threads(threads, total, |t, ops| {
        read_loop(db, w, ops, w.rng(stream, t), missing, progress)
    });
    let elapsed = start.elapsed();

    let mut lat = Latencies::new();
    let mut found = 0;
    for result in per_thread {
        let (hits, thread_lat) = result?;
        found += hits;
        lat.merge(&thread_lat);
    }
    if !missing && found != total {
        bail!(
            "{} of {total} keys that were written were not found",
            total - found
        );
    }
    Ok(Measured::new(total, elapsed, lat, 0))
}

fn read_loop(
    db: &dyn Engine,
    w: &Workload,
    ops: u64,
    mut rng: rand_chacha::ChaCha8Rng,
    missing: bool,
    progress: &Progress,
) -> Result<(u64, Latencies)> {
    let mut key = if missing {
        w.missing_key_buf()
    } else {
        w.key_buf()
    };
    let mut lat = Latencies::new();
    let mut found = 0;
    for op in 0..ops {
        let i = rng.gen_range(0..w.num);
        let k = if missing {
            w.missing_key(i, &mut key)
        } else {
            w.key(i, &mut key)
        };
        let t = Instant::now();
        let hit = db.get(k)?;
        lat.record(t.elapsed());
        match hit {
            Some(_) if missing => bail!("readmissing found key {}", String::from_utf8_lossy(k)),
            Some(_) => found += 1,
            None => {}
        }
        if op % PROGRESS_STEP == PROGRESS_STEP - 1 {
            progress.advance(PROGRESS_STEP);
        }
    }
    Ok((found, lat))
}

/// Seeks to a random existing key and reads the `nexts` entries from there; an operation is one
/// seek together with its reads.
pub fn seek_random(
    db: &dyn Engine,
    w: &Workload,
    seeks: u64,
    nexts: usize,
    progress: &Progress,
) -> Result<Measured> {
    let mut rng = w.rng(Stream::SeekKeys, 0);
    let mut key = w.key_buf();
    let mut lat = Latencies::new();
    let start = Instant::now();
    for op in 0..seeks {
        let k = w.key(rng.gen_range(0..w.num), &mut key);
        let t = Instant::now();
        let read = db.seek_next(k, nexts)?;
        lat.record(t.elapsed());
        if read == 0 {
            bail!(
                "seek to existing key {} found nothing",
                String::from_utf8_lossy(k)
            );
        }
        if op % PROGRESS_STEP == PROGRESS_STEP - 1 {
            progress.advance(PROGRESS_STEP);
        }
    }
    Ok(Measured::new(seeks, start.elapsed(), lat, 0))
}

/// A full scan; its operations are keys. Per-key latencies would mostly measure the clock, so
/// none are recorded.
pub fn scan(db: &dyn Engine, reverse: bool, progress: &Progress) -> Result<Measured> {
    let mut bytes = 0u64;
    let mut until_tick = PROGRESS_STEP;
    let mut visit = |k: &[u8], v: &[u8]| {
        bytes += (consume(k) + consume(v)) as u64;
        until_tick -= 1;
        if until_tick == 0 {
            until_tick = PROGRESS_STEP;
            progress.advance(PROGRESS_STEP);
        }
    };
    let start = Instant::now();
    let keys = if reverse {
        db.scan_reverse(&mut visit)?
    } else {
        db.scan_forward(&mut visit)?
    };
    Ok(Measured::new(
        keys,
        start.elapsed(),
        Latencies::new(),
        bytes,
    ))
}

/// One full compaction, timed as a single operation (percentiles of one sample would only
/// repeat its time, so none are recorded).
pub fn compact(db: &dyn Engine) -> Result<Measured> {
    // Flushed outside the timer: some engines' full compaction flushes the memtable itself and
    // some does not, and only the compaction is to be compared.
    db.flush()?;
    let start = Instant::now();
    db.compact()?;
    Ok(Measured::new(1, start.elapsed(), Latencies::new(), 0))
}
