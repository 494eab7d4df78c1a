//! The raw fsync baseline: one writer appending a Raft-entry-sized record to a file in the run
//! directory and fdatasyncing it, as the log does for each append. Measured in the same run on
//! the same disk, it is what the cluster's figures are divided by, so that they compare across
//! machines.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::results::BaselineResult;
use crate::measure::{Latencies, Progress};

/// Appends `warmup` untimed records, then `ops` timed ones, each followed by `fdatasync`. The
/// file grows with every append (as a log segment does), so each sync also commits the new
/// length.
pub fn run(
    path: &Path,
    record_bytes: usize,
    warmup: u64,
    ops: u64,
    progress: bool,
) -> Result<BaselineResult> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // Printable, varying bytes; the content does not matter to the disk.
    let record: Vec<u8> = (0..record_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let mut append = || -> Result<()> {
        file.write_all(&record)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("appending to {}", path.display()))
    };
    for _ in 0..warmup {
        append()?;
    }
    let bar = Progress::bar("fsync baseline", ops, progress);
    let mut latencies = Latencies::new();
    let start = Instant::now();
    for _ in 0..ops {
        let t = Instant::now();
        append()?;
        latencies.record(t.elapsed());
        bar.advance(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();
    BaselineResult::new(record_bytes, seconds, &latencies)
}
