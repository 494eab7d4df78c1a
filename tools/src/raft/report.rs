//! Printing the raft benchmark's results, and its JSON file.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::args::RaftArgs;
use super::cluster::{KEEP_BEHIND_SNAPSHOT, NODES};
use super::results::{BaselineResult, LogSummary, PhaseResult, RaftReport};
use crate::measure::{human_bytes, human_rate, LatencySummary};

pub fn print_header(out: &mut dyn Write, args: &RaftArgs, run_dir: &Path) -> io::Result<()> {
    let clients: Vec<String> = args.clients.iter().map(u64::to_string).collect();
    writeln!(out, "strata-bench raft")?;
    writeln!(
        out,
        "  group:    {NODES} voters in one process, in-process transport, one object store \
         directory; tokio runtime of {} threads",
        args.runtime_threads
    )?;
    writeln!(
        out,
        "  writes:   {} timed per phase (+{} warm-up), one put each, at {} concurrent clients",
        args.writes,
        args.warmup,
        clients.join(" / ")
    )?;
    writeln!(
        out,
        "  keys:     random of {} x {} B keys, {} B values, seed {}; memtables {} MiB",
        args.keys, args.key_size, args.value_size, args.seed, args.memtable_mb
    )?;
    writeln!(
        out,
        "  baseline: {} appends of {} B + fdatasync, one at a time",
        args.baseline_ops, args.baseline_record
    )?;
    writeln!(out, "  run dir:  {}", run_dir.display())?;
    writeln!(out)
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn latency_cells(l: &LatencySummary) -> String {
    format!(
        "p50 {} p99 {} p99.9 {} ms",
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.p999_us)
    )
}

pub fn print_baseline(out: &mut dyn Write, b: &BaselineResult) -> io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>8} ops/s   {}",
        "raw fsync",
        human_rate(b.ops_per_sec),
        latency_cells(&b.latency)
    )
}

/// One line per phase as it finishes.
pub fn print_phase(out: &mut dyn Write, p: &PhaseResult) -> io::Result<()> {
    let appends = p
        .syncs_per_commit
        .map_or("-".to_string(), |a| format!("{a:.3}"));
    writeln!(
        out,
        "{:<12} {:>8} commits/s {}  {} leader log syncs/commit",
        format!("raft x{}", p.clients),
        human_rate(p.commits_per_sec),
        latency_cells(&p.latency),
        appends
    )
}

/// The closing table: the baseline, then one row per phase with its ratios to the baseline.
pub fn print_table(
    out: &mut dyn Write,
    baseline: &BaselineResult,
    phases: &[PhaseResult],
    concurrency_gain: Option<f64>,
) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<12} {:>7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>9}",
        "",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "x fsync",
        "p50/fsync",
        "syncs/op"
    )?;
    let row = |out: &mut dyn Write, name: &str, ops: u64, rate: f64, l: &LatencySummary| {
        write!(
            out,
            "{:<12} {:>7} {:>9} {:>8} {:>8} {:>9} {:>8}",
            name,
            ops,
            human_rate(rate),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        )
    };
    row(
        out,
        "raw fsync",
        baseline.ops,
        baseline.ops_per_sec,
        &baseline.latency,
    )?;
    writeln!(out, " {:>8} {:>9} {:>9}", "1", "1", "1")?;
    for p in phases {
        let name = format!("raft x{}", p.clients);
        row(out, &name, p.writes, p.commits_per_sec, &p.latency)?;
        let appends = p
            .syncs_per_commit
            .map_or("-".to_string(), |a| format!("{a:.3}"));
        writeln!(
            out,
            " {:>8.3} {:>9.2} {:>9}",
            p.commits_vs_fsync, p.p50_vs_fsync, appends
        )?;
    }
    writeln!(
        out,
        "(x fsync: commits/s over the raw fsync ops/s; p50/fsync: a commit's p50 in raw fsync \
         p50s; syncs/op: leader log fdatasyncs per committed write, below 1 when the group commit \
         covers several appends)"
    )?;
    if let Some(gain) = concurrency_gain {
        writeln!(
            out,
            "concurrency: the most clients commit {gain:.2}x as many writes per second as the \
             fewest"
        )?;
    }
    let redirects: u64 = phases.iter().map(|p| p.redirects).sum();
    if redirects > 0 {
        writeln!(
            out,
            "note: {redirects} writes were redirected to a new leader during the timed phases"
        )?;
    }
    Ok(())
}

fn or_none(v: Option<u64>) -> String {
    v.map_or("none".to_string(), |v| v.to_string())
}

pub fn print_log_summary(out: &mut dyn Write, s: &LogSummary) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "leader (node {}) at the end: last index {}, purged up to {}, {} entries kept ({}), \
         flushed to {}, {} in memtables",
        s.node,
        or_none(s.last_log_index),
        or_none(s.purged_index),
        s.entries_kept,
        human_bytes(s.log_bytes),
        or_none(s.flushed_index),
        human_bytes(s.memtable_bytes as u64)
    )?;
    match (s.snapshot_index, s.snapshot_bytes) {
        (index, Some(bytes)) => writeln!(
            out,
            "  snapshot at {}: {} (a purge keeps {KEEP_BEHIND_SNAPSHOT} entries behind it); \
             object store {}",
            or_none(index),
            human_bytes(bytes),
            human_bytes(s.object_store_bytes)
        ),
        _ => writeln!(
            out,
            "  no snapshot yet (no memtable was flushed: the writes did not fill --memtable-mb); \
             object store {}",
            human_bytes(s.object_store_bytes)
        ),
    }
}

pub fn write_json(path: &Path, report: &RaftReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report).context("encoding results as JSON")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing results to {}", path.display()))
}
