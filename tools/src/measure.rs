//! What the phases measure with: latency histograms, progress bars, disk usage and peak RSS.

use std::fmt;
use std::io::{self, IsTerminal};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Per-operation latencies in nanoseconds: point lookups take a few microseconds, so whole
/// microseconds would put most of them into one or two buckets.
pub struct Latencies(Histogram<u64>);

/// The summary of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LatencySummary {
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latencies {
    pub fn new() -> Self {
        // One hour at three significant digits covers any single operation, a compaction included.
        let hist = Histogram::new_with_bounds(1, 3_600_000_000_000, 3);
        Latencies(hist.expect("constant histogram bounds are valid"))
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.0.saturating_record(elapsed.as_nanos() as u64);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot go out of range.
        self.0.add(&other.0).expect("histograms share their bounds");
    }

    /// Operations recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (in [0, 1]), in microseconds; 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            mean_us: self.0.mean() / 1000.0,
            p50_us: us(self.0.value_at_quantile(0.50)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            p999_us: us(self.0.value_at_quantile(0.999)),
            max_us: us(self.0.max()),
        })
    }
}

/// Operations between progress updates; keeps the bar's cost out of per-operation timings.
pub const PROGRESS_STEP: u64 = 4096;
/// A bar appears only once its phase has run this long, so quick phases print nothing extra.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A progress bar that stays hidden for the first second of its phase.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    enabled: bool,
    shown: AtomicBool,
}

impl Progress {
    /// Whether bars may be drawn at all: not with `--no-progress`, and not into a pipe or file.
    pub fn allowed(no_progress: bool) -> bool {
        !no_progress && io::stdout().is_terminal() && io::stderr().is_terminal()
    }

    pub fn bar(label: &str, total: u64, enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{prefix:>24} [{bar:30}] {percent:>3}% {human_pos}/{human_len} {rate} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // indicatif's own {per_sec} prints four decimals of ops/s.
        .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{}/s", human_rate(state.per_sec()));
        })
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Progress {
            bar,
            started: Instant::now(),
            enabled,
            shown: AtomicBool::new(false),
        }
    }

    /// A spinner for work that reports no progress (compaction, settling); shown at once,
    /// because the caller blocks and cannot reveal it later.
    pub fn spinner(label: &str, enabled: bool) -> Self {
        let bar = if enabled {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(label.to_string());
        if enabled {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Progress {
            bar,
            started: Instant::now(),
            enabled,
            shown: AtomicBool::new(enabled),
        }
    }

    /// Records `n` more operations; safe to call from several threads.
    pub fn advance(&self, n: u64) {
        if !self.enabled {
            return;
        }
        self.bar.inc(n);
        if !self.shown.load(Ordering::Relaxed)
            && self.started.elapsed() >= SHOW_AFTER
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Space taken by the files of a directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskUsage {
    /// Sum of file lengths.
    pub apparent_bytes: u64,
    /// Blocks actually allocated, as `du` counts them. Differs from the length where an engine
    /// preallocates: fjall sizes new journals with `set_len` (sparse, longer than the data),
    /// RocksDB with `fallocate` (allocated beyond the length until the file is closed).
    pub allocated_bytes: u64,
}

/// What the files under `dir` take. Files that vanish mid-walk (an engine deleting obsolete
/// tables) are skipped rather than failing the run.
pub fn disk_usage(dir: &Path) -> Result<DiskUsage> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DiskUsage::default()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut total = DiskUsage::default();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("stat {}", entry.path().display())),
        };
        if meta.is_dir() {
            let sub = disk_usage(&entry.path())?;
            total.apparent_bytes += sub.apparent_bytes;
            total.allocated_bytes += sub.allocated_bytes;
        } else if meta.is_file() {
            total.apparent_bytes += meta.len();
            // st_blocks is in 512-byte units whatever the file system's block size.
            total.allocated_bytes += meta.blocks() * 512;
        }
    }
    Ok(total)
}

/// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS, so that the next reading is
/// the peak of one phase rather than of the whole run. Returns false where that is not
/// supported; readings are then the peak since process start.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of the whole process (VmHWM), where /proc is available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Formats a byte count with a binary unit.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a rate with thousands separators, the way db_bench prints ops/s.
pub fn human_rate(rate: f64) -> String {
    let whole = rate.round() as u64;
    let digits = whole.to_string();
    let groups: Vec<_> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(String::from_utf8_lossy)
        .collect();
    groups.join(",")
}

/// Runs `f(thread, ops)` on `threads` scoped threads that share `total` operations (the first
/// threads take the remainder, so the total is exact), and returns each thread's result in
/// thread order; a thread that panicked gives an error.
pub fn split_across_threads<T: Send>(
    threads: u64,
    total: u64,
    f: impl Fn(u64, u64) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ops = total / threads + u64::from(t < total % threads);
                scope.spawn(move || f(t, ops))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a reader thread panicked")))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(human_rate(1234567.4), "1,234,567");
        assert_eq!(human_rate(999.0), "999");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn histogram_reports_microseconds() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary().unwrap();
        assert!((s.p50_us - 500.0).abs() < 2.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 2.0, "{s:?}");
    }
}
