//! Options of `strata-bench raft`.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;
use serde::Serialize;

#[derive(Debug, Clone, Args, Serialize)]
pub struct RaftArgs {
    /// Committed writes timed in each client phase (one put of one key per write), shared
    /// between the phase's clients.
    #[arg(long, default_value_t = 20_000)]
    pub writes: u64,

    /// Comma-separated numbers of concurrent clients; one phase each, run in the order given.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub clients: Vec<u64>,

    /// Writes before each phase that are not timed: the first ones pay for leader discovery,
    /// segment creation and cold page caches.
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,

    /// Keys are drawn at random from this many.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,

    /// Key length in bytes; keys are the key index in zero-padded decimal.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,

    /// Value length in bytes; values compress to about half their size.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Memtable size of every replica, in MiB: the leader seals at this size, builds the
    /// memtable into a table in the object store, and the log is then purged behind it.
    #[arg(long, default_value_t = 2)]
    pub memtable_mb: usize,

    /// Appends + fdatasyncs of the raw fsync baseline, one at a time.
    #[arg(long, default_value_t = 2000)]
    pub baseline_ops: u64,

    /// Bytes of each baseline record: about one Raft entry of a put (key, value, log id, framing).
    #[arg(long, default_value_t = 150)]
    pub baseline_record: usize,

    /// Threads of the tokio runtime that runs all three nodes and the clients. The log store
    /// fsyncs inline on these threads, so with fewer threads than nodes one node's fsync can
    /// hold up another's: hence more threads than a 2-core machine has cores.
    #[arg(long, default_value_t = 4)]
    pub runtime_threads: usize,

    /// Seed of every random stream (keys written, values).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Also write the results to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Never draw progress bars (they are also off when stdout is not a terminal).
    #[arg(long)]
    pub no_progress: bool,

    /// Directory for the nodes' logs and engines, the object store and the baseline file, kept
    /// afterwards; it must be new or empty. Default: a temporary directory under ./bench-results,
    /// removed at exit.
    #[arg(long, visible_alias = "dir")]
    pub db_dir: Option<PathBuf>,
}

impl RaftArgs {
    /// Rejects settings that cannot run, before anything is created.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.writes > 0, "--writes must be positive");
        ensure!(
            !self.clients.is_empty(),
            "--clients needs at least one count"
        );
        ensure!(
            self.clients.iter().all(|&c| (1..=4096).contains(&c)),
            "--clients counts must be between 1 and 4096"
        );
        ensure!(
            self.clients.iter().all(|&c| c <= self.writes),
            "--writes must be at least the largest --clients count"
        );
        ensure!(self.keys > 0, "--keys must be positive");
        ensure!(self.memtable_mb > 0, "--memtable-mb must be positive");
        ensure!(self.baseline_ops > 0, "--baseline-ops must be positive");
        ensure!(
            (1..=1 << 20).contains(&self.baseline_record),
            "--baseline-record must be between 1 and 1048576 bytes"
        );
        ensure!(
            self.runtime_threads > 0,
            "--runtime-threads must be positive"
        );
        Ok(())
    }

    pub fn memtable_bytes(&self) -> usize {
        self.memtable_mb << 20
    }

    /// A command that repeats this run, every setting spelled out so that changed defaults do
    /// not change what it measures.
    pub fn command_line(&self) -> String {
        let clients: Vec<String> = self.clients.iter().map(u64::to_string).collect();
        let mut c = format!(
            "cargo run --release -p tools -- raft --writes {} --clients {} --warmup {} --keys {} \
             --key-size {} --value-size {} --memtable-mb {} --baseline-ops {} \
             --baseline-record {} --runtime-threads {} --seed {}",
            self.writes,
            clients.join(","),
            self.warmup,
            self.keys,
            self.key_size,
            self.value_size,
            self.memtable_mb,
            self.baseline_ops,
            self.baseline_record,
            self.runtime_threads,
            self.seed
        );
        if let Some(path) = &self.json {
            c += &format!(" --json {}", path.display());
        }
        c
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: RaftArgs,
    }

    /// Arguments as parsed from `flags`, defaults for the rest.
    pub fn parse(flags: &[&str]) -> RaftArgs {
        let argv = std::iter::once("raft").chain(flags.iter().copied());
        Wrapper::try_parse_from(argv).expect("valid flags").args
    }

    #[test]
    fn validates_counts() {
        let defaults = parse(&[]);
        assert!(defaults.validate().is_ok());
        assert_eq!(defaults.clients, vec![1, 64]);
        assert!(parse(&["--clients", "0"]).validate().is_err());
        assert!(parse(&["--writes", "10", "--clients", "1,64"])
            .validate()
            .is_err());
        assert!(parse(&["--writes", "0"]).validate().is_err());
        assert_eq!(
            parse(&["--dir", "/tmp/x"]).db_dir,
            Some(PathBuf::from("/tmp/x"))
        );
    }

    #[test]
    fn command_line_round_trips() {
        let a = parse(&["--writes", "300", "--clients", "2,8", "--memtable-mb", "1"]);
        let c = a.command_line();
        let flags: Vec<&str> = c.split(" -- raft ").nth(1).unwrap().split(' ').collect();
        let b = parse(&flags);
        assert_eq!((b.writes, b.clients, b.memtable_mb), (300, vec![2, 8], 1));
    }
}
