//! Options of `strata-bench http`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

/// The system under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Strata's HTTP API (`/kv`, `/api/links`, `/{code}`).
    Strata,
    /// etcd's v3 JSON gateway (`/v3/kv/put`, `/v3/kv/range`).
    Etcd,
}

/// One kind of request, timed in its own phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Overwrite random keys of the key space.
    Put,
    /// Linearizable reads of random keys (filled before the first get phase).
    Get,
    /// Create short links with generated codes (Strata only).
    Create,
    /// Follow short links without following the redirect (Strata only).
    Redirect,
    /// A static answer that touches no data and no Raft (Strata `/health`, etcd `/version`):
    /// what HTTP request handling alone allows on this machine, the ceiling of every other phase.
    Ping,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct HttpArgs {
    /// What the targets are.
    #[arg(long, value_enum, default_value_t = System::Strata)]
    pub system: System,
    /// Base URLs of the nodes, comma-separated; connections are spread over them in turn.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub target: Vec<String>,
    /// Bearer token for Strata's write API.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    pub token: Option<String>,
    /// Phases, run in this order, each at every connection count.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "put,get,create,redirect"
    )]
    pub phases: Vec<Phase>,
    /// Concurrent connections, comma-separated: one phase run per count.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub connections: Vec<usize>,
    /// Length of each timed run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Untimed requests per connection before each timed run.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Keys in the key space of puts and gets.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Value length in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Links created before the redirect phase when no create phase ran.
    #[arg(long, default_value_t = 1_000)]
    pub links: u64,
    /// Seed of the key choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Strata: before the first phase, split the key space of puts and gets into this many
    /// ranges of equal key counts (through the first target's admin API).
    #[arg(long, default_value_t = 1)]
    pub split_ranges: u64,
    /// Processes (on this machine) whose CPU time is measured over each timed run: each result
    /// then carries the CPU-seconds those processes spent per request.
    #[arg(long, value_delimiter = ',')]
    pub cpu_pids: Vec<u32>,
}

impl HttpArgs {
    pub fn validate(&self) -> Result<()> {
        if self.target.is_empty() {
            bail!("--target names no node");
        }
        if self.connections.is_empty() || self.connections.contains(&0) {
            bail!("--connections needs counts of at least 1");
        }
        if !self.seconds.is_finite() || self.seconds <= 0.0 {
            bail!("--seconds must be positive");
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.split_ranges == 0 || self.split_ranges > self.keys {
            bail!("--split-ranges must be 1 to --keys");
        }
        if self.split_ranges > 1 && self.system != System::Strata {
            bail!("--split-ranges is for Strata");
        }
        if self.system == System::Etcd
            && self
                .phases
                .iter()
                .any(|p| matches!(p, Phase::Create | Phase::Redirect))
        {
            bail!("etcd has no short links: use --phases put,get");
        }
        Ok(())
    }
}
