//! What the tiered benchmark measures: the fill, and one result per tier of reads.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::measure::{Latencies, LatencySummary};

/// Where the reads of a phase are served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Keys still in the memtable.
    Hot,
    /// Cold keys whose blocks the memory block cache holds.
    WarmMemory,
    /// Cold keys whose blocks the disk cache holds (memory cache empty after a reopen).
    WarmDisk,
    /// Keys in the object store, every cache empty.
    Cold,
    /// Keys that were never written, next to cold ones.
    Absent,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::WarmMemory => "warm-memory",
            Tier::WarmDisk => "warm-disk",
            Tier::Cold => "cold",
            Tier::Absent => "absent",
        }
    }

    /// Where this tier's reads are meant to be answered from.
    pub fn source(self) -> &'static str {
        match self {
            Tier::Hot => "memtable",
            Tier::WarmMemory => "memory block cache",
            Tier::WarmDisk => "disk cache, memory cache empty",
            Tier::Cold => "object store, caches empty",
            Tier::Absent => "bloom filters of cold tables",
        }
    }
}

/// The fill that puts the keys into the cold tier.
#[derive(Debug, Clone, Serialize)]
pub struct FillResult {
    pub keys: u64,
    /// Time to write the keys (into the memtable and WAL, flushes running behind).
    pub write_seconds: f64,
    pub keys_per_sec: f64,
    /// Key and value bytes per second.
    pub mb_per_sec: f64,
    /// Time of the full compaction that moves everything into the cold levels, uploads
    /// included.
    pub compact_seconds: f64,
    /// PUT requests to the store (multipart parts each count).
    pub puts: u64,
    /// Bytes those PUTs sent.
    pub bytes_uploaded: u64,
    /// Objects under the database's prefix afterwards (obsolete ones still in their grace
    /// period included), and their bytes.
    pub objects: u64,
    pub object_bytes: u64,
    /// Tables per level, L0 first.
    pub files_per_level: Vec<usize>,
}

/// The reads of one tier.
#[derive(Debug, Clone, Serialize)]
pub struct TierResult {
    pub tier: Tier,
    pub source: &'static str,
    pub reads: u64,
    pub threads: u64,
    pub seconds: f64,
    /// Reads per second over all threads.
    pub ops_per_sec: f64,
    /// Per-read latency, in microseconds.
    pub latency: LatencySummary,
    /// GET requests sent to the object store during the phase (retries included).
    pub gets: u64,
    pub gets_per_read: f64,
    /// Reads that consulted at least one cold table (its filter counts): all of them for the
    /// cold, warm and absent tiers, none for hot.
    pub cold_lookups: u64,
    /// Bytes those GETs received.
    pub get_bytes: u64,
    pub kib_per_read: f64,
    /// Hits / lookups of the memory block cache during the phase; `None` without lookups.
    pub block_cache_hit_rate: Option<f64>,
    /// Hits / lookups of the disk cache during the phase; `None` without lookups.
    pub disk_cache_hit_rate: Option<f64>,
    /// (quantile, latency in ms), for plotting.
    pub percentiles: Vec<(f64, f64)>,
}

/// Counter differences over one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deltas {
    pub gets: u64,
    pub cold_lookups: u64,
    pub get_bytes: u64,
    pub block_hits: u64,
    pub block_misses: u64,
    pub disk_hits: u64,
    pub disk_misses: u64,
}

impl Deltas {
    pub fn between(before: &lsm::Stats, after: &lsm::Stats) -> Deltas {
        Deltas {
            gets: after.cold_gets - before.cold_gets,
            cold_lookups: after.cold_lookups - before.cold_lookups,
            get_bytes: after.cold_get_bytes - before.cold_get_bytes,
            block_hits: after.block_cache_hits - before.block_cache_hits,
            block_misses: after.block_cache_misses - before.block_cache_misses,
            disk_hits: after.disk_cache_hits - before.disk_cache_hits,
            disk_misses: after.disk_cache_misses - before.disk_cache_misses,
        }
    }
}

/// `hits / (hits + misses)`, or `None` when there was no lookup.
pub fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

impl TierResult {
    pub fn new(
        tier: Tier,
        threads: u64,
        seconds: f64,
        latencies: &Latencies,
        d: Deltas,
    ) -> Result<TierResult> {
        let reads = latencies.count();
        let latency = latencies
            .summary()
            .with_context(|| format!("{}: no read was timed", tier.name()))?;
        let per_read = |n: u64| n as f64 / reads as f64;
        Ok(TierResult {
            tier,
            source: tier.source(),
            reads,
            threads,
            seconds,
            ops_per_sec: reads as f64 / seconds.max(1e-9),
            latency,
            gets: d.gets,
            gets_per_read: per_read(d.gets),
            cold_lookups: d.cold_lookups,
            get_bytes: d.get_bytes,
            kib_per_read: per_read(d.get_bytes) / 1024.0,
            block_cache_hit_rate: hit_rate(d.block_hits, d.block_misses),
            disk_cache_hit_rate: hit_rate(d.disk_hits, d.disk_misses),
            percentiles: percentile_curve(latencies),
        })
    }
}

/// Latency (ms) at quantiles spaced a tenth of a "nine" apart (0, 20.6%, 36.9%, ... 90%, ...
/// 99%, ...) short of 1 - 1/n, where the samples run out; the maximum is drawn there.
pub fn percentile_curve(l: &Latencies) -> Vec<(f64, f64)> {
    let n = l.count();
    if n == 0 {
        return Vec::new();
    }
    // In nines: quantile 1 - 1/n sits at log10(n).
    let top = (n as f64).log10();
    let mut points: Vec<(f64, f64)> = (0u32..)
        .map(|k| f64::from(k) / 10.0)
        // Half a step short of the end, so the last grid point is not on top of the maximum.
        .take_while(|nines| *nines < top - 0.05)
        .map(|nines| {
            let q = 1.0 - 10f64.powf(-nines);
            (q, l.quantile_us(q) / 1000.0)
        })
        .collect();
    points.push((1.0 - 1.0 / n as f64, l.quantile_us(1.0) / 1000.0));
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn curve_rises_to_the_maximum_and_rates_divide() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let c = percentile_curve(&l);
        assert_eq!(c.first().unwrap().0, 0.0);
        assert_eq!(c.len(), 31); // 0 to 2.9 nines, then the maximum at 3
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!((c.last().unwrap().1 - 1.0).abs() < 0.01);
        assert!((c.last().unwrap().0 - 0.999).abs() < 1e-12);
        // Where log10(n) is not a multiple of the step, the grid still stops short of the end.
        let mut two = Latencies::new();
        for us in 1..=2000u64 {
            two.record(Duration::from_micros(us));
        }
        let c = percentile_curve(&two);
        assert!(c.windows(2).all(|w| w[1].0 - w[0].0 > 1e-5), "{c:?}");

        let r = TierResult::new(
            Tier::Cold,
            4,
            2.0,
            &l,
            Deltas {
                gets: 970,
                get_bytes: 970 * 2048,
                block_hits: 30,
                block_misses: 970,
                ..Deltas::default()
            },
        )
        .unwrap();
        assert_eq!(r.reads, 1000);
        assert_eq!(r.ops_per_sec, 500.0);
        assert!((r.gets_per_read - 0.97).abs() < 1e-12);
        assert!((r.kib_per_read - 0.97 * 2.0).abs() < 1e-12);
        assert_eq!(r.block_cache_hit_rate, Some(0.03));
        assert_eq!(r.disk_cache_hit_rate, None);
    }
}
