//! Printing results as they come, the closing tables, and the JSON file.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{Benchmark, LsmArgs};
use crate::engines::EngineKind;
use crate::measure::{human_bytes, human_rate, DiskUsage, LatencySummary};

/// Everything measured in one phase of one engine.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub benchmark: Benchmark,
    pub engine: EngineKind,
    /// Writes, gets or seeks; keys for scans; 1 for compact.
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Key and value bytes written (fills) or read (scans) per second.
    pub mb_per_sec: Option<f64>,
    pub latency: Option<LatencySummary>,
    /// Time spent afterwards flushing and waiting for background compactions; not in `seconds`.
    pub settle_seconds: Option<f64>,
    /// Files in the database directory after the phase (fills and compact).
    pub disk: Option<DiskUsage>,
    /// Peak RSS of the whole process during the phase (see `peak_rss_scope` in the file).
    pub peak_rss_bytes: Option<u64>,
    /// (WAL + flush + compaction bytes written) / (key + value bytes written), since the database
    /// was created (fills and compact); `None` where the engine does not count these.
    pub write_amplification: Option<f64>,
    pub engine_stats: Option<String>,
}

impl PhaseResult {
    fn throughput_cell(&self) -> String {
        if self.benchmark == Benchmark::Compact {
            format!("{:.2} s", self.seconds)
        } else {
            human_rate(self.ops_per_sec)
        }
    }
}

const INDENT: &str = "                       ";

pub fn print_header(
    out: &mut dyn Write,
    args: &LsmArgs,
    engines: &[EngineKind],
    db_root: &Path,
    rss_per_phase: bool,
) -> io::Result<()> {
    let names: Vec<_> = engines.iter().map(|e| e.name()).collect();
    writeln!(out, "strata-bench lsm")?;
    writeln!(
        out,
        "  engines:    {}{}",
        names.join(", "),
        if engines.len() > 1 {
            " (alternating per phase)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "  keys:       {} x {} B keys, {} B values (~50% compressible), seed {}",
        args.num, args.key_size, args.value_size, args.seed
    )?;
    writeln!(
        out,
        "  cache:      {} MiB block cache per engine",
        args.cache_mb
    )?;
    writeln!(out, "  databases:  {}", db_root.display())?;
    writeln!(
        out,
        "  peak RSS:   process-wide{}",
        if rss_per_phase {
            ", reset before each phase"
        } else {
            " since start (could not reset it per phase)"
        }
    )?;
    writeln!(out)
}

pub fn print_phase(out: &mut dyn Write, r: &PhaseResult) -> io::Result<()> {
    let (unit, noun) = match r.benchmark {
        Benchmark::Scanforward | Benchmark::Scanreverse => ("keys/s", "keys"),
        Benchmark::Compact => ("", "compaction"),
        _ => ("ops/s", "ops"),
    };
    let mut line = format!(
        "{:<12} {:<8}: {:>12} {:<6}",
        r.benchmark.name(),
        r.engine.name(),
        r.throughput_cell(),
        unit
    );
    if let Some(mb) = r.mb_per_sec {
        line += &format!(" {mb:>7.1} MB/s");
    }
    if let Some(l) = r.latency {
        line += &format!(
            "  p50 {:.2} p99 {:.2} p99.9 {:.2} us",
            l.p50_us, l.p99_us, l.p999_us
        );
    }
    line += &format!("  ({} {noun} in {:.2} s)", r.ops, r.seconds);
    writeln!(out, "{line}")?;

    let mut after = Vec::new();
    if let Some(d) = r.disk {
        after.push(format!(
            "disk {} ({} apparent)",
            human_bytes(d.allocated_bytes),
            human_bytes(d.apparent_bytes)
        ));
        after.push(match r.write_amplification {
            Some(w) => format!("w-amp {w:.2}"),
            None => "w-amp n/a".to_string(),
        });
    }
    if let Some(s) = r.settle_seconds {
        after.push(format!("settle {s:.2} s"));
    }
    if let Some(rss) = r.peak_rss_bytes {
        after.push(format!("peak RSS {}", human_bytes(rss)));
    }
    if !after.is_empty() {
        writeln!(out, "{INDENT}{}", after.join(", "))?;
    }
    if let Some(stats) = &r.engine_stats {
        writeln!(out, "{INDENT}{stats}")?;
    }
    Ok(())
}

/// The closing tables: one row per benchmark, one column per engine, and, with several
/// engines, strata's ratio to each other engine (throughput: above 1 means strata is faster;
/// p99 latency: below 1 means strata is faster).
pub fn print_summary(
    out: &mut dyn Write,
    results: &[PhaseResult],
    engines: &[EngineKind],
    benchmarks: &[Benchmark],
) -> io::Result<()> {
    let others: Vec<EngineKind> = engines
        .iter()
        .copied()
        .filter(|e| *e != EngineKind::Strata)
        .collect();
    let find = |b: Benchmark, e: EngineKind| {
        results
            .iter()
            .rev()
            .find(|r| r.benchmark == b && r.engine == e)
    };
    let mut rows: Vec<Benchmark> = Vec::new();
    for b in benchmarks {
        if !rows.contains(b) {
            rows.push(*b);
        }
    }

    writeln!(out)?;
    writeln!(
        out,
        "Throughput (ops/s; keys/s for scans; seconds for compact)"
    )?;
    let mut header = format!("{:<12}", "benchmark");
    for e in engines {
        header += &format!(" {:>14}", e.name());
    }
    for o in &others {
        header += &format!(" {:>16}", format!("strata/{}", o.name()));
    }
    writeln!(out, "{header}")?;
    for b in &rows {
        let mut line = format!("{:<12}", b.name());
        for e in engines {
            let cell = find(*b, *e).map_or("-".to_string(), |r| r.throughput_cell());
            line += &format!(" {cell:>14}");
        }
        for o in &others {
            let ratio = match (find(*b, EngineKind::Strata), find(*b, *o)) {
                (Some(s), Some(r)) if r.ops_per_sec > 0.0 => {
                    format!("{:.2}x", s.ops_per_sec / r.ops_per_sec)
                }
                _ => "-".to_string(),
            };
            line += &format!(" {ratio:>16}");
        }
        writeln!(out, "{line}")?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "p99 latency (us) / after the phase: disk size, write amplification"
    )?;
    let mut header = format!("{:<12}", "benchmark");
    for e in engines {
        header += &format!(" {:>30}", e.name());
    }
    for o in &others {
        header += &format!(" {:>16}", format!("p99 s/{}", o.name()));
    }
    writeln!(out, "{header}")?;
    for b in &rows {
        let mut line = format!("{:<12}", b.name());
        for e in engines {
            line += &format!(" {:>30}", find(*b, *e).map_or("-".to_string(), detail_cell));
        }
        for o in &others {
            let p99 = |e| find(*b, e).and_then(|r| r.latency).map(|l| l.p99_us);
            let ratio = match (p99(EngineKind::Strata), p99(*o)) {
                (Some(s), Some(r)) if r > 0.0 => {
                    format!("{:.2}x", s / r)
                }
                _ => "-".to_string(),
            };
            line += &format!(" {ratio:>16}");
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn detail_cell(r: &PhaseResult) -> String {
    let mut parts = Vec::new();
    if let Some(l) = r.latency {
        parts.push(format!("{:.1}", l.p99_us));
    }
    if let Some(d) = r.disk {
        parts.push(human_bytes(d.allocated_bytes));
        parts.push(
            r.write_amplification
                .map_or("wa n/a".to_string(), |w| format!("wa {w:.2}")),
        );
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" / ")
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    tool: &'static str,
    args: &'a LsmArgs,
    engines: &'a [EngineKind],
    peak_rss_scope: &'static str,
    results: &'a [PhaseResult],
}

pub fn write_json(
    path: &Path,
    args: &LsmArgs,
    engines: &[EngineKind],
    rss_per_phase: bool,
    results: &[PhaseResult],
) -> Result<()> {
    let report = JsonReport {
        tool: concat!("strata-bench ", env!("CARGO_PKG_VERSION"), " lsm"),
        args,
        engines,
        peak_rss_scope: if rss_per_phase {
            "process-wide, reset before each phase"
        } else {
            "process-wide, since process start"
        },
        results,
    };
    let text = serde_json::to_string_pretty(&report).context("encoding results as JSON")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing results to {}", path.display()))?;
    Ok(())
}
