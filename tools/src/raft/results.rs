//! What the raft benchmark measures: the raw fsync baseline, one result per client count, what
//! the leader keeps of its log afterwards, and the ratios between them.

use anyhow::{Context, Result};
use serde::Serialize;

use super::args::RaftArgs;
use crate::measure::{Latencies, LatencySummary};

/// One client appending a record to a file and fdatasyncing it, over and over: the cost of
/// the single durable write every Raft commit needs at least one of.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    pub ops: u64,
    pub record_bytes: usize,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Per append + fdatasync, in microseconds.
    pub latency: LatencySummary,
}

impl BaselineResult {
    pub fn new(record_bytes: usize, seconds: f64, l: &Latencies) -> Result<Self> {
        let ops = l.count();
        Ok(BaselineResult {
            ops,
            record_bytes,
            seconds,
            ops_per_sec: ops as f64 / seconds.max(1e-9),
            latency: l.summary().context("the fsync baseline timed nothing")?,
        })
    }
}

/// Log counters of the leader over one phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LeaderLog {
    /// Log appends (one `write` each; openraft hands the store one per client write).
    pub appends: u64,
    /// `fdatasync`s of the log's group commit: each covers every append written before it.
    pub syncs: u64,
    /// Entries they carried: the timed writes, plus the maintainer's seals and table edits.
    pub entries: u64,
    pub bytes: u64,
}

/// The timed writes at one number of concurrent clients.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub clients: u64,
    /// Writes committed (each one put).
    pub writes: u64,
    pub seconds: f64,
    pub commits_per_sec: f64,
    /// From `client_write` to its reply: replicated to a majority, durable there, applied on
    /// the leader. In microseconds.
    pub latency: LatencySummary,
    /// The leader's log work; `None` when leadership moved during the phase.
    pub leader_log: Option<LeaderLog>,
    /// Leader log fdatasyncs per committed write: below 1 when the group commit covers several
    /// appends with one sync.
    pub syncs_per_commit: Option<f64>,
    /// Writes sent again to another node after a ForwardToLeader.
    pub redirects: u64,
    /// The baseline's ops/s divided into this phase's commits/s.
    pub commits_vs_fsync: f64,
    /// This phase's p50 over the baseline's p50: how many bare fsyncs a commit takes.
    pub p50_vs_fsync: f64,
}

impl PhaseResult {
    pub fn new(
        clients: u64,
        seconds: f64,
        latencies: &Latencies,
        leader_log: Option<LeaderLog>,
        redirects: u64,
        baseline: &BaselineResult,
    ) -> Result<Self> {
        let writes = latencies.count();
        let latency = latencies
            .summary()
            .with_context(|| format!("{clients} clients: no write was timed"))?;
        let commits_per_sec = writes as f64 / seconds.max(1e-9);
        Ok(PhaseResult {
            clients,
            writes,
            seconds,
            commits_per_sec,
            latency,
            leader_log,
            syncs_per_commit: leader_log.map(|l| l.syncs as f64 / writes as f64),
            redirects,
            commits_vs_fsync: commits_per_sec / baseline.ops_per_sec,
            p50_vs_fsync: latency.p50_us / baseline.latency.p50_us.max(1e-9),
        })
    }
}

/// What one node keeps at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct LogSummary {
    pub node: u64,
    pub last_log_index: Option<u64>,
    /// The log is purged up to here (inclusive); `None` before the first purge.
    pub purged_index: Option<u64>,
    pub first_index_kept: Option<u64>,
    pub entries_kept: u64,
    /// Bytes of the log's files (segments and metadata).
    pub log_bytes: u64,
    /// Every write up to this index is in tables; a restart replays the log after it.
    pub flushed_index: Option<u64>,
    /// Bytes still in memtables (active and sealed).
    pub memtable_bytes: usize,
    pub snapshot_index: Option<u64>,
    /// The current snapshot: the engine's manifest image, not the data.
    pub snapshot_bytes: Option<u64>,
    /// Tables in the group's shared object store.
    pub object_store_bytes: u64,
}

/// Everything a run produced; the JSON file is this.
#[derive(Debug, Serialize)]
pub struct RaftReport {
    pub tool: &'static str,
    pub args: RaftArgs,
    /// A command that repeats the run.
    pub command: String,
    pub nodes: u64,
    pub baseline: BaselineResult,
    /// In the order run.
    pub phases: Vec<PhaseResult>,
    /// commits/s of the most clients over commits/s of the fewest; `None` with one phase.
    pub concurrency_gain: Option<f64>,
    pub leader_log: LogSummary,
}

/// Commits/s of the phase with the most clients over that of the phase with the fewest.
pub fn concurrency_gain(phases: &[PhaseResult]) -> Option<f64> {
    let fewest = phases.iter().min_by_key(|p| p.clients)?;
    let most = phases.iter().max_by_key(|p| p.clients)?;
    (most.clients > fewest.clients).then(|| most.commits_per_sec / fewest.commits_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn latencies(us: u64, n: u64) -> Latencies {
        let mut l = Latencies::new();
        for _ in 0..n {
            l.record(Duration::from_micros(us));
        }
        l
    }

    #[test]
    fn ratios_divide_by_the_baseline() {
        let base = BaselineResult::new(150, 1.0, &latencies(1000, 1000)).unwrap();
        assert_eq!(base.ops_per_sec, 1000.0);
        let log = LeaderLog {
            appends: 1000,
            syncs: 250,
            entries: 1000,
            bytes: 0,
        };
        let one = PhaseResult::new(1, 4.0, &latencies(4000, 1000), None, 0, &base).unwrap();
        let many = PhaseResult::new(64, 0.5, &latencies(4000, 1000), Some(log), 0, &base).unwrap();
        assert_eq!(one.commits_vs_fsync, 0.25);
        assert!((one.p50_vs_fsync - 4.0).abs() < 0.01);
        assert_eq!(one.syncs_per_commit, None);
        assert_eq!(many.syncs_per_commit, Some(0.25));
        assert_eq!(concurrency_gain(&[one.clone(), many]), Some(8.0));
        assert_eq!(concurrency_gain(&[one]), None);
    }
}
