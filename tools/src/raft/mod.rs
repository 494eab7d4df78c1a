//! `strata-bench raft`: write throughput and commit latency of a 3-node Raft group whose nodes
//! share one process but keep their logs and engines in real files, fdatasync included.
//!
//! The run first measures a raw fsync baseline (one writer appending ~150 B records and
//! fdatasyncing each) on the same disk, then starts the group and runs one phase per
//! `--clients` count: a few untimed writes, then `--writes` puts spread over that many
//! concurrent clients, each waiting for its commit before the next. Commit rates and latencies
//! are printed against the baseline, because a commit is at bottom a few fsyncs on each of two
//! nodes: the ratio holds across machines where the absolute figures do not. At the end it
//! reports what the leader keeps (log entries, purge point, snapshot), which shows whether the
//! log stays bounded under the write load.
//!
//! The transport is in-process, so no network cost is in the figures: they are the cost of the
//! storage and of openraft's pipeline.

mod args;
mod baseline;
mod bench;
mod cluster;
mod report;
mod results;

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

pub use args::RaftArgs;
use bench::Bench;
use cluster::{Cluster, NODES};
use results::{BaselineResult, LogSummary, PhaseResult, RaftReport};

use crate::measure::Progress;
use crate::rundir::RunDir;
use crate::workload::Workload;

/// Runs the benchmark and prints to stdout.
pub fn run(args: &RaftArgs) -> Result<()> {
    // Results go to stdout through `out` so that a closed pipe ends the run with an error
    // instead of a panic.
    let mut out = io::stdout();
    execute(args, Progress::allowed(args.no_progress), &mut out).map(|_| ())
}

/// The whole run, printing to `out`; returns what the JSON file holds.
fn execute(args: &RaftArgs, progress: bool, out: &mut dyn Write) -> Result<RaftReport> {
    args.validate()?;
    let workload = Arc::new(Workload::new(
        args.keys,
        args.key_size,
        args.value_size,
        args.seed,
    )?);
    let run_dir = RunDir::create(args.db_dir.as_deref(), "raft")?;
    report::print_header(out, args, run_dir.path())?;

    let baseline = baseline::run(
        &run_dir.path().join("fsync-baseline"),
        args.baseline_record,
        args.warmup.min(args.baseline_ops),
        args.baseline_ops,
        progress,
    )
    .context("the raw fsync baseline")?;
    report::print_baseline(out, &baseline)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.runtime_threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (phases, leader_log) = runtime.block_on(measure(
        args,
        run_dir.path(),
        workload,
        &baseline,
        progress,
        out,
    ))?;
    // The engines' background threads and files are released before the directory goes.
    drop(runtime);

    let concurrency_gain = results::concurrency_gain(&phases);
    report::print_table(out, &baseline, &phases, concurrency_gain)?;
    report::print_log_summary(out, &leader_log)?;
    let command = args.command_line();
    writeln!(out)?;
    writeln!(out, "reproduce with:\n  {command}")?;
    let report = RaftReport {
        tool: concat!("strata-bench ", env!("CARGO_PKG_VERSION"), " raft"),
        args: args.clone(),
        command,
        nodes: NODES,
        baseline,
        phases,
        concurrency_gain,
        leader_log,
    };
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
        writeln!(out, "results written to {}", path.display())?;
    }
    if let Some(kept) = run_dir.finish()? {
        writeln!(
            out,
            "logs, engines and object store kept in {}",
            kept.display()
        )?;
    }
    Ok(report)
}

/// Starts the group, runs every phase and reads the leader's log summary; the group is shut
/// down whether or not the phases succeeded.
async fn measure(
    args: &RaftArgs,
    root: &Path,
    workload: Arc<Workload>,
    baseline: &BaselineResult,
    progress: bool,
    out: &mut dyn Write,
) -> Result<(Vec<PhaseResult>, LogSummary)> {
    let cluster = Cluster::start(root, args)
        .await
        .context("starting the group")?;
    let bench = Bench {
        args,
        cluster: &cluster,
        workload,
        baseline,
        progress,
    };
    let measured = async {
        let mut phases = Vec::new();
        for (phase, &clients) in (0u64..).zip(&args.clients) {
            let result = bench.phase(phase, clients).await?;
            report::print_phase(out, &result)?;
            phases.push(result);
        }
        let leader = cluster.leader().await?;
        Ok::<_, anyhow::Error>((phases, cluster.log_summary(leader).await?))
    }
    .await;
    let shut = cluster.shutdown().await;
    let measured = measured?;
    shut?;
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole flow on a few hundred writes, with memtables small enough to be flushed.
    #[test]
    fn tiny_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = args::tests::parse(&[
            "--writes",
            "300",
            "--clients",
            "1,8",
            "--warmup",
            "20",
            "--baseline-ops",
            "50",
            "--memtable-mb",
            "1",
            "--value-size",
            "4000",
        ]);
        args.db_dir = Some(dir.path().join("run"));
        args.json = Some(dir.path().join("results.json"));
        let mut out = Vec::new();
        let report = execute(&args, false, &mut out).expect("raft run");
        let text = String::from_utf8(out).expect("utf-8 output");
        eprintln!("{text}");
        assert_eq!(report.phases.len(), 2);
        assert!(report.phases.iter().all(|p| p.writes == 300));
        assert!(report.baseline.ops == 50 && report.baseline.ops_per_sec > 0.0);
        assert!(text.contains("raw fsync") && text.contains("raft x8"));
        assert!(text.contains("reproduce with:"));
        let json = std::fs::read_to_string(dir.path().join("results.json")).expect("json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["phases"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["args"]["writes"], 300);
        assert!(v["baseline"]["latency"]["p50_us"].as_f64().is_some());
    }
}
