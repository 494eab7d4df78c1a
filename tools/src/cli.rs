//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engines::EngineKind;

#[derive(Debug, Parser)]
#[command(
    name = "strata-bench",
    version,
    about = "Benchmarks for the Strata storage project"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per layer of Strata.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// db_bench-style benchmark of the LSM engine, optionally against RocksDB and fjall.
    Lsm(LsmArgs),
    /// Point reads of each tier (memtable, memory and disk caches, object store) of a database
    /// whose levels from L1 down live in an object store.
    Tiered(crate::tiered::TieredArgs),
    /// Write throughput and commit latency of an in-process 3-node Raft group over real files
    /// (fsync included), against a raw fsync baseline measured in the same run.
    Raft(crate::raft::RaftArgs),
    /// Load over HTTP against a running Strata cluster (or etcd, for comparison): creates,
    /// redirects, puts and linearizable gets at each connection count, with latencies.
    Http(crate::http::HttpArgs),
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct LsmArgs {
    /// Number of keys written by each fill phase.
    #[arg(long, default_value_t = 1_000_000)]
    pub num: u64,

    /// Key length in bytes; keys are the key index in zero-padded decimal.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,

    /// Value length in bytes; values compress to about half their size.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Block cache size of every engine, in MiB.
    #[arg(long, default_value_t = 64)]
    pub cache_mb: usize,

    /// Seed of every random stream (fill order, read keys, values).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Comma-separated phases, run in the order given.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fillseq,fillrandom,fillsync,readrandom,readrandom2,readmissing,seekrandom,scanforward,scanreverse,compact"
    )]
    pub benchmarks: Vec<Benchmark>,

    /// Operations of readrandom, readrandom2 and readmissing (default: --num) and of
    /// seekrandom (default: --num / 10). fillsync always writes --num / 100 keys.
    #[arg(long)]
    pub reads: Option<u64>,

    /// Directory for the databases, created if missing and kept afterwards; it must be empty.
    /// Default: a temporary directory under ./bench-results (or $TMPDIR), removed at exit.
    #[arg(long)]
    pub db_dir: Option<PathBuf>,

    /// Engine to benchmark (rocksdb and fjall need the Cargo feature of the same name).
    #[arg(long, value_enum, default_value_t = EngineKind::Strata)]
    pub engine: EngineKind,

    /// Run every compiled-in engine, alternating engines phase by phase, and print strata's
    /// ratio to each of the others.
    #[arg(long)]
    pub compare: bool,

    /// Also write all results to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Never draw progress bars (they are also off when stdout is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl LsmArgs {
    /// Gets of readrandom and readmissing; readrandom2 splits as many between its threads.
    pub fn point_reads(&self) -> u64 {
        self.reads.unwrap_or(self.num)
    }

    pub fn seeks(&self) -> u64 {
        self.reads.unwrap_or(self.num / 10).max(1)
    }

    pub fn sync_writes(&self) -> u64 {
        (self.num / 100).max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Benchmark {
    #[value(name = "fillseq")]
    Fillseq,
    #[value(name = "fillrandom")]
    Fillrandom,
    #[value(name = "fillsync")]
    Fillsync,
    #[value(name = "readrandom")]
    Readrandom,
    #[value(name = "readrandom2")]
    Readrandom2,
    #[value(name = "readmissing")]
    Readmissing,
    #[value(name = "seekrandom")]
    Seekrandom,
    #[value(name = "scanforward")]
    Scanforward,
    #[value(name = "scanreverse")]
    Scanreverse,
    #[value(name = "compact")]
    Compact,
}

impl Benchmark {
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Fillseq => "fillseq",
            Benchmark::Fillrandom => "fillrandom",
            Benchmark::Fillsync => "fillsync",
            Benchmark::Readrandom => "readrandom",
            Benchmark::Readrandom2 => "readrandom2",
            Benchmark::Readmissing => "readmissing",
            Benchmark::Seekrandom => "seekrandom",
            Benchmark::Scanforward => "scanforward",
            Benchmark::Scanreverse => "scanreverse",
            Benchmark::Compact => "compact",
        }
    }

    /// Phases that read the database fillrandom leaves behind.
    pub fn needs_loaded_db(self) -> bool {
        !matches!(
            self,
            Benchmark::Fillseq | Benchmark::Fillrandom | Benchmark::Fillsync
        )
    }
}
