//! Printing the tiered benchmark's results, and its JSON file.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::args::TieredArgs;
use super::results::{FillResult, TierResult};
use super::targets::{Verdict, REFERENCE};
use crate::measure::{human_bytes, human_rate};

/// Everything a run produced; the JSON file is this.
#[derive(Debug, Serialize)]
pub struct TieredReport {
    pub tool: &'static str,
    pub args: TieredArgs,
    /// A command that repeats the run.
    pub command: String,
    pub store: String,
    pub fill: FillResult,
    /// In the order of the table: hot, warm-memory, warm-disk, cold, absent.
    pub tiers: Vec<TierResult>,
    pub targets: Vec<Verdict>,
    pub all_targets_met: bool,
    pub reference: &'static str,
}

pub fn print_header(
    out: &mut dyn Write,
    args: &TieredArgs,
    store: &str,
    run_dir: &Path,
) -> io::Result<()> {
    writeln!(out, "strata-bench tiered")?;
    writeln!(
        out,
        "  keys:     {} x {} B keys, {} B values (~50% compressible), seed {}",
        args.num, args.key_size, args.value_size, args.seed
    )?;
    writeln!(out, "  store:    {store}")?;
    let disk = if args.disk_cache_mb == 0 {
        "no disk cache".to_string()
    } else {
        format!("{} MiB disk cache", args.disk_cache_mb)
    };
    writeln!(
        out,
        "  caches:   {} MiB memory block cache, {disk}",
        args.cache_mb
    )?;
    writeln!(
        out,
        "  reads:    {} per tier on {} threads",
        args.reads, args.threads
    )?;
    writeln!(out, "  run dir:  {}", run_dir.display())?;
    writeln!(out)
}

pub fn print_fill(out: &mut dyn Write, f: &FillResult) -> io::Result<()> {
    let levels: Vec<String> = f.files_per_level.iter().map(|n| n.to_string()).collect();
    writeln!(
        out,
        "fill: {} keys in {:.2} s ({} keys/s, {:.1} MB/s), then compaction into the cold tier \
         {:.2} s",
        f.keys,
        f.write_seconds,
        human_rate(f.keys_per_sec),
        f.mb_per_sec,
        f.compact_seconds
    )?;
    writeln!(
        out,
        "      uploaded {} in {}; {} ({}) in the store; tables per level {}",
        human_bytes(f.bytes_uploaded),
        count(f.puts, "PUT"),
        count(f.objects, "object"),
        human_bytes(f.object_bytes),
        levels.join("/")
    )
}

/// `n` and the noun, in the plural unless `n` is 1.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn rate(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |r| format!("{:.1}%", 100.0 * r))
}

/// One line per tier as it finishes, so a long run shows progress in its output too.
pub fn print_tier(out: &mut dyn Write, r: &TierResult) -> io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>10} ops/s  p50 {} p99 {} p99.9 {} ms  {:.3} GETs/read  ({})",
        r.tier.name(),
        human_rate(r.ops_per_sec),
        ms(r.latency.p50_us),
        ms(r.latency.p99_us),
        ms(r.latency.p999_us),
        r.gets_per_read,
        r.tier.source()
    )
}

/// The closing table, one row per tier.
pub fn print_table(out: &mut dyn Write, tiers: &[TierResult]) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<12} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "tier",
        "reads",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "GETs/read",
        "KiB/read",
        "block $",
        "disk $"
    )?;
    for r in tiers {
        writeln!(
            out,
            "{:<12} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9.3} {:>9.2} {:>8} {:>8}",
            r.tier.name(),
            r.reads,
            human_rate(r.ops_per_sec),
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            r.gets_per_read,
            r.kib_per_read,
            rate(r.block_cache_hit_rate),
            rate(r.disk_cache_hit_rate)
        )?;
    }
    writeln!(
        out,
        "(block $ / disk $: hit rates of the memory block cache and the disk cache during the \
         tier's reads; - where it was not consulted)"
    )
}

pub fn print_targets(out: &mut dyn Write, targets: &[Verdict]) -> io::Result<()> {
    writeln!(out)?;
    writeln!(out, "targets")?;
    for t in targets {
        writeln!(
            out,
            "  [{:<6}] {:<22} {:>9.3} {:<4} (target {})",
            if t.met { "met" } else { "MISSED" },
            t.target,
            t.measured,
            t.unit,
            t.goal
        )?;
    }
    writeln!(out, "  reference: {REFERENCE}")
}

pub fn write_json(path: &Path, report: &TieredReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report).context("encoding results as JSON")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing results to {}", path.display()))
}
